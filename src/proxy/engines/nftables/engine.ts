// Applies the nftables plan. Full syncs go through `nft -f` (one atomic transaction, structure
// and elements). Partial syncs diff the changed service ports only and, when the structure is
// unchanged, send the element operations straight over nfnetlink in one batch: the `nft` CLI
// costs 25 ms or more per call at 10,000 services because it reads the table first, while a
// batch of a few elements costs well under a millisecond.
import { NftCli } from '../../../kernel/nft.js';
import type { ElementOp, NftElementWriter } from '../../../kernel/netlink/nft-elements.js';
import type { NetnsRef } from '../../../kernel/types.js';
import type { ChangedPorts, EngineOptions, ProgrammedEndpoints, ProxyEngine, SyncResult } from '../../engine.js';
import type { ProxyModel, ProxyNode, ServicePort } from '../../model.js';
import {
  TABLE,
  type FragElement,
  type SetDecl,
  type ExistingObjects,
  cachedFragment,
  dataText,
  keyText,
  lbChainName,
  planModel,
  renderDeclarations,
  renderFullSync,
  renderRuleset,
  elementText,
} from './plan.js';

/** What this process last applied: enough to do the next partial sync without reading the kernel. */
interface Applied {
  node: ProxyNode;
  sets: Set<string>;
  chains: Set<string>;
  /** endpoint IP -> how many frontends' endpoint lists name it (hairpin elements are shared) */
  hairpin: Map<string, number>;
}

function sameNode(a: ProxyNode, b: ProxyNode): boolean {
  return a === b || JSON.stringify(a) === JSON.stringify(b);
}

/** Ports that differ, by id; identical objects (memoized normalization) are skipped without a compare. */
export function changedPorts(prev: ProxyModel, next: ProxyModel): ChangedPorts {
  const prevById = new Map(prev.ports.map((p) => [p.id, p]));
  const before: ServicePort[] = [];
  const after: ServicePort[] = [];
  const seen = new Set<string>();
  for (const p of next.ports) {
    seen.add(p.id);
    const q = prevById.get(p.id);
    if (q === p || (q && portsEqual(q, p))) continue;
    if (q) before.push(q);
    after.push(p);
  }
  for (const q of prev.ports) if (!seen.has(q.id)) before.push(q);
  return { before, after };
}

function portsEqual(a: ServicePort, b: ServicePort): boolean {
  return a === b || JSON.stringify(a) === JSON.stringify(b);
}

export class NftablesEngine implements ProxyEngine {
  readonly mode = 'nftables' as const;
  private readonly ns: NetnsRef;
  private readonly nft = new NftCli();
  private writer?: NftElementWriter;
  private applied?: Applied;

  constructor(private readonly opts: EngineOptions = {}) {
    this.ns = opts.netns ? { kind: 'path', path: opts.netns } : { kind: 'current' };
  }

  render(model: ProxyModel, node: ProxyNode): string {
    return renderRuleset(planModel(model, node));
  }

  private async existing(): Promise<ExistingObjects> {
    // `-t list ruleset` answers from the object cache alone (30 ms at 50,000 elements); listing the
    // table, even terse, makes nft fetch every element first (650 ms)
    const json = (await this.nft.listJson(this.ns, ['ruleset'], { terse: true })) as { nftables?: Record<string, { name?: string; table?: string; family?: string }>[] } | undefined;
    const ex: ExistingObjects = { sets: new Set(), chains: new Set() };
    const ours = (o: { table?: string; family?: string } | undefined) => o?.table === TABLE && o.family === 'inet';
    for (const it of json?.nftables ?? []) {
      if (it.chain?.name && ours(it.chain)) ex.chains.add(it.chain.name);
      if (it.set?.name && ours(it.set)) ex.sets.add(it.set.name);
      if (it.map?.name && ours(it.map)) ex.sets.add(it.map.name);
    }
    return ex;
  }

