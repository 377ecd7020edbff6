// KernelAdapter over the iproute2 CLI. Reads use `ip -json`; changes are batched into one
// `ip -batch -` (or `bridge -batch -`) spawn per consecutive run of ops for the same tool.
import { readFileSync } from 'node:fs';
import { stat, writeFile } from 'node:fs/promises';
import type { Address, FdbEntry, KernelAdapter, KernelOp, Link, LinkKind, Neighbour, NetnsRef, Route } from './types.js';
import { KernelError, classifyKernelMessage, cleanStderr, run, spawnCapture } from './exec.js';
import { describeNetns, iprouteArgv, netnsFile, nsExecArgv, validateIfName, validateNetns } from './netns.js';
import { type BatchTool, type RenderContext, defaultRenderContext, describeOp, isMissingFailure, renderOp } from './render.js';
import { parseAddresses, parseFdb, parseLinks, parseNeighbours, parseRoutes } from './parse.js';

/**
 * Printed before every op in an ip batch. Some iproute2 paths (neigh changes, argument parsing)
 * exit() on error without the "Command failed -:LINE" note, so counting these markers on stdout
 * is how a failure is pinned to its op. A single RTM_GETLINK of lo: cheap, and lo exists in every netns.
 */
export const BATCH_MARKER_LINE = 'link show dev lo';
const MARKER_RE = /^\d+: lo: /gm;

export interface BatchItem {
  index: number;
  op: KernelOp;
  tool: BatchTool;
  lines: string[];
}

export interface BatchScript {
  input: string;
  /** 1-based input line number → position in the items given */
  lineToItem: number[];
}

/** Builds the stdin for one batch run. Pure, exported for tests. */
export function buildBatchScript(items: BatchItem[], markers: boolean): BatchScript {
  const out: string[] = [];
  const lineToItem: number[] = [0];
  items.forEach((it, k) => {
    if (markers) {
      out.push(BATCH_MARKER_LINE);
      lineToItem.push(k);
    }
    for (const l of it.lines) {
      out.push(l);
      lineToItem.push(k);
    }
  });
  return { input: out.join('\n') + '\n', lineToItem };
}

/**
 * Which item of a failed batch run failed: the "Command failed -:N" note when present, else (ip)
 * the number of markers that made it to stdout. undefined when it cannot be known.
 */
export function locateBatchFailure(stdout: string, stderr: string, script: BatchScript, markers: boolean): number | undefined {
  const notes = [...stderr.matchAll(/Command failed [^:\n]*:(\d+)/g)];
  if (notes.length) {
    const line = Number(notes[notes.length - 1][1]);
    return script.lineToItem[line];
  }
  if (markers) {
    const seen = (stdout.match(MARKER_RE) ?? []).length;
    if (seen > 0) return seen - 1;
  }
  return undefined;
}

const SYSCTL_KEY_RE = /^[a-z0-9_.\-\/]+$/i;

/** Dotted (net.ipv4.ip_forward) or slashed (net/ipv4/conf/eth0.5/forwarding) sysctl key → /proc/sys path. */
export function sysctlPath(key: string): string {
  if (typeof key !== 'string' || !SYSCTL_KEY_RE.test(key)) {
    throw new KernelError({ argv: [], exitCode: null, stderr: '', op: `sysctl ${JSON.stringify(key)}`, kind: 'invalid', detail: 'invalid sysctl key (allowed: letters, digits, _ . - /)' });
  }
  // Slashes allow interface names containing dots, as sysctl(8) does.
  const segs = key.includes('/') ? key.split('/') : key.split('.');
  if (segs.some((s) => s === '' || s === '.' || s === '..')) {
    throw new KernelError({ argv: [], exitCode: null, stderr: '', op: `sysctl ${key}`, kind: 'invalid', detail: 'sysctl key has an empty or relative segment' });
  }
  return `/proc/sys/${segs.join('/')}`;
}

function sysctlValue(key: string, v: unknown): string {
  if (typeof v !== 'string' && typeof v !== 'number') {
    throw new KernelError({ argv: [], exitCode: null, stderr: '', op: `sysctl ${key}`, kind: 'invalid', detail: `value must be a string, got ${typeof v}` });
  }
  const s = String(v);
  if (/[\n\x00]/.test(s)) throw new KernelError({ argv: [], exitCode: null, stderr: '', op: `sysctl ${key}`, kind: 'invalid', detail: 'value contains a newline or NUL' });
  return s;
}

