// hostPort (the `portMappings` capability) rendered in podnet's own nftables table
// `inet podnet-hostport`, never another. Pure: validation, the transaction text, parsing what
// `nft -j list table` prints and the conntrack argument lists; hostport-apply.ts runs them.
//
// Layout (one lookup per packet whatever the number of mappings):
//   map hostports4/6     meta l4proto . th dport              : pod IP . containerPort
//   map hostipports4/6   ip daddr . meta l4proto . th dport    : pod IP . containerPort   (hostIP given)
//   set hairpin4/6       pod IP . pod IP  — a pod reaching its own hostPort is masqueraded
//   chain prerouting (dstnat) and output (-100, locally originated): fib daddr type local → hostports
//   chain hostports: the hostIP map first (more specific), then the wildcard map
//   chain postrouting (srcnat): ct status dnat and saddr . daddr in hairpin → masquerade
// The shared rules are rewritten whole in every transaction (flush chain + add), so ADDs that
// race on a fresh node converge on one copy; each mapping is only an element carrying its owner
// in the comment, so DEL and GC remove exactly their own.
//
// Loopback is left alone: packets to 127.0.0.0/8 and ::1 are not translated (the output chain
// returns first). DNAT from a loopback source needs route_localnet plus SNAT, which podnet does
// not turn on; a hostIP of 127.0.0.1 or ::1 is refused.
import { createHash } from 'node:crypto';
import { CniError, ErrCode } from './errors.js';
import { canonicalIP, tryParseIP } from '../util/ip.js';

export const HOSTPORT_TABLE = 'podnet-hostport';
/** podnet-specific CNI error code: a hostPort is already taken (docs/cni-errors.md). */
export const ERR_HOSTPORT_IN_USE = ErrCode.HostPortInUse;

export type Protocol = 'tcp' | 'udp' | 'sctp';
const PROTOCOLS: readonly Protocol[] = ['tcp', 'udp', 'sctp'];
const PROTO_NUMBERS: Record<number, Protocol> = { 6: 'tcp', 17: 'udp', 132: 'sctp' };

/** One validated runtimeConfig.portMappings entry. */
export interface PortMapping {
  hostPort: number;
  containerPort: number;
  protocol: Protocol;
  /** a specific local address (canonical); absent for every local address */
  hostIP?: string;
  /** the families this mapping applies to: hostIP's, or 0.0.0.0 → 4, :: → 6; absent = both */
  family?: 4 | 6;
  /** index in runtimeConfig.portMappings (for messages) */
  index: number;
}

export type MapName = 'hostports4' | 'hostports6' | 'hostipports4' | 'hostipports6';
export type HairpinSet = 'hairpin4' | 'hairpin6';

/** One map element: a (hostIP,) protocol, hostPort → pod IP, containerPort. */
export interface HostportElement {
  map: MapName;
  hostIP?: string;
  protocol: Protocol;
  hostPort: number;
  podIP: string;
  containerPort: number;
  owner?: string;
  /** the runtimeConfig.portMappings index it came from (ours only) */
  index?: number;
}

export interface HairpinElement {
  set: HairpinSet;
  podIP: string;
  owner?: string;
}

export interface HostportPlan {
  owner: string;
  elements: HostportElement[];
  hairpin: HairpinElement[];
}

function invalid(field: string, msg: string): CniError {
  return new CniError(ErrCode.InvalidConfig, `${field}: ${msg}`);
}

function famOf(ip: string): 4 | 6 {
  return ip.includes(':') ? 6 : 4;
}

function port(field: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) {
    throw invalid(field, `expected an integer port between 1 and 65535, got ${JSON.stringify(v)}`);
  }
  return v;
}

/**
 * Validates runtimeConfig.portMappings as the reference portmap plugin takes them
 * ({hostPort, containerPort, protocol, hostIP?}). Errors are code 7 and name the field.
 * A missing protocol means tcp (Kubernetes' default); exact duplicates collapse into one.
 */
