// The BGP-4 codec against hand-computed octets (RFC 4271 4, RFC 5492, RFC 4760, RFC 4724, RFC 6793)
// and each NOTIFICATION code/subcode the RFCs prescribe for a malformed message.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MessageReader,
  decodeMessage,
  encodeEndOfRib,
  encodeKeepalive,
  encodeNotification,
  encodeOpen,
  encodeRouteRefresh,
  encodeUpdate,
  encodeUpdates,
  encodeWithdrawals,
} from '../../src/agent/bgp/codec.js';
import { BgpError, MsgType, endOfRib, type OpenMsg, type SessionCodecContext, type UpdateMsg } from '../../src/agent/bgp/messages.js';
import { formatIPv6 } from '../../src/agent/bgp/prefix.js';
import { formatIP, tryParseIP } from '../../src/util/ip.js';

const AS4: SessionCodecContext = { as4: true };
const AS2: SessionCodecContext = { as4: false };
const MARKER = 'ff'.repeat(16);
const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** A framed message of `type` around `body`. */
function frame(type: number, body: Buffer): Buffer {
  const h = Buffer.alloc(19, 0xff);
  h.writeUInt16BE(19 + body.length, 16);
  h[18] = type;
  return Buffer.concat([h, body]);
}
function attr(flags: number, type: number, value: Buffer | number[]): Buffer {
  const v = Buffer.from(value);
  return flags & 0x10 ? Buffer.concat([Buffer.from([flags, type, v.length >> 8, v.length & 255]), v]) : Buffer.concat([Buffer.from([flags, type, v.length]), v]);
}
/** A raw UPDATE: withdrawn routes, attributes, NLRI as given. */
function rawUpdate(attrs: Buffer[], nlri: number[] = [], withdrawn: number[] = []): Buffer {
  const a = Buffer.concat(attrs);
  const w = Buffer.from(withdrawn);
  const lens = (n: number) => Buffer.from([n >> 8, n & 255]);
  return frame(2, Buffer.concat([lens(w.length), w, lens(a.length), a, Buffer.from(nlri)]));
}
const ORIGIN_IGP = attr(0x40, 1, [0]);
const PATH2 = attr(0x40, 2, [2, 1, 0xfd, 0xe9]); // AS_SEQUENCE 65001, 2-octet
const PATH4 = attr(0x40, 2, [2, 1, 0, 0, 0xfd, 0xe9]); // AS_SEQUENCE 65001, 4-octet
const NH = attr(0x40, 3, [192, 168, 1, 1]);
const NLRI = [24, 10, 244, 1];
/** ORIGIN, AS_PATH and NEXT_HOP for the session's AS width */
const basic = (ctx: SessionCodecContext) => [ORIGIN_IGP, ctx.as4 ? PATH4 : PATH2, NH];

/** Asserts decoding throws a BgpError with this code/subcode (and data, when given). */
function rejects(msg: Buffer, ctx: SessionCodecContext, code: number, subcode: number, data?: Buffer): void {
  assert.throws(
    () => decodeMessage(msg, ctx),
    (e: unknown) => {
      assert.ok(e instanceof BgpError, `not a BgpError: ${e}`);
      assert.deepEqual([e.code, e.subcode], [code, subcode], e.message);
      if (data) assert.deepEqual(e.data, data);
      return true;
    },
  );
}
function readerRejects(bytes: Buffer, code: number, subcode: number, data?: Buffer): void {
  const r = new MessageReader();
  const check = (e: unknown) => e instanceof BgpError && e.code === code && e.subcode === subcode && (!data || e.data.equals(data));
  assert.throws(() => r.push(bytes), check);
  // no resynchronising after a header error
  assert.throws(() => r.push(encodeKeepalive()), check);
}
const update = (m: Buffer, ctx: SessionCodecContext): UpdateMsg => {
  const u = decodeMessage(m, ctx);
  assert.equal(u.type, MsgType.UPDATE);
  return u as UpdateMsg;
};
const roundTrip = (u: Omit<UpdateMsg, 'type'>, ctx: SessionCodecContext) => assert.deepEqual(decodeMessage(encodeUpdate(u, ctx), ctx), { type: MsgType.UPDATE, ...u });

// ---- known octets -----------------------------------------------------------------------------

test('KEEPALIVE is the bare 19-octet header', () => {
  assert.deepEqual(encodeKeepalive(), hex(`${MARKER} 0013 04`));
  assert.deepEqual(decodeMessage(encodeKeepalive(), AS4), { type: MsgType.KEEPALIVE });
});

