// Fuzzing the BGP codec: whatever octets a peer sends, decoding either yields a message or throws
// a BgpError naming a NOTIFICATION (code 1..7) — never a RangeError/TypeError, never a hang — and
// decoded prefixes are canonical CIDR text. Deterministic: the seed is printed, and BGP_FUZZ_SEED
// replays a failure.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MessageReader, decodeMessage, encodeEndOfRib, encodeKeepalive, encodeNotification, encodeOpen, encodeRouteRefresh, encodeUpdate, encodeWithdrawals } from '../../src/agent/bgp/codec.js';
import { BgpError, MsgType, type BgpMessage, type OpenMsg, type SessionCodecContext, type UpdateMsg } from '../../src/agent/bgp/messages.js';
import { formatCidr, masked, tryParseCidr, tryParseIP } from '../../src/util/ip.js';

const SEED = process.env.BGP_FUZZ_SEED ? Number(process.env.BGP_FUZZ_SEED) >>> 0 : 0x5eedb69;
console.log(`bgp codec fuzz seed ${SEED} (replay with BGP_FUZZ_SEED=${SEED})`);
const CASES = 3000;
const CTXS: SessionCodecContext[] = [{ as4: true }, { as4: false }];

/** mulberry32: small, fast, good enough to explore a decoder */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = prng(SEED);
const int = (n: number) => Math.floor(rand() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)];
// octets that mean something in BGP (lengths, flags, types) turn up far more often than chance
const INTERESTING = [0, 1, 2, 3, 4, 5, 6, 8, 14, 15, 16, 17, 18, 24, 32, 64, 65, 0x40, 0x50, 0x80, 0x90, 0xc0, 0xd0, 0xe0, 0xff, 128, 129];
const octet = () => (rand() < 0.3 ? pick(INTERESTING) : int(256));
const octets = (n: number) => Buffer.from(Array.from({ length: n }, octet));

function frame(type: number, body: Buffer, len = 19 + body.length): Buffer {
  const b = Buffer.concat([Buffer.alloc(19, 0xff), body]);
  b.writeUInt16BE(len & 0xffff, 16);
  b[18] = type;
  return b;
}

// ---- the property -----------------------------------------------------------------------------

function isCanonicalPrefix(p: unknown, family: 4 | 6): boolean {
  const c = typeof p === 'string' ? tryParseCidr(p) : undefined;
  return !!c && c.family === family && formatCidr(masked(c)) === p;
}

function checkUpdate(u: UpdateMsg): void {
  for (const p of [...u.withdrawn, ...u.nlri]) assert.ok(isCanonicalPrefix(p, 4), `bad IPv4 prefix ${p}`);
  for (const [r, ps] of [
    [u.mpReach, u.mpReach?.nlri],
    [u.mpUnreach, u.mpUnreach?.withdrawn],
  ] as const) {
    if (!r) continue;
    for (const p of ps ?? []) assert.ok(isCanonicalPrefix(p, r.family === 'ipv4' ? 4 : 6), `bad ${r.family} prefix ${p}`);
  }
  for (const h of u.mpReach?.nextHops ?? []) assert.ok(tryParseIP(h), `bad next hop ${h}`);
  for (const [k, v] of Object.entries(u.attrs)) assert.notEqual(v, undefined, `attrs.${k} is undefined`);
  if (u.attrs.nextHop !== undefined) assert.ok(tryParseIP(u.attrs.nextHop));
}

/**
 * Decoded, encoded and decoded again gives the same message, on a 4-octet session where no AS4_*
 * merging reshapes paths. And decoding only normalises or drops, so re-encoding an UPDATE is never
 * longer than what came in: a decoder reading past a field's end (which yields undefined, not an
 * exception) would invent octets and fail this.
 */
function checkRoundTrip(m: BgpMessage, input: Buffer): void {
  const ctx = { as4: true };
  let again: Buffer;
  try {
    if (m.type === MsgType.UPDATE) again = encodeUpdate(m, ctx);
    else if (m.type === MsgType.OPEN) again = encodeOpen(m);
    else return;
  } catch (e) {
    // the one legitimate refusal: one parameter per capability can push an OPEN past 4096 octets
    assert.ok(m.type === MsgType.OPEN && !(e instanceof BgpError) && /4096/.test(String(e)), `re-encoding failed: ${e}`);
    return;
  }
  if (m.type === MsgType.UPDATE) assert.ok(again.length <= input.length, `re-encoded ${again.length} octets from ${input.length}`);
  const want = m.type === MsgType.UPDATE && m.attrs.communities?.length === 0 ? { ...m, attrs: withoutCommunities(m.attrs) } : m;
  assert.deepEqual(decodeMessage(again, ctx), want);
}
function withoutCommunities(a: UpdateMsg['attrs']): UpdateMsg['attrs'] {
  const { communities: _empty, ...rest } = a;
  return rest;
}

