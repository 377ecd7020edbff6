// BGP-4 messages to bytes and back (RFC 4271), with 4-octet AS numbers (RFC 6793), multiprotocol
// IPv4/IPv6 unicast (RFC 4760), graceful restart (RFC 4724, RFC 8538), route refresh (RFC 2918,
// RFC 7313) and extended optional parameters (RFC 9072, decoded). Pure: the only session state is
// SessionCodecContext. Decoding errors are BgpErrors carrying the NOTIFICATION the RFCs prescribe;
// encoding errors (a caller's bug, or a message that would not fit) are plain Errors.
import {
  AFI_IPV4,
  AFI_IPV6,
  AS_TRANS,
  Attr,
  BGP_VERSION,
  BgpError,
  Cap,
  ErrCode,
  HEADER_LEN,
  HeaderSub,
  MAX_MESSAGE_LEN,
  MsgType,
  OpenSub,
  RouteRefreshSub,
  SAFI_UNICAST,
  UpdateSub,
  type AsPathSegment,
  type BgpMessage,
  type Capabilities,
  type Family,
  type GracefulRestartCap,
  type MpReach,
  type MpUnreach,
  type NotificationMsg,
  type OpenMsg,
  type PathAttributes,
  type Prefix,
  type RouteRefreshMsg,
  type SessionCodecContext,
  type UpdateMsg,
} from './messages.js';
import { addressBytes, decodePrefixes, encodePrefix, encodePrefixes, formatIPv4, formatIPv6 } from './prefix.js';

const EMPTY = Buffer.alloc(0);
const OPEN_MIN_LEN = 29;
const UPDATE_MIN_LEN = 23;
const NOTIFICATION_MIN_LEN = 21;
const ROUTE_REFRESH_LEN = 23;
/** the smallest length each message type may have, indexed by type; 0: no such type */
const MIN_LEN = [0, OPEN_MIN_LEN, UPDATE_MIN_LEN, NOTIFICATION_MIN_LEN, HEADER_LEN, ROUTE_REFRESH_LEN];
const CAPABILITIES_PARAM = 2;

// Path attribute flags (RFC 4271 4.3)
const OPTIONAL = 0x80;
const TRANSITIVE = 0x40;
const PARTIAL = 0x20;
const EXTENDED_LENGTH = 0x10;
const WELL_KNOWN = TRANSITIVE;
const OPT_NON_TRANSITIVE = OPTIONAL;
const OPT_TRANSITIVE = OPTIONAL | TRANSITIVE;

/** Optional and Transitive bits each known attribute must carry; 0 for attributes the codec does not know. */
const ATTR_FLAGS = new Uint8Array(256);
for (const t of [Attr.ORIGIN, Attr.AS_PATH, Attr.NEXT_HOP, Attr.LOCAL_PREF, Attr.ATOMIC_AGGREGATE]) ATTR_FLAGS[t] = WELL_KNOWN;
for (const t of [Attr.MULTI_EXIT_DISC, Attr.MP_REACH_NLRI, Attr.MP_UNREACH_NLRI]) ATTR_FLAGS[t] = OPT_NON_TRANSITIVE;
for (const t of [Attr.AGGREGATOR, Attr.COMMUNITIES, Attr.AS4_PATH, Attr.AS4_AGGREGATOR]) ATTR_FLAGS[t] = OPT_TRANSITIVE;

const AFI: Record<Family, number> = { ipv4: AFI_IPV4, ipv6: AFI_IPV6 };

function familyOf(afi: number, safi: number): Family | undefined {
  if (safi !== SAFI_UNICAST) return undefined;
  return afi === AFI_IPV4 ? 'ipv4' : afi === AFI_IPV6 ? 'ipv6' : undefined;
}

// Readers for offsets the caller has already bounds-checked: Buffer's own readers would throw
// RangeError, which must never escape a decode.
function u16(b: Buffer, o: number): number {
  return (b[o] << 8) | b[o + 1];
}
function u32(b: Buffer, o: number): number {
  return ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
}

// ---- framing ----------------------------------------------------------------------------------

function lengthError(b: Buffer, off: number): BgpError {
  // Data: the offending Length field (RFC 4271 6.1); copied so it does not pin the socket's chunk
  const field = Buffer.from(b.subarray(off + 16, off + 18));
  return new BgpError(ErrCode.MESSAGE_HEADER, HeaderSub.BAD_MESSAGE_LENGTH, `bad message length ${field.length === 2 ? field.readUInt16BE(0) : '?'}`, field);
}

/** Checks the 19-octet header at b[off] (RFC 4271 6.1) and returns the message length. */
function checkHeader(b: Buffer, off: number): number {
  for (let i = 0; i < 16; i++) {
    if (b[off + i] !== 0xff) throw new BgpError(ErrCode.MESSAGE_HEADER, HeaderSub.CONNECTION_NOT_SYNCHRONIZED, 'header marker is not all ones');
  }
  const len = u16(b, off + 16);
  if (len < HEADER_LEN || len > MAX_MESSAGE_LEN) throw lengthError(b, off);
  const type = b[off + 18];
  const min = MIN_LEN[type];
  if (!min) throw new BgpError(ErrCode.MESSAGE_HEADER, HeaderSub.BAD_MESSAGE_TYPE, `unknown message type ${type}`, Buffer.from([type]));
  if (len < min || (type === MsgType.KEEPALIVE && len !== HEADER_LEN)) throw lengthError(b, off);
  return len;
}

/**
 * The one length rule that needs the whole message: a ROUTE-REFRESH longer than 23 octets. For
 * BoRR/EoRR RFC 7313 5 has its own error carrying the message; a longer normal request would carry
 * ORFs (RFC 5291), which podnet never negotiates, so it is a plain bad length.
 */
