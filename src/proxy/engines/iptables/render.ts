// The iptables engine's rules, rendered purely: per IP family, the chains podnet owns in the nat
// and filter tables and their rules, and the iptables-restore --noflush text that loads them.
//
// Layout (kube-proxy's, with PODNET- names):
//
//   nat  PREROUTING, OUTPUT  -> PODNET-SERVICES
//          -d <clusterIP> -p P --dport N  -> PODNET-SVC-x | PODNET-SVL-x     (internal policy)
//          -d <externalIP> -p P --dport N -> PODNET-EXT-x | PODNET-SVL-x     (external policy)
//          -m addrtype --dst-type LOCAL   -> PODNET-NODEPORTS                 (always last)
//        PODNET-NODEPORTS: -d <nodeIP> -p P --dport <nodePort> -> PODNET-EXT-x | PODNET-SVL-x
//        PODNET-SVC-x (all endpoints) / PODNET-SVL-x (local endpoints):
//          [! -s <clusterCIDR>] -d <clusterIP> ... -> PODNET-MARK-MASQ   (the chain serving the cluster IP)
//          -m recent --rcheck --seconds S --reap --name SEP -> SEP        (ClientIP affinity, per endpoint)
//          -m statistic --mode random --probability 1/(n-i) -> SEP       (the last one without)
//        PODNET-EXT-x: -> PODNET-MARK-MASQ, -> PODNET-SVC-x
//        PODNET-SEP-x: -s <endpoint> -> PODNET-MARK-MASQ (hairpin); [-m recent --set] -j DNAT --to-destination ip:port
//        PODNET-MARK-MASQ: -j MARK --or-mark 0x4000
//        PODNET-POSTROUTING (from POSTROUTING): unmarked RETURN, clear the bit, MASQUERADE --random-fully
//   filter INPUT, FORWARD, OUTPUT (ctstate NEW) -> PODNET-SERVICES
//          frontends without any endpoint: REJECT (tcp-reset for TCP, port unreachable otherwise);
//          frontends whose policy is Local while all endpoints are elsewhere: DROP.
//
// No child_process or fs here: the engine module applies what this one renders.
import { canonicalIP, formatCidr, masked, tryParseCidr, tryParseIP, type Family } from '../../../util/ip.js';
import type { Endpoint, ProxyModel, ProxyNode, ServicePort } from '../../model.js';
import {
  BASE_FILTER_CHAINS,
  BASE_NAT_CHAINS,
  BUILTIN_CHAINS,
  FILTER_SERVICES,
  HOOKS,
  MARK_MASQ,
  MASQ_BIT,
  MASQ_NONPOD,
  NODEPORTS,
  POSTROUTING,
  SERVICES,
  type Table,
  endpointText,
  extChain,
  sepChain,
  svcChain,
  svlChain,
} from './names.js';

export const FAMILIES: readonly Family[] = [4, 6];

/** What one service port contributes. */
export interface PortRules {
  id: string;
  /** the nat chains this port owns (SVC, SVL, EXT, SEP), each with its rules ("-A NAME ..." lines) */
  chains: Map<string, string[]>;
  /** its lines in nat PODNET-SERVICES */
  services: string[];
  /** its lines in nat PODNET-NODEPORTS */
  nodeports: string[];
  /** its lines in filter PODNET-SERVICES */
  filter: string[];
}

/** Everything podnet has in one family: chain -> rules, in restore order (base chains first). */
export interface FamilyRules {
  family: Family;
  nat: Map<string, string[]>;
  filter: Map<string, string[]>;
}

/** The rendering context of one family on one node. */
export interface FamilyContext {
  family: Family;
  /** the node's IPs of this family (NodePort frontends) */
  nodeIPs: string[];
  /** how a cluster IP frontend marks off-cluster sources: match before -j, and the target */
  clusterMasq: { match: string; target: string };
  /** the cluster CIDRs of this family, canonical (only used when there are several: PODNET-MASQ-NONPOD) */
  clusterCIDRs: string[];
}