const OPEN: Omit<OpenMsg, 'type'> = {
  version: 4,
  myAs: 65001,
  holdTime: 90,
  bgpId: '10.0.0.1',
  caps: {
    families: ['ipv4', 'ipv6'],
    otherFamilies: [],
    routeRefresh: true,
    enhancedRouteRefresh: false,
    as4: 65001,
    gracefulRestart: {
      restarting: false,
      notification: true,
      restartTime: 120,
      families: [
        { family: 'ipv4', forwardingPreserved: true },
        { family: 'ipv6', forwardingPreserved: false },
      ],
    },
    unknown: [],
  },
};
const OPEN_HEX = `${MARKER} 0047 01
  04 fde9 005a 0a000001 2a
  02 06  01 04 0001 00 01
  02 06  01 04 0002 00 01
  02 02  02 00
  02 0c  40 0a 4078 0001 01 80 0002 01 00
  02 06  41 04 0000fde9`;

test('OPEN: MP v4+v6, route refresh, graceful restart (N bit, F bit), 4-octet AS, each in its own parameter', () => {
  assert.deepEqual(encodeOpen(OPEN), hex(OPEN_HEX));
  assert.deepEqual(decodeMessage(hex(OPEN_HEX), AS2), { type: MsgType.OPEN, ...OPEN });
});

test('OPEN round-trips other families, enhanced route refresh, R bit and unknown capabilities', () => {
  const m: Omit<OpenMsg, 'type'> = {
    version: 4,
    myAs: 23456,
    holdTime: 0,
    bgpId: '192.0.2.255',
    caps: {
      families: ['ipv6'],
      otherFamilies: [{ afi: 1, safi: 128 }],
      routeRefresh: false,
      enhancedRouteRefresh: true,
      as4: 4200000000,
      gracefulRestart: { restarting: true, notification: false, restartTime: 4095, families: [] },
      unknown: [{ code: 73, value: Buffer.from('host') }],
    },
  };
  assert.deepEqual(decodeMessage(encodeOpen(m), AS4), { type: MsgType.OPEN, ...m });
  const bare = { ...m, caps: { families: [], otherFamilies: [], routeRefresh: false, enhancedRouteRefresh: false, unknown: [] } };
  const b = encodeOpen(bare);
  assert.equal(b.length, 29);
  assert.deepEqual(decodeMessage(b, AS4), { type: MsgType.OPEN, ...bare });
});

test('OPEN with more than 255 octets of parameters uses, and decodes, RFC 9072 extended lengths', () => {
  const unknown = Array.from({ length: 3 }, (_, i) => ({ code: 200 + i, value: Buffer.alloc(200, i) }));
  const m = { ...OPEN, caps: { ...OPEN.caps, unknown } };
  const b = encodeOpen(m);
  assert.deepEqual([b[28], b[29]], [255, 255]);
  assert.equal(b.readUInt16BE(30), b.length - 32);
  assert.deepEqual(decodeMessage(b, AS4), { type: MsgType.OPEN, ...m });
  // a small one by hand: one parameter holding route refresh, 3-octet parameter header
  const small = frame(1, hex('04 fde9 005a 0a000001 ff ff 0005 02 0002 0200'));
  assert.equal((decodeMessage(small, AS4) as OpenMsg).caps.routeRefresh, true);
});

const UPDATE: Omit<UpdateMsg, 'type'> = {
  withdrawn: [],
  attrs: { origin: 0, asPath: [{ type: 2, asns: [65001, 65002] }], nextHop: '192.168.1.1' },
  nlri: ['10.244.1.0/24', '10.244.2.0/24'],
};

test('UPDATE: ORIGIN, AS_PATH, NEXT_HOP and two prefixes, 4-octet and 2-octet sessions', () => {
  const as4 = hex(`${MARKER} 0037 02  0000 0018
    40 01 01 00
    40 02 0a 02 02 0000fde9 0000fdea
    40 03 04 c0a80101
    18 0af401  18 0af402`);
  assert.deepEqual(encodeUpdate(UPDATE, AS4), as4);
  assert.deepEqual(decodeMessage(as4, AS4), { type: MsgType.UPDATE, ...UPDATE });
  const as2 = hex(`${MARKER} 0033 02  0000 0014
    40 01 01 00
    40 02 06 02 02 fde9 fdea
    40 03 04 c0a80101
    18 0af401  18 0af402`);
  assert.deepEqual(encodeUpdate(UPDATE, AS2), as2);
  assert.deepEqual(decodeMessage(as2, AS2), { type: MsgType.UPDATE, ...UPDATE });
});

test('ROUTE-REFRESH and NOTIFICATION octets', () => {
  assert.deepEqual(encodeRouteRefresh(2, 1), hex(`${MARKER} 0017 05 0002 00 01`));
  assert.deepEqual(encodeRouteRefresh(1, 1, 2), hex(`${MARKER} 0017 05 0001 02 01`));
  assert.deepEqual(decodeMessage(encodeRouteRefresh(2, 1, 1), AS4), { type: MsgType.ROUTE_REFRESH, afi: 2, safi: 1, subtype: 1 });
  assert.deepEqual(encodeNotification(6, 2), hex(`${MARKER} 0015 03 06 02`));
  assert.deepEqual(encodeNotification(3, 4, Buffer.from([0x40, 1, 1, 0])), hex(`${MARKER} 0019 03 03 04 40010100`));
  assert.deepEqual(decodeMessage(encodeNotification(2, 1, Buffer.from([0, 4])), AS4), { type: MsgType.NOTIFICATION, code: 2, subcode: 1, data: Buffer.from([0, 4]) });
  // a NOTIFICATION echoing a whole 4096-octet message still fits
  assert.equal(encodeNotification(1, 2, Buffer.alloc(4096)).length, 4096);
});

