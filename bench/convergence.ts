// Convergence: one agent (in its own node netns) given 1,000 peer leases written straight into
// the store: time from agent start to a kernel with all 1,000 peers programmed, then the time
// for one more peer to appear. For each backend and both stores (file; etcd on loopback-less
// netns addresses). Medians over rounds; a table on stdout.
//
//   node --import tsx bench/convergence.ts [--peers N] [--rounds R]
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { openStore } from '../src/store/index.js';
import { encodeLease, leaseKey, type NodeLease } from '../src/agent/lease.js';
import { startEtcd, waitHealthy } from '../test/helpers/etcd.js';

function argNum(flag: string, dflt: number): number {
  const i = process.argv.indexOf(flag);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}
const PEERS = argNum('--peers', 1000);
const ROUNDS = argNum('--rounds', 3);
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
// The outer process builds the namespaces and etcd; the measuring part runs again inside the
// node netns (so the store client reaches etcd on the underlay without touching the root netns).
const INNER = process.env.PODNET_BENCH_INNER ? JSON.parse(process.env.PODNET_BENCH_INNER) as { prefix: string; tmp: string; etcdUrl: string } : undefined;
const PREFIX = INNER?.prefix ?? `pnc${process.pid.toString(36)}${randomBytes(2).toString('hex')}`;
const NODE = `${PREFIX}-node`;
const ETCDNS = `${PREFIX}-etcd`;
const tmp = INNER?.tmp ?? mkdtempSync(join(tmpdir(), `${PREFIX}-`));
const children: ChildProcess[] = [];
const stops: (() => Promise<void>)[] = [];

