// The bgp backend's configuration: net-conf's Backend object ({"Type": "bgp", "ASN", "RouterID",
// "Peers", "GracefulRestart", "HoldTime", "ListenPort"}) and the agent's per-node overrides
// (--bgp-asn, --bgp-peer ADDR[:ASN]). Pure: every error names the field, and the agent turns it
// into exit 2 before it takes a lease or touches the kernel.
import { canonicalIP, tryParseIP } from '../../util/ip.js';
import { AS_TRANS, BGP_PORT } from './messages.js';

export interface BgpPeerConfig {
  address: string;
  asn: number;
  /** TCP MD5 signature key (RFC 2385) */
  password?: string;
  /** seconds proposed in OPEN; 0 = no keepalives (RFC 4271 4.2) */
  holdTime: number;
  /** eBGP peer not on the segment: the TTL of our packets (1 = directly connected); iBGP uses 255 */
  multihop?: number;
  /** only accept the peer's connection, never connect */
  passive: boolean;
  /** the peer's TCP port (tests and fake peers; routers listen on 179) */
  port: number;
}

export interface BgpConfig {
  asn: number;
  /** dotted quad; the node's IPv4 address when not set */
  routerId?: string;
  peers: BgpPeerConfig[];
  gracefulRestart: { restartTime: number; enabled: boolean };
  /** where the speaker accepts connections; 0 = does not listen */
  listenPort: number;
  /** net-conf's HoldTime: what peers given by --bgp-peer propose */
  holdTime?: number;
}

export const DEFAULT_ASN = 64512;
export const DEFAULT_HOLD_TIME = 90;
export const DEFAULT_RESTART_TIME = 120;

export class BgpConfigError extends Error {
  constructor(
    readonly field: string,
    msg: string,
  ) {
    super(`${field}: ${msg}`);
    this.name = 'BgpConfigError';
  }
}

/** 1..4294967294; AS_TRANS (23456) is not an AS anyone may have (RFC 6793), 0 and 4294967295 are reserved (RFC 7607, 7300). */
export function parseAsn(v: unknown, field: string): number {
  if (v === undefined) throw new BgpConfigError(field, 'missing: an AS number from 1 to 4294967294 is required');
  const n = typeof v === 'string' && /^\d+$/.test(v.trim()) ? Number(v.trim()) : typeof v === 'string' && /^\d+\.\d+$/.test(v.trim()) ? asdot(v.trim()) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 4294967294 || n === AS_TRANS) {
    throw new BgpConfigError(field, `expected an AS number from 1 to 4294967294 (not 23456, AS_TRANS), got ${JSON.stringify(v)}`);
  }
  return n;
}

/** RFC 5396 asdot: 65000.1 = 65000 × 65536 + 1 */
function asdot(s: string): number {
  const [hi, lo] = s.split('.').map(Number);
  return hi <= 65535 && lo <= 65535 ? hi * 65536 + lo : NaN;
}

function parseAddress(v: unknown, field: string): string {
  if (v === undefined) throw new BgpConfigError(field, 'missing: an IP address is required');
  const a = typeof v === 'string' ? tryParseIP(v) : undefined;
  const c = typeof v === 'string' ? canonicalIP(v) : undefined;
  if (!a || !c) throw new BgpConfigError(field, `expected an IP address, got ${JSON.stringify(v)}`);
  return c;
}

function parseRouterId(v: unknown, field: string): string {
  const a = typeof v === 'string' ? tryParseIP(v) : undefined;
  if (!a || a.family !== 4 || v === '0.0.0.0') throw new BgpConfigError(field, `expected a non-zero dotted-quad IPv4 address, got ${JSON.stringify(v)}`);
  return canonicalIP(v as string)!;
}