// ---- UPDATE round trips -----------------------------------------------------------------------

test('UPDATE with every attribute round-trips on both session kinds', () => {
  for (const ctx of [AS4, AS2]) {
    roundTrip(
      {
        withdrawn: ['10.1.0.0/16', '0.0.0.0/0', '192.0.2.7/32'],
        attrs: {
          origin: 2,
          asPath: [
            { type: 2, asns: [65001, 4200000001] },
            { type: 1, asns: [65010, 65011] },
          ],
          nextHop: '10.0.0.1',
          med: 4294967295,
          localPref: 100,
          atomicAggregate: true,
          aggregator: { asn: 4200000009, address: '10.0.0.9' },
          communities: [0xfde90001, 0xffffff01],
          unknown: [{ flags: 0xc0, type: 32, value: Buffer.from('large-community') }],
        },
        nlri: ['10.244.0.0/25', '10.244.0.128/25'],
      },
      ctx,
    );
  }
});

test('IPv6 MP_REACH_NLRI with global + link-local next hops, MP_UNREACH_NLRI, IPv4 over MP', () => {
  const u: Omit<UpdateMsg, 'type'> = {
    withdrawn: [],
    attrs: { origin: 0, asPath: [] },
    nlri: [],
    mpReach: { family: 'ipv6', nextHops: ['fd00::1', 'fe80::1'], nlri: ['fd00:10:244:1::/64', '::/0', '2001:db8::1/128'] },
    mpUnreach: { family: 'ipv6', withdrawn: ['fd00:10:244:2::/64'] },
  };
  roundTrip(u, AS4);
  const b = encodeUpdate(u, AS4);
  // MP_REACH: optional non-transitive, AFI 2 SAFI 1, next hop length 32
  const at = b.indexOf(Buffer.from([0x80, 14]));
  assert.deepEqual([...b.subarray(at + 3, at + 7)], [0, 2, 1, 32]);
  roundTrip({ withdrawn: [], attrs: { origin: 0, asPath: [] }, nlri: [], mpReach: { family: 'ipv4', nextHops: ['10.0.0.1'], nlri: ['10.244.9.0/24'] } }, AS2);
  roundTrip({ withdrawn: [], attrs: {}, nlri: [], mpUnreach: { family: 'ipv4', withdrawn: ['10.244.9.0/24'] } }, AS2);
});

test('attributes go out in type-code order with the Extended Length bit only when needed', () => {
  const communities = Array.from({ length: 70 }, (_, i) => i); // 280 octets
  const b = encodeUpdate({ withdrawn: [], attrs: { communities, med: 5, origin: 1, unknown: [{ flags: 0xc0, type: 9, value: Buffer.alloc(1) }] }, nlri: [] }, AS4);
  const types: number[] = [];
  const flags: number[] = [];
  for (let p = 23; p < b.length; ) {
    flags.push(b[p]);
    types.push(b[p + 1]);
    p += b[p] & 0x10 ? 4 + b.readUInt16BE(p + 2) : 3 + b[p + 2];
  }
  assert.deepEqual(types, [1, 4, 8, 9]);
  assert.deepEqual(flags, [0x40, 0x80, 0xd0, 0xc0]);
  assert.deepEqual((decodeMessage(b, AS4) as UpdateMsg).attrs.communities, communities);
});

test('prefixes decode to canonical text, host bits cleared; attrs holds only keys that were sent', () => {
  const u = update(rawUpdate(basic(AS4), [23, 10, 244, 3, 32, 10, 0, 0, 1]), AS4);
  assert.deepEqual(u.nlri, ['10.244.2.0/23', '10.0.0.1/32']);
  assert.deepEqual(Object.keys(u.attrs).sort(), ['asPath', 'nextHop', 'origin']);
  assert.deepEqual(Object.keys(u).sort(), ['attrs', 'nlri', 'type', 'withdrawn']);
  const mp = attr(0x80, 14, [0, 2, 1, 16, 0xfd, 0, ...Array(13).fill(0), 1, 0, 64, 0xfd, 0, 0, 0x10, 2, 0x44, 0, 1, 63, 0xfd, 0, 0, 0, 0, 0, 0, 0x01]);
  const v6 = update(rawUpdate([ORIGIN_IGP, PATH4, mp]), AS4);
  assert.deepEqual(v6.mpReach, { family: 'ipv6', nextHops: ['fd00::1'], nlri: ['fd00:10:244:1::/64', 'fd00::/63'] });
  assert.equal(encodeUpdate({ withdrawn: [], attrs: {}, nlri: ['10.244.1.77/24'] }, AS4).subarray(-4).toString('hex'), '180af401');
});

