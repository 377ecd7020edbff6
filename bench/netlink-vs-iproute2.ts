// Benchmark: the data-plane part of a CNI bridge ADD / DEL, through iproute2 child processes (the
// way the kernel adapter does it) versus an in-process rtnetlink client over koffi (bench/netlink).
//
//   node --import tsx bench/netlink-vs-iproute2.ts [--pods N (20)] [--rounds R (3)] [--startup-runs K (10)]
//
// Everything lives in network namespaces named with a unique per-run prefix, removed on exit (also on
// failure and on SIGINT/SIGTERM). The root network namespace is never changed.
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { dirname, resolve } from 'node:path';
import { RtNetlink } from '../src/kernel/netlink/socket.js';

// ---------------------------------------------------------------- parameters

function argNum(flag: string, dflt: number): number {
  const i = process.argv.indexOf(flag);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}
const PODS = argNum('--pods', 20);
const ROUNDS = argNum('--rounds', 3);
const STARTUP_RUNS = argNum('--startup-runs', 10);
const PREFIX = `nlb${process.pid.toString(36)}${randomBytes(2).toString('hex')}`;
const NODE_NS = `${PREFIX}-node`;
const BRIDGE = 'br0';
const GW = '10.99.0.1';
const PREFIX_LEN = 24;
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const nsPath = (ns: string): string => `/run/netns/${ns}`;

// ---------------------------------------------------------------- processes

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** spawn with an argument array, optional stdin; rejects on a non-zero exit. */
function run(cmd: string, args: string[], input?: string, opts: { cwd?: string; allowFail?: boolean } = {}): Promise<RunResult> {
  return new Promise((res, rej) => {
    const p = spawn(cmd, args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], cwd: opts.cwd });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    p.stdout!.on('data', (d: Buffer) => out.push(d));
    p.stderr!.on('data', (d: Buffer) => err.push(d));
    p.on('error', rej);
    p.on('close', (code) => {
      const r = { code: code ?? -1, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
      if (r.code !== 0 && !opts.allowFail) rej(new Error(`${cmd} ${args.join(' ')} (exit ${r.code}): ${r.stderr.trim()}`));
      else res(r);
    });
    if (p.stdin) {
      p.stdin.on('error', () => {}); // EPIPE if the child exits early: its exit code tells
      p.stdin.end(input);
    }
  });
}

