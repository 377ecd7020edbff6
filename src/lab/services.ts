// Services in the lab, the pure part: option parsing, the Kubernetes-shaped objects the lab
// writes for podnet's proxy (a v1 Service and one discovery/v1 EndpointSlice per service, each
// stored under its own key: src/proxy/document.ts), cluster IP and NodePort allocation, their
// validation through the proxy's own normalize(), and the view `service ls` and `status` show.
import { serviceStoreKey, sliceStoreKey } from '../proxy/document.js';
import { SERVICE_NAME_LABEL, problemText, type ProxyNode, type RawEndpointSlice, type RawService, type ServiceProblem } from '../proxy/model.js';
import { frontendOwners, normalize, serviceKey } from '../proxy/normalize.js';
import { add, broadcast, canonicalIP, contains, formatCidr, formatIP, masked, network, tryParseCidr, tryParseIP } from '../util/ip.js';
import { table } from '../util/table.js';

export const SERVICE_NAMESPACE = 'default';
export const NODE_PORT_RANGE: [number, number] = [30000, 32767];
/** who wrote a slice (the label Kubernetes' own controller sets to endpointslice-controller.k8s.io) */
export const MANAGED_BY_LABEL = 'endpointslice.kubernetes.io/managed-by';
export const MANAGED_BY = 'podnet-lab';

export type LabProtocol = 'TCP' | 'UDP';
export type ServiceType = 'ClusterIP' | 'NodePort';
export type TrafficPolicy = 'Cluster' | 'Local';

export interface PortSpec {
  port: number;
  protocol: LabProtocol;
}

/**
 * "80", "80/tcp", "53/UDP" → port and protocol (TCP by default). Only the syntax is checked
 * here: the range of a service port is the proxy's validation to report (with its field), so
 * 70000 parses.
 */
export function parsePortSpec(v: string, option: string): PortSpec {
  const m = /^(\d{1,9})(?:\/(tcp|udp))?$/i.exec(v.trim());
  if (!m) throw new Error(`${option} ${JSON.stringify(v)}: expected PORT, PORT/tcp or PORT/udp`);
  return { port: Number(m[1]), protocol: (m[2] ?? 'tcp').toUpperCase() as LabProtocol };
}

/** `--serve` ports: each 1-65535, no port twice per protocol. */
export function parseServePorts(values: string[]): { tcp: number[]; udp: number[]; ports: string[] } {
  const tcp: number[] = [];
  const udp: number[] = [];
  for (const v of values) {
    const p = parsePortSpec(v, '--serve');
    if (p.port < 1 || p.port > 65535) throw new Error(`--serve ${JSON.stringify(v)}: port out of range (1-65535)`);
    const list = p.protocol === 'TCP' ? tcp : udp;
    if (list.includes(p.port)) throw new Error(`--serve ${p.port}/${p.protocol.toLowerCase()} is given twice`);
    list.push(p.port);
  }
  return { tcp, udp, ports: [...tcp.map((p) => `${p}/tcp`), ...udp.map((p) => `${p}/udp`)] };
}

/** "a,b,c" → ["a","b","c"]; "" → [] (a service scaled to zero). Names must be unique. */
export function parsePodList(v: string): string[] {
  const pods = v
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
  const dup = pods.find((p, i) => pods.indexOf(p) !== i);
  if (dup) throw new Error(`--pods names ${dup} twice`);
  return pods;
}

/** A whole number option (the proxy's validation checks its range). */
export function parseIntOption(v: string, option: string): number {
  if (!/^-?\d{1,9}$/.test(v.trim())) throw new Error(`${option} ${JSON.stringify(v)}: expected a whole number`);
  return Number(v.trim());
}

export interface ServicePortSpec {
  /** "" for a service with one port; "tcp-80" style names when it has several (Kubernetes requires names then) */
  name: string;
  protocol: LabProtocol;
  port: number;
  targetPort: number;
  nodePort?: number;
}

/**
 * The service's ports from the repeated --port, --target and --node-port options: --target
 * once for every port or once per port (default: the port itself); --node-port once per port,
 * in order (missing ones are allocated later for a NodePort service).
 */
