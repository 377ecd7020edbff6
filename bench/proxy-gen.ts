// Synthetic services for the proxy benchmark: service i has cluster IP 10.96.x.y, port 80/TCP,
// and two endpoints 10.1.x.y and 10.2.x.y on port 8080 (x.y derived from i). Replacement endpoints
// (the "one endpoint changed" step) come from 10.3.0.0/16. Everything the benchmark's netns route to
// the endpoint namespace is inside 10.1.0.0/16, 10.2.0.0/16 and 10.3.0.0/16.
import type { ProxyNode, RawEndpointSlice, RawService, ServiceState } from '../src/proxy/model.js';

export const NAMESPACE = 'bench';
export const SERVICE_PORT = 80;
export const TARGET_PORT = 8080;
export const SERVICE_CIDR = '10.96.0.0/12';
export const CLUSTER_CIDR = '10.0.0.0/14';
export const MASQ_MARK = '0x4000';

export const NODE: ProxyNode = {
  name: 'bench-node',
  nodeIPs: ['192.168.77.1'],
  clusterCIDRs: [CLUSTER_CIDR],
  nodePortRange: [30000, 32767],
};

function hostPart(i: number): string {
  // i + 1 so that no address ends in .0.0; 65,000 services at most
  const n = i + 1;
  if (n > 65000) throw new Error(`service index ${i} out of range`);
  return `${n >> 8}.${n & 255}`;
}

export function svcName(i: number): string {
  return `svc-${String(i).padStart(5, '0')}`;
}
export function clusterIP(i: number): string {
  return `10.96.${hostPart(i)}`;
}
/** The two endpoints of service i (sorted, as normalize() sorts them). */
export function endpointIPs(i: number): [string, string] {
  return [`10.1.${hostPart(i)}`, `10.2.${hostPart(i)}`];
}
/** The k-th replacement endpoint (distinct for every k). */
export function replacementIP(k: number): string {
  return `10.3.${hostPart(k)}`;
}

export function rawService(i: number): RawService {
  return {
    kind: 'Service',
    metadata: { name: svcName(i), namespace: NAMESPACE },
    spec: { type: 'ClusterIP', clusterIP: clusterIP(i), ports: [{ port: SERVICE_PORT, protocol: 'TCP', targetPort: TARGET_PORT }] },
  };
}

export function rawSlice(i: number, ips: string[] = endpointIPs(i)): RawEndpointSlice {
  return {
    kind: 'EndpointSlice',
    metadata: { name: `${svcName(i)}-x7k2p`, namespace: NAMESPACE, labels: { 'kubernetes.io/service-name': svcName(i) } },
    addressType: 'IPv4',
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true }, nodeName: 'bench-peer' })),
    ports: [{ name: '', port: TARGET_PORT, protocol: 'TCP' }],
  };
}

/** Services 0..n-1 with their slices. */
export function makeState(n: number): ServiceState {
  const services: RawService[] = [];
  const endpointSlices: RawEndpointSlice[] = [];
  for (let i = 0; i < n; i++) {
    services.push(rawService(i));
    endpointSlices.push(rawSlice(i));
  }
  return { services, endpointSlices };
}

/** A plain description of one service, for the hand-rendered kube-proxy layouts. */
export interface BenchService {
  /** "bench/svc-00001" (kube-proxy's ServicePortName string of an unnamed port) */
  name: string;
  clusterIP: string;
  port: number;
  endpoints: string[];
}

export function benchService(i: number, endpoints: string[] = endpointIPs(i)): BenchService {
  return { name: `${NAMESPACE}/${svcName(i)}`, clusterIP: clusterIP(i), port: SERVICE_PORT, endpoints };
}
