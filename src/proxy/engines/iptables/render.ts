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
//          [! -s <clusterCIDR>] -d <clusterIP> ... -> PODNET-MARK-MASQ   (the chain serving the cluster IP;
//                with several cluster CIDRs of the family: -> PODNET-MASQ-NONPOD, which RETURNs for each)
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

/** A line of a shared chain (nat PODNET-SERVICES / PODNET-NODEPORTS) and the chain it jumps to. */
export interface TopLine {
  line: string;
  target: string;
}

/** A load-balancing chain (PODNET-SVC- or PODNET-SVL-). */
export interface LbChain {
  name: string;
  /** the rules before the endpoint jumps (the cluster IP masquerade rule) */
  head: string[];
  /** the affinity and statistic jumps to the SEP chains */
  endpointRules: string[];
  /** the alphabetically smallest SEP chain it jumps to (see emitNat) */
  lastSep: string;
}

/** What one service port contributes. */
export interface PortRules {
  id: string;
  lb: LbChain[];
  /** its endpoint chains (PODNET-SEP-) with their rules */
  seps: Map<string, string[]>;
  /** its PODNET-EXT- chain, when external frontends masquerade and use all endpoints */
  ext?: { name: string; rules: string[] };
  /** its lines in nat PODNET-SERVICES */
  services: TopLine[];
  /** its lines in nat PODNET-NODEPORTS */
  nodeports: TopLine[];
  /** its lines in filter PODNET-SERVICES */
  filter: string[];
}

/** The nat chains a port owns, each with its rules in chain order. */
export function portChains(r: PortRules): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const lb of r.lb) m.set(lb.name, [...lb.head, ...lb.endpointRules]);
  if (r.ext) m.set(r.ext.name, r.ext.rules);
  for (const [c, rules] of r.seps) m.set(c, rules);
  return m;
}