export function parsePortMappings(runtimeConfig: Record<string, unknown> | undefined): PortMapping[] {
  const raw = runtimeConfig?.portMappings;
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw invalid('runtimeConfig.portMappings', `expected a list, got ${JSON.stringify(raw)}`);
  const out: PortMapping[] = [];
  const seen = new Map<string, PortMapping>();
  raw.forEach((x, i) => {
    const f = `runtimeConfig.portMappings[${i}]`;
    if (typeof x !== 'object' || x === null || Array.isArray(x)) throw invalid(f, `expected an object, got ${JSON.stringify(x)}`);
    const o = x as Record<string, unknown>;
    const hostPort = port(`${f}.hostPort`, o.hostPort);
    const containerPort = port(`${f}.containerPort`, o.containerPort);
    let protocol: Protocol = 'tcp';
    if (o.protocol !== undefined && o.protocol !== null && o.protocol !== '') {
      const p = typeof o.protocol === 'string' ? o.protocol.toLowerCase() : undefined;
      if (!p || !(PROTOCOLS as readonly string[]).includes(p)) {
        throw invalid(`${f}.protocol`, `unknown protocol ${JSON.stringify(o.protocol)} (expected one of ${PROTOCOLS.join(', ')})`);
      }
      protocol = p as Protocol;
    }
    const m: PortMapping = { hostPort, containerPort, protocol, index: i };
    if (o.hostIP !== undefined && o.hostIP !== null && o.hostIP !== '') {
      const a = typeof o.hostIP === 'string' ? tryParseIP(o.hostIP) : undefined;
      if (!a) throw invalid(`${f}.hostIP`, `expected an IPv4 or IPv6 address, got ${JSON.stringify(o.hostIP)}`);
      const text = canonicalIP(o.hostIP as string)!;
      m.family = a.family;
      if (a.value === 0n) {
        // 0.0.0.0 / :: : every local address of that family (as docker and kubelet mean it)
      } else if ((a.family === 4 && a.value >> 24n === 127n) || (a.family === 6 && a.value === 1n)) {
        throw invalid(`${f}.hostIP`, `${text}: hostPort on a loopback address is not supported (it would need route_localnet and SNAT); use the node's address`);
      } else {
        m.hostIP = text;
      }
    }
    // one key per (address scope, protocol, port): a second entry with another target is a conflict
    for (const fam of m.family ? [m.family] : [4, 6]) {
      const key = `${fam}|${m.hostIP ?? '*'}|${protocol}|${hostPort}`;
      const prev = seen.get(key);
      if (prev) {
        if (prev.containerPort !== containerPort) {
          throw invalid(`${f}.hostPort`, `${hostPort}/${protocol} is mapped twice (also by runtimeConfig.portMappings[${prev.index}] to ${prev.containerPort})`);
        }
      } else seen.set(key, m);
    }
    if (!out.some((p) => p.hostPort === m.hostPort && p.protocol === m.protocol && p.containerPort === m.containerPort && p.hostIP === m.hostIP && p.family === m.family)) out.push(m);
  });
  return out;
}

function sha(s: string, n: number): string {
  return createHash('sha256').update(s).digest('hex').slice(0, n);
}

/** nft comments hold at most 127 characters: long network names are hashed. */
export function hostportOwnerPrefix(network: string): string {
  return network.length <= 48 ? `${network}:` : `#${sha(network, 16)}:`;
}

/**
 * The element comment naming the attachment: `network:containerID/ifname` when it fits and
 * the ifname is plain; otherwise a hash of containerID/ifname. Deterministic, so DEL and GC
 * compute it from what they are given.
 */
export function hostportOwner(network: string, containerId: string, ifname: string): string {
  const prefix = hostportOwnerPrefix(network);
  const plain = `${prefix}${containerId}/${ifname}`;
  if (plain.length <= 127 && /^[A-Za-z0-9_.\-]+$/.test(containerId) && /^[A-Za-z0-9_.\-]+$/.test(ifname)) return plain;
  return `${prefix}#${sha(`${containerId}/${ifname}`, 24)}`;
}

