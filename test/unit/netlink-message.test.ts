// The rtnetlink encoder of bench/netlink against the bytes iproute2 6.1 sends for the same requests
// (captured with `strace -e trace=sendmsg -xx ip ...`, seq set to 0), and the decoders.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as C from '../../src/kernel/netlink/constants.js';
import * as M from '../../src/kernel/netlink/message.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\\x/g, ''), 'hex');
/** nlmsghdr with seq 0 and pid 0 */
function hdr(len: number, type: number, flags: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32LE(len, 0);
  b.writeUInt16LE(type, 4);
  b.writeUInt16LE(flags, 6);
  return b;
}
const CREATE = C.NLM_F_REQUEST | C.NLM_F_ACK | C.NLM_F_CREATE | C.NLM_F_EXCL;

test('RTM_NEWADDR matches `ip addr add 10.99.0.5/24 dev lo`', () => {
  const want = Buffer.concat([hdr(40, C.RTM_NEWADDR, CREATE), hex('\\x02\\x18\\x00\\x00\\x01\\x00\\x00\\x00\\x08\\x00\\x02\\x00\\x0a\\x63\\x00\\x05\\x08\\x00\\x01\\x00\\x0a\\x63\\x00\\x05')]);
  assert.deepEqual(M.newAddr4(0, { index: 1, address: '10.99.0.5', prefixLen: 24 }), want);
});

test('RTM_NEWROUTE matches `ip route add default via 10.99.0.5 dev lo`', () => {
  const want = Buffer.concat([hdr(44, C.RTM_NEWROUTE, CREATE), hex('\\x02\\x00\\x00\\x00\\xfe\\x03\\x00\\x01\\x00\\x00\\x00\\x00\\x08\\x00\\x05\\x00\\x0a\\x63\\x00\\x05\\x08\\x00\\x04\\x00\\x01\\x00\\x00\\x00')]);
  assert.deepEqual(M.newRoute4(0, { gateway: '10.99.0.5', oif: 1 }), want);
});

test('RTM_NEWLINK veth matches `ip link add vethab type veth peer name eth0 netns NS` (netns fd 4)', () => {
  const want = Buffer.concat([
    hdr(100, C.RTM_NEWLINK, CREATE),
    hex(
      '\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x0b\\x00\\x03\\x00\\x76\\x65\\x74\\x68\\x61\\x62\\x00\\x00\\x38\\x00\\x12\\x00\\x08\\x00\\x01\\x00\\x76\\x65\\x74\\x68\\x2c\\x00\\x02\\x00\\x28\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x08\\x00\\x1c\\x00\\x04\\x00\\x00\\x00\\x09\\x00\\x03\\x00\\x65\\x74\\x68\\x30\\x00\\x00\\x00\\x00',
    ),
  ]);
  assert.deepEqual(M.newVeth(0, { name: 'vethab', peerName: 'eth0', peerNetnsFd: 4 }), want);
});

test('attributes are padded to 4 bytes and rta_len excludes the padding', () => {
  const a = M.attrStr(C.IFLA_IFNAME, 'eth0'); // 4 + 5 = 9, padded to 12
  assert.equal(a.length, 12);
  assert.equal(a.readUInt16LE(0), 9);
  assert.equal(a.readUInt16LE(2), C.IFLA_IFNAME);
  assert.deepEqual([...a.subarray(9)], [0, 0, 0]);
  const m = M.setLink(7, { name: 'veth0', master: 3, up: true });
  assert.equal(m.length % 4, 0);
  assert.equal(m.readUInt32LE(0), m.length);
  assert.equal(m.readUInt32LE(8), 7);
  const ifi = m.subarray(16, 32);
  assert.equal(ifi.readUInt32LE(8), C.IFF_UP); // flags
  assert.equal(ifi.readUInt32LE(12), C.IFF_UP); // change
  const attrs = M.parseAttrs(m.subarray(32));
  assert.equal(attrs.get(C.IFLA_IFNAME)!.toString(), 'veth0\0');
  assert.equal(attrs.get(C.IFLA_MASTER)!.readUInt32LE(0), 3);
});

test('set link down changes only IFF_UP; no up/down leaves flags alone', () => {
  const down = M.setLink(1, { index: 5, up: false }).subarray(16, 32);
  assert.equal(down.readInt32LE(4), 5);
  assert.equal(down.readUInt32LE(8), 0);
  assert.equal(down.readUInt32LE(12), C.IFF_UP);
  const none = M.setLink(1, { index: 5, master: 0 }).subarray(16, 32);
  assert.equal(none.readUInt32LE(12), 0);
});

test('parseMessages + parseAck decode an error with an extended ack message', () => {
  const tlv = M.attrStr(C.NLMSGERR_ATTR_MSG, 'Device busy');
  const payload = Buffer.alloc(4 + 16);
  payload.writeInt32LE(-17, 0); // -EEXIST, then the capped request header
  const body = Buffer.concat([payload, tlv]);
  const h = hdr(16 + body.length, C.NLMSG_ERROR, C.NLM_F_CAPPED | C.NLM_F_ACK_TLVS);
  h.writeUInt32LE(42, 8);
  const ok = hdr(36, C.NLMSG_ERROR, C.NLM_F_CAPPED);
  ok.writeUInt32LE(43, 8);
  const msgs = M.parseMessages(Buffer.concat([h, body, ok, Buffer.alloc(20)]));
  assert.equal(msgs.length, 2);
  assert.deepEqual(M.parseAck(msgs[0]), { seq: 42, errno: 17, extMsg: 'Device busy' });
  assert.deepEqual(M.parseAck(msgs[1]), { seq: 43, errno: 0 });
  assert.equal(M.errnoName(17), 'EEXIST');
  assert.equal(M.errnoName(19), 'ENODEV');
});

test('parseLink reads index, name, MAC, master and kind', () => {
  const mac = M.attr(C.IFLA_ADDRESS, Buffer.from([0x02, 0xaa, 0, 1, 0xfe, 0x10]));
  const data = Buffer.concat([
    M.ifinfomsg({ index: 9, flags: C.IFF_UP }),
    M.attrStr(C.IFLA_IFNAME, 'eth0'),
    mac,
    M.attrU32(C.IFLA_MTU, 1450),
    M.attrU32(C.IFLA_MASTER, 2),
    M.attr(C.IFLA_LINKINFO | C.NLA_F_NESTED, M.attr(C.IFLA_INFO_KIND, Buffer.from('veth'))),
  ]);
  assert.deepEqual(M.parseLink(data), { index: 9, flags: C.IFF_UP, name: 'eth0', mac: '02:aa:00:01:fe:10', mtu: 1450, master: 2, kind: 'veth' });
});

test('ipv4Bytes rejects malformed addresses', () => {
  assert.deepEqual([...M.ipv4Bytes('10.99.0.1')], [10, 99, 0, 1]);
  assert.throws(() => M.ipv4Bytes('10.99.0'));
  assert.throws(() => M.ipv4Bytes('10.99.0.256'));
});