function intIn(v: unknown, field: string, dflt: number, min: number, max: number): number {
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new BgpConfigError(field, `expected an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
  return v;
}

function holdTime(v: unknown, field: string, dflt: number): number {
  const h = intIn(v, field, dflt, 0, 65535);
  if (h === 1 || h === 2) throw new BgpConfigError(field, 'must be 0 or at least 3 seconds (RFC 4271 4.2)');
  return h;
}

function parsePeer(v: unknown, i: number, dfltHold: number): BgpPeerConfig {
  const f = `Backend.Peers[${i}]`;
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new BgpConfigError(f, 'expected an object like {"Address": "192.168.1.254", "ASN": 65000}');
  const o = v as Record<string, unknown>;
  if (o.Password !== undefined && (typeof o.Password !== 'string' || o.Password.length === 0 || o.Password.length > 80)) {
    throw new BgpConfigError(`${f}.Password`, 'expected a string of 1 to 80 characters (TCP MD5 keys are at most 80 bytes)');
  }
  if (o.Passive !== undefined && typeof o.Passive !== 'boolean') throw new BgpConfigError(`${f}.Passive`, 'expected true or false');
  return {
    address: parseAddress(o.Address, `${f}.Address`),
    asn: parseAsn(o.ASN, `${f}.ASN`),
    ...(o.Password !== undefined ? { password: o.Password as string } : {}),
    holdTime: holdTime(o.HoldTime, `${f}.HoldTime`, dfltHold),
    ...(o.Multihop !== undefined ? { multihop: intIn(o.Multihop, `${f}.Multihop`, 1, 1, 255) } : {}),
    passive: o.Passive === true,
    port: intIn(o.Port, `${f}.Port`, BGP_PORT, 1, 65535),
  };
}

/** net-conf's Backend object of Type "bgp". */
export function parseBgpBackend(bo: Record<string, unknown>): BgpConfig {
  const hold = holdTime(bo.HoldTime, 'Backend.HoldTime', DEFAULT_HOLD_TIME);
  if (bo.Peers !== undefined && !Array.isArray(bo.Peers)) throw new BgpConfigError('Backend.Peers', 'expected a list of peers');
  const peers = ((bo.Peers as unknown[] | undefined) ?? []).map((p, i) => parsePeer(p, i, hold));
  const gr = bo.GracefulRestart;
  if (gr !== undefined && (typeof gr !== 'object' || gr === null || Array.isArray(gr))) throw new BgpConfigError('Backend.GracefulRestart', 'expected an object like {"RestartTime": 120}');
  const gro = (gr ?? {}) as Record<string, unknown>;
  if (gro.Enabled !== undefined && typeof gro.Enabled !== 'boolean') throw new BgpConfigError('Backend.GracefulRestart.Enabled', 'expected true or false');
  const cfg: BgpConfig = {
    asn: bo.ASN === undefined ? DEFAULT_ASN : parseAsn(bo.ASN, 'Backend.ASN'),
    ...(bo.RouterID !== undefined ? { routerId: parseRouterId(bo.RouterID, 'Backend.RouterID') } : {}),
    peers,
    // 12 bits in the capability (RFC 4724 3)
    gracefulRestart: { restartTime: intIn(gro.RestartTime, 'Backend.GracefulRestart.RestartTime', DEFAULT_RESTART_TIME, 1, 4095), enabled: gro.Enabled !== false },
    listenPort: intIn(bo.ListenPort, 'Backend.ListenPort', BGP_PORT, 0, 65535),
    holdTime: hold,
  };
  checkPeers(cfg.peers, 'Backend.Peers');
  return cfg;
}

/** `--bgp-peer ADDR[:ASN]` (IPv6: `[ADDR]:ASN` or a bare address); the ASN defaults to the node's own (iBGP). */
export function parsePeerFlag(s: string, ownAsn: number, hold: number): BgpPeerConfig {
  const f = `--bgp-peer ${s}`;
  let addr = s;
  let asn: string | undefined;
  const br = /^\[([^\]]+)\](?::(.+))?$/.exec(s);
  if (br) {
    addr = br[1];
    asn = br[2];
  } else if ((s.match(/:/g) ?? []).length === 1) {
    [addr, asn] = s.split(':');
  }
  return { address: parseAddress(addr, f), asn: asn === undefined ? ownAsn : parseAsn(asn, f), holdTime: hold, passive: false, port: BGP_PORT };
}

/** The node's own settings: the agent's flags override net-conf's ASN and replace its peer list. */
export function applyOverrides(cfg: BgpConfig, o: { asn?: string; peers?: string[] }): BgpConfig {
  const asn = o.asn !== undefined ? parseAsn(o.asn, '--bgp-asn') : cfg.asn;
  let peers = cfg.peers;
  if (o.peers && o.peers.length > 0) {
    peers = o.peers.map((p) => parsePeerFlag(p, asn, cfg.holdTime ?? DEFAULT_HOLD_TIME));
    checkPeers(peers, '--bgp-peer');
  }
  return { ...cfg, asn, peers };
}

function checkPeers(peers: BgpPeerConfig[], field: string): void {
  const seen = new Set<string>();
  for (const p of peers) {
    if (seen.has(p.address)) throw new BgpConfigError(field, `peer ${p.address} is listed twice`);
    seen.add(p.address);
  }
}

/** The peers as recorded in the lease's BackendData ("ADDR:ASN"). */
export function describePeers(peers: BgpPeerConfig[]): string[] {
  return peers.map((p) => (p.address.includes(':') ? `[${p.address}]:${p.asn}` : `${p.address}:${p.asn}`));
}
