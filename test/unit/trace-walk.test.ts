// The trace walk against a fixture of kernel state (no kernel): a pod on a node's bridge sending
// to a pod on the same bridge, and the breaks the walk must name — a FAILED neighbour, an MTU too
// small for the packet, a peer node's subnet matched only by the default route, a missing route.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Address, FdbEntry, Link, Neighbour } from '../../src/kernel/index.js';
import type { ClusterFacts, FibAnswer, FibQuery, TraceView } from '../../src/trace/view.js';
import { walk } from '../../src/trace/walk.js';
import type { TraceQuery } from '../../src/trace/types.js';

interface NsFixture {
  links: Link[];
  addrs: Address[];
  neigh?: Neighbour[];
  fdb?: FdbEntry[];
  nsids?: Record<number, string>;
  fib: (q: FibQuery) => Omit<FibAnswer, 'command'>;
}

class FixtureView implements TraceView {
  constructor(
    private readonly ns: Record<string, NsFixture>,
    private readonly facts?: ClusterFacts,
  ) {}
  namespaces() {
    return Object.keys(this.ns);
  }
  role(ns: string) {
    return ns.startsWith('node') ? 'node' : 'pod';
  }
  cluster() {
    return this.facts;
  }
  async fib(ns: string, q: FibQuery): Promise<FibAnswer> {
    return { ...this.ns[ns].fib(q), command: `ip -n ${ns} route get ${q.dst}` };
  }
  async links(ns: string) {
    return this.ns[ns].links;
  }
  async addresses(ns: string) {
    return this.ns[ns].addrs;
  }
  async neighbours(ns: string) {
    return this.ns[ns].neigh ?? [];
  }
  async fdb(ns: string) {
    return this.ns[ns].fdb ?? [];
  }
  async peerNs(ns: string, id: number) {
    return this.ns[ns].nsids?.[id];
  }
}

const link = (l: Partial<Link> & Pick<Link, 'index' | 'name' | 'mac'>): Link => ({ mtu: 1500, up: true, operState: 'UP', ...l });
const addr = (ifname: string, address: string, prefixLen: number): Address => ({ ifname, family: 4, address, prefixLen, scope: 'global' });
const POD_A = { mac: 'aa:00:00:00:00:0a', ip: '10.244.1.2' };
const POD_B = { mac: 'aa:00:00:00:00:0b', ip: '10.244.1.3' };
const BR = { mac: 'bb:00:00:00:00:01', ip: '10.244.1.1' };

/** node1 with bridge podnet0 (10.244.1.1/24), pods a and b on it by veth. */
function sameNode(over: { aNeigh?: Neighbour[]; aMtu?: number; nodeFib?: NsFixture['fib'] } = {}): Record<string, NsFixture> {
  const podFib = (self: string) => (q: FibQuery) =>
    q.dst === self ? { type: 'local', dev: 'lo', table: 'local' } : { type: 'unicast', dev: 'eth0', gateway: BR.ip, entry: { dst: '10.244.0.0/16', protocol: 'boot' } };
  return {
    'pod-a': {
      links: [link({ index: 2, name: 'eth0', mac: POD_A.mac, kind: 'veth', linkIndex: 5, linkNetnsId: 0, mtu: over.aMtu ?? 1500 })],
      addrs: [addr('eth0', POD_A.ip, 24)],
      neigh: over.aNeigh,
      nsids: { 0: 'node1' },
      fib: podFib(POD_A.ip),
    },
    'pod-b': {
      links: [link({ index: 2, name: 'eth0', mac: POD_B.mac, kind: 'veth', linkIndex: 6, linkNetnsId: 0 })],
      addrs: [addr('eth0', POD_B.ip, 24)],
      nsids: { 0: 'node1' },
      fib: podFib(POD_B.ip),
    },
    node1: {
      links: [
        link({ index: 4, name: 'podnet0', mac: BR.mac, kind: 'bridge' }),
        link({ index: 5, name: 'veth-a', mac: 'cc:00:00:00:00:0a', kind: 'veth', master: 'podnet0', linkIndex: 2, linkNetnsId: 1 }),
        link({ index: 6, name: 'veth-b', mac: 'cc:00:00:00:00:0b', kind: 'veth', master: 'podnet0', linkIndex: 2, linkNetnsId: 2 }),
      ],
      addrs: [addr('podnet0', BR.ip, 24)],
      fdb: [
        { mac: BR.mac, dev: 'podnet0', master: 'podnet0', state: 'permanent', flags: [] },
        { mac: POD_B.mac, dev: 'veth-b', master: 'podnet0', flags: [] },
      ],
      nsids: { 1: 'pod-a', 2: 'pod-b' },
      fib:
        over.nodeFib ??
        ((q) => (q.dst.startsWith('10.244.1.') ? { type: 'unicast', dev: 'podnet0', entry: { dst: '10.244.1.0/24', protocol: 'kernel' } } : { type: 'unicast', dev: 'podnet0', gateway: '192.168.1.254', entry: { dst: 'default' } })),
    },
  };
}

