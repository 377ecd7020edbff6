// The agent outlives the reader of its stderr: when the pipe is closed (a journal restarted, the
// output piped into `head`), a log write fails with EPIPE; the agent must still stop on SIGTERM
// instead of looping between the failed write and its uncaughtException handler.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureLabBundle } from '../helpers/lab.js';

const PODNET = new URL('../../dist/podnet.mjs', import.meta.url).pathname;

it('SIGTERM after its stderr reader went away: the agent exits 0', async () => {
  ensureLabBundle();
  const dir = mkdtempSync(join(tmpdir(), 'pnt-stderr-'));
  try {
    const p = spawn(process.execPath, [PODNET, 'agent', '--socket', join(dir, 'podnet.sock'), '--data-dir', dir], { stdio: ['ignore', 'ignore', 'pipe'] });
    const exited = new Promise<{ code: number | null; signal: string | null }>((res) => p.once('exit', (code, signal) => res({ code, signal })));
    // the first log line says it serves CNI; then nobody reads its stderr any more
    await new Promise<void>((res) => p.stderr!.once('data', () => res()));
    p.stderr!.destroy();
    p.kill('SIGTERM');
    const deadline = setTimeout(() => p.kill('SIGKILL'), 5000);
    const r = await exited;
    clearTimeout(deadline);
    assert.deepEqual(r, { code: 0, signal: null }, 'killed after 5 s: the agent hung on its own failed log writes');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