function checkWhole(msg: Buffer): void {
  if (msg[18] !== MsgType.ROUTE_REFRESH || msg.length === ROUTE_REFRESH_LEN) return;
  if (msg[21] === 1 || msg[21] === 2) {
    throw new BgpError(ErrCode.ROUTE_REFRESH, RouteRefreshSub.INVALID_MESSAGE_LENGTH, `ROUTE-REFRESH of ${msg.length} octets`, Buffer.from(msg));
  }
  throw lengthError(msg, 0);
}

/**
 * Cuts a TCP byte stream into whole messages. Messages that lie within one chunk are returned as
 * views of that chunk (no copy); only a message split across chunks is assembled, in a fixed
 * 4096-octet buffer. After a header error the stream cannot be resynchronised: every later push
 * throws the same error. Messages framed earlier in the failing push are not returned — the
 * session is about to be torn down with the NOTIFICATION the error names.
 */
export class MessageReader {
  private readonly stash = Buffer.allocUnsafe(MAX_MESSAGE_LEN);
  private stashed = 0;
  private failure: BgpError | undefined;

  push(chunk: Buffer): Buffer[] {
    if (this.failure) throw this.failure;
    try {
      return this.frame(chunk);
    } catch (e) {
      this.failure = e as BgpError;
      throw e;
    }
  }

  private frame(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let off = 0;
    if (this.stashed > 0) {
      off = this.completeStashed(chunk, out);
      if (this.stashed > 0) return out;
    }
    while (chunk.length - off >= HEADER_LEN) {
      const len = checkHeader(chunk, off);
      if (chunk.length - off < len) break;
      const msg = chunk.subarray(off, off + len);
      checkWhole(msg);
      out.push(msg);
      off += len;
    }
    // what is left is a header fragment or part of one message: either fits the stash
    if (off < chunk.length) this.stashed = chunk.copy(this.stash, 0, off);
    return out;
  }

  /** Continues the message begun in earlier chunks; returns how many octets of `chunk` it took. */
  private completeStashed(chunk: Buffer, out: Buffer[]): number {
    let used = this.fill(chunk, 0, HEADER_LEN);
    if (this.stashed < HEADER_LEN) return used;
    const len = checkHeader(this.stash, 0);
    used += this.fill(chunk, used, len);
    if (this.stashed < len) return used;
    this.stashed = 0;
    // the stash is reused, so the message gets octets of its own
    const msg = Buffer.from(this.stash.subarray(0, len));
    checkWhole(msg);
    out.push(msg);
    return used;
  }

  private fill(chunk: Buffer, from: number, upTo: number): number {
    const n = Math.max(0, Math.min(upTo - this.stashed, chunk.length - from));
    chunk.copy(this.stash, this.stashed, from, from + n);
    this.stashed += n;
    return n;
  }
}

/** Decodes one whole message, header included (as MessageReader returns them). */
export function decodeMessage(msg: Buffer, ctx: SessionCodecContext): BgpMessage {
  if (msg.length < HEADER_LEN) throw lengthError(msg, 0);
  if (checkHeader(msg, 0) !== msg.length) throw lengthError(msg, 0);
  checkWhole(msg);
  switch (msg[18]) {
    case MsgType.OPEN:
      return decodeOpen(msg);
    case MsgType.UPDATE:
      return decodeUpdate(msg, ctx);
    case MsgType.NOTIFICATION:
      return decodeNotification(msg);
    case MsgType.KEEPALIVE:
      return { type: MsgType.KEEPALIVE };
    default: // checkHeader let through types 1..5 only
      return decodeRouteRefresh(msg);
  }
}

/** Header plus body; throws if the result would exceed the 4096-octet maximum (RFC 4271 4). */
function message(type: MsgType, ...parts: Buffer[]): Buffer {
  let len = HEADER_LEN;
  for (const p of parts) len += p.length;
  if (len > MAX_MESSAGE_LEN) throw new Error(`BGP message of type ${type} would be ${len} octets, more than ${MAX_MESSAGE_LEN}`);
  const out = Buffer.allocUnsafe(len);
  out.fill(0xff, 0, 16);
  out.writeUInt16BE(len, 16);
  out[18] = type;
  let off = HEADER_LEN;
  for (const p of parts) off += p.copy(out, off);
  return out;
}

function checkedInt(v: number, max: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new Error(`${what} out of range: ${v}`);
  return v;
}

function u16Bytes(v: number, what: string): Buffer {
  const b = Buffer.allocUnsafe(2);
  b.writeUInt16BE(checkedInt(v, 0xffff, what));
  return b;
}

function u32Bytes(v: number, what: string): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(checkedInt(v, 0xffffffff, what));
  return b;
}

// ---- OPEN -------------------------------------------------------------------------------------

function openError(sub: number, why: string, data?: Buffer): BgpError {
  return new BgpError(ErrCode.OPEN_MESSAGE, sub, why, data);
}
/** RFC 4271 6.2 has no subcode for lengths inside the OPEN that do not add up: 0, "unspecific" */
const unspecific = (why: string): BgpError => openError(0, why);

function decodeOpen(m: Buffer): OpenMsg {
  const version = m[19];
  if (version !== BGP_VERSION) throw openError(OpenSub.UNSUPPORTED_VERSION, `unsupported BGP version ${version}`, Buffer.from([0, BGP_VERSION]));
  const holdTime = u16(m, 22);
  // RFC 4271 4.2: zero (no keepalives) or at least three seconds
  if (holdTime === 1 || holdTime === 2) throw openError(OpenSub.UNACCEPTABLE_HOLD_TIME, `hold time ${holdTime}`);
  if (u32(m, 24) === 0) throw openError(OpenSub.BAD_BGP_IDENTIFIER, 'BGP identifier 0.0.0.0');
  return { type: MsgType.OPEN, version, myAs: u16(m, 20), holdTime, bgpId: formatIPv4(m, 24), caps: decodeOptionalParameters(m) };
}

