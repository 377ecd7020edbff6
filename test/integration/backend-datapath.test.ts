// Cross-node datapath against the real kernel, in namespaces only: three "nodes" (a netns each) on
// an underlay (a fabric netns with a bridge, 192.168.200.0/24), each with a pod bridge cni0
// (10.244.N.1/24) and one pod netns behind it. ensureDevice + reconcile on every node, then pods ping.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { NetnsFixture, leftoverNetns, nsExec, sh } from '../helpers/netns.js';
import { defaultKernel, defaultNft } from '../../src/kernel/index.js';
import type { NetnsRef } from '../../src/kernel/types.js';
import { createBackend, Reconciler, type Backend } from '../../src/agent/backends/index.js';
import type { NodeLease } from '../../src/agent/lease.js';
import { CLUSTER_TABLE, ensureClusterFirewall, removeClusterFirewall } from '../../src/agent/firewall.js';

const kernel = defaultKernel();
const byName = (name: string): NetnsRef => ({ kind: 'name', name });

interface Node {
  i: number;
  ns: string;
  pod: string;
  podIP: string;
  backend: Backend;
  rec: Reconciler;
  lease: NodeLease;
}

function run(ns: string, cmd: string[]): { code: number; out: string } {
  const r = spawnSync('ip', ['netns', 'exec', ns, ...cmd], { encoding: 'utf8' });
  return { code: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

function ping(from: Node, to: string, extra: string[] = []): { code: number; out: string } {
  return run(from.pod, ['ping', '-n', '-c', '1', '-W', '2', ...extra, to]);
}

function assertAllPing(nodes: Node[]): void {
  const failed: string[] = [];
  for (const a of nodes) for (const b of nodes) if (a !== b && ping(a, b.podIP).code !== 0) failed.push(`${a.podIP} → ${b.podIP}`);
  assert.deepEqual(failed, [], 'pod pairs that cannot ping');
}

/** The fabric plus n nodes; pods get podMtu. */
function buildCluster(fx: NetnsFixture, n: number, podMtu: number, type: 'vxlan' | 'host-gw'): { fabric: string; nodes: Node[] } {
  const fabric = fx.add('fab');
  sh('ip', ['-n', fabric, 'link', 'add', 'br0', 'address', '02:00:00:fa:b0:01', 'type', 'bridge']);
  sh('ip', ['-n', fabric, 'link', 'set', 'br0', 'up']);
  // an "outside" host on the underlay, for masquerade
  sh('ip', ['-n', fabric, 'addr', 'add', '192.168.200.254/24', 'dev', 'br0']);
  const nodes: Node[] = [];
  for (let i = 1; i <= n; i++) {
    const ns = fx.add(`n${i}`);
    const pod = fx.add(`p${i}`);
    sh('ip', ['-n', fabric, 'link', 'add', `f${i}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    sh('ip', ['-n', fabric, 'link', 'set', `f${i}`, 'master', 'br0', 'up']);
    const batch = [
      `addr add 192.168.200.${i}/24 dev eth0`,
      'link set eth0 up',
      'link add cni0 type bridge',
      `addr add 10.244.${i}.1/24 dev cni0`,
      'link set cni0 up',
      `link add vp type veth peer name eth0 netns ${pod}`,
      `link set vp mtu ${podMtu} master cni0 up`,
    ];
    sh('ip', ['-n', ns, '-batch', '-'], { input: batch.join('\n') + '\n' });
    nsExec(ns, ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
    sh('ip', ['-n', pod, '-batch', '-'], { input: [`link set eth0 mtu ${podMtu} up`, `addr add 10.244.${i}.2/24 dev eth0`, `route add default via 10.244.${i}.1`].join('\n') + '\n' });
    const backend = createBackend({ type, iface: 'eth0' });
    nodes.push({
      i,
      ns,
      pod,
      podIP: `10.244.${i}.2`,
      backend,
      rec: new Reconciler({ kernel, ns: byName(ns), backend }),
      lease: { subnet: `10.244.${i}.0/24`, publicIP: `192.168.200.${i}`, backendType: type, backendData: {}, nodeName: `node${i}` },
    });
  }
  return { fabric, nodes };
}

async function ensureAll(nodes: Node[]): Promise<void> {
  for (const n of nodes) {
    const r = await n.backend.ensureDevice({ kernel, ns: byName(n.ns), own: n.lease });
    n.lease = { ...n.lease, backendData: r.backendData };
  }
}

async function reconcileAll(nodes: Node[], peers: Node[] = nodes) {
  const reports = [];
  for (const n of nodes) reports.push(await n.rec.reconcile(n.lease, peers.map((p) => p.lease)));
  return reports;
}

const ip = (ns: string, args: string[]) => sh('ip', ['-n', ns, ...args]);

describe('vxlan backend across three nodes', () => {
  const fx = new NetnsFixture();
  let nodes: Node[];
  let fabric: string;
  before(() => {
    ({ nodes, fabric } = buildCluster(fx, 3, 1450, 'vxlan'));
  });
  after(() => {
    fx.cleanup();
  });

  it('ensureDevice creates podnet.1: nolearning, local = public IP, dev eth0, dstport 8472, MTU 1450, VTEP /32', async () => {
    for (const n of nodes) {
      const r = await n.backend.ensureDevice({ kernel, ns: byName(n.ns), own: n.lease });
      assert.equal(r.action, 'created');
      assert.equal(r.mtu, 1450);
      assert.match(r.backendData.VtepMAC ?? '', /^[0-9a-f:]{17}$/);
      n.lease = { ...n.lease, backendData: r.backendData };
      const l = (await kernel.links(byName(n.ns))).find((x) => x.name === 'podnet.1');
      assert.equal(l?.kind, 'vxlan');
      assert.equal(l?.mtu, 1450);
      assert.equal(l?.up, true);
      assert.equal(l?.info?.learning, false);
      assert.equal(l?.info?.local, n.lease.publicIP);
      assert.equal(l?.info?.port, 8472);
      assert.equal(l?.info?.link, 'eth0');
      const addrs = (await kernel.addresses(byName(n.ns), 'podnet.1')).filter((a) => a.family === 4).map((a) => `${a.address}/${a.prefixLen}`);
      assert.deepEqual(addrs, [`10.244.${n.i}.0/32`]);
    }
  });

  it('reconcile: every pod pings every other pod; the second pass changes nothing', async () => {
    const first = await reconcileAll(nodes);
    for (const r of first) {
      assert.deepEqual(r.errors, []);
      assert.equal(r.added.length, 6, 'route, neighbour and FDB entry for each of two peers');
    }
    assertAllPing(nodes);
    for (const r of await reconcileAll(nodes)) assert.deepEqual(r.ops, []);
    const routes = ip(nodes[0].ns, ['route', 'show', 'proto', '80']);
    assert.match(routes, /10\.244\.2\.0\/24 via 10\.244\.2\.0 dev podnet\.1 onlink/);
  });

  it('kill/adopt: ensureDevice again keeps the device (same ifindex, MAC) and reconcile makes no changes', async () => {
    for (const n of nodes) {
      const before = await kernel.link(byName(n.ns), 'podnet.1');
      const r = await n.backend.ensureDevice({ kernel, ns: byName(n.ns), own: n.lease });
      assert.equal(r.action, 'none');
      assert.equal(r.ifindex, before?.index);
      assert.equal(r.backendData.VtepMAC, n.lease.backendData.VtepMAC);
    }
    // a fresh reconciler (a restarted agent) sees nothing to do either
    const fresh = new Reconciler({ kernel, ns: byName(nodes[0].ns), backend: nodes[0].backend });
    assert.deepEqual((await fresh.reconcile(nodes[0].lease, nodes.map((p) => p.lease))).ops, []);
    // a compatible device that drifted (MTU, down) is fixed in place, not recreated
    const n = nodes[0];
    const idx = (await kernel.link(byName(n.ns), 'podnet.1'))?.index;
    ip(n.ns, ['link', 'set', 'podnet.1', 'mtu', '1400']);
    const fixed = await n.backend.ensureDevice({ kernel, ns: byName(n.ns), own: n.lease });
    assert.equal(fixed.action, 'adopted');
    assert.deepEqual(fixed.reasons, ['MTU 1400 → 1450']);
    assert.equal(fixed.ifindex, idx);
  });

  it('an incompatible device (learning on) is recreated with the reason', async () => {
    const n = nodes[2];
    const b = createBackend({ type: 'vxlan', iface: 'eth0', vni: 77 });
    ip(n.ns, ['link', 'add', 'podnet.77', 'type', 'vxlan', 'id', '77', 'dstport', '8472', 'local', '192.168.200.3', 'dev', 'eth0', 'learning']);
    const r = await b.ensureDevice({ kernel, ns: byName(n.ns), own: n.lease });
    assert.equal(r.action, 'recreated');
    assert.match(r.reasons.join(';'), /learning is on/);
    assert.equal((await kernel.links(byName(n.ns))).find((x) => x.name === 'podnet.77')?.info?.learning, false);
    ip(n.ns, ['link', 'del', 'podnet.77']);
  });

  it('foreign routes and neighbours survive; leftovers of a node gone while the agent was down are removed', async () => {
    const n = nodes[0];
    // foreign: a route in the pod range (proto boot) and a neighbour on eth0
    ip(n.ns, ['route', 'add', '10.244.99.0/24', 'via', '192.168.200.3', 'dev', 'eth0']);
    ip(n.ns, ['neigh', 'replace', '192.168.200.99', 'lladdr', '02:00:00:00:99:99', 'dev', 'eth0', 'nud', 'permanent']);
    // leftovers of node7 (proto 80, permanent neighbour, FDB entry)
    ip(n.ns, ['route', 'add', '10.244.7.0/24', 'via', '10.244.7.0', 'dev', 'podnet.1', 'onlink', 'proto', '80']);
    ip(n.ns, ['neigh', 'replace', '10.244.7.0', 'lladdr', '02:00:00:00:00:07', 'dev', 'podnet.1', 'nud', 'permanent']);
    sh('bridge', ['-n', n.ns, 'fdb', 'replace', '02:00:00:00:00:07', 'dev', 'podnet.1', 'dst', '192.168.200.7', 'self', 'permanent']);
    const r = await n.rec.reconcile(n.lease, nodes.map((p) => p.lease));
    assert.deepEqual(r.added, []);
    assert.equal(r.removed.length, 3, r.removed.join('\n'));
    assert.doesNotMatch(ip(n.ns, ['route']), /10\.244\.7\.0/);
    assert.doesNotMatch(ip(n.ns, ['neigh', 'show', 'dev', 'podnet.1']), /10\.244\.7\.0/);
    assert.doesNotMatch(sh('bridge', ['-n', n.ns, 'fdb', 'show', 'dev', 'podnet.1']), /02:00:00:00:00:07/);
    assert.match(ip(n.ns, ['route']), /10\.244\.99\.0\/24 via 192\.168\.200\.3 dev eth0/);
    assert.match(ip(n.ns, ['neigh', 'show', 'dev', 'eth0']), /192\.168\.200\.99/);
    // a foreign route exactly on a peer subnet is not taken over: that peer is refused, the rest is untouched
    ip(n.ns, ['route', 'add', '10.244.50.0/24', 'via', '192.168.200.3', 'dev', 'eth0']);
    const fake: NodeLease = { subnet: '10.244.50.0/24', publicIP: '192.168.200.50', backendType: 'vxlan', backendData: { VtepMAC: '02:00:00:00:00:50' }, nodeName: 'node50' };
    const r2 = await n.rec.reconcile(n.lease, [...nodes.map((p) => p.lease), fake]);
    assert.deepEqual(r2.ops, []);
    assert.match(r2.errors[0].message, /node50.*not created by podnet/);
    ip(n.ns, ['route', 'del', '10.244.50.0/24']);
    ip(n.ns, ['route', 'del', '10.244.99.0/24']);
    assertAllPing(nodes);
  });

  it('full pod MTU crosses with DF set; MTU+1 gets "message too long", not silent loss', () => {
    const [a, b] = nodes;
    const ok = ping(a, b.podIP, ['-M', 'do', '-s', String(1450 - 28)]);
    assert.equal(ok.code, 0, ok.out);
    const big = ping(a, b.podIP, ['-M', 'do', '-s', String(1450 - 28 + 1)]);
    assert.notEqual(big.code, 0);
    assert.match(big.out, /message too long|frag needed/i);
    // the tunnel itself: a node-originated DF packet of the device MTU crosses too
    const n = run(a.ns, ['ping', '-n', '-c', '1', '-W', '2', '-M', 'do', '-s', String(1450 - 28), '-I', '10.244.1.0', '10.244.2.0']);
    assert.equal(n.code, 0, n.out);
  });

  it('a VtepMAC change of one node (device recreated) is corrected on the others', async () => {
    const n = nodes[1];
    const oldMac = n.lease.backendData.VtepMAC;
    ip(n.ns, ['link', 'del', 'podnet.1']);
    const r = await n.backend.ensureDevice({ kernel, ns: byName(n.ns), own: n.lease });
    assert.equal(r.action, 'created');
    assert.notEqual(r.backendData.VtepMAC, oldMac);
    n.lease = { ...n.lease, backendData: r.backendData };
    const reports = await reconcileAll(nodes);
    for (const other of [0, 2]) {
      assert.ok(reports[other].removed.some((l) => l.includes(oldMac!)), reports[other].removed.join('\n'));
      assert.ok(!sh('bridge', ['-n', nodes[other].ns, 'fdb', 'show', 'dev', 'podnet.1']).includes(oldMac!));
      assert.match(ip(nodes[other].ns, ['neigh', 'show', 'dev', 'podnet.1']), new RegExp(`10\\.244\\.2\\.0 lladdr ${r.backendData.VtepMAC}`));
    }
    assertAllPing(nodes);
  });

  it('firewall: masquerade to outside the cluster; iptables FORWARD DROP opened; a foreign nft drop reported', async () => {
    const n = nodes[0];
    const spec = { clusterCidrs: ['10.244.0.0/16'] };
    const nft = defaultNft();
    assert.notEqual(ping(n, '192.168.200.254').code, 0, 'without masquerade the outside host cannot answer a pod');
    const rep = await ensureClusterFirewall({ nft, ns: byName(n.ns), spec });
    assert.deepEqual(rep.warnings, []);
    assert.equal(ping(n, '192.168.200.254').code, 0, 'masqueraded');
    // idempotent, one table
    await ensureClusterFirewall({ nft, ns: byName(n.ns), spec });
    assert.equal(sh('ip', ['netns', 'exec', n.ns, 'nft', 'list', 'tables']).trim(), `table inet ${CLUSTER_TABLE}`);
    // Docker-style iptables FORWARD policy DROP (flannel#609)
    nsExec(n.ns, ['iptables', '-w', '-P', 'FORWARD', 'DROP']);
    assert.notEqual(ping(n, nodes[1].podIP).code, 0, 'FORWARD DROP blocks pods');
    const withoutFix = await ensureClusterFirewall({ nft, ns: byName(n.ns), spec });
    assert.match(withoutFix.warnings.join('\n'), /table ip filter chain FORWARD/);
    const fixed = await ensureClusterFirewall({ nft, ns: byName(n.ns), spec, iptablesForward: true });
    assert.equal(fixed.iptablesInserted.length, 2);
    assert.deepEqual(fixed.warnings, []);
    assert.equal(ping(n, nodes[1].podIP).code, 0, 'podnet accept rules in FORWARD');
    assert.equal((await ensureClusterFirewall({ nft, ns: byName(n.ns), spec, iptablesForward: true })).iptablesInserted.length, 0, 'idempotent');
    // a foreign nft table with a forward drop policy: no rule in podnet's table can override it
    sh('ip', ['netns', 'exec', n.ns, 'nft', '-f', '-'], { input: 'table inet hostfw {\n  chain forward {\n    type filter hook forward priority 0; policy drop;\n  }\n}\n' });
    assert.notEqual(ping(n, nodes[1].podIP).code, 0, 'a drop in any forward base chain is final');
    const blocked = await ensureClusterFirewall({ nft, ns: byName(n.ns), spec, iptablesForward: true });
    assert.match(blocked.warnings.join('\n'), /table inet hostfw chain forward .* add to that chain: ip saddr 10\.244\.0\.0\/16 accept; ip daddr 10\.244\.0\.0\/16 accept/);
    // what the warning says to do, done by the "administrator", works
    sh('ip', ['netns', 'exec', n.ns, 'nft', 'insert rule inet hostfw forward ip saddr 10.244.0.0/16 accept; insert rule inet hostfw forward ip daddr 10.244.0.0/16 accept']);
    assert.equal(ping(n, nodes[1].podIP).code, 0);
    sh('ip', ['netns', 'exec', n.ns, 'nft', 'delete table inet hostfw']);
    await removeClusterFirewall({ nft, ns: byName(n.ns), iptablesForward: true });
    await removeClusterFirewall({ nft, ns: byName(n.ns), iptablesForward: true });
    assert.equal(sh('ip', ['netns', 'exec', n.ns, 'nft', 'list', 'table', 'inet', CLUSTER_TABLE], { allowFail: true }), '');
    assert.doesNotMatch(nsExec(n.ns, ['iptables', '-w', '-S', 'FORWARD']), /podnet-cluster/);
    nsExec(n.ns, ['iptables', '-w', '-P', 'FORWARD', 'ACCEPT']);
    void fabric;
  });

  it('a removed peer: its route, neighbour and FDB entry are gone on the others', async () => {
    const gone = nodes[2];
    const rest = nodes.slice(0, 2);
    const reports = await reconcileAll(rest, rest);
    for (const [k, n] of rest.entries()) {
      assert.equal(reports[k].removed.length, 3, reports[k].removed.join('\n'));
      assert.doesNotMatch(ip(n.ns, ['route']), /10\.244\.3\.0/);
      assert.doesNotMatch(ip(n.ns, ['neigh', 'show', 'dev', 'podnet.1']), /10\.244\.3\.0/);
      assert.doesNotMatch(sh('bridge', ['-n', n.ns, 'fdb', 'show', 'dev', 'podnet.1']), new RegExp(gone.lease.backendData.VtepMAC!));
    }
    assert.notEqual(ping(nodes[0], gone.podIP).code, 0);
    assertAllPing(rest);
  });
});

describe('host-gw backend across three nodes', () => {
  const fx = new NetnsFixture();
  let nodes: Node[];
  before(() => {
    ({ nodes } = buildCluster(fx, 3, 1500, 'host-gw'));
  });
  after(() => {
    fx.cleanup();
    assert.deepEqual(leftoverNetns(), []);
  });

  it('routes via the peers; every pod pings every other; a peer off the L2 segment is refused by name; idempotent', async () => {
    await ensureAll(nodes);
    const far: NodeLease = { subnet: '10.244.9.0/24', publicIP: '10.99.0.9', backendType: 'host-gw', backendData: {}, nodeName: 'faraway' };
    const peers = [...nodes.map((n) => n.lease), far];
    for (const n of nodes) {
      const r = await n.rec.reconcile(n.lease, peers);
      assert.equal(r.added.length, 2);
      assert.equal(r.errors.length, 1);
      assert.match(r.errors[0].message, /faraway.*10\.99\.0\.9.*not on the same L2 segment/);
    }
    assertAllPing(nodes);
    assert.match(ip(nodes[0].ns, ['route', 'show', 'proto', '80']), /10\.244\.2\.0\/24 via 192\.168\.200\.2 dev eth0/);
    for (const n of nodes) assert.deepEqual((await n.rec.reconcile(n.lease, peers)).ops, []);
    const full = ping(nodes[0], nodes[1].podIP, ['-M', 'do', '-s', String(1500 - 28)]);
    assert.equal(full.code, 0, full.out);
  });

  it('a removed peer loses its route; a foreign route in the pod range survives', async () => {
    const n = nodes[0];
    ip(n.ns, ['route', 'add', '10.244.3.0/25', 'via', '192.168.200.3', 'dev', 'eth0']);
    const r = await n.rec.reconcile(n.lease, [nodes[1].lease]);
    assert.equal(r.removed.length, 1);
    assert.match(r.removed[0], /10\.244\.3\.0\/24/);
    const routes = ip(n.ns, ['route']);
    assert.doesNotMatch(routes, /10\.244\.3\.0\/24/);
    assert.match(routes, /10\.244\.3\.0\/25 via 192\.168\.200\.3 dev eth0/);
  });
});
