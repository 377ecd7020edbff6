// The values the evaluator reads from the packet and how a rule's pattern matches them. A field is a
// string or number, flags (tcp flags, ct state), a concatenation, a chance (numgen, a hash, meta
// random) or UNKNOWN (what the packet cannot tell: a uid, a socket); NOMATCH is a field the packet
// does not have (a tcp port of a UDP packet), which ends the rule. A match is true, false or
// undefined (cannot tell), so the evaluator reports "may match" rather than guess.
import { canonicalIP, compare, contains, tryParseCidr, tryParseIP } from '../../util/ip.js';
import { isObj, type NftSet } from './model.js';

export const UNKNOWN = Symbol('unknown');
export const NOMATCH = Symbol('nomatch');
type Flags = { flags: string[] };
type Special = { numgen: { mod: number; offset: number; why: string } } | { random: { mask: number } };
export type Val = string | number | Flags | Special | Val[] | typeof UNKNOWN;
export type Got = Val | typeof NOMATCH;

const PROTO_NUM: Record<string, number> = { icmp: 1, igmp: 2, tcp: 6, udp: 17, gre: 47, esp: 50, ah: 51, 'ipv6-icmp': 58, icmpv6: 58, sctp: 132, udplite: 136 };
const SERVICE_NUM: Record<string, number> = { http: 80, https: 443, domain: 53, ssh: 22, ntp: 123, bgp: 179, 'http-alt': 8080 };

export function isFlags(v: unknown): v is Flags {
  return isObj(v) && Array.isArray((v as Flags).flags);
}
export function isSpecial(v: unknown): v is Special {
  return isObj(v) && ('numgen' in v || 'random' in v);
}

/** Comparable form: canonical IP, protocol and service names as numbers, numeric strings as numbers. */
export function norm(v: string | number): string | number {
  if (typeof v === 'number') return v;
  const ip = canonicalIP(v);
  if (ip) return ip;
  if (/^\d+$/.test(v)) return Number(v);
  if (/^0x[0-9a-f]+$/i.test(v)) return parseInt(v, 16);
  return PROTO_NUM[v] ?? SERVICE_NUM[v] ?? v;
}

export function flagList(x: unknown): string[] | undefined {
  if (typeof x === 'string') return [x];
  if (Array.isArray(x) && x.every((y) => typeof y === 'string')) return x as string[];
  if (isObj(x) && Array.isArray(x.set)) return flagList(x.set);
  if (isObj(x) && Array.isArray(x['|'])) return (x['|'] as unknown[]).flatMap((y) => flagList(y) ?? []);
  return undefined;
}

/** Whether `pattern` (a literal, prefix, range, concatenation, set element or set) matches the value: true, false, or undefined (cannot tell). */
export function matches(pattern: unknown, v: Val, sets?: Map<string, NftSet>): boolean | undefined {
  if (v === UNKNOWN) return undefined;
  if (isObj(pattern) && isObj(pattern.elem)) return matches(pattern.elem.val, v, sets);
  if (typeof pattern === 'string' && pattern.startsWith('@')) {
    const s = sets?.get(pattern.slice(1));
    if (!s) return undefined;
    return anyOf(s.elem.map((e) => (Array.isArray(e) && s.map !== undefined ? e[0] : e)), v, sets);
  }
  if (isObj(pattern) && Array.isArray(pattern.set)) return anyOf(pattern.set as unknown[], v, sets);
  if (Array.isArray(v)) {
    const parts = isObj(pattern) && Array.isArray(pattern.concat) ? (pattern.concat as unknown[]) : undefined;
    if (!parts || parts.length !== v.length) return false;
    let unsure = false;
    for (let i = 0; i < parts.length; i++) {
      const m = matches(parts[i], v[i], sets);
      if (m === false) return false;
      if (m === undefined) unsure = true;
    }
    return unsure ? undefined : true;
  }
  if (isFlags(v)) {
    const want = flagList(pattern);
    return want ? want.some((f) => v.flags.includes(f)) : undefined;
  }
  if (isSpecial(v)) return undefined;
  if (isObj(pattern) && isObj(pattern.prefix)) {
    const c = tryParseCidr(`${String(pattern.prefix.addr)}/${String(pattern.prefix.len)}`);
    const a = typeof v === 'string' ? tryParseIP(v) : undefined;
    return c && a ? c.family === a.family && contains(c, a) : false;
  }
  if (isObj(pattern) && Array.isArray(pattern.range)) {
    const [lo, hi] = pattern.range as unknown[];
    return inRange(lo, hi, v);
  }
  // an interface name pattern: "veth*" matches every name starting with veth
  if (typeof pattern === 'string' && pattern.endsWith('*') && !pattern.endsWith('\\*') && typeof v === 'string') return v.startsWith(pattern.slice(0, -1));
  if (typeof pattern === 'string' || typeof pattern === 'number') return norm(pattern) === norm(v as string | number);
  return undefined;
}

export function inRange(lo: unknown, hi: unknown, v: Val): boolean | undefined {
  if (typeof v === 'number' || (typeof v === 'string' && /^\d+$/.test(v))) return Number(lo) <= Number(v) && Number(v) <= Number(hi);
  const a = typeof v === 'string' ? tryParseIP(v) : undefined;
  const l = tryParseIP(String(lo));
  const h = tryParseIP(String(hi));
  if (!a || !l || !h) return undefined;
  return a.family === l.family && compare(l, a) <= 0 && compare(a, h) <= 0;
}

function anyOf(patterns: unknown[], v: Val, sets?: Map<string, NftSet>): boolean | undefined {
  let unsure = false;
  for (const p of patterns) {
    const m = matches(p, v, sets);
    if (m === true) return true;
    if (m === undefined) unsure = true;
  }
  return unsure ? undefined : false;
}