  async fullSync(model: ProxyModel, node: ProxyNode): Promise<SyncResult> {
    const plan = planModel(model, node);
    const existing = await this.existing();
    this.applied = undefined;
    if (existing.chains.size === 0 && existing.sets.size === 0) {
      // A new table: the structure (and the interval set of cluster networks) in one `nft -f`, then
      // the service elements in one nfnetlink batch, which costs a fraction of nft parsing 50,000
      // elements. Nothing was in force before, so the two steps need not be one transaction; if
      // the second fails, the retry finds the table and takes the atomic path below.
      const viaNetlink = (s: SetDecl) => s.managed && !s.body.includes('flags interval');
      await this.nft.run(this.ns, renderFullSync(plan, existing, { elementsOf: (s) => !viaNetlink(s) }));
      const ops: ElementOp[] = [];
      for (const [set, els] of plan.elements) {
        const decl = plan.sets.get(set);
        if (!decl || !viaNetlink(decl)) continue;
        for (const el of els.values()) ops.push({ op: 'add', family: 'inet', table: TABLE, set, key: el.key, data: el.data });
      }
      if (ops.length > 0) (await this.elementWriter()).apply(ops);
    } else {
      await this.nft.run(this.ns, renderFullSync(plan, existing));
    }
    const hairpin = new Map<string, number>();
    for (const p of model.ports) for (const x of cachedFragment(p, node).hairpin) hairpin.set(x.k, (hairpin.get(x.k) ?? 0) + 1);
    this.applied = { node, sets: new Set(plan.sets.keys()), chains: new Set(plan.chains.keys()), hairpin };
    let changes = plan.chains.size;
    for (const c of plan.chains.values()) changes += c.rules.length;
    for (const els of plan.elements.values()) changes += els.size;
    return { kind: 'full', changes };
  }

  async partialSync(prev: ProxyModel, next: ProxyModel, node: ProxyNode, changed?: ChangedPorts): Promise<SyncResult> {
    try {
      return await this.partial(prev, next, node, changed ?? changedPorts(prev, next));
    } catch (e) {
      this.applied = undefined;
      throw e;
    }
  }

  private async partial(prev: ProxyModel, next: ProxyModel, node: ProxyNode, changed: ChangedPorts): Promise<SyncResult> {
    const applied = this.applied;
    if (!applied || !sameNode(applied.node, node)) return this.fullSync(next, node);
    const prevById = new Map(changed.before.map((p) => [p.id, p]));
    const nextIds = new Set<string>();
    const deletes: FragElement[] = [];
    const adds: FragElement[] = [];
    const hairDelta = new Map<string, { x: FragElement; d: number }>();
    const bump = (xs: FragElement[], d: number) => {
      for (const x of xs) {
        const h = hairDelta.get(x.k) ?? { x, d: 0 };
        h.d += d;
        hairDelta.set(x.k, h);
      }
    };
    const diffPort = (a: ServicePort | undefined, b: ServicePort | undefined) => {
      const fa = a ? cachedFragment(a, applied.node) : undefined;
      const fb = b ? cachedFragment(b, node) : undefined;
      const before = new Map<string, FragElement>();
      for (const x of fa?.elements ?? []) before.set(`${x.set}|${x.k}`, x);
      for (const x of fb?.elements ?? []) {
        const k = `${x.set}|${x.k}`;
        const old = before.get(k);
        before.delete(k);
        if (old && (old.el.data ? dataText(old.el.data) : '') === (x.el.data ? dataText(x.el.data) : '')) continue;
        if (old) deletes.push(old);
        adds.push(x);
      }
      for (const x of before.values()) deletes.push(x);
      if (fa) bump(fa.hairpin, -1);
      if (fb) bump(fb.hairpin, +1);
    };
    let needChains: Set<string> | undefined;
    let maxSlots = 0;
    for (const p of changed.after) {
      nextIds.add(p.id);
      const a = prevById.get(p.id);
      if (a && portsEqual(a, p)) continue;
      diffPort(a, p);
      const frag = cachedFragment(p, node);
      for (const lb of frag.lbChains) (needChains ??= new Set()).add(lbChainName(lb.n, lb.masq, lb.affinity));
      maxSlots = Math.max(maxSlots, frag.slots);
    }
    for (const a of changed.before) if (!nextIds.has(a.id)) diffPort(a, undefined);

    // counts are updated in place; any failure below drops `applied`, so the next sync is full
    const hairpin = applied.hairpin;
    for (const [k, { x, d }] of hairDelta) {
      if (d === 0) continue;
      const before = hairpin.get(k) ?? 0;
      const after = before + d;
      if (before === 0 && after > 0) adds.push(x);
      if (before > 0 && after <= 0) deletes.push(x);
      if (after > 0) hairpin.set(k, after);
      else hairpin.delete(k);
    }

    // New chains or slot maps needed (a first service with 7 endpoints, a new affinity timeout):
    // a structural change, done as one `nft -f` transaction with the element changes.
    const missingChains = [...(needChains ?? [])].filter((c) => !applied.chains.has(c));
    const missingSlots = maxSlots > 0 && !applied.sets.has(`ep4-${maxSlots - 1}`);
    const hasAffinity = changed.after.some((p) => p.affinitySeconds !== undefined && !prevById.has(p.id)) || missingChains.some((c) => c.includes('-aff'));
    if (missingChains.length > 0 || missingSlots || hasAffinity) {
      const plan = planModel(next, node);
      const newSets = [...plan.sets.keys()].filter((s) => !applied.sets.has(s));
      const newChains = [...plan.chains.keys()].filter((c) => !applied.chains.has(c));
      if (newSets.length > 0 || newChains.length > 0) {
        const lines = [renderDeclarations(plan, { sets: newSets, chains: newChains }).trimEnd()];
        for (const c of newChains) for (const r of plan.chains.get(c)!.rules) lines.push(`add rule inet ${TABLE} ${c} ${r}`);
        for (const d of deletes) lines.push(`delete element inet ${TABLE} ${d.set} { ${keyText(d.el.key)} }`);
        for (const a of adds) lines.push(`add element inet ${TABLE} ${a.set} { ${elementText(a.el)} }`);
        await this.nft.run(this.ns, lines.join('\n') + '\n');
        for (const s of newSets) applied.sets.add(s);
        for (const c of newChains) applied.chains.add(c);
        applied.hairpin = hairpin;
        return { kind: 'partial', changes: newSets.length + newChains.length + deletes.length + adds.length };
      }
    }

    if (deletes.length + adds.length > 0) {
      const ops: ElementOp[] = [
        ...deletes.map((d) => ({ op: 'delete' as const, family: 'inet' as const, table: TABLE, set: d.set, key: d.el.key })),
        ...adds.map((a) => ({ op: 'add' as const, family: 'inet' as const, table: TABLE, set: a.set, key: a.el.key, data: a.el.data })),
      ];
      (await this.elementWriter()).apply(ops);
    }
    applied.hairpin = hairpin;
    return { kind: 'partial', changes: deletes.length + adds.length };
  }