/** Probe lines per kind; run inside `unshare --net` so the throw-away netns vanishes with the process. */
const PROBES: Record<LinkKind, string[]> = {
  veth: ['link add name probe0 type veth peer name probe1'],
  bridge: ['link add name probe0 type bridge'],
  vxlan: ['link add name probe0 type vxlan id 1 dstport 4789'],
  macvlan: ['link add name parent0 type veth peer name parent1', 'link add link parent0 name probe0 type macvlan mode bridge'],
  ipvlan: ['link add name parent0 type veth peer name parent1', 'link add link parent0 name probe0 type ipvlan mode l2'],
  vlan: ['link add name parent0 type veth peer name parent1', 'link add link parent0 name probe0 type vlan id 5'],
  tun: ['tuntap add name probe0 mode tun'],
  dummy: ['link add name probe0 type dummy'],
  ipip: ['link add name probe0 type ipip remote 192.0.2.1 local 192.0.2.2'],
  gre: ['link add name probe0 type gre remote 192.0.2.1 local 192.0.2.2'],
  geneve: ['link add name probe0 type geneve id 1 remote 192.0.2.1'],
  wireguard: ['link add name probe0 type wireguard'],
  vrf: ['link add name probe0 type vrf table 4242'],
};

export interface Iproute2Options {
  /** per-spawn timeout */
  timeoutMs?: number;
  render?: RenderContext;
}

export class Iproute2Adapter implements KernelAdapter {
  private readonly probes = new Map<LinkKind, Promise<boolean>>();
  private readonly ctx: RenderContext;
  private readonly timeoutMs: number | undefined;
  /** spawn counter, for tests and benchmarks that hold the adapter to its spawn budget */
  spawns = 0;

  constructor(opts: Iproute2Options = {}) {
    this.ctx = opts.render ?? defaultRenderContext();
    this.timeoutMs = opts.timeoutMs;
  }

  private async ipJson(ns: NetnsRef, tool: BatchTool, args: string[], op: string): Promise<string> {
    const argv = iprouteArgv(ns, tool, args);
    this.spawns++;
    return run(argv, { op: `${op} in ${describeNetns(ns)}`, timeoutMs: this.timeoutMs });
  }

  async links(ns: NetnsRef): Promise<Link[]> {
    return parseLinks(await this.ipJson(ns, 'ip', ['-j', '-d', 'link', 'show'], 'list links'));
  }

  async link(ns: NetnsRef, name: string): Promise<Link | undefined> {
    validateIfName(name);
    const argv = iprouteArgv(ns, 'ip', ['-j', '-d', 'link', 'show', 'dev', name]);
    this.spawns++;
    const r = await spawnCapture(argv, { timeoutMs: this.timeoutMs });
    if (r.exitCode !== 0) {
      const e = new KernelError({ argv, exitCode: r.exitCode, stderr: r.stderr, op: `show link ${name} in ${describeNetns(ns)}` });
      // Only the device may be missing: a missing netns ("Cannot open network namespace", nsenter) is an error.
      if (e.kind === 'not-found' && /Device "[^"]*" does not exist|Cannot find device/.test(e.detail)) return undefined;
      throw e;
    }
    return parseLinks(r.stdout)[0];
  }

  async addresses(ns: NetnsRef, dev?: string): Promise<Address[]> {
    const args = ['-j', 'addr', 'show'];
    if (dev !== undefined) {
      validateIfName(dev);
      args.push('dev', dev);
    }
    return parseAddresses(await this.ipJson(ns, 'ip', args, dev ? `list addresses of ${dev}` : 'list addresses'));
  }