export function familyOf(ip: string): Family | undefined {
  return tryParseIP(ip)?.family;
}

export function familyContext(node: ProxyNode, family: Family): FamilyContext {
  const nodeIPs = node.nodeIPs.filter((ip) => familyOf(ip) === family).map((ip) => canonicalIP(ip) ?? ip);
  const cidrs: string[] = [];
  for (const c of node.clusterCIDRs) {
    const p = tryParseCidr(c);
    if (p && p.family === family) cidrs.push(formatCidr(masked(p)));
  }
  const clusterMasq = cidrs.length === 0 ? { match: '', target: MARK_MASQ } : cidrs.length === 1 ? { match: `! -s ${cidrs[0]}`, target: MARK_MASQ } : { match: '', target: MASQ_NONPOD };
  return { family, nodeIPs, clusterMasq, clusterCIDRs: cidrs };
}

function hostPrefix(f: Family): number {
  return f === 4 ? 32 : 128;
}

function q(comment: string): string {
  // ids are DNS labels, '/', ':' and digits; keep anything else from breaking the quoting
  return `-m comment --comment "${comment.replace(/["\\]/g, '_')}"`;
}

function line(chain: string, ...parts: string[]): string {
  return `-A ${chain} ${parts.filter((p) => p !== '').join(' ')}`;
}

function portMatch(p: ServicePort, port: number): string {
  return `-m ${p.protocol} --dport ${port}`;
}

function rejectTarget(p: ServicePort): string {
  if (p.protocol === 'tcp') return '-j REJECT --reject-with tcp-reset';
  return p.family === 4 ? '-j REJECT --reject-with icmp-port-unreachable' : '-j REJECT --reject-with icmp6-port-unreachable';
}

/** The probability of the i-th of n statistic rules (kube-proxy's %0.10f of 1/(n-i)). */
export function probability(i: number, n: number): string {
  return (1 / (n - i)).toFixed(10);
}

/** The endpoints each kind of frontend uses, and what it does when that set is empty. */
export function frontendPlan(p: ServicePort): {
  local: Endpoint[];
  internal: { eps: Endpoint[]; chain?: string; empty?: 'reject' | 'drop' };
  external: { eps: Endpoint[]; chain?: string; empty?: 'reject' | 'drop' };
} {
  const local = p.endpoints.filter((e) => e.local);
  const side = (isLocal: boolean, dflt: string) => {
    const eps = isLocal ? local : p.endpoints;
    const empty: 'reject' | 'drop' | undefined = p.endpoints.length === 0 ? 'reject' : eps.length === 0 ? 'drop' : undefined;
    return { eps, chain: empty ? undefined : isLocal ? svlChain(p) : dflt, empty };
  };
  return { local, internal: side(p.internalLocal, svcChain(p)), external: side(p.externalLocal, extChain(p)) };
}

