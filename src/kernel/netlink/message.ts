// Pure rtnetlink message encoding and decoding (no I/O): Buffers, host byte order (little-endian
// on every platform this project targets), attributes padded to 4 bytes.
import { constants as osConstants } from 'node:os';
import * as C from './constants.js';

const align4 = (n: number): number => (n + 3) & ~3;

/** One attribute: rta_len (header + payload, unpadded), rta_type, payload, zero padding to 4 bytes. */
export function attr(type: number, payload: Buffer): Buffer {
  const len = C.NLA_HDRLEN + payload.length;
  const buf = Buffer.alloc(align4(len));
  buf.writeUInt16LE(len, 0);
  buf.writeUInt16LE(type, 2);
  payload.copy(buf, C.NLA_HDRLEN);
  return buf;
}

/** A nested attribute (children are already padded). NLA_F_NESTED is not set, as iproute2 does not. */
export function nest(type: number, ...children: Buffer[]): Buffer {
  return attr(type, Buffer.concat(children));
}

export function attrU32(type: number, v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0, 0);
  return attr(type, b);
}

/** NUL-terminated string attribute. */
export function attrStr(type: number, s: string): Buffer {
  return attr(type, Buffer.from(s + '\0', 'utf8'));
}

/** IFLA_INFO_KIND without the NUL, as iproute2 sends it (the kernel compares with nla_strcmp). */
function attrKind(kind: string): Buffer {
  return attr(C.IFLA_INFO_KIND, Buffer.from(kind, 'utf8'));
}

export function ipv4Bytes(ip: string): Buffer {
  const parts = ip.split('.').map((p) => Number(p));
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) throw new Error(`bad IPv4 address: ${ip}`);
  return Buffer.from(parts);
}

export interface IfInfo {
  family?: number;
  type?: number;
  index?: number;
  flags?: number;
  change?: number;
}

export function ifinfomsg(i: IfInfo = {}): Buffer {
  const b = Buffer.alloc(C.IFINFOMSG_LEN);
  b.writeUInt8(i.family ?? C.AF_UNSPEC, 0);
  b.writeUInt16LE(i.type ?? 0, 2);
  b.writeInt32LE(i.index ?? 0, 4);
  b.writeUInt32LE((i.flags ?? 0) >>> 0, 8);
  b.writeUInt32LE((i.change ?? 0) >>> 0, 12);
  return b;
}

export function ifaddrmsg(family: number, prefixLen: number, index: number, scope = C.RT_SCOPE_UNIVERSE, flags = 0): Buffer {
  const b = Buffer.alloc(C.IFADDRMSG_LEN);
  b.writeUInt8(family, 0);
  b.writeUInt8(prefixLen, 1);
  b.writeUInt8(flags, 2);
  b.writeUInt8(scope, 3);
  b.writeUInt32LE(index >>> 0, 4);
  return b;
}

export interface RtMsg {
  family: number;
  dstLen: number;
  table?: number;
  protocol?: number;
  scope?: number;
  type?: number;
}

export function rtmsg(r: RtMsg): Buffer {
  const b = Buffer.alloc(C.RTMSG_LEN);
  b.writeUInt8(r.family, 0);
  b.writeUInt8(r.dstLen, 1);
  b.writeUInt8(0, 2); // src_len
  b.writeUInt8(0, 3); // tos
  b.writeUInt8(r.table ?? C.RT_TABLE_MAIN, 4);
  b.writeUInt8(r.protocol ?? C.RTPROT_BOOT, 5);
  b.writeUInt8(r.scope ?? C.RT_SCOPE_UNIVERSE, 6);
  b.writeUInt8(r.type ?? C.RTN_UNICAST, 7);
  b.writeUInt32LE(0, 8); // flags
  return b;
}

/** A full netlink message: nlmsghdr + fixed header + attributes. */
export function nlmsg(type: number, flags: number, seq: number, fixed: Buffer, attrs: Buffer[] = []): Buffer {
  const body = Buffer.concat([fixed, ...attrs]);
  const len = C.NLMSG_HDRLEN + body.length;
  const buf = Buffer.alloc(align4(len));
  buf.writeUInt32LE(len, 0);
  buf.writeUInt16LE(type, 4);
  buf.writeUInt16LE(flags, 6);
  buf.writeUInt32LE(seq >>> 0, 8);
  buf.writeUInt32LE(0, 12); // pid 0: to the kernel; the kernel fills in ours on replies
  body.copy(buf, C.NLMSG_HDRLEN);
  return buf;
}

const CREATE = C.NLM_F_REQUEST | C.NLM_F_ACK | C.NLM_F_CREATE | C.NLM_F_EXCL;
const CHANGE = C.NLM_F_REQUEST | C.NLM_F_ACK;

// ---------------------------------------------------------------- request builders

