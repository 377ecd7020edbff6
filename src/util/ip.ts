// IP arithmetic on BigInt. Parsing leans on ipaddr.js; everything after parsing is plain
// integer math so that ranges, offsets and sizes are exact for IPv6 too.
import ipaddr from 'ipaddr.js';

export type Family = 4 | 6;

export interface IP {
  family: Family;
  value: bigint;
}

export interface Cidr {
  /** the address as written, host bits kept (e.g. 10.244.1.1 for 10.244.1.1/24) */
  addr: IP;
  prefix: number;
  family: Family;
}

export const BITS: Record<Family, number> = { 4: 32, 6: 128 };
const MAX: Record<Family, bigint> = { 4: (1n << 32n) - 1n, 6: (1n << 128n) - 1n };

export function ip(family: Family, value: bigint): IP {
  if (value < 0n || value > MAX[family]) throw new RangeError(`value ${value} out of range for IPv${family}`);
  return { family, value };
}

// Reconciling 1,000 peers parses the same few thousand addresses on every pass; parsing through
// ipaddr.js and BigInt dominated the plan (≈50 ms). A bounded memo keeps it to a lookup.
const parsed = new Map<string, IP | null>();
const MEMO_LIMIT = 100_000;

/** Parses a bare IPv4 (strict dotted quad) or IPv6 address; undefined when it is not one. */
export function tryParseIP(s: string): IP | undefined {
  const hit = parsed.get(s);
  if (hit !== undefined) return hit ? { family: hit.family, value: hit.value } : undefined;
  const r = parseIPUncached(s);
  if (parsed.size >= MEMO_LIMIT) parsed.clear();
  if (typeof s === 'string') parsed.set(s, r ?? null);
  return r ? { family: r.family, value: r.value } : undefined;
}

function parseIPUncached(s: string): IP | undefined {
  if (typeof s !== 'string' || s === '' || s.includes('%') || s.includes('/')) return undefined;
  if (!s.includes(':')) {
    if (!ipaddr.IPv4.isValidFourPartDecimal(s)) return undefined;
    const o = ipaddr.IPv4.parse(s).octets;
    return { family: 4, value: (BigInt(o[0]) << 24n) | (BigInt(o[1]) << 16n) | (BigInt(o[2]) << 8n) | BigInt(o[3]) };
  }
  if (!ipaddr.IPv6.isValid(s)) return undefined;
  let v = 0n;
  for (const part of ipaddr.IPv6.parse(s).parts) v = (v << 16n) | BigInt(part);
  return { family: 6, value: v };
}

export function parseIP(s: string): IP {
  const r = tryParseIP(s);
  if (!r) throw new TypeError(`invalid IP address: ${JSON.stringify(s)}`);
  return r;
}

export function isIP(s: string): boolean {
  return tryParseIP(s) !== undefined;
}

/** Canonical text: dotted quad, or RFC 5952 (lowercase, longest zero run of 2+ groups compressed). */
export function formatIP(a: IP): string {
  if (a.family === 4) {
    const v = Number(a.value);
    return [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join('.');
  }
  // RFC 5952 §5: IPv4-mapped addresses keep their dotted tail.
  if (a.value >> 32n === 0xffffn) return `::ffff:${formatIP({ family: 4, value: a.value & MAX[4] })}`;
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((a.value >> BigInt(i * 16)) & 0xffffn));
  return ipv6GroupsText(groups);
}

/** RFC 5952 text of eight 16-bit groups: lowercase hex, the first longest run of 2+ zero groups as '::'. */
export function ipv6GroupsText(groups: ArrayLike<number>): string {
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = Array.from(groups, (g) => g.toString(16));
  if (bestLen < 2) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

const canonical = new Map<string, string | null>();

/** Re-renders an address in canonical form; undefined when it does not parse. */
export function canonicalIP(s: string): string | undefined {
  const hit = canonical.get(s);
  if (hit !== undefined) return hit ?? undefined;
  const a = tryParseIP(s);
  const r = a ? formatIP(a) : undefined;
  if (canonical.size >= MEMO_LIMIT) canonical.clear();
  canonical.set(s, r ?? null);
  return r;
}

export function tryParseCidr(s: string): Cidr | undefined {
  if (typeof s !== 'string') return undefined;
  const slash = s.indexOf('/');
  if (slash < 0 || slash !== s.lastIndexOf('/')) return undefined;
  const addr = tryParseIP(s.slice(0, slash));
  const p = s.slice(slash + 1);
  if (!addr || !/^(0|[1-9][0-9]{0,2})$/.test(p)) return undefined;
  const prefix = Number(p);
  if (prefix > BITS[addr.family]) return undefined;
  return { addr, prefix, family: addr.family };
}

export function parseCidr(s: string): Cidr {
  const r = tryParseCidr(s);
  if (!r) throw new TypeError(`invalid CIDR: ${JSON.stringify(s)}`);
  return r;
}

export function cidr(addr: IP, prefix: number): Cidr {
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > BITS[addr.family]) throw new RangeError(`invalid prefix length ${prefix} for IPv${addr.family}`);
  return { addr, prefix, family: addr.family };
}

export function formatCidr(c: Cidr): string {
  return `${formatIP(c.addr)}/${c.prefix}`;
}

function hostMask(c: Cidr): bigint {
  return (1n << BigInt(BITS[c.family] - c.prefix)) - 1n;
}

export function network(c: Cidr): IP {
  return { family: c.family, value: c.addr.value & ~hostMask(c) & MAX[c.family] };
}

/** Last address of the block (the IPv4 broadcast address; for IPv6 simply the last one). */
export function broadcast(c: Cidr): IP {
  return { family: c.family, value: network(c).value | hostMask(c) };
}

/** The same block with host bits cleared, e.g. 10.244.1.1/24 → 10.244.1.0/24. */
export function masked(c: Cidr): Cidr {
  return { addr: network(c), prefix: c.prefix, family: c.family };
}

export function hasHostBits(c: Cidr): boolean {
  return (c.addr.value & hostMask(c)) !== 0n;
}

/** Number of addresses in the block. */
export function size(c: Cidr): bigint {
  return 1n << BigInt(BITS[c.family] - c.prefix);
}

export function contains(c: Cidr, a: IP): boolean {
  return a.family === c.family && (a.value & ~hostMask(c)) === network(c).value;
}

/** Whether two blocks share any address. */
export function overlaps(a: Cidr, b: Cidr): boolean {
  return a.family === b.family && (contains(a, network(b)) || contains(b, network(a)));
}

/** a + n, throwing RangeError if the result leaves the address family. */
export function add(a: IP, n: bigint | number): IP {
  return ip(a.family, a.value + BigInt(n));
}

/** The next address, or undefined after the last address of the family. */
export function next(a: IP): IP | undefined {
  return a.value === MAX[a.family] ? undefined : { family: a.family, value: a.value + 1n };
}

export function prev(a: IP): IP | undefined {
  return a.value === 0n ? undefined : { family: a.family, value: a.value - 1n };
}

/** Orders IPv4 before IPv6, then by value; -1, 0 or 1. */
export function compare(a: IP, b: IP): number {
  if (a.family !== b.family) return a.family < b.family ? -1 : 1;
  return a.value < b.value ? -1 : a.value > b.value ? 1 : 0;
}

export function equal(a: IP, b: IP): boolean {
  return a.family === b.family && a.value === b.value;
}

/** Number of addresses from a to b inclusive (0 when b < a or families differ). */
export function span(a: IP, b: IP): bigint {
  if (a.family !== b.family || b.value < a.value) return 0n;
  return b.value - a.value + 1n;
}
