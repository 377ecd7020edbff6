// A trace request (SRC, DST and the packet's options, as the CLI and the lab's web page take them)
// turned into a TraceQuery and the view to walk: in a lab, its namespaces, their roles and the
// cluster's facts; on a real node, every named namespace.
import { spawnSync } from 'node:child_process';
import type { Proto, TraceQuery, TraceResult } from './types.js';
import { HOST_NS, LiveView, type ClusterFacts } from './view.js';
import { HostEndpointError, machineNamespaces, resolveHostSource } from './host-endpoints.js';
import { labCluster, labNamespaces, parseAddrPort, resolveLabEndpoint } from './lab-endpoints.js';
import { walk } from './walk.js';
import type { LabState } from '../lab/state.js';

/** A request that cannot be traced as given (exit code 2 on the command line, 400 from the web page). */
export class TraceUsageError extends Error {}

export interface TraceRequest {
  /** the lab (its state); absent with fromNetns */
  lab?: LabState;
  fromNetns?: string;
  /** on this machine (no lab): SRC an address or a container ID */
  host?: boolean;
  /** where podnet-ipam keeps reservations (to find a container's address); default /var/lib/cni/networks */
  ipamDir?: string;
  proto?: Proto;
  port?: string;
  sport?: string;
  size?: string;
  ipv6?: boolean;
}

function intIn(v: string | undefined, lo: number, hi: number, what: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < lo || n > hi) throw new TraceUsageError(`${what} must be an integer ${lo}-${hi}, not ${JSON.stringify(v)}`);
  return n;
}

/** The query and what the walk may see, or a TraceUsageError saying what is wrong with the request. */
export function buildQuery(src: string, dst: string, o: TraceRequest): { q: TraceQuery; roles: Record<string, string>; facts?: ClusterFacts } {
  let facts: ClusterFacts | undefined;
  const family = o.ipv6 ? 6 : undefined;
  let roles: Record<string, string>;
  let s: { label: string; ip: string; ns?: string };
  let d: { label: string; ip: string; port?: number; proto?: 'tcp' | 'udp' };
  if (o.fromNetns || o.host) {
    // a real node: its own namespace and every named one; SRC an address, a container ID, or in --from-netns
    const namespaces = machineNamespaces();
    try {
      s = resolveHostSource(src, { fromNetns: o.fromNetns, family, ipamDir: o.ipamDir }, namespaces);
    } catch (e) {
      throw e instanceof HostEndpointError ? new TraceUsageError(e.message) : e;
    }
    roles = Object.fromEntries(namespaces.map((n) => [n, n === s.ns ? `source ${s.label}` : n === HOST_NS ? 'this node' : '']));
    const da = parseAddrPort(dst);
    if (!da) throw new TraceUsageError(`on a node, DST is an address (IP or IP:PORT), not ${dst}`);
    d = { label: da.ip, ...da };
  } else {
    const usage = <T>(f: () => T): T => {
      try {
        return f();
      } catch (e) {
        throw new TraceUsageError((e as Error).message);
      }
    };
    if (!o.lab) throw new TraceUsageError('a trace needs a lab or --from-netns');
    const st = o.lab;
    roles = labNamespaces(st);
    facts = labCluster(st);
    s = usage(() => resolveLabEndpoint(st, src, family));
    // a node named as the source sends as an unbound socket does: from the route's source address
    // (for a pod that is its one address; for a node it depends on the destination)
    if (s.label.startsWith('node ') && !parseAddrPort(src)) s = { ...s, ip: pickedSource(s.ns!, resolveLabEndpoint(st, dst, family ?? (s.ip.includes(':') ? 6 : 4)).ip) ?? s.ip };
    if (!s.ns) throw new TraceUsageError(`SRC ${src} is in no namespace of lab ${st.name}: trace from a pod, a node or one of their addresses`);
    const srcFamily = s.ip.includes(':') ? 6 : 4;
    d = usage(() => resolveLabEndpoint(st, dst, family ?? srcFamily));
  }
  if (s.ip.includes(':') !== d.ip.includes(':')) throw new TraceUsageError(`SRC ${s.ip} and DST ${d.ip} are of different IP families (-6 picks IPv6 addresses of names)`);
  const dport = intIn(o.port, 1, 65535, '--port') ?? d.port;
  // a service port says its protocol (svc/dns:53 is UDP); --proto overrides it
  const proto: Proto = o.proto ?? d.proto ?? (dport !== undefined ? 'tcp' : 'icmp');
  if (proto === 'icmp' && dport !== undefined) throw new TraceUsageError('--proto icmp has no port');
  const q: TraceQuery = {
    fromNs: s.ns!,
    srcLabel: s.label,
    src: s.ip,
    dst: d.ip,
    dstLabel: d.label,
    proto,
    ...(proto !== 'icmp' ? { sport: intIn(o.sport, 1, 65535, '--sport') ?? 40000, dport: dport ?? 80 } : {}),
    size: intIn(o.size ?? '84', 28, 65535, '--size')!,
  };
  return { q, roles, facts };
}


/** The source address the kernel picks in `ns` for a packet to `dst` (the route's prefsrc). */
function pickedSource(ns: string, dst: string): string | undefined {
  const r = spawnSync('ip', ['-n', ns, '-j', 'route', 'get', dst], { encoding: 'utf8' });
  if (r.status !== 0) return undefined;
  return (JSON.parse(r.stdout) as { prefsrc?: string }[])[0]?.prefsrc;
}

/** Builds the query and walks it over the live kernel. */
export function traceRequest(src: string, dst: string, o: TraceRequest): Promise<TraceResult> {
  const { q, roles, facts } = buildQuery(src, dst, o);
  return walk(new LiveView(Object.keys(roles), roles, facts), q);
}
