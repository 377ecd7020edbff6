// The service model podnet's proxy consumes: the fields of Kubernetes v1 Services and
// discovery/v1 EndpointSlices that a proxy needs, as the user writes them (raw, unvalidated), and
// the normalized form both engines render (one ServicePort per service port and IP family).
import type { Family } from '../util/ip.js';

export type Protocol = 'tcp' | 'udp' | 'sctp';

/** A v1 Service as written (only the fields podnet uses; anything else is ignored). */
export interface RawService {
  kind?: string;
  metadata?: { name?: unknown; namespace?: unknown; creationTimestamp?: unknown };
  spec?: {
    type?: unknown;
    clusterIP?: unknown;
    clusterIPs?: unknown;
    ports?: unknown;
    externalIPs?: unknown;
    sessionAffinity?: unknown;
    sessionAffinityConfig?: { clientIP?: { timeoutSeconds?: unknown } };
    externalTrafficPolicy?: unknown;
    internalTrafficPolicy?: unknown;
  };
}

/** A discovery/v1 EndpointSlice as written. */
export interface RawEndpointSlice {
  kind?: string;
  metadata?: { name?: unknown; namespace?: unknown; labels?: Record<string, unknown> };
  addressType?: unknown;
  endpoints?: unknown;
  ports?: unknown;
}

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

/** Everything the proxy is told: services and their endpoint slices. */
export interface ServiceState {
  services: RawService[];
  endpointSlices: RawEndpointSlice[];
}

/** Node facts the proxy renders with. */
export interface ProxyNode {
  name: string;
  /** addresses NodePorts answer on (the node's own, not loopback) */
  nodeIPs: string[];
  /** the cluster's pod networks: traffic from outside them to a cluster IP is masqueraded */
  clusterCIDRs: string[];
  /** inclusive NodePort range, default 30000-32767 */
  nodePortRange: [number, number];
}

export interface Endpoint {
  ip: string;
  port: number;
  nodeName?: string;
  /** on this node */
  local: boolean;
}

/** One port of one service in one IP family: the unit both engines render. */
export interface ServicePort {
  /** "namespace/name:portName" (portName is the port number when the port is unnamed) */
  id: string;
  /** "namespace/name" */
  service: string;
  portName: string;
  family: Family;
  protocol: Protocol;
  port: number;
  clusterIPs: string[];
  externalIPs: string[];
  nodePort?: number;
  /** ClientIP affinity timeout in seconds; undefined for sessionAffinity None */
  affinitySeconds?: number;
  internalLocal: boolean;
  externalLocal: boolean;
  /** usable endpoints (ready; or serving+terminating when none is ready), sorted */
  endpoints: Endpoint[];
}

/** A rejected service (or endpoint) with the field at fault. */
export interface ServiceProblem {
  /** "namespace/name" (or the slice's name for endpoint problems) */
  service: string;
  field: string;
  message: string;
}

export function problemText(p: ServiceProblem): string {
  return `service ${p.service}: ${p.field}: ${p.message}`;
}

/** The normalized model: what the engines render, plus what was rejected and why. */
export interface ProxyModel {
  ports: ServicePort[];
  problems: ServiceProblem[];
}

export function familyTag(f: Family): '4' | '6' {
  return f === 4 ? '4' : '6';
}
