// Reads nf_tables objects straight over nfnetlink (no `nft` process): the rules of a table or chain
// (handle and comment) and the elements of a set or map (raw key, data and comment), or one element
// by its key. This is what the CNI hot path needs to check its shared rules cheaply and to find an
// attachment's elements; rulesets are still written with `nft -f`.
//
// Requests (as nft/libnftnl send them):
//   NFT_MSG_GETRULE    flags REQUEST|DUMP, nfgenmsg{family}, NFTA_RULE_TABLE, [NFTA_RULE_CHAIN]
//   NFT_MSG_GETSETELEM flags REQUEST|DUMP, nfgenmsg{family}, NFTA_SET_ELEM_LIST_TABLE, _SET
//   NFT_MSG_GETSETELEM flags REQUEST|ACK,  ... plus NFTA_SET_ELEM_LIST_ELEMENTS { one element's key }
// Answers are NEWRULE / NEWSETELEM messages, then NLMSG_DONE (dump) or an ack; a missing table or
// set is ENOENT (a rule dump of a missing table is simply empty).
import * as C from './constants.js';
import * as N from './nfnetlink-constants.js';
import { parseMessages } from './message.js';
import { NftNetlinkError, openNfnl, valueBytes, type ElemPart } from './nft-elements.js';
import { loadKoffi, loadLibc } from './socket.js';

const NFT_MSG_GETRULE = 7;
const NFT_MSG_NEWRULE = 6;
const NFTA_RULE_TABLE = 1;
const NFTA_RULE_CHAIN = 2;
const NFTA_RULE_HANDLE = 3;
const NFTA_RULE_USERDATA = 7;
const NFTNL_UDATA_RULE_COMMENT = 0;
const ENOENT = 2;
const EINTR = 4;
const EAGAIN = 11;
const FAMILY: Record<string, number> = { inet: N.NFPROTO_INET, ip: N.NFPROTO_IPV4, ip6: N.NFPROTO_IPV6 };

export interface NftRuleInfo {
  chain: string;
  handle: bigint;
  comment?: string;
}

export interface NftElementInfo {
  /** NFTA_DATA_VALUE of the key, as the kernel holds it (each part of a concatenation padded to 4 bytes) */
  key: Buffer;
  /** NFTA_DATA_VALUE of a map's data */
  data?: Buffer;
  comment?: string;
}

type Family = 'inet' | 'ip' | 'ip6';

/** Attributes in order (the same type may repeat, e.g. NFTA_LIST_ELEM), NLA_F_NESTED stripped. */
function attrList(buf: Buffer): [number, Buffer][] {
  const out: [number, Buffer][] = [];
  let off = 0;
  while (off + C.NLA_HDRLEN <= buf.length) {
    const len = buf.readUInt16LE(off);
    if (len < C.NLA_HDRLEN || off + len > buf.length) break;
    out.push([buf.readUInt16LE(off + 2) & C.NLA_TYPE_MASK, buf.subarray(off + C.NLA_HDRLEN, off + len)]);
    off += (len + 3) & ~3;
  }
  return out;
}

const first = (attrs: [number, Buffer][], type: number): Buffer | undefined => attrs.find(([t]) => t === type)?.[1];
const cstr = (b: Buffer): string => b.toString('utf8').replace(/\0.*$/s, '');

/** The comment in a libnftnl udata TLV stream ({u8 type, u8 len, value}). */
export function udataComment(b: Buffer, commentType: number): string | undefined {
  for (let off = 0; off + 2 <= b.length; ) {
    const type = b[off];
    const len = b[off + 1];
    if (off + 2 + len > b.length) return undefined;
    if (type === commentType) return cstr(b.subarray(off + 2, off + 2 + len));
    off += 2 + len;
  }
  return undefined;
}

function nfgen(family: number): Buffer {
  const b = Buffer.alloc(N.NFGENMSG_LEN);
  b[0] = family;
  b[1] = N.NFNETLINK_V0;
  return b;
}

