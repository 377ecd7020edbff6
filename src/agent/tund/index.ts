// The supervisor of podnet-tund, the tun backend's datapath process (docs/tun.md).
//
// podnet-tund runs apart from the agent and outlives it, like the routes the agent installs: the
// agent starts it detached (its own session, stdio to a log file, not waited for), so a SIGTERM or
// a kill -9 of the agent leaves the datapath running, and a restarted agent adopts it by its
// pidfile. Everything lives under <dataDir>/tund/: pid, peers, stats.json, log.
//
// A PID from the pidfile is only ever signalled after /proc/PID/cmdline shows that it is
// podnet-tund started with exactly this dataDir's pidfile: a stale pidfile whose PID was reused by
// another process is never signalled.
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { accessSync, closeSync, constants, existsSync, mkdirSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { packageRoot, writeAtomic } from '../../cni/install.js';
import type { Logger } from '../../util/log.js';
import type { DatapathPeer, DatapathTable } from '../backends/types.js';

export interface TundFiles {
  /** <dataDir>/tund */
  dir: string;
  /** the daemon's pidfile (written by podnet-tund once it is ready, removed when it exits) */
  pid: string;
  /** the peer table the agent writes (docs/tun.md "Peers file") */
  peers: string;
  /** stats.json, written by podnet-tund every second and on SIGUSR1 */
  stats: string;
  /** the daemon's stdout and stderr */
  log: string;
}

/** podnet-tund's counters (stats.json). */
export interface TundStats {
  pid: number;
  dev: string;
  listen: string;
  port: number;
  peers: number;
  locals: number;
  tun_reads: number;
  tun_read_bytes: number;
  udp_sent_datagrams: number;
  udp_send_calls: number;
  udp_recv_calls: number;
  udp_recv_datagrams: number;
  tun_writes: number;
  tun_write_bytes: number;
  gso_superpackets: number;
  gro_coalesced: number;
  drop_unknown_source: number;
  drop_inner_source: number;
  drop_inner_dest: number;
  drop_malformed: number;
  no_peer_icmp: number;
  errors: number;
  updated_ms: number;
  /** forward compatible: counters added later */
  [k: string]: unknown;
}

/** The daemon's peer table: `local` lines (the own subnets) and `peer` lines (subnet, underlay address, port). */
export type TundPeer = DatapathPeer;
export type TundPeerTable = DatapathTable;

export function tundFiles(dataDir: string): TundFiles {
  const dir = join(resolve(dataDir), 'tund');
  return { dir, pid: join(dir, 'pid'), peers: join(dir, 'peers'), stats: join(dir, 'stats.json'), log: join(dir, 'log') };
}

/** The podnet-tund binary: $PODNET_TUND, else <packageRoot>/dist/podnet-tund. */
export function tundBinary(): string {
  const env = process.env.PODNET_TUND;
  if (env && env.trim() !== '') return resolve(env);
  return join(packageRoot(), 'dist', 'podnet-tund');
}

/** Throws a clear error when the binary is missing or not executable. */
export function checkTundBinary(bin = tundBinary()): string {
  try {
    accessSync(bin, constants.X_OK);
    if (!statSync(bin).isFile()) throw new Error('not a file');
  } catch (e) {
    const why = existsSync(bin) ? `is not an executable file (${(e as Error).message})` : 'is missing';
    throw new Error(`backend tun: the datapath binary ${bin} ${why}: run \`npm run build\` (or set PODNET_TUND)`);
  }
  return bin;
}

/** stats.json parsed; undefined when it is missing or not (yet) valid JSON. */
export function readTundStats(dataDir: string): TundStats | undefined {
  try {
    const v = JSON.parse(readFileSync(tundFiles(dataDir).stats, 'utf8')) as unknown;
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as TundStats) : undefined;
  } catch {
    return undefined;
  }
}

/** The peers file in the documented format (docs/tun.md). Pure; the order is canonical (sorted). */
export function renderPeers(t: TundPeerTable): string {
  const locals = [...new Set(t.locals)].sort();
  const peers = [...t.peers].sort((a, b) => (a.subnet < b.subnet ? -1 : a.subnet > b.subnet ? 1 : 0));
  const lines = ['# podnet-tund peers v1', ...locals.map((l) => `local ${l}`), ...peers.map((p) => `peer ${p.subnet} ${p.publicIP} ${p.port}`)];
  return lines.join('\n') + '\n';
}

