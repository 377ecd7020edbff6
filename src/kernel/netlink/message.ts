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

/** RTM_NEWLINK on an existing link by name: its device group (IFLA_GROUP). */
export function setLinkGroup(seq: number, o: { name: string; group: number }): Buffer {
  return nlmsg(C.RTM_NEWLINK, CHANGE, seq, ifinfomsg({ index: 0 }), [attrStr(C.IFLA_IFNAME, o.name), attrU32(C.IFLA_GROUP, o.group)]);
}

/** RTM_DELLINK of every link of a device group: one unregister for all of them. */
export function delLinkGroup(seq: number, group: number): Buffer {
  return nlmsg(C.RTM_DELLINK, CHANGE, seq, ifinfomsg({ index: 0 }), [attrU32(C.IFLA_GROUP, group)]);
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

// ---------------------------------------------------------------- generic builders (the adapter's)

export function attrU8(type: number, v: number): Buffer {
  return attr(type, Buffer.from([v & 0xff]));
}

export function attrU16(type: number, v: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(v & 0xffff, 0);
  return attr(type, b);
}

export function macBytes(mac: string): Buffer {
  const b = Buffer.from(mac.split(':').map((x) => parseInt(x, 16)));
  if (b.length !== 6 || mac.split(':').some((x) => !/^[0-9a-fA-F]{2}$/.test(x))) throw new Error(`bad MAC address: ${mac}`);
  return b;
}

/** Attributes common to link creation and change. */
export interface LinkAttrs {
  name?: string;
  mac?: string;
  mtu?: number;
  /** IFLA_LINK: parent (macvlan) ifindex, resolved in the netns of the socket */
  link?: number;
  /** IFLA_MASTER: bridge ifindex; 0 releases */
  master?: number;
  /** IFLA_NET_NS_FD: create or move the link into the netns behind this fd */
  netnsFd?: number;
  alias?: string;
}

function linkAttrList(o: LinkAttrs): Buffer[] {
  // the order iproute2 6.1 emits them in
  const a: Buffer[] = [];
  if (o.link !== undefined) a.push(attrU32(C.IFLA_LINK, o.link));
  if (o.netnsFd !== undefined) a.push(attrU32(C.IFLA_NET_NS_FD, o.netnsFd));
  if (o.name !== undefined) a.push(attrStr(C.IFLA_IFNAME, o.name));
  if (o.mac !== undefined) a.push(attr(C.IFLA_ADDRESS, macBytes(o.mac)));
  if (o.mtu !== undefined) a.push(attrU32(C.IFLA_MTU, o.mtu));
  // without a NUL, as iproute2 sends it: an empty alias then clears it
  if (o.alias !== undefined) a.push(attr(C.IFLA_IFALIAS, Buffer.from(o.alias, 'utf8')));
  if (o.master !== undefined) a.push(attrU32(C.IFLA_MASTER, o.master));
  return a;
}

export interface NewLinkReq extends LinkAttrs {
  name: string;
  kind: string;
  /** children of IFLA_INFO_DATA (already encoded) */
  data?: Buffer[];
}

/** RTM_NEWLINK create (NLM_F_CREATE|NLM_F_EXCL) of a link of any kind. */
export function newLink(seq: number, o: NewLinkReq): Buffer {
  const info = [attrKind(o.kind)];
  if (o.data && o.data.length) info.push(nest(C.IFLA_INFO_DATA, ...o.data));
  return nlmsg(C.RTM_NEWLINK, CREATE, seq, ifinfomsg(), [...linkAttrList(o), nest(C.IFLA_LINKINFO, ...info)]);
}

/** VETH_INFO_PEER (an ifinfomsg followed by the peer's link attributes), for newLink's data. */
export function vethPeer(o: LinkAttrs): Buffer {
  return attr(C.VETH_INFO_PEER, Buffer.concat([ifinfomsg(), ...linkAttrList(o)]));
}

export interface ChangeLinkReq extends LinkAttrs {
  index: number;
  up?: boolean;
  promisc?: boolean;
}

/** RTM_NEWLINK without NLM_F_CREATE on ifindex: what `ip link set` sends (name here renames). */
export function changeLink(seq: number, o: ChangeLinkReq): Buffer {
  let flags = 0;
  let change = 0;
  if (o.up !== undefined) {
    change |= C.IFF_UP;
    if (o.up) flags |= C.IFF_UP;
  }
  if (o.promisc !== undefined) {
    change |= C.IFF_PROMISC;
    if (o.promisc) flags |= C.IFF_PROMISC;
  }
  return nlmsg(C.RTM_NEWLINK, CHANGE, seq, ifinfomsg({ index: o.index, flags, change }), linkAttrList(o));
}

/**
 * RTM_SETLINK AF_BRIDGE with IFLA_PROTINFO{IFLA_BRPORT_MODE}: `bridge link set dev X hairpin on`.
 * The bridge treats a PROTINFO without NLA_F_NESTED as the legacy one-byte port state, so the flag is required.
 */
export function bridgePortHairpin(seq: number, index: number, on: boolean): Buffer {
  const protinfo = attr(C.IFLA_PROTINFO | C.NLA_F_NESTED, attrU8(C.IFLA_BRPORT_MODE, on ? 1 : 0));
  return nlmsg(C.RTM_SETLINK, CHANGE, seq, ifinfomsg({ family: C.AF_BRIDGE, index }), [protinfo]);
}

export interface AddrReq {
  index: number;
  address: string;
  prefixLen: number;
  scope?: number;
  /** IFA_F_* (sent in ifa_flags, low byte, and IFA_FLAGS, all bits) */
  flags?: number;
  replace?: boolean;
}

/** RTM_NEWADDR / RTM_DELADDR: IFA_LOCAL + IFA_ADDRESS (no peer), as `ip addr add|del` sends them. */
export function addrMsg(seq: number, type: typeof C.RTM_NEWADDR | typeof C.RTM_DELADDR, o: AddrReq): Buffer {
  const { family, bytes } = ipBytes(o.address);
  const flags = o.flags ?? 0;
  const attrs = [attr(C.IFA_LOCAL, bytes), attr(C.IFA_ADDRESS, bytes)];
  if (flags > 0xff || (flags && type === C.RTM_NEWADDR)) attrs.push(attrU32(C.IFA_FLAGS, flags));
  const nlf = type === C.RTM_DELADDR ? CHANGE : o.replace ? C.NLM_F_REQUEST | C.NLM_F_ACK | C.NLM_F_CREATE | C.NLM_F_REPLACE : CREATE;
  return nlmsg(type, nlf, seq, ifaddrmsg(family, o.prefixLen, o.index, o.scope ?? C.RT_SCOPE_UNIVERSE, flags & 0xff), attrs);
}

export interface RouteReq {
  family: number;
  /** undefined for a default route */
  dst?: string;
  dstLen: number;
  gateway?: string;
  oif?: number;
  prefsrc?: string;
  priority?: number;
  table: number;
  protocol: number;
  scope: number;
  type: number;
  onlink?: boolean;
  mtu?: number;
  advmss?: number;
  /** RTM_NEWROUTE: replace (NLM_F_REPLACE) instead of exclusive create */
  replace?: boolean;
}

/** RTM_NEWROUTE / RTM_DELROUTE with the attributes `ip route add|replace|del` sends. */
export function routeMsg(seq: number, type: typeof C.RTM_NEWROUTE | typeof C.RTM_DELROUTE, o: RouteReq): Buffer {
  const hdr = Buffer.alloc(C.RTMSG_LEN);
  hdr.writeUInt8(o.family, 0);
  hdr.writeUInt8(o.dstLen, 1);
  // tables above 255 only fit in RTA_TABLE
  hdr.writeUInt8(o.table < 256 ? o.table : C.RT_TABLE_UNSPEC, 4);
  hdr.writeUInt8(o.protocol, 5);
  hdr.writeUInt8(o.scope, 6);
  hdr.writeUInt8(o.type, 7);
  hdr.writeUInt32LE(o.onlink ? C.RTNH_F_ONLINK : 0, 8);
  const attrs: Buffer[] = [attrU32(C.RTA_TABLE, o.table)];
  if (o.dst !== undefined && o.dstLen > 0) attrs.push(attr(C.RTA_DST, ipBytes(o.dst).bytes));
  if (o.priority !== undefined) attrs.push(attrU32(C.RTA_PRIORITY, o.priority));
  if (o.prefsrc !== undefined) attrs.push(attr(C.RTA_PREFSRC, ipBytes(o.prefsrc).bytes));
  if (o.gateway !== undefined) attrs.push(attr(C.RTA_GATEWAY, ipBytes(o.gateway).bytes));
  if (o.mtu !== undefined || o.advmss !== undefined) {
    const m: Buffer[] = [];
    if (o.mtu !== undefined) m.push(attrU32(C.RTAX_MTU, o.mtu));
    if (o.advmss !== undefined) m.push(attrU32(C.RTAX_ADVMSS, o.advmss));
    attrs.push(attr(C.RTA_METRICS | C.NLA_F_NESTED, Buffer.concat(m)));
  }
  if (o.oif !== undefined) attrs.push(attrU32(C.RTA_OIF, o.oif));
  const nlf = type === C.RTM_DELROUTE ? CHANGE : o.replace ? C.NLM_F_REQUEST | C.NLM_F_ACK | C.NLM_F_CREATE | C.NLM_F_REPLACE : CREATE;
  return nlmsg(type, nlf, seq, hdr, attrs);
}

/** RTM_GETADDR dump (every address of the netns; filtered by the caller). */
export function dumpAddrs(seq: number, family = C.AF_UNSPEC): Buffer {
  return nlmsg(C.RTM_GETADDR, C.NLM_F_REQUEST | C.NLM_F_DUMP, seq, ifaddrmsg(family, 0, 0));
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
  operState?: number;
  alias?: string;
  /** IFLA_LINK: peer / parent ifindex (in the netns named by linkNetnsId when present) */
  link?: number;
  linkNetnsId?: number;
  slaveKind?: string;
  /** bridge port IFLA_BRPORT_MODE, when the link is a bridge port */
  hairpin?: boolean;
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
    const lia = parseAttrs(li);
    const kind = lia.get(C.IFLA_INFO_KIND);
    if (kind) info.kind = cstr(kind);
    const sk = lia.get(C.IFLA_INFO_SLAVE_KIND);
    if (sk) {
      info.slaveKind = cstr(sk);
      const sd = lia.get(C.IFLA_INFO_SLAVE_DATA);
      const mode = info.slaveKind === 'bridge' && sd ? parseAttrs(sd).get(C.IFLA_BRPORT_MODE) : undefined;
      if (mode && mode.length >= 1) info.hairpin = mode[0] !== 0;
    }
  }
  const op = attrs.get(C.IFLA_OPERSTATE);
  if (op && op.length >= 1) info.operState = op[0];
  const alias = attrs.get(C.IFLA_IFALIAS);
  if (alias) info.alias = cstr(alias);
  const link = attrs.get(C.IFLA_LINK);
  if (link && link.length >= 4) info.link = link.readUInt32LE(0);
  const nsid = attrs.get(C.IFLA_LINK_NETNSID);
  if (nsid && nsid.length >= 4) info.linkNetnsId = nsid.readInt32LE(0);
  return info;
}