/** 'ok' or the NOTIFICATION code/subcode: what a decode of `bytes` came to. */
function decodeChecked(bytes: Buffer, ctx: SessionCodecContext): string {
  let m: BgpMessage;
  try {
    m = decodeMessage(bytes, ctx);
  } catch (e) {
    // messages built only on failure: a source-mapped stack costs more than the decode
    if (!(e instanceof BgpError)) assert.fail(`not a BgpError: ${e instanceof Error ? e.stack : e}`);
    if (!(e.code >= 1 && e.code <= 7) || !Buffer.isBuffer(e.data)) assert.fail(`BgpError ${e.code}/${e.subcode} data ${e.data}`);
    return `${e.code}/${e.subcode}`;
  }
  assert.ok(m.type >= 1 && m.type <= 5);
  if (m.type === MsgType.UPDATE) checkUpdate(m);
  if (m.type === MsgType.OPEN) assert.ok(tryParseIP((m as OpenMsg).bgpId));
  if (ctx.as4) checkRoundTrip(m, bytes);
  return 'ok';
}

/** The reader's result on `stream`: the framed messages, then the error if one came. */
function frameAll(stream: Buffer, cuts: number[]): { msgs: Buffer[]; error?: string } {
  const r = new MessageReader();
  const msgs: Buffer[] = [];
  let at = 0;
  for (const cut of [...cuts, stream.length]) {
    try {
      msgs.push(...r.push(stream.subarray(at, cut)));
    } catch (e) {
      if (!(e instanceof BgpError && e.code >= 1 && e.code <= 7)) assert.fail(`reader threw ${e instanceof Error ? e.stack : e}`);
      return { msgs, error: `${e.code}/${e.subcode}` };
    }
    at = cut;
  }
  return { msgs };
}

const KEEPALIVE = encodeKeepalive();

/** Checks one input through decodeMessage and through MessageReader, whole and in random chunks. */
function check(bytes: Buffer, what: string): void {
  try {
    for (const ctx of CTXS) decodeChecked(bytes, ctx);
    // between two KEEPALIVEs, so framing resumes (or fails) mid-stream
    const stream = Buffer.concat([KEEPALIVE, bytes, KEEPALIVE]);
    const cuts = Array.from({ length: int(6) }, () => int(stream.length + 1)).sort((a, b) => a - b);
    if (rand() < 0.1) cuts.splice(0, cuts.length, ...Array.from({ length: stream.length - 1 }, (_, i) => i + 1));
    const whole = frameAll(stream, []);
    const chunked = frameAll(stream, cuts);
    // how the stream is cut never changes where the messages or the error are
    assert.equal(chunked.error, whole.error);
    if (!whole.error) assert.deepEqual(chunked.msgs, whole.msgs);
    for (const m of chunked.msgs) {
      assert.equal(m.readUInt16BE(16), m.length);
      for (const ctx of CTXS) decodeChecked(m, ctx);
    }
  } catch (e) {
    throw new Error(`${what}: ${bytes.toString('hex')} (seed ${SEED})\n${e instanceof Error ? e.stack : e}`);
  }
}

// ---- inputs -----------------------------------------------------------------------------------

/** Random lengths around each type's limits; mostly valid ones so the body gets read. */
function randomLength(type: number): number {
  if (rand() < 0.05) return int(4200);
  switch (type) {
    case MsgType.OPEN:
      return 29 + int(rand() < 0.9 ? 120 : 4068);
    case MsgType.UPDATE:
      return 23 + int(rand() < 0.9 ? 200 : 4074);
    case MsgType.NOTIFICATION:
      return 21 + int(60);
    case MsgType.KEEPALIVE:
      return 19 + (rand() < 0.8 ? 0 : int(8));
    default:
      return 23 + (rand() < 0.8 ? 0 : int(8) - 4);
  }
}

/** Random attributes with consistent headers, so the attribute decoders see random values. */
function framedAttributes(): Buffer {
  const parts: Buffer[] = [];
  for (let n = int(6); n > 0; n--) {
    const type = rand() < 0.7 ? pick([1, 2, 3, 4, 5, 6, 7, 8, 14, 15, 17, 18]) : int(256);
    const flags = rand() < 0.7 ? pick([0x40, 0x80, 0xc0, 0xe0]) : int(256) & 0xe0;
    const value = octets(pick([0, 1, 4, 6, 8, int(40)]));
    parts.push(Buffer.from([flags, type, value.length]), value);
  }
  return Buffer.concat(parts);
}

