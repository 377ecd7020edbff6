// PodFirewall over nfnetlink, in the current netns (the node's: where the agent and the plugin
// run). Per pod: one element batch (one nf_tables transaction) and a few reads, no process.
//
// The shared structure (table, sets, chains, rules) is still written by `nft -f`, the same
// idempotent transaction the CLI path sends (chains flushed and rewritten whole), so ADDs racing
// on a fresh node — in this process or in others — converge on one copy. In this process it is
// written once: concurrent first ADDs wait for the same write. Afterwards each ADD checks it with
// one rule dump of podnet's chains (tens of microseconds): the expected rules with their
// handles as last seen. Anything else — a table flushed or deleted by hand, rules rewritten by
// another writer — makes it write the structure again. A set that vanishes between the check and
// the element batch fails the batch with ENOENT; the structure is then rewritten and the batch
// retried once.
import type { NftRunner } from '../../kernel/types.js';
import { NftElementWriter, NftNetlinkError, kernelBefore, type ElemData, type ElemPart, type ElementOp } from '../../kernel/netlink/nft-elements.js';
import { NftReader, type NftElementInfo } from '../../kernel/netlink/nft-read.js';
import { formatIp } from '../../kernel/netlink/message.js';
import { canonicalIP } from '../../util/ip.js';
import { MASQ_CHAIN, MASQ_RULE_COMMENT, MASQ_RULE_COUNT, TABLE as MASQ_TABLE, renderMasqBase, setNames, type MasqEntry } from '../masq.js';
import {
  HOSTPORT_RULE_COUNTS,
  HOSTPORT_TABLE,
  conflictError,
  findConflicts,
  ownedBy,
  renderHostportBase,
  type HairpinElement,
  type HairpinSet,
  type HostportElement,
  type HostportPlan,
  type HostportTable,
  type MapName,
} from '../hostport.js';
import type { MasqElement, PodFirewall, RemovedHostports } from './types.js';

const EEXIST = 17;
const ENOENT = 2;
const MAPS: readonly MapName[] = ['hostports4', 'hostports6', 'hostipports4', 'hostipports6'];
const HAIRPINS: readonly HairpinSet[] = ['hairpin4', 'hairpin6'];
const PROTO: Record<number, HostportElement['protocol']> = { 6: 'tcp', 17: 'udp', 132: 'sctp' };

const isV6 = (ip: string): boolean => ip.includes(':');
const ipPart = (ip: string): ElemPart => (isV6(ip) ? { kind: 'ipv6', value: ip } : { kind: 'ipv4', value: ip });
const errnoOf = (e: unknown): number | undefined => (e instanceof NftNetlinkError ? e.errno : undefined);

/** A structure written by `nft -f` when a cheap check says it is not as this process left it. */
class SharedStructure {
  private seen?: string;
  private writing?: Promise<void>;

  constructor(
    /** undefined when the rules are not all there; otherwise a fingerprint of them (their handles) */
    private readonly check: () => string | undefined,
    private readonly write: () => Promise<void>,
    /** complete rules are enough, whoever wrote them (the structure has no parameters of ours) */
    private readonly anyWriter = false,
  ) {}

  async ensure(force = false): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      if (this.writing) {
        await this.writing.catch(() => {});
        force = false;
        continue;
      }
      const fp = this.check();
      if (!force && fp !== undefined && (fp === this.seen || this.anyWriter)) {
        this.seen = fp;
        return;
      }
      if (attempt >= 3) throw new Error('nftables structure changed under every rewrite (another writer keeps rewriting it)');
      const w = (this.writing = this.write().then(() => {
        this.seen = this.check();
      }));
      try {
        await w;
      } finally {
        if (this.writing === w) this.writing = undefined;
      }
      return;
    }
  }

  /** Forget what was seen: the next ensure() writes. */
  invalidate(): void {
    this.seen = undefined;
  }
}

function decodeIp(b: Buffer): string {
  return canonicalIP(formatIp(b)) ?? formatIp(b);
}

