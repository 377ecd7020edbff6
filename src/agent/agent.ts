// `podnet agent`: this agent is the CNI server; the cluster side (leases, peers) joins it next.
import { startCniServer } from './cni-server.js';
import { createLogger, type Level } from '../util/log.js';
import { cniLogger } from '../cni/run.js';

export async function runAgent(o: { socket: string; logLevel: string }): Promise<void> {
  const log = createLogger({ subsys: 'agent', level: o.logLevel as Level });
  process.on('uncaughtException', (e) => log.error('uncaught exception (request isolated, agent keeps serving)', { error: e.stack }));
  process.on('unhandledRejection', (e) => log.error('unhandled rejection', { error: String(e) }));
  // one JSON line per CNI call in the same file the standalone plugin writes
  const srv = await startCniServer({ socket: o.socket, log, cniLog: cniLogger() });
  log.info('podnet agent ready', { pid: process.pid, socket: o.socket });
  const stop = async (sig: string) => {
    log.info('stopping', { signal: sig, served: srv.stats.requests });
    await srv.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}
