// `podnet status`'s diff is pure: the backend's own plan for the peers, against fixtures of the
// kernel state, names each peer programmed or not, and the object that is missing or wrong.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VxlanBackend } from '../../src/agent/backends/vxlan.js';
import { HostGwBackend } from '../../src/agent/backends/hostgw.js';
import { TunBackend } from '../../src/agent/backends/tun.js';
import { applyToActual } from '../../src/agent/backends/reconciler.js';
import type { ActualState } from '../../src/agent/backends/types.js';
import type { NodeLease } from '../../src/agent/lease.js';
import { diffPeers, diffSubnetEnv } from '../../src/node/status.js';
import { renderSubnetEnv } from '../../src/agent/subnet-env.js';
import { parseNetConf } from '../../src/agent/netconf.js';

const empty = (): ActualState => ({ routes: [], neighbours: [], fdb: [], ifaceAddresses: [] });
const DEV = 'podnet.1';

function lease(n: number, type: 'vxlan' | 'host-gw' | 'tun' = 'vxlan'): NodeLease {
  return {
    subnet: `10.244.${n}.0/24`,
    publicIP: `192.168.200.${n}`,
    backendType: type,
    backendData: type === 'vxlan' ? { VtepMAC: `02:00:00:00:00:0${n}`, VNI: 1 } : type === 'tun' ? { Port: 8285 } : {},
    nodeName: `node${n}`,
  };
}

const vx = new VxlanBackend({ iface: 'eth0' });
const own = lease(1);
const peers = [lease(2), lease(3)];
/** what the reconciler leaves: its plan against nothing, applied */
const programmed = (): ActualState => applyToActual(empty(), vx.planPeers(own, peers, empty()).ops);

test('every object present: each peer programmed, nothing stale', () => {
  const d = diffPeers(vx, own, peers, programmed());
  assert.deepEqual(d.peers.map((p) => [p.nodeName, p.state]), [['node2', 'programmed'], ['node3', 'programmed']]);
  // route, neighbour and FDB entry per peer
  assert.deepEqual(d.peers[0].objects.map((o) => [o.kind, o.state]).sort(), [['fdb', 'present'], ['neighbour', 'present'], ['route', 'present']]);
  assert.deepEqual(d.stale, []);
});

test('a deleted route: that peer is not programmed, the route is named missing with its command', () => {
  const a = programmed();
  a.routes = a.routes.filter((r) => r.dst !== '10.244.2.0/24');
  const d = diffPeers(vx, own, peers, a);
  const n2 = d.peers.find((p) => p.nodeName === 'node2')!;
  assert.equal(n2.state, 'not-programmed');
  const bad = n2.objects.filter((o) => o.state !== 'present');
  assert.deepEqual(bad.map((o) => [o.kind, o.state, o.what, o.look]), [['route', 'missing', `route 10.244.2.0/24 via 10.244.2.0 dev ${DEV} onlink proto 80`, 'ip route show 10.244.2.0/24']]);
  assert.equal(d.peers.find((p) => p.nodeName === 'node3')!.state, 'programmed');
});

test('a neighbour with another MAC is wrong, a missing FDB entry is missing', () => {
  const a = programmed();
  a.neighbours = a.neighbours.map((n) => (n.dst === '10.244.3.0' ? { ...n, lladdr: '02:00:00:00:00:99' } : n));
  a.fdb = a.fdb.filter((e) => e.dst !== '192.168.200.2');
  const d = diffPeers(vx, own, peers, a);
  const [n2, n3] = d.peers;
  assert.deepEqual(n2.objects.filter((o) => o.state !== 'present').map((o) => [o.kind, o.state]), [['fdb', 'missing']]);
  assert.match(n2.objects.find((o) => o.kind === 'fdb')!.what, /02:00:00:00:00:02 dev podnet\.1 dst 192\.168\.200\.2/);
  assert.deepEqual(n3.objects.filter((o) => o.state !== 'present').map((o) => [o.kind, o.state]), [['neighbour', 'wrong']]);
  assert.deepEqual(d.stale, []);
});

test('an FDB entry of the peer\'s MAC towards another underlay address is wrong, not stale', () => {
  const a = programmed();
  a.fdb = a.fdb.map((e) => (e.dst === '192.168.200.2' ? { ...e, dst: '192.168.200.77' } : e));
  const d = diffPeers(vx, own, peers, a);
  assert.deepEqual(d.peers[0].objects.filter((o) => o.state !== 'present').map((o) => [o.kind, o.state]), [['fdb', 'wrong']]);
  assert.deepEqual(d.stale, []);
});

