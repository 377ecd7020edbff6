// The nfnetlink set-element encoder against the bytes nft 1.0.6 sends for the same elements
// (captured with `strace -e trace=sendmsg -xx nft add|delete element ...`). Two deliberate
// differences from nft: every element message carries NLM_F_ACK (nft asks for no ack), and no
// NFTA_SET_ELEM_LIST_SET_ID (only meaningful for a set created in the same batch).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as C from '../../src/kernel/netlink/constants.js';
import * as N from '../../src/kernel/netlink/nfnetlink-constants.js';
import {
  NftNetlinkError,
  commentUdata,
  encodeElementBatch,
  opOfError,
  parseNfAck,
  renderElementOp,
  renderTimeout,
  valueBytes,
  type ElemPart,
  type ElementOp,
} from '../../src/kernel/netlink/nft-elements.js';

/** hex with spaces/newlines for readability */
const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

// BATCH_BEGIN / BATCH_END: nlmsghdr { len 20, type 0x10 / 0x11, NLM_F_REQUEST, seq } + nfgenmsg { AF_UNSPEC, v0, res_id htons(10) }
const begin = (seq: number): string => `14000000 1000 0100 ${le32(seq)} 00000000  00 00 000a`;
const end = (seq: number): string => `14000000 1100 0100 ${le32(seq)} 00000000  00 00 000a`;
function le32(v: number): string {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v, 0);
  return b.toString('hex');
}

const svc = (port: number): ElementOp => ({
  op: 'add',
  family: 'inet',
  table: 'pnx',
  set: 'm4',
  key: [
    { kind: 'ipv4', value: '10.96.0.1' },
    { kind: 'proto', value: 'tcp' },
    { kind: 'port', value: port },
  ],
  data: { kind: 'verdict', verdict: 'goto', chain: 'svc1' },
  comment: 'hi',
});

test('constants: message types and nfgenmsg as in the uapi headers', () => {
  assert.equal(N.nftMsgType(N.NFT_MSG_NEWSETELEM), 0x0a0c);
  assert.equal(N.nftMsgType(N.NFT_MSG_DELSETELEM), 0x0a0e);
  assert.equal(N.nftMsgType(N.NFT_MSG_DESTROYSETELEM), 0x0a1e);
  assert.equal(N.NFNL_MSG_BATCH_BEGIN, 16);
  assert.equal(N.NFNL_MSG_BATCH_END, 17);
});

test('add to a concatenated verdict map with a comment matches `nft add element inet pnx m4 { 10.96.0.1 . tcp . 81 comment "hi" : goto svc1 }`', () => {
  const b = encodeElementBatch([svc(81)], 0);
  const want = hex(`
    ${begin(0)}
    68000000 0c0a 0504 01000000 00000000   01 00 0000
    08000100 706e7800                      -- NFTA_SET_ELEM_LIST_TABLE "pnx"
    07000200 6d340000                      -- NFTA_SET_ELEM_LIST_SET "m4"
    44000380                               -- NFTA_SET_ELEM_LIST_ELEMENTS (nested)
      40000180                             -- NFTA_LIST_ELEM
        14000180 10000100 0a600001 06000000 00510000          -- KEY { VALUE 10.96.0.1 . 6 . 81 (each padded to 4) }
        1c000280 18000280 08000100 fffffffc 09000200 73766331 00000000  -- DATA { VERDICT { CODE -4 (goto), CHAIN "svc1" } }
        09000600 00036869 00000000         -- USERDATA { COMMENT(0), len 3, "hi\\0" }
    ${end(2)}`.replace(/--[^\n]*/g, ''));
  assert.equal(b.buf.toString('hex'), want.toString('hex'));
  assert.equal(b.firstSeq, 0);
  assert.equal(b.endSeq, 2);
  assert.deepEqual(b.msgs, [{ seq: 1, ops: [0], elemOffsets: [20 + 8 + 8 + 4] }]);
  // flags: REQUEST | ACK | CREATE, no EXCL (nft's `add element`: an identical element is not an error)
  assert.equal(b.buf.readUInt16LE(20 + 6), C.NLM_F_REQUEST | C.NLM_F_ACK | C.NLM_F_CREATE);
});

test('delete matches `nft delete element inet pnx m4 { 10.96.0.1 . tcp . 82 }`: the key only', () => {
  const op: ElementOp = { ...svc(82), op: 'delete' };
  const b = encodeElementBatch([op], 7);
  const want = hex(`
    ${begin(7)}
    40000000 0e0a 0500 08000000 00000000   01 00 0000
    08000100 706e7800  07000200 6d340000
    1c000380 18000180 14000180 10000100 0a600001 06000000 00520000
    ${end(9)}`);
  assert.equal(b.buf.toString('hex'), want.toString('hex'));
});

