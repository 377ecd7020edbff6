// Test namespaces are fixtures: unique prefix per run, always removed, leftovers fail the run.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';

export const RUN_PREFIX = `pnt${process.pid.toString(36)}${randomBytes(2).toString('hex')}`;
let counter = 0;

export function sh(cmd: string, args: string[], opts: { input?: string; allowFail?: boolean } = {}): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', input: opts.input, stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (e) {
    if (opts.allowFail) return '';
    const err = e as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${err.stderr || err.message}`);
  }
}

/** Creates a network namespace with lo up; returns its name (path is /run/netns/NAME). */
export function makeNetns(tag = 'ns'): string {
  const name = `${RUN_PREFIX}-${tag}${counter++}`;
  sh('ip', ['netns', 'add', name]);
  sh('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  return name;
}

export function delNetns(name: string): void {
  sh('ip', ['netns', 'del', name], { allowFail: true });
}

/** Namespaces whose name starts with `prefix`. */
export function netnsWithPrefix(prefix: string): string[] {
  return sh('ip', ['netns', 'list'], { allowFail: true })
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n && n.startsWith(prefix));
}

/** Namespaces left over by this run (with this process' prefix). */
export function leftoverNetns(): string[] {
  return netnsWithPrefix(RUN_PREFIX);
}

/**
 * A process parked in the netns, so /proc/PID/ns/net is a netns path that is not under
 * /run/netns. The caller kills `child` when done.
 */
export async function parkInNetns(ns: string): Promise<{ path: string; child: ChildProcess }> {
  const child = spawn('ip', ['netns', 'exec', ns, 'sleep', '600'], { stdio: 'ignore' });
  const path = `/proc/${child.pid}/ns/net`;
  // ip netns exec execs sleep in place; wait until the PID has switched netns
  const want = sh('stat', ['-L', '-c', '%i', `/run/netns/${ns}`]).trim();
  for (let i = 0; i < 100; i++) {
    if (sh('stat', ['-L', '-c', '%i', path], { allowFail: true }).trim() === want) return { path, child };
    await new Promise((r) => setTimeout(r, 20));
  }
  child.kill('SIGKILL');
  throw new Error(`sleeper ${child.pid} never entered ${ns}`);
}

/** A group of namespaces removed together; use in before/after hooks. */
export class NetnsFixture {
  private names: string[] = [];
  add(tag?: string): string {
    const n = makeNetns(tag);
    this.names.push(n);
    return n;
  }
  dump(): string {
    return this.names
      .map((n) => `--- ${n}\n` + sh('ip', ['-n', n, '-br', 'addr'], { allowFail: true }) + sh('ip', ['-n', n, 'route'], { allowFail: true }))
      .join('\n');
  }
  cleanup(): void {
    for (const n of this.names.reverse()) delNetns(n);
    this.names = [];
  }
}

/** Runs a command inside a named netns. */
export function nsExec(ns: string, cmd: string[], opts: { allowFail?: boolean; input?: string } = {}): string {
  return sh('ip', ['netns', 'exec', ns, ...cmd], opts);
}
