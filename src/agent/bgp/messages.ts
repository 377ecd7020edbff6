// BGP-4 messages as podnet's speaker sees them (RFC 4271), with the extensions it speaks:
// 4-octet AS numbers (RFC 6793), multiprotocol NLRI for IPv6 unicast (RFC 4760), graceful
// restart (RFC 4724, with RFC 8538's N bit), route refresh (RFC 2918). Pure data: the codec
// (codec.ts) turns these into bytes and back; the session (session.ts) decides what they mean.

export const BGP_PORT = 179;
export const BGP_VERSION = 4;
/** RFC 4271 4.1: 16-octet marker, 2-octet length, 1-octet type */
export const HEADER_LEN = 19;
export const MAX_MESSAGE_LEN = 4096;
/** RFC 6793: the 2-octet AS that stands for a 4-octet one */
export const AS_TRANS = 23456;

export const enum MsgType {
  OPEN = 1,
  UPDATE = 2,
  NOTIFICATION = 3,
  KEEPALIVE = 4,
  ROUTE_REFRESH = 5,
}

export const AFI_IPV4 = 1;
export const AFI_IPV6 = 2;
export const SAFI_UNICAST = 1;

/** An address family the speaker negotiates: IPv4 unicast or IPv6 unicast. */
export type Family = 'ipv4' | 'ipv6';

/** NOTIFICATION error codes (RFC 4271 4.5) */
export const enum ErrCode {
  MESSAGE_HEADER = 1,
  OPEN_MESSAGE = 2,
  UPDATE_MESSAGE = 3,
  HOLD_TIMER_EXPIRED = 4,
  FSM = 5,
  CEASE = 6,
  ROUTE_REFRESH = 7,
}
/** subcodes of MESSAGE_HEADER */
export const enum HeaderSub {
  CONNECTION_NOT_SYNCHRONIZED = 1,
  BAD_MESSAGE_LENGTH = 2,
  BAD_MESSAGE_TYPE = 3,
}
/** subcodes of OPEN_MESSAGE */
export const enum OpenSub {
  UNSUPPORTED_VERSION = 1,
  BAD_PEER_AS = 2,
  BAD_BGP_IDENTIFIER = 3,
  UNSUPPORTED_OPTIONAL_PARAMETER = 4,
  UNACCEPTABLE_HOLD_TIME = 6,
  UNSUPPORTED_CAPABILITY = 7,
}
/** subcodes of UPDATE_MESSAGE */
export const enum UpdateSub {
  MALFORMED_ATTRIBUTE_LIST = 1,
  UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE = 2,
  MISSING_WELL_KNOWN_ATTRIBUTE = 3,
  ATTRIBUTE_FLAGS_ERROR = 4,
  ATTRIBUTE_LENGTH_ERROR = 5,
  INVALID_ORIGIN_ATTRIBUTE = 6,
  INVALID_NEXT_HOP_ATTRIBUTE = 8,
  OPTIONAL_ATTRIBUTE_ERROR = 9,
  INVALID_NETWORK_FIELD = 10,
  MALFORMED_AS_PATH = 11,
}
/** subcodes of CEASE (RFC 4486, RFC 8538) */
export const enum CeaseSub {
  MAX_PREFIXES = 1,
  ADMINISTRATIVE_SHUTDOWN = 2,
  PEER_DECONFIGURED = 3,
  ADMINISTRATIVE_RESET = 4,
  CONNECTION_REJECTED = 5,
  OTHER_CONFIGURATION_CHANGE = 6,
  CONNECTION_COLLISION_RESOLUTION = 7,
  OUT_OF_RESOURCES = 8,
  HARD_RESET = 9,
}
/** subcodes of ROUTE_REFRESH (RFC 7313) */
export const enum RouteRefreshSub {
  INVALID_MESSAGE_LENGTH = 1,
}

/** Path attribute type codes */
export const enum Attr {
  ORIGIN = 1,
  AS_PATH = 2,
  NEXT_HOP = 3,
  MULTI_EXIT_DISC = 4,
  LOCAL_PREF = 5,
  ATOMIC_AGGREGATE = 6,
  AGGREGATOR = 7,
  COMMUNITIES = 8,
  MP_REACH_NLRI = 14,
  MP_UNREACH_NLRI = 15,
  AS4_PATH = 17,
  AS4_AGGREGATOR = 18,
}

/** Capability codes (IANA) */
export const enum Cap {
  MULTIPROTOCOL = 1,
  ROUTE_REFRESH = 2,
  GRACEFUL_RESTART = 64,
  FOUR_OCTET_AS = 65,
  ENHANCED_ROUTE_REFRESH = 70,
}

