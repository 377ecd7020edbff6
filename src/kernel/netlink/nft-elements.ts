// nftables set/map element writes straight over nfnetlink (NETLINK_NETFILTER): one batch
// (NFNL_MSG_BATCH_BEGIN ... END) per apply() = one atomic nf_tables transaction, no `nft` process.
// Only element ops on sets and maps that already exist; rulesets are still loaded with `nft -f`.
//
// Wire format, byte for byte what nft 1.0.6 / libnftnl send (checked with strace and
// `nft --debug=mnl`), except that each element message asks for an ack and carries no SET_ID:
//   nlmsghdr { type = NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_{NEW,DEL,DESTROY}SETELEM,
//              flags = REQUEST|ACK (+CREATE for add, without EXCL: nft's `add element`, an identical element is no error) }
//   nfgenmsg { family, version 0, res_id 0 }
//   NFTA_SET_ELEM_LIST_TABLE "table\0", NFTA_SET_ELEM_LIST_SET "set\0",
//   NFTA_SET_ELEM_LIST_ELEMENTS (nested) { NFTA_LIST_ELEM (nested) {
//     [NFTA_SET_ELEM_TIMEOUT be64 ms], NFTA_SET_ELEM_KEY { NFTA_DATA_VALUE bytes },
//     [NFTA_SET_ELEM_DATA { NFTA_DATA_VALUE bytes | NFTA_DATA_VERDICT { NFTA_VERDICT_CODE be32, [NFTA_VERDICT_CHAIN "chain\0"] } }],
//     [NFTA_SET_ELEM_USERDATA udata TLVs] } ... }
// Nested attributes carry NLA_F_NESTED (libmnl sets it). Values of a concatenation are each padded
// to 4 bytes (one nft register each); a single-part key keeps its natural length.
//
// Kernel behaviour worth knowing: adding a goto/jump element to a verdict map that a base chain uses
// makes the commit re-validate the table, walking every element of the map (Linux 6.18: ~3 ms at
// 30,000 elements, vs ~0.1 ms for a value map or a delete).
import { endianness, release } from 'node:os';
import * as C from './constants.js';
import * as N from './nfnetlink-constants.js';
import { formatIp, ipv6Bytes, parseAttrs, parseMessages } from './message.js';
import { inNetns, loadKoffi, loadLibc, strerror } from './socket.js';

export type ElemPart =
  | { kind: 'ipv4'; value: string } // 4 bytes network order
  | { kind: 'ipv6'; value: string } // 16 bytes
  | { kind: 'proto'; value: 'tcp' | 'udp' | 'sctp' | number } // inet_proto, 1 byte (padded to 4 in a concatenation)
  | { kind: 'port'; value: number } // inet_service, 2 bytes big-endian (padded to 4 in a concatenation)
  | { kind: 'u32'; value: number }; // 32-bit integer in HOST byte order (like meta mark / numgen)

export type ElemData =
  | { kind: 'verdict'; verdict: 'goto' | 'jump' | 'accept' | 'drop' | 'return' | 'continue'; chain?: string }
  | { kind: 'value'; parts: ElemPart[] };

export interface ElementOp {
  /** destroy = delete that tolerates a missing element (NFT_MSG_DESTROYSETELEM, Linux >= 6.3) */
  op: 'add' | 'delete' | 'destroy';
  family: 'inet' | 'ip' | 'ip6';
  table: string;
  set: string;
  /** one part = plain key; several = concatenation (each part padded to a 4-byte multiple) */
  key: ElemPart[];
  /** maps only (add only) */
  data?: ElemData;
  /** sets with flags timeout (add only) */
  timeoutMs?: number;
  /** stored as NFTA_SET_ELEM_USERDATA in nft's udata TLV format, so `nft list` shows it (add only) */
  comment?: string;
}

/** An element op (or the whole batch) the kernel refused, or that could not be encoded. */
export class NftNetlinkError extends Error {
  constructor(
    /** what failed, in nft syntax ("add element inet t s { 10.0.0.1 }") or a batch description */
    readonly what: string,
    /** positive errno */
    readonly errno: number,
    /** the failing op and its index in apply()'s array, when the error maps to one */
    readonly op?: ElementOp,
    readonly opIndex?: number,
    /** the kernel's extended ack message, or our own detail */
    readonly detail?: string,
  ) {
    super(`${what}: ${strerror(errno)}${detail ? ` (${detail})` : ''}`);
    this.name = 'NftNetlinkError';
  }
}