test('IPv6 text is the same as util/ip formatIP writes, so prefixes compare equal as strings', () => {
  const octets = (v: bigint) => Buffer.from(v.toString(16).padStart(32, '0'), 'hex');
  const fixed = ['::', '::1', '1::', 'fd00::1:0:0:1', '1:0:0:1::', '0:1::', '::ffff:10.0.0.1', '::fffe:a00:1', '1:2:3:4:5:6:7:8', '1:0:1:0:1:0:1:0'];
  for (const t of fixed) assert.equal(formatIPv6(octets(tryParseIP(t)!.value), 0), t);
  // random addresses, most groups zero so that zero runs of every length and position turn up
  let x = 7;
  const next = () => (x = (x * 1103515245 + 12345) >>> 0) >>> 16;
  for (let i = 0; i < 5000; i++) {
    const b = Buffer.alloc(16);
    for (let g = 0; g < 8; g++) if (next() % 3 === 0) b.writeUInt16BE(next() % 4 === 0 ? 0xffff : next(), 2 * g);
    assert.equal(formatIPv6(b, 0), formatIP({ family: 6, value: BigInt(`0x${b.toString('hex')}`) }));
  }
});

test('unknown optional attributes: transitive ones kept (flags without Extended Length), others dropped', () => {
  const u = update(rawUpdate([ORIGIN_IGP, PATH4, NH, attr(0xf0, 99, [1, 2]), attr(0x80, 100, [3])], NLRI), AS4);
  assert.deepEqual(u.attrs.unknown, [{ flags: 0xe0, type: 99, value: Buffer.from([1, 2]) }]);
});

test('MP attributes of families podnet does not speak are ignored', () => {
  const vpn = attr(0x80, 14, [0, 1, 128, 4, 10, 0, 0, 1, 0, 88, 1, 2, 3]);
  const l2 = attr(0x80, 15, [0, 25, 65, 1, 2, 3]);
  const u = update(rawUpdate([ORIGIN_IGP, PATH4, vpn, l2]), AS4);
  assert.equal(u.mpReach, undefined);
  assert.equal(u.mpUnreach, undefined);
  assert.ok(!('mpReach' in u) && !('mpUnreach' in u));
});

// ---- 4-octet AS (RFC 6793) --------------------------------------------------------------------

test('2-octet session: AS_TRANS on the wire, AS4_PATH and AS4_AGGREGATOR carry the real ASNs', () => {
  const u: Omit<UpdateMsg, 'type'> = { withdrawn: [], attrs: { origin: 0, asPath: [{ type: 2, asns: [4200000001, 65002] }], nextHop: '10.0.0.1', aggregator: { asn: 4200000001, address: '10.0.0.1' } }, nlri: ['10.244.1.0/24'] };
  const b = encodeUpdate(u, AS2);
  assert.ok(b.includes(hex('40 02 06 02 02 5ba0 fdea')), 'AS_PATH with AS_TRANS');
  assert.ok(b.includes(hex('c0 11 0a 02 02 fa56ea01 0000fdea')), 'AS4_PATH');
  assert.ok(b.includes(hex('c0 07 06 5ba0 0a000001')), 'AGGREGATOR with AS_TRANS');
  assert.ok(b.includes(hex('c0 12 08 fa56ea01 0a000001')), 'AS4_AGGREGATOR');
  assert.deepEqual(decodeMessage(b, AS2), { type: MsgType.UPDATE, ...u });
  // no AS4_* when every ASN fits two octets
  assert.ok(!encodeUpdate(UPDATE, AS2).includes(Buffer.from([0xc0, 0x11])));
});

test('2-octet session: AS_PATH is rebuilt from AS4_PATH as RFC 6793 4.2.3 says', () => {
  const asPath = attr(0x40, 2, [3, 1, 0xfd, 0xe8, 2, 4, 0xfd, 0xe9, 0xfd, 0xea, 0x5b, 0xa0, 0x5b, 0xa0]); // confed(65000) seq(65001 65002 T T)
  const as4Path = attr(0xc0, 17, [2, 2, 0xfa, 0x56, 0xea, 0x01, 0xfa, 0x56, 0xea, 0x02]); // seq(4200000001 4200000002)
  const u = update(rawUpdate([ORIGIN_IGP, asPath, NH, as4Path], NLRI), AS2);
  assert.deepEqual(u.attrs.asPath, [
    { type: 3, asns: [65000] },
    { type: 2, asns: [65001, 65002, 4200000001, 4200000002] },
  ]);
  assert.ok(!('unknown' in u.attrs));
  // an AS4_PATH longer than AS_PATH is ignored
  const long = attr(0xc0, 17, [2, 5, ...Array(20).fill(1)]);
  assert.deepEqual(update(rawUpdate([ORIGIN_IGP, asPath, NH, long], NLRI), AS2).attrs.asPath?.[1].asns, [65001, 65002, 23456, 23456]);
  // a malformed AS4_PATH is discarded, not fatal
  const bad = attr(0xc0, 17, [2, 3, 0, 0, 0, 1]);
  assert.deepEqual(update(rawUpdate([ORIGIN_IGP, asPath, NH, bad], NLRI), AS2).attrs.asPath?.[1].asns, [65001, 65002, 23456, 23456]);
  // a real 2-octet AGGREGATOR means the AS4_* are stale: both ignored
  const agg = attr(0xc0, 7, [0xfd, 0xe9, 10, 0, 0, 1]);
  const agg4 = attr(0xc0, 18, [0xfa, 0x56, 0xea, 0x01, 10, 0, 0, 2]);
  const stale = update(rawUpdate([ORIGIN_IGP, asPath, NH, agg, as4Path, agg4], NLRI), AS2);
  assert.deepEqual(stale.attrs.aggregator, { asn: 65001, address: '10.0.0.1' });
  assert.deepEqual(stale.attrs.asPath?.[1].asns, [65001, 65002, 23456, 23456]);
});