/** A decode failure: what NOTIFICATION the RFC says to send for it. */
export class BgpError extends Error {
  constructor(
    readonly code: number,
    readonly subcode: number,
    message: string,
    /** the NOTIFICATION's data field (the offending bytes, where the RFC says so) */
    readonly data: Buffer = Buffer.alloc(0),
  ) {
    super(message);
    this.name = 'BgpError';
  }
}

export interface GracefulRestartCap {
  /** R bit: the sender has restarted (its forwarding state may be preserved) */
  restarting: boolean;
  /** N bit (RFC 8538): NOTIFICATIONs other than Hard Reset also trigger graceful restart */
  notification: boolean;
  /** seconds, 12 bits */
  restartTime: number;
  /** the families it preserves, each with its F bit (forwarding state preserved across the restart) */
  families: { family: Family; forwardingPreserved: boolean }[];
}

export interface Capabilities {
  /** multiprotocol (code 1): families offered; AFI/SAFI pairs other than v4/v6 unicast are kept in `otherFamilies` */
  families: Family[];
  otherFamilies: { afi: number; safi: number }[];
  routeRefresh: boolean;
  enhancedRouteRefresh: boolean;
  /** 4-octet AS (code 65): the sender's real AS */
  as4?: number;
  gracefulRestart?: GracefulRestartCap;
  /** any other capability, kept as it came */
  unknown: { code: number; value: Buffer }[];
}

export interface OpenMsg {
  type: MsgType.OPEN;
  version: number;
  /** the 2-octet "My Autonomous System" field as sent (AS_TRANS when the real AS needs 4 octets) */
  myAs: number;
  holdTime: number;
  /** dotted quad */
  bgpId: string;
  caps: Capabilities;
}

export interface AsPathSegment {
  /** 1 AS_SET, 2 AS_SEQUENCE, 3 AS_CONFED_SEQUENCE, 4 AS_CONFED_SET */
  type: 1 | 2 | 3 | 4;
  asns: number[];
}

/** A prefix in CIDR text form: "10.244.1.0/24", "fd00:10:244:1::/64" (host bits zero). */
export type Prefix = string;

export interface PathAttributes {
  /** 0 IGP, 1 EGP, 2 INCOMPLETE */
  origin?: 0 | 1 | 2;
  /** always 4-octet ASNs here: on a session without 4-octet AS the codec merges AS_PATH with AS4_PATH (RFC 6793 4.2.3) */
  asPath?: AsPathSegment[];
  /** IPv4 NEXT_HOP attribute */
  nextHop?: string;
  med?: number;
  localPref?: number;
  atomicAggregate?: boolean;
  aggregator?: { asn: number; address: string };
  communities?: number[];
  /** optional transitive attributes the speaker does not know, kept (with the Partial bit set when passed on) */
  unknown?: { flags: number; type: number; value: Buffer }[];
}

export interface MpReach {
  family: Family;
  /** the next hops: IPv6 global, and the link-local one when 32 octets were sent; IPv4 for ipv4 */
  nextHops: string[];
  nlri: Prefix[];
}

export interface MpUnreach {
  family: Family;
  withdrawn: Prefix[];
}

export interface UpdateMsg {
  type: MsgType.UPDATE;
  /** IPv4 unicast withdrawals (the classic field) */
  withdrawn: Prefix[];
  attrs: PathAttributes;
  /** IPv4 unicast NLRI (the classic field) */
  nlri: Prefix[];
  mpReach?: MpReach;
  mpUnreach?: MpUnreach;
}

export interface NotificationMsg {
  type: MsgType.NOTIFICATION;
  code: number;
  subcode: number;
  data: Buffer;
}

export interface KeepaliveMsg {
  type: MsgType.KEEPALIVE;
}

export interface RouteRefreshMsg {
  type: MsgType.ROUTE_REFRESH;
  afi: number;
  safi: number;
  /** RFC 7313: 0 normal request, 1 BoRR, 2 EoRR */
  subtype: number;
}

export type BgpMessage = OpenMsg | UpdateMsg | NotificationMsg | KeepaliveMsg | RouteRefreshMsg;

/** What the codec needs to know about the session to read and write UPDATEs. */
export interface SessionCodecContext {
  /** both sides sent the 4-octet AS capability: AS_PATH carries 4-octet ASNs */
  as4: boolean;
}

/** An End-of-RIB marker (RFC 4724 2): an empty UPDATE (IPv4) or an MP_UNREACH with no NLRI. */
export function endOfRib(u: UpdateMsg): Family | undefined {
  if (u.withdrawn.length === 0 && u.nlri.length === 0 && !u.mpReach && Object.keys(u.attrs).length === 0 && !u.mpUnreach) return 'ipv4';
  if (u.mpUnreach && u.mpUnreach.withdrawn.length === 0 && u.withdrawn.length === 0 && u.nlri.length === 0 && !u.mpReach) return u.mpUnreach.family;
  return undefined;
}
