// Chain names and fixed strings of the iptables engine. Pure.
//
// Names follow kube-proxy: a prefix plus the first 16 characters of base32(sha256(...)), so a
// service port's chains keep their names across restarts and versions, and fit iptables' limit
// of 28 characters (XT_EXTENSION_MAXNAMELEN 29 with the NUL).
import { createHash } from 'node:crypto';
import type { ServicePort } from '../../model.js';

export const CHAIN_PREFIX = 'PODNET-';
export const MAX_CHAIN_LEN = 28;

/** nat: entry from PREROUTING and OUTPUT; the cluster and external IP frontends, then the jump to NODEPORTS */
export const SERVICES = 'PODNET-SERVICES';
/** nat: NodePort frontends (node IP + port), reached for local destinations only */
export const NODEPORTS = 'PODNET-NODEPORTS';
/** nat: entry from POSTROUTING: masquerades what carries the mark */
export const POSTROUTING = 'PODNET-POSTROUTING';
/** nat: sets the masquerade mark */
export const MARK_MASQ = 'PODNET-MARK-MASQ';
/** nat: marks what does not come from a cluster (pod) CIDR; only when a family has several */
export const MASQ_NONPOD = 'PODNET-MASQ-NONPOD';
/** filter: entry from INPUT, FORWARD and OUTPUT: rejects/drops frontends without (usable) endpoints */
export const FILTER_SERVICES = 'PODNET-SERVICES';

export const MASQ_BIT = '0x4000';

/** The fixed chains each table always has. */
export const BASE_NAT_CHAINS = [SERVICES, NODEPORTS, POSTROUTING, MARK_MASQ] as const;
export const BASE_FILTER_CHAINS = [FILTER_SERVICES] as const;

export type Table = 'nat' | 'filter';

/** A jump podnet keeps in a built-in chain: the rule spec exactly as iptables-save prints it. */
export interface HookJump {
  table: Table;
  chain: string;
  spec: string;
}

/** Built-in chain hooks; each spec is written in iptables-save's own canonical order, so it compares as text. */
export const HOOKS: readonly HookJump[] = [
  { table: 'nat', chain: 'PREROUTING', spec: `-m comment --comment "podnet service portals" -j ${SERVICES}` },
  { table: 'nat', chain: 'OUTPUT', spec: `-m comment --comment "podnet service portals" -j ${SERVICES}` },
  { table: 'nat', chain: 'POSTROUTING', spec: `-m comment --comment "podnet postrouting rules" -j ${POSTROUTING}` },
  { table: 'filter', chain: 'INPUT', spec: `-m conntrack --ctstate NEW -m comment --comment "podnet service portals" -j ${FILTER_SERVICES}` },
  { table: 'filter', chain: 'FORWARD', spec: `-m conntrack --ctstate NEW -m comment --comment "podnet service portals" -j ${FILTER_SERVICES}` },
  { table: 'filter', chain: 'OUTPUT', spec: `-m conntrack --ctstate NEW -m comment --comment "podnet service portals" -j ${FILTER_SERVICES}` },
];

export const BUILTIN_CHAINS: Record<Table, readonly string[]> = {
  nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'],
  filter: ['INPUT', 'FORWARD', 'OUTPUT'],
};

const B32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** RFC 4648 base32 (with the standard alphabet, no padding needed for a prefix). */
export function base32(buf: Uint8Array): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const b of buf) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += B32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    value &= (1 << bits) - 1;
  }
  if (bits > 0) out += B32[(value << (5 - bits)) & 31];
  return out;
}

const memo = new Map<string, string>();
const MEMO_LIMIT = 200_000;

/** First 16 base32 characters of sha256(s), as kube-proxy's portProtoHash (memoized: re-plans hash the same names). */
export function hash16(s: string): string {
  let h = memo.get(s);
  if (h === undefined) {
    h = base32(createHash('sha256').update(s).digest()).slice(0, 16);
    if (memo.size >= MEMO_LIMIT) memo.clear();
    memo.set(s, h);
  }
  return h;
}

/** "ip:port", IPv6 in brackets: the DNAT destination and the endpoint part of a SEP hash. */
export function endpointText(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

type PortKey = Pick<ServicePort, 'id' | 'protocol'>;

/** all endpoints of a service port (kube-proxy's KUBE-SVC-) */
export function svcChain(p: PortKey): string {
  return `PODNET-SVC-${hash16(p.id + p.protocol)}`;
}
/** local endpoints only (kube-proxy's KUBE-SVL-) */
export function svlChain(p: PortKey): string {
  return `PODNET-SVL-${hash16(p.id + p.protocol)}`;
}
/** external frontends with the Cluster policy: mark for masquerade, then SVC (kube-proxy's KUBE-EXT-) */
export function extChain(p: PortKey): string {
  return `PODNET-EXT-${hash16(p.id + p.protocol)}`;
}
/** one endpoint: hairpin mark, affinity record, DNAT (kube-proxy's KUBE-SEP-) */
export function sepChain(p: PortKey, ip: string, port: number): string {
  return `PODNET-SEP-${hash16(p.id + p.protocol + endpointText(ip, port))}`;
}

export function isPodnetChain(name: string): boolean {
  return name.startsWith(CHAIN_PREFIX);
}