test('4-octet session: AS4_PATH and AS4_AGGREGATOR are dropped unread', () => {
  const junk = attr(0x00, 17, [9]); // even bad flags and length do not matter
  const agg4 = attr(0xc0, 18, [1]);
  const u = update(rawUpdate([...basic(AS4), junk, agg4], NLRI), AS4);
  assert.deepEqual(u.attrs, { origin: 0, asPath: [{ type: 2, asns: [65001] }], nextHop: '192.168.1.1' });
});

// ---- packing, End-of-RIB ----------------------------------------------------------------------

const thousand = Array.from({ length: 1000 }, (_, i) => `10.${i >> 8}.${i & 255}.0/24`);
const thousand6 = Array.from({ length: 1000 }, (_, i) => `fd00:10:244:${(i + 1).toString(16)}::/64`);

test('encodeUpdates packs 1,000 prefixes into several UPDATEs of at most 4096 octets', () => {
  // 1,000 /24s are 4,000 octets: with 32 communities (131 octets) they need a second message
  const attrs = { origin: 0 as const, asPath: [{ type: 2 as const, asns: [65001] }], communities: Array.from({ length: 32 }, (_, i) => 0xfde90000 + i) };
  for (const [family, prefixes, hops] of [
    ['ipv4', thousand, ['10.0.0.1']],
    ['ipv6', thousand6, ['fd00::1', 'fe80::1']],
  ] as const) {
    const msgs = encodeUpdates(attrs, family, [...prefixes], [...hops], AS4);
    assert.ok(msgs.length >= 2, `${family}: ${msgs.length} messages`);
    const got: string[] = [];
    for (const m of msgs) {
      assert.ok(m.length <= 4096);
      const u = update(m, AS4);
      assert.deepEqual(u.attrs.communities, attrs.communities);
      if (family === 'ipv4') {
        assert.equal(u.attrs.nextHop, '10.0.0.1');
        got.push(...u.nlri);
      } else {
        assert.deepEqual(u.mpReach?.nextHops, hops);
        assert.ok(!('nextHop' in u.attrs));
        got.push(...u.mpReach!.nlri);
      }
    }
    assert.deepEqual(got, prefixes);
    // packed tight: the first message has no room for another prefix (4 octets for a /24, 9 for a /64)
    assert.ok(msgs[0].length > 4096 - (family === 'ipv4' ? 4 : 9) - 1, `${family}: first message ${msgs[0].length} octets`);
  }
  // with only ORIGIN, AS_PATH and NEXT_HOP the 1,000 fit one message: 19 + 4 + 20 + 4,000 octets
  const one = encodeUpdates({ origin: 0, asPath: [{ type: 2, asns: [65001] }] }, 'ipv4', thousand, ['10.0.0.1'], AS4);
  assert.deepEqual(one.map((m) => m.length), [4043]);
  assert.deepEqual(encodeUpdates(attrs, 'ipv4', [], ['10.0.0.1'], AS4), []);
});

test('encodeWithdrawals packs withdrawals per family', () => {
  const v4 = Array.from({ length: 1500 }, (_, i) => `10.${i >> 8}.${i & 255}.0/24`);
  for (const [family, prefixes] of [
    ['ipv4', v4],
    ['ipv6', thousand6],
  ] as const) {
    const msgs = encodeWithdrawals(family, [...prefixes], AS2);
    assert.ok(msgs.length >= 2, `${family}: ${msgs.length} messages`);
    const got = msgs.flatMap((m) => {
      assert.ok(m.length <= 4096);
      const u = update(m, AS2);
      assert.deepEqual(u.attrs, {});
      return family === 'ipv4' ? u.withdrawn : u.mpUnreach!.withdrawn;
    });
    assert.deepEqual(got, prefixes);
  }
  // 1,018 /24s exactly fill one: 23 + 4 * 1,018 = 4,095
  assert.equal(encodeWithdrawals('ipv4', v4.slice(0, 1018), AS4).length, 1);
  assert.equal(encodeWithdrawals('ipv4', v4.slice(0, 1019), AS4).length, 2);
});