/**
 * RTM_NEWLINK veth NAME with its peer PEER created directly in the netns behind peerNetnsFd:
 * ifinfomsg, IFLA_IFNAME, IFLA_LINKINFO{IFLA_INFO_KIND "veth", IFLA_INFO_DATA{VETH_INFO_PEER{ifinfomsg, IFLA_IFNAME, IFLA_NET_NS_FD}}}
 */
export function newVeth(seq: number, o: { name: string; peerName: string; peerNetnsFd?: number; mtu?: number; up?: boolean; master?: number }): Buffer {
  // attribute order and encodings as iproute2 6.1 sends them (checked with strace)
  const peerAttrs: Buffer[] = [];
  if (o.peerNetnsFd !== undefined) peerAttrs.push(attrU32(C.IFLA_NET_NS_FD, o.peerNetnsFd));
  peerAttrs.push(attrStr(C.IFLA_IFNAME, o.peerName));
  if (o.mtu !== undefined) peerAttrs.push(attrU32(C.IFLA_MTU, o.mtu));
  const peer = attr(C.VETH_INFO_PEER, Buffer.concat([ifinfomsg(), ...peerAttrs]));
  const attrs = [attrStr(C.IFLA_IFNAME, o.name)];
  if (o.mtu !== undefined) attrs.push(attrU32(C.IFLA_MTU, o.mtu));
  if (o.master !== undefined) attrs.push(attrU32(C.IFLA_MASTER, o.master));
  attrs.push(nest(C.IFLA_LINKINFO, attrKind('veth'), nest(C.IFLA_INFO_DATA, peer)));
  const up = o.up ? C.IFF_UP : 0;
  return nlmsg(C.RTM_NEWLINK, CREATE, seq, ifinfomsg({ flags: up, change: up }), attrs);
}

/** RTM_NEWLINK bridge NAME (optionally up in the same message). */
export function newBridge(seq: number, o: { name: string; up?: boolean; mtu?: number }): Buffer {
  const attrs = [attrStr(C.IFLA_IFNAME, o.name)];
  if (o.mtu !== undefined) attrs.push(attrU32(C.IFLA_MTU, o.mtu));
  attrs.push(nest(C.IFLA_LINKINFO, attrKind('bridge')));
  const up = o.up ? C.IFF_UP : 0;
  return nlmsg(C.RTM_NEWLINK, CREATE, seq, ifinfomsg({ flags: up, change: up }), attrs);
}

/** RTM_NEWLINK on an existing link (by index, or by name when index is 0): set up/down and/or master (0 = release). */
export function setLink(seq: number, o: { index?: number; name?: string; up?: boolean; master?: number }): Buffer {
  if (!o.index && !o.name) throw new Error('setLink needs an index or a name');
  const attrs: Buffer[] = [];
  if (!o.index && o.name) attrs.push(attrStr(C.IFLA_IFNAME, o.name));
  if (o.master !== undefined) attrs.push(attrU32(C.IFLA_MASTER, o.master));
  const change = o.up === undefined ? 0 : C.IFF_UP;
  const flags = o.up ? C.IFF_UP : 0;
  return nlmsg(C.RTM_NEWLINK, CHANGE, seq, ifinfomsg({ index: o.index ?? 0, flags, change }), attrs);
}

/** RTM_DELLINK by index or name. */
export function delLink(seq: number, o: { index?: number; name?: string }): Buffer {
  const attrs = !o.index && o.name ? [attrStr(C.IFLA_IFNAME, o.name)] : [];
  return nlmsg(C.RTM_DELLINK, CHANGE, seq, ifinfomsg({ index: o.index ?? 0 }), attrs);
}

/** RTM_GETLINK by name (or index): the kernel answers with one RTM_NEWLINK. */
export function getLink(seq: number, o: { index?: number; name?: string }): Buffer {
  const attrs = !o.index && o.name ? [attrStr(C.IFLA_IFNAME, o.name)] : [];
  return nlmsg(C.RTM_GETLINK, C.NLM_F_REQUEST, seq, ifinfomsg({ index: o.index ?? 0 }), attrs);
}

/** RTM_NEWADDR IPv4 ADDRESS/PREFIX on ifindex (IFA_LOCAL + IFA_ADDRESS, as iproute2 sends). */
export function newAddr4(seq: number, o: { index: number; address: string; prefixLen: number }): Buffer {
  const a = ipv4Bytes(o.address);
  return nlmsg(C.RTM_NEWADDR, CREATE, seq, ifaddrmsg(C.AF_INET, o.prefixLen, o.index), [attr(C.IFA_LOCAL, a), attr(C.IFA_ADDRESS, a)]);
}

