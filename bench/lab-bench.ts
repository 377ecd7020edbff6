// What the lab benchmarks (datapath.ts, tun.ts) share: their flags, the `podnet lab` runner, one
// iperf3 run between two pods, the hand-built reference path and the median.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const LIMITS = resolve(REPO, '..', 'shared', 'bench', 'datapath-limits.sh');

/** `--flag N` from the command line, or the default. */
export function argNum(flag: string, dflt: number): number {
  const i = process.argv.indexOf(flag);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}

/** Runs `podnet lab ARGS` (the built bundle) with this environment; its stdout, or an Error with its stderr. */
export function lab(args: string[], env: NodeJS.ProcessEnv): string {
  const r = spawnSync(process.execPath, [join(REPO, 'dist/podnet.mjs'), 'lab', ...args], { env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`podnet lab ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** One iperf3 TCP run from clientNs to an iperf3 server started in serverNs on `server`; received Gbit/s and bytes. */
export function iperf(clientNs: string, serverNs: string, server: string, seconds: number, streams = 1): { gbps: number; bytes: number } {
  // the one-off server daemonizes; its pidfile lets a failed client run stop it (it would wait forever)
  const pidfile = join(tmpdir(), `podnet-bench-iperf3-${process.pid}-${Date.now()}.pid`);
  execFileSync('ip', ['netns', 'exec', serverNs, 'iperf3', '-s', '-1', '-D', '-B', server, '--pidfile', pidfile]);
  try {
    spawnSync('sleep', ['0.3']);
    const out = execFileSync('ip', ['netns', 'exec', clientNs, 'iperf3', '-c', server, '-t', String(seconds), '-P', String(streams), '-J'], { encoding: 'utf8', maxBuffer: 64 << 20 });
    const end = JSON.parse(out).end.sum_received;
    return { gbps: end.bits_per_second / 1e9, bytes: end.bytes };
  } finally {
    stopPidfile(pidfile);
  }
}

/** Stops the process of a pidfile if it still runs (by its PID), and removes the file. */
function stopPidfile(file: string): void {
  if (!existsSync(file)) return;
  const pid = Number(readFileSync(file, 'utf8').trim());
  let cmdline = '';
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    // already gone: the server exits by itself after its one client
  }
  // only the server this pidfile names, never a process that took its PID since
  if (Number.isInteger(pid) && pid > 1 && cmdline.includes(file)) process.kill(pid, 'SIGTERM');
  rmSync(file, { force: true });
}

/** ../shared/bench/datapath-limits.sh: the hand-built paths' single-stream Gbit/s. */
export function handBuilt(seconds: number): { 'host-gw': number; vxlan: number; underlay: number } {
  const r = spawnSync('bash', [LIMITS], { env: { ...process.env, T: String(seconds) }, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`datapath-limits.sh failed: ${r.stderr}`);
  const get = (label: string) => Number(new RegExp(`${label} Gbit/s: ([0-9.]+)`).exec(r.stdout)?.[1]);
  return { 'host-gw': get('cross-node host-gw'), vxlan: get('cross-node vxlan'), underlay: get('underlay node-node') };
}

/** The median of the finite values (the mean of the middle two for an even count); NaN when there are none. */
export function median(xs: number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** One ping from `ns` to `dst` answered within a second. */
export function pingOk(ns: string, dst: string): boolean {
  return spawnSync('ip', ['netns', 'exec', ns, 'ping', '-n', '-q', '-c1', '-W1', dst]).status === 0;
}

/** Waits until `dst` answers a ping from `ns`; an Error naming `what` after `ms`. */
export async function waitPing(ns: string, dst: string, what: string, ms = 20_000): Promise<void> {
  const t0 = Date.now();
  while (!pingOk(ns, dst)) {
    if (Date.now() - t0 > ms) throw new Error(`${what}: ${dst} unreachable from ${ns} for ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
