// ipMasq through podnet's own nftables table (never another table). The rules are shared and
// written whole in one transaction (flush chain + add), so concurrent ADDs converge on exactly
// one copy; each pod is only an element (with its owner in the comment), removed on DEL.
import type { NetnsRef, NftRunner } from '../kernel/types.js';
import { isV6 } from './modes/common.js';

export const TABLE = 'podnet';
const CHAIN = 'cni-masquerade';

export interface MasqEntry {
  /** pod IP (no prefix) */
  ip: string;
  /** the pod network (CIDR, network address) traffic to which is not masqueraded */
  network: string;
}

export function setNames(v6: boolean): { pods: string; nets: string } {
  return v6 ? { pods: 'masq_pods6', nets: 'masq_nets6' } : { pods: 'masq_pods4', nets: 'masq_nets4' };
}

function quote(s: string): string {
  if (!/^[A-Za-z0-9_.:\-/]+$/.test(s)) throw new Error(`refusing to put ${JSON.stringify(s)} into an nft comment`);
  return `"${s}"`;
}

export const MASQ_CHAIN = CHAIN;
/** The comment on each shared rule: a check counts them (the CNI fast path, CHECK). */
export const MASQ_RULE_COMMENT = 'podnet ipMasq';
export const MASQ_RULE_COUNT = 2;

/** The shared table, sets and rules (rules flushed and rewritten whole) and the networks left alone. Pure. */
export function renderMasqBase(networks: string[]): string[] {
  const lines = [
    `table inet ${TABLE} {`,
    `  set masq_pods4 { type ipv4_addr; }`,
    `  set masq_nets4 { type ipv4_addr; flags interval; auto-merge; }`,
    `  set masq_pods6 { type ipv6_addr; }`,
    `  set masq_nets6 { type ipv6_addr; flags interval; auto-merge; }`,
    `  chain ${CHAIN} { type nat hook postrouting priority srcnat; policy accept; }`,
    `}`,
    `flush chain inet ${TABLE} ${CHAIN}`,
    `add rule inet ${TABLE} ${CHAIN} ip saddr @masq_pods4 ip daddr != @masq_nets4 ip daddr != 224.0.0.0/4 masquerade comment "${MASQ_RULE_COMMENT}"`,
    `add rule inet ${TABLE} ${CHAIN} ip6 saddr @masq_pods6 ip6 daddr != @masq_nets6 ip6 daddr != ff00::/8 masquerade comment "${MASQ_RULE_COMMENT}"`,
  ];
  for (const n of [...new Set(networks)]) lines.push(`add element inet ${TABLE} ${setNames(isV6(n)).nets} { ${n} }`);
  return lines;
}

/** The transaction that ensures the shared table, sets and rules and adds these pods. Pure. */
export function renderMasqAdd(entries: MasqEntry[], owner: string): string {
  const lines = renderMasqBase(entries.map((e) => e.network));
  for (const e of entries) lines.push(`add element inet ${TABLE} ${setNames(isV6(e.ip)).pods} { ${e.ip} comment ${quote(owner)} }`);
  return lines.join('\n') + '\n';
}

interface NftElem {
  elem?: { val: unknown; comment?: string };
}

/** Elements of a pods set, with their comment. */
function elementsOf(json: unknown): { ip: string; comment?: string }[] {
  const out: { ip: string; comment?: string }[] = [];
  const items = (json as { nftables?: Record<string, unknown>[] })?.nftables ?? [];
  for (const it of items) {
    const set = it.set as { elem?: (string | NftElem)[] } | undefined;
    for (const e of set?.elem ?? []) {
      if (typeof e === 'string') out.push({ ip: e });
      else if (e && typeof e === 'object' && e.elem && typeof e.elem.val === 'string') out.push({ ip: e.elem.val, comment: e.elem.comment });
    }
  }
  return out;
}

/** Lists pod elements across both families: [ip, owner comment]. */
export async function listMasqPods(nft: NftRunner, ns: NetnsRef): Promise<{ ip: string; owner?: string; set: string }[]> {
  const out: { ip: string; owner?: string; set: string }[] = [];
  for (const set of ['masq_pods4', 'masq_pods6']) {
    const json = await nft.listJson(ns, ['set', 'inet', TABLE, set]);
    if (json === undefined) continue;
    for (const e of elementsOf(json)) out.push({ ip: e.ip, owner: e.comment, set });
  }
  return out;
}

export async function masqAdd(nft: NftRunner, ns: NetnsRef, entries: MasqEntry[], owner: string): Promise<void> {
  await nft.run(ns, renderMasqAdd(entries, owner));
}

/** Removes the elements owned by `owners`; nft has no "delete if present" before 1.0.8, so read first. */
export async function masqRemoveOwners(nft: NftRunner, ns: NetnsRef, owners: Set<string>): Promise<number> {
  const present = await listMasqPods(nft, ns);
  const doomed = present.filter((p) => p.owner && owners.has(p.owner));
  if (!doomed.length) return 0;
  const script = doomed.map((d) => `delete element inet ${TABLE} ${d.set} { ${d.ip} }`).join('\n') + '\n';
  await nft.run(ns, script);
  return doomed.length;
}
