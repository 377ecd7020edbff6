// Datapath throughput: iperf3 TCP, one stream, pod to pod across two nodes built by podnet (vxlan
// and host-gw) beside ../shared/bench/datapath-limits.sh (the same paths built by hand with
// iproute2, no netfilter), in one run:
//   - hand-built: the script, run as it is, every round (it builds and removes its namespaces);
//   - podnet, same underlay: two node namespaces on the script's own underlay (one veth, no
//     bridge), a podnet agent in each (file store, service proxy in nftables), pods through the
//     installed CNI client;
//   - podnet lab: `podnet lab up --nodes 2`, whose underlay is the fabric namespace's bridge.
// The podnet set-ups are built once and stay up; each has 100 services programmed (ClusterIP,
// every fourth a NodePort, endpoints on both pods) before the first measurement, checked in every
// node's `svc4` map. Rounds alternate the order of the five measurements (forward, then reversed);
// medians per path, ratios against the hand-built median, the targets as MET or MISSED, and the
// per-round values with the median of the per-round (paired) ratios: on a shared machine single
// samples vary by ±20%, so read those too (docs/datapath.md has the per-hook cost breakdown).
//
//   node --import tsx bench/datapath.ts [--rounds R (default 5)] [--seconds T (default 5)] [--services N (default 100)]
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { installCni } from '../src/cni/install.js';
import { SUPPORTED_VERSIONS } from '../src/cni/version.js';
import { openStore } from '../src/store/index.js';
import { buildService, buildSlice, servicePorts, storeKeys } from '../src/lab/services.js';
import { argNum, handBuilt, iperf as iperfRun, lab as runLab, LIMITS, median, REPO } from './lab-bench.js';

const ROUNDS = argNum('--rounds', 5);
const SECONDS = argNum('--seconds', 5);
const SERVICES = argNum('--services', 100);
const labDir = mkdtempSync(join(tmpdir(), 'podnet-bench-lab-'));
process.env.PODNET_LAB_DIR = labDir; // for the in-process lab calls (services) and the children
const env = { ...process.env };
type Backend = 'vxlan' | 'host-gw';
const BACKENDS: Backend[] = ['vxlan', 'host-gw'];

const lab = (args: string[]) => runLab(args, env);
const iperf = (clientNs: string, serverNs: string, server: string): number => iperfRun(clientNs, serverNs, server, SECONDS).gbps;

/** Elements of a node's svc4 map (frontends programmed by its proxy). */
function programmedFrontends(ns: string): number {
  const r = spawnSync('ip', ['netns', 'exec', ns, 'nft', '-j', 'list', 'map', 'inet', 'podnet-proxy', 'svc4'], { encoding: 'utf8' });
  if (r.status !== 0) return 0;
  const items = (JSON.parse(r.stdout) as { nftables: { map?: { elem?: unknown[] } }[] }).nftables;
  return items.reduce((n, it) => n + (it.map?.elem?.length ?? 0), 0);
}

/** ClusterIP services (every fourth a NodePort) have 1 frontend per node (+1 per NodePort). */
function expectedFrontends(n: number): number {
  let f = 0;
  for (let i = 0; i < n; i++) f += i % 4 === 3 ? 2 : 1;
  return f;
}

function waitProgrammed(nodes: string[], what: string): void {
  const want = expectedFrontends(SERVICES);
  const t0 = Date.now();
  for (;;) {
    const have = nodes.map(programmedFrontends);
    if (have.every((h) => h >= want)) return;
    if (Date.now() - t0 > 60_000) throw new Error(`${what}: ${SERVICES} services not programmed after 60 s (svc4 elements ${have.join(', ')}, want ${want})`);
    spawnSync('sleep', ['0.2']);
  }
}

interface Setup {
  client: string;
  serverNs: string;
  server: string;
  teardown(): void;
}

async function labSetup(backend: Backend): Promise<Setup> {
  const name = `bench${backend === 'vxlan' ? 'vx' : 'gw'}${process.pid.toString(36)}`.slice(0, 16);
  lab(['up', '--name', name, '--nodes', '2', '--backend', backend]);
  try {
    lab(['pod', 'add', 'a', '--node', 'n1', '--name', name]);
    lab(['pod', 'add', 'b', '--node', 'n2', '--name', name]);
    const st = JSON.parse(readFileSync(join(labDir, name, 'state.json'), 'utf8')) as { pods: Record<string, { ips: string[]; ns: string }>; nodes: Record<string, { ns: string }> };
    const { serviceAdd } = await import('../src/lab/service-ops.js');
    for (let i = 0; i < SERVICES; i++) {
      await serviceAdd(name, { name: `s${i}`, ports: ['80'], targets: ['8080'], pods: 'a,b', type: i % 4 === 3 ? 'NodePort' : 'ClusterIP' });
    }
    waitProgrammed(Object.values(st.nodes).map((n) => n.ns), `lab ${name}`);
    return { client: st.pods.a.ns, serverNs: st.pods.b.ns, server: st.pods.b.ips[0], teardown: () => void lab(['down', '--name', name]) };
  } catch (e) {
    lab(['down', '--name', name]);
    throw e;
  }
}

