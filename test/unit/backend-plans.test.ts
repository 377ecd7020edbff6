// The backend planners are pure: (own lease, peers, actual state) → ops. A tiny fake kernel applies
// plans to an ActualState so idempotence ("the second plan is empty") is checked on the planner alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { VxlanBackend, vtepAddr } from '../../src/agent/backends/vxlan.js';
import { HostGwBackend } from '../../src/agent/backends/hostgw.js';
import { createBackend, PODNET_RTPROTO_STR, type ActualState } from '../../src/agent/backends/index.js';
import type { KernelOp, Route } from '../../src/kernel/types.js';
import type { NodeLease } from '../../src/agent/lease.js';
import { forwardBlockers, renderClusterFirewall, renderClusterFirewallCleanup } from '../../src/agent/firewall.js';
import { renderOp } from '../../src/kernel/render.js';

const DEV = 'podnet.1';
const empty = (): ActualState => ({ routes: [], neighbours: [], fdb: [], ifaceAddresses: [] });

function lease(n: number, extra: Partial<NodeLease> = {}, type: 'vxlan' | 'host-gw' = 'vxlan'): NodeLease {
  return {
    subnet: `10.244.${n}.0/24`,
    publicIP: `192.168.200.${n}`,
    backendType: type,
    backendData: type === 'vxlan' ? { VtepMAC: `02:00:00:00:00:0${n}`, VNI: 1 } : {},
    nodeName: `node${n}`,
    ...extra,
  };
}

/** Applies ops the way the kernel would, as far as the planners can see. */
function applyFake(s: ActualState, ops: KernelOp[]): ActualState {
  const a: ActualState = { routes: [...s.routes], neighbours: [...s.neighbours], fdb: [...s.fdb], ifaceAddresses: s.ifaceAddresses };
  for (const o of ops) {
    switch (o.op) {
      case 'route-add': {
        const fam = o.route.dst.includes(':') ? 6 : 4;
        const metric = fam === 6 ? 1024 : undefined;
        a.routes = a.routes.filter((r) => !(r.dst === o.route.dst && (r.metric ?? (fam === 6 ? 1024 : undefined)) === metric));
        const r: Route = { family: fam, dst: o.route.dst, dev: o.route.dev, protocol: o.route.proto, table: 254, type: 'unicast' };
        if (o.route.gateway) r.gateway = o.route.gateway;
        if (o.route.onlink) r.onlink = true;
        if (metric) r.metric = metric;
        a.routes.push(r);
        break;
      }
      case 'route-del':
        a.routes = a.routes.filter((r) => !(r.dst === o.route.dst && r.protocol === o.route.proto && (o.route.gateway === undefined || r.gateway === o.route.gateway)));
        break;
      case 'neigh-replace':
        a.neighbours = a.neighbours.filter((n) => n.dst !== o.dst).concat({ dst: o.dst, dev: o.dev, lladdr: o.lladdr, state: ['PERMANENT'] });
        break;
      case 'neigh-del':
        a.neighbours = a.neighbours.filter((n) => n.dst !== o.dst);
        break;
      case 'fdb-replace':
        a.fdb = a.fdb.filter((e) => e.mac !== o.mac).concat({ mac: o.mac, dev: o.dev, dst: o.dst, flags: ['self'], state: 'permanent' });
        break;
      case 'fdb-del':
        a.fdb = a.fdb.filter((e) => !(e.mac === o.mac && (o.dst === undefined || e.dst === o.dst)));
        break;
      default:
        throw new Error(`fake kernel: unexpected ${o.op}`);
    }
  }
  return a;
}

const kinds = (ops: KernelOp[]) => ops.map((o) => o.op);

test('MTU overhead: vxlan 50 over IPv4, 70 over IPv6; host-gw 0', () => {
  const v = new VxlanBackend({ iface: 'eth0' });
  assert.equal(v.mtuOverhead(false), 50);
  assert.equal(v.mtuOverhead(true), 70);
  assert.equal(new HostGwBackend({ iface: 'eth0' }).mtuOverhead(false), 0);
  assert.equal(v.device, 'podnet.1');
  assert.equal(new VxlanBackend({ iface: 'eth0', vni: 16777215 }).device.length, 15);
  assert.throws(() => new VxlanBackend({ iface: 'eth0', vni: 0 }), /VNI/);
  assert.equal(createBackend({ type: 'host-gw', iface: 'eth0' }).type, 'host-gw');
});