function decodeOptionalParameters(m: Buffer): Capabilities {
  // RFC 9072: a length of 255 followed by a parameter type of 255 means 2-octet lengths follow
  const extended = m[28] === 255 && m.length >= 30 && m[29] === 255;
  if (extended && m.length < 32) throw unspecific('truncated extended optional parameters length');
  let p = extended ? 32 : 29;
  const end = p + (extended ? u16(m, 30) : m[28]);
  if (end !== m.length) throw unspecific(`optional parameters end at ${end}, the message at ${m.length}`);
  const headLen = extended ? 3 : 2;
  const caps: Capabilities = { families: [], otherFamilies: [], routeRefresh: false, enhancedRouteRefresh: false, unknown: [] };
  while (p < end) {
    if (end - p < headLen) throw unspecific('truncated optional parameter');
    const type = m[p];
    const v = p + headLen;
    const vEnd = v + (extended ? u16(m, p + 1) : m[p + 1]);
    if (vEnd > end) throw unspecific(`optional parameter ${type} runs past the parameters`);
    if (type !== CAPABILITIES_PARAM) throw openError(OpenSub.UNSUPPORTED_OPTIONAL_PARAMETER, `unsupported optional parameter ${type}`);
    decodeCapabilities(m, v, vEnd, caps);
    p = vEnd;
  }
  return caps;
}

function decodeCapabilities(m: Buffer, p: number, end: number, caps: Capabilities): void {
  while (p < end) {
    if (end - p < 2) throw unspecific('truncated capability');
    const code = m[p];
    const len = m[p + 1];
    const v = p + 2;
    if (v + len > end) throw unspecific(`capability ${code} runs past its parameter`);
    switch (code) {
      case Cap.MULTIPROTOCOL:
        decodeMultiprotocol(m, v, len, caps);
        break;
      case Cap.ROUTE_REFRESH:
        caps.routeRefresh = true;
        break;
      case Cap.ENHANCED_ROUTE_REFRESH:
        caps.enhancedRouteRefresh = true;
        break;
      case Cap.FOUR_OCTET_AS:
        if (len !== 4) throw unspecific(`4-octet AS capability of ${len} octets`);
        caps.as4 = u32(m, v);
        break;
      case Cap.GRACEFUL_RESTART:
        caps.gracefulRestart = decodeGracefulRestart(m, v, len);
        break;
      default:
        caps.unknown.push({ code, value: Buffer.from(m.subarray(v, v + len)) });
    }
    p = v + len;
  }
}

function decodeMultiprotocol(m: Buffer, v: number, len: number, caps: Capabilities): void {
  if (len !== 4) throw unspecific(`multiprotocol capability of ${len} octets`);
  const afi = u16(m, v);
  const safi = m[v + 3];
  const family = familyOf(afi, safi);
  if (family) {
    if (!caps.families.includes(family)) caps.families.push(family);
  } else if (!caps.otherFamilies.some((f) => f.afi === afi && f.safi === safi)) {
    caps.otherFamilies.push({ afi, safi });
  }
}

function decodeGracefulRestart(m: Buffer, v: number, len: number): GracefulRestartCap {
  if (len < 2 || (len - 2) % 4 !== 0) throw unspecific(`graceful restart capability of ${len} octets`);
  const flags = m[v] >> 4;
  const gr: GracefulRestartCap = { restarting: (flags & 0x8) !== 0, notification: (flags & 0x4) !== 0, restartTime: u16(m, v) & 0x0fff, families: [] };
  for (let p = v + 2; p < v + len; p += 4) {
    // families other than v4/v6 unicast have no place in the result and podnet never offers them
    const family = familyOf(u16(m, p), m[p + 2]);
    if (family) gr.families.push({ family, forwardingPreserved: (m[p + 3] & 0x80) !== 0 });
  }
  return gr;
}

export function encodeOpen(m: Omit<OpenMsg, 'type'>): Buffer {
  const fixed = Buffer.allocUnsafe(9);
  fixed[0] = checkedInt(m.version, 0xff, 'BGP version');
  u16Bytes(m.myAs, 'My Autonomous System (use AS_TRANS for a 4-octet AS)').copy(fixed, 1);
  u16Bytes(m.holdTime, 'hold time').copy(fixed, 3);
  addressBytes(m.bgpId, 'ipv4').copy(fixed, 5);
  return message(MsgType.OPEN, fixed, optionalParameters(capabilityTlvs(m.caps)));
}

/** Each capability in a Capabilities parameter of its own (RFC 5492 allows either; this is the common form). */
function optionalParameters(caps: Buffer[]): Buffer {
  const short = caps.reduce((n, c) => n + 2 + c.length, 0);
  if (short <= 255) return Buffer.concat([Buffer.from([short]), ...caps.flatMap((c) => [Buffer.from([CAPABILITIES_PARAM, c.length]), c])]);
  // RFC 9072: only when the parameters would not fit the classic 1-octet length
  const long = caps.reduce((n, c) => n + 3 + c.length, 0);
  return Buffer.concat([Buffer.from([255, 255, long >> 8, long & 0xff]), ...caps.flatMap((c) => [Buffer.from([CAPABILITIES_PARAM, c.length >> 8, c.length & 0xff]), c])]);
}

function capability(code: number, value: Buffer): Buffer {
  if (value.length > 255) throw new Error(`capability ${code} value of ${value.length} octets`);
  return Buffer.concat([Buffer.from([checkedInt(code, 0xff, 'capability code'), value.length]), value]);
}

function afiSafi(afi: number, safi: number): Buffer {
  return Buffer.from([checkedInt(afi, 0xffff, 'AFI') >> 8, afi & 0xff, 0, checkedInt(safi, 0xff, 'SAFI')]);
}

