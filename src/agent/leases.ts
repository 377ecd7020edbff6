// Subnet leases on top of the store: choose a free subnet (or take back this node's own),
// hold it with a TTL lease that is kept alive, and watch the peers' leases.
// Conflicts are "try again": two agents racing for one subnet resolve through create-if-absent.
import { randomInt } from 'node:crypto';
import { formatCidr } from '../util/ip.js';
import type { Logger } from '../util/log.js';
import type { KeyValue, Store, Watch } from '../store/types.js';
import { decodeLease, encodeLease, leaseKey, SUBNETS_PREFIX, type NodeLease } from './lease.js';
import { subnetAt, type NetConf } from './netconf.js';

export interface HeldLease {
  lease: NodeLease;
  key: string;
  leaseId: number;
  modRevision: number;
}

export class SubnetsExhaustedError extends Error {
  constructor(conf: NetConf, leased: number) {
    super(`cluster network ${formatCidr(conf.network)} has run out of /${conf.subnetLen} subnets (${leased} leased, ${conf.subnetMax - conf.subnetMin + 1} usable)`);
    this.name = 'SubnetsExhaustedError';
  }
}

/** Pure: which subnet this node should hold, given every lease in the store. */
export function chooseSubnet(conf: NetConf, leases: NodeLease[], me: { publicIP: string; remembered?: string }, start = randomInt(0, 1 << 30)): { subnet: string; ipv6Subnet?: string; reuse?: NodeLease } {
  const mine = leases.find((l) => l.publicIP === me.publicIP);
  if (mine) return { subnet: mine.subnet, ipv6Subnet: mine.ipv6Subnet, reuse: mine };
  const taken = new Set(leases.map((l) => l.subnet));
  const v6For = (i: number) => (conf.ipv6Network ? formatCidr(subnetAt(conf.ipv6Network, conf.ipv6SubnetLen, i)) : undefined);
  const indexOf = (s: string) => {
    for (let i = conf.subnetMin; i <= conf.subnetMax; i++) if (formatCidr(subnetAt(conf.network, conf.subnetLen, i)) === s) return i;
    return -1;
  };
  if (me.remembered && !taken.has(me.remembered)) {
    const i = indexOf(me.remembered);
    if (i >= 0) return { subnet: me.remembered, ipv6Subnet: v6For(i) };
  }
  const n = conf.subnetMax - conf.subnetMin + 1;
  // a random starting point keeps agents starting together from colliding on one subnet
  for (let k = 0; k < n; k++) {
    const i = conf.subnetMin + ((start + k) % n);
    const s = formatCidr(subnetAt(conf.network, conf.subnetLen, i));
    if (!taken.has(s)) return { subnet: s, ipv6Subnet: v6For(i) };
  }
  throw new SubnetsExhaustedError(conf, taken.size);
}

export function leasesOf(kvs: KeyValue[], prefix = SUBNETS_PREFIX): { lease: NodeLease; kv: KeyValue }[] {
  const out: { lease: NodeLease; kv: KeyValue }[] = [];
  for (const kv of kvs) {
    const lease = decodeLease(kv.key, kv.value, prefix);
    if (lease) out.push({ lease, kv });
  }
  return out;
}

export interface AcquireOptions {
  store: Store;
  conf: NetConf;
  prefix?: string;
  ttlSeconds: number;
  publicIP: string;
  publicIPv6?: string;
  nodeName?: string;
  backendData: NodeLease['backendData'];
  remembered?: string;
  log: Logger;
}

/** Takes (or takes back) this node's subnet under a fresh TTL lease. */
export async function acquireLease(o: AcquireOptions): Promise<HeldLease> {
  const prefix = o.prefix ?? SUBNETS_PREFIX;
  const leaseId = await o.store.grantLease(o.ttlSeconds);
  for (let attempt = 0; attempt < 20; attempt++) {
    const { kvs } = await o.store.list(prefix);
    const all = leasesOf(kvs, prefix);
    const pick = chooseSubnet(o.conf, all.map((x) => x.lease), { publicIP: o.publicIP, remembered: o.remembered });
    const lease: NodeLease = {
      subnet: pick.subnet,
      publicIP: o.publicIP,
      backendType: o.conf.backend.type,
      // taking back our own lease keeps its backend data (VTEP MAC) until the device is checked:
      // peers must not see a lease without it, or they would drop our FDB/neighbour entries
      backendData: pick.reuse && Object.keys(o.backendData).length === 0 ? pick.reuse.backendData : o.backendData,
      ...(pick.ipv6Subnet ? { ipv6Subnet: pick.ipv6Subnet } : {}),
      ...(o.publicIPv6 ? { publicIPv6: o.publicIPv6 } : {}),
      ...(o.nodeName ? { nodeName: o.nodeName } : {}),
    };
    const key = leaseKey(pick.subnet, prefix);
    const existing = all.find((x) => x.kv.key === key)?.kv;
    const ok = existing ? await o.store.compareAndSet(key, encodeLease(lease), existing.modRevision, leaseId) : await o.store.create(key, encodeLease(lease), leaseId);
    if (ok) {
      const kv = await o.store.get(key);
      o.log.info(pick.reuse ? 'took back this node\'s subnet lease' : 'leased a subnet', { subnet: lease.subnet, ipv6Subnet: lease.ipv6Subnet, key });
      return { lease, key, leaseId, modRevision: kv?.modRevision ?? 0 };
    }
    o.log.debug('lost a race for a subnet, choosing again', { subnet: pick.subnet });
  }
  await o.store.revokeLease(leaseId).catch(() => {});
  throw new Error('could not lease a subnet after 20 attempts (too much contention in the store)');
}