/** Everything podnet has in one family. */
export interface FamilyRules {
  family: Family;
  /** the fixed chains of each table with their fixed rules (nat PODNET-SERVICES and PODNET-NODEPORTS and filter PODNET-SERVICES start empty) */
  baseNat: Map<string, string[]>;
  baseFilter: Map<string, string[]>;
  /** the service ports of this family, sorted by id */
  ports: PortRules[];
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

/** Renders one service port: its own chains and its lines in the shared chains (topOnly: just the latter). */
export function renderPort(p: ServicePort, ctx: FamilyContext, topOnly = false): PortRules {
  const out: PortRules = { id: p.id, lb: [], seps: new Map(), services: [], nodeports: [], filter: [] };
  const h = hostPrefix(p.family);
  const plan = frontendPlan(p);
  const nodePortIPs = p.nodePort !== undefined ? ctx.nodeIPs : [];
  const hasExternal = p.externalIPs.length > 0 || nodePortIPs.length > 0;
  const hasInternal = p.clusterIPs.length > 0;

  // shared chains: the frontends
  for (const ip of p.clusterIPs) {
    const m = [`-d ${ip}/${h}`, `-p ${p.protocol}`];
    const t = plan.internal.chain;
    if (t) out.services.push({ line: line(SERVICES, ...m, q(`podnet ${p.id} cluster IP`), portMatch(p, p.port), `-j ${t}`), target: t });
    else out.filter.push(filterLine(p, m, p.port, plan.internal.empty!, 'cluster IP'));
  }
  for (const ip of p.externalIPs) {
    const m = [`-d ${ip}/${h}`, `-p ${p.protocol}`];
    const t = plan.external.chain;
    if (t) out.services.push({ line: line(SERVICES, ...m, q(`podnet ${p.id} external IP`), portMatch(p, p.port), `-j ${t}`), target: t });
    else out.filter.push(filterLine(p, m, p.port, plan.external.empty!, 'external IP'));
  }
  for (const ip of nodePortIPs) {
    const m = [`-d ${ip}/${h}`, `-p ${p.protocol}`];
    const t = plan.external.chain;
    if (t) out.nodeports.push({ line: line(NODEPORTS, ...m, q(`podnet ${p.id} nodePort`), portMatch(p, p.nodePort!), `-j ${t}`), target: t });
    else out.filter.push(filterLine(p, m, p.nodePort!, plan.external.empty!, 'nodePort'));
  }
  if (topOnly) return out;

  // own chains: which load-balancing chains are used, and whether they serve the cluster IP
  const svc = svcChain(p);
  const svl = svlChain(p);
  const ext = extChain(p);
  const usesSvc = (hasInternal && plan.internal.chain === svc) || (hasExternal && plan.external.chain === ext);
  const usesSvl = (hasInternal && plan.internal.chain === svl) || (hasExternal && plan.external.chain === svl);
  const lb = (chain: string, eps: Endpoint[], servesClusterIP: boolean) => {
    const head: string[] = [];
    if (servesClusterIP) {
      for (const ip of p.clusterIPs) {
        head.push(line(chain, ctx.clusterMasq.match, `-d ${ip}/${h}`, `-p ${p.protocol}`, q(`podnet ${p.id} cluster IP`), portMatch(p, p.port), `-j ${ctx.clusterMasq.target}`));
      }
    }
    const endpointRules: string[] = [];
    const seps = eps.map((e) => sepChain(p, e.ip, e.port));
    if (p.affinitySeconds !== undefined) {
      eps.forEach((e, i) => {
        endpointRules.push(line(chain, q(`podnet ${p.id} -> ${endpointText(e.ip, e.port)}`), `-m recent --rcheck --seconds ${p.affinitySeconds} --reap --name ${seps[i]}`, `-j ${seps[i]}`));
      });
    }
    eps.forEach((e, i) => {
      const stat = i < eps.length - 1 ? `-m statistic --mode random --probability ${probability(i, eps.length)}` : '';
      endpointRules.push(line(chain, q(`podnet ${p.id} -> ${endpointText(e.ip, e.port)}`), stat, `-j ${seps[i]}`));
      if (!out.seps.has(seps[i])) {
        const recent = p.affinitySeconds !== undefined ? `-m recent --set --name ${seps[i]}` : '';
        out.seps.set(seps[i], [
          line(seps[i], `-s ${e.ip}/${h}`, q(`podnet ${p.id} hairpin`), `-j ${MARK_MASQ}`),
          line(seps[i], `-p ${p.protocol}`, q(`podnet ${p.id}`), recent, `-j DNAT --to-destination ${endpointText(e.ip, e.port)}`),
        ]);
      }
    });
    out.lb.push({ name: chain, head, endpointRules, lastSep: seps.reduce((a, b) => (b < a ? b : a)) });
  };
  if (usesSvc) lb(svc, p.endpoints, hasInternal && plan.internal.chain === svc);
  if (usesSvl) lb(svl, plan.local, hasInternal && plan.internal.chain === svl);
  if (hasExternal && plan.external.chain === ext) {
    out.ext = { name: ext, rules: [line(ext, q(`podnet ${p.id} external traffic: masquerade`), `-j ${MARK_MASQ}`), line(ext, q(`podnet ${p.id} external traffic`), `-j ${svc}`)] };
  }
  return out;
}

function filterLine(p: ServicePort, match: string[], port: number, empty: 'reject' | 'drop', what: string): string {
  if (empty === 'reject') return line(FILTER_SERVICES, ...match, q(`podnet ${p.id} ${what} has no endpoints`), portMatch(p, port), rejectTarget(p));
  return line(FILTER_SERVICES, ...match, q(`podnet ${p.id} ${what} has no local endpoints`), portMatch(p, port), '-j DROP');
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

/** The ports of one family, sorted by id (the order of the filter chain). */
export function portsOf(model: ProxyModel, family: Family): ServicePort[] {
  return model.ports.filter((p) => p.family === family).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** All of podnet's chains and rules in one family. */
export function renderFamily(model: ProxyModel, node: ProxyNode, family: Family): FamilyRules {
  const ctx = familyContext(node, family);
  const { nat, filter } = baseChains(ctx);
  return { family, baseNat: nat, baseFilter: filter, ports: portsOf(model, family).map((p) => renderPort(p, ctx)) };
}

const isExt = (c: string) => c.startsWith('PODNET-EXT-');
const desc = (a: string, b: string) => (a < b ? 1 : a > b ? -1 : 0);

/**
 * The order of the lines of a shared nat chain: the ones jumping to SVC/SVL chains first, then
 * those jumping to EXT chains, each group by descending target name (stable for equal targets).
 * Every frontend is a distinct destination, so the order within the chain does not change what
 * matches; it is chosen for iptables-nft-restore (see emitNat).
 */
export function orderShared(lines: TopLine[]): string[] {
  return lines
    .map((l, i) => ({ l, i }))
    .sort((a, b) => {
      const ea = isExt(a.l.target) ? 1 : 0;
      const eb = isExt(b.l.target) ? 1 : 0;
      return ea - eb || desc(a.l.target, b.l.target) || a.i - b.i;
    })
    .map((x) => x.l.line);
}

/** Every chain of one family with its rules, in chain order (shared chains complete), per table. */
export function familyChains(fr: FamilyRules): { nat: Map<string, string[]>; filter: Map<string, string[]> } {
  const nat = new Map<string, string[]>();
  for (const [c, r] of fr.baseNat) nat.set(c, [...r]);
  nat.get(SERVICES)!.push(...orderShared(fr.ports.flatMap((p) => p.services)), nodeportsJump());
  nat.get(NODEPORTS)!.push(...orderShared(fr.ports.flatMap((p) => p.nodeports)));
  for (const p of fr.ports) for (const [c, r] of portChains(p)) nat.set(c, r);
  const filter = new Map<string, string[]>();
  for (const [c, r] of fr.baseFilter) filter.set(c, [...r]);
  filter.get(FILTER_SERVICES)!.push(...fr.ports.flatMap((p) => p.filter));
  return { nat, filter };
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
 * racing syncs can briefly leave two (both saw none), never none — see IptablesEngine.settleHooks.
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

export interface RestoreText {
  text: string;
  /** chains declared + rules written + chains deleted + hook edits */
  changes: number;
}

export class Section {
  readonly lines: string[] = [];
  changes = 0;
  constructor(readonly table: Table) {}
  decl(c: string): void {
    this.lines.push(`:${c} - [0:0]`);
    this.changes++;
  }
  add(rules: readonly string[]): void {
    for (const r of rules) this.lines.push(r);
    this.changes += rules.length;
  }
  /**
   * Flushes and deletes chains no longer wanted (after the wanted chains that referenced them were
   * rewritten). A chain can go once every chain jumping to it is flushed: the service port chains
   * by kind from the top of the jump graph down (EXT, then SVC/SVL, then SEP), each kind in
   * descending name order and each chain flushed and deleted at once, which keeps the mentions
   * cheap for iptables-nft-restore (see emitPortChains); anything else (the fixed chains, names
   * podnet no longer uses) is flushed first and deleted last.
   */
  drop(chains: Iterable<string>): void {
    const kinds = [/^PODNET-EXT-/, /^PODNET-SV[CL]-/, /^PODNET-SEP-/];
    const all = [...chains].sort(desc);
    const rest = all.filter((c) => !kinds.some((k) => k.test(c)));
    for (const c of rest) this.decl(c);
    for (const k of kinds) {
      for (const c of all) {
        if (!k.test(c)) continue;
        this.decl(c);
        this.lines.push(`-X ${c}`);
        this.changes++;
      }
    }
    for (const c of rest) this.lines.push(`-X ${c}`);
    this.changes += rest.length;
  }
  text(): RestoreText {
    return { text: this.lines.length ? `*${this.table}\n${this.lines.join('\n')}\nCOMMIT\n` : '', changes: this.changes };
  }
}

/**
 * Writes the chains of `ports` into a nat section, in an order chosen for iptables-nft-restore
 * (1.8.x): for --noflush it keeps the names of all chains a transaction mentions in a sorted linked
 * list and inserts every mentioned name by walking it from the smallest, so each mention costs as
 * many steps as there are smaller names already listed. Declaring everything first (kube-proxy's
 * order) makes a full sync quadratic with a large constant (10,000 services: minutes). Here each
 * kind of chain comes in descending name order right where it is first needed, so most mentions
 * find their name at the head of the list: load-balancing chains (SVC/SVL, the largest names) with
 * their masquerade rule and the shared lines that jump to them; then endpoint chains (SEP), each
 * LB chain's endpoint jumps right after its last SEP is declared; then EXT chains (the smallest
 * names, which every later mention would otherwise walk past) and their shared lines. Legacy
 * iptables-restore does not care about order. The chains' contents are the same as in
 * familyChains(): only the order of independent lines differs.
 */
function emitPortChains(s: Section, ports: PortRules[], withShared: boolean): void {
  const lbs = ports.flatMap((p) => p.lb).sort((a, b) => desc(a.name, b.name));
  const seps = ports.flatMap((p) => [...p.seps]).sort((a, b) => desc(a[0], b[0]));
  const exts = ports.flatMap((p) => (p.ext ? [p.ext] : [])).sort((a, b) => desc(a.name, b.name));
  const shared = new Map<string, string[]>();
  if (withShared) {
    for (const p of ports) {
      for (const t of [...p.services, ...p.nodeports]) {
        const l = shared.get(t.target) ?? [];
        l.push(t.line);
        shared.set(t.target, l);
      }
    }
  }
  const afterSep = new Map<string, LbChain[]>();
  for (const lb of lbs) {
    const l = afterSep.get(lb.lastSep) ?? [];
    l.push(lb);
    afterSep.set(lb.lastSep, l);
  }
  for (const lb of lbs) {
    s.decl(lb.name);
    s.add(lb.head);
    s.add(shared.get(lb.name) ?? []);
  }
  for (const [c, rules] of seps) {
    s.decl(c);
    s.add(rules);
    for (const lb of afterSep.get(c) ?? []) s.add(lb.endpointRules);
  }
  for (const e of exts) {
    s.decl(e.name);
    s.add(e.rules);
    s.add(shared.get(e.name) ?? []);
  }
}

/**
 * One family's full sync (nat, then filter): declares (creates or flushes) every podnet chain,
 * writes every rule, flushes and deletes the podnet chains no longer wanted, and fixes the hooks.
 */
export function renderFamilyFull(fr: FamilyRules, observed: Observed = EMPTY_OBSERVED): RestoreText {
  const nat = new Section('nat');
  for (const c of fr.baseNat.keys()) nat.decl(c);
  for (const r of fr.baseNat.values()) nat.add(r);
  emitPortChains(nat, fr.ports, true);
  nat.add([nodeportsJump()]);
  const natWanted = new Set<string>(fr.baseNat.keys());
  for (const p of fr.ports) for (const c of portChains(p).keys()) natWanted.add(c);
  nat.drop([...observed.nat.chains].filter((c) => !natWanted.has(c)));
  nat.add(hookEdits('nat', observed.nat));

  const filter = new Section('filter');
  for (const c of fr.baseFilter.keys()) filter.decl(c);
  for (const r of fr.baseFilter.values()) filter.add(r);
  filter.add(fr.ports.flatMap((p) => p.filter));
  filter.drop([...observed.filter.chains].filter((c) => !fr.baseFilter.has(c)));
  filter.add(hookEdits('filter', observed.filter));
  const a = nat.text();
  const b = filter.text();
  return { text: a.text + b.text, changes: a.changes + b.changes };
}

/** The restore text that removes everything podnet has in one family: hook jumps, then every PODNET chain ('' when there is nothing). */
export function cleanupText(observed: Observed): string {
  let out = '';
  for (const t of ['nat', 'filter'] as Table[]) {
    const s = new Section(t);
    s.add(hookEdits(t, observed[t], false));
    s.drop(observed[t].chains);
    out += s.text().text;
  }
  return out;
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
  /** the restore text ('' when nothing changes in this family) */
  text: string;
  changes: number;
  /** ids of the service ports whose chains were rewritten, added or removed */
  changed: string[];
  /** which shared chains were rewritten */
  rewroteShared: { services: boolean; nodeports: boolean; filter: boolean };
}

export interface PartialOptions {
  /** rewrite the shared chains (nat PODNET-SERVICES, PODNET-NODEPORTS, filter PODNET-SERVICES) even when unchanged */
  alwaysRewriteShared?: boolean;
}

function sameLines(a: readonly { line: string }[] | readonly string[], b: readonly { line: string }[] | readonly string[]): boolean {
  const s = (x: { line: string } | string) => (typeof x === 'string' ? x : x.line);
  return a.length === b.length && a.every((x, i) => s(x) === s(b[i]));
}

/**
 * A partial sync of one family, like kube-proxy's: only the chains of service ports that differ
 * (deep-equal by id) between prev and next are rewritten (declared, which flushes them, and
 * refilled); the chains those ports had and no longer need are flushed and deleted; a shared
 * chain (nat PODNET-SERVICES / PODNET-NODEPORTS, filter PODNET-SERVICES) is rewritten whole only
 * when some changed port's lines in it differ. Unchanged ports are not rendered beyond their
 * shared lines, and those only when a shared chain is rewritten.
 */
export function planPartialFamily(prev: ProxyModel, next: ProxyModel, node: ProxyNode, family: Family, opts: PartialOptions = {}): PartialPlan {
  const ctx = familyContext(node, family);
  const before = new Map<string, ServicePort>();
  for (const p of prev.ports) if (p.family === family) before.set(p.id, p);
  const nextPorts = portsOf(next, family);
  const after = new Map(nextPorts.map((p) => [p.id, p]));
  const changed: string[] = [];
  for (const [id, p] of after) if (!deepEqual(before.get(id), p)) changed.push(id);
  for (const id of before.keys()) if (!after.has(id)) changed.push(id);
  changed.sort();

  const all = !!opts.alwaysRewriteShared;
  const shared = { services: all, nodeports: all, filter: all };
  const written: PortRules[] = [];
  const removed = new Set<string>();
  for (const id of changed) {
    const a = before.has(id) ? renderPort(before.get(id)!, ctx) : undefined;
    const b = after.has(id) ? renderPort(after.get(id)!, ctx) : undefined;
    if (b) written.push(b);
    const keep = b ? portChains(b) : new Map<string, string[]>();
    if (a) for (const c of portChains(a).keys()) if (!keep.has(c)) removed.add(c);
    if (!sameLines(a?.services ?? [], b?.services ?? [])) shared.services = true;
    if (!sameLines(a?.nodeports ?? [], b?.nodeports ?? [])) shared.nodeports = true;
    if (!sameLines(a?.filter ?? [], b?.filter ?? [])) shared.filter = true;
  }

  const nat = new Section('nat');
  if (shared.services) nat.decl(SERVICES);
  if (shared.nodeports) nat.decl(NODEPORTS);
  emitPortChains(nat, written, false);
  if (shared.services || shared.nodeports || shared.filter) {
    const tops = nextPorts.map((p) => portTopLines(p, ctx));
    if (shared.services) nat.add([...orderShared(tops.flatMap((t) => t.services)), nodeportsJump()]);
    if (shared.nodeports) nat.add(orderShared(tops.flatMap((t) => t.nodeports)));
    if (shared.filter) {
      const filter = new Section('filter');
      filter.decl(FILTER_SERVICES);
      filter.add(tops.flatMap((t) => t.filter));
      nat.drop(removed);
      const a = nat.text();
      const b = filter.text();
      return { family, text: a.text + b.text, changes: a.changes + b.changes, changed, rewroteShared: shared };
    }
  }
  nat.drop(removed);
  const a = nat.text();
  return { family, text: a.text, changes: a.changes, changed, rewroteShared: shared };
}

/** Only the shared-chain lines of a port (cheap: no own chains, no endpoint hashing). */
export function portTopLines(p: ServicePort, ctx: FamilyContext): Pick<PortRules, 'services' | 'nodeports' | 'filter'> {
  return renderPort(p, ctx, true);
}