  async routes(ns: NetnsRef, opts: { family?: 4 | 6; table?: number | 'all'; dev?: string } = {}): Promise<Route[]> {
    const table = opts.table ?? 254;
    if (table !== 'all' && (typeof table !== 'number' || !Number.isInteger(table) || table < 0 || table > 0xffffffff)) {
      throw new KernelError({ argv: [], exitCode: null, stderr: '', op: 'list routes', kind: 'invalid', detail: `bad table ${JSON.stringify(table)}` });
    }
    if (opts.family !== undefined && opts.family !== 4 && opts.family !== 6) {
      throw new KernelError({ argv: [], exitCode: null, stderr: '', op: 'list routes', kind: 'invalid', detail: `bad family ${JSON.stringify(opts.family)}` });
    }
    const args = ['-j', '-d'];
    if (opts.family) args.push(`-${opts.family}`);
    // `ip route show table X` without a family is IPv4 only, while `table all` dumps every family:
    // both families of one table come from a single spawn and are filtered here (-d prints every
    // route's table in that dump, main included).
    const dumpAll = table === 'all' || opts.family === undefined;
    args.push('route', 'show', 'table', dumpAll ? 'all' : String(table));
    if (opts.dev !== undefined) {
      validateIfName(opts.dev);
      args.push('dev', opts.dev);
    }
    let out: string;
    try {
      out = await this.ipJson(ns, 'ip', args, 'list routes');
    } catch (e) {
      // An empty non-main table does not exist as far as the FIB is concerned.
      if (e instanceof KernelError && /FIB table does not exist/.test(e.detail)) return [];
      throw e;
    }
    const routes = parseRoutes(out, { family: opts.family, dev: opts.dev, table: dumpAll ? undefined : table });
    if (table === 'all' || !dumpAll) return routes;
    return routes.filter((r) => (r.table ?? 254) === table).map((r) => ({ ...r, table }));
  }

  /** `<tool> -j <object> show [dev DEV]`, the device validated first. */
  private showOnDev(ns: NetnsRef, tool: 'ip' | 'bridge', object: string, dev: string | undefined, what: string) {
    const args = ['-j', object, 'show'];
    if (dev !== undefined) {
      validateIfName(dev);
      args.push('dev', dev);
    }
    return this.ipJson(ns, tool, args, what);
  }

  async neighbours(ns: NetnsRef, dev?: string): Promise<Neighbour[]> {
    return parseNeighbours(await this.showOnDev(ns, 'ip', 'neigh', dev, 'list neighbours'), dev);
  }

  async fdb(ns: NetnsRef, dev?: string): Promise<FdbEntry[]> {
    return parseFdb(await this.showOnDev(ns, 'bridge', 'fdb', dev, 'list fdb'), dev);
  }

  async apply(ns: NetnsRef, ops: KernelOp[]): Promise<void> {
    validateNetns(ns);
    if (!Array.isArray(ops)) throw new KernelError({ argv: [], exitCode: null, stderr: '', op: 'apply', kind: 'invalid', detail: 'ops must be an array' });
    // Render (and so validate) everything before the first spawn: a bad plan changes nothing.
    const items: BatchItem[] = ops.map((op, index) => {
      try {
        return { index, op, ...renderOp(op, this.ctx) };
      } catch (e) {
        if (e instanceof KernelError) {
          throw new KernelError({ argv: [], exitCode: null, stderr: '', op: `op #${index + 1} ${e.op}`, kind: 'invalid', detail: e.detail, opIndex: index, kernelOp: op });
        }
        throw e;
      }
    });
    let start = 0;
    while (start < items.length) {
      let end = start + 1;
      while (end < items.length && items[end].tool === items[start].tool) end++;
      await this.runBatch(ns, items[start].tool, items.slice(start, end));
      start = end;
    }
  }

  private async runBatch(ns: NetnsRef, tool: BatchTool, items: BatchItem[]): Promise<void> {
    // `bridge` has no cheap printing command to use as a marker; its fdb errors all return through
    // the "Command failed" path, and its arguments were validated while rendering.
    const markers = tool === 'ip';
    const argv = iprouteArgv(ns, tool, ['-batch', '-']);
    let rest = items;
    while (rest.length) {
      const script = buildBatchScript(rest, markers);
      this.spawns++;
      const r = await spawnCapture(argv, { input: script.input, op: `${tool} batch in ${describeNetns(ns)}`, timeoutMs: this.timeoutMs });
      if (r.exitCode === 0) return;
      const at = locateBatchFailure(r.stdout, r.stderr, script, markers);
      const detail = cleanStderr(r.stderr) || `exit code ${r.exitCode}`;
      const kind = classifyKernelMessage(detail);
      if (at !== undefined) {
        const it = rest[at];
        // Resuming after an op whose object is already gone keeps the outcome exact: every op before
        // it succeeded (the batch stops at the first error), every op after it runs in the next spawn.
        if (isMissingFailure(it.op, kind)) {
          rest = rest.slice(at + 1);
          continue;
        }
        throw new KernelError({
          argv,
          exitCode: r.exitCode,
          stderr: r.stderr,
          detail,
          kind,
          op: `op #${it.index + 1} ${describeOp(it.op)} (${it.lines.join(' ; ')}) in ${describeNetns(ns)}`,
          opIndex: it.index,
          kernelOp: it.op,
        });
      }
      throw new KernelError({
        argv,
        exitCode: r.exitCode,
        stderr: r.stderr,
        detail,
        kind,
        op: `one of ops #${rest[0].index + 1}..#${rest[rest.length - 1].index + 1} (${rest.map((i) => describeOp(i.op)).join(', ')}) in ${describeNetns(ns)}`,
      });
    }
  }