/** Renders one service port: its own chains and its lines in the shared chains. */
export function renderPort(p: ServicePort, ctx: FamilyContext, topOnly = false): PortRules {
  const out: PortRules = { id: p.id, chains: new Map(), services: [], nodeports: [], filter: [] };
  const h = hostPrefix(p.family);
  const plan = frontendPlan(p);
  const nodePortIPs = p.nodePort !== undefined ? ctx.nodeIPs : [];
  const hasExternal = p.externalIPs.length > 0 || nodePortIPs.length > 0;
  const hasInternal = p.clusterIPs.length > 0;

  // shared chains: frontends
  for (const ip of p.clusterIPs) {
    const m = [`-d ${ip}/${h}`, `-p ${p.protocol}`];
    if (plan.internal.chain) out.services.push(line(SERVICES, ...m, q(`podnet ${p.id} cluster IP`), portMatch(p, p.port), `-j ${plan.internal.chain}`));
    else out.filter.push(filterLine(p, m, p.port, plan.internal.empty!, 'cluster IP'));
  }
  for (const ip of p.externalIPs) {
    const m = [`-d ${ip}/${h}`, `-p ${p.protocol}`];
    if (plan.external.chain) out.services.push(line(SERVICES, ...m, q(`podnet ${p.id} external IP`), portMatch(p, p.port), `-j ${plan.external.chain}`));
    else out.filter.push(filterLine(p, m, p.port, plan.external.empty!, 'external IP'));
  }
  for (const ip of nodePortIPs) {
    const m = [`-d ${ip}/${h}`, `-p ${p.protocol}`];
    if (plan.external.chain) out.nodeports.push(line(NODEPORTS, ...m, q(`podnet ${p.id} nodePort`), portMatch(p, p.nodePort!), `-j ${plan.external.chain}`));
    else out.filter.push(filterLine(p, m, p.nodePort!, plan.external.empty!, 'nodePort'));
  }

  if (topOnly) return out;
  // own chains: which load-balancing chains are used, by whom
  const svc = svcChain(p);
  const svl = svlChain(p);
  const usesSvc = (hasInternal && plan.internal.chain === svc) || (hasExternal && plan.external.chain === extChain(p));
  const usesSvl = (hasInternal && plan.internal.chain === svl) || (hasExternal && plan.external.chain === svl);
  const sepUsed = new Set<string>();
  const lb = (chain: string, eps: Endpoint[], servesClusterIP: boolean) => {
    const rules: string[] = [];
    if (servesClusterIP) {
      for (const ip of p.clusterIPs) {
        rules.push(line(chain, ctx.clusterMasq.match, `-d ${ip}/${h}`, `-p ${p.protocol}`, q(`podnet ${p.id} cluster IP`), portMatch(p, p.port), `-j ${ctx.clusterMasq.target}`));
      }
    }
    if (p.affinitySeconds !== undefined) {
      for (const e of eps) {
        const sep = sepChain(p, e.ip, e.port);
        rules.push(line(chain, q(`podnet ${p.id} -> ${endpointText(e.ip, e.port)}`), `-m recent --rcheck --seconds ${p.affinitySeconds} --reap --name ${sep}`, `-j ${sep}`));
      }
    }
    eps.forEach((e, i) => {
      const sep = sepChain(p, e.ip, e.port);
      sepUsed.add(`${e.ip}\u0000${e.port}`);
      const stat = i < eps.length - 1 ? `-m statistic --mode random --probability ${probability(i, eps.length)}` : '';
      rules.push(line(chain, q(`podnet ${p.id} -> ${endpointText(e.ip, e.port)}`), stat, `-j ${sep}`));
    });
    out.chains.set(chain, rules);
  };
  if (usesSvc) lb(svc, p.endpoints, hasInternal && plan.internal.chain === svc);
  if (usesSvl) lb(svl, plan.local, hasInternal && plan.internal.chain === svl);
  if (hasExternal && plan.external.chain === extChain(p)) {
    const ext = extChain(p);
    out.chains.set(ext, [line(ext, q(`podnet ${p.id} external traffic: masquerade`), `-j ${MARK_MASQ}`), line(ext, q(`podnet ${p.id} external traffic`), `-j ${svc}`)]);
  }
  for (const e of p.endpoints) {
    if (!sepUsed.has(`${e.ip}\u0000${e.port}`)) continue;
    const sep = sepChain(p, e.ip, e.port);
    const recent = p.affinitySeconds !== undefined ? `-m recent --set --name ${sep}` : '';
    out.chains.set(sep, [
      line(sep, `-s ${e.ip}/${h}`, q(`podnet ${p.id} hairpin`), `-j ${MARK_MASQ}`),
      line(sep, `-p ${p.protocol}`, q(`podnet ${p.id}`), recent, `-j DNAT --to-destination ${endpointText(e.ip, e.port)}`),
    ]);
  }
  return out;
}

function filterLine(p: ServicePort, match: string[], port: number, empty: 'reject' | 'drop', what: string): string {
  if (empty === 'reject') return line(FILTER_SERVICES, ...match, q(`podnet ${p.id} ${what} has no endpoints`), portMatch(p, port), rejectTarget(p));
  return line(FILTER_SERVICES, ...match, q(`podnet ${p.id} ${what} has no local endpoints`), portMatch(p, port), '-j DROP');
}

