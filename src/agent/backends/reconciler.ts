// The shared reconciler: one pass reads what podnet owns in the kernel, asks the backend for a plan
// against the full desired state, and applies it in one apply() call.
//
// Why state and not events (flannel#2554, kubernetes' needFullSync): every pass is a full diff, so a
// missed watch event, a crash mid-apply or a peer deleted while the agent was down is corrected by the
// next pass. Call it on every store change and on a timer; a pass with nothing to do reads the kernel
// (one route dump, plus one neighbour and one FDB dump of the device, or one address read) and applies
// nothing. Passes must not overlap: reconcile() serialises its own calls.
import type { KernelAdapter, KernelOp, NetnsRef } from '../../kernel/types.js';
import { describeOp } from '../../kernel/render.js';
import type { NodeLease } from '../lease.js';
import type { Logger } from '../../util/log.js';
import type { ActualState, Backend, PeerError } from './types.js';

export interface ReconcileReport {
  /** ops that create or replace (routes, neighbours, FDB entries), described one per line */
  added: string[];
  /** ops that delete */
  removed: string[];
  /** per-peer refusals (not on the same L2, missing VtepMAC, conflicting foreign route…); those peers were skipped */
  errors: PeerError[];
  /** the exact plan applied, in order */
  ops: KernelOp[];
}

export interface ReconcilerOptions {
  kernel: KernelAdapter;
  ns: NetnsRef;
  backend: Backend;
  log?: Logger;
}

const isRemoval = (o: KernelOp): boolean => o.op === 'route-del' || o.op === 'neigh-del' || o.op === 'fdb-del' || o.op === 'link-del' || o.op === 'addr-del';

export class Reconciler {
  private chain: Promise<unknown> = Promise.resolve();
  constructor(private readonly opts: ReconcilerOptions) {}

  /** Reads the state podnet owns, once. */
  async observe(): Promise<ActualState> {
    const { kernel, ns, backend } = this.opts;
    const dev = backend.device;
    // main table only: podnet installs nothing elsewhere; one dump covers both families
    const [routes, neighbours, fdb, ifaceAddresses] = await Promise.all([
      kernel.routes(ns, { table: 254 }),
      dev ? kernel.neighbours(ns, dev) : Promise.resolve([]),
      dev ? kernel.fdb(ns, dev) : Promise.resolve([]),
      backend.type === 'host-gw' ? kernel.addresses(ns, backend.iface) : Promise.resolve([]),
    ]);
    return { routes, neighbours, fdb, ifaceAddresses };
  }

  /** One full pass. Throws only when reading or applying fails (the next pass is full again). */
  reconcile(own: NodeLease, peers: NodeLease[]): Promise<ReconcileReport> {
    const run = this.chain.then(
      () => this.pass(own, peers),
      () => this.pass(own, peers),
    );
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async pass(own: NodeLease, peers: NodeLease[]): Promise<ReconcileReport> {
    const { kernel, ns, backend, log } = this.opts;
    const actual = await this.observe();
    const plan = backend.planPeers(own, peers, actual);
    for (const e of plan.errors) log?.warn('peer skipped', { backend: backend.type, peer: e.peer, node: e.nodeName, error: e.message });
    if (plan.ops.length) {
      log?.info('reconcile', { backend: backend.type, ops: plan.ops.map(describeOp) });
      await kernel.apply(ns, plan.ops);
    }
    return {
      added: plan.ops.filter((o) => !isRemoval(o)).map(describeOp),
      removed: plan.ops.filter(isRemoval).map(describeOp),
      errors: plan.errors,
      ops: plan.ops,
    };
  }
}

/** Convenience for a one-off pass (tests, `podnet` CLI). */
export function reconcile(opts: ReconcilerOptions, own: NodeLease, peers: NodeLease[]): Promise<ReconcileReport> {
  return new Reconciler(opts).reconcile(own, peers);
}
