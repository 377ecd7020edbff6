// Shared plumbing for the runtime harness: running commands, a cleanup scope with
// a synchronous last-resort path (process 'exit'), network namespaces, mounts.
//
// Everything a scope creates carries its unique prefix (temp dir, netns name,
// sockets), so "ours" is always decidable: a process is ours when its command
// line or its root directory lies inside the scope's temp dir.
import { spawn, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  input?: string | Buffer;
  env?: NodeJS.ProcessEnv;
  /** Do not throw on a non-zero exit. */
  allowFail?: boolean;
  timeoutMs?: number;
  cwd?: string;
}

/** Runs a command to completion (no shell). Throws on non-zero exit unless allowFail. */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer =
      opts.timeoutMs !== undefined
        ? setTimeout(() => {
            timedOut = true;
            child.kill('SIGKILL');
          }, opts.timeoutMs)
        : undefined;
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => {
      if (timer) clearTimeout(timer);
      reject(new Error(`${cmd}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      const res: RunResult = {
        code: code ?? (signal ? 128 : 1),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      };
      if (timedOut) res.stderr += `\n[killed after ${opts.timeoutMs} ms]`;
      if (res.code !== 0 && !opts.allowFail) {
        reject(new Error(`${cmd} ${args.join(' ')} exited ${res.code}${signal ? ` (${signal})` : ''}: ${res.stderr.trim() || res.stdout.trim()}`));
      } else resolve(res);
    });
    if (opts.input !== undefined) child.stdin.end(opts.input);
    else child.stdin.end();
  });
}

/** Synchronous variant for last-resort cleanup; never throws. */
export function runSyncQuiet(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 15000 });
  } catch {
    return '';
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls fn until it returns a truthy value or the deadline passes. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs: number, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? `: ${(lastErr as Error).message}` : ''}`);
    }
    await sleep(everyMs);
  }
}

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** Absolute path of an executable on PATH (plus sbin dirs), or undefined. */
export function which(name: string): string | undefined {
  const dirs = (process.env.PATH ?? '').split(':').concat(['/usr/local/sbin', '/usr/sbin', '/sbin', '/usr/local/bin', '/usr/bin', '/bin']);
  for (const d of dirs) {
    if (!d) continue;
    const p = join(d, name);
    if (existsSync(p)) return p;
  }
  return undefined;
}

// ---------------------------------------------------------------------------
// Processes, mounts, namespaces

/** Every process on the machine but this one, as listed in /proc right now. */
function otherPids(): number[] {
  try {
    return readdirSync('/proc')
      .filter((e) => /^\d+$/.test(e) && Number(e) !== process.pid)
      .map(Number);
  } catch {
    return [];
  }
}

/** PIDs (other than ours) whose command line mentions `needle` or whose root dir lies under it. */
export function pidsUsing(needle: string): number[] {
  const pids: number[] = [];
  for (const pid of otherPids()) {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cmdline.includes(needle)) {
        pids.push(pid);
        continue;
      }
    } catch {
      continue;
    }
    try {
      const root = readlinkSync(`/proc/${pid}/root`);
      if (root.startsWith(needle)) pids.push(pid);
    } catch {
      /* gone or not permitted */
    }
  }
  return pids;
}

export function killPids(pids: number[], signal: NodeJS.Signals = 'SIGKILL'): void {
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      /* already gone */
    }
  }
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Mount points at or under `dir` in our mount namespace, deepest first. */
export function mountsUnder(dir: string): string[] {
  let text = '';
  try {
    text = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if (f.length < 5) continue;
    const mp = f[4].replace(/\\040/g, ' ');
    if (mp === dir || mp.startsWith(dir + '/')) out.push(mp);
  }
  return [...new Set(out)].sort((a, b) => b.length - a.length);
}

export function unmountAllUnder(dir: string): void {
  for (let pass = 0; pass < 3; pass++) {
    const mps = mountsUnder(dir);
    if (mps.length === 0) return;
    for (const mp of mps) {
      if (!runSyncQuiet('umount', [mp]) && mountsUnder(mp).includes(mp)) runSyncQuiet('umount', ['-l', mp]);
    }
  }
}

