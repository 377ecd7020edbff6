// Encoders and decoders the netlink adapter added on top of the benchmark's client: IPv6, address
// flags, route attributes, bridge port hairpin, link changes; and errno classification.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as C from '../../src/kernel/netlink/constants.js';
import * as M from '../../src/kernel/netlink/message.js';
import { classifyErrno, implemented } from '../../src/kernel/netlink-adapter.js';

const body = (m: Buffer, fixed: number): Map<number, Buffer> => M.parseAttrs(m.subarray(16 + fixed));

test('IPv6 text ↔ bytes, formatted like inet_ntop', () => {
  for (const [txt, want] of [
    ['fd60::1', 'fd60::1'],
    ['fd60:0:0:0:0:0:a:1', 'fd60::a:1'],
    ['::', '::'],
    ['::1', '::1'],
    ['fe80::ff:fe00:b001', 'fe80::ff:fe00:b001'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:db8:1:2:3:4:5:6', '2001:db8:1:2:3:4:5:6'],
    ['::ffff:10.0.0.1', '::ffff:10.0.0.1'],
    ['1::', '1::'],
    ['FD00::ABCD', 'fd00::abcd'],
  ]) {
    const b = M.ipv6Bytes(txt);
    assert.equal(b.length, 16);
    assert.equal(M.formatIp(b), want, txt);
  }
  assert.throws(() => M.ipv6Bytes('1::2::3'));
  assert.throws(() => M.ipv6Bytes('1:2:3:4:5:6:7'));
  assert.throws(() => M.ipv6Bytes('g::1'));
  assert.equal(M.formatIp(Buffer.from([10, 0, 0, 1])), '10.0.0.1');
});

test('addr-add with nodad + noprefixroute sends IFA_FLAGS; replace uses NLM_F_REPLACE', () => {
  const m = M.addrMsg(1, C.RTM_NEWADDR, { index: 3, address: 'fd60::1', prefixLen: 64, flags: C.IFA_F_NODAD | C.IFA_F_NOPREFIXROUTE, replace: true });
  assert.equal(m.readUInt16LE(4), C.RTM_NEWADDR);
  const flags = m.readUInt16LE(6);
  assert.equal(flags & C.NLM_F_REPLACE, C.NLM_F_REPLACE);
  assert.equal(flags & C.NLM_F_EXCL & ~C.NLM_F_REPLACE, 0);
  assert.equal(m[16], C.AF_INET6);
  assert.equal(m[17], 64);
  assert.equal(m[18], C.IFA_F_NODAD); // low byte of the flags
  assert.equal(m.readUInt32LE(20), 3);
  const a = body(m, C.IFADDRMSG_LEN);
  assert.equal(M.formatIp(a.get(C.IFA_LOCAL)!), 'fd60::1');
  assert.equal(a.get(C.IFA_FLAGS)!.readUInt32LE(0), C.IFA_F_NODAD | C.IFA_F_NOPREFIXROUTE);
  const plain = M.addrMsg(2, C.RTM_NEWADDR, { index: 3, address: '10.0.0.1', prefixLen: 24 });
  assert.equal(plain.readUInt16LE(6), C.NLM_F_REQUEST | C.NLM_F_ACK | C.NLM_F_CREATE | C.NLM_F_EXCL);
  assert.equal(body(plain, C.IFADDRMSG_LEN).has(C.IFA_FLAGS), false);
});

test('route message: table above 255 in RTA_TABLE only, metrics nested, onlink flag, prefsrc, priority', () => {
  const m = M.routeMsg(1, C.RTM_NEWROUTE, {
    family: C.AF_INET,
    dst: '10.61.0.5',
    dstLen: 32,
    gateway: '169.254.1.1',
    oif: 7,
    prefsrc: '10.60.0.1',
    priority: 20,
    table: 1000,
    protocol: C.RTPROT_BOOT,
    scope: C.RT_SCOPE_UNIVERSE,
    type: C.RTN_UNICAST,
    onlink: true,
    mtu: 1400,
    advmss: 1360,
  });
  const r = m.subarray(16, 16 + C.RTMSG_LEN);
  assert.deepEqual([...r.subarray(0, 8)], [C.AF_INET, 32, 0, 0, C.RT_TABLE_UNSPEC, C.RTPROT_BOOT, C.RT_SCOPE_UNIVERSE, C.RTN_UNICAST]);
  assert.equal(r.readUInt32LE(8), C.RTNH_F_ONLINK);
  const a = body(m, C.RTMSG_LEN);
  assert.equal(a.get(C.RTA_TABLE)!.readUInt32LE(0), 1000);
  assert.equal(M.formatIp(a.get(C.RTA_DST)!), '10.61.0.5');
  assert.equal(M.formatIp(a.get(C.RTA_GATEWAY)!), '169.254.1.1');
  assert.equal(M.formatIp(a.get(C.RTA_PREFSRC)!), '10.60.0.1');
  assert.equal(a.get(C.RTA_PRIORITY)!.readUInt32LE(0), 20);
  assert.equal(a.get(C.RTA_OIF)!.readUInt32LE(0), 7);
  const metrics = M.parseAttrs(a.get(C.RTA_METRICS)!);
  assert.equal(metrics.get(C.RTAX_MTU)!.readUInt32LE(0), 1400);
  assert.equal(metrics.get(C.RTAX_ADVMSS)!.readUInt32LE(0), 1360);
  // a default route carries no RTA_DST; a delete asks for no creation
  const d = M.routeMsg(2, C.RTM_DELROUTE, { family: C.AF_INET6, dstLen: 0, table: 254, protocol: 0, scope: C.RT_SCOPE_UNIVERSE, type: C.RTN_UNSPEC });
  assert.equal(d.readUInt16LE(6), C.NLM_F_REQUEST | C.NLM_F_ACK);
  assert.equal(d[16 + 4], 254);
  assert.equal(body(d, C.RTMSG_LEN).has(C.RTA_DST), false);
});

test('hairpin is RTM_SETLINK AF_BRIDGE with a nested IFLA_PROTINFO{IFLA_BRPORT_MODE}', () => {
  const m = M.bridgePortHairpin(1, 9, true);
  assert.equal(m.readUInt16LE(4), C.RTM_SETLINK);
  assert.equal(m[16], C.AF_BRIDGE);
  assert.equal(m.readInt32LE(20), 9);
  const raw = m.subarray(32);
  assert.equal(raw.readUInt16LE(2), C.IFLA_PROTINFO | C.NLA_F_NESTED);
  const mode = M.parseAttrs(M.parseAttrs(raw).get(C.IFLA_PROTINFO)!).get(C.IFLA_BRPORT_MODE)!;
  assert.deepEqual([...mode], [1]);
});

test('link change: up and promisc in flags/change, alias without NUL, master 0 releases, rename', () => {
  const m = M.changeLink(1, { index: 4, up: true, promisc: false, alias: 'owner x', master: 0, name: 'eth1', mac: '02:00:00:00:00:a1', mtu: 1300 });
  const ifi = m.subarray(16, 32);
  assert.equal(ifi.readInt32LE(4), 4);
  assert.equal(ifi.readUInt32LE(8), C.IFF_UP);
  assert.equal(ifi.readUInt32LE(12), C.IFF_UP | C.IFF_PROMISC);
  const a = body(m, C.IFINFOMSG_LEN);
  assert.equal(a.get(C.IFLA_IFALIAS)!.toString(), 'owner x');
  assert.equal(a.get(C.IFLA_MASTER)!.readUInt32LE(0), 0);
  assert.equal(a.get(C.IFLA_IFNAME)!.toString(), 'eth1\0');
  assert.equal(a.get(C.IFLA_MTU)!.readUInt32LE(0), 1300);
  assert.deepEqual([...a.get(C.IFLA_ADDRESS)!], [2, 0, 0, 0, 0, 0xa1]);
});

test('macvlan creation: IFLA_LINK parent, IFLA_NET_NS_FD, mode in IFLA_INFO_DATA', () => {
  const m = M.newLink(1, { name: 'mv0', kind: 'macvlan', link: 5, netnsFd: 12, mtu: 1400, data: [M.attrU32(C.IFLA_MACVLAN_MODE, C.MACVLAN_MODES.bridge)] });
  const a = body(m, C.IFINFOMSG_LEN);
  assert.equal(a.get(C.IFLA_LINK)!.readUInt32LE(0), 5);
  assert.equal(a.get(C.IFLA_NET_NS_FD)!.readUInt32LE(0), 12);
  const li = M.parseAttrs(a.get(C.IFLA_LINKINFO)!);
  assert.equal(li.get(C.IFLA_INFO_KIND)!.toString(), 'macvlan');
  assert.equal(M.parseAttrs(li.get(C.IFLA_INFO_DATA)!).get(C.IFLA_MACVLAN_MODE)!.readUInt32LE(0), 4);
});

test('parseLink reads operstate, alias, IFLA_LINK + netnsid and bridge port hairpin', () => {
  const slave = M.nest(C.IFLA_INFO_SLAVE_DATA, M.attrU8(C.IFLA_BRPORT_MODE, 1));
  const data = Buffer.concat([
    M.ifinfomsg({ index: 9, flags: C.IFF_UP | C.IFF_PROMISC }),
    M.attrStr(C.IFLA_IFNAME, 'veth1'),
    M.attrU8(C.IFLA_OPERSTATE, 6),
    M.attr(C.IFLA_IFALIAS, Buffer.from('podnet:a:b:c')),
    M.attrU32(C.IFLA_LINK, 2),
    M.attrU32(C.IFLA_LINK_NETNSID, 0),
    M.nest(C.IFLA_LINKINFO, M.attr(C.IFLA_INFO_KIND, Buffer.from('veth')), M.attrStr(C.IFLA_INFO_SLAVE_KIND, 'bridge'), slave),
  ]);
  const l = M.parseLink(data);
  assert.equal(l.operState, 6);
  assert.equal(l.alias, 'podnet:a:b:c');
  assert.equal(l.link, 2);
  assert.equal(l.linkNetnsId, 0);
  assert.equal(l.kind, 'veth');
  assert.equal(l.slaveKind, 'bridge');
  assert.equal(l.hairpin, true);
});

test('errno classification matches the iproute2 adapter classes', () => {
  assert.equal(classifyErrno(17), 'exists');
  for (const e of [2, 3, 19, 99]) assert.equal(classifyErrno(e), 'not-found');
  assert.equal(classifyErrno(16), 'busy');
  assert.equal(classifyErrno(95), 'unsupported');
  assert.equal(classifyErrno(22), 'invalid');
  assert.equal(classifyErrno(1, 'Operation not permitted'), 'other');
});

test('which ops the netlink path implements (the rest go to iproute2)', () => {
  assert.equal(implemented({ op: 'link-add', spec: { kind: 'veth', name: 'a', peer: { name: 'b' } } }), true);
  assert.equal(implemented({ op: 'link-add', spec: { kind: 'macvlan', name: 'a', master: 'e', mode: 'bridge' } }), true);
  assert.equal(implemented({ op: 'link-add', spec: { kind: 'vxlan', name: 'a', vni: 1, dstport: 4789 } }), false);
  assert.equal(implemented({ op: 'link-add', spec: { kind: 'tun', name: 'a' } }), false);
  assert.equal(implemented({ op: 'link-set', name: 'a', netns: { kind: 'name', name: 'x' } }), false);
  assert.equal(implemented({ op: 'link-set', name: 'a', hairpin: true }), true);
  assert.equal(implemented({ op: 'addr-del', dev: 'a', cidr: '10.0.0.1' }), false);
  assert.equal(implemented({ op: 'route-add', route: { dst: 'default', gateway: '10.0.0.1', proto: 'static' } }), true);
  assert.equal(implemented({ op: 'route-add', route: { dst: 'default', gateway: '10.0.0.1', proto: 'mything' } }), false);
  // neighbours and the vxlan device's own FDB entries go through netlink; a bridge's (master) FDB does not
  assert.equal(implemented({ op: 'neigh-del', dev: 'a', dst: '10.0.0.1' }), true);
  assert.equal(implemented({ op: 'fdb-del', dev: 'a', mac: '02:00:00:00:00:01' }), true);
  assert.equal(implemented({ op: 'fdb-replace', dev: 'a', mac: '02:00:00:00:00:01', dst: '10.0.0.2', self: true, permanent: true }), true);
  assert.equal(implemented({ op: 'fdb-replace', dev: 'a', mac: '02:00:00:00:00:01', master: true }), false);
});
