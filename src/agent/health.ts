// The agent's HTTP endpoints (`--metrics-addr`, off when empty): /metrics (Prometheus text),
// /healthz, /readyz and /debug/state, on node:http.
//
// /healthz is 200 only while the event loop is responsive (no stall seen in the last window) and,
// once the cluster side runs, its reconcile loop is alive: the last pass ended recently and no
// pass is stuck. /readyz is 200 only once the lease is held, subnet.env is written, the datapath
// is programmed (the last pass succeeded and the kernel holds what the plan wants now: a dry run
// of the reconciler) and the proxy's first sync has succeeded; 503 with one reason per line
// otherwise. flannel's healthz answers 200 whatever happens; podnet's must not.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { AgentMetrics } from './metrics.js';
import type { ReconcileReport } from './backends/reconciler.js';
import type { NodeLease } from './lease.js';
import type { Logger } from '../util/log.js';

/** HOST:PORT (IPv6 as [ADDR]:PORT); undefined when empty (off). Throws on anything else. */
export function parseListenAddr(v: string | undefined): { host: string; port: number } | undefined {
  if (v === undefined || v.trim() === '') return undefined;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(v.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 0 && port <= 65535)) throw new Error(`--metrics-addr: expected HOST:PORT (e.g. 127.0.0.1:9603), got ${JSON.stringify(v)}`);
  return { host: m[1] ?? m[2], port };
}

/** One finished reconcile pass, as /debug/state shows it. */
export interface PassRecord {
  at: string;
  full: boolean;
  ok: boolean;
  ms: number;
  error?: string;
  added?: string[];
  removed?: string[];
  refused?: { peer: string; nodeName?: string; message: string }[];
  drift?: number;
}

export interface HealthInput {
  nowMs: number;
  /** the largest event-loop delay measured in the recent window */
  loopLagMs: number;
  /** the cluster side: undefined in CNI-only mode or while it starts */
  reconcile?: { lastEndMs?: number; startedMs: number; runningSinceMs?: number; resyncSeconds: number };
}

export const LOOP_STALL_MS = 5000;

/** Pure: why the agent is unhealthy ([] = healthy). */
export function healthReasons(h: HealthInput): string[] {
  const out: string[] = [];
  if (h.loopLagMs > LOOP_STALL_MS) out.push(`event loop stalled for ${Math.round(h.loopLagMs)} ms recently`);
  const r = h.reconcile;
  if (r) {
    // a pass per resync period; three periods missed (at least 30 s) is a loop that stopped
    const maxAgeMs = Math.max(3 * r.resyncSeconds * 1000, 30_000);
    if (r.runningSinceMs !== undefined && h.nowMs - r.runningSinceMs > maxAgeMs) out.push(`a reconcile pass has been running for ${Math.round((h.nowMs - r.runningSinceMs) / 1000)} s`);
    const last = r.lastEndMs ?? r.startedMs;
    if (h.nowMs - last > maxAgeMs) out.push(r.lastEndMs === undefined ? `no reconcile pass has finished in the ${Math.round((h.nowMs - last) / 1000)} s since the start` : `the last reconcile pass ended ${Math.round((h.nowMs - last) / 1000)} s ago (resync every ${r.resyncSeconds} s)`);
  }
  return out;
}

/**
 * What the cluster side reports and the tracker keeps: lease, passes, the proxy. cluster.ts
 * calls it at its seams; the tracker moves the metrics and answers the probes.
 */
export class ClusterTracker {
  lease?: NodeLease;
  leaseHeld = false;
  readonly startedMs = Date.now();
  lastPass?: PassRecord;
  lastOk?: PassRecord;
  lastEndMs?: number;
  runningSinceMs?: number;
  peers: NodeLease[] = [];
  /** the live checks cluster.ts provides once everything is built */
  probes: {
    /** reasons the datapath is not what the plan wants now (a dry run against the kernel) */
    datapath?: () => Promise<string[]>;
    subnetFile?: () => boolean;
    proxy?: () => { ready: boolean; lastError?: { message: string } } | undefined;
    /** what the agent believes it programmed */
    state?: () => unknown;
  } = {};
  private pendingSinceMs?: number;

  constructor(
    readonly metrics: AgentMetrics | undefined,
    readonly resyncSeconds: number,
  ) {}

  setLease(lease: NodeLease | undefined, acquired = false): void {
    this.lease = lease ?? this.lease;
    this.leaseHeld = lease !== undefined;
    this.metrics?.leaseHeld.set(lease ? 1 : 0);
    if (acquired) this.metrics?.leaseAcquisitions.inc();
  }

  renewal(result: 'success' | 'expired' | 'error'): void {
    this.metrics?.leaseRenewals.labels({ result }).inc();
    if (result === 'error') this.metrics?.storeErrors.labels({ op: 'keepalive' }).inc();
    if (result === 'expired') this.setLease(undefined);
  }

  storeError(op: string): void {
    this.metrics?.storeErrors.labels({ op }).inc();
  }

