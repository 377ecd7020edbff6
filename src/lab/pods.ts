// Lab pods: a network namespace wired by podnet's CNI plugin, called exactly as a container
// runtime calls it — the node's installed executable exec'd inside the node's namespace, CNI_*
// in the environment, the network's plugin config (with the list's cniVersion and name) on stdin.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runAsync } from './sys.js';
import { nsName, type HostPortMapping, type LabNode, type LabPod, type LabState } from './state.js';
import { POD_IFNAME } from './topology.js';

/** What libcni hands a plugin of a conflist: the plugin's object plus the list's cniVersion and name. */
export function pluginConfig(conflistPath: string): Record<string, unknown> {
  const list = JSON.parse(readFileSync(conflistPath, 'utf8')) as { cniVersion: string; name: string; plugins: Record<string, unknown>[] };
  return { ...list.plugins[0], cniVersion: list.cniVersion, name: list.name };
}

export function planPod(s: LabState, name: string, node: string): LabPod {
  return { name, node, ns: nsName(s.name, `p-${name}`), containerId: `pnlab-${s.name}-${name}`, ifname: POD_IFNAME, ips: [], ready: false };
}

export interface CniOutcome {
  code: number;
  stdout: string;
  stderr: string;
}

/** `--host-port HOST:CONTAINER[/tcp|/udp]`, as a runtime's portMappings capability. Pure. */
export function parseHostPorts(specs: string[]): HostPortMapping[] {
  const out: HostPortMapping[] = [];
  for (const spec of specs) {
    const m = /^(\d+):(\d+)(?:\/(tcp|udp))?$/.exec(spec);
    if (!m) throw new Error(`--host-port ${JSON.stringify(spec)}: expected HOST:CONTAINER, HOST:CONTAINER/tcp or HOST:CONTAINER/udp`);
    const [hostPort, containerPort] = [Number(m[1]), Number(m[2])];
    for (const [what, v] of [['host port', hostPort], ['container port', containerPort]] as const) {
      if (v < 1 || v > 65535) throw new Error(`--host-port ${spec}: ${what} ${v} is out of range (1-65535)`);
    }
    const protocol = (m[3] ?? 'tcp') as 'tcp' | 'udp';
    if (out.some((x) => x.hostPort === hostPort && x.protocol === protocol)) throw new Error(`--host-port ${spec}: host port ${hostPort}/${protocol} given twice`);
    out.push({ hostPort, containerPort, protocol });
  }
  return out;
}

export async function cniCall(n: LabNode, command: 'ADD' | 'DEL' | 'CHECK', pod: LabPod, netnsPath: string): Promise<CniOutcome> {
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: command,
    CNI_CONTAINERID: pod.containerId,
    CNI_NETNS: netnsPath,
    CNI_IFNAME: pod.ifname,
    CNI_PATH: n.binDir,
    PODNET_CNI_LOG: join(n.dir, 'cni.log'),
  };
  const conf = pluginConfig(n.conflist);
  // what libcni does for a capability the plugin declares: the runtime's value under runtimeConfig
  if (pod.hostPorts && pod.hostPorts.length > 0) conf.runtimeConfig = { portMappings: pod.hostPorts };
  return runAsync('ip', ['netns', 'exec', n.ns, join(n.binDir, 'podnet')], { env, input: JSON.stringify(conf), timeoutMs: 60_000 });
}

/** The pod's addresses (without prefix) from a CNI result. */
export function resultIps(stdout: string): string[] {
  const res = JSON.parse(stdout) as { ips?: { address: string }[] };
  return (res.ips ?? []).map((i) => i.address.split('/')[0]);
}

/** The CNI error message, from the plugin's JSON error on stdout when there is one. */
export function cniErrorText(o: CniOutcome): string {
  try {
    const e = JSON.parse(o.stdout) as { code?: number; msg?: string; details?: string };
    if (e.msg) return `code ${e.code}: ${e.msg}${e.details ? ` (${e.details})` : ''}`;
  } catch {
    /* not JSON */
  }
  return (o.stdout + o.stderr).trim() || `exit ${o.code}`;
}