function ip(args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

let cleaned = false;
function cleanup(): void {
  if (cleaned || INNER) {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    return;
  }
  cleaned = true;
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  for (const n of [NODE, ETCDNS]) {
    try {
      ip(['netns', 'del', n]);
    } catch {
      /* gone */
    }
  }
  rmSync(tmp, { recursive: true, force: true });
}
process.on('exit', cleanup);
process.on('SIGINT', () => process.exit(130));

function peerLease(i: number, backend: 'vxlan' | 'host-gw'): NodeLease {
  // peers live at 172.20.x.y on the node's /16 underlay, subnets 10.(100+i/256).(i%256).0/24
  const pub = `172.20.${1 + Math.floor(i / 250)}.${1 + (i % 250)}`;
  const mac = `02:42:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}:00:01`;
  return { subnet: `10.${100 + Math.floor(i / 256)}.${i % 256}.0/24`, publicIP: pub, backendType: backend, backendData: backend === 'vxlan' ? { VtepMAC: mac, VNI: 1 } : {} };
}

function countPodnetRoutes(): number {
  return ip(['-n', NODE, 'route', 'show', 'proto', '80']).split('\n').filter(Boolean).length;
}

async function waitFor(pred: () => boolean, timeoutMs: number): Promise<number> {
  const t0 = performance.now();
  while (performance.now() - t0 < timeoutMs) {
    if (pred()) return performance.now() - t0;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error('timed out');
}

async function round(backend: 'vxlan' | 'host-gw', storeKind: 'file' | 'etcd', etcdUrl: string, r: number): Promise<{ all: number; one: number }> {
  const storeUrl = storeKind === 'file' ? `file:${join(tmp, `store-${backend}-${r}`)}` : 'etcd';
  const prefix = `/bench${r}${backend}/network`;
  const store = await openStore(storeUrl, { endpoints: [etcdUrl] });
  for (let i = 0; i < PEERS; i++) {
    const l = peerLease(i, backend);
    await store.create(leaseKey(l.subnet, `${prefix}/subnets/`), encodeLease(l));
  }
  const conf = join(tmp, `net-${backend}.json`);
  writeFileSync(conf, JSON.stringify({ Network: '10.0.0.0/8', SubnetLen: 24, Backend: { Type: backend } }));
  const t0 = performance.now();
  const agent = spawn('ip', ['netns', 'exec', NODE, process.execPath, join(REPO, 'dist/podnet.mjs'), 'agent', '--config', conf, '--store', storeUrl, '--etcd-endpoints', etcdUrl, '--etcd-prefix', prefix, '--socket', join(tmp, `a${r}.sock`), '--subnet-file', join(tmp, `subnet${r}.env`), '--data-dir', join(tmp, `data-${backend}-${storeKind}-${r}`), '--log-level', process.env.BENCH_AGENT_LOG_LEVEL ?? 'warn'], { stdio: ['ignore', 'ignore', 'inherit'] });
  children.push(agent);
  await waitFor(() => countPodnetRoutes() >= PEERS, 60_000);
  const all = performance.now() - t0;
  const extra = peerLease(PEERS, backend);
  const t1 = performance.now();
  await store.create(leaseKey(extra.subnet, `${prefix}/subnets/`), encodeLease(extra));
  await waitFor(() => ip(['-n', NODE, 'route', 'show', extra.subnet]).includes(extra.subnet.split('/')[0]), 10_000);
  const one = performance.now() - t1;
  agent.kill('SIGTERM');
  await new Promise((res) => agent.once('exit', res));
  // start the next round from an empty kernel: remove podnet's routes and device
  ip(['-n', NODE, 'route', 'flush', 'proto', '80']);
  try {
    ip(['-n', NODE, 'link', 'del', 'podnet.1']);
  } catch {
    /* host-gw has no device */
  }
  await store.close();
  return { all, one };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function inner(etcdUrl: string): Promise<void> {
  const rows: string[][] = [['backend', 'store', 'peers', `all programmed (median of ${ROUNDS}) ms`, 'one more peer ms', 'target']];
  for (const backend of ['vxlan', 'host-gw'] as const) {
    for (const storeKind of ['file', 'etcd'] as const) {
      const all: number[] = [];
      const one: number[] = [];
      for (let r = 0; r < ROUNDS; r++) {
        process.stderr.write(`  ${backend} / ${storeKind}: round ${r + 1}/${ROUNDS}\n`);
        const res = await round(backend, storeKind, etcdUrl, r + (storeKind === 'etcd' ? 100 : 0));
        all.push(res.all);
        one.push(res.one);
      }
      rows.push([backend, storeKind, String(PEERS), median(all).toFixed(0), median(one).toFixed(1), '< 2000 / < 100']);
    }
  }
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  for (const [i, r] of rows.entries()) {
    console.log(r.map((x, j) => x.padEnd(w[j])).join('  '));
    if (i === 0) console.log(w.map((n) => '-'.repeat(n)).join('  '));
  }
}

async function main(): Promise<void> {
  if (!existsSync(join(REPO, 'dist/podnet.mjs'))) execFileSync('npm', ['run', 'build'], { cwd: REPO, stdio: 'inherit' });
  for (const n of [NODE, ETCDNS]) {
    ip(['netns', 'add', n]);
    ip(['-n', n, 'link', 'set', 'lo', 'up']);
  }
  ip(['-n', NODE, 'link', 'add', 'name', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ETCDNS]);
  ip(['-n', NODE, 'addr', 'add', '172.20.0.1/16', 'dev', 'eth0']);
  ip(['-n', NODE, 'link', 'set', 'eth0', 'up']);
  ip(['-n', NODE, 'route', 'add', 'default', 'via', '172.20.0.2']);
  ip(['-n', ETCDNS, 'addr', 'add', '172.20.0.2/16', 'dev', 'eth0']);
  ip(['-n', ETCDNS, 'link', 'set', 'eth0', 'up']);
  const etcdUrl = 'http://172.20.0.2:2379';
  const etcd = startEtcd({ name: 'bench', dataDir: join(tmp, 'etcd'), clientUrl: etcdUrl, peerUrl: 'http://172.20.0.2:2380', initialCluster: 'bench=http://172.20.0.2:2380', state: 'new', netns: ETCDNS });
  stops.push(() => etcd.stop('SIGKILL'));
  await waitHealthy([etcdUrl], { netns: ETCDNS, procs: [etcd] });
  // async, so etcd's piped output keeps draining meanwhile
  const child = spawn('ip', ['netns', 'exec', NODE, process.execPath, '--import', 'tsx', fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: 'inherit',
    env: { ...process.env, PODNET_BENCH_INNER: JSON.stringify({ prefix: PREFIX, tmp, etcdUrl }) },
  });
  const code = await new Promise<number | null>((res) => child.once('exit', res));
  if (code !== 0) process.exitCode = 1;
  for (const s of stops) await s();
}

try {
  if (INNER) await inner(INNER.etcdUrl);
  else await main();
} finally {
  cleanup();
}