function attr(type: number, payload: Buffer, nested = false): Buffer {
  const len = C.NLA_HDRLEN + payload.length;
  const b = Buffer.alloc((len + 3) & ~3);
  b.writeUInt16LE(len, 0);
  b.writeUInt16LE(nested ? type | C.NLA_F_NESTED : type, 2);
  payload.copy(b, C.NLA_HDRLEN);
  return b;
}
const strAttr = (type: number, s: string): Buffer => attr(type, Buffer.from(`${s}\0`));

function message(type: number, flags: number, seq: number, family: number, attrs: Buffer[]): Buffer {
  const body = Buffer.concat([nfgen(family), ...attrs]);
  const h = Buffer.alloc(C.NLMSG_HDRLEN);
  h.writeUInt32LE(C.NLMSG_HDRLEN + body.length, 0);
  h.writeUInt16LE(N.nftMsgType(type), 4);
  h.writeUInt16LE(flags, 6);
  h.writeUInt32LE(seq >>> 0, 8);
  return Buffer.concat([h, body]);
}

export function parseRule(data: Buffer): NftRuleInfo {
  const a = attrList(data.subarray(N.NFGENMSG_LEN));
  const chain = first(a, NFTA_RULE_CHAIN);
  const handle = first(a, NFTA_RULE_HANDLE);
  const udata = first(a, NFTA_RULE_USERDATA);
  const r: NftRuleInfo = { chain: chain ? cstr(chain) : '', handle: handle && handle.length >= 8 ? handle.readBigUInt64BE(0) : 0n };
  const comment = udata && udataComment(udata, NFTNL_UDATA_RULE_COMMENT);
  if (comment !== undefined) r.comment = comment;
  return r;
}

export function parseSetElements(data: Buffer): NftElementInfo[] {
  const top = attrList(data.subarray(N.NFGENMSG_LEN));
  const list = first(top, N.NFTA_SET_ELEM_LIST_ELEMENTS);
  if (!list) return [];
  const out: NftElementInfo[] = [];
  for (const [t, el] of attrList(list)) {
    if (t !== N.NFTA_LIST_ELEM) continue;
    const ea = attrList(el);
    const key = first(ea, N.NFTA_SET_ELEM_KEY);
    const keyVal = key && first(attrList(key), N.NFTA_DATA_VALUE);
    if (!keyVal) continue;
    const e: NftElementInfo = { key: Buffer.from(keyVal) };
    const data = first(ea, N.NFTA_SET_ELEM_DATA);
    const dataVal = data && first(attrList(data), N.NFTA_DATA_VALUE);
    if (dataVal) e.data = Buffer.from(dataVal);
    const udata = first(ea, N.NFTA_SET_ELEM_USERDATA);
    const comment = udata && udataComment(udata, N.NFTNL_UDATA_SET_ELEM_COMMENT);
    if (comment !== undefined) e.comment = comment;
    out.push(e);
  }
  return out;
}

/**
 * Reads over one NETLINK_NETFILTER socket in the current netns. Synchronous (a few syscalls, no
 * process): each call is one request and its whole answer.
 */
export class NftReader {
  static recvTimeoutSec = 5;
  private readonly fd: number;
  private seq = Math.floor(Math.random() * 0x7fffffff);
  private readonly rbuf = Buffer.alloc(256 * 1024);
  private closed = false;

  constructor() {
    this.fd = openNfnl(NftReader.recvTimeoutSec);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    loadLibc().close(this.fd);
  }

  /** Rules of a table (or of one chain of it) in kernel order; [] when the table or chain is missing. */
  rules(family: Family, table: string, chain?: string): NftRuleInfo[] {
    const attrs = [strAttr(NFTA_RULE_TABLE, table)];
    if (chain !== undefined) attrs.push(strAttr(NFTA_RULE_CHAIN, chain));
    const out: NftRuleInfo[] = [];
    const err = this.request(NFT_MSG_GETRULE, C.NLM_F_REQUEST | C.NLM_F_DUMP, family, attrs, (type, data) => {
      if (type === N.nftMsgType(NFT_MSG_NEWRULE)) out.push(parseRule(data));
    });
    if (err === ENOENT) return [];
    if (err) throw new NftNetlinkError(`list rules of ${family} ${table}${chain ? ` chain ${chain}` : ''}`, err);
    return out;
  }