/** Parses a peers file (what renderPeers writes); unknown and malformed lines are skipped. Pure. */
export function parsePeers(text: string): TundPeerTable {
  const out: TundPeerTable = { locals: [], peers: [] };
  for (const raw of text.split('\n')) {
    const w = raw.trim().split(/\s+/);
    if (w[0] === 'local' && w.length === 2) out.locals.push(w[1]);
    else if (w[0] === 'peer' && w.length === 4 && /^\d+$/.test(w[3])) out.peers.push({ subnet: w[1], publicIP: w[2], port: Number(w[3]) });
  }
  return out;
}

/** The daemon's argv as a map of its --flags (undefined when the process is not podnet-tund). */
export interface TundProcess {
  pid: number;
  dev?: string;
  listen?: string;
  port?: number;
  pidfile?: string;
  argv: string[];
}

function procState(pid: number): string | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // pid (comm) S ...: comm may contain spaces and parentheses, the state follows the last ')'
    return s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3);
  } catch {
    return undefined;
  }
}

/** Whether the process exists and is not a zombie. */
function alive(pid: number): boolean {
  const st = procState(pid);
  return st !== undefined && st !== 'Z' && st !== 'X';
}

/** What /proc says about PID if it is a running podnet-tund; undefined otherwise. */
export function inspectTundProcess(pid: number): TundProcess | undefined {
  if (!Number.isInteger(pid) || pid <= 1 || !alive(pid)) return undefined;
  let argv: string[];
  try {
    argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    return undefined;
  }
  if (argv.length && argv[argv.length - 1] === '') argv.pop();
  if (!argv.length || basename(argv[0]) !== 'podnet-tund') return undefined;
  const flag = (name: string): string | undefined => {
    const i = argv.indexOf(name);
    if (i >= 0 && i + 1 < argv.length) return argv[i + 1];
    const eq = argv.find((a) => a.startsWith(`${name}=`));
    return eq?.slice(name.length + 1);
  };
  const port = flag('--port');
  return { pid, argv, dev: flag('--dev'), listen: flag('--listen'), port: port !== undefined && /^\d+$/.test(port) ? Number(port) : undefined, pidfile: flag('--pidfile') };
}

function readPid(file: string): number | undefined {
  try {
    const t = readFileSync(file, 'utf8').trim();
    return /^\d+$/.test(t) ? Number(t) : undefined;
  } catch {
    return undefined;
  }
}

/** The running podnet-tund of this dataDir (its pidfile's PID, verified by cmdline), if any. */
export function findTund(dataDir: string): TundProcess | undefined {
  const f = tundFiles(dataDir);
  const pid = readPid(f.pid);
  if (pid === undefined) return undefined;
  const p = inspectTundProcess(pid);
  return p && p.pidfile !== undefined && resolve(p.pidfile) === f.pid ? p : undefined;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Stops this dataDir's podnet-tund: SIGTERM, then SIGKILL after timeoutMs (default 5 s). True if
 * one was running and is gone now. Signals nothing unless /proc confirms it is ours.
 */
export async function stopTund(dataDir: string, opts: { timeoutMs?: number } = {}): Promise<boolean> {
  const p = findTund(dataDir);
  if (!p) return false;
  const timeoutMs = opts.timeoutMs ?? 5000;
  try {
    process.kill(p.pid, 'SIGTERM');
  } catch {
    return false;
  }
  const deadline = Date.now() + timeoutMs;
  while (alive(p.pid) && Date.now() < deadline) await sleep(20);
  if (alive(p.pid)) {
    // re-checked: the PID must still be that podnet-tund
    if (inspectTundProcess(p.pid)) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        /* gone meanwhile */
      }
    }
    const killDeadline = Date.now() + 5000;
    while (alive(p.pid) && Date.now() < killDeadline) await sleep(20);
  }
  return !alive(p.pid);
}

/** Sends a signal to this dataDir's podnet-tund; false when none runs. */
export function signalTund(dataDir: string, signal: NodeJS.Signals): boolean {
  const p = findTund(dataDir);
  if (!p) return false;
  try {
    process.kill(p.pid, signal);
    return true;
  } catch {
    return false;
  }
}