/**
 * podnet on exactly the hand-built script's underlay (a direct veth between two nodes, no
 * fabric bridge): agents, file store, service proxy, pods through the installed CNI client.
 */
async function directSetup(backend: Backend): Promise<Setup> {
  const P = `pnbd${process.pid.toString(36)}${backend === 'vxlan' ? 'v' : 'g'}`;
  const dir = mkdtempSync(join(tmpdir(), `${P}-`));
  const nss = ['n1', 'n2', 'a', 'b'].map((x) => `${P}-${x}`);
  const agents: ChildProcess[] = [];
  const sh = (args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  const teardown = () => {
    for (const a of agents) a.kill('SIGKILL');
    for (const n of nss) spawnSync('ip', ['netns', 'del', n]);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const n of nss) {
      sh(['netns', 'add', n]);
      sh(['-n', n, 'link', 'set', 'lo', 'up']);
    }
    sh(['-n', nss[0], 'link', 'add', 'name', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', nss[1]]);
    writeFileSync(join(dir, 'net.json'), JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: backend } }));
    for (const [i, n] of [nss[0], nss[1]].entries()) {
      sh(['-n', n, 'addr', 'add', `10.200.0.${i + 1}/24`, 'dev', 'eth0']);
      sh(['-n', n, 'link', 'set', 'eth0', 'up']);
      execFileSync('ip', ['netns', 'exec', n, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
      const nd = join(dir, `n${i + 1}`);
      installCni({ binDir: join(nd, 'bin'), socket: join(nd, 'sock') }, [...SUPPORTED_VERSIONS]);
      agents.push(
        spawn('ip', ['netns', 'exec', n, process.execPath, join(REPO, 'dist/podnet.mjs'), 'agent', '--config', join(dir, 'net.json'), '--store', `file:${join(dir, 'store')}`, '--iface', 'eth0', '--node-name', `n${i + 1}`, '--socket', join(nd, 'sock'), '--subnet-file', join(nd, 'subnet.env'), '--data-dir', join(nd, 'data'), '--log-level', 'warn'], { stdio: 'ignore' }),
      );
    }
    const t0 = Date.now();
    while (![1, 2].every((i) => existsSync(join(dir, `n${i}`, 'subnet.env')))) {
      if (Date.now() - t0 > 20_000) throw new Error('agents did not write their subnet files');
      spawnSync('sleep', ['0.05']);
    }
    const ips: string[] = [];
    for (const [i, pod] of [nss[2], nss[3]].entries()) {
      const nd = join(dir, `n${i + 1}`);
      const conf = { cniVersion: '1.0.0', name: 'bench', type: 'podnet', bridge: 'cni0', isGateway: true, isDefaultGateway: true, ipMasq: true, hairpinMode: true, ipam: { type: 'podnet-ipam', subnetFile: join(nd, 'subnet.env'), dataDir: join(nd, 'ipam') } };
      const out = execFileSync('ip', ['netns', 'exec', nss[i], join(nd, 'bin', 'podnet')], {
        env: { PATH: process.env.PATH, CNI_COMMAND: 'ADD', CNI_CONTAINERID: `bench${i}`, CNI_NETNS: `/run/netns/${pod}`, CNI_IFNAME: 'eth0', CNI_PATH: join(nd, 'bin'), PODNET_CNI_LOG: join(nd, 'cni.log') },
        input: JSON.stringify(conf),
        encoding: 'utf8',
      });
      ips.push(JSON.parse(out).ips[0].address.split('/')[0]);
    }
    // the services, as an API server and endpoint controller would write them
    const store = await openStore(`file:${join(dir, 'store')}`);
    try {
      const pods = [
        { name: 'a', ip: ips[0], node: 'n1' },
        { name: 'b', ip: ips[1], node: 'n2' },
      ];
      for (let i = 0; i < SERVICES; i++) {
        const nodePort = i % 4 === 3;
        const ports = servicePorts(['80'], ['8080'], nodePort ? [String(30000 + i)] : []);
        const name = `s${i}`;
        const { serviceKey, sliceKey } = storeKeys(name);
        const clusterIP = `10.96.${Math.floor((i + 10) / 250)}.${((i + 10) % 250) + 1}`;
        await store.create(sliceKey, JSON.stringify(buildSlice({ name, ports }, pods)));
        await store.create(serviceKey, JSON.stringify(buildService({ name, type: nodePort ? 'NodePort' : 'ClusterIP', clusterIP, ports, createdAt: new Date().toISOString() })));
      }
    } finally {
      await store.close();
    }
    waitProgrammed([nss[0], nss[1]], `podnet on the direct underlay (${backend})`);
    // the peers' routes follow the leases within a moment
    for (let i = 0; i < 100 && spawnSync('ip', ['netns', 'exec', nss[2], 'ping', '-c1', '-W1', ips[1]]).status !== 0; i++);
    return { client: nss[2], serverNs: nss[3], server: ips[1], teardown };
  } catch (e) {
    teardown();
    throw e;
  }
}

const setups: Setup[] = [];
const teardownAll = () => {
  while (setups.length) {
    try {
      setups.pop()!.teardown();
    } catch (e) {
      process.stderr.write(`teardown: ${(e as Error).message}\n`);
    }
  }
  rmSync(labDir, { recursive: true, force: true });
};
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    teardownAll();
    process.exit(130);
  });
}