const EINTR = 4;
const EAGAIN = 11;
const EINVAL = 22;
const EOPNOTSUPP = 95;
const ENOBUFS = 105;

// ------------------------------------------------------------------------------------------ rendering

/** a lookup table without Object.prototype behind it (an op of 'constructor' must not find anything) */
const lookup = <T>(o: Record<string, T>): Record<string, T | undefined> => Object.assign(Object.create(null) as Record<string, T>, o);
const PROTO_NUM = lookup({ tcp: 6, udp: 17, sctp: 132 });
const PROTO_NAME: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'ipv6-icmp', 132: 'sctp', 136: 'udplite' };
const VERDICT_CODE = lookup({
  accept: N.NF_ACCEPT,
  drop: N.NF_DROP,
  continue: N.NFT_CONTINUE,
  return: N.NFT_RETURN,
  goto: N.NFT_GOTO,
  jump: N.NFT_JUMP,
});
const FAMILY = lookup({ inet: N.NFPROTO_INET, ip: N.NFPROTO_IPV4, ip6: N.NFPROTO_IPV6 });

/** A table/set/chain name as nft accepts it on the command line: bare when it is an identifier. */
function nftName(s: string): string {
  return /^[A-Za-z_][A-Za-z0-9_./-]*$/.test(s) ? s : `"${s}"`;
}

function renderPart(p: ElemPart): string {
  if (!p || typeof p !== 'object') return String(p); // rendering never throws: it describes bad input too
  switch (p.kind) {
    case 'ipv6':
      try {
        return formatIp(ipv6Bytes(p.value));
      } catch {
        return String(p.value);
      }
    case 'proto':
      return typeof p.value === 'number' ? (PROTO_NAME[p.value] ?? String(p.value)) : String(p.value);
    default:
      return String(p.value);
  }
}

const renderParts = (parts: ElemPart[]): string => parts.map(renderPart).join(' . ');

/** Milliseconds as nft writes a time: 1d2h3m4s5ms. */
export function renderTimeout(ms: number): string {
  if (!Number.isFinite(ms) || ms <= 0) return `${ms}ms`;
  let rest = Math.floor(ms);
  let out = '';
  for (const [unit, size] of [['d', 86_400_000], ['h', 3_600_000], ['m', 60_000], ['s', 1000], ['ms', 1]] as const) {
    const n = Math.floor(rest / size);
    rest -= n * size;
    if (n) out += `${n}${unit}`;
  }
  return out;
}

function renderData(d: ElemData): string {
  if (d.kind === 'value') return Array.isArray(d.parts) ? renderParts(d.parts) : String(d.parts);
  return d.chain !== undefined ? `${d.verdict} ${nftName(d.chain)}` : d.verdict;
}

/** The op in nft syntax, for logs, errors and --dry-run output. */
export function renderElementOp(op: ElementOp): string {
  let elem = Array.isArray(op.key) ? renderParts(op.key) : String(op.key);
  if (op.op === 'add') {
    if (op.timeoutMs !== undefined) elem += ` timeout ${renderTimeout(op.timeoutMs)}`;
    if (op.comment !== undefined) elem += ` comment "${op.comment}"`;
    if (op.data) elem += ` : ${renderData(op.data)}`;
  }
  return `${op.op} element ${op.family} ${nftName(op.table)} ${nftName(op.set)} { ${elem} }`;
}

// ------------------------------------------------------------------------------------------ encoding