/** In capability-code order. */
function capabilityTlvs(caps: Capabilities): Buffer[] {
  const out: Buffer[] = [];
  for (const f of caps.families) out.push(capability(Cap.MULTIPROTOCOL, afiSafi(AFI[f], SAFI_UNICAST)));
  for (const f of caps.otherFamilies) out.push(capability(Cap.MULTIPROTOCOL, afiSafi(f.afi, f.safi)));
  if (caps.routeRefresh) out.push(capability(Cap.ROUTE_REFRESH, EMPTY));
  if (caps.gracefulRestart) out.push(capability(Cap.GRACEFUL_RESTART, gracefulRestartValue(caps.gracefulRestart)));
  if (caps.as4 !== undefined) out.push(capability(Cap.FOUR_OCTET_AS, u32Bytes(caps.as4, '4-octet AS')));
  if (caps.enhancedRouteRefresh) out.push(capability(Cap.ENHANCED_ROUTE_REFRESH, EMPTY));
  for (const u of caps.unknown) out.push(capability(u.code, u.value));
  return out;
}

function gracefulRestartValue(gr: GracefulRestartCap): Buffer {
  const time = checkedInt(gr.restartTime, 0x0fff, 'graceful restart time');
  const b = Buffer.alloc(2 + 4 * gr.families.length);
  b[0] = (gr.restarting ? 0x80 : 0) | (gr.notification ? 0x40 : 0) | (time >> 8);
  b[1] = time & 0xff;
  gr.families.forEach((f, i) => {
    b.writeUInt16BE(AFI[f.family], 2 + 4 * i);
    b[4 + 4 * i] = SAFI_UNICAST;
    b[5 + 4 * i] = f.forwardingPreserved ? 0x80 : 0;
  });
  return b;
}

// ---- UPDATE: decoding -------------------------------------------------------------------------

function updateError(sub: number, why: string, data?: Buffer): BgpError {
  return new BgpError(ErrCode.UPDATE_MESSAGE, sub, why, data && Buffer.from(data));
}

/** What the attribute scan found; the AS4_* attributes only matter until they are merged. */
interface AttrScan {
  attrs: PathAttributes;
  mpReach?: MpReach;
  mpUnreach?: MpUnreach;
  as4Path?: AsPathSegment[];
  as4Aggregator?: { asn: number; address: string };
}

/** One attribute on the wire: m[at] flags, m[at+1] type, value m[v, end). */
interface AttrRef {
  m: Buffer;
  at: number;
  v: number;
  end: number;
}
const whole = (a: AttrRef): Buffer => a.m.subarray(a.at, a.end);

// Decoding is synchronous and never re-entered, so one table serves every message.
const seen = new Uint8Array(256);

function decodeUpdate(m: Buffer, ctx: SessionCodecContext): UpdateMsg {
  const wEnd = 21 + u16(m, 19);
  if (wEnd + 2 > m.length) throw updateError(UpdateSub.MALFORMED_ATTRIBUTE_LIST, 'withdrawn routes length exceeds the message');
  const aStart = wEnd + 2;
  const aEnd = aStart + u16(m, wEnd);
  if (aEnd > m.length) throw updateError(UpdateSub.MALFORMED_ATTRIBUTE_LIST, 'total path attribute length exceeds the message');
  // RFC 4271 6.3 starts with the attributes, then the NLRI
  const scan = decodeAttributes(m, aStart, aEnd, ctx);
  const withdrawn = decodePrefixes(m, 21, wEnd, 'ipv4');
  if (!withdrawn) throw updateError(UpdateSub.INVALID_NETWORK_FIELD, 'malformed withdrawn routes');
  const nlri = decodePrefixes(m, aEnd, m.length, 'ipv4');
  if (!nlri) throw updateError(UpdateSub.INVALID_NETWORK_FIELD, 'malformed NLRI');
  if (!ctx.as4) mergeAs4(scan);
  checkMandatory(scan, nlri.length > 0);
  const u: UpdateMsg = { type: MsgType.UPDATE, withdrawn, attrs: scan.attrs, nlri };
  if (scan.mpReach) u.mpReach = scan.mpReach;
  if (scan.mpUnreach) u.mpUnreach = scan.mpUnreach;
  return u;
}

function decodeAttributes(m: Buffer, p: number, end: number, ctx: SessionCodecContext): AttrScan {
  seen.fill(0);
  const scan: AttrScan = { attrs: {} };
  while (p < end) {
    const headLen = m[p] & EXTENDED_LENGTH ? 4 : 3;
    if (end - p < headLen) throw updateError(UpdateSub.MALFORMED_ATTRIBUTE_LIST, 'truncated attribute header');
    const type = m[p + 1];
    const v = p + headLen;
    const vEnd = v + (headLen === 4 ? u16(m, p + 2) : m[p + 2]);
    if (vEnd > end) throw updateError(UpdateSub.MALFORMED_ATTRIBUTE_LIST, `attribute ${type} runs past the attribute list`);
    if (seen[type]) throw updateError(UpdateSub.MALFORMED_ATTRIBUTE_LIST, `attribute ${type} appears twice`);
    seen[type] = 1;
    decodeAttribute({ m, at: p, v, end: vEnd }, scan, ctx);
    p = vEnd;
  }
  // wire order means nothing (RFC 4271 5); type order makes equal attribute sets decode equal
  scan.attrs.unknown?.sort((x, y) => x.type - y.type);
  return scan;
}

/** The length RFC 4271 6.3 / RFC 6793 fix for an attribute type, or undefined when it varies. */
function fixedLength(type: number, ctx: SessionCodecContext): number | undefined {
  switch (type) {
    case Attr.ORIGIN:
      return 1;
    case Attr.NEXT_HOP:
    case Attr.MULTI_EXIT_DISC:
    case Attr.LOCAL_PREF:
      return 4;
    case Attr.ATOMIC_AGGREGATE:
      return 0;
    case Attr.AGGREGATOR:
      return ctx.as4 ? 8 : 6;
    default:
      return undefined;
  }
}