  deviceRepaired(action: string): void {
    this.metrics?.deviceRepairs.labels({ action }).inc();
  }

  watchReset(): void {
    this.metrics?.watchResets.inc();
  }

  /** A change was seen (lease event): programming latency runs from the first one until a pass succeeds. */
  changeSeen(): void {
    this.pendingSinceMs ??= performance.now();
  }

  passStart(peers: NodeLease[]): { t0: number; pending?: number } {
    this.peers = peers;
    this.runningSinceMs = Date.now();
    this.metrics?.peersKnown.set(peers.length);
    const pending = this.pendingSinceMs;
    this.pendingSinceMs = undefined;
    return { t0: performance.now(), pending };
  }

  passDone(tok: { t0: number; pending?: number }, full: boolean, report: ReconcileReport): void {
    const now = performance.now();
    const seconds = (now - tok.t0) / 1000;
    const kind = full ? 'full' : 'incremental';
    const m = this.metrics;
    m?.reconcilePasses.labels({ kind, result: 'success' }).inc();
    m?.reconcileDuration.labels({ kind }).observe(seconds);
    m?.reconcileObjects.labels({ op: 'added' }).inc(report.added.length);
    m?.reconcileObjects.labels({ op: 'removed' }).inc(report.removed.length);
    if (report.drift) m?.driftRepaired.inc(report.drift);
    m?.reconcileLastSuccess.set(Date.now() / 1000);
    const refusedPeers = new Set(report.errors.map((e) => e.peer));
    m?.peersRefused.set(refusedPeers.size);
    m?.peersProgrammed.set(this.peers.filter((p) => !refusedPeers.has(p.subnet)).length);
    if (tok.pending !== undefined) m?.programming.labels({ component: 'datapath' }).observe((now - tok.pending) / 1000);
    this.lastPass = this.lastOk = { at: new Date().toISOString(), full, ok: true, ms: round(seconds * 1000), added: report.added, removed: report.removed, refused: report.errors.map((e) => ({ peer: e.peer, nodeName: e.nodeName, message: e.message })), drift: report.drift ?? 0 };
    this.lastEndMs = Date.now();
    this.runningSinceMs = undefined;
  }

  passFailed(tok: { t0: number; pending?: number }, full: boolean, error: Error): void {
    const seconds = (performance.now() - tok.t0) / 1000;
    const kind = full ? 'full' : 'incremental';
    this.metrics?.reconcilePasses.labels({ kind, result: 'error' }).inc();
    this.metrics?.reconcileDuration.labels({ kind }).observe(seconds);
    // the change is still not programmed: its latency keeps running
    if (tok.pending !== undefined) this.pendingSinceMs ??= tok.pending;
    this.lastPass = { at: new Date().toISOString(), full, ok: false, ms: round(seconds * 1000), error: error.message };
    this.lastEndMs = Date.now();
    this.runningSinceMs = undefined;
  }

  /** The proxier's sync hook. */
  proxySync(r: { kind: 'full' | 'partial'; ms: number; changes: number; services: number; ports: number; problems: number; staleFlowsDeleted: number; pendingMs?: number }): void {
    const m = this.metrics;
    if (!m) return;
    const s = r.ms / 1000;
    m.proxySyncDuration.observe(s);
    (r.kind === 'full' ? m.proxyFullSyncDuration : m.proxyPartialSyncDuration).observe(s);
    m.proxySyncs.labels({ kind: r.kind, result: 'success' }).inc();
    m.proxyChanges.labels({ kind: r.kind }).inc(r.changes);
    m.proxyLastSync.set(Date.now() / 1000);
    m.proxyServices.set(r.services);
    m.proxyPorts.set(r.ports);
    m.proxyProblems.set(r.problems);
    m.conntrackDeleted.inc(r.staleFlowsDeleted);
    if (r.pendingMs !== undefined) m.programming.labels({ component: 'proxy' }).observe(r.pendingMs / 1000);
  }

  proxySyncFailed(kind: 'full' | 'partial'): void {
    this.metrics?.proxySyncs.labels({ kind, result: 'error' }).inc();
  }

  /** Why the node is not ready ([] = ready). */
  async readiness(): Promise<string[]> {
    const out: string[] = [];
    if (!this.leaseHeld) out.push(this.lease ? `subnet lease ${this.lease.subnet} lost (expired; being taken again)` : 'subnet lease not held yet');
    if (this.probes.subnetFile && !this.probes.subnetFile()) out.push('subnet.env not written');
    if (!this.lastPass) out.push('datapath not programmed yet: no reconcile pass has finished');
    else if (!this.lastPass.ok) out.push(`datapath not programmed: the last reconcile pass failed: ${this.lastPass.error}`);
    else if (this.probes.datapath) {
      try {
        out.push(...(await this.probes.datapath()));
      } catch (e) {
        out.push(`datapath not programmed: cannot read it: ${(e as Error).message}`);
      }
    }
    if (this.probes.proxy) {
      const p = this.probes.proxy();
      if (!p?.ready) out.push(`service proxy's first sync not done${p?.lastError ? ` (last error: ${p.lastError.message})` : ''}`);
    }
    return out;
  }

