// `podnet agent`: serves CNI on its socket and, given a network config and a store, runs the
// cluster side (subnet lease, cross-node datapath, subnet.env).
import { startCniServer, type ControlHandlers } from './cni-server.js';
import { createLogger, type Level, type Logger } from '../util/log.js';
import { cniLogger } from '../cni/run.js';
import type { ClusterOptions } from './cluster.js';

/** The cluster side's options, plus the CNI socket; config and store are optional (CNI only). */
export interface AgentOptions extends Omit<ClusterOptions, 'configPath' | 'store' | 'log' | 'tracker'> {
  socket: string;
  /** HOST:PORT for /metrics, /healthz, /readyz, /debug/state; empty or undefined: off */
  metricsAddr?: string;
  logLevel: string;
  config?: string;
  store?: string;
}

export async function runAgent(o: AgentOptions): Promise<void> {
  const log = createLogger({ subsys: 'agent', level: o.logLevel as Level });
  process.on('uncaughtException', (e) => log.error('uncaught exception (request isolated, agent keeps serving)', { error: e.stack }));
  process.on('unhandledRejection', (e) => log.error('unhandled rejection', { error: String(e) }));
  // the signal handlers come first: a SIGTERM while the agent starts is a clean stop too (the
  // default action would kill it between two steps)
  let srv: Awaited<ReturnType<typeof startCniServer>> | undefined;
  let cluster: { stop(): Promise<void>; bgpStatus?: () => unknown } | undefined;
  let health: { close(): Promise<void> } | undefined;
  const stop = async (sig: string) => {
    log.info('stopping', { signal: sig, served: srv?.stats.requests ?? 0 });
    await cluster?.stop();
    await srv?.close();
    await health?.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  // CNI is served first: until the lease exists, STATUS answers 50 and ADD 11 (no subnet file yet)
  // one JSON line per CNI call in the same file the standalone plugin writes
  const controls: ControlHandlers = new Map();
  // metrics and probes first: /readyz answers 503 from the start, until the lease is held
  const obs = await startObservability(o, log, () => srv?.stats);
  health = obs?.server;
  srv = await startCniServer({ socket: o.socket, log, cniLog: cniLogger(), controls, ...(obs ? { onRequest: obs.onRequest } : {}) });
  log.info('podnet agent serving CNI', { pid: process.pid, socket: o.socket });
  if (o.config || o.store) {
    if (!o.config || !o.store) {
      await srv.close();
      throw new Error('the cluster side needs both --config and --store');
    }
    const { startCluster } = await import('./cluster.js');
    try {
      cluster = await startCluster({ ...o, configPath: o.config, store: o.store, log: log.child({ subsys: 'cluster' }), ...(obs ? { tracker: obs.tracker(o.resyncSeconds) } : {}) });
      if (cluster.bgpStatus) controls.set('bgp-status', cluster.bgpStatus);
    } catch (e) {
      obs?.startFailed(e as Error);
      await srv.close();
      await health?.close();
      throw e;
    }
  }
}

/** --metrics-addr: the registry, the HTTP server and the hooks the CNI server and the cluster side report to. */
async function startObservability(o: AgentOptions, log: Logger, cniStats: () => { requests: number; failures: number; inFlight: number } | undefined) {
  const { parseListenAddr, startHealthServer, ClusterTracker } = await import('./health.js');
  const addr = parseListenAddr(o.metricsAddr);
  if (!addr) return undefined;
  const { AgentMetrics, ipamSourceFromConfig } = await import('./metrics.js');
  const metrics = new AgentMetrics();
  metrics.setSources({ cniInFlight: () => cniStats()?.inFlight ?? 0 });
  const wanted = !!(o.config || o.store);
  let tracker: InstanceType<typeof ClusterTracker> | undefined;
  let startError: string | undefined;
  const ipamSeen = new Set<string>();
  const server = await startHealthServer({ ...addr, metrics, log: log.child({ subsys: 'metrics' }), cluster: () => ({ wanted, tracker, startError }), extraState: () => ({ cni: cniStats() }) });
  return {
    server,
    tracker(resyncSeconds: number) {
      tracker = new ClusterTracker(metrics, resyncSeconds);
      return tracker;
    },
    startFailed(e: Error) {
      startError = e.message;
    },
    onRequest(req: { env: Record<string, string>; stdin: string } | undefined, ok: boolean, seconds: number) {
      const verb = req?.env.CNI_COMMAND || 'unknown';
      const plugin = req?.env.PODNET_PLUGIN || 'podnet';
      metrics.cniRequest(verb, plugin, ok ? 'success' : 'error', seconds);
      // the IPAM networks served are counted per range when scraped
      if (ok && req && (verb === 'ADD' || verb === 'DEL' || verb === 'CHECK')) {
        let conf: unknown;
        try {
          conf = JSON.parse(req.stdin);
        } catch {
          return;
        }
        const src = ipamSourceFromConfig(conf);
        const key = src ? `${src.network}\0${JSON.stringify((conf as { ipam: unknown }).ipam)}` : '';
        if (src && !ipamSeen.has(key)) {
          ipamSeen.add(key);
          metrics.addIpamSource(src);
        }
      }
    },
  };
}