export function servicePorts(ports: string[], targets: string[], nodePorts: string[]): ServicePortSpec[] {
  if (ports.length === 0) throw new Error('--port is required');
  const specs = ports.map((p) => parsePortSpec(p, '--port'));
  const seen = new Set<string>();
  for (const s of specs) {
    const k = `${s.port}/${s.protocol}`;
    if (seen.has(k)) throw new Error(`--port ${s.port}/${s.protocol.toLowerCase()} is given twice`);
    seen.add(k);
  }
  if (targets.length > 1 && targets.length !== ports.length) throw new Error(`--target is given ${targets.length} times for ${ports.length} ports: give it once, or once per --port`);
  if (nodePorts.length > ports.length) throw new Error(`--node-port is given ${nodePorts.length} times for ${ports.length} ports`);
  const t = targets.map((x) => parseIntOption(x, '--target'));
  const np = nodePorts.map((x) => parseIntOption(x, '--node-port'));
  return specs.map((s, i) => ({
    name: specs.length > 1 ? `${s.protocol.toLowerCase()}-${s.port}` : '',
    protocol: s.protocol,
    port: s.port,
    targetPort: t.length === 0 ? s.port : t.length === 1 ? t[0] : t[i],
    ...(np[i] !== undefined ? { nodePort: np[i] } : {}),
  }));
}

export interface ServiceSpec {
  name: string;
  namespace?: string;
  type: ServiceType;
  clusterIP: string;
  ports: ServicePortSpec[];
  /** ClientIP session affinity; timeoutSeconds undefined: Kubernetes' default (10800) */
  affinity?: { timeoutSeconds?: number };
  externalTrafficPolicy?: TrafficPolicy;
  internalTrafficPolicy?: TrafficPolicy;
  /** RFC 3339; the proxy gives a contested frontend to the oldest service */
  createdAt: string;
}

/** A v1 Service as `kubectl get svc -o json` shows one (the fields podnet's proxy reads). */
export function buildService(s: ServiceSpec): RawService & Record<string, unknown> {
  const spec: Record<string, unknown> = {
    type: s.type,
    clusterIP: s.clusterIP,
    clusterIPs: [s.clusterIP],
    ipFamilies: ['IPv4'],
    ipFamilyPolicy: 'SingleStack',
    ports: s.ports.map((p) => ({ name: p.name, protocol: p.protocol, port: p.port, targetPort: p.targetPort, ...(p.nodePort !== undefined ? { nodePort: p.nodePort } : {}) })),
    sessionAffinity: s.affinity ? 'ClientIP' : 'None',
    ...(s.affinity ? { sessionAffinityConfig: { clientIP: { timeoutSeconds: s.affinity.timeoutSeconds ?? 10800 } } } : {}),
    internalTrafficPolicy: s.internalTrafficPolicy ?? 'Cluster',
    // Kubernetes sets it only where there is an external frontend (NodePort, LoadBalancer)
    ...(s.type === 'NodePort' || s.externalTrafficPolicy ? { externalTrafficPolicy: s.externalTrafficPolicy ?? 'Cluster' } : {}),
  };
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: s.name, namespace: s.namespace ?? SERVICE_NAMESPACE, creationTimestamp: s.createdAt },
    spec: spec as RawService['spec'],
  };
}

export interface EndpointPod {
  name: string;
  ip: string;
  /** the node name the pod's agent runs with (--node-name), which the proxy compares with its own */
  node: string;
}

/** The service's one EndpointSlice: every pod ready, ports named as the service's, at the target port. */
export function buildSlice(service: { name: string; namespace?: string; ports: ServicePortSpec[] }, pods: EndpointPod[]): RawEndpointSlice & Record<string, unknown> {
  const ns = service.namespace ?? SERVICE_NAMESPACE;
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: service.name, namespace: ns, labels: { [SERVICE_NAME_LABEL]: service.name, [MANAGED_BY_LABEL]: MANAGED_BY } },
    addressType: 'IPv4',
    endpoints: [...pods]
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((p) => ({
        addresses: [p.ip],
        conditions: { ready: true, serving: true, terminating: false },
        nodeName: p.node,
        targetRef: { kind: 'Pod', namespace: ns, name: p.name },
      })),
    ports: service.ports.map((p) => ({ name: p.name, port: p.targetPort, protocol: p.protocol })),
  };
}