test('vxlan: peers added from nothing — route via VTEP onlink, permanent neighbour, FDB to the public IP; ordered and renderable', () => {
  const b = new VxlanBackend({ iface: 'eth0' });
  const { ops, errors } = b.planPeers(lease(1), [lease(1), lease(2), lease(3)], empty());
  assert.deepEqual(errors, []);
  assert.deepEqual(kinds(ops), ['fdb-replace', 'fdb-replace', 'neigh-replace', 'neigh-replace', 'route-add', 'route-add']);
  assert.deepEqual(ops[0], { op: 'fdb-replace', dev: DEV, mac: '02:00:00:00:00:02', dst: '192.168.200.2', self: true, permanent: true });
  assert.deepEqual(ops[2], { op: 'neigh-replace', dev: DEV, dst: '10.244.2.0', lladdr: '02:00:00:00:00:02' });
  assert.deepEqual(ops[4], { op: 'route-add', replace: true, route: { dst: '10.244.2.0/24', gateway: '10.244.2.0', dev: DEV, onlink: true, proto: '80' } });
  assert.equal(renderOp(ops[4]).lines[0], 'route replace 10.244.2.0/24 via 10.244.2.0 dev podnet.1 onlink proto 80');
  assert.equal(renderOp(ops[0]).lines[0], 'fdb replace 02:00:00:00:00:02 dev podnet.1 dst 192.168.200.2 self permanent');
  // idempotent: applied, the next plan is empty
  assert.deepEqual(b.planPeers(lease(1), [lease(2), lease(3)], applyFake(empty(), ops)).ops, []);
});

test('vxlan: a removed peer (also one gone while the agent was down) loses route, neighbour and FDB entry; foreign objects stay', () => {
  const b = new VxlanBackend({ iface: 'eth0' });
  let s = applyFake(empty(), b.planPeers(lease(1), [lease(2), lease(3)], empty()).ops);
  // things podnet does not own: a foreign route in the same range, the own subnet's kernel route,
  // a kernel-made neighbour, the device's own address-list FDB entry
  const foreign: Route = { family: 4, dst: '10.244.99.0/24', gateway: '192.168.200.9', dev: 'eth0', protocol: 'boot', table: 254, type: 'unicast' };
  const own: Route = { family: 4, dst: '10.244.1.0/24', dev: 'cni0', protocol: 'kernel', table: 254, type: 'unicast' };
  // a leftover of a node deleted while the agent was down: podnet's proto, no lease any more
  const stale: Route = { family: 4, dst: '10.244.7.0/24', gateway: '10.244.7.0', dev: DEV, protocol: PODNET_RTPROTO_STR, table: 254, type: 'unicast', onlink: true };
  s = {
    ...s,
    routes: [...s.routes, foreign, own, stale],
    neighbours: [...s.neighbours, { dst: '10.244.7.0', dev: DEV, lladdr: '02:00:00:00:00:07', state: ['PERMANENT'] }, { dst: '10.244.8.0', dev: DEV, state: ['FAILED'] }],
    fdb: [...s.fdb, { mac: '02:00:00:00:00:07', dev: DEV, dst: '192.168.200.7', flags: ['self'] }, { mac: '33:33:00:00:00:01', dev: DEV, flags: ['self'], state: 'permanent' }],
  };
  const { ops, errors } = b.planPeers(lease(1), [lease(2)], s);
  assert.deepEqual(errors, []);
  assert.deepEqual(kinds(ops), ['route-del', 'route-del', 'neigh-del', 'neigh-del', 'fdb-del', 'fdb-del']);
  const text = ops.map((o) => JSON.stringify(o)).join('\n');
  for (const gone of ['10.244.3.0', '10.244.7.0', '192.168.200.3', '192.168.200.7']) assert.match(text, new RegExp(gone.replace(/\./g, '\\.')));
  for (const kept of ['10.244.99.0', '10.244.1.0', '10.244.8.0', '33:33', '10.244.2.0']) assert.doesNotMatch(text, new RegExp(kept.replace(/\./g, '\\.')));
  for (const o of ops) if (o.op === 'route-del') assert.equal(o.route.proto, '80', 'deletes are pinned to podnet proto');
  const after = applyFake(s, ops);
  assert.ok(after.routes.includes(foreign) && after.routes.includes(own));
  assert.deepEqual(b.planPeers(lease(1), [lease(2)], after).ops, []);
});

