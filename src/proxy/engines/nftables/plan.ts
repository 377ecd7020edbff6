// The nftables layout of podnet's service proxy, as a pure plan: declarations (sets, maps,
// chains) plus elements. Pure: no child_process, no fs.
//
// Why this shape. kube-proxy's nftables layout gives every service a chain with an anonymous
// `numgen ... vmap { ... }`; the kernel names each anonymous set by walking every set in the
// table, so loading N services costs O(N²) (0.37 s at 1,000, 37 s at 10,000 here). Here the
// number of sets, chains and rules does not depend on the number of services at all:
//   - one verdict map per family (`svc4`/`svc6`) keyed by daddr . l4proto . dport decides in one
//     lookup whether a new flow is for a service (cluster IP, external IP, or node IP + NodePort)
//     and sends it to a shared load-balancing chain for its endpoint count and masquerade policy;
//   - that chain picks a slot with `numgen random mod N` and jumps to a shared per-slot chain whose
//     one rule DNATs through the per-slot endpoint map (`ep4-<slot>`), keyed by the same frontend.
// So a service is only elements: 1 in svc + 1 per endpoint; a change to one service is a handful
// of element operations, which the engine sends straight over nfnetlink.
// Chains exist per distinct (endpoint count, policy, affinity timeout) in use and per slot, which
// is bounded by the largest endpoint count, not by the number of services.
import type { Family } from '../../../util/ip.js';
import type { ProxyModel, ProxyNode, ServicePort, Protocol } from '../../model.js';
import { frontendsOf, ipFamily, type Masq } from '../../frontends.js';

export { endpointsByFrontend } from '../../frontends.js';

export const TABLE = 'podnet-proxy';
export const MASQ_MARK = 0x4000;

export type { ElemPart, ElemData } from '../../../kernel/netlink/nft-elements.js';
import type { ElemPart, ElemData } from '../../../kernel/netlink/nft-elements.js';

export interface Element {
  key: ElemPart[];
  data?: ElemData;
}

export interface SetDecl {
  name: string;
  /** the declaration body, e.g. "typeof ip daddr . meta l4proto . th dport : verdict" */
  body: string;
  /** false for sets the datapath fills itself (affinity): never flushed or diffed */
  managed: boolean;
}

export interface ChainDecl {
  name: string;
  /** "type nat hook prerouting priority dstnat; policy accept;" for base chains */
  hook?: string;
  rules: string[];
}

export interface NftPlan {
  sets: Map<string, SetDecl>;
  chains: Map<string, ChainDecl>;
  /** set name -> element key text -> element */
  elements: Map<string, Map<string, Element>>;
}

const IPKW: Record<Family, 'ip' | 'ip6'> = { 4: 'ip', 6: 'ip6' };

export function partText(p: ElemPart): string {
  return String(p.value);
}
export function keyText(parts: ElemPart[]): string {
  return parts.map(partText).join(' . ');
}
export function dataText(d: ElemData): string {
  if (d.kind === 'verdict') return d.chain ? `${d.verdict} ${d.chain}` : d.verdict;
  return keyText(d.parts);
}
// Element text is rendered once per element object (fragments are cached per service port), so a
// periodic full sync of 10,000 services does not rebuild 50,000 strings.
const textMemo = new WeakMap<Element, string>();
export function elementText(e: Element): string {
  let t = textMemo.get(e);
  if (t === undefined) {
    t = e.data ? `${keyText(e.key)} : ${dataText(e.data)}` : keyText(e.key);
    textMemo.set(e, t);
  }
  return t;
}

function addrPart(f: Family, ip: string): ElemPart {
  return f === 4 ? { kind: 'ipv4', value: ip } : { kind: 'ipv6', value: ip };
}
function frontendKey(f: Family, ip: string, proto: Protocol, port: number): ElemPart[] {
  return [addrPart(f, ip), { kind: 'proto', value: proto }, { kind: 'port', value: port }];
}

export function lbChainName(n: number, masq: Masq, affinity?: number): string {
  return `lb-${n}-${masq}${affinity ? `-aff${affinity}` : ''}`;
}
const pickChain = (slot: number) => `pick-${slot}`;
const pinChain = (slot: number, t: number) => `pin-${slot}-${t}`;
const epMap = (f: Family, slot: number) => `ep${f}-${slot}`;
const affSet = (f: Family, slot: number) => `aff${f}-${slot}`;


