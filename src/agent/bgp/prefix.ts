// Prefixes and addresses as BGP carries them (RFC 4271 4.3, RFC 4760 5): a length in bits, then
// only the octets that length needs. Text forms are those of src/util/ip.ts so that prefixes the
// codec decodes compare equal, as strings, with prefixes parsed from configuration.
import { ipv6GroupsText, tryParseCidr, tryParseIP } from '../../util/ip.js';
import type { Family, Prefix } from './messages.js';

export const FAMILY_BITS: Record<Family, number> = { ipv4: 32, ipv6: 128 };
const IP_FAMILY = { ipv4: 4, ipv6: 6 } as const;
const LOW_64 = (1n << 64n) - 1n;

// Decoding is synchronous and never re-entered, so one scratch buffer serves every IPv6 prefix.
const scratch16 = Buffer.alloc(16);

function valueBytes(v: bigint, family: Family): Buffer {
  if (family === 'ipv4') {
    const b = Buffer.allocUnsafe(4);
    b.writeUInt32BE(Number(v));
    return b;
  }
  const b = Buffer.allocUnsafe(16);
  b.writeBigUInt64BE(v >> 64n, 0);
  b.writeBigUInt64BE(v & LOW_64, 8);
  return b;
}

/** The 4 or 16 octets of an address; throws on text that is not an address of `family`. */
export function addressBytes(text: string, family: Family): Buffer {
  const a = tryParseIP(text);
  if (!a || a.family !== IP_FAMILY[family]) throw new Error(`not an ${family} address: ${JSON.stringify(text)}`);
  return valueBytes(a.value, family);
}

/** One prefix as NLRI: length octet, then ceil(len/8) octets with the host bits cleared. */
export function encodePrefix(p: Prefix, family: Family): Buffer {
  const c = tryParseCidr(p);
  if (!c || c.family !== IP_FAMILY[family]) throw new Error(`not an ${family} prefix: ${JSON.stringify(p)}`);
  const n = (c.prefix + 7) >> 3;
  const out = Buffer.allocUnsafe(1 + n);
  out[0] = c.prefix;
  valueBytes(c.addr.value, family).copy(out, 1, 0, n);
  if (c.prefix & 7) out[n] &= (0xff00 >> (c.prefix & 7)) & 0xff;
  return out;
}

export function encodePrefixes(ps: readonly Prefix[], family: Family): Buffer {
  return Buffer.concat(ps.map((p) => encodePrefix(p, family)));
}

export function formatIPv4(b: Buffer, off: number): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

const groups = new Array<number>(8);

/**
 * RFC 5952 text of the 16 octets at b[off], as formatIP in util/ip.ts writes it (the same group
 * text; a test holds them together) but without BigInt: a full UPDATE carries some 450 IPv6 prefixes.
 */
export function formatIPv6(b: Buffer, off: number): string {
  for (let i = 0; i < 8; i++) groups[i] = (b[off + 2 * i] << 8) | b[off + 2 * i + 1];
  // IPv4-mapped addresses keep their dotted tail (RFC 5952 5)
  if (groups[0] === 0 && groups[1] === 0 && groups[2] === 0 && groups[3] === 0 && groups[4] === 0 && groups[5] === 0xffff) return `::ffff:${formatIPv4(b, off + 12)}`;
  return ipv6GroupsText(groups);
}

/**
 * The prefixes in b[start, end), or undefined when a length exceeds the family's bits or a prefix
 * runs past `end`. Host bits a sloppy peer left set are cleared, so each prefix has one spelling.
 */
export function decodePrefixes(b: Buffer, start: number, end: number, family: Family): Prefix[] | undefined {
  const bits = FAMILY_BITS[family];
  const out: Prefix[] = [];
  let p = start;
  while (p < end) {
    const len = b[p];
    const n = (len + 7) >> 3;
    if (len > bits || p + 1 + n > end) return undefined;
    out.push(family === 'ipv4' ? prefix4(b, p + 1, len) : prefix6(b, p + 1, len));
    p += 1 + n;
  }
  return out;
}

function prefix4(b: Buffer, off: number, len: number): Prefix {
  let v = 0;
  for (let i = 0; i < (len + 7) >> 3; i++) v |= b[off + i] << (24 - 8 * i);
  // `x << 32` is `x << 0` in JS, hence the special case for /0
  const masked = len === 0 ? 0 : (v & (0xffffffff << (32 - len))) >>> 0;
  return `${masked >>> 24}.${(masked >>> 16) & 255}.${(masked >>> 8) & 255}.${masked & 255}/${len}`;
}

function prefix6(b: Buffer, off: number, len: number): Prefix {
  const n = (len + 7) >> 3;
  scratch16.fill(0);
  b.copy(scratch16, 0, off, off + n);
  if (len & 7) scratch16[n - 1] &= (0xff00 >> (len & 7)) & 0xff;
  return `${formatIPv6(scratch16, 0)}/${len}`;
}
