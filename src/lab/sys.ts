// Small process and kernel helpers for the lab: iproute2 calls (argument arrays only), processes
// started detached with their output in a log file, and signalling by recorded PID guarded by
// the PID's start time.
import { execFile, execFileSync, spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ProcRef } from './state.js';

export function run(cmd: string, args: string[], opts: { input?: string; allowFail?: boolean; env?: NodeJS.ProcessEnv } = {}): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', input: opts.input, env: opts.env, stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (e) {
    if (opts.allowFail) return '';
    const err = e as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${(err.stderr || err.message).trim()}`);
  }
}

export function ip(args: string[], allowFail = false): string {
  return run('ip', args, { allowFail });
}

/** Asynchronous exec that never throws: exit code and output. */
export function runAsync(cmd: string, args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { encoding: 'utf8', env: opts.env, timeout: opts.timeoutMs ?? 120_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
      resolve({ code, stdout, stderr });
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}

export function netnsExists(ns: string): boolean {
  return existsSync(`/run/netns/${ns}`);
}

export function listNetns(): string[] {
  return ip(['netns', 'list'], true)
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter(Boolean);
}

/** Creates a namespace with lo up (idempotent: an existing one is reused, e.g. on a re-run). */
export function addNetns(ns: string): void {
  if (!netnsExists(ns)) ip(['netns', 'add', ns]);
  ip(['-n', ns, 'link', 'set', 'lo', 'up']);
}

export function delNetns(ns: string): void {
  if (netnsExists(ns)) ip(['netns', 'del', ns], true);
}

/** The processes in a namespace (`ip netns pids`), each with its start time taken now. */
export function netnsPids(ns: string): ProcRef[] {
  const out: ProcRef[] = [];
  for (const w of ip(['netns', 'pids', ns], true).split(/\s+/)) {
    const pid = Number(w);
    if (!Number.isInteger(pid) || pid <= 1 || pid === process.pid) continue;
    const startTime = procStartTime(pid);
    if (startTime) out.push({ pid, startTime });
  }
  return out;
}

export function sysctl(ns: string, kv: string): void {
  run('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', kv]);
}

/** The start time (clock ticks after boot) of PID, or undefined when it is gone or a zombie. */
export function procStartTime(pid: number): string | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // comm (field 2) may contain spaces and parentheses: fields after it start at the last ')'
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state), so field 22 (starttime) is rest[19]
  if (rest[0] === 'Z' || rest[0] === 'X') return undefined;
  return rest[19];
}

/** Alive and still the process the lab started (not a recycled PID). */
export function isAlive(ref: ProcRef | undefined): boolean {
  return !!ref && procStartTime(ref.pid) === ref.startTime;
}

/**
 * Starts argv detached (its own process group, so a Ctrl-C of `lab` does not take it down)
 * with stdout and stderr appended to `log`. The PID is that of `ip netns exec`, which execs the
 * command, so it is the command's PID too.
 */
export function startDetached(argv: string[], log: string, env: NodeJS.ProcessEnv = process.env): ProcRef {
  const fd = openSync(log, 'a');
  try {
    const child = spawn(argv[0], argv.slice(1), { detached: true, stdio: ['ignore', fd, fd], env });
    if (child.pid === undefined) throw new Error(`cannot start ${argv.join(' ')}`);
    // swallow a late spawn error event; the caller finds out by the process not being alive
    child.on('error', () => {});
    child.unref();
    const startTime = procStartTime(child.pid);
    if (!startTime) throw new Error(`${argv.join(' ')} exited at once; see ${log}`);
    return { pid: child.pid, startTime };
  } finally {
    closeSync(fd);
  }
}

/**
 * Signals the recorded process only if its start time still matches; waits up to graceMs for it
 * to exit, then SIGKILLs it. Returns false when it was not running.
 */
export async function stopProcess(ref: ProcRef | undefined, signal: NodeJS.Signals = 'SIGTERM', graceMs = 5000): Promise<boolean> {
  if (!isAlive(ref)) return false;
  try {
    process.kill(ref!.pid, signal);
  } catch {
    return false;
  }
  const until = Date.now() + graceMs;
  while (isAlive(ref) && Date.now() < until) await sleep(50);
  if (isAlive(ref)) {
    try {
      process.kill(ref!.pid, 'SIGKILL');
    } catch {
      /* gone between the check and the kill */
    }
    for (let i = 0; i < 40 && isAlive(ref); i++) await sleep(50);
  }
  return true;
}

/** The last n lines of a log file, for error messages. */
export function tail(path: string, n = 15): string {
  try {
    const lines = readFileSync(path, 'utf8').trimEnd().split('\n');
    return lines.slice(-n).join('\n');
  } catch {
    return '(no log)';
  }
}