export function storeKeys(name: string, namespace = SERVICE_NAMESPACE): { serviceKey: string; sliceKey: string } {
  return { serviceKey: serviceStoreKey(namespace, name), sliceKey: sliceStoreKey(namespace, name) };
}

/** The lab's service CIDR, checked: IPv4, room for at least one service besides .1. */
export function parseServiceCidr(v: string): string {
  const c = tryParseCidr(v);
  if (!c || c.family !== 4) throw new Error(`--service-cidr must be an IPv4 CIDR, not ${JSON.stringify(v)}`);
  if (c.prefix > 29) throw new Error(`--service-cidr ${v} is too small (a /29 at most)`);
  if (c.prefix < 8) throw new Error(`--service-cidr ${v} is too large (a /8 at least)`);
  return formatCidr(masked(c));
}

/**
 * The lowest free cluster IP of the CIDR: not the network address, not .1 (reserved, as the
 * `kubernetes` service's address is in a cluster), not the broadcast address, not in `used`.
 */
export function allocateClusterIP(serviceCidr: string, used: Iterable<string>): string {
  const c = tryParseCidr(serviceCidr);
  if (!c || c.family !== 4) throw new Error(`service CIDR ${JSON.stringify(serviceCidr)} is not an IPv4 CIDR`);
  const taken = new Set([...used].map((u) => canonicalIP(u) ?? u));
  const last = broadcast(c).value - 1n;
  for (let a = add(network(c), 2); a.value <= last; a = add(a, 1)) {
    const s = formatIP(a);
    if (!taken.has(s)) return s;
  }
  throw new Error(`no free cluster IP left in ${serviceCidr} (${taken.size} in use)`);
}

/** An explicitly requested cluster IP: inside the CIDR, not reserved, not in use. */
export function checkClusterIP(serviceCidr: string, want: string, used: Iterable<string>): string {
  const c = tryParseCidr(serviceCidr)!;
  const a = tryParseIP(want);
  if (!a || a.family !== 4) throw new Error(`--cluster-ip ${JSON.stringify(want)} is not an IPv4 address`);
  if (!contains(c, a)) throw new Error(`--cluster-ip ${want} is outside the lab's service CIDR ${serviceCidr}`);
  if (a.value - network(c).value < 2n || a.value === broadcast(c).value) throw new Error(`--cluster-ip ${want} is reserved in ${serviceCidr} (network, .1 or broadcast)`);
  const ip = formatIP(a);
  if ([...used].some((u) => (canonicalIP(u) ?? u) === ip)) throw new Error(`--cluster-ip ${ip} is in use by another service`);
  return ip;
}

/** The lowest NodePort of the range not in `used`. */
export function allocateNodePort(used: Iterable<number>, range: [number, number] = NODE_PORT_RANGE): number {
  const taken = new Set(used);
  for (let p = range[0]; p <= range[1]; p++) if (!taken.has(p)) return p;
  throw new Error(`no free NodePort left in ${range[0]}-${range[1]}`);
}

/** Cluster IPs (clusterIP and clusterIPs) of stored services. */
export function usedClusterIPs(services: RawService[]): string[] {
  const out: string[] = [];
  for (const s of services) {
    const spec = s?.spec;
    if (!spec) continue;
    for (const v of [spec.clusterIP, ...(Array.isArray(spec.clusterIPs) ? spec.clusterIPs : [])]) if (typeof v === 'string' && v !== 'None' && v) out.push(v);
  }
  return [...new Set(out)];
}

/** NodePorts of stored services. */
export function usedNodePorts(services: RawService[]): number[] {
  const out = new Set<number>();
  for (const s of services) {
    const ports = s?.spec?.ports;
    if (!Array.isArray(ports)) continue;
    for (const p of ports) {
      const n = (p as { nodePort?: unknown })?.nodePort;
      if (typeof n === 'number') out.add(n);
    }
  }
  return [...out];
}