/**
 * Writes the peers file atomically (only when its content changes) and then sends SIGHUP to the
 * daemon so it re-reads it. `changed`: the file was rewritten; `signalled`: a daemon got SIGHUP.
 */
export function writePeers(dataDir: string, table: TundPeerTable): { changed: boolean; signalled: boolean } {
  const f = tundFiles(dataDir);
  const text = renderPeers(table);
  let old: string | undefined;
  try {
    old = readFileSync(f.peers, 'utf8');
  } catch {
    old = undefined;
  }
  if (old === text) return { changed: false, signalled: false };
  mkdirSync(f.dir, { recursive: true });
  writeAtomic(f.peers, text, 0o644);
  return { changed: true, signalled: signalTund(dataDir, 'SIGHUP') };
}

/** The peers file as the daemon would read it now (undefined when there is none). */
export function readPeers(dataDir: string): TundPeerTable | undefined {
  try {
    return parsePeers(readFileSync(tundFiles(dataDir).peers, 'utf8'));
  } catch {
    return undefined;
  }
}

export interface EnsureTundOptions {
  dataDir: string;
  /** the TUN device (podnet.tun) */
  dev: string;
  /** the underlay address to bind (the node's public IP) */
  listen: string;
  port: number;
  log?: Logger;
  /** the binary; default tundBinary() */
  binary?: string;
  /** how long to wait for the daemon's pidfile (default 10 s) */
  readyTimeoutMs?: number;
}

export interface TundHandle {
  pid: number;
  /** adopted a running daemon, or started one */
  action: 'adopted' | 'started';
  /** why a running daemon of this dataDir was replaced, if it was */
  replaced?: string;
}

function hostPort(listen: string, port: number): string {
  return listen.includes(':') ? `[${listen}]:${port}` : `${listen}:${port}`;
}

/** Whether the running daemon serves exactly this device, address and port. */
export function tundMatches(p: TundProcess, o: Pick<EnsureTundOptions, 'dev' | 'listen' | 'port'>): string[] {
  const why: string[] = [];
  if (p.dev !== o.dev) why.push(`--dev ${p.dev ?? 'unset'} ≠ ${o.dev}`);
  if (p.listen !== o.listen) why.push(`--listen ${p.listen ?? 'unset'} ≠ ${o.listen}`);
  if (p.port !== o.port) why.push(`--port ${p.port ?? 'unset'} ≠ ${o.port}`);
  return why;
}

/**
 * Binds a UDP socket to listen:port and closes it again: throws "Backend.Port N is taken on ADDR"
 * when something else holds it (or the address is not the node's).
 */
export async function checkUdpPort(listen: string, port: number): Promise<void> {
  const sock = createSocket({ type: listen.includes(':') ? 'udp6' : 'udp4', reuseAddr: false });
  try {
    await new Promise<void>((res, rej) => {
      sock.once('error', rej);
      sock.bind({ address: listen, port, exclusive: true }, () => res());
    });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const what = err.code === 'EADDRINUSE' ? `Backend.Port ${port} is taken on ${listen}` : `Backend.Port ${port} cannot be bound on ${listen}`;
    throw new Error(`${what} (bind ${hostPort(listen, port)}: ${err.code ?? err.message}): free it or choose another Backend.Port`);
  } finally {
    await new Promise<void>((r) => {
      try {
        sock.close(() => r());
      } catch {
        r();
      }
    });
  }
}

/**
 * What ensureTund will do, decided without changing anything: adopt the running daemon, or start
 * one (after checking that the port is free, unless the daemon being replaced holds it). Throws
 * the refusals ensureTund would throw before starting anything: missing binary, port taken.
 */
export async function preflightTund(o: Pick<EnsureTundOptions, 'dataDir' | 'dev' | 'listen' | 'port' | 'binary'>): Promise<{ adopt?: TundProcess; replace?: { p: TundProcess; why: string[] } }> {
  const running = findTund(o.dataDir);
  if (running) {
    const why = tundMatches(running, o);
    if (why.length === 0) return { adopt: running };
    checkTundBinary(o.binary);
    // the daemon being replaced holds its own address and port; any other must be free now
    if (!(running.listen === o.listen && running.port === o.port)) await checkUdpPort(o.listen, o.port);
    return { replace: { p: running, why } };
  }
  checkTundBinary(o.binary);
  await checkUdpPort(o.listen, o.port);
  return {};
}

