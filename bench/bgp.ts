// The bgp backend (issue 12's Benchmark), in one run:
//   1. Throughput, iperf3 TCP, one stream, pod a on n1 (rack 1) to pod b on n2 (rack 2), so every
//      packet crosses the router namespace:
//        - bgp: `podnet lab up --backend bgp --router bird --racks 2 --nodes 2` (BIRD in the router,
//          the agents install what they learn; n1 and n2 route each other's pods via the router);
//        - vxlan: `podnet lab up --backend vxlan --racks 2 --nodes 2`: the same racks, the VXLAN
//          packets routed by the router (the lab has no BGP for vxlan: plain forwarding);
//        - hand-built: the same shape with iproute2 in namespaces of this bench's own prefix (a
//          fabric namespace with one bridge per rack, mcast snooping and bridge netfilter off as
//          the lab's; a router namespace with a veth leg on each, forwarding on, a static route to
//          each node's pod subnet; two node namespaces, eth0 a veth on its rack's bridge, default
//          route via the rack's router leg, a bridge with the pod's veth on it (hairpin on, as the
//          CNI plugin sets); the pods' eth0 with a /24 and default route via the bridge). No
//          agent, no nftables: the kernel path alone. Removed on exit;
//        - diagnostic: the hand-built path with the bgp lab nodes' nftables rulesets (`nft list
//          ruleset`, loaded as they are: the hand-built pods are in the same cluster network)
//          loaded into its two nodes: their nat chains put conntrack on every packet, which is
//          what the lab path has and the hand-built one has not (docs/datapath.md).
//      Rounds interleave the three paths (order reversed every other round); medians per path,
//      and the per-round (paired) ratios. Before measuring, the devices on the lab's bgp path and
//      on the hand-built one are compared (`ip -j -d link`: MTU, queues, GSO/GRO/TSO sizes, bridge
//      and bridge-port options; a few sysctls; nftables tables): what differs is printed.
//   2. Convergence: BIRD in the bgp lab's router announces ROUTES pod subnets (/24s in the cluster
//      network, a bigger one than the lab's default so they fit: --network 10.128.0.0/12) to n1
//      alone, next hop a spare address on rack 1 (192.168.<k>.200: on n1's segment, so the agent
//      installs them; no neighbour answers there, which does not matter for installing). The
//      lab's bird.conf is extended (the podnet lab has no hook for extra routes): two static
//      protocols, `bench_many` (ROUTES routes) and `bench_one` (one more), both `disabled`, and
//      n1's protocol exports them (its ipv4 channel redefined: the template exports only BGP
//      routes); then `birdc configure` (the sessions stay up). Per round: `birdc enable
//      bench_many`, time until n1's kernel has all ROUTES (proto 80); then `birdc enable
//      bench_one`, time until that one is installed; then both disabled and the time until all
//      are gone (for information). Times are from just before birdc is started to the kernel's
//      route notification of the last route, as `ip -ts monitor route` in n1 stamps it (the
//      kernel's table is polled as well, to know when to stop waiting and as a check).
// Targets: bgp ≥ 0.95 of hand-built and above vxlan; ROUTES installed in < 1 s, one more < 100 ms.
//
//   node --import tsx bench/bgp.ts [--rounds R (default 3)] [--seconds T (default 3)] [--routes N (default 1000)]
//                                 [--proxy-mode nftables|iptables|off (the labs' agents; default nftables, the lab's)]
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { protocolName } from '../src/lab/router/bird.js';
import { argNum, iperf, lab as runLab, median, REPO, waitPing } from './lab-bench.js';

