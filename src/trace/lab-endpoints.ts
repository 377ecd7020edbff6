// SRC and DST of a trace in a lab: a pod or node name, a service (svc/NAME or svc/NAME:PORT, its
// cluster IP and port), an address (IP or IP:PORT), resolved against the lab's state; and the
// lab's namespaces with what each one is, for the walk.
import { readFileSync } from 'node:fs';
import { formatCidr, masked, tryParseCidr, tryParseIP } from '../util/ip.js';
import type { ClusterFacts } from './view.js';
import type { LabState } from '../lab/state.js';
import { isAlive } from '../lab/sys.js';

export interface Endpoint {
  label: string;
  ip: string;
  port?: number;
  /** the namespace that sends from this endpoint (when it is a source) */
  ns?: string;
  /** a service port's protocol */
  proto?: 'tcp' | 'udp';
}

interface ServicePortView {
  port: number;
  protocol?: string;
  nodePort?: number;
}

/** A lab service's cluster IP and ports, as the Service object the lab wrote has them. */
function serviceView(svc: LabState['services'][string]): { ip?: string; ports: ServicePortView[] } {
  const spec = (svc.service.spec ?? {}) as { clusterIP?: string; ports?: ServicePortView[] };
  return { ip: spec.clusterIP, ports: Array.isArray(spec.ports) ? spec.ports : [] };
}

/** svc/NAME (its first port) or svc/NAME:PORT: the service's cluster IP and that port. */
function resolveService(s: LabState, spec: string, family?: 4 | 6): Endpoint {
  const m = /^svc\/([^:]+)(?::(\d+))?$/.exec(spec);
  if (!m) throw new Error(`${spec}: a service is svc/NAME or svc/NAME:PORT`);
  const svc = s.services?.[m[1]];
  if (!svc) throw new Error(`${m[1]} is no service of lab ${s.name} (services: ${Object.keys(s.services ?? {}).join(', ') || 'none'})`);
  const v = serviceView(svc);
  if (!v.ip || v.ip === 'None') throw new Error(`service ${m[1]} has no cluster IP`);
  if (family === 6 && !v.ip.includes(':')) throw new Error(`service ${m[1]} has no IPv6 cluster IP`);
  const want = m[2] !== undefined ? Number(m[2]) : undefined;
  const port = want !== undefined ? v.ports.find((p) => p.port === want) : v.ports[0];
  if (!port) {
    const list = v.ports.map((p) => `${p.port}/${(p.protocol ?? 'TCP').toLowerCase()}`).join(', ');
    throw new Error(want !== undefined ? `service ${m[1]} has no port ${want} (ports: ${list || 'none'})` : `service ${m[1]} has no ports`);
  }
  const proto = (port.protocol ?? 'TCP').toLowerCase() === 'udp' ? 'udp' : 'tcp';
  return { label: `service ${m[1]}`, ip: v.ip, port: port.port, proto };
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
  if (spec.startsWith('svc/')) return resolveService(s, spec, family);
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
  const services: NonNullable<ClusterFacts['services']> = [];
  for (const svc of Object.values(s.services ?? {})) {
    const v = serviceView(svc);
    for (const p of v.ports) {
      if (v.ip && v.ip !== 'None') services.push({ name: svc.name, ip: v.ip, port: p.port, proto: (p.protocol ?? 'TCP').toLowerCase(), ...(p.nodePort !== undefined ? { nodePort: p.nodePort } : {}) });
    }
  }
  const agents = Object.values(s.nodes).map((n) => ({ node: n.name, ns: n.ns, running: isAlive(n.agent), ...(n.agent ? { pid: n.agent.pid } : {}) }));
  return { networks: [s.network, ...(s.ipv6Network ? [s.ipv6Network] : [])], subnets, ...(s.backend === 'bgp' ? { routersKnowPods: true } : {}), ...(services.length ? { services } : {}), agents };
}