function sh(cmd: string, args: string[], allowFail = false): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    if (allowFail) return '';
    const x = e as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${x.stderr || x.message}`);
  }
}

// ---------------------------------------------------------------- namespaces (setup, not timed)

const created = new Set<string>();

async function addNetns(names: string[]): Promise<void> {
  // a few at a time: setup only
  for (let i = 0; i < names.length; i += 10) {
    await Promise.all(
      names.slice(i, i + 10).map(async (n) => {
        created.add(n);
        await run('ip', ['netns', 'add', n]);
      }),
    );
  }
}

async function delNetns(names: string[]): Promise<void> {
  for (let i = 0; i < names.length; i += 10) {
    await Promise.all(
      names.slice(i, i + 10).map(async (n) => {
        await run('ip', ['netns', 'del', n], undefined, { allowFail: true });
        created.delete(n);
      }),
    );
  }
}

/** Synchronous, so that it also runs from signal handlers and after failures: removes every netns of this run. */
function cleanupAll(): void {
  const listed = sh('ip', ['netns', 'list'], true)
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n && n.startsWith(PREFIX));
  for (const n of new Set([...created, ...listed])) sh('ip', ['netns', 'del', n], true);
  created.clear();
}

// ---------------------------------------------------------------- the ADD / DEL under test

/** Per-step durations of each method's ADD (for the breakdown table): method -> step -> samples. */
const steps = new Map<string, Map<string, number[]>>();
function record(method: string, step: string, ms: number): void {
  let m = steps.get(method);
  if (!m) steps.set(method, (m = new Map()));
  let a = m.get(step);
  if (!a) m.set(step, (a = []));
  a.push(ms);
}
async function stepA<T>(method: string, step: string, fn: () => Promise<T>): Promise<T> {
  const t = performance.now();
  const r = await fn();
  record(method, step, performance.now() - t);
  return r;
}
function stepS<T>(method: string, step: string, fn: () => T): T {
  const t = performance.now();
  const r = fn();
  record(method, step, performance.now() - t);
  return r;
}

interface Pod {
  ns: string;
  hostVeth: string;
  ip: string;
  mac?: string;
}

interface Method {
  name: string;
  add(p: Pod): Promise<string> | string;
  del(p: Pod): Promise<void> | void;
}

/** iproute2, `ip -n NS`: one batch for the host side, one batch for the pod side, one JSON read of the MAC. */
const iproute2N: Method = {
  name: 'iproute2 (ip -n)',
  async add(p) {
    const n = this.name;
    await stepA(n, 'host batch', () => run('ip', ['-n', NODE_NS, '-batch', '-'], [`link add ${p.hostVeth} type veth peer name eth0 netns ${p.ns}`, `link set ${p.hostVeth} master ${BRIDGE}`, `link set ${p.hostVeth} up`, ''].join('\n')));
    await stepA(n, 'pod batch', () => run('ip', ['-n', p.ns, '-batch', '-'], [`addr add ${p.ip}/${PREFIX_LEN} dev eth0`, 'link set eth0 up', 'link set lo up', `route add default via ${GW} dev eth0`, ''].join('\n')));
    const r = await stepA(n, 'MAC read', () => run('ip', ['-n', p.ns, '-j', 'link', 'show', 'eth0']));
    return (JSON.parse(r.stdout) as Array<{ address: string }>)[0].address;
  },
  async del(p) {
    await run('ip', ['-n', NODE_NS, 'link', 'del', p.hostVeth]);
  },
};

/** iproute2 with netns paths, as the adapter does for CNI_NETNS paths: `nsenter --net=PATH ip ...` (two execs each). */
const iproute2Nsenter: Method = {
  name: 'iproute2 (nsenter)',
  async add(p) {
    const n = this.name;
    await stepA(n, 'host batch', () => run('nsenter', [`--net=${nsPath(NODE_NS)}`, 'ip', '-batch', '-'], [`link add ${p.hostVeth} type veth peer name eth0 netns ${nsPath(p.ns)}`, `link set ${p.hostVeth} master ${BRIDGE}`, `link set ${p.hostVeth} up`, ''].join('\n')));
    await stepA(n, 'pod batch', () => run('nsenter', [`--net=${nsPath(p.ns)}`, 'ip', '-batch', '-'], [`addr add ${p.ip}/${PREFIX_LEN} dev eth0`, 'link set eth0 up', 'link set lo up', `route add default via ${GW} dev eth0`, ''].join('\n')));
    const r = await stepA(n, 'MAC read', () => run('nsenter', [`--net=${nsPath(p.ns)}`, 'ip', '-j', 'link', 'show', 'eth0']));
    return (JSON.parse(r.stdout) as Array<{ address: string }>)[0].address;
  },
  async del(p) {
    await run('nsenter', [`--net=${nsPath(NODE_NS)}`, 'ip', 'link', 'del', p.hostVeth]);
  },
};

let nodeSock: RtNetlink | undefined;
/** In-process rtnetlink: the node-side socket stays open (long-running agent); the pod-side one is opened per ADD. */
const netlink: Method = {
  name: 'netlink (koffi)',
  add(p) {
    const n = this.name;
    const node = nodeSock!;
    stepS(n, 'veth create (RTM_NEWLINK)', () => {
      const podFd = openSync(nsPath(p.ns), 'r');
      try {
        node.createVeth({ name: p.hostVeth, peerName: 'eth0', peerNetnsFd: podFd });
      } finally {
        closeSync(podFd);
      }
    });
    stepS(n, 'host: get br0, master + up', () => {
      const br = node.getLink(BRIDGE); // looked up on every ADD, as a stateless plugin would
      node.setLink({ name: p.hostVeth, master: br.index, up: true });
    });
    const pod = stepS(n, 'pod socket (setns in/out)', () => RtNetlink.openInNetns(nsPath(p.ns)));
    try {
      return stepS(n, 'pod: get eth0, addr, up x2, route', () => {
        const eth0 = pod.getLink('eth0'); // ifindex for the requests below, and the MAC
        pod.addAddr4(eth0.index, p.ip, PREFIX_LEN);
        pod.setLink({ index: eth0.index, up: true });
        pod.setLink({ name: 'lo', up: true });
        pod.addDefaultRoute4(GW, eth0.index);
        if (!eth0.mac) throw new Error('eth0 has no IFLA_ADDRESS');
        return eth0.mac;
      });
    } finally {
      pod.close();
    }
  },
  del(p) {
    nodeSock!.delLink(p.hostVeth);
  },
};

// ---------------------------------------------------------------- verification (not timed)

interface IpAddrJson {
  ifname: string;
  flags: string[];
  address: string;
  master?: string;
  addr_info: Array<{ family: string; local: string; prefixlen: number }>;
}

async function verifyAdded(method: Method, pods: Pod[], ping: boolean): Promise<void> {
  const host = JSON.parse((await run('ip', ['-n', NODE_NS, '-j', 'link', 'show', 'master', BRIDGE])).stdout) as IpAddrJson[];
  const ports = new Map(host.map((l) => [l.ifname, l]));
  for (const p of pods) {
    const h = ports.get(p.hostVeth);
    if (!h) throw new Error(`${method.name}: ${p.hostVeth} is not a port of ${BRIDGE}`);
    if (!h.flags.includes('UP')) throw new Error(`${method.name}: ${p.hostVeth} is not up`);
    // one process per pod: `ip -j -batch` prints one JSON document per line
    const [addrJson, routeJson] = (await run('ip', ['-n', p.ns, '-j', '-batch', '-'], 'addr show\nroute show\n')).stdout.trim().split('\n');
    const links = JSON.parse(addrJson) as IpAddrJson[];
    const eth0 = links.find((l) => l.ifname === 'eth0');
    const lo = links.find((l) => l.ifname === 'lo');
    if (!eth0 || !lo) throw new Error(`${method.name}: ${p.ns}: missing eth0 or lo`);
    if (!eth0.flags.includes('UP') || !lo.flags.includes('UP')) throw new Error(`${method.name}: ${p.ns}: eth0/lo not up`);
    if (!eth0.addr_info.some((a) => a.family === 'inet' && a.local === p.ip && a.prefixlen === PREFIX_LEN))
      throw new Error(`${method.name}: ${p.ns}: eth0 lacks ${p.ip}/${PREFIX_LEN}: ${JSON.stringify(eth0.addr_info)}`);
    if (eth0.address !== p.mac) throw new Error(`${method.name}: ${p.ns}: MAC read ${p.mac}, ip shows ${eth0.address}`);
    const routes = JSON.parse(routeJson) as Array<{ dst: string; gateway?: string; dev: string }>;
    if (!routes.some((r) => r.dst === 'default' && r.gateway === GW && r.dev === 'eth0')) throw new Error(`${method.name}: ${p.ns}: no default route via ${GW}`);
  }
  if (ping) {
    const p = pods[0];
    await run('ip', ['netns', 'exec', p.ns, 'ping', '-c', '1', '-W', '2', GW]);
  }
}

async function verifyDeleted(method: Method, pods: Pod[]): Promise<void> {
  const host = JSON.parse((await run('ip', ['-n', NODE_NS, '-j', 'link', 'show', 'master', BRIDGE])).stdout) as IpAddrJson[];
  if (host.length) throw new Error(`${method.name}: ports left on ${BRIDGE} after DEL: ${host.map((h) => h.ifname).join(' ')}`);
  const p = pods[pods.length - 1];
  const links = JSON.parse((await run('ip', ['-n', p.ns, '-j', 'link'])).stdout) as IpAddrJson[];
  if (links.some((l) => l.ifname === 'eth0')) throw new Error(`${method.name}: ${p.ns}: eth0 still there after DEL`);
}

// ---------------------------------------------------------------- stats

function quantile(sorted: number[], q: number): number {
  if (!sorted.length) return NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[idx];
}
interface Stat {
  n: number;
  min: number;
  median: number;
  p95: number;
  max: number;
  mean: number;
}
function stat(xs: number[]): Stat {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  return { n: s.length, min: s[0], median: mid, p95: quantile(s, 0.95), max: s[s.length - 1], mean: s.reduce((a, b) => a + b, 0) / s.length };
}
const f = (x: number, d = 2): string => x.toFixed(d);
function table(rows: string[][]): string {
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r, ri) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ') + (ri === 0 ? '\n' + w.map((x) => '-'.repeat(x)).join('  ') : '')).join('\n');
}

// ---------------------------------------------------------------- process start overhead (item 3)

async function startupCost(): Promise<{ base: Stat; koffi: Stat; koffiOnly: Stat; ipOnce: Stat }> {
  const baseArgs = ['--input-type=module', '-e', ''];
  const koffiArgs = [
    '--input-type=module',
    '-e',
    "import koffi from 'koffi'; const l = koffi.load('libc.so.6'); for (const d of ['int socket(int, int, int)', 'int bind(int, const void *, uint32_t)', 'long sendto(int, const void *, size_t, int, const void *, uint32_t)', 'long recv(int, void *, size_t, int)', 'int setsockopt(int, int, int, const void *, uint32_t)', 'int setns(int, int)', 'int close(int)']) l.func(d);",
  ];
  // in-child measure of the import + load alone (no process start noise)
  const koffiOnlyArgs = [
    '--input-type=module',
    '-e',
    "const t = performance.now(); const { default: koffi } = await import('koffi'); const l = koffi.load('libc.so.6'); for (const d of ['int socket(int, int, int)', 'int bind(int, const void *, uint32_t)', 'long sendto(int, const void *, size_t, int, const void *, uint32_t)', 'long recv(int, void *, size_t, int)', 'int setsockopt(int, int, int, const void *, uint32_t)', 'int setns(int, int)', 'int close(int)']) l.func(d); console.log(performance.now() - t);",
  ];
  const base: number[] = [];
  const withKoffi: number[] = [];
  const inChild: number[] = [];
  const ip: number[] = [];
  const timed = async (args: string[], into: number[]): Promise<RunResult> => {
    const t = performance.now();
    const r = await run(process.execPath, args, undefined, { cwd: REPO });
    into.push(performance.now() - t);
    return r;
  };
  for (let i = 0; i < STARTUP_RUNS; i++) {
    await timed(baseArgs, base);
    await timed(koffiArgs, withKoffi);
    const r = await run(process.execPath, koffiOnlyArgs, undefined, { cwd: REPO });
    inChild.push(Number(r.stdout.trim()));
    const t = performance.now();
    await run('ip', ['-n', NODE_NS, '-j', 'link', 'show', BRIDGE]);
    ip.push(performance.now() - t);
  }
  return { base: stat(base), koffi: stat(withKoffi), koffiOnly: stat(inChild), ipOnce: stat(ip) };
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const t0 = performance.now();
  const load0 = loadavg()[0];
  await addNetns([NODE_NS]);
  // setup through the netlink client itself (checked by iproute2 right after)
  nodeSock = RtNetlink.openInNetns(nsPath(NODE_NS));
  nodeSock.createBridge(BRIDGE, true);
  nodeSock.addAddr4(nodeSock.getLink(BRIDGE).index, GW, PREFIX_LEN);
  nodeSock.setLink({ name: 'lo', up: true });
  const br = JSON.parse(sh('ip', ['-n', NODE_NS, '-j', 'addr', 'show', BRIDGE])) as IpAddrJson[];
  if (!br[0]?.flags.includes('UP') || !br[0].addr_info.some((a) => a.local === GW)) throw new Error(`bridge setup failed: ${JSON.stringify(br)}`);

  const methods = [iproute2N, iproute2Nsenter, netlink];
  const addMs = new Map<Method, number[]>(methods.map((m) => [m, []]));
  const delMs = new Map<Method, number[]>(methods.map((m) => [m, []]));
  const firstAdd = new Map<Method, number>();
  // The pod netns are created once and reused by every method and round: after a DEL a pod netns holds
  // only lo again. (Creating and destroying hundreds of netns would put the kernel's asynchronous netns
  // cleanup work in the middle of the measurements.)
  const podNs = Array.from({ length: PODS }, (_, i) => `${PREFIX}-p${i}`);
  await addNetns(podNs);

  for (let round = 0; round < ROUNDS; round++) {
    // rotate the order between rounds, so that no method always runs first or last
    const order = methods.map((_, i) => methods[(i + round) % methods.length]);
    for (const m of order) {
      const pods: Pod[] = podNs.map((ns, i) => ({ ns, hostVeth: `veth${randomBytes(4).toString('hex')}`, ip: `10.99.0.${10 + i}` }));
      for (const p of pods) {
        const t = performance.now();
        p.mac = await m.add(p);
        const ms = performance.now() - t;
        if (!firstAdd.has(m)) firstAdd.set(m, ms);
        addMs.get(m)!.push(ms);
      }
      await verifyAdded(m, pods, true);
      for (const p of pods) {
        const t = performance.now();
        await m.del(p);
        delMs.get(m)!.push(performance.now() - t);
      }
      await verifyDeleted(m, pods);
      process.stderr.write(`round ${round + 1}/${ROUNDS}: ${m.name}: ${PODS} ADD+DEL ok (verified: addresses, MACs, routes, ports, ping)\n`);
    }
  }
  await delNetns(podNs);

  const startup = await startupCost();
  const total = (performance.now() - t0) / 1000;

  const nl = { add: stat(addMs.get(netlink)!), del: stat(delMs.get(netlink)!) };
  const rows: string[][] = [['method', 'op', 'n', 'min ms', 'median ms', 'p95 ms', 'max ms', 'first ms', 'median / netlink']];
  for (const m of methods) {
    for (const op of ['ADD', 'DEL'] as const) {
      const s = stat((op === 'ADD' ? addMs : delMs).get(m)!);
      const ref = op === 'ADD' ? nl.add.median : nl.del.median;
      rows.push([m.name, op, String(s.n), f(s.min, 3), f(s.median, 3), f(s.p95, 3), f(s.max, 3), op === 'ADD' ? f(firstAdd.get(m)!, 3) : '', `${f(s.median / ref, 1)}x`]);
    }
  }
  console.log(`\nCNI bridge ADD/DEL data plane, ${PODS} pods x ${ROUNDS} rounds per method (rounds rotate the method order); kernel ${sh('uname', ['-r']).trim()}, ${sh('ip', ['-V']).trim()}, node ${process.version}\n`);
  console.log(table(rows));
  console.log(`\nADD = veth with peer eth0 created in the pod netns, host side enslaved to ${BRIDGE} + up, pod: addr, eth0 up, lo up, default route, MAC read.`);
  console.log('iproute2: 3 child processes per ADD (host batch, pod batch, JSON read), 1 per DEL; nsenter variant: each is nsenter exec-ing ip.');
  console.log('netlink: in-process, node socket kept open, pod socket opened per ADD via setns; 8 request/ack round trips per ADD, 1 per DEL.');
  console.log('"first ms" is the first ADD of the method in this process (cold JIT for netlink).');

  const brows: string[][] = [['ADD breakdown', 'step', 'median ms', 'p95 ms']];
  for (const m of methods) {
    for (const [step, xs] of steps.get(m.name) ?? []) {
      const st = stat(xs);
      brows.push([m.name, step, f(st.median, 3), f(st.p95, 3)]);
    }
  }
  console.log('\n' + table(brows));

  const srows: string[][] = [['process start (wall, spawn to exit)', 'n', 'min ms', 'median ms', 'p95 ms']];
  srows.push(['node -e "" (ESM)', String(startup.base.n), f(startup.base.min), f(startup.base.median), f(startup.base.p95)]);
  srows.push(['node -e "import koffi; load libc; 7 funcs"', String(startup.koffi.n), f(startup.koffi.min), f(startup.koffi.median), f(startup.koffi.p95)]);
  srows.push(['  of which import+load+funcs, timed inside', String(startup.koffiOnly.n), f(startup.koffiOnly.min), f(startup.koffiOnly.median), f(startup.koffiOnly.p95)]);
  srows.push([`one 'ip -n NS -j link show' for scale`, String(startup.ipOnce.n), f(startup.ipOnce.min), f(startup.ipOnce.median), f(startup.ipOnce.p95)]);
  console.log('\n' + table(srows));
  console.log(`\nmachine: ${cpus().length} CPUs, load average (1 min) ${f(load0)} at start, ${f(loadavg()[0])} at end`);
  console.log(`\nkoffi start-up overhead (median difference): ${f(startup.koffi.median - startup.base.median)} ms per process; total bench time ${f(total, 1)} s`);
}

// last resort (uncaught errors skip the finally below); cleanupAll is synchronous and idempotent
process.on('exit', () => cleanupAll());

let exiting = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (exiting) return;
    exiting = true;
    process.stderr.write(`${sig}: cleaning up ${PREFIX}-*\n`);
    try {
      nodeSock?.close();
    } finally {
      cleanupAll();
      process.exit(130);
    }
  });
}

try {
  await main();
} catch (e) {
  process.exitCode = 1;
  process.stderr.write(`bench failed: ${(e as Error).stack ?? String(e)}\n`);
} finally {
  nodeSock?.close();
  cleanupAll();
  const left = sh('ip', ['netns', 'list'], true).split('\n').filter((l) => l.startsWith(PREFIX));
  if (left.length) {
    process.stderr.write(`leftover namespaces: ${left.join(', ')}\n`);
    process.exitCode = 1;
  }
}