test('a route with another gateway is wrong, not stale; a podnet route no lease wants is stale', () => {
  const a = programmed();
  a.routes = a.routes.map((r) => (r.dst === '10.244.2.0/24' ? { ...r, gateway: '10.244.2.9' } : r));
  a.routes.push({ family: 4, dst: '10.244.9.0/24', gateway: '10.244.9.0', dev: DEV, onlink: true, protocol: '80', table: 254, type: 'unicast' });
  const d = diffPeers(vx, own, peers, a);
  assert.deepEqual(d.peers[0].objects.filter((o) => o.state !== 'present').map((o) => [o.kind, o.state]), [['route', 'wrong']]);
  assert.deepEqual(d.stale.map((s) => [s.kind, s.look]), [['route', 'ip route show 10.244.9.0/24']]);
});

test('a foreign route on a peer subnet: the peer is refused with the planner\'s reason', () => {
  const a = programmed();
  a.routes = a.routes.filter((r) => r.dst !== '10.244.3.0/24');
  a.routes.push({ family: 4, dst: '10.244.3.0/24', dev: 'eth0', protocol: 'static', table: 254, type: 'unicast' });
  const d = diffPeers(vx, own, peers, a);
  const n3 = d.peers.find((p) => p.nodeName === 'node3')!;
  assert.equal(n3.state, 'refused');
  assert.match(n3.reasons.join('\n'), /not created by podnet/);
});

test('host-gw: the peer route via its public IP, missing when deleted', () => {
  const hg = new HostGwBackend({ iface: 'eth0' });
  const o = lease(1, 'host-gw');
  const ps = [lease(2, 'host-gw')];
  const base: ActualState = { ...empty(), ifaceAddresses: [{ family: 4, address: '192.168.200.1', prefixLen: 24, scope: 'global', ifname: 'eth0' } as never] };
  const full = applyToActual(base, hg.planPeers(o, ps, base).ops);
  assert.equal(diffPeers(hg, o, ps, full).peers[0].state, 'programmed');
  const d = diffPeers(hg, o, ps, base);
  assert.deepEqual(d.peers[0].objects.map((x) => [x.kind, x.state, x.what]), [['route', 'missing', 'route 10.244.2.0/24 via 192.168.200.2 dev eth0 proto 80']]);
});

test('tun: the podnet-tund peer line is part of a peer; missing, wrong (other port) and stale lines', () => {
  const tb = new TunBackend({ iface: 'eth0', clusterNetworks: ['10.244.0.0/16'] });
  const o = lease(1, 'tun');
  const ps = [lease(2, 'tun'), lease(3, 'tun')];
  const plan = tb.planPeers(o, ps, empty());
  const a = applyToActual(empty(), plan.ops);
  const file = '/x/tund/peers';
  const good = diffPeers(tb, o, ps, a, { table: plan.datapath, file });
  assert.deepEqual(good.peers.map((p) => p.state), ['programmed', 'programmed']);
  assert.deepEqual(good.shared.map((s) => [s.kind, s.state]), [['route', 'present']]);
  const table = { locals: plan.datapath!.locals, peers: [{ ...plan.datapath!.peers[1], port: 9999 }, { subnet: '10.244.7.0/24', publicIP: '192.168.200.7', port: 8285 }] };
  const d = diffPeers(tb, o, ps, a, { table, file });
  assert.deepEqual(d.peers.map((p) => p.objects.filter((x) => x.state !== 'present').map((x) => `${x.kind} ${x.state}`)), [['tun-peer missing'], ['tun-peer wrong']]);
  assert.deepEqual(d.stale.map((s) => s.what), ['podnet-tund line "peer 10.244.7.0/24 192.168.200.7 8285"']);
});

test('subnet.env: agreeing with the lease, or each differing line named', () => {
  const conf = parseNetConf({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } });
  const want = (m: boolean) => renderSubnetEnv(conf, own, 1450, m);
  assert.deepEqual(diffSubnetEnv(want(false), want), []);
  assert.deepEqual(diffSubnetEnv(undefined, want), ['missing']);
  assert.deepEqual(diffSubnetEnv(want(true).replace('PODNET_SUBNET=10.244.1.1/24', 'PODNET_SUBNET=10.244.5.1/24'), want), ['PODNET_SUBNET=10.244.5.1/24, the lease says 10.244.1.1/24']);
});