/** RTM_NEWROUTE IPv4 DST/LEN (0.0.0.0/0 = default) via GATEWAY [dev OIF], table main. */
export function newRoute4(seq: number, o: { dst?: string; dstLen?: number; gateway?: string; oif?: number }): Buffer {
  const dstLen = o.dstLen ?? 0;
  const attrs: Buffer[] = [];
  if (dstLen > 0 && o.dst) attrs.push(attr(C.RTA_DST, ipv4Bytes(o.dst)));
  if (o.gateway) attrs.push(attr(C.RTA_GATEWAY, ipv4Bytes(o.gateway)));
  if (o.oif) attrs.push(attrU32(C.RTA_OIF, o.oif));
  return nlmsg(C.RTM_NEWROUTE, CREATE, seq, rtmsg({ family: C.AF_INET, dstLen }), attrs);
}

// ---------------------------------------------------------------- decoding

export interface NlMsg {
  type: number;
  flags: number;
  seq: number;
  pid: number;
  /** payload after the nlmsghdr */
  data: Buffer;
}

/** Splits a received datagram into messages. */
export function parseMessages(buf: Buffer): NlMsg[] {
  const out: NlMsg[] = [];
  let off = 0;
  while (off + C.NLMSG_HDRLEN <= buf.length) {
    const len = buf.readUInt32LE(off);
    if (len < C.NLMSG_HDRLEN || off + len > buf.length) throw new Error(`truncated netlink message (len ${len} at ${off} of ${buf.length})`);
    out.push({
      type: buf.readUInt16LE(off + 4),
      flags: buf.readUInt16LE(off + 6),
      seq: buf.readUInt32LE(off + 8),
      pid: buf.readUInt32LE(off + 12),
      data: buf.subarray(off + C.NLMSG_HDRLEN, off + len),
    });
    off += align4(len);
  }
  return out;
}

/** Attributes of a flat attribute stream, by type (NLA_F_NESTED stripped). Later duplicates win. */
export function parseAttrs(buf: Buffer): Map<number, Buffer> {
  const m = new Map<number, Buffer>();
  let off = 0;
  while (off + C.NLA_HDRLEN <= buf.length) {
    const len = buf.readUInt16LE(off);
    const type = buf.readUInt16LE(off + 2) & C.NLA_TYPE_MASK;
    if (len < C.NLA_HDRLEN || off + len > buf.length) break;
    m.set(type, buf.subarray(off + C.NLA_HDRLEN, off + len));
    off += align4(len);
  }
  return m;
}

const errnoNames = new Map<number, string>();
for (const [name, num] of Object.entries(osConstants.errno)) if (!errnoNames.has(num)) errnoNames.set(num, name);
/** EEXIST for 17, etc. */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `errno ${errno}`;
}

export interface Ack {
  seq: number;
  /** 0 on success, else a positive errno */
  errno: number;
  /** kernel extended ack message (NETLINK_EXT_ACK), if any */
  extMsg?: string;
}

/** Decodes an NLMSG_ERROR payload: s32 error (negative errno, 0 = ack), then the (capped) request header, then TLVs. */
export function parseAck(m: NlMsg): Ack {
  const err = m.data.readInt32LE(0);
  const ack: Ack = { seq: m.seq, errno: err === 0 ? 0 : -err };
  if (m.flags & C.NLM_F_ACK_TLVS) {
    // with NLM_F_CAPPED only the request's nlmsghdr is echoed, else the whole request
    let off = 4 + C.NLMSG_HDRLEN;
    if (!(m.flags & C.NLM_F_CAPPED) && m.data.length >= 4 + C.NLMSG_HDRLEN) off = 4 + align4(m.data.readUInt32LE(4));
    const tlvs = parseAttrs(m.data.subarray(off));
    const msg = tlvs.get(C.NLMSGERR_ATTR_MSG);
    if (msg) ack.extMsg = msg.toString('utf8').replace(/\0+$/, '');
  }
  return ack;
}

export interface LinkInfo {
  index: number;
  flags: number;
  name?: string;
  mac?: string;
  mtu?: number;
  master?: number;
  kind?: string;
}

/** Decodes an RTM_NEWLINK payload (ifinfomsg + attributes). */
export function parseLink(data: Buffer): LinkInfo {
  const index = data.readInt32LE(4);
  const flags = data.readUInt32LE(8);
  const attrs = parseAttrs(data.subarray(C.IFINFOMSG_LEN));
  const info: LinkInfo = { index, flags };
  const name = attrs.get(C.IFLA_IFNAME);
  if (name) info.name = name.toString('utf8').replace(/\0+$/, '');
  const mac = attrs.get(C.IFLA_ADDRESS);
  if (mac) info.mac = [...mac].map((b) => b.toString(16).padStart(2, '0')).join(':');
  const mtu = attrs.get(C.IFLA_MTU);
  if (mtu && mtu.length >= 4) info.mtu = mtu.readUInt32LE(0);
  const master = attrs.get(C.IFLA_MASTER);
  if (master && master.length >= 4) info.master = master.readUInt32LE(0);
  const li = attrs.get(C.IFLA_LINKINFO);
  if (li) {
    const kind = parseAttrs(li).get(C.IFLA_INFO_KIND);
    if (kind) info.kind = kind.toString('utf8').replace(/\0+$/, '');
  }
  return info;
}
