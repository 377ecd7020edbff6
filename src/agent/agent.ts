// `podnet agent`: serves CNI on its socket and, given a network config and a store, runs the
// cluster side (subnet lease, cross-node datapath, subnet.env).
import { startCniServer, type ControlHandlers } from './cni-server.js';
import { createLogger, type Level } from '../util/log.js';
import { cniLogger } from '../cni/run.js';
import type { ClusterOptions } from './cluster.js';

/** The cluster side's options, plus the CNI socket; config and store are optional (CNI only). */
export interface AgentOptions extends Omit<ClusterOptions, 'configPath' | 'store' | 'log'> {
  socket: string;
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
  const stop = async (sig: string) => {
    log.info('stopping', { signal: sig, served: srv?.stats.requests ?? 0 });
    await cluster?.stop();
    await srv?.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  // CNI is served first: until the lease exists, STATUS answers 50 and ADD 11 (no subnet file yet)
  // one JSON line per CNI call in the same file the standalone plugin writes
  const controls: ControlHandlers = new Map();
  srv = await startCniServer({ socket: o.socket, log, cniLog: cniLogger(), controls });
  log.info('podnet agent serving CNI', { pid: process.pid, socket: o.socket });
  if (o.config || o.store) {
    if (!o.config || !o.store) {
      await srv.close();
      throw new Error('the cluster side needs both --config and --store');
    }
    const { startCluster } = await import('./cluster.js');
    try {
      cluster = await startCluster({ ...o, configPath: o.config, store: o.store, log: log.child({ subsys: 'cluster' }) });
      if (cluster.bgpStatus) controls.set('bgp-status', cluster.bgpStatus);
    } catch (e) {
      await srv.close();
      throw e;
    }
  }
}