/** PIDs whose /proc/PID/cgroup mentions one of `ids`; their cgroup paths are added to `paths`. */
export function pidsInCgroupsMentioning(ids: string[], paths: Set<string>): number[] {
  const pids: number[] = [];
  for (const pid of otherPids()) {
    let text = '';
    try {
      text = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
    } catch {
      continue;
    }
    if (!ids.some((id) => text.includes(id))) continue;
    pids.push(pid);
    for (const line of text.split('\n')) {
      const path = line.split(':').slice(2).join(':');
      if (path && ids.some((id) => path.includes(id))) paths.add(path.replace(/^\//, ''));
    }
  }
  return pids;
}

/** rmdir `<hierarchy>/<path>` in every cgroup hierarchy under /sys/fs/cgroup (v1 controllers and v2). */
export function removeCgroupDirs(paths: string[]): void {
  let roots: string[] = [];
  try {
    roots = readdirSync('/sys/fs/cgroup').map((d) => join('/sys/fs/cgroup', d));
  } catch {
    return;
  }
  roots.push('/sys/fs/cgroup');
  for (const p of paths) {
    if (!p || p.includes('..')) continue;
    for (const r of roots) {
      const d = join(r, p);
      if (existsSync(d)) runSyncQuiet('rmdir', [d]);
    }
  }
}

export function netnsExists(name: string): boolean {
  return existsSync(`/run/netns/${name}`);
}

/** Removes a netns file the way `ip netns del` does (unmount + unlink), for paths outside /run/netns too. */
export function removeNetnsPath(path: string): void {
  if (!existsSync(path)) return;
  runSyncQuiet('umount', [path]);
  if (mountsUnder(path).length) runSyncQuiet('umount', ['-l', path]);
  try {
    rmSync(path, { force: true });
  } catch {
    /* ignore */
  }
}

export async function createNetns(name: string): Promise<void> {
  await run('ip', ['netns', 'add', name]);
  await run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
}

/** Names of veth devices in a netns. */
export async function vethsIn(netns: string): Promise<string[]> {
  const r = await run('ip', ['-n', netns, '-o', 'link', 'show', 'type', 'veth'], { allowFail: true });
  return r.stdout
    .split('\n')
    .map((l) => /^\d+:\s+([^:@]+)/.exec(l)?.[1])
    .filter((n): n is string => !!n);
}

/** `ip -br link` + addresses + routes of a netns, for failure messages. */
export async function describeNetns(netns: string): Promise<string> {
  const a = await run('ip', ['-n', netns, '-br', 'addr'], { allowFail: true });
  const r = await run('ip', ['-n', netns, 'route'], { allowFail: true });
  return `--- netns ${netns}\n${a.stdout}${r.stdout}`;
}

// ---------------------------------------------------------------------------
// Scope: a temp dir + a netns prefix + a stack of async cleanups, with a
// synchronous last-resort path registered on process exit/signals.

const liveScopes = new Set<Scope>();
let exitHooked = false;

function hookExit(): void {
  if (exitHooked) return;
  exitHooked = true;
  process.on('exit', () => {
    for (const s of [...liveScopes]) s.emergencyCleanupSync();
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      for (const s of [...liveScopes]) s.emergencyCleanupSync();
      process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1));
    });
  }
}

export class Scope {
  private stack: Array<{ label: string; fn: () => Promise<void> | void }> = [];
  private netnsNames: string[] = [];
  private extraNetnsPaths = new Set<string>();
  private containerIds = new Set<string>();
  private extraPaths = new Set<string>();
  private cgroupPatterns: Array<(id: string) => string> = [];
  private closed = false;

  private constructor(
    /** Unique short prefix, usable in netns and device names. */
    readonly prefix: string,
    /** Private temp dir; removed on close. */
    readonly dir: string,
  ) {}

  static async create(tag: string): Promise<Scope> {
    const prefix = `pnrt${tag}${process.pid.toString(36)}${randomBytes(2).toString('hex')}`;
    const dir = await mkdtemp(join(tmpdir(), `${prefix}-`));
    const s = new Scope(prefix, dir);
    liveScopes.add(s);
    hookExit();
    return s;
  }

  path(...parts: string[]): string {
    return join(this.dir, ...parts);
  }

  /** Registers an async cleanup; cleanups run in reverse order on close(). */
  defer(label: string, fn: () => Promise<void> | void): void {
    this.stack.push({ label, fn });
  }

