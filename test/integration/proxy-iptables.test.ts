// The iptables engine against the kernel, for iptables-nft and iptables-legacy, in namespaces only
// (pnt-ipt-<random>-…): a "node" netns with a bridge and two "pod" netns behind veths (pods
// 10.200.1.2 and .3, the node 10.200.1.1/24, IPv6 too), a "client" netns routed through the node
// (10.201.0.2 → 10.201.0.1), socat servers in the pods answering every connection and datagram
// with their name. Models are built by normalize() from Service/EndpointSlice objects.
//
// PODNET_IPT_SCALE=10000 also measures (prints, does not assert) fullSync and a one-service
// partialSync at that many services with iptables-nft.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { normalize } from '../../src/proxy/normalize.js';
import { type ProxyModel, type ProxyNode, type RawEndpointSlice, type RawService, SERVICE_NAME_LABEL } from '../../src/proxy/model.js';
import { IptablesEngine } from '../../src/proxy/engines/iptables/engine.js';
import { HOOKS } from '../../src/proxy/engines/iptables/names.js';

const RUN = `pnt-ipt-${randomBytes(3).toString('hex')}`;
const NODE_NAME = 'node-1';
const NODE_IP = '10.201.0.1';
const NODE: ProxyNode = { name: NODE_NAME, nodeIPs: [NODE_IP], clusterCIDRs: ['10.200.1.0/24', 'fd00:200:1::/64'], nodePortRange: [30000, 32767] };

function onPath(bin: string): boolean {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(delimiter)) {
    try {
      accessSync(join(dir, bin), constants.X_OK);
      return true;
    } catch {
      /* next */
    }
  }
  return false;
}

function skipReason(backend: 'nft' | 'legacy'): string | false {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces)';
  const bins = ['ip', 'nsenter', 'socat', `iptables-${backend}-restore`, `iptables-${backend}-save`, `ip6tables-${backend}-restore`, `ip6tables-${backend}-save`];
  const missing = bins.filter((b) => !onPath(b));
  return missing.length ? `missing: ${missing.join(', ')}` : false;
}