function decodeAttribute(a: AttrRef, s: AttrScan, ctx: SessionCodecContext): void {
  const { m, v, end } = a;
  const flags = m[a.at];
  const type = m[a.at + 1];
  const want = ATTR_FLAGS[type];
  if (!want) return keepUnknown(a, s);
  // RFC 6793 6: AS4_* between two 4-octet speakers are discarded unread
  if (ctx.as4 && (type === Attr.AS4_PATH || type === Attr.AS4_AGGREGATOR)) return;
  // only optional transitive attributes may have the Partial bit set
  if ((flags & OPT_TRANSITIVE) !== want || (want !== OPT_TRANSITIVE && flags & PARTIAL)) {
    throw updateError(UpdateSub.ATTRIBUTE_FLAGS_ERROR, `attribute ${type} has flags 0x${flags.toString(16)}`, whole(a));
  }
  const fixed = fixedLength(type, ctx);
  if (fixed !== undefined && end - v !== fixed) throw updateError(UpdateSub.ATTRIBUTE_LENGTH_ERROR, `attribute ${type} of ${end - v} octets`, whole(a));
  switch (type) {
    case Attr.ORIGIN:
      if (m[v] > 2) throw updateError(UpdateSub.INVALID_ORIGIN_ATTRIBUTE, `ORIGIN ${m[v]}`, whole(a));
      s.attrs.origin = m[v] as 0 | 1 | 2;
      return;
    case Attr.AS_PATH: {
      const path = decodeAsPath(m, v, end, ctx.as4 ? 4 : 2);
      if (!path) throw updateError(UpdateSub.MALFORMED_AS_PATH, 'malformed AS_PATH');
      s.attrs.asPath = path;
      return;
    }
    case Attr.NEXT_HOP:
      // 0.0.0.0 and 224/4 can never be a next hop (RFC 4271 6.3); 'is it on a connected net' is the session's to judge
      if (u32(m, v) === 0 || (m[v] & 0xf0) === 0xe0) throw updateError(UpdateSub.INVALID_NEXT_HOP_ATTRIBUTE, `NEXT_HOP ${formatIPv4(m, v)}`, whole(a));
      s.attrs.nextHop = formatIPv4(m, v);
      return;
    case Attr.MULTI_EXIT_DISC:
      s.attrs.med = u32(m, v);
      return;
    case Attr.LOCAL_PREF:
      s.attrs.localPref = u32(m, v);
      return;
    case Attr.ATOMIC_AGGREGATE:
      s.attrs.atomicAggregate = true;
      return;
    case Attr.AGGREGATOR:
      s.attrs.aggregator = ctx.as4 ? { asn: u32(m, v), address: formatIPv4(m, v + 4) } : { asn: u16(m, v), address: formatIPv4(m, v + 2) };
      return;
    case Attr.COMMUNITIES:
      s.attrs.communities = decodeCommunities(a);
      return;
    case Attr.MP_REACH_NLRI: {
      const r = decodeMpReach(a);
      if (r) s.mpReach = r;
      return;
    }
    case Attr.MP_UNREACH_NLRI: {
      const r = decodeMpUnreach(a);
      if (r) s.mpUnreach = r;
      return;
    }
    case Attr.AS4_PATH:
      s.as4Path = decodeAs4Path(m, v, end);
      return;
    case Attr.AS4_AGGREGATOR:
      // RFC 6793 6: a malformed AS4_AGGREGATOR is only informational, so it is discarded rather than fatal
      if (end - v === 8) s.as4Aggregator = { asn: u32(m, v), address: formatIPv4(m, v + 4) };
      return;
  }
}

function keepUnknown(a: AttrRef, s: AttrScan): void {
  const flags = a.m[a.at];
  const type = a.m[a.at + 1];
  if (!(flags & OPTIONAL)) throw updateError(UpdateSub.UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE, `unrecognised well-known attribute ${type}`, whole(a));
  // RFC 4271 5: unknown optional non-transitive attributes are quietly dropped
  if (!(flags & TRANSITIVE)) return;
  // the Extended Length bit describes this encoding only; the low four bits are unused
  (s.attrs.unknown ??= []).push({ flags: flags & 0xe0, type, value: Buffer.from(a.m.subarray(a.v, a.end)) });
}

function decodeCommunities(a: AttrRef): number[] {
  const len = a.end - a.v;
  if (len % 4 !== 0) throw updateError(UpdateSub.ATTRIBUTE_LENGTH_ERROR, `COMMUNITIES of ${len} octets`, whole(a));
  const out = new Array<number>(len / 4);
  for (let i = 0; i < out.length; i++) out[i] = u32(a.m, a.v + 4 * i);
  return out;
}

/** Segments of AS_PATH/AS4_PATH, or undefined when they do not add up to the attribute. */
function decodeAsPath(m: Buffer, p: number, end: number, width: 2 | 4): AsPathSegment[] | undefined {
  const segs: AsPathSegment[] = [];
  while (p < end) {
    if (end - p < 2) return undefined;
    const type = m[p];
    const n = m[p + 1];
    p += 2;
    // an empty segment says nothing and is malformed (RFC 6793 6, RFC 7606 7.2)
    if (type < 1 || type > 4 || n === 0 || p + n * width > end) return undefined;
    const asns = new Array<number>(n);
    for (let i = 0; i < n; i++, p += width) asns[i] = width === 4 ? u32(m, p) : u16(m, p);
    segs.push({ type: type as AsPathSegment['type'], asns });
  }
  return segs;
}

/**
 * AS4_PATH from a 2-octet peer. RFC 6793 6: a malformed one is discarded (the AS_PATH still holds),
 * and confederation segments, which it must not carry, are dropped from it.
 */
function decodeAs4Path(m: Buffer, p: number, end: number): AsPathSegment[] | undefined {
  if (end === p) return undefined;
  const segs = decodeAsPath(m, p, end, 4)?.filter((s) => s.type === 1 || s.type === 2);
  return segs?.length ? segs : undefined;
}