  health(nowMs: number, loopLagMs: number): string[] {
    return healthReasons({ nowMs, loopLagMs, reconcile: { lastEndMs: this.lastEndMs, startedMs: this.startedMs, runningSinceMs: this.runningSinceMs, resyncSeconds: this.resyncSeconds } });
  }

  debugState(): unknown {
    return { lease: this.lease, leaseHeld: this.leaseHeld, peers: this.peers.map((p) => ({ subnet: p.subnet, ipv6Subnet: p.ipv6Subnet, publicIP: p.publicIP, nodeName: p.nodeName, backendType: p.backendType })), lastPass: this.lastPass, lastSuccessfulPass: this.lastOk, ...(this.probes.state ? this.probes.state() as object : {}) };
  }
}

const round = (x: number) => Math.round(x * 10) / 10;

/** The largest event-loop delay in the recent window: a timer every 250 ms and how late it fires. */
export class LoopMonitor {
  private readonly timer: NodeJS.Timeout;
  private last = performance.now();
  private window: { at: number; lag: number }[] = [];
  constructor(private readonly windowMs = 30_000, private readonly everyMs = 250) {
    this.timer = setInterval(() => {
      const now = performance.now();
      const lag = Math.max(0, now - this.last - this.everyMs);
      this.last = now;
      this.window.push({ at: now, lag });
      while (this.window.length && this.window[0].at < now - this.windowMs) this.window.shift();
    }, everyMs);
    this.timer.unref();
  }
  /** includes the time since the last tick, so a loop blocked right now counts */
  maxLagMs(): number {
    const sinceLast = Math.max(0, performance.now() - this.last - this.everyMs);
    return Math.max(sinceLast, ...this.window.map((w) => w.lag));
  }
  close(): void {
    clearInterval(this.timer);
  }
}

export interface HealthServerOptions {
  host: string;
  port: number;
  metrics: AgentMetrics;
  /** undefined in CNI-only mode; set once the cluster side is being started */
  cluster: () => { wanted: boolean; tracker?: ClusterTracker; startError?: string };
  /** extra state for /debug/state (the CNI server's counters) */
  extraState?: () => Record<string, unknown>;
  log: Logger;
}

export interface HealthServer {
  server: Server;
  address: AddressInfo;
  close(): Promise<void>;
}

export async function startHealthServer(o: HealthServerOptions): Promise<HealthServer> {
  const loop = new LoopMonitor();
  const send = (res: ServerResponse, code: number, body: string, type = 'text/plain; charset=utf-8') => {
    res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  };
  const reasonsBody = (code: number, reasons: string[]) => (code === 200 ? 'ok\n' : reasons.map((r) => `${r}\n`).join(''));
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'method not allowed\n');
    const c = o.cluster();
    switch (path) {
      case '/metrics':
        return send(res, 200, await o.metrics.render(), o.metrics.contentType);
      case '/healthz': {
        const reasons = [...(c.tracker ? c.tracker.health(Date.now(), loop.maxLagMs()) : healthReasons({ nowMs: Date.now(), loopLagMs: loop.maxLagMs() }))];
        if (c.startError) reasons.push(`the cluster side failed to start: ${c.startError}`);
        const code = reasons.length ? 503 : 200;
        return send(res, code, reasonsBody(code, reasons));
      }
      case '/readyz': {
        const reasons = c.tracker ? await c.tracker.readiness() : c.wanted ? [c.startError ? `the cluster side failed to start: ${c.startError}` : 'subnet lease not held yet (the cluster side is starting)'] : [];
        const code = reasons.length ? 503 : 200;
        return send(res, code, reasonsBody(code, reasons));
      }
      case '/debug/state': {
        const ready = c.tracker ? await c.tracker.readiness() : [];
        const state = { ready: ready.length === 0, notReady: ready, health: c.tracker?.health(Date.now(), loop.maxLagMs()) ?? [], clusterSide: c.wanted, ...(c.tracker ? (c.tracker.debugState() as object) : {}), ...(o.extraState?.() ?? {}) };
        return send(res, 200, JSON.stringify(state, null, 2) + '\n', 'application/json');
      }
      default:
        return send(res, 404, 'not found: /metrics, /healthz, /readyz, /debug/state\n');
    }
  };
  const server = createServer((req, res) => {
    handle(req, res).catch((e: Error) => {
      o.log.warn('health endpoint failed', { url: req.url, error: e.message });
      if (!res.headersSent) send(res, 500, `${e.message}\n`);
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (e) => o.log.error('metrics server error', { error: e.message }));
  const address = server.address() as AddressInfo;
  o.log.info('serving metrics and health', { addr: `${address.address}:${address.port}`, paths: ['/metrics', '/healthz', '/readyz', '/debug/state'] });
  return {
    server,
    address,
    close: () =>
      new Promise<void>((resolve) => {
        loop.close();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
