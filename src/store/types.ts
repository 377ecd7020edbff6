// The cluster store seam: a tiny key-value registry with revisions, TTL leases,
// compare-and-set and watch. Lease allocation (src/agent/leases.ts) is logic on top of it,
// so the file store and etcd pass one contract suite (test/integration/store-contract.test.ts).

export interface KeyValue {
  key: string;
  value: string;
  /** revision of the last change to this key (etcd: mod_revision) */
  modRevision: number;
  /** lease the key is attached to; 0 when it has no TTL */
  lease: number;
}

export type WatchEvent =
  | { type: 'put'; kv: KeyValue; revision: number }
  | { type: 'delete'; key: string; revision: number };

export interface Watch {
  close(): void;
}

export interface WatchHandlers {
  onEvent(ev: WatchEvent): void;
  /** the watch cannot resume from its revision (compacted, store replaced): re-list and watch again */
  onReset?(reason: string): void;
  /** connection trouble; the store keeps retrying with backoff */
  onError?(err: Error): void;
}

export interface Store {
  /** a short description for logs: "file:/var/lib/podnet/store", "etcd:http://10.0.0.1:2379" */
  readonly describe: string;
  get(key: string): Promise<KeyValue | undefined>;
  /** everything under prefix, and the store revision the listing is consistent with */
  list(prefix: string): Promise<{ kvs: KeyValue[]; revision: number }>;
  /** creates the key only if absent; false when it exists (someone else won) */
  create(key: string, value: string, lease?: number): Promise<boolean>;
  /** writes only if the key's modRevision is still `expected` (0: must be absent); false on conflict */
  compareAndSet(key: string, value: string, expected: number, lease?: number): Promise<boolean>;
  /** deletes (only if modRevision is `expected`, when given); false when absent or changed */
  delete(key: string, expected?: number): Promise<boolean>;
  /** grants a lease that expires ttlSeconds after its last keepAlive; returns its id */
  grantLease(ttlSeconds: number): Promise<number>;
  /** renews a lease; false when it has already expired (its keys are gone) */
  keepAlive(lease: number): Promise<boolean>;
  revokeLease(lease: number): Promise<void>;
  /** events under prefix after `fromRevision` (exclusive), in order, resumed across reconnects */
  watch(prefix: string, fromRevision: number, handlers: WatchHandlers): Watch;
  close(): Promise<void>;
}