function sh(cmd: string, args: string[], input?: string): string {
  return execFileSync(cmd, args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
}
const inNs = (ns: string, argv: string[]): string => sh('nsenter', [`--net=/run/netns/${ns}`, ...argv]);
const ipb = (ns: string, lines: string[]): string => sh('ip', ['-n', ns, '-batch', '-'], lines.join('\n') + '\n');

interface Answer {
  out: string;
  err: string;
  ms: number;
}

/** One TCP connection (or UDP datagram) from netns `ns`; the server's answer, socat's complaint, how long it took. */
function probe(ns: string, proto: 'tcp' | 'udp', ip: string, port: number): Answer {
  const host = ip.includes(':') ? `[${ip}]` : ip;
  const addr = proto === 'tcp' ? `TCP:${host}:${port},connect-timeout=3` : `UDP:${host}:${port}`;
  const t0 = performance.now();
  // -t: after its stdin ends socat waits only 0.5 s for the answer by default; the servers fork a
  // socat and a shell per datagram, which under load took longer, and the answer was lost
  const r = spawnSync('nsenter', [`--net=/run/netns/${ns}`, 'socat', '-t', '3', '-T', '3', 'STDIO', addr], { input: proto === 'udp' ? 'x\n' : '', encoding: 'utf8', timeout: 8000 });
  return { out: (r.stdout ?? '').trim(), err: (r.stderr ?? '').trim(), ms: performance.now() - t0 };
}

/** Probes until every name in `want` has answered (at most `tries`); returns who answered. */
function reach(ns: string, proto: 'tcp' | 'udp', ip: string, port: number, want: string[], tries = 100): Set<string> {
  const seen = new Set<string>();
  for (let i = 0; i < tries && !want.every((w) => seen.has(w)); i++) {
    const a = probe(ns, proto, ip, port);
    if (a.out) seen.add(a.out);
  }
  return seen;
}

// ---------------------------------------------------------------- services

function service(name: string, spec: Record<string, unknown>): RawService {
  return { kind: 'Service', metadata: { name, namespace: 'default' }, spec: spec as RawService['spec'] };
}
function endpoints(name: string, ips: string[], v6 = false): RawEndpointSlice {
  return {
    kind: 'EndpointSlice',
    metadata: { name: `${name}-${v6 ? 'v6' : 'v4'}`, namespace: 'default', labels: { [SERVICE_NAME_LABEL]: name } },
    addressType: v6 ? 'IPv6' : 'IPv4',
    endpoints: ips.map((ip) => ({ addresses: [ip], nodeName: NODE_NAME, conditions: { ready: true } })),
    ports: [
      { name: 'tcp', port: 8080, protocol: 'TCP' },
      { name: 'udp', port: 8080, protocol: 'UDP' },
    ],
  };
}
const PORTS = [
  { name: 'tcp', port: 80, protocol: 'TCP', targetPort: 8080 },
  { name: 'udp', port: 80, protocol: 'UDP', targetPort: 8080 },
];

function buildModel(webEndpoints: string[]): ProxyModel {
  const m = normalize(
    {
      services: [
        service('web', { type: 'NodePort', clusterIPs: ['10.96.0.10', 'fd00:96::10'], ipFamilyPolicy: 'RequireDualStack', ports: PORTS.map((p, i) => ({ ...p, nodePort: 30080 + i })) }),
        service('empty', { clusterIP: '10.96.0.11', ports: PORTS }),
      ],
      endpointSlices: [endpoints('web', webEndpoints), endpoints('web', webEndpoints.map((ip) => ip.replace('10.200.1.', 'fd00:200:1::')), true)],
    },
    NODE,
  );
  assert.deepEqual(m.problems, []);
  return m;
}

// ---------------------------------------------------------------- the datapath

class Datapath {
  readonly ns: string[] = [];
  readonly servers: ChildProcess[] = [];
  node = '';
  client = '';
  pods: { name: string; ns: string; ip: string; ip6: string }[] = [];

  constructor(readonly tag: string) {}

  private add(suffix: string): string {
    const name = `${RUN}-${this.tag}-${suffix}`;
    sh('ip', ['netns', 'add', name]);
    this.ns.push(name);
    sh('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    return name;
  }

  build(): void {
    this.node = this.add('node');
    this.client = this.add('client');
    ipb(this.node, [
      'link add br0 address 02:00:00:fa:b0:01 type bridge',
      'addr add 10.200.1.1/24 dev br0',
      'addr add fd00:200:1::1/64 dev br0 nodad',
      'link set br0 up',
      `link add vc type veth peer name eth0 netns ${this.client}`,
      `addr add ${NODE_IP}/24 dev vc`,
      'link set vc up',
      // like any node, a default route (into a veth pair of its own, the "uplink"): locally originated
      // traffic to a cluster IP is routed before the DNAT, and forwarded traffic to a cluster IP
      // without endpoints must not go back out where it came from (the ICMP redirect would use up
      // the ICMP rate limit and the port unreachable would not be sent)
      'link add up0 type veth peer name up1',
      'link set up1 up',
      'link set up0 up',
      'route add default dev up0',
      'route add ::/0 dev up0',
    ]);
    inNs(this.node, ['sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
    ipb(this.client, ['addr add 10.201.0.2/24 dev eth0', 'link set eth0 up', `route add default via ${NODE_IP}`]);
    for (const [i, name] of ['pod-a', 'pod-b'].entries()) {
      const ns = this.add(name);
      const ip = `10.200.1.${2 + i}`;
      const ip6 = `fd00:200:1::${2 + i}`;
      // hairpin on, as the bridge CNI's hairpinMode: with br_netfilter the DNAT back to the sender happens on the bridge
      ipb(this.node, [`link add v${i} type veth peer name eth0 netns ${ns}`, `link set v${i} master br0 up`, `link set v${i} type bridge_slave hairpin on`]);
      ipb(ns, [`addr add ${ip}/24 dev eth0`, `addr add ${ip6}/64 dev eth0 nodad`, 'link set eth0 up', 'route add default via 10.200.1.1', 'route add ::/0 via fd00:200:1::1']);
      this.pods.push({ name, ns, ip, ip6 });
      for (const listen of ['TCP4-LISTEN:8080,fork,reuseaddr', 'TCP6-LISTEN:8080,fork,reuseaddr,ipv6only=1', 'UDP4-RECVFROM:8080,fork', 'UDP6-RECVFROM:8080,fork,ipv6only=1']) {
        // own process group: the per-connection children go with the server
        const p = spawn('nsenter', [`--net=/run/netns/${ns}`, 'socat', listen, `SYSTEM:echo ${name}`], { stdio: 'ignore', detached: true });
        this.servers.push(p);
      }
    }
    for (const pod of this.pods) {
      const ok = reach(this.node, 'tcp', pod.ip, 8080, [pod.name], 50);
      if (!ok.has(pod.name)) throw new Error(`server in ${pod.name} never answered`);
    }
  }

  destroy(): void {
    for (const p of this.servers) {
      if (p.pid === undefined || p.exitCode !== null || p.signalCode !== null) continue;
      try {
        process.kill(-p.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    this.servers.length = 0;
    for (const n of this.ns.reverse()) spawnSync('ip', ['netns', 'del', n]);
    this.ns.length = 0;
  }

  save(backend: string, family: 4 | 6 = 4): string {
    return inNs(this.node, [`${family === 4 ? 'iptables' : 'ip6tables'}-${backend}-save`]);
  }
}

const live: Datapath[] = [];
process.on('exit', () => {
  for (const d of live) d.destroy();
});

for (const backend of ['nft', 'legacy'] as const) {
  const skip = skipReason(backend);
  if (skip) console.log(`# proxy-iptables (${backend}): skipped, ${skip}`);

  describe(`iptables engine, iptables-${backend}`, { skip }, () => {
    const dp = new Datapath(backend);
    let engine: IptablesEngine;
    let model: ProxyModel;

    before(() => {
      live.push(dp);
      dp.build();
      engine = new IptablesEngine({ netns: `/run/netns/${dp.node}`, iptablesBackend: backend });
    });
    after(async () => {
      try {
        await engine?.cleanup();
      } finally {
        dp.destroy();
      }
    });

    it('fullSync: the cluster IP reaches both pods, from the node (OUTPUT) and from a client routed through it (PREROUTING), TCP and UDP', async () => {
      model = buildModel(['10.200.1.2', '10.200.1.3']);
      const r = await engine.fullSync(model, NODE);
      assert.equal(r.kind, 'full');
      assert.ok(r.changes > 0);
      for (const from of [dp.node, dp.client]) {
        for (const proto of ['tcp', 'udp'] as const) {
          assert.deepEqual([...reach(from, proto, '10.96.0.10', 80, ['pod-a', 'pod-b'])].sort(), ['pod-a', 'pod-b'], `${proto} from ${from}`);
        }
      }
    });

    it('NodePort on the node IP from the client, IPv6 cluster IP from the node, hairpin from a pod to itself', () => {
      assert.deepEqual([...reach(dp.client, 'tcp', NODE_IP, 30080, ['pod-a', 'pod-b'])].sort(), ['pod-a', 'pod-b']);
      assert.deepEqual([...reach(dp.client, 'udp', NODE_IP, 30081, ['pod-a', 'pod-b'])].sort(), ['pod-a', 'pod-b']);
      assert.deepEqual([...reach(dp.node, 'tcp', 'fd00:96::10', 80, ['pod-a', 'pod-b'])].sort(), ['pod-a', 'pod-b']);
      const a = dp.pods[0];
      assert.deepEqual([...reach(a.ns, 'tcp', '10.96.0.10', 80, ['pod-a', 'pod-b'])].sort(), ['pod-a', 'pod-b'], 'pod-a reaches itself (hairpin masquerade) and pod-b through the cluster IP');
    });

    it('a service without endpoints is refused at once (not a timeout)', () => {
      for (const from of [dp.node, dp.client]) {
        const a = probe(from, 'tcp', '10.96.0.11', 80);
        assert.match(a.err, /Connection refused/, `tcp from ${from}: ${a.err}`);
        assert.ok(a.ms < 1500, `refused after ${a.ms.toFixed(0)} ms`);
        // an ICMP port unreachable reaches a remote client's socket as ECONNREFUSED; the node's own
        // datagram is dropped by the REJECT in OUTPUT before it leaves, so its send fails with EPERM
        const u = probe(from, 'udp', '10.96.0.11', 80);
        assert.match(u.err, from === dp.client ? /Connection refused/ : /Connection refused|Operation not permitted/, `udp from ${from}: ${u.err}`);
        assert.ok(u.ms < 1500, `udp answered after ${u.ms.toFixed(0)} ms`);
      }
    });

    it('programmedEndpoints reads back what the model says', async () => {
      const got = await engine.programmedEndpoints(NODE);
      const sorted = (k: string) => [...(got.get(k) ?? [])].sort();
      assert.deepEqual(sorted('tcp/10.96.0.10/80'), ['10.200.1.2/8080', '10.200.1.3/8080']);
      assert.deepEqual(sorted('udp/10.96.0.10/80'), ['10.200.1.2/8080', '10.200.1.3/8080']);
      assert.deepEqual(sorted('tcp/fd00:96::10/80'), ['fd00:200:1::2/8080', 'fd00:200:1::3/8080']);
      // the node has an IPv4 address only: no IPv6 NodePort frontend
      assert.deepEqual(sorted('tcp/nodeport/30080'), ['10.200.1.2/8080', '10.200.1.3/8080']);
      assert.deepEqual(sorted('udp/nodeport/30081'), ['10.200.1.2/8080', '10.200.1.3/8080']);
      assert.equal(got.has('tcp/10.96.0.11/80'), false);
    });

    it('partialSync removing an endpoint: new connections only reach the other pod; only that service is rewritten', async () => {
      const next = buildModel(['10.200.1.2']);
      const r = await engine.partialSync(model, next, NODE);
      assert.equal(r.kind, 'partial');
      assert.ok(r.changes > 0 && r.changes < 40, `changes ${r.changes}`);
      model = next;
      for (let i = 0; i < 30; i++) assert.equal(probe(dp.client, 'tcp', '10.96.0.10', 80).out, 'pod-a');
      for (let i = 0; i < 10; i++) assert.equal(probe(dp.node, 'udp', '10.96.0.10', 80).out, 'pod-a');
      const got = await engine.programmedEndpoints(NODE);
      assert.deepEqual([...got.get('tcp/10.96.0.10/80')!], ['10.200.1.2/8080']);
      // and back
      const back = buildModel(['10.200.1.2', '10.200.1.3']);
      await engine.partialSync(model, back, NODE);
      model = back;
      assert.deepEqual([...reach(dp.client, 'tcp', '10.96.0.10', 80, ['pod-a', 'pod-b'])].sort(), ['pod-a', 'pod-b']);
    });

    it('hooks: a second fullSync leaves them alone; two racing fullSyncs leave each exactly once', async () => {
      await engine.fullSync(model, NODE);
      assert.equal(engine.lastStats.hookEdits, 0);
      await engine.cleanup();
      const others = [0, 1, 2].map(() => new IptablesEngine({ netns: `/run/netns/${dp.node}`, iptablesBackend: backend }));
      await Promise.all(others.map((e) => e.fullSync(model, NODE)));
      for (const family of [4, 6] as const) {
        const save = dp.save(backend, family);
        for (const h of HOOKS) {
          const n = save.split('\n').filter((l) => l === `-A ${h.chain} ${h.spec}`).length;
          // the *filter and *nat sections both have an OUTPUT chain: count within the table
          const section = save.slice(save.indexOf(`*${h.table}\n`), save.indexOf('COMMIT', save.indexOf(`*${h.table}\n`)));
          const inTable = section.split('\n').filter((l) => l === `-A ${h.chain} ${h.spec}`).length;
          assert.ok(n >= 1);
          assert.equal(inTable, 1, `IPv${family} ${h.table} ${h.chain}: ${inTable} copies`);
        }
      }
      assert.deepEqual([...reach(dp.client, 'tcp', '10.96.0.10', 80, ['pod-a', 'pod-b'])].sort(), ['pod-a', 'pod-b']);
    });

    it('cleanup leaves no PODNET chain and no podnet jump in either family, and is idempotent', async () => {
      await engine.cleanup();
      await engine.cleanup();
      for (const family of [4, 6] as const) {
        const save = dp.save(backend, family);
        assert.ok(!/PODNET|podnet/.test(save), save);
      }
      // traffic to the cluster IP is no longer translated
      assert.equal(probe(dp.client, 'tcp', '10.96.0.10', 80).out, '');
    });
  });
}

// ---------------------------------------------------------------- scale (measured, not asserted)

const SCALE = Number(process.env.PODNET_IPT_SCALE ?? 0);
describe('iptables engine at scale (iptables-nft)', { skip: !SCALE ? 'set PODNET_IPT_SCALE=10000 to measure' : skipReason('nft') }, () => {
  const ns = `${RUN}-scale`;
  before(() => {
    sh('ip', ['netns', 'add', ns]);
  });
  after(() => {
    spawnSync('ip', ['netns', 'del', ns]);
  });
  it(`fullSync and a one-service partialSync at ${SCALE} services (2 endpoints each)`, async () => {
    const services: RawService[] = [];
    const slices: RawEndpointSlice[] = [];
    const slice = (i: number, ips: string[]): RawEndpointSlice => ({
      kind: 'EndpointSlice',
      metadata: { name: `s${i}`, namespace: 'scale', labels: { [SERVICE_NAME_LABEL]: `s${i}` } },
      addressType: 'IPv4',
      endpoints: ips.map((ip, k) => ({ addresses: [ip], nodeName: k ? 'other' : NODE_NAME })),
      ports: [{ port: 8080 }],
    });
    for (let i = 0; i < SCALE; i++) {
      services.push({ kind: 'Service', metadata: { name: `s${i}`, namespace: 'scale' }, spec: { clusterIP: `10.96.${i >> 8}.${i & 255}`, ports: [{ port: 80, targetPort: 8080 }] } });
      slices.push(slice(i, [`10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`, `10.${150 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`]));
    }
    const node: ProxyNode = { ...NODE, clusterCIDRs: ['10.100.0.0/14'] };
    const m1 = normalize({ services, endpointSlices: slices }, node);
    const k = SCALE >> 1;
    const slices2 = [...slices];
    slices2[k] = slice(k, [`10.${100 + (k >> 16)}.${(k >> 8) & 255}.${k & 255}`, '10.99.0.1']);
    const m2 = normalize({ services, endpointSlices: slices2 }, node);
    const engine = new IptablesEngine({ netns: `/run/netns/${ns}`, iptablesBackend: 'nft' });
    const time = async <T>(what: string, fn: () => Promise<T>, e: IptablesEngine = engine): Promise<T> => {
      const t0 = performance.now();
      const r = await fn();
      console.log(`# ${what}: ${(performance.now() - t0).toFixed(0)} ms ${JSON.stringify(r ?? '')} ${JSON.stringify(e.lastStats)}`);
      return r;
    };
    await time(`fullSync ${SCALE} services (empty netns)`, () => engine.fullSync(m1, node));
    await time(`partialSync (one endpoint replaced)`, () => engine.partialSync(m1, m2, node));
    await time(`partialSync (back)`, () => engine.partialSync(m2, m1, node));
    const always = new IptablesEngine({ netns: `/run/netns/${ns}`, iptablesBackend: 'nft', alwaysRewriteShared: true });
    await time(`partialSync rewriting the shared chains too (one endpoint replaced)`, () => always.partialSync(m1, m2, node), always);
    await time(`partialSync rewriting the shared chains too (back)`, () => always.partialSync(m2, m1, node), always);
    await time(`fullSync ${SCALE} services (over itself)`, () => engine.fullSync(m1, node));
    await time('programmedEndpoints', async () => (await engine.programmedEndpoints(node)).size);
    await time('cleanup', () => engine.cleanup());
  });
});