test('an UPDATE over 4096 octets is a plain Error for the caller, not a BgpError', () => {
  assert.throws(
    () => encodeUpdate({ withdrawn: [], attrs: {}, nlri: thousand.concat(thousand) }, AS4),
    (e: unknown) => e instanceof Error && !(e instanceof BgpError) && /4096/.test(e.message),
  );
  assert.throws(() => encodeUpdates({}, 'ipv6', ['10.0.0.0/8'], ['fd00::1'], AS4), /not an ipv6 prefix/);
  assert.throws(() => encodeUpdates({}, 'ipv6', ['fd00::/8'], ['10.0.0.1'], AS4), /not an ipv6 address/);
});

test('End-of-RIB for both families decodes so that endOfRib() names the family', () => {
  const v4 = encodeEndOfRib('ipv4');
  assert.deepEqual(v4, hex(`${MARKER} 0017 02 0000 0000`));
  assert.equal(endOfRib(update(v4, AS4)), 'ipv4');
  const v6 = encodeEndOfRib('ipv6');
  assert.deepEqual(v6, hex(`${MARKER} 001d 02 0000 0006 80 0f 03 0002 01`));
  assert.equal(endOfRib(update(v6, AS2)), 'ipv6');
  assert.equal(endOfRib(update(encodeUpdate(UPDATE, AS4), AS4)), undefined);
});

// ---- framing ----------------------------------------------------------------------------------

test('MessageReader frames messages however the stream is chunked', () => {
  const msgs = [encodeKeepalive(), encodeOpen(OPEN), encodeUpdate(UPDATE, AS4), encodeUpdates({ origin: 0, asPath: [] }, 'ipv4', thousand, ['10.0.0.1'], AS4)[0], encodeNotification(6, 2)];
  const stream = Buffer.concat(msgs);
  for (const step of [1, 2, 7, 18, 19, 20, 100, 4095, 4096, 4097, stream.length]) {
    const r = new MessageReader();
    const got: Buffer[] = [];
    for (let i = 0; i < stream.length; i += step) got.push(...r.push(stream.subarray(i, i + step)));
    assert.deepEqual(got, msgs, `chunks of ${step}`);
  }
  assert.deepEqual(new MessageReader().push(Buffer.alloc(0)), []);
});

test('MessageReader header errors (RFC 4271 6.1)', () => {
  const k = encodeKeepalive();
  const bad = Buffer.from(k);
  bad[3] = 0;
  readerRejects(bad, 1, 1);
  const len = (n: number, type: number) => {
    const b = Buffer.alloc(Math.max(n, 19), 0xff);
    b.writeUInt16BE(n, 16);
    b[18] = type;
    return b;
  };
  readerRejects(len(18, 4), 1, 2, Buffer.from([0, 18]));
  readerRejects(len(4097, 2), 1, 2, Buffer.from([0x10, 0x01]));
  readerRejects(len(28, 1), 1, 2, Buffer.from([0, 28]));
  readerRejects(len(22, 2), 1, 2, Buffer.from([0, 22]));
  readerRejects(len(20, 3), 1, 2, Buffer.from([0, 20]));
  readerRejects(len(20, 4), 1, 2, Buffer.from([0, 20]));
  readerRejects(len(22, 5), 1, 2, Buffer.from([0, 22]));
  readerRejects(len(19, 6), 1, 3, Buffer.from([6]));
  readerRejects(len(19, 0), 1, 3, Buffer.from([0]));
  // the error comes as soon as the header is in, not after the announced length
  const r = new MessageReader();
  assert.throws(() => r.push(len(4000, 4).subarray(0, 19)), (e: unknown) => e instanceof BgpError && e.subcode === 2);
});

test('ROUTE-REFRESH of the wrong length: RFC 7313 error for BoRR/EoRR, bad length otherwise', () => {
  const rr = (subtype: number) => frame(5, Buffer.from([0, 1, subtype, 1, 0]));
  readerRejects(rr(1), 7, 1, rr(1));
  rejects(rr(2), AS4, 7, 1, rr(2));
  readerRejects(rr(0), 1, 2, Buffer.from([0, 24]));
  // the whole message is needed to tell: split across pushes
  const r = new MessageReader();
  assert.deepEqual(r.push(rr(1).subarray(0, 22)), []);
  assert.throws(() => r.push(rr(1).subarray(22)), (e: unknown) => e instanceof BgpError && e.code === 7);
});

test('decodeMessage checks the header too, and that the message is exactly its Length', () => {
  rejects(Buffer.concat([encodeKeepalive(), Buffer.alloc(1)]), AS4, 1, 2, Buffer.from([0, 19]));
  rejects(encodeKeepalive().subarray(0, 10), AS4, 1, 2);
  rejects(encodeUpdate(UPDATE, AS4).subarray(0, 40), AS4, 1, 2, Buffer.from([0, 0x37]));
  const m = encodeKeepalive();
  m[0] = 0xfe;
  rejects(m, AS4, 1, 1);
});