/**
 * The elements for a pod: each mapping for each pod IP of the families it applies to. A hostIP
 * (or 0.0.0.0/::) of a family the pod has no address in is a config error.
 */
export function planHostports(mappings: PortMapping[], podIPs: string[], owner: string): HostportPlan {
  const ips = podIPs.map((i) => canonicalIP(i.split('/')[0]) ?? i.split('/')[0]);
  const byFam = (fam: 4 | 6) => ips.find((i) => famOf(i) === fam);
  const elements: HostportElement[] = [];
  for (const m of mappings) {
    const fams: (4 | 6)[] = m.family ? [m.family] : [4, 6];
    let any = false;
    for (const fam of fams) {
      const podIP = byFam(fam);
      if (!podIP) continue;
      any = true;
      const map: MapName = m.hostIP ? (fam === 4 ? 'hostipports4' : 'hostipports6') : fam === 4 ? 'hostports4' : 'hostports6';
      elements.push({ map, hostIP: m.hostIP, protocol: m.protocol, hostPort: m.hostPort, podIP, containerPort: m.containerPort, owner, index: m.index });
    }
    if (!any) {
      throw invalid(`runtimeConfig.portMappings[${m.index}].hostIP`, `${m.hostIP ?? (m.family === 4 ? '0.0.0.0' : '::')} is IPv${m.family}, but the pod has no IPv${m.family} address`);
    }
  }
  const hairpin: HairpinElement[] = elements.length
    ? [...new Set(elements.map((e) => e.podIP))].map((podIP) => ({ set: famOf(podIP) === 4 ? 'hairpin4' : 'hairpin6', podIP, owner }) as HairpinElement)
    : [];
  return { owner, elements, hairpin };
}