/** Rewrites this node's lease value (e.g. a new VTEP MAC) under the lease it already holds. */
export async function updateLease(store: Store, held: HeldLease, lease: NodeLease): Promise<HeldLease> {
  const ok = await store.compareAndSet(held.key, encodeLease(lease), held.modRevision, held.leaseId);
  if (!ok) throw new Error(`lease ${held.key} changed under us; it will be taken again`);
  const kv = await store.get(held.key);
  return { ...held, lease, modRevision: kv?.modRevision ?? held.modRevision };
}

/**
 * Keeps a live view of every lease under the prefix: list, then watch from the listing's
 * revision; on a reset (compaction, store replaced) list again. Calls onChange after each change.
 *
 * relist() (the agent calls it on every periodic resync) lists again while the watch runs, so a
 * watch that is stuck reconnecting after a store outage (gRPC and circuit-breaker backoffs)
 * delays a new peer by at most one resync period. It never undoes what the watch delivered
 * meanwhile: each key remembers the revision it was last seen at, a listed value replaces only an
 * older one, and a key missing from the listing is dropped only when it was last seen at or
 * before the listing's revision (a newer put arrived after the snapshot).
 */
export class LeaseWatcher {
  readonly leases = new Map<string, NodeLease>();
  /** per key: the revision of the value in `leases`, or of its deletion */
  private seen = new Map<string, number>();
  private watch?: Watch;
  private closed = false;
  private relisting = false;

  constructor(
    private readonly store: Store,
    private readonly onChange: () => void,
    private readonly log: Logger,
    private readonly prefix = SUBNETS_PREFIX,
    /** metrics: watch resets and watch errors */
    private readonly hooks: { onReset?: () => void; onError?: () => void } = {},
  ) {}

  async start(): Promise<void> {
    const { kvs, revision } = await this.store.list(this.prefix);
    this.leases.clear();
    this.seen.clear();
    for (const { lease, kv } of leasesOf(kvs, this.prefix)) {
      this.leases.set(kv.key, lease);
      this.seen.set(kv.key, kv.modRevision);
    }
    this.onChange();
    if (this.closed) return;
    this.watch?.close();
    this.watch = this.store.watch(this.prefix, revision, {
      onEvent: (ev) => {
        if (ev.type === 'put') {
          const lease = decodeLease(ev.kv.key, ev.kv.value, this.prefix);
          if (lease) this.leases.set(ev.kv.key, lease);
          else this.leases.delete(ev.kv.key);
          this.seen.set(ev.kv.key, ev.revision);
        } else {
          this.leases.delete(ev.key);
          this.seen.set(ev.key, ev.revision);
        }
        this.onChange();
      },
      onReset: (reason) => {
        this.hooks.onReset?.();
        this.log.warn('lease watch reset, listing again', { reason });
        void this.start().catch((e) => this.log.error('re-listing leases failed', { error: (e as Error).message }));
      },
      onError: (err) => {
        this.hooks.onError?.();
        this.log.warn('lease watch trouble (retrying)', { error: err.message });
      },
    });
  }

  /** Lists again and merges what the watch has not delivered (see above); true when something changed. */
  async relist(): Promise<boolean> {
    if (this.closed || this.relisting) return false;
    this.relisting = true;
    try {
      const { kvs, revision } = await this.store.list(this.prefix);
      if (this.closed) return false;
      let changed = false;
      const listed = new Set<string>();
      for (const { lease, kv } of leasesOf(kvs, this.prefix)) {
        listed.add(kv.key);
        if ((this.seen.get(kv.key) ?? -1) >= kv.modRevision) continue;
        this.leases.set(kv.key, lease);
        this.seen.set(kv.key, kv.modRevision);
        changed = true;
      }
      for (const key of [...this.leases.keys()]) {
        if (listed.has(key) || (this.seen.get(key) ?? 0) > revision) continue;
        this.leases.delete(key);
        this.seen.set(key, revision);
        changed = true;
      }
      if (changed) {
        this.log.info('leases re-listed: the watch had missed changes', { leases: this.leases.size, revision });
        this.onChange();
      }
      return changed;
    } finally {
      this.relisting = false;
    }
  }

  close(): void {
    this.closed = true;
    this.watch?.close();
  }
}