// Written in place into one growing buffer (no Buffer per attribute): a 30,000-element batch is a
// few MB, and a service change must cost little besides the kernel's work. Constants are copied to
// module scope so the hot path does no namespace look-ups.
const align4 = (n: number): number => (n + 3) & ~3;
const HOST_LE = endianness() === 'LE';
const NLA_F_NESTED = C.NLA_F_NESTED;
const NLA_HDRLEN = C.NLA_HDRLEN;
const NLMSG_HDRLEN = C.NLMSG_HDRLEN;
const NFGENMSG_LEN = N.NFGENMSG_LEN;
const NFTA_LIST_ELEM = N.NFTA_LIST_ELEM;
const NFTA_SET_ELEM_KEY = N.NFTA_SET_ELEM_KEY;
const NFTA_SET_ELEM_DATA = N.NFTA_SET_ELEM_DATA;
const NFTA_SET_ELEM_TIMEOUT = N.NFTA_SET_ELEM_TIMEOUT;
const NFTA_SET_ELEM_USERDATA = N.NFTA_SET_ELEM_USERDATA;
const NFTA_DATA_VALUE = N.NFTA_DATA_VALUE;
const NFTA_DATA_VERDICT = N.NFTA_DATA_VERDICT;
const NFTA_VERDICT_CODE = N.NFTA_VERDICT_CODE;
const NFTA_VERDICT_CHAIN = N.NFTA_VERDICT_CHAIN;
const VALUE_MAXLEN = N.NFT_DATA_VALUE_MAXLEN;
const COMMENT_MAXLEN = N.NFTNL_UDATA_COMMENT_MAXLEN;
const UDATA_COMMENT = N.NFTNL_UDATA_SET_ELEM_COMMENT;
const BAD_COMMENT = /["\0-\x1f\x7f]/;

/** A growable buffer that netlink messages and attributes are written into in place. */
class Writer {
  buf: Buffer;
  pos = 0;

  constructor(size = 4096) {
    this.buf = Buffer.allocUnsafe(size);
  }

  room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const b = Buffer.allocUnsafe(size);
    this.buf.copy(b, 0, 0, this.pos);
    this.buf = b;
  }

  u8(v: number): void {
    this.room(1);
    this.buf[this.pos++] = v;
  }

  be16(v: number): void {
    this.room(2);
    this.buf.writeUInt16BE(v, this.pos);
    this.pos += 2;
  }

  u32host(v: number): void {
    this.room(4);
    if (HOST_LE) this.buf.writeUInt32LE(v, this.pos);
    else this.buf.writeUInt32BE(v, this.pos);
    this.pos += 4;
  }

  bytes(b: Buffer): void {
    this.room(b.length);
    b.copy(this.buf, this.pos);
    this.pos += b.length;
  }

  /** UTF-8 text and a NUL */
  str0(s: string): void {
    this.room(Buffer.byteLength(s) + 1);
    this.pos += this.buf.write(s, this.pos, 'utf8');
    this.buf[this.pos++] = 0;
  }

  /** zero bytes up to the next 4-byte boundary (the buffer is not zeroed, and may hold bytes of a rolled-back element) */
  pad(): void {
    const end = align4(this.pos);
    this.room(end - this.pos);
    while (this.pos < end) this.buf[this.pos++] = 0;
  }

  /** nlmsghdr (length filled in by endMsg) + nfgenmsg */
  beginMsg(type: number, flags: number, seq: number, family: number, resId: number): number {
    const start = this.pos;
    this.room(NLMSG_HDRLEN + NFGENMSG_LEN);
    const b = this.buf;
    b.writeUInt32LE(0, start);
    b.writeUInt16LE(type, start + 4);
    b.writeUInt16LE(flags, start + 6);
    b.writeUInt32LE(seq >>> 0, start + 8);
    b.writeUInt32LE(0, start + 12); // to the kernel
    b[start + 16] = family;
    b[start + 17] = N.NFNETLINK_V0;
    b.writeUInt16BE(resId, start + 18);
    this.pos += NLMSG_HDRLEN + NFGENMSG_LEN;
    return start;
  }

  endMsg(start: number): void {
    this.buf.writeUInt32LE(this.pos - start, start);
  }

  /** attribute header; the payload follows; end() fills in the length and pads */
  begin(type: number, nested = false): number {
    const start = this.pos;
    this.room(NLA_HDRLEN);
    this.buf.writeUInt16LE(nested ? type | NLA_F_NESTED : type, start + 2);
    this.pos += NLA_HDRLEN;
    return start;
  }

  end(start: number): void {
    const len = this.pos - start;
    if (len > 0xffff) throw new Error(`netlink attribute too long (${len} bytes)`);
    this.buf.writeUInt16LE(len, start);
    this.pad();
  }

  attrStr(type: number, s: string): void {
    const a = this.begin(type);
    this.str0(s);
    this.end(a);
  }

  attrBe32(type: number, v: number): void {
    const a = this.begin(type);
    this.room(4);
    this.buf.writeInt32BE(v | 0, this.pos);
    this.pos += 4;
    this.end(a);
  }

  attrBe64(type: number, v: number): void {
    const a = this.begin(type);
    this.room(8);
    this.buf.writeUInt32BE(Math.floor(v / 0x100000000), this.pos);
    this.buf.writeUInt32BE(v >>> 0, this.pos + 4);
    this.pos += 8;
    this.end(a);
  }
}

function checkInt(v: unknown, min: number, max: number, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new Error(`bad ${what}: ${String(v)}`);
  return v;
}