const cstr = (b: Buffer): string => b.toString('utf8').replace(/\0+$/, '');

export interface AddrInfo {
  family: number;
  prefixLen: number;
  flags: number;
  scope: number;
  index: number;
  /** IFA_LOCAL, else IFA_ADDRESS (IPv6 has only the latter), formatted like inet_ntop */
  address?: string;
}

/** Decodes an RTM_NEWADDR payload (ifaddrmsg + attributes). */
export function parseAddr(data: Buffer): AddrInfo {
  const a: AddrInfo = { family: data[0], prefixLen: data[1], flags: data[2], scope: data[3], index: data.readUInt32LE(4) };
  const attrs = parseAttrs(data.subarray(C.IFADDRMSG_LEN));
  const raw = attrs.get(C.IFA_LOCAL) ?? attrs.get(C.IFA_ADDRESS);
  if (raw) a.address = formatIp(raw);
  const f = attrs.get(C.IFA_FLAGS);
  if (f && f.length >= 4) a.flags = f.readUInt32LE(0);
  return a;
}

// ---------------------------------------------------------------- addresses

/** Address bytes and family of an IPv4 or IPv6 literal (already validated by the renderer). */
export function ipBytes(ip: string): { family: number; bytes: Buffer } {
  if (!ip.includes(':')) return { family: C.AF_INET, bytes: ipv4Bytes(ip) };
  return { family: C.AF_INET6, bytes: ipv6Bytes(ip) };
}