  private async elementWriter(): Promise<NftElementWriter> {
    if (!this.writer) {
      // loaded on first use: koffi stays out of processes that only render
      const { NftElementWriter } = await import('../../../kernel/netlink/nft-elements.js');
      this.writer = new NftElementWriter(this.opts.netns ? { netnsPath: this.opts.netns } : {});
    }
    return this.writer;
  }

  async programmedEndpoints(node: ProxyNode): Promise<ProgrammedEndpoints> {
    const json = (await this.nft.listJson(this.ns, ['table', 'inet', TABLE])) as { nftables?: Record<string, unknown>[] } | undefined;
    return parseProgrammed(json, node);
  }

  async cleanup(): Promise<void> {
    const has = await this.nft.listJson(this.ns, ['table', 'inet', TABLE], { terse: true });
    if (has) await this.nft.run(this.ns, `delete table inet ${TABLE}\n`);
    this.applied = undefined;
  }

  close(): void {
    this.writer?.close();
    this.writer = undefined;
  }
}

type Json = unknown;
function concatOf(v: Json): Json[] {
  if (v && typeof v === 'object' && 'concat' in (v as Record<string, unknown>)) return (v as { concat: Json[] }).concat;
  return [v];
}

/** Endpoints per frontend from `nft -j list table` output (see ProgrammedEndpoints). */
export function parseProgrammed(json: { nftables?: Record<string, unknown>[] } | undefined, node: ProxyNode): ProgrammedEndpoints {
  const out: ProgrammedEndpoints = new Map();
  for (const it of json?.nftables ?? []) {
    const map = it.map as { name?: string; elem?: Json[] } | undefined;
    if (!map?.name || !/^ep[46]-\d+$/.test(map.name)) continue;
    for (const e of map.elem ?? []) {
      if (!Array.isArray(e) || e.length !== 2) continue;
      const [k, v] = e as [Json, Json];
      const [ip, proto, port] = concatOf(k).map(String);
      const [eip, eport] = concatOf(v).map(String);
      const key = node.nodeIPs.includes(ip) ? `${proto}/nodeport/${port}` : `${proto}/${ip}/${port}`;
      const s = out.get(key) ?? new Set<string>();
      s.add(`${eip}/${eport}`);
      out.set(key, s);
    }
  }
  return out;
}