/** Dotted quad straight into the writer (the common key part: no split, no array). */
function writeIpv4(w: Writer, ip: unknown): void {
  if (typeof ip !== 'string') throw new Error(`bad IPv4 address: ${String(ip)}`);
  w.room(4);
  let octet = 0;
  let digits = 0;
  let n = 0;
  for (let i = 0; i <= ip.length; i++) {
    const ch = i < ip.length ? ip.charCodeAt(i) : 46; // a final '.'
    if (ch >= 48 && ch <= 57) {
      octet = octet * 10 + (ch - 48);
      if (++digits > 3 || octet > 255) n = 99;
    } else if (ch === 46 && digits > 0 && n < 4) {
      w.buf[w.pos + n++] = octet;
      octet = 0;
      digits = 0;
    } else {
      n = 99;
      break;
    }
  }
  if (n !== 4) throw new Error(`bad IPv4 address: ${ip}`);
  w.pos += 4;
}

/** One value part; in a concatenation each part fills a whole number of 4-byte registers. */
function writePart(w: Writer, p: ElemPart, concat: boolean): void {
  switch (p?.kind) {
    case 'ipv4':
      writeIpv4(w, p.value);
      return;
    case 'ipv6':
      w.bytes(ipv6Bytes(String(p.value)));
      return;
    case 'proto': {
      const n = typeof p.value === 'string' ? PROTO_NUM[p.value] : p.value;
      if (n === undefined) throw new Error(`bad protocol: ${String(p.value)}`);
      w.u8(checkInt(n, 0, 255, 'protocol'));
      if (concat) w.pad();
      return;
    }
    case 'port':
      w.be16(checkInt(p.value, 0, 65535, 'port'));
      if (concat) w.pad();
      return;
    case 'u32':
      w.u32host(checkInt(p.value, 0, 0xffffffff, 'u32'));
      return;
    default:
      throw new Error(`unknown element part kind: ${String((p as { kind?: unknown } | undefined)?.kind)}`);
  }
}

/** NFTA_DATA_VALUE { key or map value }: one part as is, a concatenation with each part padded to 4 bytes. */
function writeValue(w: Writer, parts: ElemPart[]): void {
  if (!Array.isArray(parts) || parts.length === 0) throw new Error('empty key/value');
  const a = w.begin(NFTA_DATA_VALUE);
  const concat = parts.length > 1;
  for (const p of parts) writePart(w, p, concat);
  const len = w.pos - a - NLA_HDRLEN;
  if (len > VALUE_MAXLEN) throw new Error(`concatenation too long (${len} bytes, at most ${VALUE_MAXLEN})`);
  w.end(a);
}

/** The NFTA_DATA_VALUE payload of a key or map value (for tests and callers that want the bytes). */
export function valueBytes(parts: ElemPart[]): Buffer {
  const w = new Writer(64);
  writeValue(w, parts);
  return Buffer.from(w.buf.subarray(NLA_HDRLEN, w.buf.readUInt16LE(0)));
}

/** nft's udata TLVs for an element comment: { u8 NFTNL_UDATA_SET_ELEM_COMMENT, u8 len, "text\0" }. */
function writeComment(w: Writer, comment: unknown): void {
  if (typeof comment !== 'string') throw new Error(`bad comment: ${String(comment)}`);
  const len = Buffer.byteLength(comment);
  if (len > COMMENT_MAXLEN) throw new Error(`comment too long (${len} bytes, at most ${COMMENT_MAXLEN})`);
  if (BAD_COMMENT.test(comment)) throw new Error('comment with a double quote or a control character');
  const a = w.begin(NFTA_SET_ELEM_USERDATA);
  w.u8(UDATA_COMMENT);
  w.u8(len + 1);
  w.str0(comment);
  w.end(a);
}

export function commentUdata(comment: string): Buffer {
  const w = new Writer(256);
  writeComment(w, comment);
  return Buffer.from(w.buf.subarray(NLA_HDRLEN, w.buf.readUInt16LE(0)));
}

function checkName(s: unknown, what: string): string {
  if (typeof s !== 'string' || s.length === 0 || Buffer.byteLength(s) >= N.NFT_NAME_MAXLEN || s.includes('\0')) throw new Error(`bad ${what} name: ${JSON.stringify(s)}`);
  return s;
}

/**
 * NFTA_LIST_ELEM of one op, checked while written (an op that cannot be encoded throws here).
 * Attribute order as libnftnl: TIMEOUT, KEY, DATA, USERDATA. A delete names the element by its key only.
 */