/** The node facts normalize() needs to judge a service on its own (no node in particular). */
export function validationNode(clusterCidrs: string[]): ProxyNode {
  return { name: '', nodeIPs: [], clusterCIDRs: clusterCidrs, nodePortRange: NODE_PORT_RANGE };
}

/** normalize()'s field → the option that sets it, for the error message. */
export function optionForField(field: string): string | undefined {
  if (/^spec\.ports\[\d+\]\.port$/.test(field)) return '--port';
  if (/^spec\.ports\[\d+\]\.targetPort$/.test(field)) return '--target';
  // the EndpointSlice's port is the service's target port
  if (/^ports\[\d+\]\.port$/.test(field)) return '--target';
  if (/^spec\.ports\[\d+\]\.nodePort$/.test(field)) return '--node-port';
  if (/^spec\.ports\[\d+\]\.protocol$/.test(field)) return '--port';
  if (field.startsWith('spec.sessionAffinityConfig')) return '--affinity-timeout';
  if (field === 'spec.sessionAffinity') return '--affinity';
  if (field === 'spec.externalTrafficPolicy') return '--external-traffic-policy';
  if (field === 'spec.internalTrafficPolicy') return '--internal-traffic-policy';
  if (field.startsWith('spec.clusterIP')) return '--cluster-ip';
  if (field === 'spec.type') return '--type';
  if (field === 'metadata.name') return 'NAME';
  return undefined;
}

export function problemLine(p: ServiceProblem): string {
  const opt = optionForField(p.field);
  return `${problemText(p)}${opt ? ` (${opt})` : ''}`;
}

/**
 * What the proxy would say about this service and its slice, next to the services already in
 * the store (the ones there keep the frontends they hold). Empty: valid.
 */
export function validateService(service: RawService, slice: RawEndpointSlice, existing: RawService[], clusterCidrs: string[]): ServiceProblem[] {
  const node = validationNode(clusterCidrs);
  const key = serviceKey(service);
  const others = existing.filter((x) => serviceKey(x) !== key);
  const prior = frontendOwners(normalize({ services: others, endpointSlices: [] }, node));
  const model = normalize({ services: [...others, service], endpointSlices: [slice] }, node, { priorOwners: prior });
  return model.problems.filter((p) => p.service === key || p.service.startsWith(`${key} (EndpointSlice `));
}

export interface ServiceView {
  name: string;
  namespace: string;
  type: string;
  clusterIP: string;
  ports: { name: string; protocol: string; port: number; targetPort: number | string; nodePort?: number }[];
  /** the first port's NodePort (the common one-port case) */
  nodePort?: number;
  /** pod names (an address when no lab pod has it) */
  endpoints: string[];
  addresses: { ip: string; pod?: string; node?: string; ready: boolean }[];
  affinity: string;
  affinityTimeoutSeconds?: number;
  externalTrafficPolicy: string;
  internalTrafficPolicy: string;
  /** written by the lab (false: some other writer put it in the store) */
  lab: boolean;
  /** what the proxy would reject in it */
  problems: string[];
}

const asStr = (v: unknown, d = ''): string => (typeof v === 'string' ? v : d);

