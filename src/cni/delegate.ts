// Delegation to another CNI plugin found on CNI_PATH (spec §4): same environment, the full
// config on stdin, its stderr passed through to ours.
import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { join } from 'node:path';
import { CniError, ErrCode } from './errors.js';
import { parseResult } from './version.js';
import type { CniResult } from './types.js';

export function findPlugin(type: string, path: string[]): string {
  if (!/^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$/.test(type)) throw new CniError(ErrCode.InvalidConfig, `invalid plugin type ${JSON.stringify(type)}`);
  for (const dir of path) {
    const p = join(dir, type);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  throw new CniError(ErrCode.InvalidConfig, `failed to find plugin ${JSON.stringify(type)} in path [${path.join(' ')}]`);
}

export interface DelegateOutput {
  stdout: string;
}

export async function execDelegate(
  type: string,
  command: string,
  env: Record<string, string>,
  path: string[],
  stdin: string,
): Promise<DelegateOutput> {
  const bin = findPlugin(type, path);
  return new Promise((resolve, reject) => {
    const child = spawn(bin, [], { env: { ...env, CNI_COMMAND: command }, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', (e) => reject(new CniError(ErrCode.DelegateFailed, `failed to run delegate ${bin}: ${e.message}`)));
    child.on('close', (code) => {
      if (err) process.stderr.write(err);
      if (code === 0) return resolve({ stdout: out });
      let parsed: { code?: number; msg?: string; details?: string } | undefined;
      try {
        parsed = JSON.parse(out);
      } catch {
        /* not JSON: use stderr text, as libcni does */
      }
      if (parsed && typeof parsed.code === 'number') {
        reject(new CniError(parsed.code, `${type}: ${parsed.msg ?? 'failed'}`, parsed.details ?? ''));
      } else {
        reject(new CniError(ErrCode.DelegateFailed, `${type} ${command} failed (exit ${code}): ${(out || err).trim()}`));
      }
    });
    child.stdin.on('error', () => {});
    child.stdin.end(stdin);
  });
}

export async function delegateAdd(type: string, env: Record<string, string>, path: string[], stdin: string, version: string): Promise<CniResult> {
  const { stdout } = await execDelegate(type, 'ADD', env, path, stdin);
  try {
    return parseResult(JSON.parse(stdout), version);
  } catch (e) {
    throw new CniError(ErrCode.DelegateFailed, `${type} ADD returned an unreadable result: ${(e as Error).message}`);
  }
}