test('destroy is NFT_MSG_DESTROYSETELEM (30) with the same body as delete', () => {
  const del = encodeElementBatch([{ ...svc(82), op: 'delete' }], 0).buf;
  const des = encodeElementBatch([{ ...svc(82), op: 'destroy' }], 0).buf;
  assert.equal(des.readUInt16LE(20 + 4), (10 << 8) | 30);
  assert.deepEqual(des.subarray(20 + 6), del.subarray(20 + 6));
  assert.deepEqual(des.subarray(0, 24), del.subarray(0, 24));
});

test('timeout and comment on a plain set match `nft add element inet pnx t4 { 1.1.1.1 timeout 2s comment "x" }`', () => {
  const b = encodeElementBatch([{ op: 'add', family: 'inet', table: 'pnx', set: 't4', key: [{ kind: 'ipv4', value: '1.1.1.1' }], timeoutMs: 2000, comment: 'x' }], 0);
  const want = hex(`
    ${begin(0)}
    4c000000 0c0a 0504 01000000 00000000   01 00 0000
    08000100 706e7800  07000200 74340000
    28000380 24000180
      0c000400 00000000 000007d0           -- TIMEOUT be64 2000 ms
      0c000180 08000100 01010101           -- KEY { VALUE 1.1.1.1 } (one part: no padding)
      08000600 00027800                    -- USERDATA { COMMENT, 2, "x\\0" }
    ${end(2)}`.replace(/--[^\n]*/g, ''));
  assert.equal(b.buf.toString('hex'), want.toString('hex'));
});

test('value map data, ip family, IPv6 and single-part keys of their natural length', () => {
  const b = encodeElementBatch(
    [
      {
        op: 'add',
        family: 'ip6',
        table: 't',
        set: 'd6',
        key: [{ kind: 'ipv6', value: 'fd00::1' }, { kind: 'proto', value: 17 }, { kind: 'port', value: 53 }],
        data: { kind: 'value', parts: [{ kind: 'ipv6', value: 'fd00:244::5' }, { kind: 'port', value: 5353 }] },
      },
    ],
    0,
  );
  const m = b.buf.subarray(20);
  assert.equal(m.readUInt16LE(4), 0x0a0c);
  assert.equal(m[16], N.NFPROTO_IPV6);
  const want = hex(`
    06000100 74000000  07000200 64360000   -- "t", "d6"
    44000380 40000180
      20000180 1c000100 fd000000 00000000 00000000 00000001  11000000 00350000   -- KEY fd00::1 . 17 . 53
      1c000280 18000100 fd000244 00000000 00000000 00000005  14e90000            -- DATA fd00:244::5 . 5353`.replace(/--[^\n]*/g, ''));
  assert.equal(m.subarray(20, m.readUInt32LE(0)).toString('hex'), want.toString('hex'));
  // single parts keep their own length: inet_proto 1 byte, inet_service 2 bytes BE, u32 host order
  assert.equal(valueBytes([{ kind: 'proto', value: 'sctp' }]).toString('hex'), '84');
  assert.equal(valueBytes([{ kind: 'port', value: 8080 }]).toString('hex'), '1f90');
  assert.equal(valueBytes([{ kind: 'u32', value: 0x01020304 }]).toString('hex'), '04030201');
  assert.equal(valueBytes([{ kind: 'u32', value: 1 }, { kind: 'port', value: 1 }]).toString('hex'), '01000000' + '00010000');
  assert.equal(encodeElementBatch([{ op: 'add', family: 'ip', table: 't', set: 's', key: [{ kind: 'ipv4', value: '1.2.3.4' }] }], 0).buf[20 + 16], N.NFPROTO_IPV4);
});

test('IPv4 parts: dotted quads only', () => {
  assert.equal(valueBytes([{ kind: 'ipv4', value: '0.0.0.0' }]).toString('hex'), '00000000');
  assert.equal(valueBytes([{ kind: 'ipv4', value: '255.255.255.255' }]).toString('hex'), 'ffffffff');
  assert.equal(valueBytes([{ kind: 'ipv4', value: '10.96.0.10' }]).toString('hex'), '0a60000a');
  for (const bad of ['', '1.2.3', '1.2.3.4.5', '1..2.3', '1.2.3.4 ', ' 1.2.3.4', '1.2.3.4.', 'a.b.c.d', '1.2.3.1000', '256.1.1.1', '1.2.3.-4', '::1']) {
    assert.throws(() => valueBytes([{ kind: 'ipv4', value: bad }]), /bad IPv4 address/, JSON.stringify(bad));
  }
});