function randomUpdateBody(): Buffer {
  const w = rand() < 0.5 ? Buffer.alloc(0) : octets(int(12));
  const a = framedAttributes();
  const lens = (n: number) => Buffer.from([n >> 8, n & 0xff]);
  return Buffer.concat([lens(w.length), w, lens(a.length), a, octets(int(16))]);
}

function randomOpenBody(): Buffer {
  const caps: Buffer[] = [];
  for (let n = int(5); n > 0; n--) {
    const value = octets(pick([0, 2, 4, 6, int(20)]));
    caps.push(Buffer.from([rand() < 0.7 ? pick([1, 2, 64, 65, 70]) : int(256), value.length]), value);
  }
  const param = Buffer.concat(caps);
  const params = Buffer.concat([Buffer.from([rand() < 0.9 ? 2 : int(256), param.length]), param]);
  const fixed = Buffer.from([4, int(256), int(256), 0, pick([0, 1, 3, 90]), 10, 0, 0, 1 + int(2), params.length]);
  return Buffer.concat([fixed, params]);
}

function randomMessage(type: number): Buffer {
  // half of OPENs and UPDATEs framed well inside, so decoding reaches the parameters and attributes
  if (type === MsgType.UPDATE && rand() < 0.5) return frame(type, randomUpdateBody());
  if (type === MsgType.OPEN && rand() < 0.5) return frame(type, randomOpenBody());
  const len = randomLength(type);
  const body = octets(Math.max(0, len - 19));
  return frame(type, body, rand() < 0.95 ? len : int(65536));
}

const as2 = { as4: false };
const as4 = { as4: true };
const SEEDS: Record<string, Buffer[]> = {
  OPEN: [
    encodeOpen({
      version: 4,
      myAs: 23456,
      holdTime: 90,
      bgpId: '10.0.0.1',
      caps: {
        families: ['ipv4', 'ipv6'],
        otherFamilies: [{ afi: 1, safi: 128 }],
        routeRefresh: true,
        enhancedRouteRefresh: true,
        as4: 4200000000,
        gracefulRestart: { restarting: true, notification: true, restartTime: 120, families: [{ family: 'ipv4', forwardingPreserved: true }] },
        unknown: [{ code: 73, value: Buffer.from('node-1') }],
      },
    }),
    // > 255 octets of parameters: RFC 9072 format
    encodeOpen({ version: 4, myAs: 65001, holdTime: 3, bgpId: '10.0.0.2', caps: { families: ['ipv6'], otherFamilies: [], routeRefresh: false, enhancedRouteRefresh: false, unknown: [{ code: 200, value: Buffer.alloc(250, 7) }, { code: 201, value: Buffer.alloc(20, 1) }] } }),
  ],
  'UPDATE v4': [
    encodeUpdate(
      {
        withdrawn: ['10.9.0.0/16', '0.0.0.0/0'],
        attrs: {
          origin: 1,
          asPath: [
            { type: 3, asns: [65000] },
            { type: 2, asns: [4200000001, 65002] },
            { type: 1, asns: [65010, 4200000011] },
          ],
          nextHop: '10.0.0.1',
          med: 10,
          localPref: 100,
          atomicAggregate: true,
          aggregator: { asn: 4200000001, address: '10.0.0.1' },
          communities: [1, 2, 3],
          unknown: [{ flags: 0xc0, type: 32, value: Buffer.from('unknown transitive') }],
        },
        nlri: ['10.244.1.0/24', '10.244.2.128/25', '192.0.2.1/32'],
      },
      as2,
    ),
    encodeUpdate({ withdrawn: [], attrs: { origin: 0, asPath: [{ type: 2, asns: [65001, 65002] }], nextHop: '192.168.1.1' }, nlri: ['10.244.1.0/24', '10.244.2.0/24'] }, as4),
  ],
  'UPDATE MP_REACH v6': [
    encodeUpdate({ withdrawn: [], attrs: { origin: 0, asPath: [{ type: 2, asns: [65001] }], communities: Array.from({ length: 70 }, (_, i) => i) }, nlri: [], mpReach: { family: 'ipv6', nextHops: ['fd00::1', 'fe80::1'], nlri: ['fd00:10:244:1::/64', '2001:db8::/32', '::/0'] } }, as4),
    encodeUpdate({ withdrawn: [], attrs: { origin: 2, asPath: [] }, nlri: [], mpReach: { family: 'ipv6', nextHops: ['2001:db8::1'], nlri: ['fd00:10:244:2::/64'] } }, as2),
  ],
  MP_UNREACH: [...encodeWithdrawals('ipv6', ['fd00:10:244:1::/64', 'fd00:10:244:2::/63', '2001:db8::/127'], as4), encodeEndOfRib('ipv6'), encodeEndOfRib('ipv4')],
  NOTIFICATION: [encodeNotification(3, 4, Buffer.from([0x40, 1, 2, 0, 0])), encodeNotification(6, 2)],
  'ROUTE-REFRESH': [encodeRouteRefresh(1, 1), encodeRouteRefresh(2, 1, 2)],
  KEEPALIVE: [KEEPALIVE],
};