  /** Every element of a set or map; undefined when the table or set does not exist. */
  elements(family: Family, table: string, set: string): NftElementInfo[] | undefined {
    const attrs = [strAttr(N.NFTA_SET_ELEM_LIST_TABLE, table), strAttr(N.NFTA_SET_ELEM_LIST_SET, set)];
    const out: NftElementInfo[] = [];
    const err = this.request(N.NFT_MSG_GETSETELEM, C.NLM_F_REQUEST | C.NLM_F_DUMP, family, attrs, (type, data) => {
      if (type === N.nftMsgType(N.NFT_MSG_NEWSETELEM)) out.push(...parseSetElements(data));
    });
    if (err === ENOENT) return undefined;
    if (err) throw new NftNetlinkError(`list set ${family} ${table} ${set}`, err);
    return out;
  }

  /** One element by its key; undefined when it (or the set) does not exist. */
  element(family: Family, table: string, set: string, key: ElemPart[]): NftElementInfo | undefined {
    const keyAttr = attr(N.NFTA_SET_ELEM_KEY, attr(N.NFTA_DATA_VALUE, valueBytes(key)), true);
    const elems = attr(N.NFTA_SET_ELEM_LIST_ELEMENTS, attr(N.NFTA_LIST_ELEM, keyAttr, true), true);
    const attrs = [strAttr(N.NFTA_SET_ELEM_LIST_TABLE, table), strAttr(N.NFTA_SET_ELEM_LIST_SET, set), elems];
    let found: NftElementInfo | undefined;
    const err = this.request(N.NFT_MSG_GETSETELEM, C.NLM_F_REQUEST | C.NLM_F_ACK, family, attrs, (type, data) => {
      if (type === N.nftMsgType(N.NFT_MSG_NEWSETELEM)) found ??= parseSetElements(data)[0];
    });
    if (err === ENOENT) return undefined;
    if (err) throw new NftNetlinkError(`get element of ${family} ${table} ${set}`, err);
    return found;
  }

  /** Sends one request and feeds every answer to onMsg until DONE or the ack; returns the errno (0 = ok). */
  private request(type: number, flags: number, family: Family, attrs: Buffer[], onMsg: (type: number, data: Buffer) => void): number {
    if (this.closed) throw new Error('NftReader: closed');
    const fam = FAMILY[family];
    if (fam === undefined) throw new Error(`bad family: ${family}`);
    const c = loadLibc();
    const seq = (this.seq = (this.seq + 1) >>> 0);
    const msg = message(type, flags, seq, fam, attrs);
    const kernel = Buffer.alloc(12);
    kernel.writeUInt16LE(C.AF_NETLINK, 0);
    for (;;) {
      const n = c.sendto(this.fd, msg, msg.length, 0, kernel, kernel.length);
      if (n >= 0) break;
      const e = loadKoffi().errno();
      if (e !== EINTR) throw new NftNetlinkError('nfnetlink request', e, undefined, undefined, 'sendto');
    }
    for (;;) {
      const r = c.recv(this.fd, this.rbuf, this.rbuf.length, 0);
      if (r < 0) {
        const e = loadKoffi().errno();
        if (e === EINTR) continue;
        throw new NftNetlinkError('nfnetlink request', e, undefined, undefined, e === EAGAIN ? `no answer within ${NftReader.recvTimeoutSec}s` : 'recv');
      }
      for (const m of parseMessages(this.rbuf.subarray(0, r))) {
        if (m.seq !== seq) continue; // a stale answer to an earlier, abandoned request
        if (m.type === C.NLMSG_DONE) return 0;
        if (m.type === C.NLMSG_ERROR) return -m.data.readInt32LE(0);
        onMsg(m.type, m.data);
      }
    }
  }
}