/** Only the shared-chain lines of a port (cheap: no own chains). */
export function portTopLines(p: ServicePort, ctx: FamilyContext): Pick<PortRules, 'services' | 'nodeports' | 'filter'> {
  const r = renderPort(p, ctx, true);
  return { services: r.services, nodeports: r.nodeports, filter: r.filter };
}

/** The fixed chains of a family and their rules (they depend on the node only). */
export function baseChains(ctx: FamilyContext): { nat: Map<string, string[]>; filter: Map<string, string[]> } {
  const nat = new Map<string, string[]>();
  for (const c of BASE_NAT_CHAINS) nat.set(c, []);
  nat.get(MARK_MASQ)!.push(line(MARK_MASQ, `-j MARK --or-mark ${MASQ_BIT}`));
  nat.get(POSTROUTING)!.push(
    line(POSTROUTING, `-m mark ! --mark ${MASQ_BIT}/${MASQ_BIT}`, `-j RETURN`),
    line(POSTROUTING, `-j MARK --xor-mark ${MASQ_BIT}`),
    line(POSTROUTING, q('podnet service traffic requiring SNAT'), '-j MASQUERADE --random-fully'),
  );
  if (ctx.clusterMasq.target === MASQ_NONPOD) {
    nat.set(MASQ_NONPOD, [...ctx.clusterCIDRs.map((c) => line(MASQ_NONPOD, `-s ${c}`, q('podnet from a pod'), '-j RETURN')), line(MASQ_NONPOD, `-j ${MARK_MASQ}`)]);
  }
  const filter = new Map<string, string[]>();
  for (const c of BASE_FILTER_CHAINS) filter.set(c, []);
  return { nat, filter };
}

/** The last rule of nat PODNET-SERVICES. */
export function nodeportsJump(): string {
  return line(SERVICES, q('podnet service nodeports; NOTE: this must be the last rule in this chain'), '-m addrtype --dst-type LOCAL', `-j ${NODEPORTS}`);
}