const ROUNDS = argNum('--rounds', 3);
const SECONDS = argNum('--seconds', 3);
const ROUTES = argNum('--routes', 1000);
const PROXY_MODE = (() => {
  const i = process.argv.indexOf('--proxy-mode');
  return i >= 0 ? process.argv[i + 1] : 'nftables';
})();
const NETWORK = '10.128.0.0/12';
const BIRDC = '/usr/sbin/birdc';
const TAG = randomBytes(3).toString('hex');
const LABS = { bgp: `bgb${TAG}`, vxlan: `bgv${TAG}` } as const;
const HAND = `pnbgh${TAG}`;
const HAND_NS = ['fabric', 'router', 'n1', 'n2', 'a', 'b'].map((x) => `${HAND}-${x}`);
const labDir = mkdtempSync(join(tmpdir(), 'podnet-bench-bgp-'));
const env = { ...process.env, PODNET_LAB_DIR: labDir };
const children: ChildProcess[] = [];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface LabSt {
  network: string;
  nodes: Record<string, { name: string; ns: string; ip: string; rack?: number; subnetFile: string; fabricIf: string }>;
  pods: Record<string, { ns: string; ips: string[]; node: string }>;
  fabricNs: string;
  racks?: { index: number; k: number; bridge: string; routerIf: string; fabricIf: string; routerIp: string }[];
  router?: { ns: string; dir: string };
}

const lab = (args: string[]) => runLab(args, env);
const labState = (name: string): LabSt => JSON.parse(readFileSync(join(labDir, name, 'state.json'), 'utf8')) as LabSt;
const ipc = (args: string[]) => execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const nsx = (ns: string, argv: string[]) => execFileSync('ip', ['netns', 'exec', ns, ...argv], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });


interface Path {
  client: string;
  serverNs: string;
  server: string;
}

function labUp(name: string, backend: 'bgp' | 'vxlan'): LabSt {
  lab(['up', '--name', name, '--nodes', '2', '--racks', '2', '--backend', backend, ...(backend === 'bgp' ? ['--router', 'bird'] : []), '--network', NETWORK, '--proxy-mode', PROXY_MODE]);
  lab(['pod', 'add', 'a', '--node', 'n1', '--name', name]);
  lab(['pod', 'add', 'b', '--node', 'n2', '--name', name]);
  const st = labState(name);
  if (st.nodes.n1.rack === st.nodes.n2.rack) throw new Error(`lab ${name}: n1 and n2 are on the same rack (${st.nodes.n1.rack})`);
  return st;
}