test('vxlan: a changed VtepMAC replaces neighbour and FDB, the old FDB entry goes first; a moved public IP too', () => {
  const b = new VxlanBackend({ iface: 'eth0' });
  const s = applyFake(empty(), b.planPeers(lease(1), [lease(2), lease(3)], empty()).ops);
  const moved = lease(2, { backendData: { VtepMAC: '02:aa:00:00:00:02', VNI: 1 } });
  const { ops } = b.planPeers(lease(1), [moved, lease(3)], s);
  assert.deepEqual(ops, [
    { op: 'fdb-del', dev: DEV, mac: '02:00:00:00:00:02', dst: '192.168.200.2', ignoreMissing: true },
    { op: 'fdb-replace', dev: DEV, mac: '02:aa:00:00:00:02', dst: '192.168.200.2', self: true, permanent: true },
    { op: 'neigh-replace', dev: DEV, dst: '10.244.2.0', lladdr: '02:aa:00:00:00:02' },
  ]);
  const s2 = applyFake(s, ops);
  assert.deepEqual(b.planPeers(lease(1), [moved, lease(3)], s2).ops, []);
  const ipMoved = { ...moved, publicIP: '192.168.200.22' };
  assert.deepEqual(kinds(b.planPeers(lease(1), [ipMoved, lease(3)], s2).ops), ['fdb-del', 'fdb-replace']);
});

test('vxlan: peers refused one by one — no VtepMAC, other VNI, duplicate MAC, overlapping subnet, other backend, foreign route on its subnet', () => {
  const b = new VxlanBackend({ iface: 'eth0' });
  const foreign: Route = { family: 4, dst: '10.244.6.0/24', dev: 'eth0', gateway: '192.168.200.66', protocol: 'static', table: 254, type: 'unicast' };
  const peers = [
    lease(2),
    lease(3, { backendData: {} }),
    lease(4, { backendData: { VtepMAC: '02:00:00:00:00:04', VNI: 7 } }),
    lease(5, { backendData: { VtepMAC: '02:00:00:00:00:02' } }),
    { ...lease(7), subnet: '10.244.2.128/25' },
    lease(8, {}, 'host-gw'),
    lease(6),
  ];
  const { ops, errors } = b.planPeers(lease(1), peers, { ...empty(), routes: [foreign] });
  const msgs = errors.map((e) => `${e.peer}: ${e.message}`).join('\n');
  assert.match(msgs, /10\.244\.3\.0\/24: .*no valid VtepMAC/);
  assert.match(msgs, /10\.244\.4\.0\/24: .*VNI 7/);
  assert.match(msgs, /10\.244\.5\.0\/24: .*VtepMAC 02:00:00:00:00:02 is also that of node2/);
  assert.match(msgs, /10\.244\.2\.128\/25: .*overlaps 10\.244\.2\.0\/24/);
  assert.match(msgs, /10\.244\.8\.0\/24: .*uses backend host-gw/);
  assert.match(msgs, /10\.244\.6\.0\/24: .*node6.*not created by podnet.*proto static/);
  assert.equal(errors.length, 6);
  // only node2 is programmed, and the foreign route is not touched
  assert.deepEqual(kinds(ops), ['fdb-replace', 'neigh-replace', 'route-add']);
  assert.ok(ops.every((o) => !JSON.stringify(o).includes('10.244.6.')));
});