/** The ports of one family, sorted by id (the order of the shared chains). */
export function portsOf(model: ProxyModel, family: Family): ServicePort[] {
  return model.ports.filter((p) => p.family === family).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** All of podnet's chains and rules in one family. */
export function renderFamily(model: ProxyModel, node: ProxyNode, family: Family): FamilyRules {
  const ctx = familyContext(node, family);
  const { nat, filter } = baseChains(ctx);
  const services = nat.get(SERVICES)!;
  const nodeports = nat.get(NODEPORTS)!;
  const filt = filter.get(FILTER_SERVICES)!;
  for (const p of portsOf(model, family)) {
    const r = renderPort(p, ctx);
    services.push(...r.services);
    nodeports.push(...r.nodeports);
    filt.push(...r.filter);
    for (const [c, rules] of r.chains) nat.set(c, rules);
  }
  services.push(nodeportsJump());
  return { family, nat, filter };
}

/** What iptables-save showed of podnet in one table (see save.ts). */
export interface ObservedTable {
  /** PODNET-* chains present */
  chains: Set<string>;
  /** rules in built-in chains jumping to a PODNET-* chain: chain and spec as printed by iptables-save */
  jumps: { chain: string; spec: string }[];
}

export type Observed = Record<Table, ObservedTable>;

export const EMPTY_OBSERVED: Observed = { nat: { chains: new Set(), jumps: [] }, filter: { chains: new Set(), jumps: [] } };

/**
 * The hook edits for one table given what is there: nothing when every hook jump is present
 * exactly once (and no other podnet jump is in a built-in chain); otherwise, per built-in chain
 * that is not right, `-D` of every podnet jump seen there, then `-I CHAIN 1` of the right one.
 * In one iptables-restore transaction this is atomic and count-checked: if another writer changed
 * the chain since it was read, a `-D` fails and nothing is applied (the caller re-reads and
 * retries); a transaction that applies always leaves exactly one more jump than it deleted, so
 * racing syncs can briefly leave two (both saw none), never none — see IptablesEngine.ensureHooks.
 */
export function hookEdits(table: Table, observed: ObservedTable, wanted = true): string[] {
  const out: string[] = [];
  for (const chain of BUILTIN_CHAINS[table]) {
    const seen = observed.jumps.filter((j) => j.chain === chain);
    const want = wanted ? HOOKS.find((h) => h.table === table && h.chain === chain) : undefined;
    if (want && seen.length === 1 && seen[0].spec === want.spec) continue;
    if (!want && seen.length === 0) continue;
    for (const s of seen) out.push(`-D ${chain} ${s.spec}`);
    if (want) out.push(`-I ${chain} 1 ${want.spec}`);
  }
  return out;
}

/** Whether the hooks of a table are exactly right (no edit needed). */
export function hooksInPlace(table: Table, observed: ObservedTable): boolean {
  return hookEdits(table, observed).length === 0;
}

export interface RestoreText {
  text: string;
  /** chains declared + rules written + chains deleted + hook edits */
  changes: number;
}

/**
 * One table's section for a full sync: declares (creates or flushes) every podnet chain, writes
 * every rule, flushes and deletes podnet chains that are no longer wanted, and fixes the hooks.
 */
export function renderTableFull(table: Table, chains: Map<string, string[]>, observed: ObservedTable): RestoreText {
  const decl: string[] = [];
  const rules: string[] = [];
  const stale = [...observed.chains].filter((c) => !chains.has(c)).sort();
  for (const c of chains.keys()) decl.push(`:${c} - [0:0]`);
  for (const c of stale) decl.push(`:${c} - [0:0]`);
  for (const r of chains.values()) rules.push(...r);
  const hooks = hookEdits(table, observed);
  const del = stale.map((c) => `-X ${c}`);
  const body = [...decl, ...rules, ...hooks, ...del];
  return { text: `*${table}\n${body.join('\n')}\nCOMMIT\n`, changes: chains.size + rules.length + hooks.length + del.length };
}

/** The full sync text of one family (nat, then filter). */
export function renderFamilyFull(fr: FamilyRules, observed: Observed = EMPTY_OBSERVED): RestoreText {
  const nat = renderTableFull('nat', fr.nat, observed.nat);
  const filter = renderTableFull('filter', fr.filter, observed.filter);
  return { text: nat.text + filter.text, changes: nat.changes + filter.changes };
}

export function restoreTool(family: Family): string {
  return family === 4 ? 'iptables-restore' : 'ip6tables-restore';
}

/** The complete restore text for a node without podnet rules: both families, each under a `# ip(6)tables-restore` mark. */
export function renderAll(model: ProxyModel, node: ProxyNode): string {
  return FAMILIES.map((f) => `# ${restoreTool(f)} --noflush\n${renderFamilyFull(renderFamily(model, node, f)).text}`).join('');
}

/** Structural equality of two service ports (plain data: objects, arrays, primitives). */
export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const bb = b as unknown[];
    return a.length === bb.length && a.every((v, i) => deepEqual(v, bb[i]));
  }
  const ao = a as Record<string, unknown>;
  const bo = b as Record<string, unknown>;
  const ak = Object.keys(ao).filter((k) => ao[k] !== undefined);
  const bk = Object.keys(bo).filter((k) => bo[k] !== undefined);
  return ak.length === bk.length && ak.every((k) => deepEqual(ao[k], bo[k]));
}

export interface PartialPlan {
  family: Family;
  /** restore text per table; undefined when the table is untouched */
  nat?: string;
  filter?: string;
  changes: number;
  /** ids of the service ports whose chains were rewritten, added or removed */
  changed: string[];
  /** whether the shared chains were rewritten */
  rewroteShared: { services: boolean; nodeports: boolean; filter: boolean };
}