export function ipv6Bytes(ip: string): Buffer {
  let s = ip;
  // an embedded dotted quad (::ffff:10.0.0.1) stands for the last two groups
  const lastColon = s.lastIndexOf(':');
  if (s.slice(lastColon + 1).includes('.')) {
    const v4 = ipv4Bytes(s.slice(lastColon + 1));
    s = `${s.slice(0, lastColon + 1)}${((v4[0] << 8) | v4[1]).toString(16)}:${((v4[2] << 8) | v4[3]).toString(16)}`;
  }
  const parse = (part: string): number[] =>
    part === ''
      ? []
      : part.split(':').map((g) => {
          if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw new Error(`bad IPv6 address: ${ip}`);
          return parseInt(g, 16);
        });
  const dbl = s.indexOf('::');
  let groups: number[];
  if (dbl >= 0) {
    const head = parse(s.slice(0, dbl));
    const back = parse(s.slice(dbl + 2));
    const fill = 8 - head.length - back.length;
    if (fill < 1) throw new Error(`bad IPv6 address: ${ip}`);
    groups = [...head, ...new Array<number>(fill).fill(0), ...back];
  } else {
    groups = parse(s);
  }
  if (groups.length !== 8) throw new Error(`bad IPv6 address: ${ip}`);
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}