/** The elements one service port contributes (set name -> elements), and the chains it needs. */
export interface FragElement {
  set: string;
  el: Element;
  /** keyText(el.key), computed once */
  k: string;
}

export interface PortFragment {
  /** service elements (svc, noep, ep slots) */
  elements: FragElement[];
  /** hairpin pairs of this port's endpoints: shared between ports, so counted rather than diffed */
  hairpin: FragElement[];
  lbChains: { n: number; masq: Masq; affinity?: number }[];
  slots: number;
}

export function fragmentOf(p: ServicePort, node: ProxyNode): PortFragment {
  const elements: FragElement[] = [];
  const lbChains: PortFragment['lbChains'] = [];
  let slots = 0;
  const f = p.family;
  for (const fe of frontendsOf(p, node)) {
    const key = frontendKey(f, fe.ip, fe.protocol, fe.port);
    const k = `${fe.ip} . ${fe.protocol} . ${fe.port}`;
    if (fe.empty) {
      const reject = fe.empty === 'reject';
      elements.push({ set: `noep${f}`, k, el: { key, data: reject ? { kind: 'verdict', verdict: 'goto', chain: 'reject-no-endpoints' } : { kind: 'verdict', verdict: 'drop' } } });
      continue;
    }
    const n = fe.endpoints.length;
    const lb = { n, masq: fe.masq, affinity: p.affinitySeconds };
    lbChains.push(lb);
    slots = Math.max(slots, n);
    const chain = lbChainName(n, lb.masq, lb.affinity);
    elements.push({ set: `svc${f}`, k, el: { key, data: { kind: 'verdict', verdict: 'goto', chain } } });
    for (let i = 0; i < n; i++) {
      const e = fe.endpoints[i];
      elements.push({ set: epMap(f, i), k, el: { key, data: { kind: 'value', parts: [addrPart(f, e.ip), { kind: 'port', value: e.port }] } } });
    }
  }
  const hairpin: FragElement[] = [];
  const seen = new Set<string>();
  for (const e of p.endpoints) {
    if (seen.has(e.ip)) continue;
    seen.add(e.ip);
    const a = addrPart(f, e.ip);
    const k = `${e.ip} . ${e.ip}`;
    hairpin.push({ set: `hairpin${f}`, k, el: { key: [a, a] } });
  }
  return { elements, hairpin, lbChains, slots };
}

// The fragment of a service port depends only on the port object and the node; models built
// by the proxier reuse unchanged ServicePort objects, so this cache turns a re-plan into lookups.
const fragmentCache = new WeakMap<ServicePort, { node: ProxyNode; frag: PortFragment }>();
export function cachedFragment(p: ServicePort, node: ProxyNode): PortFragment {
  const hit = fragmentCache.get(p);
  if (hit && hit.node === node) return hit.frag;
  const frag = fragmentOf(p, node);
  fragmentCache.set(p, { node, frag });
  return frag;
}

// Declared with `type`, not `typeof`: nft 1.0.6 cannot re-read a map whose typeof data is
// `ip daddr . th dport` ("conflicting protocols specified: ip vs. th"), which breaks every later
// transaction on the table.
const ADDR: Record<Family, string> = { 4: 'ipv4_addr', 6: 'ipv6_addr' };

function setDecls(maxSlots: number, affinity: Map<number, Set<number>>): SetDecl[] {
  const out: SetDecl[] = [];
  for (const f of [4, 6] as Family[]) {
    const a = ADDR[f];
    const frontend = `${a} . inet_proto . inet_service`;
    out.push({ name: `svc${f}`, body: `type ${frontend} : verdict`, managed: true });
    out.push({ name: `noep${f}`, body: `type ${frontend} : verdict`, managed: true });
    out.push({ name: `hairpin${f}`, body: `type ${a} . ${a}`, managed: true });
    out.push({ name: `cluster-nets${f}`, body: `type ${a}; flags interval`, managed: true });
    for (let i = 0; i < maxSlots; i++) out.push({ name: epMap(f, i), body: `type ${frontend} : ${a} . inet_service`, managed: true });
    const affSlots = Math.max(0, ...[...affinity.values()].map((slots) => Math.max(0, ...slots) + 1));
    for (let i = 0; i < affSlots; i++) out.push({ name: affSet(f, i), body: `type ${a} . ${a} . inet_proto . inet_service; flags dynamic,timeout; timeout 1d`, managed: false });
  }
  return out;
}