function writeElem(w: Writer, op: ElementOp): void {
  const el = w.begin(NFTA_LIST_ELEM, true);
  const add = op.op === 'add';
  if (add && op.timeoutMs !== undefined) w.attrBe64(NFTA_SET_ELEM_TIMEOUT, checkInt(op.timeoutMs, 1, Number.MAX_SAFE_INTEGER, 'timeout (ms)'));
  const k = w.begin(NFTA_SET_ELEM_KEY, true);
  writeValue(w, op.key);
  w.end(k);
  if (add && op.data !== undefined) {
    const d = op.data;
    const da = w.begin(NFTA_SET_ELEM_DATA, true);
    if (d?.kind === 'value') writeValue(w, d.parts);
    else if (d?.kind === 'verdict') {
      const code = VERDICT_CODE[d.verdict];
      if (code === undefined) throw new Error(`bad verdict: ${String(d.verdict)}`);
      const needsChain = d.verdict === 'goto' || d.verdict === 'jump';
      if (needsChain) checkName(d.chain, 'chain');
      else if (d.chain !== undefined) throw new Error(`verdict ${d.verdict} takes no chain`);
      const v = w.begin(NFTA_DATA_VERDICT, true);
      w.attrBe32(NFTA_VERDICT_CODE, code);
      if (needsChain) w.attrStr(NFTA_VERDICT_CHAIN, d.chain!);
      w.end(v);
    } else throw new Error(`bad data kind: ${String((d as { kind?: unknown } | undefined)?.kind)}`);
    w.end(da);
  }
  if (add && op.comment !== undefined) writeComment(w, op.comment);
  w.end(el);
}

const MSG_OF_OP = lookup({
  add: N.NFT_MSG_NEWSETELEM,
  delete: N.NFT_MSG_DELSETELEM,
  destroy: N.NFT_MSG_DESTROYSETELEM,
});

/** One NEWSETELEM/DELSETELEM/DESTROYSETELEM message of a batch. */
export interface BatchMsg {
  seq: number;
  /** indices (in apply()'s array) of the ops carried, in order */
  ops: number[];
  /** offset of each op's NFTA_LIST_ELEM from the start of this message's nlmsghdr (what NLMSGERR_ATTR_OFFS reports) */
  elemOffsets: number[];
}

export interface EncodedBatch {
  buf: Buffer;
  /** sequence numbers: BATCH_BEGIN = firstSeq, messages firstSeq+1.., BATCH_END = endSeq */
  firstSeq: number;
  endSeq: number;
  msgs: BatchMsg[];
}

/**
 * The whole batch: BATCH_BEGIN, consecutive ops on the same (op, family, table, set) grouped into
 * one message (split when its NFTA_SET_ELEM_LIST_ELEMENTS would pass maxElementsBytes: the
 * attribute length is a u16), BATCH_END. Order is preserved. Throws NftNetlinkError (EINVAL)
 * naming the first op that cannot be encoded.
 */