/** Formats 4 or 16 address bytes as glibc inet_ntop does (so reads match iproute2's output). */
export function formatIp(b: Buffer): string {
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  if (b.length !== 16) return b.toString('hex');
  const w: number[] = [];
  for (let i = 0; i < 8; i++) w.push(b.readUInt16BE(i * 2));
  // longest run (>= 2) of zero groups, the first one on ties
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestLen < 2) best = -1;
  let out = '';
  for (let i = 0; i < 8; i++) {
    if (best >= 0 && i >= best && i < best + bestLen) {
      if (i === best) out += ':';
      continue;
    }
    if (i > 0) out += ':';
    // IPv4-compatible / -mapped addresses end in a dotted quad, as inet_ntop prints them
    if (i === 6 && best === 0 && (bestLen === 6 || (bestLen === 5 && w[5] === 0xffff))) {
      out += `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
      break;
    }
    out += w[i].toString(16);
  }
  if (best >= 0 && best + bestLen === 8) out += ':';
  return out;
}

export interface NeighReq {
  /** AF_INET/AF_INET6 for a neighbour, AF_BRIDGE for an FDB entry */
  family: number;
  index: number;
  dst?: string;
  lladdr?: string;
  state: number;
  flags: number;
  /** RTM_NEWNEIGH: NLM_F_REPLACE (`neigh replace`, `fdb replace`) or NLM_F_APPEND (`fdb append`) */
  mode?: 'replace' | 'append';
}

/** RTM_NEWNEIGH / RTM_DELNEIGH as `ip neigh replace|del` and `bridge fdb replace|append|del` send them. */
export function neighMsg(seq: number, type: typeof C.RTM_NEWNEIGH | typeof C.RTM_DELNEIGH, o: NeighReq): Buffer {
  const hdr = Buffer.alloc(C.NDMSG_LEN);
  hdr.writeUInt8(o.family, 0);
  hdr.writeInt32LE(o.index, 4);
  hdr.writeUInt16LE(o.state, 8);
  hdr.writeUInt8(o.flags, 10);
  const attrs: Buffer[] = [];
  if (o.lladdr) attrs.push(attr(C.NDA_LLADDR, macBytes(o.lladdr)));
  if (o.dst) attrs.push(attr(C.NDA_DST, ipBytes(o.dst).bytes));
  const nlf =
    type === C.RTM_DELNEIGH
      ? CHANGE
      : C.NLM_F_REQUEST | C.NLM_F_ACK | C.NLM_F_CREATE | (o.mode === 'append' ? C.NLM_F_APPEND : C.NLM_F_REPLACE);
  return nlmsg(type, nlf, seq, hdr, attrs);
}
