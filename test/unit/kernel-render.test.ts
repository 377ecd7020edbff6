// Op → iproute2 batch line rendering, and batch failure attribution.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { renderOp } from '../../src/kernel/render.js';
import { buildBatchScript, locateBatchFailure, sysctlPath, type BatchItem } from '../../src/kernel/iproute2.js';
import { KernelError } from '../../src/kernel/exec.js';
import type { KernelOp } from '../../src/kernel/types.js';

const ctx = { selfNetnsPath: '/proc/1234/ns/net' };
const lines = (op: KernelOp) => renderOp(op, ctx).lines;

describe('renderOp', () => {
  it('always names the link ("link add a" would mean address a)', () => {
    assert.deepEqual(lines({ op: 'link-add', spec: { kind: 'bridge', name: 'a' } }), ['link add name a type bridge']);
  });

  it('renders veth with a peer in a named, path or current netns', () => {
    assert.deepEqual(lines({ op: 'link-add', spec: { kind: 'veth', name: 'h', mtu: 1450, mac: '02:00:00:00:00:01', peer: { name: 'p', netns: { kind: 'name', name: 'ns1' }, mtu: 1450 } } }), [
      'link add name h address 02:00:00:00:00:01 mtu 1450 type veth peer name p mtu 1450 netns ns1',
    ]);
    assert.deepEqual(lines({ op: 'link-add', spec: { kind: 'veth', name: 'h', peer: { name: 'p', netns: { kind: 'path', path: '/proc/9/ns/net' } } } }), [
      'link add name h type veth peer name p netns /proc/9/ns/net',
    ]);
    assert.deepEqual(lines({ op: 'link-add', spec: { kind: 'veth', name: 'h', peer: { name: 'p', netns: { kind: 'current' } } } }), [
      'link add name h type veth peer name p netns /proc/1234/ns/net',
    ]);
  });

  it('renders vxlan, bridge, macvlan (netns before type), tun (+mtu)', () => {
    assert.deepEqual(lines({ op: 'link-add', spec: { kind: 'vxlan', name: 'vx0', vni: 7, dstport: 4789, local: '10.0.0.1', dev: 'eth0', learning: false } }), [
      'link add name vx0 type vxlan id 7 dstport 4789 local 10.0.0.1 dev eth0 nolearning',
    ]);
    assert.deepEqual(lines({ op: 'link-add', spec: { kind: 'bridge', name: 'br0', vlanFiltering: false } }), ['link add name br0 type bridge vlan_filtering 0']);
    assert.deepEqual(lines({ op: 'link-add', spec: { kind: 'macvlan', name: 'm0', master: 'eth0', mode: 'bridge', netns: { kind: 'name', name: 'c1' }, mtu: 1400 } }), [
      'link add link eth0 name m0 mtu 1400 netns c1 type macvlan mode bridge',
    ]);
    assert.deepEqual(lines({ op: 'link-add', spec: { kind: 'tun', name: 't0', mtu: 1380 } }), ['tuntap add name t0 mode tun', 'link set dev t0 mtu 1380']);
  });

  it('renders link-set, hairpin on its own line, netns moves split from settings', () => {
    assert.deepEqual(lines({ op: 'link-set', name: 'v', up: true, mtu: 1400, mac: '02:00:00:00:00:02', master: 'br0', hairpin: true }), [
      'link set dev v address 02:00:00:00:00:02 mtu 1400 master br0 up',
      'link set dev v type bridge_slave hairpin on',
    ]);
    assert.deepEqual(lines({ op: 'link-set', name: 'v', master: null, up: false }), ['link set dev v nomaster down']);
    assert.deepEqual(lines({ op: 'link-set', name: 'v', newName: 'w', hairpin: false }), ['link set dev v name w', 'link set dev w type bridge_slave hairpin off']);
    assert.deepEqual(lines({ op: 'link-set', name: 'v', mtu: 1400, netns: { kind: 'path', path: '/proc/5/ns/net' }, newName: 'eth0' }), [
      'link set dev v mtu 1400',
      'link set dev v netns /proc/5/ns/net name eth0',
    ]);
    assert.deepEqual(lines({ op: 'link-set', name: 'v', alias: 'podnet owner x' }), ['link set dev v alias "podnet owner x"']);
    assert.throws(() => renderOp({ op: 'link-set', name: 'v', up: true, netns: { kind: 'name', name: 'x' } }, ctx), /cannot be combined/);
    assert.throws(() => renderOp({ op: 'link-set', name: 'v' }, ctx), /changes nothing/);
    assert.throws(() => renderOp({ op: 'link-set', name: 'v', alias: 'a"b' }, ctx), KernelError);
  });

  it('renders addresses (nodad only for IPv6, replace)', () => {
    assert.deepEqual(lines({ op: 'addr-add', dev: 'e', cidr: '10.0.0.1/24', nodad: true }), ['addr add 10.0.0.1/24 dev e']);
    assert.deepEqual(lines({ op: 'addr-add', dev: 'e', cidr: 'fd00::1/64', nodad: true, noprefixroute: true }), ['addr add fd00::1/64 dev e nodad noprefixroute']);
    assert.deepEqual(lines({ op: 'addr-add', dev: 'e', cidr: '10.0.0.1/24', replace: true }), ['addr replace 10.0.0.1/24 dev e']);
    assert.deepEqual(lines({ op: 'addr-del', dev: 'e', cidr: '10.0.0.1/24' }), ['addr del 10.0.0.1/24 dev e']);
  });

  it('renders routes with every option', () => {
    assert.deepEqual(lines({ op: 'route-add', route: { dst: 'default', gateway: '169.254.1.1', dev: 'eth0', onlink: true } }), ['route add default via 169.254.1.1 dev eth0 onlink']);
    assert.deepEqual(
      lines({ op: 'route-add', replace: true, route: { dst: '10.1.2.3/32', dev: 'v', scope: 'link', src: '10.0.0.1', metric: 5, table: 100, proto: 'static', mtu: 1400, advmss: 1360 } }),
      ['route replace 10.1.2.3/32 dev v scope link src 10.0.0.1 metric 5 table 100 proto static mtu 1400 advmss 1360'],
    );
    assert.deepEqual(lines({ op: 'route-add', route: { dst: 'default', dev: 'eth0', family: 6 } }), ['route add ::/0 dev eth0']);
    assert.deepEqual(lines({ op: 'route-del', route: { dst: 'fd00::/64', gateway: 'fe80::1', dev: 'e' } }), ['route del fd00::/64 via fe80::1 dev e']);
    assert.throws(() => renderOp({ op: 'route-add', route: { dst: '10.0.0.0/8', gateway: 'fd00::1' } }, ctx), /different families/);
    assert.throws(() => renderOp({ op: 'route-add', route: { dst: '10.0.0.0/33' } }, ctx), /prefix length/);
  });

  it('sends neighbours to ip and fdb to bridge', () => {
    assert.deepEqual(renderOp({ op: 'neigh-replace', dev: 'e', dst: '10.0.0.2', lladdr: '02:00:00:00:00:03' }, ctx), {
      tool: 'ip',
      lines: ['neigh replace 10.0.0.2 lladdr 02:00:00:00:00:03 dev e nud permanent'],
    });
    assert.deepEqual(renderOp({ op: 'fdb-append', dev: 'vx0', mac: '00:00:00:00:00:00', dst: '10.0.0.9' }, ctx), {
      tool: 'bridge',
      lines: ['fdb append 00:00:00:00:00:00 dev vx0 dst 10.0.0.9'],
    });
    assert.deepEqual(lines({ op: 'fdb-replace', dev: 'vx0', mac: '02:00:00:00:00:04', dst: '10.0.0.9', self: true, permanent: true }), [
      'fdb replace 02:00:00:00:00:04 dev vx0 dst 10.0.0.9 self permanent',
    ]);
    assert.deepEqual(lines({ op: 'fdb-del', dev: 'vx0', mac: '00:00:00:00:00:00', dst: '10.0.0.9' }), ['fdb del 00:00:00:00:00:00 dev vx0 dst 10.0.0.9']);
  });

  it('rejects malformed values with kind invalid', () => {
    const bad: KernelOp[] = [
      { op: 'link-add', spec: { kind: 'bridge', name: 'sixteen-chars-xx' } },
      { op: 'link-del', name: 'a b' },
      { op: 'addr-add', dev: 'e', cidr: 'nope' },
      { op: 'addr-add', dev: 'e', cidr: 'fe80::1%eth0/64' },
      { op: 'neigh-replace', dev: 'e', dst: '10.0.0.1', lladdr: '02:00:00:00:00' },
      { op: 'link-add', spec: { kind: 'vxlan', name: 'v', vni: 1 << 24, dstport: 4789 } },
      { op: 'link-set', name: 'e', mtu: 10 },
      { op: 'route-add', route: { dst: '10.0.0.0/8', proto: 'x y' } },
      { op: 'link-add', spec: { kind: 'veth', name: 'a', peer: { name: 'b', netns: { kind: 'name', name: 'a/b' } } } },
      { op: 'nope' } as unknown as KernelOp,
    ];
    for (const op of bad) assert.throws(() => renderOp(op, ctx), (e) => e instanceof KernelError && e.kind === 'invalid', JSON.stringify(op));
  });
});