test('verdicts: codes, and no chain for accept/drop/return/continue', () => {
  const code = (verdict: 'accept' | 'drop' | 'return' | 'continue' | 'jump', chain?: string): number => {
    const b = encodeElementBatch([{ op: 'add', family: 'inet', table: 't', set: 'm', key: [{ kind: 'u32', value: 1 }], data: { kind: 'verdict', verdict, chain } }], 0).buf;
    const at = b.indexOf(hex('08000100'), 20 + 20 + 8 + 8 + 4 + 4 + 4 + 8 + 4 + 4); // NFTA_VERDICT_CODE
    return b.readInt32BE(at + 4);
  };
  assert.equal(code('accept'), 1);
  assert.equal(code('drop'), 0);
  assert.equal(code('continue'), -1);
  assert.equal(code('return'), -5);
  assert.equal(code('jump', 'c'), -3);
});

test('grouping: consecutive ops on one set and kind share a message; order is preserved', () => {
  const k = (i: number): ElementOp['key'] => [{ kind: 'ipv4', value: `10.0.0.${i}` }];
  const a = (set: string, i: number): ElementOp => ({ op: 'add', family: 'inet', table: 't', set, key: k(i) });
  const d = (set: string, i: number): ElementOp => ({ op: 'delete', family: 'inet', table: 't', set, key: k(i) });
  const ops = [a('s', 1), a('s', 2), d('s', 3), a('s', 3), a('x', 4), a('s', 5), { ...a('s', 6), family: 'ip' as const }];
  const b = encodeElementBatch(ops, 100);
  assert.deepEqual(
    b.msgs.map((m) => m.ops),
    [[0, 1], [2], [3], [4], [5], [6]],
  );
  assert.deepEqual(
    b.msgs.map((m) => m.seq),
    [101, 102, 103, 104, 105, 106],
  );
  assert.equal(b.endSeq, 107);
  // the types in the buffer, in order
  const types: number[] = [];
  for (let off = 0; off < b.buf.length; off += b.buf.readUInt32LE(off)) types.push(b.buf.readUInt16LE(off + 4));
  assert.deepEqual(types, [0x10, 0x0a0c, 0x0a0e, 0x0a0c, 0x0a0c, 0x0a0c, 0x0a0c, 0x11]);
  // each recorded offset points at an NFTA_LIST_ELEM of its message
  let off = 20;
  for (const m of b.msgs) {
    for (const eo of m.elemOffsets) assert.equal(b.buf.readUInt16LE(off + eo + 2), N.NFTA_LIST_ELEM | C.NLA_F_NESTED);
    off += b.buf.readUInt32LE(off);
  }
});

test('a big group is split into several messages under maxElementsBytes, in order', () => {
  const ops: ElementOp[] = [];
  for (let i = 0; i < 1000; i++) ops.push({ op: 'add', family: 'inet', table: 't', set: 's', key: [{ kind: 'ipv4', value: `10.0.${i >> 8}.${i & 255}` }] });
  // each element: LIST_ELEM(4) + KEY(4) + VALUE(8) = 16 bytes
  const b = encodeElementBatch(ops, 0, 4 + 16 * 100);
  assert.equal(b.msgs.length, 10);
  assert.deepEqual(b.msgs.flatMap((m) => m.ops), ops.map((_, i) => i));
  for (const m of b.msgs) assert.equal(m.ops.length, 100);
  const big = encodeElementBatch(ops, 0);
  assert.equal(big.msgs.length, 1, '16 KB of elements fit one message by default');
  // 30,000 elements with comments: several messages, each NFTA_SET_ELEM_LIST_ELEMENTS under 64 KiB
  const many: ElementOp[] = [];
  for (let i = 0; i < 30000; i++) many.push({ ...svc(i % 65536), key: [{ kind: 'ipv4', value: `10.96.${i >> 8}.${i & 255}` }, { kind: 'proto', value: 'tcp' }, { kind: 'port', value: 80 }], comment: `default/svc-${i}:http` });
  const m = encodeElementBatch(many, 0);
  assert.ok(m.msgs.length > 30, `${m.msgs.length} messages`);
  let off = 20;
  for (let i = 0; i < m.msgs.length; i++) {
    const len = m.buf.readUInt32LE(off);
    assert.ok(len < 65536, `message ${i}: ${len} bytes`);
    off += len;
  }
  assert.equal(m.msgs.reduce((n, x) => n + x.ops.length, 0), 30000);
});