export interface PartialOptions {
  /** rewrite the shared chains (nat PODNET-SERVICES, PODNET-NODEPORTS, filter PODNET-SERVICES) even when unchanged */
  alwaysRewriteShared?: boolean;
}

/**
 * A partial sync of one family, like kube-proxy's: only the chains of service ports that differ
 * between prev and next are rewritten (declared, which flushes them, and refilled); chains those
 * ports had before and no longer need are flushed and deleted; the shared chains are rewritten
 * (in full: they are ordered lists) only when some changed port's lines in them differ.
 */
export function planPartialFamily(prev: ProxyModel, next: ProxyModel, node: ProxyNode, family: Family, opts: PartialOptions = {}): PartialPlan {
  const ctx = familyContext(node, family);
  const before = new Map(portsOf(prev, family).map((p) => [p.id, p]));
  const nextPorts = portsOf(next, family);
  const after = new Map(nextPorts.map((p) => [p.id, p]));
  const changed: string[] = [];
  for (const [id, p] of after) if (!deepEqual(before.get(id), p)) changed.push(id);
  for (const id of before.keys()) if (!after.has(id)) changed.push(id);
  changed.sort();

  const write = new Map<string, string[]>();
  const remove = new Set<string>();
  const shared = { services: !!opts.alwaysRewriteShared, nodeports: !!opts.alwaysRewriteShared, filter: !!opts.alwaysRewriteShared };
  const same = (a: string[], b: string[]) => a.length === b.length && a.every((x, i) => x === b[i]);
  for (const id of changed) {
    const a = before.has(id) ? renderPort(before.get(id)!, ctx) : undefined;
    const b = after.has(id) ? renderPort(after.get(id)!, ctx) : undefined;
    if (b) for (const [c, r] of b.chains) write.set(c, r);
    if (a) for (const c of a.chains.keys()) if (!b?.chains.has(c)) remove.add(c);
    const empty: string[] = [];
    if (!same(a?.services ?? empty, b?.services ?? empty)) shared.services = true;
    if (!same(a?.nodeports ?? empty, b?.nodeports ?? empty)) shared.nodeports = true;
    if (!same(a?.filter ?? empty, b?.filter ?? empty)) shared.filter = true;
  }
  for (const c of write.keys()) remove.delete(c);

  let natShared: Map<string, string[]> | undefined;
  let filterShared: string[] | undefined;
  if (shared.services || shared.nodeports || shared.filter) {
    const services: string[] = [];
    const nodeports: string[] = [];
    const filt: string[] = [];
    for (const p of nextPorts) {
      const r = portTopLines(p, ctx);
      if (shared.services) services.push(...r.services);
      if (shared.nodeports) nodeports.push(...r.nodeports);
      if (shared.filter) filt.push(...r.filter);
    }
    natShared = new Map();
    if (shared.services) natShared.set(SERVICES, [...services, nodeportsJump()]);
    if (shared.nodeports) natShared.set(NODEPORTS, nodeports);
    if (shared.filter) filterShared = filt;
  }

  let changes = 0;
  let nat: string | undefined;
  const natChains = new Map<string, string[]>([...(natShared ?? new Map<string, string[]>()), ...write]);
  if (natChains.size > 0 || remove.size > 0) {
    const stale = [...remove].sort();
    const decl = [...natChains.keys(), ...stale].map((c) => `:${c} - [0:0]`);
    const rules = [...natChains.values()].flat();
    const del = stale.map((c) => `-X ${c}`);
    nat = `*nat\n${[...decl, ...rules, ...del].join('\n')}\nCOMMIT\n`;
    changes += natChains.size + rules.length + del.length;
  }
  let filter: string | undefined;
  if (filterShared) {
    filter = `*filter\n:${FILTER_SERVICES} - [0:0]\n${filterShared.map((r) => `${r}\n`).join('')}COMMIT\n`;
    changes += 1 + filterShared.length;
  }
  return { family, nat, filter, changes, changed, rewroteShared: shared };
}
