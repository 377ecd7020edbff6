// The sync loop of podnet's service proxy. Events only record desired state and schedule work;
// a sync applies the changes recorded in the ServiceIndex (only changed services are re-validated), then asks the
// engine for a partial sync against what was last applied, or a full one at start, periodically,
// and after any failure (kube-proxy's needFullSync). A failed transaction leaves the previous rules
// in force (both engines apply atomically); the error is logged, counted and retried as a full sync.
import { type Logger, nullLogger } from '../util/log.js';
import { type ConntrackCleaner, ConntrackTool, staleFlows } from './conntrack.js';
import type { ProgrammedEndpoints, ProxyEngine } from './engine.js';
import { endpointsByFrontend } from './frontends.js';
import { type ProxyModel, type ProxyNode, type RawEndpointSlice, type RawService, type ServiceState, problemText } from './model.js';
import { ServiceIndex } from './service-index.js';

export interface ProxierOptions {
  engine: ProxyEngine;
  node: ProxyNode;
  log?: Logger;
  /** flush stale UDP/SCTP flows after changes (default: conntrack in the engine's namespace) */
  conntrack?: ConntrackCleaner | false;
  /** netns path for the default conntrack cleaner */
  netns?: string;
  /** periodic full resync that repairs drift (default 60 s; 0 disables) */
  resyncIntervalMs?: number;
  /** first retry delay after a failed full sync, doubled up to a minute */
  retryDelayMs?: number;
  /** after each successful sync (metrics); pendingMs: from the first change it carried being recorded */
  onSync?: (r: SyncReport & { pendingMs?: number }) => void;
  /** after each failed sync attempt (metrics) */
  onSyncError?: (kind: 'full' | 'partial', error: Error) => void;
}

export interface SyncReport {
  kind: 'full' | 'partial' | 'none';
  changes: number;
  ms: number;
  services: number;
  ports: number;
  problems: number;
  staleFlowsDeleted: number;
}

export interface ProxierStatus {
  ready: boolean;
  lastSync?: SyncReport & { at: string };
  lastError?: { at: string; message: string };
  syncs: { full: number; partial: number; failed: number };
  problems: string[];
}

export class Proxier {
  private readonly engine: ProxyEngine;
  private readonly node: ProxyNode;
  private readonly log: Logger;
  private readonly conntrack: ConntrackCleaner | undefined;
  private readonly index = new ServiceIndex();
  private applied?: ProxyModel;
  private needFull = true;
  private dirty = true;
  private running?: Promise<SyncReport>;
  private timer?: NodeJS.Timeout;
  private resync?: NodeJS.Timeout;
  private retryDelay: number;
  private reported = new Set<string>();
  private stopped = false;
  /** when the oldest change not yet synced was recorded */
  private changedAt?: number;
  private readonly st: ProxierStatus = { ready: false, syncs: { full: 0, partial: 0, failed: 0 }, problems: [] };

  constructor(private readonly o: ProxierOptions) {
    this.engine = o.engine;
    this.node = o.node;
    this.log = o.log ?? nullLogger;
    this.conntrack = o.conntrack === false ? undefined : (o.conntrack ?? new ConntrackTool(o.netns ? { kind: 'path', path: o.netns } : { kind: 'current' }));
    this.retryDelay = o.retryDelayMs ?? 1000;
  }

  replaceAll(state: ServiceState): void {
    this.index.replaceAll(state);
    this.objectChanged();
  }
  putService(raw: RawService): void {
    this.index.putService(raw);
    this.objectChanged();
  }
  deleteService(namespace: string, name: string): void {
    if (this.index.deleteService(namespace, name)) this.objectChanged();
  }
  putSlice(raw: RawEndpointSlice): void {
    this.index.putSlice(raw);
    this.objectChanged();
  }
  deleteSlice(namespace: string, name: string): void {
    if (this.index.deleteSlice(namespace, name)) this.objectChanged();
  }

  /** A Service or EndpointSlice changed: the programming latency (onSync's pendingMs) runs from the first one not yet synced. */
  private objectChanged(): void {
    this.changedAt ??= performance.now();
    this.changed();
  }

  /** Asks for a full sync at the next opportunity (drift repair). */
  requestFullSync(): void {
    this.needFull = true;
    this.changed();
  }

