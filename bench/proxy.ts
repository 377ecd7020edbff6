// Service proxy: podnet's nftables and iptables engines against kube-proxy's own two layouts
// (rendered by hand, bench/proxy-kube.ts), for 1,000 / 5,000 / 10,000 ClusterIP services with two
// endpoints each, every measurement in fresh network namespaces:
//
//   1. full sync from empty (wall time of the load);
//   2. one service added on top of N: podnet end to end through the Proxier and bare
//      engine.partialSync; kube-proxy: what its partial sync writes (iptables-restore --noflush /
//      nft -f);
//   3. one endpoint of one service replaced by another IP, the same ways;
//   4. TCP connect latency to the last service's cluster IP at 10 vs 10,000 services, from a
//      client in the node netns to a server in an endpoint netns behind a veth (two long-lived
//      clients, one per size, alternating batches of 10 connects; 4 fresh client pairs; all on one
//      CPU — a null test of 1,000 vs 1,000 services gives ratios within ±5% this way);
//   5. the proxy's peak RSS (VmHWM) for a full sync of 10,000 services, in a child process.
//
//   node --import tsx bench/proxy.ts [--sizes 1000,5000,10000] [--rounds N] [--changes K] [--connects C]
//        [--variants podnet-nft,kube-nft,podnet-ipt,kube-ipt] [--latency-services 10000] [--latency-small 10]
//        [--connect-batch 10] [--connect-cpu N] [--memory-services 10000]
//
// Rounds: --rounds, default 5 for up to 1,000 services and 3 above; each round makes K (default 5)
// single-service adds and K endpoint changes. Medians. Namespaces are named pnb-px-<random>-…, removed
// on exit (also on failure and SIGINT/SIGTERM); the root network namespace is never changed.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import type { ProxyEngine, ProxyMode } from '../src/proxy/engine.js';
import type { ProxyModel, RawEndpointSlice, RawService, ServiceState } from '../src/proxy/model.js';
import { normalize } from '../src/proxy/normalize.js';
import { NODE, benchService, clusterIP, endpointIPs, makeState, rawService, rawSlice, replacementIP, SERVICE_PORT, svcName, NAMESPACE } from './proxy-gen.js';
import { KubeIptables, KubeNft } from './proxy-kube.js';
import { errorText, loadPodnet, type Podnet, type ProxierLike } from './proxy-podnet.js';

// ---------------------------------------------------------------- parameters

