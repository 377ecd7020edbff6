// Runs `podnet lab` from source, with the lab's state under a test directory.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

const ROOT = new URL('../../', import.meta.url).pathname;

export function labCli(labDir: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'src/lab/standalone.ts'), 'lab', ...args], {
    encoding: 'utf8',
    cwd: ROOT,
    env: { ...process.env, PODNET_LAB_DIR: labDir },
    input: opts.input,
    timeout: opts.timeoutMs ?? 240_000,
  });
  return { code: r.status ?? 1, stdout: r.stdout, stderr: r.stderr };
}