const q = (dst: string, size = 84): TraceQuery => ({ fromNs: 'pod-a', srcLabel: 'pod a', src: POD_A.ip, dst, dstLabel: dst, proto: 'tcp', sport: 40000, dport: 80, size });

describe('trace walk (fixture kernel)', () => {
  it('pod to pod on one bridge: out of the pod, up to the bridge, routed, out of the port to the other pod, delivered', async () => {
    const r = await walk(new FixtureView(sameNode()), q(POD_B.ip));
    assert.equal(r.verdict, 'complete', JSON.stringify(r, null, 1));
    assert.deepEqual(r.hops.map((h) => [h.ns, h.in ?? '-', h.out ?? '-']), [['pod-a', '-', 'eth0'], ['node1', 'veth-a', 'veth-b'], ['pod-b', 'eth0', '-']]);
    const kinds = r.hops.flatMap((h) => h.steps.map((s) => s.kind));
    assert.deepEqual(kinds, ['route', 'mtu', 'neighbour', 'veth', 'bridge', 'route', 'mtu', 'neighbour', 'bridge', 'veth', 'route', 'deliver']);
    assert.match(r.hops[1].steps[4].text, /FDB aa:00:00:00:00:0b -> port veth-b/);
    assert.match(r.hops[0].steps[2].text, /not resolved yet.*bb:00:00:00:00:01 \(podnet0 in node1\)/);
  });

  it('a FAILED neighbour is the broken hop, with the command that shows it', async () => {
    const r = await walk(new FixtureView(sameNode({ aNeigh: [{ dst: BR.ip, dev: 'eth0', state: ['FAILED'] }] })), q(POD_B.ip));
    assert.equal(r.verdict, 'broken');
    assert.deepEqual([r.broken!.hop, r.hops[0].steps[r.broken!.step].kind], [0, 'neighbour']);
    assert.match(r.broken!.reason, /FAILED/);
    assert.equal(r.broken!.command, `ip -n pod-a neigh show ${BR.ip} dev eth0`);
  });

  it("a packet larger than a link's MTU breaks at that link", async () => {
    const r = await walk(new FixtureView(sameNode({ aMtu: 1400 })), q(POD_B.ip, 1450));
    assert.equal(r.verdict, 'broken');
    assert.match(r.broken!.reason, /1450-byte packet does not fit eth0's MTU 1400/);
  });

  it("a peer node's pod subnet matched only by the default route is named as the missing route", async () => {
    const facts: ClusterFacts = { networks: ['10.244.0.0/16'], subnets: [{ cidr: '10.244.1.0/24', node: 'n1', ns: 'node1' }, { cidr: '10.244.2.0/24', node: 'n2', ns: 'node2' }] };
    const r = await walk(new FixtureView(sameNode(), facts), q('10.244.2.5'));
    assert.equal(r.verdict, 'broken');
    assert.equal(r.broken!.hop, 1);
    assert.match(r.broken!.reason, /no route for node n2's pod subnet 10\.244\.2\.0\/24/);
  });

  it('no route at all: the kernel message and the lookup to repeat', async () => {
    const r = await walk(new FixtureView(sameNode({ nodeFib: () => ({ type: 'error', error: 'Network is unreachable' }) })), q('10.9.9.9'));
    assert.equal(r.verdict, 'broken');
    assert.match(r.broken!.reason, /no route to 10\.9\.9\.9 .*Network is unreachable/);
    assert.equal(r.broken!.command, 'ip -n node1 route get 10.9.9.9');
  });
});
