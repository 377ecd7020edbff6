// The shared reconciler: one pass reads what podnet owns in the kernel, asks the backend for a plan
// against the full desired state, and applies it in one apply() call.
//
// Why state and not events (flannel#2554, kubernetes' needFullSync): every pass is a full diff, so a
// missed watch event, a crash mid-apply or a peer deleted while the agent was down is corrected by the
// next pass. Call it on every store change and on a timer; a pass with nothing to do reads the kernel
// (one route dump, plus one neighbour and one FDB dump of the device, or one address read) and applies
// nothing. Passes must not overlap: reconcile() serialises its own calls.
import type { FdbEntry, KernelAdapter, KernelOp, NetnsRef, Route } from '../../kernel/types.js';
import { describeOp } from '../../kernel/render.js';
import type { NodeLease } from '../lease.js';
import { canonicalIP } from '../../util/ip.js';
import { canonCidr } from './common.js';
import type { Logger } from '../../util/log.js';
import type { ActualState, Backend, DatapathTable, PeerError } from './types.js';

export interface ReconcileReport {
  /** ops that create or replace (routes, neighbours, FDB entries), described one per line */
  added: string[];
  /** ops that delete */
  removed: string[];
  /** per-peer refusals (not on the same L2, missing VtepMAC, conflicting foreign route…); those peers were skipped */
  errors: PeerError[];
  /** the exact plan applied, in order */
  ops: KernelOp[];
  /** backends with a userspace datapath (tun): the peer table of the plan applied, for Backend.syncDatapath */
  datapath?: DatapathTable;
  /** full passes: ops the state known from the last pass did not need (changed behind podnet's back) */
  drift?: number;
}

export interface ReconcilerOptions {
  kernel: KernelAdapter;
  ns: NetnsRef;
  backend: Backend;
  log?: Logger;
}

const isRemoval = (o: KernelOp): boolean => o.op === 'route-del' || o.op === 'neigh-del' || o.op === 'fdb-del' || o.op === 'link-del' || o.op === 'addr-del';

const canonDst = (d: string): string => canonCidr(d) ?? d;
const metricOf = (family: 4 | 6, m?: number): number => m ?? (family === 6 ? 1024 : 0);

/**
 * What the kernel holds once `ops` have succeeded, in the shape the next plan reads. Pure.
 * It lets a pass triggered by one lease change skip re-reading thousands of routes, neighbours
 * and FDB entries (a full read is ~100 ms at 1,000 peers); the periodic full pass reads the
 * kernel again and repairs anything changed behind podnet's back.
 */
export function applyToActual(a: ActualState, ops: KernelOp[]): ActualState {
  // indexed once, so a plan of thousands of ops costs O(n), not O(n²)
  const routes = new Map<string, Route[]>();
  for (const r of a.routes) {
    const k = canonDst(r.dst);
    routes.set(k, [...(routes.get(k) ?? []), r]);
  }
  const neighKey = (dev: string | undefined, dst: string) => `${dev ?? ''}|${canonicalIP(dst) ?? dst}`;
  const neighbours = new Map(a.neighbours.map((n) => [neighKey(n.dev, n.dst), n] as const));
  const fdbKey = (dev: string | undefined, mac: string) => `${dev ?? ''}|${mac.toLowerCase()}`;
  const fdb = new Map<string, FdbEntry[]>();
  for (const e of a.fdb) fdb.set(fdbKey(e.dev, e.mac), [...(fdb.get(fdbKey(e.dev, e.mac)) ?? []), e]);
  for (const o of ops) {
    switch (o.op) {
      case 'route-add': {
        const r = o.route;
        const family = r.family ?? (r.dst.includes(':') ? 6 : 4);
        const dst = canonDst(r.dst);
        // `route replace` takes the place of the route with the same prefix, table and metric
        const kept = (routes.get(dst) ?? []).filter((x) => !((x.table ?? 254) === (r.table ?? 254) && metricOf(x.family, x.metric) === metricOf(family, r.metric)));
        routes.set(dst, [...kept, { family, dst, gateway: r.gateway, dev: r.dev, protocol: r.proto, onlink: r.onlink, metric: r.metric, table: r.table ?? 254, mtu: r.mtu, type: 'unicast' }]);
        break;
      }
      case 'route-del': {
        const r = o.route;
        const dst = canonDst(r.dst);
        const left = (routes.get(dst) ?? []).filter((x) => !((!r.proto || x.protocol === r.proto) && (r.metric === undefined || metricOf(x.family, x.metric) === r.metric) && (!r.dev || x.dev === r.dev)));
        routes.set(dst, left);
        break;
      }
      case 'neigh-replace':
        neighbours.set(neighKey(o.dev, o.dst), { dst: o.dst, dev: o.dev, lladdr: o.lladdr, state: ['PERMANENT'] });
        break;
      case 'neigh-del':
        neighbours.delete(neighKey(o.dev, o.dst));
        break;
      case 'fdb-replace':
      case 'fdb-append': {
        const k = fdbKey(o.dev, o.mac);
        const kept = o.op === 'fdb-replace' ? [] : (fdb.get(k) ?? []).filter((e) => e.dst !== o.dst);
        fdb.set(k, [...kept, { mac: o.mac, dev: o.dev, dst: o.dst, flags: ['self'], state: 'permanent' }]);
        break;
      }
      case 'fdb-del': {
        const k = fdbKey(o.dev, o.mac);
        fdb.set(k, (fdb.get(k) ?? []).filter((e) => o.dst && canonicalIP(e.dst ?? '') !== canonicalIP(o.dst)));
        break;
      }
      default:
        break;
    }
  }
  return { ...a, routes: [...routes.values()].flat(), neighbours: [...neighbours.values()], fdb: [...fdb.values()].flat() };
}

