// host-gw backend: no encapsulation; each peer's pod subnet is routed via the peer's public IP on the
// underlay interface. The peer node then forwards to its pod bridge.
//
// Design (flannel's host-gw backend):
//   - Per peer: route <peer subnet> via <peer public IP> dev <iface> (proto 80, see types.ts); for
//     dual-stack also <peer IPv6 subnet> via <peer public IPv6> when both leases carry them.
//   - It only works when every peer is a direct L2 neighbour: the next hop must be resolvable by ARP/ND
//     on the interface. A peer whose public IP is not inside one of the interface's connected subnets
//     is refused with an error naming it (flannel silently installs a route that then fails with
//     "Nexthop has invalid gateway" or, worse, goes to the default router, which drops pod traffic).
//     The reconciler reports the error and skips that peer; the others proceed.
//   - No device, no MTU overhead: pods use the underlay MTU.
import type { NodeLease } from '../lease.js';
import { contains, formatCidr, masked, tryParseCidr, tryParseIP, type Cidr } from '../../util/ip.js';
import { canonCidr, diffRoutes, peerError, peerName, validatePeers, type DesiredRoute } from './common.js';
import { PODNET_RTPROTO_STR, type ActualState, type Backend, type DeviceContext, type DeviceResult, type PeerError, type PeerPlan } from './types.js';

export interface HostGwConfig {
  /** the underlay interface all peers are directly reachable on */
  iface: string;
}

export class HostGwBackend implements Backend {
  readonly type = 'host-gw' as const;
  readonly device = undefined;
  readonly iface: string;

  constructor(cfg: HostGwConfig) {
    this.iface = cfg.iface;
  }

  mtuOverhead(_underlayV6: boolean): number {
    return 0;
  }

  /** Nothing to create; checks the interface exists and reports its MTU as the pod MTU. */
  async ensureDevice(ctx: DeviceContext): Promise<DeviceResult> {
    const l = await ctx.kernel.link(ctx.ns, this.iface);
    if (!l) throw new Error(`host-gw: underlay interface ${this.iface} does not exist`);
    return { backendData: {}, mtu: l.mtu, action: 'none', reasons: [] };
  }

  planPeers(own: NodeLease, peers: NodeLease[], actual: ActualState): PeerPlan {
    const errors: PeerError[] = [];
    const connected: Cidr[] = [];
    for (const a of actual.ifaceAddresses) {
      if (a.ifname && a.ifname !== this.iface) continue;
      const c = tryParseCidr(`${a.address}/${a.prefixLen}`);
      if (c) connected.push(masked(c));
    }
    const onLink = (ip: string): boolean => {
      const a = tryParseIP(ip);
      return !!a && connected.some((c) => contains(c, a));
    };
    const describeConnected = (fam: 4 | 6): string => connected.filter((c) => c.family === fam).map(formatCidr).join(', ') || 'none';

    const desired: DesiredRoute[] = [];
    for (const { lease: p, v6 } of validatePeers(own, peers, errors)) {
      if (tryParseIP(p.publicIP)?.family !== 4) {
        errors.push(peerError(p, `peer ${peerName(p)}: host-gw routes IPv4 pod subnets via an IPv4 public IP: skipped`));
        continue;
      }
      if (!onLink(p.publicIP)) {
        errors.push(
          peerError(
            p,
            `peer ${peerName(p)} is not on the same L2 segment: ${p.publicIP} is outside ${this.iface}'s connected subnets (${describeConnected(4)}); host-gw needs direct L2 reachability (use vxlan across routers): skipped`,
          ),
        );
        continue;
      }
      desired.push({ peer: p, spec: { dst: canonCidr(p.subnet)!, gateway: p.publicIP, dev: this.iface, proto: PODNET_RTPROTO_STR } });
      if (v6 && own.ipv6Subnet) {
        // the IPv4 route stands on its own: an IPv6 problem is reported without withdrawing it
        if (!p.publicIPv6 || tryParseIP(p.publicIPv6)?.family !== 6) {
          errors.push(peerError(p, `peer ${peerName(p)}: has an IPv6 subnet but no IPv6 public IP; its IPv6 subnet is not routed`));
        } else if (!onLink(p.publicIPv6)) {
          errors.push(peerError(p, `peer ${peerName(p)}: IPv6 public IP ${p.publicIPv6} is outside ${this.iface}'s connected subnets (${describeConnected(6)}); its IPv6 subnet is not routed`));
        } else {
          desired.push({ peer: p, spec: { dst: canonCidr(p.ipv6Subnet)!, gateway: p.publicIPv6, dev: this.iface, proto: PODNET_RTPROTO_STR } });
        }
      }
    }
    const { dels, adds } = diffRoutes(desired, actual.routes, errors);
    return { ops: [...dels, ...adds], errors };
  }
}