/** Path length as RFC 6793 4.2.3 counts it: an AS_SET is one, confederation segments nothing. */
function pathLength(path: AsPathSegment[]): number {
  let n = 0;
  for (const s of path) n += s.type === 2 ? s.asns.length : s.type === 1 ? 1 : 0;
  return n;
}

/** RFC 6793 4.2.3 on a 2-octet session: rebuild the 4-octet path and aggregator. */
function mergeAs4(s: AttrScan): void {
  const agg = s.attrs.aggregator;
  // an AGGREGATOR with a real 2-octet AS was put there by a 2-octet speaker after the AS4_* were
  // written, so the AS4_* no longer describe the route
  if (agg && agg.asn !== AS_TRANS) return;
  if (agg && s.as4Aggregator) s.attrs.aggregator = s.as4Aggregator;
  if (s.attrs.asPath && s.as4Path) s.attrs.asPath = mergeAsPath(s.attrs.asPath, s.as4Path);
}

/** The leading ASNs of AS_PATH that AS4_PATH does not cover (added by 2-octet speakers), then AS4_PATH. */
function mergeAsPath(asPath: AsPathSegment[], as4Path: AsPathSegment[]): AsPathSegment[] {
  let extra = pathLength(asPath) - pathLength(as4Path);
  // a longer AS4_PATH cannot be right: RFC 6793 says to ignore it
  if (extra < 0) return asPath;
  const lead: AsPathSegment[] = [];
  for (const seg of asPath) {
    // confederation segments are not counted, and AS4_PATH never has them: keep them
    if (seg.type === 3 || seg.type === 4) {
      lead.push(seg);
      continue;
    }
    if (extra === 0) break;
    if (seg.type === 1) {
      lead.push(seg);
      extra -= 1;
      continue;
    }
    const take = Math.min(extra, seg.asns.length);
    lead.push({ type: 2, asns: seg.asns.slice(0, take) });
    extra -= take;
  }
  const last = lead[lead.length - 1];
  const first = as4Path[0];
  // one sequence, not two that happen to be adjacent
  if (last?.type === 2 && first.type === 2) return [...lead.slice(0, -1), { type: 2, asns: [...last.asns, ...first.asns] }, ...as4Path.slice(1)];
  return [...lead, ...as4Path];
}

function checkMandatory(s: AttrScan, classicNlri: boolean): void {
  // RFC 4271 5 and RFC 4760 3: reachability needs ORIGIN and AS_PATH; classic NLRI also NEXT_HOP
  if (!classicNlri && !s.mpReach) return;
  const missing = (t: Attr) => updateError(UpdateSub.MISSING_WELL_KNOWN_ATTRIBUTE, `missing well-known attribute ${t}`, Buffer.from([t]));
  if (s.attrs.origin === undefined) throw missing(Attr.ORIGIN);
  if (!s.attrs.asPath) throw missing(Attr.AS_PATH);
  if (classicNlri && s.attrs.nextHop === undefined) throw missing(Attr.NEXT_HOP);
}

function mpError(a: AttrRef, why: string): BgpError {
  return updateError(UpdateSub.OPTIONAL_ATTRIBUTE_ERROR, why, whole(a));
}

/** MP_REACH_NLRI (RFC 4760 3); undefined for families podnet does not speak, which are ignored, not fatal. */
function decodeMpReach(a: AttrRef): MpReach | undefined {
  const { m, v, end } = a;
  if (end - v < 3) throw mpError(a, 'MP_REACH_NLRI too short');
  const family = familyOf(u16(m, v), m[v + 2]);
  if (!family) return undefined;
  if (end - v < 5) throw mpError(a, 'MP_REACH_NLRI too short');
  const nhLen = m[v + 3];
  const nh = v + 4;
  if (nh + nhLen + 1 > end) throw mpError(a, `MP_REACH_NLRI next hop of ${nhLen} octets overruns it`);
  const nextHops = decodeNextHops(m, nh, nhLen, family);
  if (!nextHops) throw mpError(a, `${family} next hop of ${nhLen} octets`);
  // nh + nhLen is the Reserved octet, ignored on receipt
  const nlri = decodePrefixes(m, nh + nhLen + 1, end, family);
  if (!nlri) throw mpError(a, 'malformed MP_REACH_NLRI prefixes');
  return { family, nextHops, nlri };
}

/** IPv4: 4 octets; IPv6: the global address, then the link-local one when 32 octets (RFC 2545 3). */
function decodeNextHops(m: Buffer, off: number, len: number, family: Family): string[] | undefined {
  if (family === 'ipv4') return len === 4 ? [formatIPv4(m, off)] : undefined;
  if (len === 16) return [formatIPv6(m, off)];
  if (len === 32) return [formatIPv6(m, off), formatIPv6(m, off + 16)];
  return undefined;
}

function decodeMpUnreach(a: AttrRef): MpUnreach | undefined {
  const { m, v, end } = a;
  if (end - v < 3) throw mpError(a, 'MP_UNREACH_NLRI too short');
  const family = familyOf(u16(m, v), m[v + 2]);
  if (!family) return undefined;
  const withdrawn = decodePrefixes(m, v + 3, end, family);
  if (!withdrawn) throw mpError(a, 'malformed MP_UNREACH_NLRI prefixes');
  return { family, withdrawn };
}

// ---- UPDATE: encoding -------------------------------------------------------------------------

/** One attribute; the Extended Length bit is set exactly when the value needs it. */
function attribute(flags: number, type: number, value: Buffer): Buffer {
  if (value.length > 0xffff) throw new Error(`attribute ${type} value of ${value.length} octets`);
  const ext = value.length > 255;
  const head = Buffer.allocUnsafe(ext ? 4 : 3);
  head[0] = (flags & 0xe0) | (ext ? EXTENDED_LENGTH : 0);
  head[1] = checkedInt(type, 0xff, 'attribute type');
  if (ext) head.writeUInt16BE(value.length, 2);
  else head[2] = value.length;
  return Buffer.concat([head, value]);
}