export function encodeElementBatch(ops: ElementOp[], firstSeq: number, maxElementsBytes = 65000): EncodedBatch {
  if (maxElementsBytes > 0xffff) throw new Error('maxElementsBytes must fit a u16 attribute length');
  const w = new Writer(Math.max(4096, ops.length * 64));
  let seq = firstSeq >>> 0;
  const begin = w.beginMsg(N.NFNL_MSG_BATCH_BEGIN, C.NLM_F_REQUEST, seq, N.NFPROTO_UNSPEC, N.NFNL_SUBSYS_NFTABLES);
  w.endMsg(begin);
  const msgs: BatchMsg[] = [];
  // the message being filled: its start, its ELEMENTS attribute, and what it is for
  let msg: BatchMsg | undefined;
  let msgStart = 0;
  let elemsStart = 0;
  let prev: ElementOp | undefined;

  const close = (): void => {
    if (!msg) return;
    w.end(elemsStart);
    w.endMsg(msgStart);
    msg = undefined;
  };
  const open = (op: ElementOp): void => {
    const type = MSG_OF_OP[op.op];
    if (type === undefined) throw new Error(`bad op: ${String(op.op)}`);
    const family = FAMILY[op.family];
    if (family === undefined) throw new Error(`bad family: ${String(op.family)}`);
    checkName(op.table, 'table');
    checkName(op.set, 'set');
    seq = (seq + 1) >>> 0;
    const flags = C.NLM_F_REQUEST | C.NLM_F_ACK | (op.op === 'add' ? C.NLM_F_CREATE : 0);
    msgStart = w.beginMsg((N.NFNL_SUBSYS_NFTABLES << 8) | type, flags, seq, family, 0);
    w.attrStr(N.NFTA_SET_ELEM_LIST_TABLE, op.table);
    w.attrStr(N.NFTA_SET_ELEM_LIST_SET, op.set);
    elemsStart = w.begin(N.NFTA_SET_ELEM_LIST_ELEMENTS, true);
    msg = { seq, ops: [], elemOffsets: [] };
    msgs.push(msg);
  };

  for (let i = 0; i < ops.length; i++) {
    const op = ops[i];
    try {
      if (!msg || !prev || op.op !== prev.op || op.set !== prev.set || op.table !== prev.table || op.family !== prev.family) {
        close();
        open(op);
      }
      let at = w.pos;
      writeElem(w, op);
      if (w.pos - elemsStart > maxElementsBytes && msg!.ops.length > 0) {
        w.pos = at; // roll back: this element starts the next message
        close();
        open(op);
        at = w.pos;
        writeElem(w, op);
      }
      msg!.ops.push(i);
      msg!.elemOffsets.push(at - msgStart);
      prev = op;
    } catch (err) {
      throw new NftNetlinkError(renderElementOp(op), EINVAL, op, i, (err as Error).message);
    }
  }
  close();
  seq = (seq + 1) >>> 0;
  const end = w.beginMsg(N.NFNL_MSG_BATCH_END, C.NLM_F_REQUEST, seq, N.NFPROTO_UNSPEC, N.NFNL_SUBSYS_NFTABLES);
  w.endMsg(end);
  return { buf: w.buf.subarray(0, w.pos), firstSeq: firstSeq >>> 0, endSeq: seq, msgs };
}

// ------------------------------------------------------------------------------------------ acks

export interface NfAck {
  seq: number;
  errno: number;
  extMsg?: string;
  /** NLMSGERR_ATTR_OFFS: offset of the offending attribute from the request's nlmsghdr */
  offset?: number;
}

/** Decodes an NLMSG_ERROR payload, with the extended-ack message and attribute offset. */
export function parseNfAck(seq: number, flags: number, data: Buffer): NfAck {
  const err = data.readInt32LE(0);
  const ack: NfAck = { seq, errno: err === 0 ? 0 : -err };
  if (flags & C.NLM_F_ACK_TLVS) {
    let off = 4 + C.NLMSG_HDRLEN;
    if (!(flags & C.NLM_F_CAPPED) && data.length >= 4 + C.NLMSG_HDRLEN) off = 4 + align4(data.readUInt32LE(4));
    const tlvs = parseAttrs(data.subarray(off));
    const msg = tlvs.get(C.NLMSGERR_ATTR_MSG);
    if (msg) ack.extMsg = msg.toString('utf8').replace(/\0+$/, '');
    const offs = tlvs.get(N.NLMSGERR_ATTR_OFFS);
    if (offs && offs.length >= 4) ack.offset = offs.readUInt32LE(0);
  }
  return ack;
}

/** The op an error on message `msg` is about: the element at the reported offset, else the message's first. */
export function opOfError(msg: BatchMsg, offset?: number): { opIndex: number; exact: boolean } {
  if (offset !== undefined && msg.elemOffsets.length && offset >= msg.elemOffsets[0]) {
    let j = 0;
    while (j + 1 < msg.elemOffsets.length && msg.elemOffsets[j + 1] <= offset) j++;
    return { opIndex: msg.ops[j], exact: true };
  }
  return { opIndex: msg.ops[0], exact: msg.ops.length === 1 };
}

export function kernelBefore(major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)/.exec(release());
  return !!m && (Number(m[1]) < major || (Number(m[1]) === major && Number(m[2]) < minor));
}

// ------------------------------------------------------------------------------------------ socket

function intOpt(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v, 0);
  return b;
}

function sockaddrNl(): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16LE(C.AF_NETLINK, 0);
  return b;
}
const KERNEL = sockaddrNl();