test('renderElementOp writes nft syntax', () => {
  assert.equal(renderElementOp(svc(80)), 'add element inet pnx m4 { 10.96.0.1 . tcp . 80 comment "hi" : goto svc1 }');
  assert.equal(renderElementOp({ ...svc(80), op: 'delete' }), 'delete element inet pnx m4 { 10.96.0.1 . tcp . 80 }');
  assert.equal(renderElementOp({ ...svc(80), op: 'destroy', table: 'podnet-proxy', set: 'svc4' }), 'destroy element inet podnet-proxy svc4 { 10.96.0.1 . tcp . 80 }');
  assert.equal(
    renderElementOp({
      op: 'add',
      family: 'ip6',
      table: 't',
      set: 'd6',
      key: [{ kind: 'ipv6', value: 'FD00:0:0::1' }, { kind: 'proto', value: 17 }, { kind: 'port', value: 53 }],
      data: { kind: 'value', parts: [{ kind: 'ipv6', value: 'fd00::5' }, { kind: 'port', value: 5353 }] },
    }),
    'add element ip6 t d6 { fd00::1 . udp . 53 : fd00::5 . 5353 }',
  );
  assert.equal(renderElementOp({ op: 'add', family: 'inet', table: 't', set: 'a', key: [{ kind: 'ipv4', value: '1.2.3.4' }], timeoutMs: 90500 }), 'add element inet t a { 1.2.3.4 timeout 1m30s500ms }');
  assert.equal(renderElementOp({ op: 'add', family: 'inet', table: 't', set: 'mk', key: [{ kind: 'u32', value: 7 }], data: { kind: 'verdict', verdict: 'accept' } }), 'add element inet t mk { 7 : accept }');
  assert.equal(renderElementOp({ op: 'add', family: 'inet', table: 'my table', set: 's', key: [{ kind: 'ipv4', value: '1.2.3.4' }] }), 'add element inet "my table" s { 1.2.3.4 }');
  assert.equal(renderTimeout(86_400_000 + 3_600_000 + 1), '1d1h1ms');
  assert.equal(renderTimeout(5000), '5s');
});

test('an op that cannot be encoded throws NftNetlinkError (EINVAL) naming it, before anything is sent', () => {
  const good = svc(80);
  const bad: ElementOp[] = [
    { ...good, key: [{ kind: 'ipv4', value: '10.96.0.256' }] },
    { ...good, key: [{ kind: 'port', value: 70000 }] },
    { ...good, key: [{ kind: 'proto', value: 'icmp' as 'tcp' }] },
    { ...good, key: [] },
    { ...good, data: { kind: 'verdict', verdict: 'goto' } },
    { ...good, data: { kind: 'verdict', verdict: 'accept', chain: 'x' } },
    { ...good, timeoutMs: 0 },
    { ...good, comment: 'x'.repeat(129) },
    { ...good, comment: 'say "hi"' },
    { ...good, table: '' },
    { ...good, key: Array.from({ length: 17 }, () => ({ kind: 'u32' as const, value: 1 })) },
    { ...good, key: [undefined as unknown as ElemPart] },
    { ...good, key: undefined as unknown as ElemPart[] },
    { ...good, op: 'replace' as 'add' },
    { ...good, op: 'constructor' as 'add' },
    { ...good, data: { kind: 'verdict', verdict: 'toString' as 'accept' } },
    { ...good, family: 'arp' as 'ip' },
  ];
  for (const op of bad) {
    assert.throws(
      () => encodeElementBatch([good, op], 0),
      (e: unknown) => e instanceof NftNetlinkError && e.errno === 22 && e.opIndex === 1 && e.message.startsWith(renderElementOp(op) + ': Invalid argument ('),
      JSON.stringify(op),
    );
  }
  assert.equal(commentUdata('x'.repeat(128)).length, 2 + 129);
});

test('acks: error, extended message and offset decoded; the offset names the element', () => {
  // NLMSG_ERROR payload: error -17, capped request header, TLVs MSG "boom", OFFS 72
  const payload = Buffer.concat([
    hex('efffffff'),
    Buffer.alloc(16),
    hex('09000100 626f6f6d 00000000'),
    hex('08000200 48000000'),
  ]);
  const ack = parseNfAck(5, C.NLM_F_CAPPED | C.NLM_F_ACK_TLVS, payload);
  assert.deepEqual(ack, { seq: 5, errno: 17, extMsg: 'boom', offset: 72 });
  const msg = { seq: 5, ops: [3, 4, 5], elemOffsets: [40, 72, 104] };
  assert.deepEqual(opOfError(msg, 72), { opIndex: 4, exact: true });
  assert.deepEqual(opOfError(msg, 80), { opIndex: 4, exact: true }, 'inside the element');
  assert.deepEqual(opOfError(msg, 110), { opIndex: 5, exact: true });
  assert.deepEqual(opOfError(msg, 20), { opIndex: 3, exact: false }, 'the table/set attribute: about the whole message');
  assert.deepEqual(opOfError(msg), { opIndex: 3, exact: false });
  assert.deepEqual(opOfError({ seq: 1, ops: [9], elemOffsets: [40] }), { opIndex: 9, exact: true });
});