function lastLine(file: string, from: number): string | undefined {
  try {
    const size = statSync(file).size;
    if (size <= from) return undefined;
    const fd = openSync(file, 'r');
    try {
      const len = Math.min(size - from, 64 * 1024);
      const buf = Buffer.alloc(len);
      readSync(fd, buf, 0, len, size - len);
      const lines = buf.toString('utf8').split('\n').map((l) => l.trim()).filter(Boolean);
      return lines[lines.length - 1];
    } finally {
      closeSync(fd);
    }
  } catch {
    return undefined;
  }
}

/** The error for podnet-tund's exit code (docs/tun.md: 2 usage, 3 port, 4 device, 1 other). */
export function tundExitError(code: number | null, signal: NodeJS.Signals | null, line: string | undefined, o: Pick<EnsureTundOptions, 'dev' | 'listen' | 'port'>): Error {
  const said = line ? ` (${line})` : '';
  switch (code) {
    case 3:
      return new Error(`Backend.Port ${o.port} is taken on ${o.listen}${said}: free it or choose another Backend.Port`);
    case 4:
      return new Error(`podnet-tund cannot attach to the TUN device ${o.dev}${said}`);
    case 2:
      return new Error(`podnet-tund refused its command line (exit 2)${said}`);
    default:
      return new Error(`podnet-tund exited ${signal ? `on ${signal}` : `with code ${code}`} before it was ready${said}`);
  }
}

/**
 * Adopts this dataDir's running podnet-tund when it serves the same --dev/--listen/--port, or
 * starts one detached and waits until its pidfile names it (ready) or it exits (an Error with its
 * exit code's meaning and its last stderr line). A daemon of this dataDir with other flags is
 * stopped and replaced. The peers file should be written before (a missing one = no peers).
 */
export async function ensureTund(o: EnsureTundOptions): Promise<TundHandle> {
  const f = tundFiles(o.dataDir);
  const pre = await preflightTund(o);
  if (pre.adopt) {
    o.log?.info('podnet-tund adopted', { pid: pre.adopt.pid, dev: o.dev, listen: o.listen, port: o.port });
    return { pid: pre.adopt.pid, action: 'adopted' };
  }
  let replaced: string | undefined;
  if (pre.replace) {
    replaced = pre.replace.why.join(', ');
    o.log?.warn('podnet-tund runs with other flags: replacing it', { pid: pre.replace.p.pid, reasons: pre.replace.why });
    await stopTund(o.dataDir);
  }
  // preflightTund checked it
  const bin = o.binary ?? tundBinary();
  mkdirSync(f.dir, { recursive: true });
  const logFd = openSync(f.log, 'a', 0o644);
  const logStart = statSync(f.log).size;
  const argv = ['--dev', o.dev, '--listen', o.listen, '--port', String(o.port), '--peers', f.peers, '--stats', f.stats, '--pidfile', f.pid];
  let child;
  try {
    child = spawn(bin, argv, { detached: true, stdio: ['ignore', logFd, logFd] });
  } finally {
    closeSync(logFd);
  }
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  let spawnError: Error | undefined;
  child.once('exit', (code, signal) => (exited = { code, signal }));
  child.once('error', (e) => (spawnError = e));
  child.unref();
  const pid = child.pid;
  const deadline = Date.now() + (o.readyTimeoutMs ?? 10_000);
  for (;;) {
    if (spawnError) throw new Error(`cannot start ${bin}: ${spawnError.message}`);
    if (pid !== undefined && readPid(f.pid) === pid) break;
    if (exited) throw tundExitError(exited.code, exited.signal, lastLine(f.log, logStart), o);
    if (Date.now() > deadline) {
      if (pid !== undefined) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      throw new Error(`podnet-tund (pid ${pid}) did not write its pidfile ${f.pid} within ${o.readyTimeoutMs ?? 10_000} ms${lastLine(f.log, logStart) ? ` (${lastLine(f.log, logStart)})` : ''}`);
    }
    await sleep(exited ? 0 : 20);
  }
  o.log?.info('podnet-tund started', { pid, dev: o.dev, listen: o.listen, port: o.port, log: f.log, ...(replaced ? { replaced } : {}) });
  return { pid: pid!, action: 'started', ...(replaced ? { replaced } : {}) };
}