function masqRules(masq: Masq): string[] {
  const mark = `meta mark set meta mark | 0x${MASQ_MARK.toString(16)}`;
  if (masq === 'all') return [mark];
  if (masq === 'int') return [`ip saddr != @cluster-nets4 ${mark}`, `ip6 saddr != @cluster-nets6 ${mark}`];
  return [];
}

function slotVmap(n: number, target: (i: number) => string): string {
  if (n === 1) return `goto ${target(0)}`;
  const items = Array.from({ length: n }, (_, i) => `${i} : goto ${target(i)}`).join(', ');
  return `numgen random mod ${n} vmap { ${items} }`;
}

function lbChain(n: number, masq: Masq, affinity?: number): ChainDecl {
  const rules = [...masqRules(masq)];
  if (affinity) {
    for (let i = 0; i < n; i++) {
      for (const f of [4, 6] as Family[]) {
        const k = IPKW[f];
        rules.push(`${k} saddr . ${k} daddr . meta l4proto . th dport @${affSet(f, i)} goto ${pinChain(i, affinity)}`);
      }
    }
    rules.push(slotVmap(n, (i) => pinChain(i, affinity)));
  } else rules.push(slotVmap(n, pickChain));
  return { name: lbChainName(n, masq, affinity), rules };
}

function staticChains(maxSlots: number, affinity: Map<number, Set<number>>): ChainDecl[] {
  const mark = `0x${MASQ_MARK.toString(16)}`;
  const chains: ChainDecl[] = [
    // Only nat base chains: the kernel evaluates a nat chain for the first packet of a connection
    // alone, so established traffic (and every packet that is not for a service) walks no rule of
    // this table. A frontend without endpoints is answered here too (reject is valid in a nat
    // chain at prerouting and output), before the service lookup.
    { name: 'nat-prerouting', hook: 'type nat hook prerouting priority dstnat; policy accept;', rules: ['jump no-endpoints', 'jump services'] },
    { name: 'nat-output', hook: 'type nat hook output priority -100; policy accept;', rules: ['jump no-endpoints', 'jump services'] },
    { name: 'services', rules: ['ip daddr . meta l4proto . th dport vmap @svc4', 'ip6 daddr . meta l4proto . th dport vmap @svc6'] },
    {
      name: 'nat-postrouting',
      hook: 'type nat hook postrouting priority srcnat; policy accept;',
      rules: [
        // hairpin: a pod reaching itself through its service must see the reply come back from the service
        `ct status dnat ip saddr . ip daddr @hairpin4 meta mark set meta mark | ${mark}`,
        `ct status dnat ip6 saddr . ip6 daddr @hairpin6 meta mark set meta mark | ${mark}`,
        `meta mark & ${mark} == 0 return`,
        // clear the bit so an encapsulated copy of the packet is not masqueraded again
        `meta mark set meta mark ^ ${mark}`,
        'masquerade fully-random',
      ],
    },
    // no endpoints: answered at once (TCP reset, ICMP port unreachable) or dropped
    { name: 'no-endpoints', rules: ['ip daddr . meta l4proto . th dport vmap @noep4', 'ip6 daddr . meta l4proto . th dport vmap @noep6'] },
    { name: 'reject-no-endpoints', rules: ['meta l4proto tcp reject with tcp reset', 'reject'] },
  ];
  for (let i = 0; i < maxSlots; i++) {
    chains.push({ name: pickChain(i), rules: [`dnat ip to ip daddr . meta l4proto . th dport map @${epMap(4, i)}`, `dnat ip6 to ip6 daddr . meta l4proto . th dport map @${epMap(6, i)}`] });
  }
  for (const [t, slots] of affinity) {
    for (const i of slots) {
      chains.push({
        name: pinChain(i, t),
        rules: [
          `update @${affSet(4, i)} { ip saddr . ip daddr . meta l4proto . th dport timeout ${t}s }`,
          `update @${affSet(6, i)} { ip6 saddr . ip6 daddr . meta l4proto . th dport timeout ${t}s }`,
          `goto ${pickChain(i)}`,
        ],
      });
    }
  }
  return chains;
}

