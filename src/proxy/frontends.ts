// What a service port answers on and where it sends traffic, as both engines must agree:
// cluster IPs (internalTrafficPolicy), external IPs and the NodePort on each node IP
// (externalTrafficPolicy), with the masquerade policy each implies. Pure.
import type { Family } from '../util/ip.js';
import type { Endpoint, ProxyModel, ProxyNode, Protocol, ServicePort } from './model.js';

/** int: masquerade sources outside the cluster networks; all: always; none: keep the client's address */
export type Masq = 'int' | 'all' | 'none';

export function ipFamily(ip: string): Family {
  return ip.includes(':') ? 6 : 4;
}

/** One frontend of a service port and what it dispatches to. */
export interface Frontend {
  family: Family;
  ip: string;
  protocol: Protocol;
  port: number;
  endpoints: Endpoint[];
  masq: Masq;
  /** a NodePort frontend (node IP + nodePort) */
  nodePort: boolean;
  /** no endpoint at all: reject; endpoints only elsewhere (Local policy): drop */
  empty?: 'reject' | 'drop';
}

/** The frontends of one service port: its cluster IPs, external IPs and NodePort on each node IP. */
export function frontendsOf(p: ServicePort, node: ProxyNode): Frontend[] {
  const out: Frontend[] = [];
  const local = p.endpoints.filter((e) => e.local);
  const mk = (ip: string, port: number, isLocal: boolean, masq: Masq, nodePort = false): Frontend => {
    const eps = isLocal ? local : p.endpoints;
    const empty = p.endpoints.length === 0 ? 'reject' : eps.length === 0 ? 'drop' : undefined;
    return { family: p.family, ip, protocol: p.protocol, port, endpoints: eps, masq: isLocal && masq === 'all' ? 'none' : masq, nodePort, empty };
  };
  for (const ip of p.clusterIPs) out.push(mk(ip, p.port, p.internalLocal, 'int'));
  for (const ip of p.externalIPs) out.push(mk(ip, p.port, p.externalLocal, 'all'));
  if (p.nodePort !== undefined) {
    for (const ip of node.nodeIPs) {
      if (ipFamily(ip) === p.family) out.push(mk(ip, p.nodePort, p.externalLocal, 'all', true));
    }
  }
  return out;
}


/** Endpoints per frontend ("proto/ip/port" -> "ip/port"), NodePort frontends as "proto/nodeport/port". */
export function endpointsByFrontend(model: ProxyModel, node: ProxyNode): Map<string, Set<string>> {
  const m = new Map<string, Set<string>>();
  for (const p of model.ports) {
    for (const fe of frontendsOf(p, node)) {
      const key = fe.nodePort ? `${p.protocol}/nodeport/${fe.port}` : `${p.protocol}/${fe.ip}/${fe.port}`;
      const s = m.get(key) ?? new Set<string>();
      for (const e of fe.endpoints) s.add(`${e.ip}/${e.port}`);
      m.set(key, s);
    }
  }
  return m;
}