  async sysctlGet(ns: NetnsRef, key: string): Promise<string> {
    const path = sysctlPath(key);
    validateNetns(ns);
    if (ns.kind === 'current') {
      try {
        // synchronous on purpose: a /proc/sys read never blocks, while an async one waits for a
        // libuv thread behind the IPAM's fsyncs (measured 0.6-4.5 ms per CNI ADD in the agent)
        return readFileSync(path, 'utf8').trim();
      } catch (e) {
        throw fsError(e, `sysctl read ${key}`, path);
      }
    }
    const argv = nsExecArgv(ns, ['sysctl', '-n', key]);
    this.spawns++;
    return (await run(argv, { op: `sysctl read ${key} in ${describeNetns(ns)}`, timeoutMs: this.timeoutMs })).trim();
  }

  async sysctlSet(ns: NetnsRef, values: Record<string, string>): Promise<void> {
    validateNetns(ns);
    const entries = Object.entries(values ?? {}).map(([k, v]) => [k, sysctlPath(k), sysctlValue(k, v)] as const);
    if (entries.length === 0) return;
    if (ns.kind === 'current') {
      for (const [k, path, v] of entries) {
        try {
          await writeFile(path, v);
        } catch (e) {
          throw fsError(e, `sysctl ${k}=${v}`, path);
        }
      }
      return;
    }
    // One spawn for all keys; procps sysctl(8) is required (it is the only tool that writes /proc/sys from inside the netns).
    const argv = nsExecArgv(ns, ['sysctl', '-q', '-w', ...entries.map(([k, , v]) => `${k}=${v}`)]);
    this.spawns++;
    await run(argv, { op: `sysctl ${entries.map(([k, , v]) => `${k}=${v}`).join(' ')} in ${describeNetns(ns)}`, timeoutMs: this.timeoutMs });
  }

  supportsLinkKind(kind: LinkKind): Promise<boolean> {
    let p = this.probes.get(kind);
    if (!p) {
      p = this.probe(kind);
      this.probes.set(kind, p);
      // A probe that could not run (not root, tool missing) must not stick as an answer.
      p.catch(() => this.probes.delete(kind));
    }
    return p;
  }

  private async probe(kind: LinkKind): Promise<boolean> {
    const lines = PROBES[kind];
    if (!lines) return false;
    // unshare --net gives a netns nobody else can see that disappears with the process: no cleanup to get wrong.
    const argv = ['unshare', '--net', 'ip', '-batch', '-'];
    this.spawns++;
    const r = await spawnCapture(argv, { input: lines.join('\n') + '\n', op: `probe link kind ${kind}`, timeoutMs: this.timeoutMs });
    if (r.exitCode === 0) return true;
    const e = new KernelError({ argv, exitCode: r.exitCode, stderr: r.stderr, op: `probe link kind ${kind} (${lines.join(' ; ')})` });
    if (e.kind === 'unsupported') return false;
    // No /dev/net/tun means no tun support, not a broken probe.
    if (kind === 'tun' && e.kind === 'not-found') return false;
    throw e;
  }

  async netnsId(ns: NetnsRef): Promise<string | undefined> {
    validateNetns(ns);
    try {
      const [st, self] = await Promise.all([stat(netnsFile(ns)), stat('/proc/self/ns/net')]);
      // Every namespace file lives on the one nsfs; anything else (a stale /run/netns entry whose
      // bind mount is gone, a regular file) is not a netns.
      if (st.dev !== self.dev) return undefined;
      return `${st.dev}:${st.ino}`;
    } catch {
      return undefined;
    }
  }
}

function fsError(e: unknown, op: string, path: string): KernelError {
  const err = e as NodeJS.ErrnoException;
  const kind = err.code === 'ENOENT' ? 'not-found' : err.code === 'EINVAL' ? 'invalid' : err.code === 'EOPNOTSUPP' ? 'unsupported' : 'other';
  return new KernelError({ argv: [], exitCode: null, stderr: '', op, kind, detail: `${path}: ${err.message}` });
}