/** A hostPort map element from the kernel's bytes (key and data parts padded to 4 bytes each). */
export function decodeHostportElement(map: MapName, el: NftElementInfo): HostportElement | undefined {
  const v6 = map.endsWith('6');
  const ipLen = v6 ? 16 : 4;
  const withIP = map.startsWith('hostip');
  const k = el.key;
  const d = el.data;
  if (!d || k.length !== (withIP ? ipLen : 0) + 8 || d.length !== ipLen + 4) return undefined;
  const o = withIP ? ipLen : 0;
  const protocol = PROTO[k[o]];
  if (!protocol) return undefined;
  const e: HostportElement = { map, protocol, hostPort: k.readUInt16BE(o + 4), podIP: decodeIp(d.subarray(0, ipLen)), containerPort: d.readUInt16BE(ipLen) };
  if (withIP) e.hostIP = decodeIp(k.subarray(0, ipLen));
  if (el.comment !== undefined) e.owner = el.comment;
  return e;
}

export function decodeHairpin(set: HairpinSet, el: NftElementInfo): HairpinElement | undefined {
  const ipLen = set.endsWith('6') ? 16 : 4;
  if (el.key.length !== 2 * ipLen) return undefined;
  const h: HairpinElement = { set, podIP: decodeIp(el.key.subarray(0, ipLen)) };
  if (el.comment !== undefined) h.owner = el.comment;
  return h;
}

function hostportKey(e: Pick<HostportElement, 'hostIP' | 'protocol' | 'hostPort'>): ElemPart[] {
  return [...(e.hostIP ? [ipPart(e.hostIP)] : []), { kind: 'proto', value: e.protocol }, { kind: 'port', value: e.hostPort }];
}

export interface NetlinkPodFirewallOptions {
  /** writes the shared structure (`nft -f`) in the current netns */
  nft: NftRunner;
}

export class NetlinkPodFirewall implements PodFirewall {
  readonly kind = 'netlink' as const;
  private readonly reader = new NftReader();
  private readonly writer = new NftElementWriter();
  private readonly removeOp: 'destroy' | 'delete' = kernelBefore(6, 3) ? 'delete' : 'destroy';
  /** networks this process has written into the masq nets sets since the structure was last written */
  private masqNets = new Set<string>();
  private readonly masq: SharedStructure;
  private readonly hostport: SharedStructure;
  private readonly pendingNets = new Set<string>();

  constructor(private readonly opts: NetlinkPodFirewallOptions) {
    this.masq = new SharedStructure(
      () => {
        const rules = this.reader.rules('inet', MASQ_TABLE, MASQ_CHAIN);
        if (rules.length !== MASQ_RULE_COUNT || rules.some((r) => r.comment !== MASQ_RULE_COMMENT)) return undefined;
        return rules.map((r) => r.handle).join(',');
      },
      async () => {
        const nets = [...new Set([...this.masqNets, ...this.pendingNets])];
        await this.opts.nft.run({ kind: 'current' }, renderMasqBase(nets).join('\n') + '\n');
        this.masqNets = new Set(nets);
        for (const n of nets) this.pendingNets.delete(n);
      },
    );
    this.hostport = new SharedStructure(
      () => {
        const rules = this.reader.rules('inet', HOSTPORT_TABLE);
        const count: Record<string, number> = {};
        for (const r of rules) count[r.chain] = (count[r.chain] ?? 0) + 1;
        const ok = Object.keys(count).length === Object.keys(HOSTPORT_RULE_COUNTS).length && Object.entries(HOSTPORT_RULE_COUNTS).every(([c, n]) => count[c] === n);
        return ok ? rules.map((r) => r.handle).join(',') : undefined;
      },
      () => this.opts.nft.run({ kind: 'current' }, renderHostportBase().join('\n') + '\n'),
      true,
    );
  }

  close(): void {
    this.reader.close();
    this.writer.close();
  }

  /** Applies a batch; when a set or table is missing, rewrites the structure and tries once more. */
  private async applyEnsured(structure: SharedStructure, ops: ElementOp[]): Promise<void> {
    try {
      this.writer.apply(ops);
    } catch (e) {
      if (errnoOf(e) !== ENOENT) throw e;
      await structure.ensure(true);
      this.writer.apply(ops);
    }
  }

