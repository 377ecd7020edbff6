import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bridgeGatewayAddrs, planBridgeAddrs, planBridgeVeth } from '../../src/cni/modes/bridge.js';
import { planRouted } from '../../src/cni/modes/routed.js';
import { planHostLeg, hostLegName } from '../../src/cni/modes/macvlan.js';
import { hostVethName, podRoutes, parseOwnerAlias, ownerAlias, randomMac } from '../../src/cni/modes/common.js';
import { renderMasqAdd } from '../../src/cni/masq.js';
import { mergeResults } from '../../src/cni/plugin.js';

test('host veth names are deterministic, distinct per attachment and fit IFNAMSIZ', () => {
  const a = hostVethName('c1', 'eth0');
  assert.equal(a, hostVethName('c1', 'eth0'));
  assert.notEqual(a, hostVethName('c1', 'net1'));
  assert.notEqual(a, hostVethName('c2', 'eth0'));
  assert.ok(a.length <= 15 && a.startsWith('veth'));
  assert.ok(hostLegName('eth0').length <= 15);
});

test('owner alias round-trips', () => {
  assert.deepEqual(parseOwnerAlias(ownerAlias('net', 'cid', 'eth0')), { network: 'net', containerId: 'cid', ifname: 'eth0' });
  assert.equal(parseOwnerAlias('something else'), undefined);
});

test('random MACs are unicast and locally administered', () => {
  for (let i = 0; i < 50; i++) {
    const first = parseInt(randomMac().slice(0, 2), 16);
    assert.equal(first & 1, 0);
    assert.equal(first & 2, 2);
  }
});

test('bridge gateway addresses: add missing, refuse a different one unless forceAddress', () => {
  const want = bridgeGatewayAddrs([{ address: '10.1.0.5/24', gateway: '10.1.0.1' }, { address: 'fd00::5/64', gateway: 'fd00::1' }]);
  assert.deepEqual(want, ['10.1.0.1/24', 'fd00::1/64']);
  assert.deepEqual(planBridgeAddrs('br', want, ['10.1.0.1/24', 'fd00::1/64'], false), []);
  const ops = planBridgeAddrs('br', want, [], false);
  assert.deepEqual(ops.map((o) => o.op), ['addr-add', 'addr-add']);
  assert.equal((ops[1] as { nodad?: boolean }).nodad, true);
  assert.throws(() => planBridgeAddrs('br', ['10.1.0.1/24'], ['10.1.0.254/24'], false), (e: { code?: number }) => e.code === 7);
  const forced = planBridgeAddrs('br', ['10.1.0.1/24'], ['10.1.0.254/24', '192.168.0.1/24'], true);
  assert.deepEqual(forced.map((o) => o.op), ['addr-del', 'addr-add']);
});

test('bridge veth plan creates the peer in the pod netns and enslaves the host end', () => {
  const ops = planBridgeVeth({ bridge: 'cni0', hostVeth: 'vethx', ifname: 'eth0', podNsPath: '/run/netns/p', podMac: '02:00:00:00:00:01', hostMac: '02:00:00:00:00:02', hairpin: true, alias: 'a' });
  assert.equal(ops[0].op, 'link-add');
  const spec = (ops[0] as { spec: { peer: { netns: { path: string } } } }).spec;
  assert.equal(spec.peer.netns.path, '/run/netns/p');
  assert.deepEqual(ops.slice(1).map((o) => o.op), ['link-set', 'link-set']);
});

test('routed plan: /32 and /128 on the pod, host route per IP, on-link gateway and default routes', () => {
  const p = planRouted({
    hostVeth: 'vethx',
    ifname: 'eth0',
    podNsPath: '/p',
    podMac: '02:00:00:00:00:01',
    alias: 'a',
    ips: [{ address: '10.2.0.7/24', gateway: '10.2.0.1' }, { address: 'fd00:2::7/64', gateway: 'fd00:2::1' }],
    routes: [],
  });
  assert.deepEqual(p.podIps.map((i) => i.address), ['10.2.0.7/32', 'fd00:2::7/128']);
  const hostRoutes = p.host.filter((o) => o.op === 'route-add').map((o) => (o as { route: { dst: string } }).route.dst);
  assert.deepEqual(hostRoutes, ['10.2.0.7/32', 'fd00:2::7/128']);
  assert.deepEqual(p.podRoutes, [{ dst: '0.0.0.0/0', gw: '10.2.0.1' }, { dst: '::/0', gw: 'fd00:2::1' }]);
  // the host end comes up only after DAD is off on it (a tentative link-local sends no neighbour solicitation)
  assert.equal(p.link.op, 'link-add');
  assert.deepEqual(p.hostSysctls, { 'net/ipv6/conf/vethx/accept_dad': '0' });
  assert.equal(p.host[0].op === 'link-set' && p.host[0].up, true);
  assert.deepEqual(planRouted({ hostVeth: 'v', ifname: 'e', podNsPath: '/p', podMac: 'm', alias: 'a', ips: [{ address: '10.0.0.2/24', gateway: '10.0.0.1' }], routes: [] }).hostSysctls, {}, 'IPv4 only: no IPv6 sysctl');
  assert.throws(() => planRouted({ hostVeth: 'v', ifname: 'e', podNsPath: '/p', podMac: 'm', alias: 'a', ips: [{ address: '10.0.0.2/24' }], routes: [] }));
});