/** Elements that belong to the node rather than to a service port: the cluster networks. */
export function globalElements(node: ProxyNode): FragElement[] {
  // with no cluster network of a family the set stays empty: every source counts as outside
  return node.clusterCIDRs.map((c) => {
    const f = ipFamily(c);
    return { set: `cluster-nets${f}`, k: c, el: { key: [f === 4 ? { kind: 'ipv4', value: c } : { kind: 'ipv6', value: c }] } };
  });
}

/** The complete plan for a model. */
export function planModel(model: ProxyModel, node: ProxyNode): NftPlan {
  const elements = new Map<string, Map<string, Element>>();
  const lbs = new Map<string, ChainDecl>();
  const affinity = new Map<number, Set<number>>();
  let maxSlots = 0;
  const put = (x: FragElement) => {
    let m = elements.get(x.set);
    if (!m) elements.set(x.set, (m = new Map()));
    m.set(x.k, x.el);
  };
  for (const p of model.ports) {
    const frag = cachedFragment(p, node);
    for (const x of frag.elements) put(x);
    for (const x of frag.hairpin) put(x);
    maxSlots = Math.max(maxSlots, frag.slots);
    for (const lb of frag.lbChains) {
      const name = lbChainName(lb.n, lb.masq, lb.affinity);
      if (!lbs.has(name)) lbs.set(name, lbChain(lb.n, lb.masq, lb.affinity));
      if (lb.affinity) {
        const s = affinity.get(lb.affinity) ?? new Set<number>();
        for (let i = 0; i < lb.n; i++) s.add(i);
        affinity.set(lb.affinity, s);
      }
    }
  }
  for (const x of globalElements(node)) put(x);
  const sets = new Map<string, SetDecl>();
  for (const s of setDecls(maxSlots, affinity)) sets.set(s.name, s);
  for (const s of sets.values()) if (s.managed && !elements.has(s.name)) elements.set(s.name, new Map());
  const chains = new Map<string, ChainDecl>();
  for (const c of staticChains(maxSlots, affinity)) chains.set(c.name, c);
  for (const c of [...lbs.values()].sort((a, b) => (a.name < b.name ? -1 : 1))) chains.set(c.name, c);
  return { sets, chains, elements };
}

function chainBlock(c: ChainDecl): string {
  const lines = [`  chain ${c.name} {`];
  if (c.hook) lines.push(`    ${c.hook}`);
  for (const r of c.rules) lines.push(`    ${r}`);
  lines.push('  }');
  return lines.join('\n');
}

/** Declarations only (idempotent `add`s): safe to send when the objects already exist. */
export function renderDeclarations(plan: NftPlan, only?: { sets?: Iterable<string>; chains?: Iterable<string> }): string {
  const sets = only?.sets ? [...only.sets].map((n) => plan.sets.get(n)!) : [...plan.sets.values()];
  const chains = only?.chains ? [...only.chains].map((n) => plan.chains.get(n)!) : [...plan.chains.values()];
  const lines = [`table inet ${TABLE} {`];
  for (const s of sets) lines.push(`  ${s.body.includes(' : ') ? 'map' : 'set'} ${s.name} { ${s.body.split('; ').join('; ')}; }`);
  for (const c of chains) lines.push(`  chain ${c.name} {${c.hook ? ` ${c.hook}` : ''} }`);
  lines.push('}');
  return lines.join('\n') + '\n';
}

function elementsLine(verb: 'add' | 'delete', set: string, els: Iterable<Element>): string[] {
  const out: string[] = [];
  let batch: string[] = [];
  const flush = () => {
    if (batch.length) out.push(`${verb} element inet ${TABLE} ${set} { ${batch.join(', ')} }`);
    batch = [];
  };
  for (const e of els) {
    batch.push(verb === 'add' ? elementText(e) : keyText(e.key));
    if (batch.length >= 2000) flush();
  }
  flush();
  return out;
}

export interface ExistingObjects {
  sets: Set<string>;
  chains: Set<string>;
}