export class Reconciler {
  private chain: Promise<unknown> = Promise.resolve();
  /** the kernel state as of the end of the last successful pass; dropped on any failure */
  private known?: ActualState;
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
      backend.type === 'host-gw' || backend.type === 'bgp' ? kernel.addresses(ns, backend.iface) : Promise.resolve([]),
    ]);
    return { routes, neighbours, fdb, ifaceAddresses };
  }

  /**
   * One pass. `full` (the default) reads the kernel first; otherwise the state known from the
   * last pass is used when there is one. Throws only when reading or applying fails (the next
   * pass then reads the kernel again).
   */
  reconcile(own: NodeLease, peers: NodeLease[], opts: { full?: boolean } = {}): Promise<ReconcileReport> {
    const full = opts.full ?? true;
    const run = this.chain.then(
      () => this.pass(own, peers, full),
      () => this.pass(own, peers, full),
    );
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async pass(own: NodeLease, peers: NodeLease[], full: boolean): Promise<ReconcileReport> {
    const { kernel, ns, backend, log } = this.opts;
    const t0 = performance.now();
    const actual = !full && this.known ? this.known : await this.observe();
    const t1 = performance.now();
    const before = this.known;
    this.known = undefined;
    const plan = backend.planPeers(own, peers, actual);
    // drift: what a full read found to do that the known state did not call for
    let drift: number | undefined;
    if (full && before) {
      const expected = new Set(backend.planPeers(own, peers, before).ops.map(describeOp));
      drift = plan.ops.filter((o) => !expected.has(describeOp(o))).length;
    }
    for (const e of plan.errors) log?.warn('peer skipped', { backend: backend.type, peer: e.peer, node: e.nodeName, error: e.message });
    const t2 = performance.now();
    if (plan.ops.length) await kernel.apply(ns, plan.ops);
    if (plan.ops.length) {
      const ms = (x: number) => Math.round(x * 10) / 10;
      log?.info('reconciled', { backend: backend.type, ops: plan.ops.length <= 20 ? plan.ops.map(describeOp) : `${plan.ops.length} ops`, full, readMs: ms(t1 - t0), planMs: ms(t2 - t1), applyMs: ms(performance.now() - t2) });
    }
    this.known = applyToActual(actual, plan.ops);
    return {
      added: plan.ops.filter((o) => !isRemoval(o)).map(describeOp),
      removed: plan.ops.filter(isRemoval).map(describeOp),
      errors: plan.errors,
      ops: plan.ops,
      ...(plan.datapath ? { datapath: plan.datapath } : {}),
      ...(drift !== undefined ? { drift } : {}),
    };
  }

  /**
   * A dry run (readiness): what a pass would change now, read from the kernel, applying nothing.
   * Serialised with the passes, so it never sees one half-applied.
   */
  pending(own: NodeLease, peers: NodeLease[]): Promise<KernelOp[]> {
    const run = this.chain.then(
      async () => this.opts.backend.planPeers(own, peers, await this.observe()).ops,
      async () => this.opts.backend.planPeers(own, peers, await this.observe()).ops,
    );
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** What podnet believes the kernel holds after the last successful pass (routes, neighbours, FDB it owns). */
  knownState(): ActualState | undefined {
    return this.known;
  }
}

/** Convenience for a one-off pass (tests, `podnet` CLI). */
export function reconcile(opts: ReconcilerOptions, own: NodeLease, peers: NodeLease[]): Promise<ReconcileReport> {
  return new Reconciler(opts).reconcile(own, peers);
}