function encodeAsPath(path: AsPathSegment[], width: 2 | 4): Buffer {
  const parts: Buffer[] = [];
  for (const seg of path) {
    checkedInt(seg.type, 4, 'AS_PATH segment type');
    if (seg.type < 1) throw new Error('AS_PATH segment type 0');
    // an empty segment is malformed on the wire; leaving it out means the same
    if (seg.asns.length === 0) continue;
    // a long sequence may be split into several (RFC 4271 5.1.2); a long set may not
    if (seg.asns.length > 255 && seg.type !== 2 && seg.type !== 3) throw new Error(`AS_PATH set of ${seg.asns.length} ASNs`);
    for (let i = 0; i < seg.asns.length; i += 255) {
      const asns = seg.asns.slice(i, i + 255);
      const b = Buffer.allocUnsafe(2 + width * asns.length);
      b[0] = seg.type;
      b[1] = asns.length;
      asns.forEach((asn, j) => {
        checkedInt(asn, 0xffffffff, 'ASN');
        if (width === 4) b.writeUInt32BE(asn, 2 + 4 * j);
        else b.writeUInt16BE(asn > 0xffff ? AS_TRANS : asn, 2 + 2 * j);
      });
      parts.push(b);
    }
  }
  return Buffer.concat(parts);
}

function nextHopBytes(family: Family, nextHops: string[]): Buffer {
  const max = family === 'ipv4' ? 1 : 2;
  if (nextHops.length < 1 || nextHops.length > max) throw new Error(`${family} needs 1${max > 1 ? ' or 2' : ''} next hops, got ${nextHops.length}`);
  return Buffer.concat(nextHops.map((h) => addressBytes(h, family)));
}

function mpReachValue(r: MpReach): Buffer {
  const nh = nextHopBytes(r.family, r.nextHops);
  return Buffer.concat([Buffer.from([0, AFI[r.family], SAFI_UNICAST, nh.length]), nh, Buffer.from([0]), encodePrefixes(r.nlri, r.family)]);
}

function mpUnreachValue(r: MpUnreach): Buffer {
  return Buffer.concat([Buffer.from([0, AFI[r.family], SAFI_UNICAST]), encodePrefixes(r.withdrawn, r.family)]);
}

const isConfed = (s: AsPathSegment): boolean => s.type === 3 || s.type === 4;

/** The attributes in type-code order, AS4_* added on a 2-octet session where an ASN needs them. */
function encodeAttributes(u: Omit<UpdateMsg, 'type'>, ctx: SessionCodecContext): Buffer {
  const a = u.attrs;
  const out: { type: number; bytes: Buffer }[] = [];
  const add = (flags: number, type: number, value: Buffer) => out.push({ type, bytes: attribute(flags, type, value) });
  if (a.origin !== undefined) add(WELL_KNOWN, Attr.ORIGIN, Buffer.from([checkedInt(a.origin, 2, 'ORIGIN')]));
  if (a.asPath) {
    add(WELL_KNOWN, Attr.AS_PATH, encodeAsPath(a.asPath, ctx.as4 ? 4 : 2));
    // RFC 6793 4.2.2: AS4_PATH carries the real path, without confederation segments, when AS_TRANS stood in
    const real = a.asPath.filter((s) => !isConfed(s));
    if (!ctx.as4 && real.some((s) => s.asns.some((asn) => asn > 0xffff))) add(OPT_TRANSITIVE, Attr.AS4_PATH, encodeAsPath(real, 4));
  }
  if (a.nextHop !== undefined) add(WELL_KNOWN, Attr.NEXT_HOP, addressBytes(a.nextHop, 'ipv4'));
  if (a.med !== undefined) add(OPT_NON_TRANSITIVE, Attr.MULTI_EXIT_DISC, u32Bytes(a.med, 'MED'));
  if (a.localPref !== undefined) add(WELL_KNOWN, Attr.LOCAL_PREF, u32Bytes(a.localPref, 'LOCAL_PREF'));
  if (a.atomicAggregate) add(WELL_KNOWN, Attr.ATOMIC_AGGREGATE, EMPTY);
  if (a.aggregator) {
    const asn = checkedInt(a.aggregator.asn, 0xffffffff, 'AGGREGATOR AS');
    const addr = addressBytes(a.aggregator.address, 'ipv4');
    if (ctx.as4) add(OPT_TRANSITIVE, Attr.AGGREGATOR, Buffer.concat([u32Bytes(asn, 'ASN'), addr]));
    else {
      add(OPT_TRANSITIVE, Attr.AGGREGATOR, Buffer.concat([u16Bytes(asn > 0xffff ? AS_TRANS : asn, 'ASN'), addr]));
      if (asn > 0xffff) add(OPT_TRANSITIVE, Attr.AS4_AGGREGATOR, Buffer.concat([u32Bytes(asn, 'ASN'), addr]));
    }
  }
  // an empty COMMUNITIES attribute says nothing and many speakers reject it
  if (a.communities?.length) add(OPT_TRANSITIVE, Attr.COMMUNITIES, Buffer.concat(a.communities.map((c) => u32Bytes(c, 'community'))));
  if (u.mpReach) add(OPT_NON_TRANSITIVE, Attr.MP_REACH_NLRI, mpReachValue(u.mpReach));
  if (u.mpUnreach) add(OPT_NON_TRANSITIVE, Attr.MP_UNREACH_NLRI, mpUnreachValue(u.mpUnreach));
  for (const x of a.unknown ?? []) {
    if (ATTR_FLAGS[x.type]) throw new Error(`attribute ${x.type} is not unknown`);
    add(x.flags, x.type, x.value);
  }
  out.sort((x, y) => x.type - y.type);
  for (let i = 1; i < out.length; i++) if (out[i].type === out[i - 1].type) throw new Error(`attribute ${out[i].type} given twice`);
  return Buffer.concat(out.map((x) => x.bytes));
}