describe('batch scripts', () => {
  const items: BatchItem[] = [
    { index: 0, op: { op: 'link-del', name: 'a' }, tool: 'ip', lines: ['link del dev a'] },
    { index: 1, op: { op: 'link-add', spec: { kind: 'tun', name: 't', mtu: 1400 } }, tool: 'ip', lines: ['tuntap add name t mode tun', 'link set dev t mtu 1400'] },
    { index: 2, op: { op: 'neigh-del', dev: 'e', dst: '10.0.0.1' }, tool: 'ip', lines: ['neigh del 10.0.0.1 dev e'] },
  ];

  it('interleaves markers and maps lines back to items', () => {
    const s = buildBatchScript(items, true);
    assert.equal(s.input, 'link show dev lo\nlink del dev a\nlink show dev lo\ntuntap add name t mode tun\nlink set dev t mtu 1400\nlink show dev lo\nneigh del 10.0.0.1 dev e\n');
    assert.deepEqual(s.lineToItem.slice(1), [0, 0, 1, 1, 1, 2, 2]);
    assert.equal(buildBatchScript(items, false).input, 'link del dev a\ntuntap add name t mode tun\nlink set dev t mtu 1400\nneigh del 10.0.0.1 dev e\n');
  });

  it('locates a failure from "Command failed -:N", else from the markers seen', () => {
    const s = buildBatchScript(items, true);
    assert.equal(locateBatchFailure('', 'Error: x\nCommand failed -:5\n', s, true), 1);
    const lo = '1: lo: <LOOPBACK> mtu 65536 qdisc noop state DOWN mode DEFAULT group default qlen 1000\n    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n';
    assert.equal(locateBatchFailure(lo + lo + lo, 'RTNETLINK answers: No such file or directory\n', s, true), 2);
    assert.equal(locateBatchFailure('', 'garbage\n', buildBatchScript(items, false), false), undefined);
  });
});

describe('sysctlPath', () => {
  it('maps dotted and slashed keys, rejects escapes', () => {
    assert.equal(sysctlPath('net.ipv4.ip_forward'), '/proc/sys/net/ipv4/ip_forward');
    assert.equal(sysctlPath('net/ipv4/conf/eth0.5/rp_filter'), '/proc/sys/net/ipv4/conf/eth0.5/rp_filter');
    for (const k of ['net..ipv4', 'net/../../etc', 'net ipv4', 'net.ipv4.x=1', '', '.net']) assert.throws(() => sysctlPath(k), KernelError, k);
  });
});