try {
  if (!existsSync(LIMITS)) {
    console.log(`skipped: ${LIMITS} is missing (the hand-built reference lives in ../shared)`);
    process.exit(0);
  }
  if (!existsSync(join(REPO, 'dist/podnet.mjs'))) spawnSync('npm', ['run', 'build'], { cwd: REPO, stdio: 'inherit' });
  process.stderr.write(`setting up: 2 labs and 2 direct-underlay clusters, ${SERVICES} services each\n`);
  const labs = {} as Record<Backend, Setup>;
  const direct = {} as Record<Backend, Setup>;
  for (const b of BACKENDS) {
    labs[b] = await labSetup(b);
    setups.push(labs[b]);
    direct[b] = await directSetup(b);
    setups.push(direct[b]);
  }
  const ref: Record<keyof ReturnType<typeof handBuilt>, number[]> = { vxlan: [], 'host-gw': [], underlay: [] };
  const inLab: Record<Backend, number[]> = { vxlan: [], 'host-gw': [] };
  const same: Record<Backend, number[]> = { vxlan: [], 'host-gw': [] };
  const run = (s: Setup) => iperf(s.client, s.serverNs, s.server);
  for (let r = 0; r < ROUNDS; r++) {
    const steps: [string, () => void][] = [
      [
        'hand-built',
        () => {
          const h = handBuilt(SECONDS);
          for (const k of Object.keys(ref) as (keyof typeof ref)[]) ref[k].push(h[k]);
        },
      ],
      ['lab vxlan', () => inLab.vxlan.push(run(labs.vxlan))],
      ['same-underlay vxlan', () => same.vxlan.push(run(direct.vxlan))],
      ['lab host-gw', () => inLab['host-gw'].push(run(labs['host-gw']))],
      ['same-underlay host-gw', () => same['host-gw'].push(run(direct['host-gw']))],
    ];
    if (r % 2) steps.reverse();
    for (const [what, s] of steps) {
      s();
      process.stderr.write(`  round ${r + 1}/${ROUNDS}: ${what} done\n`);
    }
  }
  const f = (x: number) => x.toFixed(2);
  const verdict = (ratio: number, target: number) => `${ratio.toFixed(3)} ${ratio >= target ? 'MET' : 'MISSED'} (>= ${target})`;
  console.log(`datapath: iperf3 TCP, 1 stream, ${SECONDS} s, ${ROUNDS} rounds alternating; podnet with ${SERVICES} services programmed; Gbit/s medians`);
  const rows = [['path', 'hand-built', 'podnet same underlay', 'ratio', 'podnet lab', 'ratio']];
  for (const k of BACKENDS) {
    const h = median(ref[k]);
    rows.push([`cross-node ${k}`, f(h), f(median(same[k])), verdict(median(same[k]) / h, 0.98), f(median(inLab[k])), verdict(median(inLab[k]) / h, 0.95)]);
  }
  rows.push(['underlay node-node (scale)', f(median(ref.underlay)), '-', '-', '-', '-']);
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  for (const [i, r] of rows.entries()) {
    console.log(r.map((x, j) => x.padEnd(w[j])).join('  '));
    if (i === 0) console.log(w.map((n) => '-'.repeat(n)).join('  '));
  }
  console.log('per round (Gbit/s):');
  for (const k of BACKENDS) {
    console.log(`  ${k.padEnd(8)} hand-built ${ref[k].map(f).join(' ')} | same underlay ${same[k].map(f).join(' ')} | lab ${inLab[k].map(f).join(' ')}`);
    const paired = (xs: number[]) => median(xs.map((x, i) => x / ref[k][i])).toFixed(3);
    console.log(`  ${''.padEnd(8)} median of per-round ratios: same underlay ${paired(same[k])}, lab ${paired(inLab[k])}`);
  }
} finally {
  teardownAll();
}