test('pod routes: IPAM routes through the family gateway, one default per family', () => {
  const ips = [{ address: '10.1.0.5/24', gateway: '10.1.0.1' }];
  assert.deepEqual(podRoutes(ips, [{ dst: '192.168.0.0/16' }], true), [{ dst: '192.168.0.0/16', gw: '10.1.0.1' }, { dst: '0.0.0.0/0', gw: '10.1.0.1' }]);
  assert.deepEqual(podRoutes(ips, [{ dst: '0.0.0.0/0', gw: '10.1.0.9' }], true), [{ dst: '0.0.0.0/0', gw: '10.1.0.9' }]);
  assert.deepEqual(podRoutes(ips, [], false), []);
});

test('macvlan host leg: created once, node addresses as host addresses, a route per pod', () => {
  const ops = planHostLeg({ leg: 'pnh1', master: 'eth0', legExists: false, nodeAddrs: ['192.168.1.2'], legAddrs: [], podIps: ['192.168.1.100'] });
  assert.deepEqual(ops.map((o) => o.op), ['link-add', 'link-set', 'addr-add', 'route-add']);
  const again = planHostLeg({ leg: 'pnh1', master: 'eth0', legExists: true, nodeAddrs: ['192.168.1.2'], legAddrs: ['192.168.1.2/32'], podIps: ['192.168.1.101'] });
  assert.deepEqual(again.map((o) => o.op), ['link-set', 'route-add']);
});

test('masquerade transaction: shared rules rewritten whole, one element per pod with its owner', () => {
  const s = renderMasqAdd([{ ip: '10.1.0.5', network: '10.1.0.0/24' }, { ip: 'fd00::5', network: 'fd00::/64' }], 'net:vethabc');
  assert.match(s, /^table inet podnet \{/);
  assert.match(s, /flush chain inet podnet cni-masquerade/);
  assert.equal((s.match(/masquerade comment/g) ?? []).length, 2);
  assert.match(s, /add element inet podnet masq_pods4 \{ 10\.1\.0\.5 comment "net:vethabc" \}/);
  assert.match(s, /add element inet podnet masq_nets6 \{ fd00::\/64 \}/);
  assert.throws(() => renderMasqAdd([{ ip: '10.1.0.6', network: '10.1.0.0/24' }], 'bad"owner'));
});

test('chained results append and keep interface indices', () => {
  const prev = { cniVersion: '1.0.0', interfaces: [{ name: 'a' }], ips: [{ address: '1.1.1.1/32', interface: 0 }] };
  const ours = { cniVersion: '1.0.0', interfaces: [{ name: 'b' }, { name: 'c', sandbox: '/x' }], ips: [{ address: '10.0.0.2/24', interface: 1 }] };
  const m = mergeResults(prev, ours);
  assert.deepEqual(m.interfaces?.map((i) => i.name), ['a', 'b', 'c']);
  assert.deepEqual(m.ips?.map((i) => i.interface), [0, 2]);
});

test('GC recognises a bare host veth left by a killed ADD, and nothing else', async () => {
  const { isOrphanHostVeth } = await import('../../src/cni/plugin.js');
  const name = hostVethName('c1', 'eth0');
  assert.equal(isOrphanHostVeth({ name, up: false }), true);
  assert.equal(isOrphanHostVeth({ name, up: true }), false);
  assert.equal(isOrphanHostVeth({ name, up: false, master: 'cni0' }), false);
  assert.equal(isOrphanHostVeth({ name, up: false, alias: 'x' }), false);
  assert.equal(isOrphanHostVeth({ name: 'veth1234abcd', up: false }), false);
  assert.equal(isOrphanHostVeth({ name: 'eth0', up: false }), false);
});