/** A bound NETLINK_NETFILTER socket in the current netns, with extended acks and a receive timeout. */
export function openNfnl(recvTimeoutSec: number): number {
  const c = loadLibc();
  const fd = c.socket(C.AF_NETLINK, C.SOCK_RAW | C.SOCK_CLOEXEC, N.NETLINK_NETFILTER);
  if (fd < 0) throw new NftNetlinkError('socket(AF_NETLINK, NETLINK_NETFILTER)', loadKoffi().errno());
  try {
    const addr = sockaddrNl();
    if (c.bind(fd, addr, addr.length) !== 0) throw new NftNetlinkError('bind(NETLINK_NETFILTER)', loadKoffi().errno());
    // errors with the kernel's message and the offending attribute's offset, without our request echoed
    c.setsockopt(fd, C.SOL_NETLINK, C.NETLINK_EXT_ACK, intOpt(1), 4);
    c.setsockopt(fd, C.SOL_NETLINK, C.NETLINK_CAP_ACK, intOpt(1), 4);
    const tv = Buffer.alloc(16);
    tv.writeBigInt64LE(BigInt(recvTimeoutSec), 0);
    if (c.setsockopt(fd, C.SOL_SOCKET, C.SO_RCVTIMEO, tv, 16) !== 0) throw new NftNetlinkError('setsockopt(SO_RCVTIMEO)', loadKoffi().errno());
  } catch (e) {
    c.close(fd);
    throw e;
  }
  return fd;
}

/**
 * Writes set/map elements over one NETLINK_NETFILTER socket (in the current netns, or opened inside
 * netnsPath). Synchronous: each apply() is one nf_tables transaction, fully acknowledged on return.
 */
export class NftElementWriter {
  /** SO_RCVTIMEO: a kernel that never answers fails the apply instead of hanging the process */
  static recvTimeoutSec = 5;
  /** cap on one message's NFTA_SET_ELEM_LIST_ELEMENTS (its length is a u16) */
  static maxElementsBytes = 65000;

  private readonly fd: number;
  private seq = Math.floor(Math.random() * 0x7fffffff);
  // acks are a few dozen bytes (NETLINK_CAP_ACK); an uncapped one echoes up to one message
  private readonly rbuf = Buffer.alloc(128 * 1024);
  private sndbuf = 0;
  private rcvbuf = 0;
  private closed = false;