/**
 * The full-sync transaction: declare everything, rewrite every chain and managed set whole, and
 * delete what the plan no longer has. Affinity sets keep their contents. One `nft -f`.
 */
export function renderFullSync(plan: NftPlan, existing: ExistingObjects, opts: { elementsOf?: (set: SetDecl) => boolean } = {}): string {
  const out = [renderDeclarations(plan).trimEnd()];
  for (const s of plan.sets.values()) {
    if (!s.managed) continue;
    out.push(`flush ${s.body.includes(' : ') ? 'map' : 'set'} inet ${TABLE} ${s.name}`);
  }
  // rules go before elements: a vmap element may only name a chain that exists, and chains are
  // declared above; flushing chains first also drops rules that reference sets about to go.
  for (const c of plan.chains.values()) {
    out.push(`flush chain inet ${TABLE} ${c.name}`);
    for (const r of c.rules) out.push(`add rule inet ${TABLE} ${c.name} ${r}`);
  }
  for (const [set, els] of plan.elements) {
    const decl = plan.sets.get(set);
    if (opts.elementsOf && decl && !opts.elementsOf(decl)) continue;
    out.push(...elementsLine('add', set, els.values()));
  }
  for (const c of existing.chains) if (!plan.chains.has(c)) out.push(`flush chain inet ${TABLE} ${c}`);
  for (const c of existing.chains) if (!plan.chains.has(c)) out.push(`delete chain inet ${TABLE} ${c}`);
  for (const s of existing.sets) if (!plan.sets.has(s)) out.push(`delete set inet ${TABLE} ${s}`);
  return out.join('\n') + '\n';
}

/** The whole ruleset as `nft -f` would load it from nothing (for `podnet proxy render`). */
export function renderRuleset(plan: NftPlan): string {
  const lines = [`table inet ${TABLE} {`];
  for (const s of plan.sets.values()) {
    const kind = s.body.includes(' : ') ? 'map' : 'set';
    const els = plan.elements.get(s.name);
    lines.push(`  ${kind} ${s.name} {`);
    for (const part of s.body.split('; ')) lines.push(`    ${part}`);
    if (els && els.size > 0) {
      lines.push('    elements = {');
      const all = [...els.values()].map(elementText);
      all.forEach((t, i) => lines.push(`      ${t}${i < all.length - 1 ? ',' : ''}`));
      lines.push('    }');
    }
    lines.push('  }');
  }
  for (const c of plan.chains.values()) lines.push(chainBlock(c));
  lines.push('}');
  return lines.join('\n') + '\n';
}

/** Element operations turning `prev` into `next` for the managed sets both plans have. */
export interface ElementDiff {
  deletes: { set: string; el: Element }[];
  adds: { set: string; el: Element }[];
}

export function diffElements(prev: Map<string, Map<string, Element>>, next: Map<string, Map<string, Element>>): ElementDiff {
  const deletes: ElementDiff['deletes'] = [];
  const adds: ElementDiff['adds'] = [];
  for (const [set, pm] of prev) {
    const nm = next.get(set);
    for (const [k, el] of pm) {
      const ne = nm?.get(k);
      if (!ne) deletes.push({ set, el });
      else if (ne.data && el.data && dataText(ne.data) !== dataText(el.data)) deletes.push({ set, el });
    }
  }
  for (const [set, nm] of next) {
    const pm = prev.get(set);
    for (const [k, el] of nm) {
      const pe = pm?.get(k);
      if (!pe || (pe.data && el.data && dataText(pe.data) !== dataText(el.data))) adds.push({ set, el });
    }
  }
  return { deletes, adds };
}

/** True when both plans declare the same sets and chains with the same rules (only elements differ). */
export function sameStructure(a: NftPlan, b: NftPlan): boolean {
  if (a.sets.size !== b.sets.size || a.chains.size !== b.chains.size) return false;
  for (const [n, s] of a.sets) if (b.sets.get(n)?.body !== s.body) return false;
  for (const [n, c] of a.chains) {
    const o = b.chains.get(n);
    if (!o || o.hook !== c.hook || o.rules.length !== c.rules.length || o.rules.some((r, i) => r !== c.rules[i])) return false;
  }
  return true;
}

