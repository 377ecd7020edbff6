// The per-pod netfilter seam of the CNI plugin: ipMasq set elements (table `inet podnet`) and
// hostPort map elements (table `inet podnet-hostport`). Two implementations: `cli` runs `nft`
// (any node, any netns), `netlink` talks nfnetlink in-process (no process spawned per pod; the
// shared structure is written by `nft -f` once and checked cheaply afterwards).
import type { MasqEntry } from '../masq.js';
import type { HairpinElement, HostportElement, HostportPlan, HostportTable } from '../hostport.js';

export interface MasqElement {
  ip: string;
  owner?: string;
  set: string;
}

export interface RemovedHostports {
  elements: HostportElement[];
  hairpin: HairpinElement[];
}

export interface PodFirewall {
  readonly kind: 'cli' | 'netlink';
  /** Ensures the shared rules and the networks left alone, then adds the pods' elements with their owner. */
  masqAdd(entries: MasqEntry[], owner: string): Promise<void>;
  /**
   * Removes the owner's elements. `ips` are the attachment's addresses when known (prevResult):
   * then only those keys are looked at; otherwise every element is read to find the owner's.
   */
  masqRemove(owner: string, ips: string[]): Promise<number>;
  /** Removes the elements of every owner in the set (GC). */
  masqRemoveOwners(owners: Set<string>): Promise<number>;
  masqList(): Promise<MasqElement[]>;
  /**
   * Writes the plan's elements; a port held by another attachment is CniError 107 naming the
   * holder. `onApplied` runs as soon as the elements exist (the caller registers their removal).
   */
  hostportAdd(plan: HostportPlan, onApplied: () => void): Promise<void>;
  /** Removes the elements of owners matching; `ips` as for masqRemove (they narrow the search). */
  hostportRemove(owners: (owner: string) => boolean, ips?: string[]): Promise<RemovedHostports>;
  hostportList(): Promise<HostportTable>;
}