test('vxlan dual-stack: IPv6 subnets ride the same device and FDB entry', () => {
  const b = new VxlanBackend({ iface: 'eth0' });
  const v6 = (n: number) => lease(n, { ipv6Subnet: `fd00:10:244:${n}::/64` });
  const { ops, errors } = b.planPeers(v6(1), [v6(2)], empty());
  assert.deepEqual(errors, []);
  assert.deepEqual(kinds(ops), ['fdb-replace', 'neigh-replace', 'neigh-replace', 'route-add', 'route-add']);
  assert.deepEqual(ops[2], { op: 'neigh-replace', dev: DEV, dst: 'fd00:10:244:2::', lladdr: '02:00:00:00:00:02' });
  assert.deepEqual((ops[4] as { route: unknown }).route, { dst: 'fd00:10:244:2::/64', gateway: 'fd00:10:244:2::', dev: DEV, onlink: true, proto: '80' });
  assert.deepEqual(b.planPeers(v6(1), [v6(2)], applyFake(empty(), ops)).ops, []);
  // own lease without IPv6: the peer's IPv6 subnet is not routed
  assert.deepEqual(kinds(b.planPeers(lease(1), [v6(2)], empty()).ops), ['fdb-replace', 'neigh-replace', 'route-add']);
  assert.equal(vtepAddr('fd00:10:244:2::/64'), 'fd00:10:244:2::');
});

test('vxlan: an underlay family mismatch is refused', () => {
  const b = new VxlanBackend({ iface: 'eth0' });
  const { errors } = b.planPeers(lease(1), [lease(2, { publicIP: '2001:db8::2' })], empty());
  assert.match(errors[0].message, /underlay is IPv6, this node's is IPv4/);
});

test('vxlan: a podnet route with wrong attributes is replaced; duplicate podnet routes with other metrics deleted', () => {
  const b = new VxlanBackend({ iface: 'eth0' });
  const wrong: Route = { family: 4, dst: '10.244.2.0/24', gateway: '10.244.2.5', dev: DEV, onlink: true, protocol: '80', table: 254, type: 'unicast' };
  const dup: Route = { ...wrong, gateway: '10.244.2.0', metric: 100 };
  const s = applyFake(empty(), b.planPeers(lease(1), [lease(2)], empty()).ops.filter((o) => o.op !== 'route-add'));
  const { ops } = b.planPeers(lease(1), [lease(2)], { ...s, routes: [wrong, dup] });
  assert.deepEqual(ops, [
    { op: 'route-del', route: { dst: '10.244.2.0/24', family: 4, proto: '80', gateway: '10.244.2.0', dev: DEV, metric: 100 }, ignoreMissing: true },
    { op: 'route-add', replace: true, route: { dst: '10.244.2.0/24', gateway: '10.244.2.0', dev: DEV, onlink: true, proto: '80' } },
  ]);
});

test('host-gw: routes via the peer public IP; a peer off the L2 segment is refused by name, the others proceed', () => {
  const b = new HostGwBackend({ iface: 'eth0' });
  const s: ActualState = { ...empty(), ifaceAddresses: [{ ifname: 'eth0', family: 4, address: '192.168.200.1', prefixLen: 24, scope: 'global' }] };
  const far = lease(9, { publicIP: '192.168.77.5', nodeName: 'faraway' }, 'host-gw');
  const { ops, errors } = b.planPeers(lease(1, {}, 'host-gw'), [lease(2, {}, 'host-gw'), far, lease(3, {}, 'host-gw')], s);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].peer, '10.244.9.0/24');
  assert.equal(errors[0].nodeName, 'faraway');
  assert.match(errors[0].message, /faraway .*192\.168\.77\.5.* not on the same L2 segment.*192\.168\.200\.0\/24/);
  assert.deepEqual(ops, [
    { op: 'route-add', replace: true, route: { dst: '10.244.2.0/24', gateway: '192.168.200.2', dev: 'eth0', proto: '80' } },
    { op: 'route-add', replace: true, route: { dst: '10.244.3.0/24', gateway: '192.168.200.3', dev: 'eth0', proto: '80' } },
  ]);
  const after = applyFake(s, ops);
  assert.deepEqual(b.planPeers(lease(1, {}, 'host-gw'), [lease(2, {}, 'host-gw'), far, lease(3, {}, 'host-gw')], after).ops, []);
  // peer 3 gone; a foreign route in the pod range stays
  const foreign: Route = { family: 4, dst: '10.244.3.0/25', gateway: '192.168.200.3', dev: 'eth0', protocol: 'boot', table: 254, type: 'unicast' };
  const r = b.planPeers(lease(1, {}, 'host-gw'), [lease(2, {}, 'host-gw')], { ...after, routes: [...after.routes, foreign] });
  assert.deepEqual(r.ops, [{ op: 'route-del', route: { dst: '10.244.3.0/24', family: 4, proto: '80', gateway: '192.168.200.3', dev: 'eth0' }, ignoreMissing: true }]);
});