/** One UPDATE; throws (a plain Error) when it would exceed 4096 octets — see encodeUpdates. */
export function encodeUpdate(u: Omit<UpdateMsg, 'type'>, ctx: SessionCodecContext): Buffer {
  const withdrawn = encodePrefixes(u.withdrawn, 'ipv4');
  const attrs = encodeAttributes(u, ctx);
  return message(MsgType.UPDATE, u16Bytes(withdrawn.length, 'withdrawn length'), withdrawn, u16Bytes(attrs.length, 'attributes length'), attrs, encodePrefixes(u.nlri, 'ipv4'));
}

/**
 * As many UPDATEs as it takes to carry `prefixes`, each packed up to 4096 octets. `shape` builds
 * the UPDATE for a run of them; its size without prefixes is the fixed cost of every message.
 */
function packed(prefixes: Prefix[], family: Family, shape: (chunk: Prefix[]) => Omit<UpdateMsg, 'type'>, ctx: SessionCodecContext): Buffer[] {
  if (prefixes.length === 0) return [];
  // for IPv6 the prefixes sit inside an MP attribute, whose length may grow an octet past 255
  const room = MAX_MESSAGE_LEN - encodeUpdate(shape([]), ctx).length - (family === 'ipv6' ? 1 : 0);
  const out: Buffer[] = [];
  let start = 0;
  let used = 0;
  for (let i = 0; i < prefixes.length; i++) {
    const size = encodePrefix(prefixes[i], family).length;
    if (size > room) throw new Error('the path attributes leave no room for a prefix in a 4096-octet UPDATE');
    if (used + size > room) {
      out.push(encodeUpdate(shape(prefixes.slice(start, i)), ctx));
      start = i;
      used = 0;
    }
    used += size;
  }
  out.push(encodeUpdate(shape(prefixes.slice(start)), ctx));
  return out;
}

/**
 * Announces `nlri` with `attrs`: IPv4 in the classic fields with NEXT_HOP = nextHops[0]; IPv6 in
 * MP_REACH_NLRI with `nextHops` (global [, link-local]) and no NEXT_HOP attribute (RFC 4760 3).
 */
export function encodeUpdates(attrs: PathAttributes, family: Family, nlri: Prefix[], nextHops: string[], ctx: SessionCodecContext): Buffer[] {
  if (family === 'ipv4') {
    if (nextHops.length !== 1) throw new Error(`ipv4 needs 1 next hop, got ${nextHops.length}`);
    const withNextHop = { ...attrs, nextHop: nextHops[0] };
    return packed(nlri, family, (chunk) => ({ withdrawn: [], attrs: withNextHop, nlri: chunk }), ctx);
  }
  const { nextHop: _ignored, ...mpAttrs } = attrs;
  return packed(nlri, family, (chunk) => ({ withdrawn: [], attrs: mpAttrs, nlri: [], mpReach: { family, nextHops, nlri: chunk } }), ctx);
}

/** Withdraws `prefixes`: IPv4 in the classic field, IPv6 in MP_UNREACH_NLRI. */
export function encodeWithdrawals(family: Family, prefixes: Prefix[], ctx: SessionCodecContext): Buffer[] {
  if (family === 'ipv4') return packed(prefixes, family, (chunk) => ({ withdrawn: chunk, attrs: {}, nlri: [] }), ctx);
  return packed(prefixes, family, (chunk) => ({ withdrawn: [], attrs: {}, nlri: [], mpUnreach: { family, withdrawn: chunk } }), ctx);
}

/** RFC 4724 2: an empty UPDATE for IPv4 unicast; an UPDATE with only an empty MP_UNREACH_NLRI otherwise. */
export function encodeEndOfRib(family: Family): Buffer {
  const ctx = { as4: true }; // no AS_PATH: either width gives the same octets
  if (family === 'ipv4') return encodeUpdate({ withdrawn: [], attrs: {}, nlri: [] }, ctx);
  return encodeUpdate({ withdrawn: [], attrs: {}, nlri: [], mpUnreach: { family, withdrawn: [] } }, ctx);
}

// ---- KEEPALIVE, NOTIFICATION, ROUTE-REFRESH ---------------------------------------------------

export function encodeKeepalive(): Buffer {
  return message(MsgType.KEEPALIVE);
}

/** The data is trimmed so the NOTIFICATION always fits: it may be a whole offending message. */
export function encodeNotification(code: number, subcode: number, data: Buffer = EMPTY): Buffer {
  const codes = Buffer.from([checkedInt(code, 0xff, 'error code'), checkedInt(subcode, 0xff, 'error subcode')]);
  return message(MsgType.NOTIFICATION, codes, data.subarray(0, MAX_MESSAGE_LEN - NOTIFICATION_MIN_LEN));
}

function decodeNotification(m: Buffer): NotificationMsg {
  return { type: MsgType.NOTIFICATION, code: m[19], subcode: m[20], data: Buffer.from(m.subarray(NOTIFICATION_MIN_LEN)) };
}

/** RFC 2918; RFC 7313 turned the Reserved octet into the subtype (0 request, 1 BoRR, 2 EoRR). */
export function encodeRouteRefresh(afi: number, safi: number, subtype = 0): Buffer {
  checkedInt(afi, 0xffff, 'AFI');
  return message(MsgType.ROUTE_REFRESH, Buffer.from([afi >> 8, afi & 0xff, checkedInt(subtype, 0xff, 'subtype'), checkedInt(safi, 0xff, 'SAFI')]));
}

function decodeRouteRefresh(m: Buffer): RouteRefreshMsg {
  return { type: MsgType.ROUTE_REFRESH, afi: u16(m, 19), safi: m[22], subtype: m[21] };
}