function quote(s: string): string {
  if (!/^[A-Za-z0-9_.:\-/#]+$/.test(s) || s.length > 127) throw new Error(`refusing to put ${JSON.stringify(s)} into an nft comment`);
  return `"${s}"`;
}

export function elementKey(e: Pick<HostportElement, 'hostIP' | 'protocol' | 'hostPort'>): string {
  return `${e.hostIP ? `${e.hostIP} . ` : ''}${e.protocol} . ${e.hostPort}`;
}

function elementText(e: HostportElement, withData: boolean): string {
  const c = e.owner ? ` comment ${quote(e.owner)}` : '';
  return withData ? `${elementKey(e)}${c} : ${e.podIP} . ${e.containerPort}` : elementKey(e);
}

/** The table, its maps, sets and chains, and every shared rule (flushed and rewritten whole). */
export function renderHostportBase(): string[] {
  const t = `inet ${HOSTPORT_TABLE}`;
  return [
    `table ${t} {`,
    `  map hostports4 { type inet_proto . inet_service : ipv4_addr . inet_service; }`,
    `  map hostports6 { type inet_proto . inet_service : ipv6_addr . inet_service; }`,
    `  map hostipports4 { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }`,
    `  map hostipports6 { type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service; }`,
    `  set hairpin4 { type ipv4_addr . ipv4_addr; }`,
    `  set hairpin6 { type ipv6_addr . ipv6_addr; }`,
    `  chain hostports { }`,
    `  chain prerouting { type nat hook prerouting priority dstnat; policy accept; }`,
    // nft 1.0.6 knows the name dstnat only at prerouting; -100 is its value
    `  chain output { type nat hook output priority -100; policy accept; }`,
    `  chain postrouting { type nat hook postrouting priority srcnat; policy accept; }`,
    `}`,
    `flush chain ${t} hostports`,
    `flush chain ${t} prerouting`,
    `flush chain ${t} output`,
    `flush chain ${t} postrouting`,
    `add rule ${t} hostports meta nfproto ipv4 dnat ip to ip daddr . meta l4proto . th dport map @hostipports4 comment "podnet hostPort (hostIP)"`,
    `add rule ${t} hostports meta nfproto ipv4 dnat ip to meta l4proto . th dport map @hostports4 comment "podnet hostPort"`,
    `add rule ${t} hostports meta nfproto ipv6 dnat ip6 to ip6 daddr . meta l4proto . th dport map @hostipports6 comment "podnet hostPort (hostIP)"`,
    `add rule ${t} hostports meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @hostports6 comment "podnet hostPort"`,
    `add rule ${t} prerouting fib daddr type local jump hostports`,
    `add rule ${t} output ip daddr 127.0.0.0/8 return comment "hostPort on loopback is not supported"`,
    `add rule ${t} output ip6 daddr ::1 return comment "hostPort on loopback is not supported"`,
    `add rule ${t} output fib daddr type local jump hostports`,
    `add rule ${t} postrouting ct status dnat ip saddr . ip daddr @hairpin4 masquerade comment "podnet hostPort hairpin"`,
    `add rule ${t} postrouting ct status dnat ip6 saddr . ip6 daddr @hairpin6 masquerade comment "podnet hostPort hairpin"`,
  ];
}

/** Shared rules per chain, as renderHostportBase writes them (CHECK and the tests count them). */
export const HOSTPORT_RULE_COUNTS: Readonly<Record<string, number>> = { hostports: 4, prerouting: 1, output: 3, postrouting: 2 };

/**
 * One transaction: the shared layout, then each element as add + delete + add. The first add
 * fails with EEXIST when the key is held with another target (another pod's hostPort), failing
 * the whole transaction; when it is held with the same target (this attachment again) the delete
 * and re-add make the owner comment ours. Nothing is half applied either way.
 */
export function renderHostportAdd(plan: HostportPlan): string {
  const t = `inet ${HOSTPORT_TABLE}`;
  const lines = renderHostportBase();
  for (const e of plan.elements) {
    lines.push(`add element ${t} ${e.map} { ${elementText({ ...e, owner: undefined }, true)} }`);
    lines.push(`delete element ${t} ${e.map} { ${elementText(e, false)} }`);
    lines.push(`add element ${t} ${e.map} { ${elementText(e, true)} }`);
  }
  for (const h of plan.hairpin) {
    lines.push(`add element ${t} ${h.set} { ${h.podIP} . ${h.podIP} }`);
    lines.push(`delete element ${t} ${h.set} { ${h.podIP} . ${h.podIP} }`);
    lines.push(`add element ${t} ${h.set} { ${h.podIP} . ${h.podIP} comment ${quote(plan.owner)} }`);
  }
  return lines.join('\n') + '\n';
}

/** Deletes exactly these elements (as listed: they must exist) in one transaction. */
export function renderHostportDelete(elements: HostportElement[], hairpin: HairpinElement[]): string {
  const t = `inet ${HOSTPORT_TABLE}`;
  const lines = [
    ...elements.map((e) => `delete element ${t} ${e.map} { ${elementText(e, false)} }`),
    ...hairpin.map((h) => `delete element ${t} ${h.set} { ${h.podIP} . ${h.podIP} }`),
  ];
  return lines.length ? lines.join('\n') + '\n' : '';
}

export interface HostportTable {
  elements: HostportElement[];
  hairpin: HairpinElement[];
  /** rules per chain */
  rules: Record<string, number>;
}

const MAPS: readonly MapName[] = ['hostports4', 'hostports6', 'hostipports4', 'hostipports6'];
const HAIRPINS: readonly HairpinSet[] = ['hairpin4', 'hairpin6'];

function protoOf(v: unknown): Protocol | undefined {
  if (typeof v === 'number') return PROTO_NUMBERS[v];
  if (typeof v === 'string') return (PROTOCOLS as readonly string[]).includes(v) ? (v as Protocol) : PROTO_NUMBERS[Number(v)];
  return undefined;
}

function portOf(v: unknown): number | undefined {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : NaN;
  return Number.isInteger(n) && n >= 0 && n <= 65535 ? n : undefined;
}

function ipOf(v: unknown): string | undefined {
  return typeof v === 'string' ? canonicalIP(v) : undefined;
}

/** `{elem: {val, comment}}` or the bare value: [value, comment]. */
function unwrap(k: unknown): [unknown, string | undefined] {
  const o = k as { elem?: { val?: unknown; comment?: string } };
  if (o && typeof o === 'object' && o.elem && typeof o.elem === 'object') return [o.elem.val, typeof o.elem.comment === 'string' ? o.elem.comment : undefined];
  return [k, undefined];
}

function concat(v: unknown): unknown[] | undefined {
  const c = (v as { concat?: unknown[] })?.concat;
  return Array.isArray(c) ? c : undefined;
}

/** What `nft -j list table inet podnet-hostport` says: every element with its owner, rules per chain. */
export function parseHostportTable(json: unknown): HostportTable {
  const out: HostportTable = { elements: [], hairpin: [], rules: {} };
  const items = (json as { nftables?: Record<string, unknown>[] })?.nftables ?? [];
  for (const it of items) {
    if (it.chain && typeof it.chain === 'object') {
      const c = it.chain as { name?: string; table?: string };
      if (c.table === HOSTPORT_TABLE && c.name) out.rules[c.name] ??= 0;
    }
    if (it.rule && typeof it.rule === 'object') {
      const r = it.rule as { chain?: string; table?: string };
      if (r.table === HOSTPORT_TABLE && r.chain) out.rules[r.chain] = (out.rules[r.chain] ?? 0) + 1;
    }
    const m = it.map as { name?: string; table?: string; elem?: unknown[] } | undefined;
    if (m && m.table === HOSTPORT_TABLE && (MAPS as readonly string[]).includes(m.name ?? '')) {
      const map = m.name as MapName;
      const withIP = map.startsWith('hostip');
      for (const pair of m.elem ?? []) {
        if (!Array.isArray(pair) || pair.length !== 2) continue;
        const [kv, owner] = unwrap(pair[0]);
        const k = concat(kv);
        const d = concat(pair[1]);
        if (!k || !d || k.length !== (withIP ? 3 : 2) || d.length !== 2) continue;
        const hostIP = withIP ? ipOf(k[0]) : undefined;
        const protocol = protoOf(k[withIP ? 1 : 0]);
        const hostPort = portOf(k[withIP ? 2 : 1]);
        const podIP = ipOf(d[0]);
        const containerPort = portOf(d[1]);
        if ((withIP && !hostIP) || !protocol || hostPort === undefined || !podIP || containerPort === undefined) continue;
        const e: HostportElement = { map, protocol, hostPort, podIP, containerPort };
        if (hostIP) e.hostIP = hostIP;
        if (owner !== undefined) e.owner = owner;
        out.elements.push(e);
      }
    }
    const s = it.set as { name?: string; table?: string; elem?: unknown[] } | undefined;
    if (s && s.table === HOSTPORT_TABLE && (HAIRPINS as readonly string[]).includes(s.name ?? '')) {
      for (const x of s.elem ?? []) {
        const [v, owner] = unwrap(x);
        const k = concat(v);
        const podIP = k && k.length === 2 ? ipOf(k[0]) : undefined;
        if (!podIP) continue;
        const h: HairpinElement = { set: s.name as HairpinSet, podIP };
        if (owner !== undefined) h.owner = owner;
        out.hairpin.push(h);
      }
    }
  }
  return out;
}

export interface HostportConflict {
  ours: HostportElement;
  theirs: HostportElement;
}

/**
 * Another owner's element that takes the same port: the same key in the same map, or a wildcard
 * and a hostIP mapping of one family on the same protocol and port (docker and the kubelet
 * count 0.0.0.0:8080 and 10.0.0.1:8080 as the same port).
 */
export function findConflicts(ours: HostportElement[], present: HostportElement[], owner: string): HostportConflict[] {
  const out: HostportConflict[] = [];
  for (const o of ours) {
    const fam = o.map.endsWith('4') ? '4' : '6';
    for (const p of present) {
      if (p.owner === owner || !p.map.endsWith(fam) || p.protocol !== o.protocol || p.hostPort !== o.hostPort) continue;
      const sameMap = p.map === o.map;
      if ((sameMap && p.hostIP === o.hostIP) || !sameMap) out.push({ ours: o, theirs: p });
    }
  }
  return out;
}

function describeKey(e: HostportElement): string {
  const where = e.hostIP ?? (e.map.endsWith('4') ? '0.0.0.0' : '[::]');
  return `${where.includes(':') && !where.startsWith('[') ? `[${where}]` : where}:${e.hostPort}/${e.protocol}`;
}

export function conflictError(c: HostportConflict): CniError {
  const field = c.ours.index !== undefined ? `runtimeConfig.portMappings[${c.ours.index}]: ` : '';
  const holder = c.theirs.owner ? `attachment ${c.theirs.owner}` : 'an element without owner';
  return new CniError(
    ERR_HOSTPORT_IN_USE,
    `${field}hostPort ${describeKey(c.ours)} is already in use by ${holder} (→ ${c.theirs.podIP.includes(':') ? `[${c.theirs.podIP}]` : c.theirs.podIP}:${c.theirs.containerPort})`,
  );
}

/** Elements and hairpin entries owned by one of `owners`. */
export function ownedBy(table: HostportTable, owners: (owner: string) => boolean): { elements: HostportElement[]; hairpin: HairpinElement[] } {
  return {
    elements: table.elements.filter((e) => e.owner !== undefined && owners(e.owner)),
    hairpin: table.hairpin.filter((h) => h.owner !== undefined && owners(h.owner)),
  };
}

/** What CHECK misses: each planned element present with this owner and target. */
export function missingElements(plan: HostportPlan, table: HostportTable): string[] {
  const missing: string[] = [];
  for (const e of plan.elements) {
    const ok = table.elements.some((p) => p.map === e.map && p.hostIP === e.hostIP && p.protocol === e.protocol && p.hostPort === e.hostPort && p.podIP === e.podIP && p.containerPort === e.containerPort && p.owner === plan.owner);
    if (!ok) missing.push(`${describeKey(e)} → ${e.podIP}:${e.containerPort}`);
  }
  for (const h of plan.hairpin) {
    if (!table.hairpin.some((p) => p.set === h.set && p.podIP === h.podIP && p.owner === plan.owner)) missing.push(`hairpin ${h.podIP}`);
  }
  for (const [chain, n] of Object.entries(HOSTPORT_RULE_COUNTS)) {
    if ((table.rules[chain] ?? 0) < n) missing.push(`chain ${chain} (${table.rules[chain] ?? 0} of ${n} rules)`);
  }
  return missing;
}

function uniq(argvs: string[][]): string[][] {
  const seen = new Set<string>();
  return argvs.filter((a) => {
    const k = a.join('\0');
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/**
 * After ADD: UDP flows to the new hostPorts that predate the DNAT (a client that sent before the
 * pod existed keeps its untranslated entry until it times out).
 */
export function conntrackAddArgs(elements: HostportElement[]): string[][] {
  return uniq(
    elements
      .filter((e) => e.protocol === 'udp')
      .map((e) => ['conntrack', '-D', '-f', e.map.endsWith('6') ? 'ipv6' : 'ipv4', '-p', 'udp', ...(e.hostIP ? ['--orig-dst', e.hostIP] : []), '--orig-port-dst', String(e.hostPort)]),
  );
}

/** After DEL: UDP flows still translated to the pod (their reply comes from pod IP and port). */
export function conntrackDelArgs(elements: Pick<HostportElement, 'protocol' | 'podIP' | 'containerPort'>[]): string[][] {
  return uniq(
    elements
      .filter((e) => e.protocol === 'udp')
      .map((e) => ['conntrack', '-D', '-f', famOf(e.podIP) === 6 ? 'ipv6' : 'ipv4', '-p', 'udp', '--reply-src', e.podIP, '--reply-port-src', String(e.containerPort)]),
  );
}

/** conntrack -D's outcome: exit 0, or exit 1 with "0 flow entries", is success. */
export function conntrackDeleteOk(exitCode: number | null, stderr: string): boolean {
  return exitCode === 0 || (exitCode === 1 && /\b0 flow entries have been deleted/.test(stderr));
}