/** Services (and their slices) as the proxy would read them, for `service ls` and `status`. */
export function serviceViews(services: RawService[], slices: RawEndpointSlice[], podByIp: ReadonlyMap<string, string>, clusterCidrs: string[]): ServiceView[] {
  const model = normalize({ services, endpointSlices: slices }, validationNode(clusterCidrs));
  const views: ServiceView[] = [];
  for (const s of services) {
    const key = serviceKey(s);
    const [ns, name] = key.split('/');
    const spec = (s.spec ?? {}) as NonNullable<RawService['spec']>;
    const mySlices = slices.filter((sl) => asStr(sl.metadata?.labels?.[SERVICE_NAME_LABEL]) === name && (asStr(sl.metadata?.namespace) || SERVICE_NAMESPACE) === ns);
    const addresses: ServiceView['addresses'] = [];
    for (const sl of mySlices) {
      for (const ep of Array.isArray(sl.endpoints) ? (sl.endpoints as Record<string, unknown>[]) : []) {
        const ready = (ep?.conditions as { ready?: unknown } | undefined)?.ready !== false;
        const ref = asStr((ep?.targetRef as { name?: unknown } | undefined)?.name) || undefined;
        for (const a of Array.isArray(ep?.addresses) ? ep.addresses : []) {
          if (typeof a !== 'string') continue;
          addresses.push({ ip: a, pod: ref ?? podByIp.get(a), node: asStr(ep.nodeName) || undefined, ready });
        }
      }
    }
    const ports = (Array.isArray(spec.ports) ? (spec.ports as Record<string, unknown>[]) : []).map((p) => ({
      name: asStr(p?.name),
      protocol: asStr(p?.protocol, 'TCP'),
      port: Number(p?.port),
      targetPort: (typeof p?.targetPort === 'number' || typeof p?.targetPort === 'string' ? p.targetPort : Number(p?.port)) as number | string,
      ...(typeof p?.nodePort === 'number' ? { nodePort: p.nodePort } : {}),
    }));
    const affinity = asStr(spec.sessionAffinity, 'None');
    const timeout = spec.sessionAffinityConfig?.clientIP?.timeoutSeconds;
    const sliceLabels = mySlices.map((sl) => asStr(sl.metadata?.labels?.[MANAGED_BY_LABEL]));
    views.push({
      name: ns === SERVICE_NAMESPACE ? name : key,
      namespace: ns,
      type: asStr(spec.type, 'ClusterIP'),
      clusterIP: asStr(spec.clusterIP) || (Array.isArray(spec.clusterIPs) ? asStr(spec.clusterIPs[0]) : ''),
      ports,
      ...(ports[0]?.nodePort !== undefined ? { nodePort: ports[0].nodePort } : {}),
      endpoints: addresses.filter((a) => a.ready).map((a) => a.pod ?? a.ip),
      addresses,
      affinity,
      ...(affinity === 'ClientIP' ? { affinityTimeoutSeconds: typeof timeout === 'number' ? timeout : 10800 } : {}),
      externalTrafficPolicy: asStr(spec.externalTrafficPolicy, 'Cluster'),
      internalTrafficPolicy: asStr(spec.internalTrafficPolicy, 'Cluster'),
      lab: sliceLabels.length > 0 && sliceLabels.every((l) => l === MANAGED_BY),
      problems: model.problems.filter((p) => p.service === key || p.service.startsWith(`${key} (EndpointSlice `)).map((p) => problemLine(p)),
    });
  }
  return views.sort((a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name));
}

/** "80/TCP→8080" (NodePort: "80:30001/TCP→8080", as kubectl writes port:nodePort). */
export function portText(p: ServiceView['ports'][number]): string {
  return `${p.port}${p.nodePort !== undefined ? `:${p.nodePort}` : ''}/${p.protocol}→${p.targetPort}`;
}

export function renderServices(views: ServiceView[]): string {
  if (views.length === 0) return '  (none)';
  const rows = [['SERVICE', 'TYPE', 'CLUSTER IP', 'PORTS', 'NODE PORT', 'ENDPOINTS', 'AFFINITY', 'POLICIES']];
  for (const v of views) {
    const pol = [v.internalTrafficPolicy === 'Local' ? 'internal Local' : '', v.externalTrafficPolicy === 'Local' ? 'external Local' : ''].filter(Boolean).join(', ');
    rows.push([
      v.name,
      v.type,
      v.clusterIP || '-',
      v.ports.map(portText).join(', '),
      v.ports.some((p) => p.nodePort !== undefined) ? v.ports.map((p) => (p.nodePort !== undefined ? String(p.nodePort) : '-')).join(', ') : '-',
      v.endpoints.length > 0 ? v.endpoints.join(', ') : '(none)',
      v.affinity === 'ClientIP' ? `ClientIP ${v.affinityTimeoutSeconds}s` : 'None',
      pol || '-',
    ]);
  }
  const out = [table(rows)];
  for (const v of views) for (const p of v.problems) out.push(`  ! ${p}`);
  return out.join('\n');
}