  private changed(): void {
    this.dirty = true;
    if (this.timer || this.stopped || !this.resync) return;
    // coalesce a burst of events into one sync
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.sync().catch(() => undefined);
    }, 0);
  }

  /** Background mode: syncs on changes and resyncs periodically. */
  start(): void {
    const every = this.o.resyncIntervalMs ?? 60_000;
    this.resync = setInterval(() => this.requestFullSync(), every > 0 ? every : 2 ** 31 - 1);
    this.resync.unref?.();
    this.changed();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.resync) clearInterval(this.resync);
    // queued syncs see `stopped` and return; the one running finishes before the engine closes
    while (this.running) await this.running.catch(() => undefined);
    this.engine.close?.();
  }

  status(): ProxierStatus {
    return { ...this.st, syncs: { ...this.st.syncs }, problems: [...this.st.problems] };
  }

  /** The model of the desired state as of the last successful sync. */
  model(): ProxyModel | undefined {
    return this.applied;
  }

  /** Applies pending changes now; concurrent callers share one sync and a follow-up if more changed. */
  async sync(): Promise<SyncReport> {
    while (this.running) await this.running.catch(() => undefined);
    if (this.stopped) throw new Error('the proxier is stopped');
    if (!this.dirty && !this.needFull && this.applied) {
      return { kind: 'none', changes: 0, ms: 0, services: this.index.size, ports: this.applied.ports.length, problems: this.st.problems.length, staleFlowsDeleted: 0 };
    }
    this.running = this.syncOnce();
    try {
      return await this.running;
    } finally {
      this.running = undefined;
    }
  }

  private async syncOnce(): Promise<SyncReport> {
    const t0 = performance.now();
    this.dirty = false;
    const changedAt = this.changedAt;
    this.changedAt = undefined;
    const built = this.index.build(this.node);
    const next = built.model;
    this.reportProblems(next);
    let kind: 'full' | 'partial';
    let changes: number;
    let before: ProgrammedEndpoints;
    let after: ProgrammedEndpoints;
    const prev = this.applied;
    try {
      if (this.needFull || !prev) {
        // at start, compare against what the kernel has, so a restart flushes only real changes
        before = prev ? endpointsByFrontend(prev, this.node) : await this.engine.programmedEndpoints(this.node).catch(() => new Map());
        const r = await this.engine.fullSync(next, this.node);
        kind = r.kind;
        changes = r.changes;
        after = endpointsByFrontend(next, this.node);
      } else {
        const diff = { before: built.before, after: built.after };
        try {
          const r = await this.engine.partialSync(prev, next, this.node, diff);
          kind = r.kind;
          changes = r.changes;
        } catch (e) {
          this.st.syncs.failed++;
          this.o.onSyncError?.('partial', e as Error);
          this.log.warn('partial sync failed; retrying as a full sync', { error: (e as Error).message });
          this.st.lastError = { at: new Date().toISOString(), message: (e as Error).message };
          const r = await this.engine.fullSync(next, this.node);
          kind = r.kind;
          changes = r.changes;
        }
        before = endpointsByFrontend({ ports: diff.before, problems: [] }, this.node);
        after = endpointsByFrontend({ ports: diff.after, problems: [] }, this.node);
      }
    } catch (e) {
      this.st.syncs.failed++;
      this.needFull = true;
      this.dirty = true;
      this.changedAt ??= changedAt;
      this.o.onSyncError?.('full', e as Error);
      const message = (e as Error).message;
      this.st.lastError = { at: new Date().toISOString(), message };
      this.log.error('sync failed; the previous rules stay in force', { error: message, retryInMs: this.retryDelay });
      this.scheduleRetry();
      throw e;
    }
    this.retryDelay = this.o.retryDelayMs ?? 1000;
    this.needFull = false;
    this.applied = next;
    this.st.syncs[kind]++;
    this.st.ready = true;
    let staleFlowsDeleted = 0;
    if (this.conntrack) {
      const flows = staleFlows(before, after);
      if (flows.length > 0) {
        const r = await this.conntrack.delete(flows);
        staleFlowsDeleted = r.deleted;
        for (const err of r.errors) this.log.warn('conntrack cleanup failed', { error: err });
        this.log.debug('stale flows deleted', { flows: flows.length, entries: r.deleted });
      }
    }
    const report: SyncReport = { kind, changes, ms: performance.now() - t0, services: this.index.size, ports: next.ports.length, problems: next.problems.length, staleFlowsDeleted };
    this.st.lastSync = { ...report, at: new Date().toISOString() };
    this.log.debug('synced', { ...report });
    this.o.onSync?.({ ...report, ...(changedAt !== undefined ? { pendingMs: performance.now() - changedAt } : {}) });
    if (this.dirty && this.resync && !this.stopped) this.changed();
    return report;
  }

  private scheduleRetry(): void {
    if (!this.resync || this.stopped) return;
    const delay = this.retryDelay;
    this.retryDelay = Math.min(this.retryDelay * 2, 60_000);
    const t = setTimeout(() => void this.sync().catch(() => undefined), delay);
    t.unref?.();
  }

  private reportProblems(m: ProxyModel): void {
    const now = new Set(m.problems.map(problemText));
    for (const p of now) if (!this.reported.has(p)) this.log.warn('service rejected', { problem: p });
    this.reported = now;
    this.st.problems = [...now];
  }
}