test('host-gw dual-stack: IPv6 subnet via the peer IPv6 public IP; a missing IPv6 public IP withdraws only IPv6', () => {
  const b = new HostGwBackend({ iface: 'eth0' });
  const s: ActualState = {
    ...empty(),
    ifaceAddresses: [
      { ifname: 'eth0', family: 4, address: '192.168.200.1', prefixLen: 24, scope: 'global' },
      { ifname: 'eth0', family: 6, address: 'fd00:200::1', prefixLen: 64, scope: 'global' },
    ],
  };
  const ds = (n: number, pub6?: string) => lease(n, { ipv6Subnet: `fd00:10:244:${n}::/64`, ...(pub6 ? { publicIPv6: pub6 } : {}) }, 'host-gw');
  const { ops, errors } = b.planPeers(ds(1, 'fd00:200::1'), [ds(2, 'fd00:200::2'), ds(3)], s);
  assert.equal(errors.length, 1);
  assert.match(errors[0].message, /node3.*no IPv6 public IP/);
  assert.deepEqual(
    ops.map((o) => (o as { route: { dst: string; gateway: string } }).route).map((r) => `${r.dst} via ${r.gateway}`),
    ['10.244.2.0/24 via 192.168.200.2', 'fd00:10:244:2::/64 via fd00:200::2', '10.244.3.0/24 via 192.168.200.3'],
  );
  assert.deepEqual(b.planPeers(ds(1, 'fd00:200::1'), [ds(2, 'fd00:200::2'), ds(3)], applyFake(s, ops)).ops, []);
});

test('firewall: podnet\'s tables only, replaced in one transaction, masquerade only leaving the cluster', () => {
  const s = renderClusterFirewall({ clusterCidrs: ['10.244.0.0/16', 'fd00:10:244::/56'] });
  assert.match(s, /^add table inet podnet-cluster\ndelete table inet podnet-cluster\nadd table netdev podnet-cluster\ndelete table netdev podnet-cluster\ntable inet podnet-cluster \{/);
  assert.match(s, /ip saddr 10\.244\.0\.0\/16 ip daddr != 10\.244\.0\.0\/16 ip daddr != 224\.0\.0\.0\/4 counter masquerade/);
  assert.match(s, /ip6 saddr fd00:10:244::\/56 ip6 daddr != fd00:10:244::\/56/);
  assert.doesNotMatch(s, /table (ip|inet) (?!podnet-cluster)/);
  assert.doesNotMatch(renderClusterFirewall({ clusterCidrs: ['10.244.0.0/16'], masquerade: false }), /masquerade/);
  assert.equal(renderClusterFirewallCleanup(), 'add table inet podnet-cluster\ndelete table inet podnet-cluster\nadd table netdev podnet-cluster\ndelete table netdev podnet-cluster\n');
  assert.throws(() => renderClusterFirewall({ clusterCidrs: ['nope'] }), /not a CIDR/);
});

test('firewall: forward-hook drop policies in other tables are reported with advice; podnet and iptables-fixed chains are not', () => {
  const rs = {
    nftables: [
      { chain: { family: 'inet', table: 'hostfw', name: 'forward', hook: 'forward', policy: 'drop', type: 'filter' } },
      { chain: { family: 'inet', table: 'podnet-cluster', name: 'forward', hook: 'forward', policy: 'accept' } },
      { chain: { family: 'ip', table: 'filter', name: 'FORWARD', hook: 'forward', policy: 'drop' } },
      { chain: { family: 'inet', table: 'other', name: 'input', hook: 'input', policy: 'drop' } },
    ],
  };
  const all = forwardBlockers(rs, { clusterCidrs: ['10.244.0.0/16'] });
  assert.deepEqual(all.map((b) => `${b.family} ${b.table} ${b.chain}`), ['inet hostfw forward', 'ip filter FORWARD']);
  assert.match(all[0].advice, /add to that chain: ip saddr 10\.244\.0\.0\/16 accept; ip daddr 10\.244\.0\.0\/16 accept/);
  assert.deepEqual(forwardBlockers(rs, { clusterCidrs: ['10.244.0.0/16'] }, true).map((b) => b.table), ['hostfw']);
});