  constructor(opts: { netnsPath?: string } = {}) {
    const open = (): number => openNfnl(NftElementWriter.recvTimeoutSec);
    this.fd = opts.netnsPath ? inNetns(opts.netnsPath, open) : open();
    try {
      this.growBuffers(256 * 1024, 1);
    } catch (e) {
      this.close();
      throw e;
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    loadLibc().close(this.fd);
  }

  /**
   * Applies the ops in order as ONE batch (one atomic transaction): either all of them take effect or
   * none. Throws NftNetlinkError naming the first failing op; the batch is then not applied.
   */
  apply(ops: ElementOp[]): void {
    if (this.closed) throw new Error('NftElementWriter: closed');
    if (ops.length === 0) return;
    const first = this.seq;
    const batch = encodeElementBatch(ops, first, NftElementWriter.maxElementsBytes);
    this.seq = (batch.endSeq + 1) >>> 0;
    const what = `element batch (${ops.length} op${ops.length === 1 ? '' : 's'}, ${batch.buf.length} bytes)`;
    this.growBuffers(batch.buf.length, batch.msgs.length);
    this.send(batch.buf, what);
    this.collect(ops, batch, what);
  }

  /** SO_SNDBUF must hold the whole batch (one datagram: the kernel sees one transaction); SO_RCVBUF every ack. */
  private growBuffers(batchBytes: number, msgCount: number): void {
    const c = loadLibc();
    const want = (n: number): number => Math.ceil((n + 4096) / 65536) * 65536;
    const set = (force: number, plain: number, size: number, name: string): void => {
      if (c.setsockopt(this.fd, C.SOL_SOCKET, force, intOpt(size), 4) === 0) return;
      // without CAP_NET_ADMIN in the initial namespace: capped by net.core.{w,r}mem_max
      if (c.setsockopt(this.fd, C.SOL_SOCKET, plain, intOpt(size), 4) !== 0) throw new NftNetlinkError(`setsockopt(${name})`, loadKoffi().errno());
    };
    const snd = want(batchBytes);
    if (snd > this.sndbuf) {
      set(N.SO_SNDBUFFORCE, N.SO_SNDBUF, snd, 'SO_SNDBUF');
      this.sndbuf = snd;
    }
    // an ack skb costs ~1 KiB of receive buffer (truesize), an error with its TLVs a little more
    const rcv = Math.max(1 << 20, want(msgCount * 2048));
    if (rcv > this.rcvbuf) {
      set(N.SO_RCVBUFFORCE, N.SO_RCVBUF, rcv, 'SO_RCVBUF');
      this.rcvbuf = rcv;
    }
  }

  private send(buf: Buffer, what: string): void {
    const c = loadLibc();
    for (;;) {
      const n = c.sendto(this.fd, buf, buf.length, 0, KERNEL, KERNEL.length);
      if (n >= 0) {
        if (n !== buf.length) throw new NftNetlinkError(what, EINVAL, undefined, undefined, `short send: ${n} of ${buf.length} bytes`);
        return;
      }
      const errno = loadKoffi().errno();
      if (errno !== EINTR) throw new NftNetlinkError(what, errno, undefined, undefined, 'sendto');
    }
  }

  /**
   * Waits for the ack of every message (each carries NLM_F_ACK; nfnetlink queues them and delivers
   * them once the batch is committed or aborted, all before sendto() returns). An error on
   * BATCH_BEGIN is about the whole batch and is then the only answer. A failed commit is reported
   * against the first element message (the kernel acks the head of the skb past BATCH_BEGIN) before
   * that message's own 0-ack: an error and a 0-ack for one message mean the commit failed.
   */
  private collect(ops: ElementOp[], batch: EncodedBatch, what: string): void {
    const c = loadLibc();
    const n = batch.msgs.length;
    const done: boolean[] = new Array<boolean>(n).fill(false);
    const acked: boolean[] = new Array<boolean>(n).fill(false);
    const errors: { k: number; ack: NfAck }[] = [];
    let batchErr: NfAck | undefined;
    let pending = n;
    const take = (buf: Buffer): void => {
      for (const m of parseMessages(buf)) {
        if (m.type !== C.NLMSG_ERROR) continue;
        const i = (m.seq - batch.firstSeq) >>> 0;
        if (i > n + 1) continue; // not this batch's (a stale answer)
        const ack = parseNfAck(m.seq, m.flags, m.data);
        if (i === 0 || i === n + 1) {
          if (ack.errno !== 0) batchErr = ack;
          continue;
        }
        const k = i - 1;
        if (ack.errno !== 0) errors.push({ k, ack });
        else acked[k] = true;
        if (!done[k]) {
          done[k] = true;
          pending--;
        }
      }
    };
    while (pending > 0 && !batchErr) {
      const r = c.recv(this.fd, this.rbuf, this.rbuf.length, 0);
      if (r < 0) {
        const errno = loadKoffi().errno();
        if (errno === EINTR) continue;
        if (errno === EAGAIN) throw new NftNetlinkError(what, errno, undefined, undefined, `no answer from the kernel for ${pending} of ${n} messages within ${NftElementWriter.recvTimeoutSec}s; outcome unknown`);
        if (errno === ENOBUFS) throw new NftNetlinkError(what, errno, undefined, undefined, 'acks lost (receive buffer overrun); outcome unknown');
        throw new NftNetlinkError(what, errno, undefined, undefined, 'recv');
      }
      take(this.rbuf.subarray(0, r));
    }
    if (errors.length) {
      // on failure only: read what is left of this batch's answers (already queued), to tell a failed commit
      for (;;) {
        const r = c.recv(this.fd, this.rbuf, this.rbuf.length, N.MSG_DONTWAIT);
        if (r < 0 && loadKoffi().errno() === EINTR) continue;
        if (r <= 0) break;
        take(this.rbuf.subarray(0, r));
      }
    }
    if (batchErr) throw new NftNetlinkError(what, batchErr.errno, undefined, undefined, batchErr.extMsg);
    if (!errors.length) return;
    // the first failing message in batch order: later ones often fail only because of it
    errors.sort((a, b) => a.k - b.k);
    const { k, ack } = errors[0];
    if (acked[k]) throw new NftNetlinkError(what, ack.errno, undefined, undefined, ['commit failed', ack.extMsg].filter(Boolean).join(': '));
    const msg = batch.msgs[k];
    const { opIndex, exact } = opOfError(msg, ack.offset);
    const op = ops[opIndex];
    const notes: string[] = [];
    if (ack.extMsg) notes.push(ack.extMsg);
    if (!exact) notes.push(`the message carried ${msg.ops.length} elements; the error is not about one of them`);
    if (op.op === 'destroy' && (ack.errno === EINVAL || ack.errno === EOPNOTSUPP) && kernelBefore(6, 3)) notes.push('destroy element needs Linux >= 6.3');
    throw new NftNetlinkError(renderElementOp(op), ack.errno, op, opIndex, notes.join('; ') || undefined);
  }
}