  async masqAdd(entries: MasqEntry[], owner: string): Promise<void> {
    const nets = entries.map((e) => e.network);
    // a network not yet in the (interval, auto-merged) nets sets is written by nft with the structure
    for (let i = 0; nets.some((n) => !this.masqNets.has(n)); i++) {
      if (i >= 3) throw new Error(`could not write the networks ${nets.join(', ')} into table inet ${MASQ_TABLE}`);
      for (const n of nets) this.pendingNets.add(n);
      await this.masq.ensure(true);
    }
    await this.masq.ensure();
    const ops: ElementOp[] = [];
    for (const e of entries) {
      const base: Omit<ElementOp, 'op'> = { family: 'inet', table: MASQ_TABLE, set: setNames(isV6(e.ip)).pods, key: [ipPart(e.ip)] };
      // add (a no-op when present), delete, add with our comment: the owner is ours whatever was there
      ops.push({ ...base, op: 'add' }, { ...base, op: 'delete' }, { ...base, op: 'add', comment: owner });
    }
    await this.applyEnsured(this.masq, ops);
  }

  private masqElements(): MasqElement[] {
    const out: MasqElement[] = [];
    for (const set of ['masq_pods4', 'masq_pods6']) {
      for (const el of this.reader.elements('inet', MASQ_TABLE, set) ?? []) {
        const m: MasqElement = { ip: decodeIp(el.key), set };
        if (el.comment !== undefined) m.owner = el.comment;
        out.push(m);
      }
    }
    return out;
  }

  async masqList(): Promise<MasqElement[]> {
    return this.masqElements();
  }

  async masqRemove(owner: string, ips: string[]): Promise<number> {
    const mine = ips.length
      ? ips.flatMap((ip) => {
          const set = setNames(isV6(ip)).pods;
          const el = this.reader.element('inet', MASQ_TABLE, set, [ipPart(ip)]);
          return el && el.comment === owner ? [{ ip, set, owner }] : [];
        })
      : this.masqElements().filter((m) => m.owner === owner);
    return this.removeMasq(mine);
  }

  async masqRemoveOwners(owners: Set<string>): Promise<number> {
    return this.removeMasq(this.masqElements().filter((m) => m.owner !== undefined && owners.has(m.owner)));
  }

  private removeMasq(doomed: MasqElement[]): number {
    if (!doomed.length) return 0;
    this.removeTolerant(doomed.map((d) => ({ op: this.removeOp, family: 'inet', table: MASQ_TABLE, set: d.set, key: [ipPart(d.ip)] })));
    return doomed.length;
  }

  /** Removes elements; with plain delete (Linux < 6.3) an element already gone is skipped. */
  private removeTolerant(ops: ElementOp[]): void {
    try {
      this.writer.apply(ops);
    } catch (e) {
      if (errnoOf(e) !== ENOENT || this.removeOp === 'destroy') throw e;
      for (const op of ops) {
        try {
          this.writer.apply([op]);
        } catch (err) {
          if (errnoOf(err) !== ENOENT) throw err;
        }
      }
    }
  }

  /** Every element of these sets of the hostPort table that decodes as ours. */
  private decoded<S extends string, T>(sets: readonly S[], decode: (set: S, el: NftElementInfo) => T | undefined): T[] {
    return sets.flatMap((set) => (this.reader.elements('inet', HOSTPORT_TABLE, set) ?? []).flatMap((el) => decode(set, el) ?? []));
  }

  private mapElements(maps: readonly MapName[]): HostportElement[] {
    return this.decoded(maps, decodeHostportElement);
  }

  private hairpins(): HairpinElement[] {
    return this.decoded(HAIRPINS, decodeHairpin);
  }

  async hostportList(): Promise<HostportTable> {
    const rules: Record<string, number> = {};
    for (const r of this.reader.rules('inet', HOSTPORT_TABLE)) rules[r.chain] = (rules[r.chain] ?? 0) + 1;
    return { elements: this.mapElements(MAPS), hairpin: this.hairpins(), rules };
  }