// ---- OPEN errors (RFC 4271 6.2) ---------------------------------------------------------------

test('OPEN errors', () => {
  const open = (f: (b: Buffer) => void) => {
    const b = hex(OPEN_HEX);
    f(b);
    return b;
  };
  rejects(open((b) => (b[19] = 3)), AS4, 2, 1, Buffer.from([0, 4]));
  rejects(open((b) => b.writeUInt16BE(1, 22)), AS4, 2, 6);
  rejects(open((b) => b.writeUInt16BE(2, 22)), AS4, 2, 6);
  assert.equal((decodeMessage(open((b) => b.writeUInt16BE(3, 22)), AS4) as OpenMsg).holdTime, 3);
  rejects(open((b) => b.writeUInt32BE(0, 24)), AS4, 2, 3);
  // optional parameters length says 41 of 42 octets / 43
  rejects(open((b) => (b[28] = 41)), AS4, 2, 0);
  rejects(open((b) => (b[28] = 43)), AS4, 2, 0);
  // a parameter running past the parameters
  rejects(open((b) => (b[30] = 0x30)), AS4, 2, 0);
  // a capability running past its parameter
  rejects(open((b) => (b[32] = 5)), AS4, 2, 0);
  // parameter type 1 (authentication, deprecated)
  rejects(open((b) => (b[29] = 1)), AS4, 2, 4);
  const withCap = (code: number, value: number[]) => frame(1, Buffer.from([4, 0xfd, 0xe9, 0, 90, 10, 0, 0, 1, value.length + 4, 2, value.length + 2, code, value.length, ...value]));
  rejects(withCap(1, [0, 1, 0]), AS4, 2, 0);
  rejects(withCap(65, [0, 0, 1]), AS4, 2, 0);
  rejects(withCap(64, [0, 90, 0, 1, 1]), AS4, 2, 0);
  rejects(withCap(64, [0]), AS4, 2, 0);
  assert.deepEqual((decodeMessage(withCap(128, []), AS4) as OpenMsg).caps.unknown, [{ code: 128, value: Buffer.alloc(0) }]);
  // a truncated capability header inside a parameter
  rejects(frame(1, Buffer.from([4, 0xfd, 0xe9, 0, 90, 10, 0, 0, 1, 3, 2, 1, 2])), AS4, 2, 0);
  // a lone octet after the last parameter: no room for a parameter header
  rejects(frame(1, Buffer.from([4, 0xfd, 0xe9, 0, 90, 10, 0, 0, 1, 5, 2, 2, 2, 0, 2])), AS4, 2, 0);
  // an unknown capability claiming one octet more than its parameter holds, with the octets there (in the next parameter)
  rejects(frame(1, Buffer.from([4, 0xfd, 0xe9, 0, 90, 10, 0, 0, 1, 9, 2, 3, 128, 2, 0, 2, 2, 2, 0])), AS4, 2, 0);
});

// ---- UPDATE errors (RFC 4271 6.3) -------------------------------------------------------------

test('UPDATE length errors: withdrawn or attribute lengths beyond the message, attributes beyond theirs', () => {
  const ok = rawUpdate(basic(AS4), NLRI);
  const w = Buffer.from(ok);
  w.writeUInt16BE(100, 19);
  rejects(w, AS4, 3, 1);
  const a = Buffer.from(ok);
  a.writeUInt16BE(100, 21);
  rejects(a, AS4, 3, 1);
  // attribute length running past the total attribute length
  rejects(rawUpdate([ORIGIN_IGP, Buffer.from([0x40, 2, 9, 2, 1])]), AS4, 3, 1);
  // a truncated attribute header (2 octets of 3, then 3 of 4 with Extended Length)
  rejects(rawUpdate([ORIGIN_IGP, Buffer.from([0x40, 2])]), AS4, 3, 1);
  rejects(rawUpdate([ORIGIN_IGP, Buffer.from([0x50, 2, 0])]), AS4, 3, 1);
  rejects(rawUpdate([ORIGIN_IGP, ORIGIN_IGP]), AS4, 3, 1);
});

test('UPDATE attribute flag errors carry the attribute', () => {
  const cases = [attr(0xc0, 1, [0]), attr(0x00, 2, []), attr(0x60, 3, [10, 0, 0, 1]), attr(0x40, 4, [0, 0, 0, 1]), attr(0xa0, 4, [0, 0, 0, 1]), attr(0x80, 5, [0, 0, 0, 1]), attr(0x40, 7, [0, 1, 10, 0, 0, 1]), attr(0x80, 8, [0, 0, 0, 1]), attr(0xc0, 14, [0, 1, 1, 4, 10, 0, 0, 1, 0]), attr(0x40, 15, [0, 2, 1])];
  for (const bad of cases) rejects(rawUpdate([bad]), AS2, 3, 4, bad);
  // Partial on an optional transitive attribute is fine; Extended Length is fine anywhere
  assert.deepEqual(update(rawUpdate([attr(0xe0, 8, [0, 0, 0, 1]), attr(0x50, 1, [2])]), AS4).attrs, { communities: [1], origin: 2 });
});