/** 1 to 4 edits of the kinds that break parsers: bit flips, byte changes, cuts, length fields, insertions. */
function mutate(src: Buffer): Buffer {
  let b = Buffer.from(src);
  for (let n = 1 + int(4); n > 0; n--) {
    const at = int(b.length + 1);
    switch (int(7)) {
      case 0:
        if (b.length) b[Math.min(at, b.length - 1)] ^= 1 << int(8);
        break;
      case 1:
        if (b.length) b[Math.min(at, b.length - 1)] = octet();
        break;
      case 2:
        b = b.subarray(0, at);
        break;
      case 3: // a length somewhere off by a little (header, withdrawn/attribute totals, attribute or segment lengths)
        if (b.length) b[Math.min(at, b.length - 1)] = (b[Math.min(at, b.length - 1)] + int(5) - 2) & 0xff;
        break;
      case 4:
        b = Buffer.concat([b.subarray(0, at), octets(1 + int(8)), b.subarray(at)]);
        break;
      case 5:
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + int(8))]);
        break;
      default:
        if (b.length >= 18) b.writeUInt16BE(rand() < 0.5 ? int(65536) : (b.readUInt16BE(16) + int(9) - 4) & 0xffff, 16);
    }
  }
  // mostly keep the header Length truthful, so the damage is met inside the message, not at its door
  if (b.length >= 18 && b.length <= 0xffff && rand() < 0.7) b.writeUInt16BE(b.length, 16);
  return b;
}

// ---- the tests --------------------------------------------------------------------------------

test('the seed messages decode cleanly (on the session kind each was encoded for)', () => {
  for (const [name, msgs] of Object.entries(SEEDS)) for (const m of msgs) assert.ok(CTXS.some((ctx) => decodeChecked(m, ctx) === 'ok'), name);
});

test(`random octets behind a valid header: ${CASES} per message type`, { timeout: 30_000 }, () => {
  for (const type of [MsgType.OPEN, MsgType.UPDATE, MsgType.NOTIFICATION, MsgType.KEEPALIVE, MsgType.ROUTE_REFRESH]) {
    const outcomes = new Map<string, number>();
    for (let i = 0; i < CASES; i++) {
      const m = randomMessage(type);
      check(m, `random type ${type} #${i}`);
      const o = decodeChecked(m, as4);
      outcomes.set(o, (outcomes.get(o) ?? 0) + 1);
    }
    // the inputs must exercise the decoder, not just bounce off the header
    if (type === MsgType.OPEN || type === MsgType.UPDATE) assert.ok(outcomes.size >= 6, `type ${type}: only ${[...outcomes.keys()]}`);
  }
});

test(`mutations of valid messages: ${CASES} per kind`, { timeout: 30_000 }, () => {
  for (const [name, msgs] of Object.entries(SEEDS)) {
    for (let i = 0; i < CASES; i++) check(mutate(pick(msgs)), `mutated ${name} #${i}`);
  }
});

test('streams of valid and mutated messages frame the same in any chunking', { timeout: 30_000 }, () => {
  const all = Object.values(SEEDS).flat();
  for (let i = 0; i < 300; i++) {
    const parts = Array.from({ length: 2 + int(6) }, () => (rand() < 0.8 ? pick(all) : mutate(pick(all))));
    const stream = Buffer.concat(parts);
    const whole = frameAll(stream, []);
    const cuts = Array.from({ length: int(20) }, () => int(stream.length + 1)).sort((a, b) => a - b);
    const chunked = frameAll(stream, cuts);
    assert.equal(chunked.error, whole.error);
    if (!whole.error) assert.deepEqual(chunked.msgs, whole.msgs);
  }
});
