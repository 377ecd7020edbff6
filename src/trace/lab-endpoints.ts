// SRC and DST of a trace in a lab: a pod or node name, an address (IP or IP:PORT), resolved
// against the lab's state; and the lab's namespaces with what each one is, for the walk.
import { readFileSync } from 'node:fs';
import { formatCidr, masked, tryParseCidr, tryParseIP } from '../util/ip.js';
import type { ClusterFacts } from './view.js';
import type { LabState } from '../lab/state.js';

export interface Endpoint {
  label: string;
  ip: string;
  port?: number;
  /** the namespace that sends from this endpoint (when it is a source) */
  ns?: string;
}

/** "IP", "IP:PORT", "[IPv6]:PORT" or "IPv6" → address and port; undefined when it is not an address. */
export function parseAddrPort(s: string): { ip: string; port?: number } | undefined {
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(s) ?? (/^(\d+\.\d+\.\d+\.\d+):(\d+)$/.exec(s) || undefined);
  const ip = m ? m[1] : s;
  if (!tryParseIP(ip)) return undefined;
  const port = m?.[2] !== undefined ? Number(m[2]) : undefined;
  if (port !== undefined && (port < 1 || port > 65535)) throw new Error(`port ${port} in ${s} is not 1-65535`);
  return { ip, ...(port !== undefined ? { port } : {}) };
}

/** The namespaces of a lab and their roles. */
export function labNamespaces(s: LabState): Record<string, string> {
  const roles: Record<string, string> = { [s.fabricNs]: 'fabric' };
  for (const n of Object.values(s.nodes)) roles[n.ns] = `node ${n.name}`;
  for (const p of Object.values(s.pods)) roles[p.ns] = `pod ${p.name}`;
  for (const m of Object.values(s.etcd)) roles[m.ns] = `etcd ${m.name}`;
  if (s.router) roles[s.router.ns] = 'router';
  return roles;
}

/** A pod, node or address in this lab; `family` picks the pod's or node's address of that family. */
export function resolveLabEndpoint(s: LabState, spec: string, family?: 4 | 6): Endpoint {
  const fam = (ip: string) => (ip.includes(':') ? 6 : 4);
  const [name, portText] = spec.includes(':') && !parseAddrPort(spec) ? spec.split(':', 2) : [spec, undefined];
  const port = portText !== undefined ? Number(portText) : undefined;
  if (port !== undefined && !(Number.isInteger(port) && port >= 1 && port <= 65535)) throw new Error(`port ${portText} in ${spec} is not 1-65535`);
  const withPort = (e: Endpoint): Endpoint => (port !== undefined ? { ...e, port } : e);
  const pod = s.pods[name];
  if (pod) {
    const ip = pod.ips.find((x) => !family || fam(x) === family);
    if (!ip) throw new Error(`pod ${name} has no IPv${family} address`);
    return withPort({ label: `pod ${name}`, ip, ns: pod.ns });
  }
  const node = s.nodes[name];
  if (node) {
    const ip = family === 6 ? node.ip6 : node.ip;
    if (!ip) throw new Error(`node ${name} has no IPv${family} address`);
    return withPort({ label: `node ${name}`, ip, ns: node.ns });
  }
  const a = parseAddrPort(spec);
  if (!a) throw new Error(`${spec} is no pod or node of lab ${s.name} and no address (pods: ${Object.keys(s.pods).join(', ') || 'none'}; nodes: ${Object.keys(s.nodes).join(', ')})`);
  const owner = Object.values(s.pods).find((p) => p.ips.includes(a.ip));
  if (owner) return { label: `pod ${owner.name}`, ip: a.ip, ns: owner.ns, ...(a.port ? { port: a.port } : {}) };
  const nodeOwner = Object.values(s.nodes).find((n) => n.ip === a.ip || n.ip6 === a.ip);
  if (nodeOwner) return { label: `node ${nodeOwner.name}`, ip: a.ip, ns: nodeOwner.ns, ...(a.port ? { port: a.port } : {}) };
  return { label: a.ip, ip: a.ip, ...(a.port ? { port: a.port } : {}) };
}

/** The lab's cluster networks and each node's pod subnets (from the subnet.env its agent wrote). */
export function labCluster(s: LabState): ClusterFacts {
  const subnets: ClusterFacts['subnets'] = [];
  for (const n of Object.values(s.nodes)) {
    let env = '';
    try {
      env = readFileSync(n.subnetFile, 'utf8');
    } catch {
      continue; // no agent has written it (yet): the node has no subnet to check
    }
    for (const key of ['PODNET_SUBNET', 'PODNET_IPV6_SUBNET']) {
      const c = tryParseCidr(new RegExp(`^${key}=(\\S+)`, 'm').exec(env)?.[1] ?? '');
      if (c) subnets.push({ cidr: formatCidr(masked(c)), node: n.name, ns: n.ns });
    }
  }
  return { networks: [s.network, ...(s.ipv6Network ? [s.ipv6Network] : [])], subnets, ...(s.backend === 'bgp' ? { routersKnowPods: true } : {}) };
}