test('UPDATE attribute length errors carry the attribute', () => {
  for (const [ctx, bad] of [
    [AS4, attr(0x40, 1, [0, 0])],
    [AS4, attr(0x40, 3, [10, 0, 0, 1, 0])],
    [AS4, attr(0x80, 4, [0, 0, 1])],
    [AS4, attr(0x40, 5, [0, 0, 0, 0, 1])],
    [AS4, attr(0x40, 6, [1])],
    [AS4, attr(0xc0, 7, [0xfd, 0xe9, 10, 0, 0, 1])],
    [AS2, attr(0xc0, 7, [0, 0, 0xfd, 0xe9, 10, 0, 0, 1])],
    [AS4, attr(0xc0, 8, [0, 0, 1])],
  ] as const) {
    rejects(rawUpdate([bad]), ctx, 3, 5, bad);
  }
});

test('UPDATE value errors: ORIGIN, AS_PATH, NEXT_HOP, well-known, NLRI, MP attributes', () => {
  const origin = attr(0x40, 1, [3]);
  rejects(rawUpdate([origin]), AS4, 3, 6, origin);
  // AS_PATH: segment overrun, bad segment type, empty segment, 2- vs 4-octet mismatch both ways
  for (const [ctx, path] of [
    [AS4, [2, 2, 0, 0, 0, 1]],
    [AS4, [5, 1, 0, 0, 0, 1]],
    [AS4, [2, 0]],
    [AS4, [2]],
    [AS4, [2, 2, 0xfd, 0xe9, 0xfd, 0xea]],
    [AS2, [2, 1, 0, 0, 0xfd, 0xe9]],
  ] as const) {
    rejects(rawUpdate([ORIGIN_IGP, attr(0x40, 2, [...path]), NH], NLRI), ctx, 3, 11);
  }
  for (const addr of [
    [0, 0, 0, 0],
    [224, 0, 0, 5],
    [239, 1, 2, 3],
  ]) {
    const nh = attr(0x40, 3, addr);
    rejects(rawUpdate([ORIGIN_IGP, PATH4, nh], NLRI), AS4, 3, 8, nh);
  }
  const wellKnown = attr(0x40, 42, [1]);
  rejects(rawUpdate([wellKnown]), AS4, 3, 2, wellKnown);
  rejects(rawUpdate(basic(AS4), [33, 10, 0, 0, 0, 0]), AS4, 3, 10);
  rejects(rawUpdate(basic(AS4), [24, 10, 0]), AS4, 3, 10);
  rejects(rawUpdate([], [], [25, 10, 0, 0]), AS4, 3, 10);
  const mpBad = [
    attr(0x80, 14, [0, 2, 1, 4, 10, 0, 0, 1, 0]), // IPv4-length next hop for IPv6
    attr(0x80, 14, [0, 1, 1, 16, ...Array(16).fill(1), 0]), // IPv6-length next hop for IPv4
    attr(0x80, 14, [0, 2, 1, 16, 0xfd]), // next hop overruns
    attr(0x80, 14, [0, 2, 1, 16, 0xfd, ...Array(15).fill(0), 0, 129, ...Array(17).fill(0)]), // /129
    attr(0x80, 14, [0, 2]),
    attr(0x80, 15, [0, 2]),
    attr(0x80, 15, [0, 1, 1, 24, 10]),
  ];
  for (const mp of mpBad) rejects(rawUpdate([ORIGIN_IGP, PATH4, mp]), AS4, 3, 9, mp);
});

test('UPDATE missing well-known attributes name the missing type', () => {
  rejects(rawUpdate([PATH4, NH], NLRI), AS4, 3, 3, Buffer.from([1]));
  rejects(rawUpdate([ORIGIN_IGP, NH], NLRI), AS4, 3, 3, Buffer.from([2]));
  rejects(rawUpdate([ORIGIN_IGP, PATH4], NLRI), AS4, 3, 3, Buffer.from([3]));
  const mp = attr(0x80, 14, [0, 2, 1, 16, 0xfd, ...Array(14).fill(0), 1, 0, 64, 0xfd, 0, 0, 0, 0, 0, 0, 0]);
  rejects(rawUpdate([ORIGIN_IGP, mp]), AS4, 3, 3, Buffer.from([2]));
  // MP_REACH needs no NEXT_HOP; withdrawals need nothing
  assert.deepEqual(update(rawUpdate([ORIGIN_IGP, PATH4, mp]), AS4).mpReach?.nlri, ['fd00::/64']);
  assert.deepEqual(update(rawUpdate([], [], [8, 10]), AS4).withdrawn, ['10.0.0.0/8']);
});