  /** Creates `<prefix>-<tag>` with lo up; it is deleted on close (and on exit). */
  async netns(tag: string): Promise<string> {
    const name = `${this.prefix}-${tag}`;
    await createNetns(name);
    this.netnsNames.push(name);
    return name;
  }

  /** A netns bind-mount file created by a runtime on our behalf (removed on emergency cleanup if still there). */
  trackNetnsPath(path: string): void {
    if (path) this.extraNetnsPaths.add(path);
  }

  /**
   * A container/sandbox id the runtime created for us. On the last-resort sweep,
   * processes whose /proc/PID/cgroup mentions it are killed and its cgroup dirs
   * (observed ones plus those from `cgroupPattern`s) removed.
   */
  trackContainerId(id: string): void {
    if (/^[0-9a-f]{12,}$/.test(id)) this.containerIds.add(id);
  }

  /** Cgroup path (relative to a hierarchy root) a runtime uses for a container id, e.g. id => `k8s.io/${id}`. */
  cgroupPattern(fn: (id: string) => string): void {
    this.cgroupPatterns.push(fn);
  }

  /** A path outside the temp dir that belongs to us (e.g. runc state); removed on the sweep if still there. */
  trackPath(path: string): void {
    if (path) this.extraPaths.add(path);
  }

  get namespaces(): readonly string[] {
    return this.netnsNames;
  }

  /** Runs cleanups (reverse order), then the generic sweep. Returns the errors met (never throws). */
  async close(): Promise<string[]> {
    if (this.closed) return [];
    this.closed = true;
    const errors: string[] = [];
    while (this.stack.length) {
      const { label, fn } = this.stack.pop()!;
      try {
        await fn();
      } catch (e) {
        errors.push(`${label}: ${(e as Error).message}`);
      }
    }
    this.sweepSync(errors);
    liveScopes.delete(this);
    return errors;
  }

  /** Last resort (process exit): no async work possible. */
  emergencyCleanupSync(): void {
    if (this.closed) return;
    this.closed = true;
    this.sweepSync([]);
    liveScopes.delete(this);
  }

  private sweepSync(errors: string[]): void {
    // 1. processes still using our dir (runtime daemons, shims, conmon, container processes)
    for (let i = 0; i < 20; i++) {
      const pids = pidsUsing(this.dir);
      if (pids.length === 0) break;
      if (i === 0) errors.push(`killed leftover processes ${pids.join(',')}`);
      killPids(pids);
      runSyncQuiet('sleep', ['0.1']);
    }
    // 1b. container processes (after pivot_root their root and cmdline say nothing about us): by cgroup
    if (this.containerIds.size) {
      const cgPaths = new Set<string>();
      for (const id of this.containerIds) for (const f of this.cgroupPatterns) cgPaths.add(f(id));
      for (let i = 0; i < 20; i++) {
        const pids = pidsInCgroupsMentioning([...this.containerIds], cgPaths);
        if (pids.length === 0) break;
        if (i === 0) errors.push(`killed leftover container processes ${pids.join(',')}`);
        killPids(pids);
        runSyncQuiet('sleep', ['0.1']);
      }
      removeCgroupDirs([...cgPaths]);
    }
    for (const p of this.extraPaths) {
      try {
        rmSync(p, { recursive: true, force: true });
      } catch {
        /* ignore */
      }
    }
    // 2. netns created by runtimes for our pods, then ours
    for (const p of this.extraNetnsPaths) removeNetnsPath(p);
    for (const n of this.netnsNames.reverse()) {
      if (netnsExists(n)) runSyncQuiet('ip', ['netns', 'del', n]);
      if (netnsExists(n)) {
        removeNetnsPath(`/run/netns/${n}`);
        if (netnsExists(n)) errors.push(`netns ${n} could not be removed`);
      }
    }
    // 3. mounts under the temp dir, then the dir
    unmountAllUnder(this.dir);
    const left = mountsUnder(this.dir);
    if (left.length) errors.push(`mounts left under ${this.dir}: ${left.join(' ')}`);
    else {
      try {
        rmSync(this.dir, { recursive: true, force: true });
      } catch (e) {
        errors.push(`rm ${this.dir}: ${(e as Error).message}`);
      }
    }
  }
}