/** The lab's bgp path by hand: the same devices, made with the same iproute2 commands as the lab's. */
function handBuilt(): Path {
  const [F, R, N1, N2, A, B] = HAND_NS;
  for (const n of HAND_NS) {
    ipc(['netns', 'add', n]);
    ipc(['-n', n, 'link', 'set', 'lo', 'up']);
  }
  const sysctl = (ns: string, kv: string) => nsx(ns, ['sysctl', '-qw', kv]);
  // the fabric: a switch per rack (as createFabric/createSwitch)
  for (const fam of ['iptables', 'ip6tables', 'arptables']) sysctl(F, `net.bridge.bridge-nf-call-${fam}=0`);
  sysctl(F, 'net.ipv4.ip_forward=0');
  for (const br of ['br0', 'br2']) {
    ipc(['-n', F, 'link', 'add', br, 'type', 'bridge']);
    ipc(['-n', F, 'link', 'set', br, 'type', 'bridge', 'mcast_snooping', '0', 'nf_call_iptables', '0', 'nf_call_ip6tables', '0', 'nf_call_arptables', '0']);
    ipc(['-n', F, 'link', 'set', br, 'up']);
  }
  ipc(['-n', F, 'addr', 'add', '192.168.201.254/24', 'dev', 'br0']);
  // the router: a leg on each rack (as createRacksAndRouter), static routes to the pod subnets
  sysctl(R, 'net.ipv4.ip_forward=1');
  sysctl(R, 'net.ipv6.conf.all.forwarding=1');
  for (const [i, br, k] of [[1, 'br0', 201], [2, 'br2', 202]] as const) {
    ipc(['-n', F, 'link', 'add', `r-rack${i}`, 'type', 'veth', 'peer', 'name', `rack${i}`, 'netns', R]);
    ipc(['-n', F, 'link', 'set', `r-rack${i}`, 'master', br]);
    ipc(['-n', F, 'link', 'set', `r-rack${i}`, 'up']);
    ipc(['-n', R, 'addr', 'replace', `192.168.${k}.253/24`, 'dev', `rack${i}`]);
    ipc(['-n', R, 'link', 'set', `rack${i}`, 'up']);
  }
  // the nodes (as attachToUnderlay/createNode) and a pod each (as the CNI plugin's bridge mode)
  for (const [i, N, P, br, k, pod] of [[1, N1, A, 'br0', 201, 'a'], [2, N2, B, 'br2', 202, 'b']] as const) {
    ipc(['-n', F, 'link', 'add', `v-n${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', N]);
    ipc(['-n', F, 'link', 'set', `v-n${i}`, 'master', br]);
    ipc(['-n', F, 'link', 'set', `v-n${i}`, 'up']);
    ipc(['-n', N, 'addr', 'replace', `192.168.${k}.${i}/24`, 'dev', 'eth0']);
    ipc(['-n', N, 'link', 'set', 'eth0', 'up']);
    ipc(['-n', N, 'route', 'replace', 'default', 'via', `192.168.${k}.253`]);
    sysctl(N, 'net.ipv4.ip_forward=1');
    ipc(['-n', N, 'link', 'add', 'podnet0', 'mtu', '1500', 'type', 'bridge']);
    ipc(['-n', N, 'addr', 'add', `10.143.${i}.1/24`, 'dev', 'podnet0']);
    ipc(['-n', N, 'link', 'set', 'podnet0', 'up']);
    ipc(['-n', N, 'link', 'add', `veth${pod}`, 'mtu', '1500', 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', '1500', 'netns', P]);
    ipc(['-n', N, 'link', 'set', `veth${pod}`, 'master', 'podnet0', 'up']);
    ipc(['-n', N, 'link', 'set', `veth${pod}`, 'type', 'bridge_slave', 'hairpin', 'on']);
    ipc(['-n', P, 'addr', 'add', `10.143.${i}.2/24`, 'dev', 'eth0']);
    ipc(['-n', P, 'link', 'set', 'eth0', 'up']);
    ipc(['-n', P, 'route', 'add', 'default', 'via', `10.143.${i}.1`]);
    ipc(['-n', P, 'route', 'add', NETWORK, 'via', `10.143.${i}.1`]);
    ipc(['-n', R, 'route', 'add', `10.143.${i}.0/24`, 'via', `192.168.${k}.${i}`]);
  }
  return { client: A, serverNs: B, server: '10.143.2.2' };
}

// --- the two paths compared, device by device ---

const VOLATILE = /^(ifindex|link_index|ifname|address|broadcast|link_netnsid|ifalias|master|operstate|permaddr|altnames|addr_info)$|timer|_id$|^id$|^no$|designated|root_port|topology_change|bridge_id|root_id|^flags$/;

function linkAttrs(ns: string, dev: string): Record<string, string> {
  const [l] = JSON.parse(ipc(['-n', ns, '-j', '-d', 'link', 'show', 'dev', dev])) as Record<string, unknown>[];
  const out: Record<string, string> = {};
  const walk = (o: Record<string, unknown>, pre: string) => {
    for (const [k, v] of Object.entries(o)) {
      if (VOLATILE.test(k)) continue;
      if (v && typeof v === 'object' && !Array.isArray(v)) walk(v as Record<string, unknown>, `${pre}${k}.`);
      else out[`${pre}${k}`] = JSON.stringify(v);
    }
  };
  walk(l, '');
  return out;
}

function sysctls(ns: string, devs: string[]): Record<string, string> {
  const keys = ['net.ipv4.ip_forward', 'net.ipv4.conf.all.rp_filter', 'net.ipv4.conf.default.rp_filter', 'net.ipv4.conf.all.send_redirects', 'net.bridge.bridge-nf-call-iptables', 'net.bridge.bridge-nf-call-arptables', ...devs.flatMap((d) => [`net.ipv4.conf.${d}.rp_filter`, `net.ipv4.conf.${d}.forwarding`])];
  const out: Record<string, string> = {};
  for (const k of keys) {
    const r = spawnSync('ip', ['netns', 'exec', ns, 'sysctl', '-n', k], { encoding: 'utf8' });
    out[k] = r.status === 0 ? r.stdout.trim() : 'absent';
  }
  return out;
}

function nftTables(ns: string): string {
  const r = spawnSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'tables'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim().split('\n').filter(Boolean).join(', ') || 'none' : 'none';
}

function podHostVeth(ns: string): string {
  const ls = JSON.parse(ipc(['-n', ns, '-j', 'link', 'show', 'master', 'podnet0'])) as { ifname: string }[];
  if (ls.length !== 1) throw new Error(`${ns}: expected one port on podnet0, found ${ls.map((l) => l.ifname).join(', ')}`);
  return ls[0].ifname;
}

/** Lines naming what differs between the lab's bgp path and the hand-built one. */
function comparePaths(st: LabSt): string[] {
  const [F, R, N1, N2, A, B] = HAND_NS;
  const r1 = st.racks!.find((r) => r.index === st.nodes.n1.rack)!;
  const r2 = st.racks!.find((r) => r.index === st.nodes.n2.rack)!;
  const rt = st.router!.ns;
  const pairs: [string, string, string, string, string][] = [
    ['pod a eth0', st.pods.a.ns, 'eth0', A, 'eth0'],
    ['n1 pod veth', st.nodes.n1.ns, podHostVeth(st.nodes.n1.ns), N1, 'veth' + 'a'],
    ['n1 podnet0', st.nodes.n1.ns, 'podnet0', N1, 'podnet0'],
    ['n1 eth0', st.nodes.n1.ns, 'eth0', N1, 'eth0'],
    ['fabric v-n1', st.fabricNs, st.nodes.n1.fabricIf, F, 'v-n1'],
    ['fabric rack 1 bridge', st.fabricNs, r1.bridge, F, 'br0'],
    ['fabric r-rack1', st.fabricNs, r1.fabricIf, F, 'r-rack1'],
    ['router rack1', rt, r1.routerIf, R, 'rack1'],
    ['router rack2', rt, r2.routerIf, R, 'rack2'],
    ['fabric r-rack2', st.fabricNs, r2.fabricIf, F, 'r-rack2'],
    ['fabric rack 2 bridge', st.fabricNs, r2.bridge, F, 'br2'],
    ['fabric v-n2', st.fabricNs, st.nodes.n2.fabricIf, F, 'v-n2'],
    ['n2 eth0', st.nodes.n2.ns, 'eth0', N2, 'eth0'],
    ['n2 podnet0', st.nodes.n2.ns, 'podnet0', N2, 'podnet0'],
    ['n2 pod veth', st.nodes.n2.ns, podHostVeth(st.nodes.n2.ns), N2, 'veth' + 'b'],
    ['pod b eth0', st.pods.b.ns, 'eth0', B, 'eth0'],
  ];
  const diffs: string[] = [];
  const cmp = (what: string, l: Record<string, string>, h: Record<string, string>) => {
    for (const k of new Set([...Object.keys(l), ...Object.keys(h)])) if (l[k] !== h[k]) diffs.push(`${what}: ${k} lab ${l[k] ?? 'absent'}, hand-built ${h[k] ?? 'absent'}`);
  };
  for (const [what, lns, ldev, hns, hdev] of pairs) cmp(what, linkAttrs(lns, ldev), linkAttrs(hns, hdev));
  const nsPairs: [string, string, string, string[], string[]][] = [
    ['pod a', st.pods.a.ns, A, ['eth0'], ['eth0']],
    ['n1', st.nodes.n1.ns, N1, ['eth0', 'podnet0'], ['eth0', 'podnet0']],
    ['fabric', st.fabricNs, F, [], []],
    ['router', rt, R, [r1.routerIf, r2.routerIf], ['rack1', 'rack2']],
    ['n2', st.nodes.n2.ns, N2, ['eth0', 'podnet0'], ['eth0', 'podnet0']],
    ['pod b', st.pods.b.ns, B, ['eth0'], ['eth0']],
  ];
  for (const [what, lns, hns, ldevs, hdevs] of nsPairs) {
    const rename = (o: Record<string, string>, from: string[]) => Object.fromEntries(Object.entries(o).map(([k, v]) => [from.reduce((kk, d, i) => kk.replace(`.${d}.`, `.<dev${i}>.`), k), v]));
    cmp(`${what} sysctl`, rename(sysctls(lns, ldevs), ldevs), rename(sysctls(hns, hdevs), hdevs));
    const lt = nftTables(lns);
    const ht = nftTables(hns);
    if (lt !== ht) diffs.push(`${what} nftables: lab ${lt}; hand-built ${ht}`);
  }
  return diffs;
}

// --- convergence ---

interface RouteEvent {
  t: number;
  deleted: boolean;
  dst: string;
}

/** `ip -ts monitor route` in a namespace: the proto 80 route notifications, stamped by ip as they arrive. */
class RouteMonitor {
  readonly events: RouteEvent[] = [];
  private proc: ChildProcess;
  private buf = '';
  constructor(ns: string) {
    this.proc = spawn('ip', ['-n', ns, '-ts', 'monitor', 'route'], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(this.proc);
    this.proc.stdout!.setEncoding('utf8');
    this.proc.stdout!.on('data', (d: string) => {
      this.buf += d;
      let i;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        const m = /^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)\] (Deleted )?(\S+) .*\bproto 80\b/.exec(line);
        // ip prints local time; a date-time without an offset is local time to Date too
        if (m) this.events.push({ t: new Date(m[1]).getTime() + Number(m[2]) * 1000, deleted: !!m[3], dst: m[4] });
      }
    });
  }
  /** When the last of `dsts` was added (deleted) at or after t0, in ms after t0; undefined when one was not seen. */
  doneAfter(t0: number, dsts: string[], deleted: boolean): number | undefined {
    const first = new Map<string, number>();
    for (const e of this.events) if (e.t >= t0 - 1 && e.deleted === deleted && !first.has(e.dst)) first.set(e.dst, e.t);
    let last = -Infinity;
    for (const d of dsts) {
      const t = first.get(d);
      if (t === undefined) return undefined;
      last = Math.max(last, t);
    }
    return last - t0;
  }
  stop(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGTERM');
  }
}

function installed(ns: string): Map<string, string> {
  const rs = JSON.parse(ipc(['-n', ns, '-j', 'route', 'show', 'proto', '80'])) as { dst: string; gateway?: string }[];
  return new Map(rs.map((r) => [r.dst, r.gateway ?? '']));
}

function birdc(sock: string, args: string[]): string {
  const r = spawnSync(BIRDC, ['-s', sock, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`birdc ${args.join(' ')}: ${r.stdout}${r.stderr}`);
  return r.stdout;
}

interface ConvResult {
  all: number[];
  one: number[];
  withdraw: number[];
  fallback: number;
}

async function convergence(st: LabSt): Promise<ConvResult> {
  const n1 = st.nodes.n1;
  const rack = st.racks!.find((r) => r.index === n1.rack)!;
  const nh = `192.168.${rack.k}.200`;
  if (Object.values(st.nodes).some((n) => n.ip === nh)) throw new Error(`${nh} is a node's address`);
  // /24s from 10.136.0.0 on, none a node's own subnet
  const own = new Set(
    Object.values(st.nodes).map((n) => {
      const s = /PODNET_SUBNET=(\S+)/.exec(readFileSync(n.subnetFile, 'utf8'))![1];
      return s.replace(/\.\d+\/24$/, '.0/24');
    }),
  );
  const prefixes: string[] = [];
  for (let j = 0; prefixes.length < ROUTES + 1; j++) {
    if (j >= 2048) throw new Error(`--routes ${ROUTES}: at most 2046 fit in 10.136.0.0/13`);
    const p = `10.${136 + (j >> 8)}.${j & 255}.0/24`;
    if (!own.has(p)) prefixes.push(p);
  }
  const many = prefixes.slice(0, ROUTES);
  const one = prefixes[ROUTES];
  const conf = join(st.router!.dir, 'bird.conf');
  const sock = join(st.router!.dir, 'bird.ctl');
  const base = readFileSync(conf, 'utf8');
  const head = `protocol bgp ${protocolName('n1')} from podnode { `;
  if (!base.includes(head) || !base.includes('filter pods4')) throw new Error(`${conf}: no "${head}" or filter pods4 in it (the lab's bird.conf changed shape; bench/bgp.ts extends it)`);
  const ext =
    base.replace(head, `${head}ipv4 { import filter pods4; export where source = RTS_BGP || proto ~ "bench_*"; }; `) +
    `\n# bench/bgp.ts: ${ROUTES} pod subnets and one more, announced to n1 only\n` +
    `protocol static bench_many { disabled; ipv4;\n${many.map((p) => `  route ${p} via ${nh};`).join('\n')}\n}\n` +
    `protocol static bench_one { disabled; ipv4; route ${one} via ${nh}; }\n`;
  writeFileSync(conf, ext);
  const out = birdc(sock, ['configure']);
  if (!/Reconfigur/.test(out)) throw new Error(`birdc configure: ${out}`);
  const protos = () => birdc(sock, ['show', 'protocols']);
  const t0 = Date.now();
  while (!/node_n1\s+BGP\s+\S+\s+up\s+\S+\s+Established/.test(protos())) {
    if (Date.now() - t0 > 20_000) throw new Error(`node_n1 not Established after the bench's configure:\n${protos()}`);
    await sleep(100);
  }
  const mon = new RouteMonitor(n1.ns);
  await sleep(300);
  const res: ConvResult = { all: [], one: [], withdraw: [], fallback: 0 };

  /** Runs birdc, waits until `pred` holds for n1's kernel table, and returns the time from the monitor's stamps. */
  const timed = async (args: string[], dsts: string[], deleted: boolean, what: string): Promise<number> => {
    const t = Date.now();
    birdc(sock, args);
    const want = (k: Map<string, string>) => dsts.every((d) => (deleted ? !k.has(d) : k.get(d) === nh));
    for (;;) {
      if (want(installed(n1.ns))) break;
      if (Date.now() - t > 30_000) {
        const k = installed(n1.ns);
        throw new Error(`${what}: after 30 s n1 has ${dsts.filter((d) => k.get(d) === nh).length} of ${dsts.length} routes via ${nh}`);
      }
      await sleep(50);
    }
    const polled = Date.now() - t;
    await sleep(100); // the monitor's last lines
    const m = mon.doneAfter(t, dsts, deleted);
    process.stderr.write(`    ${what}: ${m === undefined ? '-' : m.toFixed(1)} ms from ip monitor's stamps, ${polled} ms polled (every 50 ms)\n`);
    if (m === undefined) {
      res.fallback++;
      process.stderr.write(`  ${what}: ip monitor missed some notifications; using the polled time ${polled} ms\n`);
      return polled;
    }
    return m;
  };

  try {
    for (let r = 0; r < ROUNDS; r++) {
      const k0 = installed(n1.ns);
      if (prefixes.some((p) => k0.has(p))) throw new Error('bench routes left on n1 before a round');
      res.all.push(await timed(['enable', 'bench_many'], many, false, `round ${r + 1}: ${ROUTES} routes`));
      await sleep(500);
      res.one.push(await timed(['enable', 'bench_one'], [one], false, `round ${r + 1}: one more`));
      await sleep(500);
      birdc(sock, ['disable', 'bench_one']);
      res.withdraw.push(await timed(['disable', 'bench_many'], [...many, one], true, `round ${r + 1}: withdraw`));
      process.stderr.write(`  convergence round ${r + 1}/${ROUNDS}: ${res.all.at(-1)!.toFixed(0)} ms, one more ${res.one.at(-1)!.toFixed(1)} ms, withdrawn ${res.withdraw.at(-1)!.toFixed(0)} ms\n`);
      await sleep(500);
    }
  } finally {
    mon.stop();
  }
  return res;
}

// --- output ---

const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : '-');
function table(rows: string[][]): void {
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  for (const [i, r] of rows.entries()) {
    console.log('  ' + r.map((x, j) => (x ?? '').padEnd(w[j])).join('  ').trimEnd());
    if (i === 0) console.log('  ' + w.map((n) => '-'.repeat(n)).join('  '));
  }
}

async function main(): Promise<void> {
  if (!existsSync(BIRDC)) {
    console.log(`skipped: ${BIRDC} is missing (apt-get install bird2)`);
    return;
  }
  if (!existsSync(join(REPO, 'dist/podnet.mjs'))) execFileSync('npm', ['run', 'build'], { cwd: REPO, stdio: 'inherit' });
  process.stderr.write(`labs ${LABS.bgp} (bgp, BIRD) and ${LABS.vxlan} (vxlan), 2 racks, proxy ${PROXY_MODE}; hand-built in ${HAND}-*; ${ROUNDS} rounds of ${SECONDS} s\n`);
  const bgp = labUp(LABS.bgp, 'bgp');
  const vx = labUp(LABS.vxlan, 'vxlan');
  const hand = handBuilt();
  const paths: Record<'bgp' | 'vxlan' | 'hand', Path> = {
    bgp: { client: bgp.pods.a.ns, serverNs: bgp.pods.b.ns, server: bgp.pods.b.ips[0] },
    vxlan: { client: vx.pods.a.ns, serverNs: vx.pods.b.ns, server: vx.pods.b.ips[0] },
    hand,
  };
  for (const [k, p] of Object.entries(paths)) await waitPing(p.client, p.server, k);
  const diffs = comparePaths(bgp);

  // the diagnostic path: the hand-built one with the lab nodes' nftables rulesets loaded in its
  // nodes (copied as they are: the hand-built pods are inside the same cluster network)
  const rulesets = [bgp.nodes.n1.ns, bgp.nodes.n2.ns].map((ns) => nsx(ns, ['nft', 'list', 'ruleset']));
  const handNft = (on: boolean) => {
    for (const [i, ns] of [HAND_NS[2], HAND_NS[3]].entries()) {
      nsx(ns, ['nft', 'flush', 'ruleset']);
      if (on) execFileSync('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], { input: rulesets[i], stdio: ['pipe', 'ignore', 'pipe'] });
    }
  };
  const gbps: Record<keyof typeof paths | 'handNft', number[]> = { bgp: [], vxlan: [], hand: [], handNft: [] };
  const order = ['bgp', 'vxlan', 'hand', 'handNft'] as const;
  for (let r = 0; r < ROUNDS; r++) {
    for (const k of r % 2 ? [...order].reverse() : order) {
      const p = paths[k === 'handNft' ? 'hand' : k];
      if (k === 'hand' || k === 'handNft') handNft(k === 'handNft');
      gbps[k].push(iperf(p.client, p.serverNs, p.server, SECONDS).gbps);
      process.stderr.write(`  round ${r + 1}/${ROUNDS}: ${k} ${f2(gbps[k].at(-1)!)} Gbit/s\n`);
    }
  }
  const conv = await convergence(bgp);

  const H = median(gbps.hand);
  const G = median(gbps.bgp);
  const V = median(gbps.vxlan);
  const paired = (a: number[], b: number[]) => median(a.map((x, i) => x / b[i]));
  const yes = (b: boolean) => (b ? 'yes' : 'NO');
  console.log(`bgp throughput: iperf3 TCP, 1 stream, pod on rack 1 to pod on rack 2 (through the router), ${SECONDS} s runs, medians of ${ROUNDS} interleaved rounds, labs with proxy ${PROXY_MODE}\n`);
  table([
    ['path', 'Gbit/s', 'per round', 'ratio to hand-built', 'paired', 'target', 'met'],
    ['bgp (lab, BIRD router)', f2(G), gbps.bgp.map(f2).join(' '), f2(G / H), f2(paired(gbps.bgp, gbps.hand)), '>= 0.95 of hand-built', yes(G / H >= 0.95)],
    ['', '', '', `bgp/vxlan ${f2(G / V)}`, f2(paired(gbps.bgp, gbps.vxlan)), '> vxlan', yes(G > V)],
    ['vxlan (lab, same racks)', f2(V), gbps.vxlan.map(f2).join(' '), f2(V / H), f2(paired(gbps.vxlan, gbps.hand)), '-', '-'],
    ['hand-built static routes', f2(H), gbps.hand.map(f2).join(' '), '1.00', '-', '(reference)', '-'],
    ["hand-built + the lab nodes' nftables", f2(median(gbps.handNft)), gbps.handNft.map(f2).join(' '), f2(median(gbps.handNft) / H), f2(paired(gbps.handNft, gbps.hand)), '(diagnostic)', '-'],
  ]);
  console.log(`\n  bgp / (hand-built + the lab nodes' nftables): ${f2(G / median(gbps.handNft))} (paired ${f2(paired(gbps.bgp, gbps.handNft))}): what podnet costs beyond the conntrack and NAT hooks its nftables tables bring`);
  console.log('');
  if (diffs.length === 0) console.log('  the lab bgp path and the hand-built one: same devices, sysctls and nftables tables');
  else {
    console.log('  the lab bgp path against the hand-built one (ip -d link, sysctls, nftables), what differs:');
    for (const d of diffs) console.log(`    ${d}`);
  }
  console.log(`\nbgp convergence: BIRD announces ${ROUTES} /24s (then one more) to n1's agent; from birdc enable to the last route in n1's kernel (ip -ts monitor route), ${ROUNDS} rounds\n`);
  table([
    ['measurement', 'median ms', 'per round', 'target', 'met'],
    [`${ROUTES.toLocaleString('en')} routes installed`, median(conv.all).toFixed(0), conv.all.map((x) => x.toFixed(0)).join(' '), '< 1000', yes(median(conv.all) < 1000)],
    ['one more route installed', median(conv.one).toFixed(1), conv.one.map((x) => x.toFixed(1)).join(' '), '< 100', yes(median(conv.one) < 100)],
    [`all ${(ROUTES + 1).toLocaleString('en')} withdrawn (information)`, median(conv.withdraw).toFixed(0), conv.withdraw.map((x) => x.toFixed(0)).join(' '), '-', '-'],
  ]);
  if (conv.fallback) console.log(`  (${conv.fallback} of the times are polled ones, ±50 ms: ip monitor missed notifications)`);
}

let cleaned = false;
function cleanup(): void {
  if (cleaned) return;
  cleaned = true;
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const l of Object.values(LABS)) if (existsSync(join(labDir, l))) spawnSync(process.execPath, [join(REPO, 'dist/podnet.mjs'), 'lab', 'down', '--name', l], { env, stdio: 'ignore' });
  for (const n of HAND_NS) spawnSync('ip', ['netns', 'del', n], { stdio: 'ignore' });
  rmSync(labDir, { recursive: true, force: true });
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    cleanup();
    process.exit(130);
  });
}
try {
  await main();
} catch (e) {
  console.error(`bench/bgp.ts: ${(e as Error).stack ?? e}`);
  process.exitCode = 1;
} finally {
  cleanup();
}