function arg(flag: string): string | undefined {
  const i = process.argv.indexOf(flag);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const SIZES = (arg('--sizes') ?? '1000,5000,10000').split(',').map(Number);
if (SIZES.some((n) => !Number.isInteger(n) || n < 1 || n > 60000)) throw new Error('--sizes: integers 1..60000');
const ROUNDS_ARG = arg('--rounds') === undefined ? undefined : Number(arg('--rounds'));
const roundsFor = (n: number): number => ROUNDS_ARG ?? (n <= 1000 ? 5 : 3);
const CHANGES = Number(arg('--changes') ?? 5);
/** fresh pairs of client processes per latency measurement */
const CONNECT_SESSIONS = 4;
const CONNECTS = Math.max(200, Number(arg('--connects') ?? 2000));
/** small batches of connects, alternating between the two sizes (a multiple of the sessions) */
const CONNECT_BATCHES = Math.ceil(CONNECTS / Number(arg('--connect-batch') ?? 10) / CONNECT_SESSIONS) * CONNECT_SESSIONS;
const LAT_SMALL = Number(arg('--latency-small') ?? 10);
const LAT_LARGE = Number(arg('--latency-services') ?? 10000);
const MEM_SIZE = Number(arg('--memory-services') ?? 10000);

/** clients and endpoint servers of the latency test all run on this CPU, so every pair sees the same placement */
const CONNECT_CPU = arg('--connect-cpu') ?? String(cpus().length - 1);
const HERE = dirname(fileURLToPath(import.meta.url));
const PREFIX = `pnb-px-${randomBytes(3).toString('hex')}`;
const nsPath = (ns: string): string => `/run/netns/${ns}`;

// ---------------------------------------------------------------- processes and namespaces

function sh(cmd: string, args: string[], allowFail = false): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    if (allowFail) return '';
    const x = e as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${x.stderr || x.message}`);
  }
}

const children = new Set<ChildProcess>();

/** spawn with an argument array and optional stdin; resolves with stdout, rejects on a non-zero exit. */
function run(cmd: string, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    children.add(p);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    p.stdout!.on('data', (d: Buffer) => out.push(d));
    p.stderr!.on('data', (d: Buffer) => err.push(d));
    p.on('error', (e) => {
      children.delete(p);
      reject(e);
    });
    p.on('close', (code) => {
      children.delete(p);
      if (code !== 0) reject(new Error(`${cmd} ${args.slice(0, 3).join(' ')}… (exit ${code}): ${Buffer.concat(err).toString().trim().split('\n').slice(0, 3).join(' | ')}`));
      else resolve(Buffer.concat(out).toString());
    });
    if (p.stdin) {
      p.stdin.on('error', () => {}); // EPIPE when the child fails early: its exit code tells
      p.stdin.end(input);
    }
  });
}

const created = new Set<string>();
let counter = 0;

function addNetns(tag: string): string {
  const name = `${PREFIX}-${tag}${counter++}`;
  sh('ip', ['netns', 'add', name]);
  created.add(name);
  sh('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  return name;
}

function delNetns(name: string): void {
  sh('ip', ['netns', 'del', name], true);
  created.delete(name);
}

/** Synchronous, so it also runs from the exit handler: kills what this run started (by PID) and removes its namespaces. */
function cleanupAll(): void {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null && c.pid !== undefined) {
      try {
        process.kill(c.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
  children.clear();
  const listed = sh('ip', ['netns', 'list'], true)
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n && n.startsWith(`${PREFIX}-`));
  for (const n of new Set([...created, ...listed])) sh('ip', ['netns', 'del', n], true);
  created.clear();
}
process.on('exit', cleanupAll);
process.on('SIGINT', () => process.exit(130));
process.on('SIGTERM', () => process.exit(143));

// ---------------------------------------------------------------- statistics and output

function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}
function fmt(x: number | undefined): string {
  if (x === undefined || Number.isNaN(x)) return '-';
  return x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : x.toFixed(0);
}
function table(rows: string[][]): string {
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  const lines: string[] = [];
  for (const [i, r] of rows.entries()) {
    lines.push(r.map((x, j) => (j < 2 ? x.padEnd(w[j]) : x.padStart(w[j]))).join('  ').trimEnd());
    if (i === 0) lines.push(w.map((n) => '-'.repeat(n)).join('  '));
  }
  return lines.join('\n');
}
function progress(msg: string): void {
  process.stderr.write(`[proxy bench] ${msg}\n`);
}

// ---------------------------------------------------------------- variants

type VariantId = 'podnet-nft' | 'podnet-ipt' | 'kube-ipt' | 'kube-nft';
const ALL_VARIANTS: { id: VariantId; label: string }[] = [
  { id: 'podnet-nft', label: 'podnet nftables' },
  { id: 'kube-nft', label: 'kube-proxy nftables (nft -f)' },
  { id: 'podnet-ipt', label: 'podnet iptables (iptables-nft)' },
  { id: 'kube-ipt', label: 'kube-proxy iptables (iptables-nft-restore)' },
];
const VARIANT_ARG = arg('--variants')?.split(',');
if (VARIANT_ARG?.some((v) => !ALL_VARIANTS.some((x) => x.id === v))) throw new Error(`--variants: a comma-separated subset of ${ALL_VARIANTS.map((x) => x.id).join(',')}`);
const VARIANTS = ALL_VARIANTS.filter((v) => !VARIANT_ARG || VARIANT_ARG.includes(v.id));
const podnetMode = (v: VariantId): ProxyMode => (v === 'podnet-nft' ? 'nftables' : 'iptables');

interface Samples {
  full: number[];
  add: number[];
  addEngine: number[];
  ep: number[];
  epEngine: number[];
  /** sync kinds the Proxier reported for the single changes */
  kinds: string[];
  /** the Proxier's first sync (replaceAll of N services, from a kernel that already has them) */
  proxierFirst: number[];
  /** kube-proxy nft: `nft --json list table ip kube-proxy`, which knftables runs on every sync to find stale chains */
  list: number[];
  error?: string;
}
const newSamples = (): Samples => ({ full: [], add: [], addEngine: [], ep: [], epEngine: [], kinds: [], proxierFirst: [], list: [] });

/** A loaded node netns for one variant: lets the harness make single changes and measure them. */
interface Loaded {
  ns: string;
  close(): void;
}

const t = (): number => performance.now();

let podnet: Podnet = {};

function kubeTool(v: VariantId, ns: string): { cmd: string; args: string[] } {
  return v === 'kube-ipt' ? { cmd: 'nsenter', args: [`--net=${nsPath(ns)}`, 'iptables-nft-restore', '--noflush'] } : { cmd: 'nsenter', args: [`--net=${nsPath(ns)}`, 'nft', '-f', '-'] };
}

/** Full sync of N services into a fresh netns; returns the time and the loaded handle. */
async function loadFull(v: VariantId, n: number, ctx: SizeCtx): Promise<{ ms: number; loaded: Loaded; engine?: ProxyEngine; kube?: KubeIptables | KubeNft }> {
  const ns = addNetns('n');
  try {
    if (v === 'kube-ipt' || v === 'kube-nft') {
      const kube = v === 'kube-ipt' ? new KubeIptables(ctx.bench) : new KubeNft(ctx.bench);
      const text = kube.full();
      const { cmd, args } = kubeTool(v, ns);
      const t0 = t();
      await run(cmd, args, text);
      return { ms: t() - t0, loaded: { ns, close: () => delNetns(ns) }, kube };
    }
    if (!podnet.createEngine) throw new Error(podnet.engineWhy ?? 'no engines');
    const engine = await podnet.createEngine(podnetMode(v), { netns: nsPath(ns), iptablesBackend: 'nft' });
    const t0 = t();
    await engine.fullSync(ctx.model, NODE);
    const ms = t() - t0;
    return {
      ms,
      engine,
      loaded: {
        ns,
        close: () => {
          try {
            engine.close?.();
          } finally {
            delNetns(ns);
          }
        },
      },
    };
  } catch (e) {
    delNetns(ns);
    throw e;
  }
}

interface SizeCtx {
  n: number;
  state: ServiceState;
  model: ProxyModel;
  bench: ReturnType<typeof benchService>[];
}

function sizeCtx(n: number): SizeCtx {
  const state = makeState(n);
  return { n, state, model: normalize(state, NODE), bench: Array.from({ length: n }, (_, i) => benchService(i)) };
}

/** State with services/slices replaced or added (by name). */
function withChanges(state: ServiceState, services: RawService[], slices: RawEndpointSlice[]): ServiceState {
  const sv = new Map(state.services.map((s) => [String(s.metadata?.name), s]));
  for (const s of services) sv.set(String(s.metadata?.name), s);
  const sl = new Map(state.endpointSlices.map((s) => [String(s.metadata?.name), s]));
  for (const s of slices) sl.set(String(s.metadata?.name), s);
  return { services: [...sv.values()], endpointSlices: [...sl.values()] };
}

/** One round of one variant at one size: full sync, then K adds and K endpoint changes. */
async function measureRound(v: VariantId, ctx: SizeCtx, s: Samples, round: number, latency?: (loaded: Loaded) => Promise<void>): Promise<void> {
  const n = ctx.n;
  const r = await loadFull(v, n, ctx);
  try {
    s.full.push(r.ms);
    if (latency) await latency(r.loaded);
    // the k-th change of round `round` uses service indexes/addresses no other change used
    const addIdx = (k: number, which: number): number => n + (round * 4 + which) * CHANGES + k;
    const epIdx = (k: number, which: number): number => Math.floor(n / 2) + (round * 4 + which) * CHANGES + k;
    const replIdx = (k: number, which: number): number => (round * 4 + which) * CHANGES + k;
    if (r.kube) {
      const { cmd, args } = kubeTool(v, r.loaded.ns);
      for (let k = 0; k < CHANGES; k++) {
        const text = r.kube.addService(benchService(addIdx(k, 0)));
        const t0 = t();
        await run(cmd, args, text);
        s.add.push(t() - t0);
      }
      for (let k = 0; k < CHANGES; k++) {
        const i = epIdx(k, 0);
        const text = r.kube.replaceEndpoint(`${NAMESPACE}/${svcName(i)}`, endpointIPs(i)[1], replacementIP(replIdx(k, 0)));
        const t0 = t();
        await run(cmd, args, text);
        s.ep.push(t() - t0);
      }
      if (v === 'kube-nft') {
        const t0 = t();
        await run('nsenter', [`--net=${nsPath(r.loaded.ns)}`, 'nft', '--json', 'list', 'table', 'ip', 'kube-proxy']);
        s.list.push(t() - t0);
      }
      return;
    }
    const engine = r.engine!;
    // bare engine: partialSync(prev, next, node) with models normalized beforehand (not timed) and
    // without the Proxier's changed-ports hint, so the engine finds the change itself
    let state = ctx.state;
    let prev = ctx.model;
    for (let k = 0; k < CHANGES; k++) {
      const i = addIdx(k, 1);
      state = withChanges(state, [rawService(i)], [rawSlice(i)]);
      const next = normalize(state, NODE);
      const t0 = t();
      await engine.partialSync(prev, next, NODE);
      s.addEngine.push(t() - t0);
      prev = next;
    }
    for (let k = 0; k < CHANGES; k++) {
      const i = epIdx(k, 1);
      state = withChanges(state, [], [rawSlice(i, [endpointIPs(i)[0], replacementIP(replIdx(k, 1))])]);
      const next = normalize(state, NODE);
      const t0 = t();
      await engine.partialSync(prev, next, NODE);
      s.epEngine.push(t() - t0);
      prev = next;
    }
    // end to end through the Proxier
    if (!podnet.Proxier) return;
    const proxier: ProxierLike = new podnet.Proxier({ engine, node: NODE, netns: nsPath(r.loaded.ns) });
    proxier.replaceAll(state);
    const t1 = t();
    await proxier.sync();
    s.proxierFirst.push(t() - t1);
    for (let k = 0; k < CHANGES; k++) {
      const i = addIdx(k, 2);
      const t0 = t();
      proxier.putService(rawService(i));
      proxier.putSlice(rawSlice(i));
      const res = await proxier.sync();
      s.add.push(t() - t0);
      s.kinds.push(res.kind);
    }
    for (let k = 0; k < CHANGES; k++) {
      const i = epIdx(k, 2);
      const t0 = t();
      proxier.putSlice(rawSlice(i, [endpointIPs(i)[0], replacementIP(replIdx(k, 2))]));
      const res = await proxier.sync();
      s.ep.push(t() - t0);
      s.kinds.push(res.kind);
    }
  } finally {
    r.loaded.close();
  }
}

// ---------------------------------------------------------------- connect latency

interface Latency {
  us: number[];
  error?: string;
}

/** Gives a loaded node netns an endpoint netns (veth, every endpoint address local there) with a server on 8080. */
async function attachEndpoints(node: string): Promise<{ close(): void }> {
  const ep = addNetns('e');
  const server: { p?: ChildProcess } = {};
  const close = (): void => {
    const p = server.p;
    if (p?.pid !== undefined && p.exitCode === null && p.signalCode === null) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    if (p) children.delete(p);
    delNetns(ep);
  };
  try {
    sh('ip', ['-n', node, 'link', 'add', 'pxn0', 'type', 'veth', 'peer', 'name', 'pxe0', 'netns', ep]);
    sh('ip', ['-n', node, 'addr', 'add', `${NODE.nodeIPs[0]}/30`, 'dev', 'pxn0']);
    sh('ip', ['-n', node, 'link', 'set', 'pxn0', 'up']);
    sh('ip', ['-n', node, 'route', 'add', 'default', 'via', '192.168.77.2']);
    sh('ip', ['-n', ep, 'addr', 'add', '192.168.77.2/30', 'dev', 'pxe0']);
    sh('ip', ['-n', ep, 'link', 'set', 'pxe0', 'up']);
    for (const net of ['10.1.0.0/16', '10.2.0.0/16', '10.3.0.0/16']) sh('ip', ['-n', ep, 'route', 'add', 'local', net, 'dev', 'lo']);
    const p = spawn('taskset', ['-c', CONNECT_CPU, 'nsenter', `--net=${nsPath(ep)}`, process.execPath, '--import', 'tsx', join(HERE, 'proxy-connect.ts'), 'serve', '8080'], { stdio: ['ignore', 'pipe', 'inherit'] });
    server.p = p;
    children.add(p);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('endpoint server did not start')), 20000);
      p.stdout!.once('data', () => {
        clearTimeout(timer);
        resolve();
      });
      p.once('exit', (c) => {
        clearTimeout(timer);
        reject(new Error(`endpoint server exited (${c})`));
      });
    });
    return { close };
  } catch (e) {
    close();
    throw e;
  }
}

/** A long-lived client in a node netns: `batch(n)` makes n connects to vip:80 and returns their times (µs). */
async function startClient(node: string, vip: string): Promise<{ batch(n: number): Promise<number[]>; close(): void }> {
  const p = spawn('taskset', ['-c', CONNECT_CPU, 'nsenter', `--net=${nsPath(node)}`, process.execPath, '--import', 'tsx', join(HERE, 'proxy-connect.ts'), 'loop', vip, String(SERVICE_PORT), '50'], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(p);
  let buf = '';
  let err = '';
  const waiting: ((line: string) => void)[] = [];
  const lines: string[] = [];
  p.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      const w = waiting.shift();
      if (w) w(line);
      else lines.push(line);
    }
  });
  p.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  p.stdin!.on('error', () => {});
  const next = (): Promise<string> =>
    new Promise((resolve, reject) => {
      const l = lines.shift();
      if (l !== undefined) return resolve(l);
      const timer = setTimeout(() => reject(new Error(`connect client in ${node}: no answer (${err.trim().split('\n').pop() ?? ''})`)), 60_000);
      waiting.push((line) => {
        clearTimeout(timer);
        resolve(line);
      });
      p.once('exit', (c) => {
        clearTimeout(timer);
        reject(new Error(`connect client in ${node} exited (${c}): ${err.trim().split('\n').pop() ?? ''}`));
      });
    });
  const close = (): void => {
    if (p.pid !== undefined && p.exitCode === null && p.signalCode === null) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    children.delete(p);
  };
  try {
    if ((await next()) !== 'ready') throw new Error(`connect client in ${node}: unexpected start`);
  } catch (e) {
    close();
    throw e;
  }
  return {
    async batch(n: number): Promise<number[]> {
      p.stdin!.write(`${n}\n`);
      return JSON.parse(await next()) as number[];
    },
    close,
  };
}

/**
 * Connect latency to the last service at LAT_LARGE (the netns just loaded by the caller) and at
 * LAT_SMALL (loaded here, fresh), interleaved in batches so both see the same machine noise.
 */
async function latencyPair(v: VariantId, large: Loaded, nLarge: number, lat: Map<VariantId, Map<'small' | 'large', Latency>>): Promise<void> {
  const m = lat.get(v) ?? new Map<'small' | 'large', Latency>();
  lat.set(v, m);
  const small = await loadFull(v, LAT_SMALL, sizeCtx(LAT_SMALL));
  const epL = await attachEndpoints(large.ns).catch((e) => {
    small.loaded.close();
    throw e;
  });
  let epS: { close(): void } | undefined;
  try {
    epS = await attachEndpoints(small.loaded.ns);
    const a: number[] = [];
    const b: number[] = [];
    const per = Math.ceil(CONNECTS / CONNECT_BATCHES);
    progress(`  ${v}: connect latency, ${CONNECT_BATCHES} x ${per} connects at ${nLarge} and at ${LAT_SMALL} services, alternating, in ${CONNECT_SESSIONS} pairs of client processes`);
    for (let session = 0; session < CONNECT_SESSIONS; session++) {
      // fresh client processes per session, so no one process' luck decides a size's numbers
      const cl = await startClient(large.ns, clusterIP(nLarge - 1));
      const cs = await startClient(small.loaded.ns, clusterIP(LAT_SMALL - 1)).catch((e) => {
        cl.close();
        throw e;
      });
      try {
        for (let i = 0; i < CONNECT_BATCHES / CONNECT_SESSIONS; i++) {
          // alternate which size goes first, so neither always follows the other
          if (i % 2 === 0) {
            a.push(...(await cl.batch(per)));
            b.push(...(await cs.batch(per)));
          } else {
            b.push(...(await cs.batch(per)));
            a.push(...(await cl.batch(per)));
          }
        }
      } finally {
        cl.close();
        cs.close();
      }
    }
    m.set('large', { us: a });
    m.set('small', { us: b });
  } finally {
    epS?.close();
    epL.close();
    small.loaded.close();
  }
}

// ---------------------------------------------------------------- memory

interface Mem {
  what: string;
  via?: string;
  hwmKb?: number;
  rssKb?: number;
  ms?: number;
  error?: string;
}

async function memory(mode: 'baseline' | ProxyMode): Promise<Mem> {
  const ns = addNetns('m');
  try {
    const out = await run(process.execPath, ['--import', 'tsx', join(HERE, 'proxy-mem.ts'), mode, nsPath(ns), String(MEM_SIZE)]);
    const j = JSON.parse(out.trim().split('\n').pop()!) as { via: string; hwmKb: number; rssKb: number; ms: number };
    return { what: mode, ...j };
  } catch (e) {
    return { what: mode, error: errorText(e) };
  } finally {
    delNetns(ns);
  }
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const started = t();
  const load0 = loadavg()[0];
  podnet = await loadPodnet();
  const available = new Map<VariantId, string | undefined>();
  for (const v of VARIANTS) {
    if (v.id.startsWith('kube')) available.set(v.id, undefined);
    else if (!podnet.createEngine) available.set(v.id, podnet.engineWhy);
    else {
      // a cheap probe: the engine exists and renders; failures later are reported per row
      try {
        const e = await podnet.createEngine(podnetMode(v.id), {});
        e.render(normalize(makeState(1), NODE), NODE);
        e.close?.();
        available.set(v.id, undefined);
      } catch (err) {
        available.set(v.id, errorText(err));
      }
    }
  }
  if (!podnet.Proxier) progress(`no Proxier (${podnet.proxierWhy}): podnet end-to-end columns are empty`);
  for (const [v, why] of available) if (why) progress(`${v}: not available: ${why}`);

  const results = new Map<number, Map<VariantId, Samples>>();
  const lat = new Map<VariantId, Map<'small' | 'large', Latency>>();
  const active = VARIANTS.filter((v) => !available.get(v.id));

  for (const n of SIZES) {
    const rounds = roundsFor(n);
    progress(`${n} services: building the state and normalizing`);
    const ctx = sizeCtx(n);
    const perVariant = new Map<VariantId, Samples>(VARIANTS.map((v) => [v.id, newSamples()]));
    results.set(n, perVariant);
    for (let r = 0; r < rounds; r++) {
      // rotate the order each round so no variant always runs first (or after the slowest)
      const order = active.map((_, i) => active[(i + r) % active.length]);
      for (const v of order) {
        const s = perVariant.get(v.id)!;
        if (s.error) continue;
        const withLat = n === LAT_LARGE && r === 0;
        progress(`${n} services, round ${r + 1}/${rounds}: ${v.label}: full sync, ${CHANGES} adds, ${CHANGES} endpoint changes${withLat ? ', connect latency' : ''}`);
        try {
          await measureRound(v.id, ctx, s, r, withLat ? (loaded) => latencyPair(v.id, loaded, n, lat) : undefined);
        } catch (e) {
          s.error = errorText(e);
          progress(`  ${v.id}: failed: ${s.error}`);
        }
      }
    }
  }

  // connect latency when 10,000 was not among the sizes: a dedicated load per variant
  if (!SIZES.includes(LAT_LARGE)) {
    const ctx = sizeCtx(LAT_LARGE);
    for (const v of active) {
      progress(`connect latency: ${v.label}: loading ${LAT_LARGE} services`);
      try {
        const r = await loadFull(v.id, LAT_LARGE, ctx);
        try {
          await latencyPair(v.id, r.loaded, LAT_LARGE, lat);
        } finally {
          r.loaded.close();
        }
      } catch (e) {
        const m = lat.get(v.id) ?? new Map<'small' | 'large', Latency>();
        m.set('large', { us: [], error: errorText(e) });
        lat.set(v.id, m);
      }
    }
  }

  progress(`peak memory: full sync of ${MEM_SIZE} services in a child process`);
  const mems: Mem[] = [await memory('baseline')];
  for (const v of VARIANTS.filter((x) => x.id.startsWith('podnet'))) {
    const why = available.get(v.id);
    mems.push(why ? { what: podnetMode(v.id), error: `not available: ${why}` } : await memory(podnetMode(v.id)));
  }

  // ------------------------------------------------------------ report
  const out: string[] = [];
  out.push(`\nService proxy: ClusterIP services with 2 TCP endpoints each; kernel ${sh('uname', ['-r']).trim()}, ${sh('nft', ['--version']).trim()}, ${sh('iptables-nft', ['--version']).trim()}, node ${process.version}`);
  out.push(`Each measurement in fresh network namespaces; medians over rounds (${SIZES.map((n) => `${n}: ${roundsFor(n)}`).join(', ')}) x ${CHANGES} changes per round. Times in ms.\n`);
  const rows: string[][] = [['services', 'variant', 'full sync', '+1 service (e2e)', '+1 service (engine, no hint)', '1 endpoint (e2e)', '1 endpoint (engine, no hint)', 'Proxier 1st sync', 'note']];
  for (const n of SIZES) {
    for (const v of VARIANTS) {
      const why = available.get(v.id);
      const s = results.get(n)!.get(v.id)!;
      if (why || s.error) {
        rows.push([String(n), v.label, ...Array(6).fill('-'), why ? `not available: ${why}` : `failed: ${s.error}`]);
        continue;
      }
      const kube = v.id.startsWith('kube');
      const fullKinds = s.kinds.filter((k) => k !== 'partial').length;
      const note = kube ? (v.id === 'kube-ipt' ? 'e2e = iptables-restore --noflush' : `e2e = nft -f; + ${fmt(median(s.list))} ms for the table listing knftables does per sync`) : !podnet.Proxier ? `no Proxier: ${podnet.proxierWhy}` : fullKinds ? `${fullKinds}/${s.kinds.length} Proxier syncs were full` : '';
      rows.push([String(n), v.label, fmt(median(s.full)), fmt(median(s.add)), kube ? '-' : fmt(median(s.addEngine)), fmt(median(s.ep)), kube ? '-' : fmt(median(s.epEngine)), kube ? '-' : fmt(median(s.proxierFirst)), note]);
    }
  }
  out.push(table(rows));

  // podnet vs the kube-proxy layout on the same tool
  const rrows: string[][] = [['services', 'step', 'podnet nft', 'kube-proxy nft', 'ratio', 'podnet ipt', 'kube-proxy ipt', 'ratio']];
  const med = (n: number, v: VariantId, k: 'full' | 'add' | 'ep'): number | undefined => {
    const s = results.get(n)?.get(v);
    return !s || s.error || available.get(v) ? undefined : median(s[k]);
  };
  const ratio = (a?: number, b?: number): string => (a === undefined || b === undefined || Number.isNaN(a) || Number.isNaN(b) ? '-' : (a / b).toFixed(3));
  for (const n of SIZES) {
    for (const [k, label] of [['full', 'full sync'], ['add', '+1 service'], ['ep', '1 endpoint']] as const) {
      const pn = med(n, 'podnet-nft', k);
      const kn = med(n, 'kube-nft', k);
      const pi = med(n, 'podnet-ipt', k);
      const ki = med(n, 'kube-ipt', k);
      rrows.push([String(n), label, fmt(pn), fmt(kn), ratio(pn, kn), fmt(pi), fmt(ki), ratio(pi, ki)]);
    }
  }
  out.push('\nratio = podnet / kube-proxy (same tool family; below 1 is podnet faster); podnet e2e vs kube-proxy restore/nft -f');
  out.push(table(rrows));

  // connect latency
  const lrows: string[][] = [['variant', 'services', 'connects', 'median ms', 'p90 ms', `median ratio ${LAT_LARGE}/${LAT_SMALL}`, 'target (<= 1.10)']];
  for (const v of VARIANTS) {
    const m = lat.get(v.id);
    const why = available.get(v.id) ?? results.get(LAT_LARGE)?.get(v.id)?.error;
    if (!m || !m.get('large')?.us.length || !m.get('small')?.us.length) {
      const e = m?.get('large')?.error ?? why ?? 'not measured';
      lrows.push([v.label, '-', '-', '-', '-', '-', e.startsWith('not available') ? e : `not available: ${e}`]);
      continue;
    }
    const a = m.get('small')!.us.map((x) => x / 1000);
    const b = m.get('large')!.us.map((x) => x / 1000);
    const r = median(b) / median(a);
    lrows.push([v.label, String(LAT_SMALL), String(a.length), median(a).toFixed(3), pct(a, 90).toFixed(3), '', '']);
    lrows.push([v.label, String(LAT_LARGE), String(b.length), median(b).toFixed(3), pct(b, 90).toFixed(3), r.toFixed(3), r <= 1.1 ? 'MET' : 'MISSED']);
  }
  out.push(`\nTCP connect latency to the last service's cluster IP (client in the node netns, Node net.connect until 'connect', ${CONNECT_BATCHES} alternating batches of ${Math.ceil(CONNECTS / CONNECT_BATCHES)} per size from ${CONNECT_SESSIONS} pairs of client processes, all on CPU ${CONNECT_CPU})`);
  out.push(table(lrows));

  // memory
  const mrows: string[][] = [['process', 'services', 'how', 'peak RSS (VmHWM) MB', 'RSS at end MB', 'sync ms']];
  for (const m of mems) {
    if (m.error) mrows.push([m.what === 'baseline' ? 'baseline' : `podnet ${m.what}`, String(MEM_SIZE), m.error, '-', '-', '-']);
    else mrows.push([m.what === 'baseline' ? 'baseline (state + normalize, no engine)' : `podnet ${m.what}`, String(MEM_SIZE), m.via ?? '', (m.hwmKb! / 1024).toFixed(0), (m.rssKb! / 1024).toFixed(0), m.what === 'baseline' ? '-' : fmt(m.ms)]);
  }
  out.push(`\nPeak memory of the proxy process (a child node process; nft / iptables-restore children not included)`);
  out.push(table(mrows));

  // targets
  const big = SIZES.includes(10000) ? 10000 : undefined;
  const tg: string[] = [];
  const mark = (ok: boolean | undefined): string => (ok === undefined ? 'NOT MEASURED' : ok ? 'MET' : 'MISSED');
  const pnFull = big ? med(big, 'podnet-nft', 'full') : undefined;
  tg.push(`podnet nftables full sync of 10,000 services: ${fmt(pnFull)} ms (target < 1000 ms): ${mark(pnFull === undefined || Number.isNaN(pnFull) ? undefined : pnFull < 1000)}`);
  for (const v of ['podnet-nft', 'podnet-ipt'] as const) {
    const add = big ? med(big, v, 'add') : undefined;
    const ep = big ? med(big, v, 'ep') : undefined;
    const ok = add === undefined || ep === undefined || Number.isNaN(add) || Number.isNaN(ep) ? undefined : add < 20 && ep < 20;
    tg.push(`${ALL_VARIANTS.find((x) => x.id === v)!.label}: one-service change at 10,000, median end to end: +1 service ${fmt(add)} ms, 1 endpoint ${fmt(ep)} ms (target < 20 ms): ${mark(ok)}`);
  }
  for (const v of ['podnet-nft', 'podnet-ipt'] as const) {
    const m = lat.get(v);
    const a = m?.get('small')?.us;
    const b = m?.get('large')?.us;
    const r = a?.length && b?.length ? median(b) / median(a) : undefined;
    tg.push(`${ALL_VARIANTS.find((x) => x.id === v)!.label}: connect latency at ${LAT_LARGE} vs ${LAT_SMALL} services: ratio ${r === undefined ? '-' : r.toFixed(3)} (target <= 1.10): ${mark(r === undefined ? undefined : r <= 1.1)}`);
  }
  out.push('\nTargets');
  out.push(tg.map((l) => `  ${l}`).join('\n'));
  out.push(`\nmachine: ${cpus().length} CPUs, load average (1 min) ${load0.toFixed(2)} at start, ${loadavg()[0].toFixed(2)} at end; total bench time ${((t() - started) / 1000).toFixed(0)} s`);
  console.log(out.join('\n'));
}

try {
  await main();
} finally {
  cleanupAll();
}
