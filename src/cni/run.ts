// One CNI request, whoever serves it (standalone process or agent): pick the plugin, dispatch,
// log one JSON line per call.
import { dispatch, type CniPlugin } from './skel.js';
import { createPodnetPlugin } from './plugin.js';
import { ipamPlugin } from '../ipam/plugin.js';
import type { CniRequest, CniResponse } from './types.js';
import { createLogger, fileSink, type Logger } from '../util/log.js';

let podnet: CniPlugin | undefined;
let defaultLog: Logger | undefined;

export function cniLogger(): Logger {
  defaultLog ??= createLogger({ subsys: 'cni', sink: fileSink(process.env.PODNET_CNI_LOG || '/var/log/podnet/cni.log'), text: false });
  return defaultLog;
}

export function pluginFor(name: string): CniPlugin {
  if (name === 'podnet-ipam') return ipamPlugin;
  podnet ??= createPodnetPlugin();
  return podnet;
}

/** `steps`: time already spent on this request (the agent's socket read and decode), logged with the plugin's own steps. */
export async function runCni(which: string, req: CniRequest, log: Logger = cniLogger(), steps?: Record<string, number>): Promise<CniResponse> {
  return dispatch(pluginFor(which), req, log, steps);
}