  async hostportAdd(plan: HostportPlan, onApplied: () => void): Promise<void> {
    if (!plan.elements.length) return;
    await this.hostport.ensure();
    const ops: ElementOp[] = [];
    // as the CLI's transaction: add without owner (EEXIST when another target holds the key),
    // delete, add with the owner; the whole batch or nothing
    for (const e of plan.elements) {
      const base: Omit<ElementOp, 'op'> = { family: 'inet', table: HOSTPORT_TABLE, set: e.map, key: hostportKey(e) };
      const data: ElemData = { kind: 'value', parts: [ipPart(e.podIP), { kind: 'port', value: e.containerPort }] };
      ops.push({ ...base, op: 'add', data }, { ...base, op: 'delete' }, { ...base, op: 'add', data, comment: plan.owner });
    }
    for (const h of plan.hairpin) {
      const base: Omit<ElementOp, 'op'> = { family: 'inet', table: HOSTPORT_TABLE, set: h.set, key: [ipPart(h.podIP), ipPart(h.podIP)] };
      ops.push({ ...base, op: 'add' }, { ...base, op: 'delete' }, { ...base, op: 'add', comment: plan.owner });
    }
    for (let attempt = 0; ; attempt++) {
      try {
        await this.applyEnsured(this.hostport, ops);
        break;
      } catch (e) {
        if (errnoOf(e) !== EEXIST) throw e;
        const present = this.mapElements([...new Set(plan.elements.map((x) => x.map))]);
        const held = findConflicts(plan.elements, present, plan.owner);
        if (held.length) throw conflictError(held[0]);
        if (attempt >= 1) throw e;
        // nobody else holds it: this attachment's own key with another target (a repeated ADD
        // with changed mappings): drop ours and write again
        const mine = ownedBy({ elements: present, hairpin: [], rules: {} }, (o) => o === plan.owner);
        this.removeHostports(mine.elements, []);
      }
    }
    onApplied();
    // a wildcard and a hostIP mapping of one family live in different maps, so the kernel cannot
    // refuse their overlap: read the other map back after the commit. Of two racing ADDs at least
    // one sees the other, so they never both succeed.
    const cross = new Set<MapName>();
    for (const e of plan.elements) cross.add(`${e.hostIP ? 'hostports' : 'hostipports'}${e.map.endsWith('6') ? 6 : 4}` as MapName);
    const conflicts = findConflicts(plan.elements, this.mapElements([...cross]), plan.owner);
    if (conflicts.length) throw conflictError(conflicts[0]);
  }

  private removeHostports(elements: HostportElement[], hairpin: HairpinElement[]): void {
    const ops: ElementOp[] = [
      ...elements.map((e): ElementOp => ({ op: this.removeOp, family: 'inet', table: HOSTPORT_TABLE, set: e.map, key: hostportKey(e) })),
      ...hairpin.map((h): ElementOp => ({ op: this.removeOp, family: 'inet', table: HOSTPORT_TABLE, set: h.set, key: [ipPart(h.podIP), ipPart(h.podIP)] })),
    ];
    if (ops.length) this.removeTolerant(ops);
  }

  async hostportRemove(owners: (owner: string) => boolean, ips: string[] = []): Promise<RemovedHostports> {
    // every pod with a hostPort has a hairpin element per address, written in the same
    // transaction as its map elements: when none of its addresses has one of ours, it has none
    if (ips.length) {
      const any = ips.some((ip) => {
        const el = this.reader.element('inet', HOSTPORT_TABLE, isV6(ip) ? 'hairpin6' : 'hairpin4', [ipPart(ip), ipPart(ip)]);
        return el?.comment !== undefined && owners(el.comment);
      });
      if (!any) return { elements: [], hairpin: [] };
    }
    const mine = ownedBy({ elements: this.mapElements(MAPS), hairpin: this.hairpins(), rules: {} }, owners);
    this.removeHostports(mine.elements, mine.hairpin);
    return mine;
  }
}
