// bgp backend: no encapsulation; the node's pod subnets are announced over BGP to a router (or a
// route reflector), which routes pod traffic between racks. Design (Calico's and kube-router's):
//   - the speaker (../bgp/speaker.ts) announces the own subnets with the node's underlay address as
//     next hop, and learns its peers' routes;
//   - of the learned best paths, those inside the cluster networks whose next hop is on the
//     underlay's own segment are installed (proto 80, like every cross-node backend's route), so
//     nodes of one rack talk directly; the rest of the pod traffic follows the node's default route
//     to the router, which has every node's subnet;
//   - after a start the speaker waits for its peers' End-of-RIB before routes are removed
//     (RFC 4724 selection deferral): a restarted agent keeps forwarding with the routes it finds.
// The leases are not the source of these routes; the routers are.
import type { NodeLease } from '../lease.js';
import { contains, masked, overlaps, tryParseCidr, tryParseIP, type Cidr } from '../../util/ip.js';
import type { BgpSpeaker } from '../bgp/speaker.js';

/** What the plan reads of the speaker: the agent's live one, or `podnet status`'s copy of its status. */
export type RouteSource = Pick<BgpSpeaker, 'bestRoutes' | 'converged' | 'setAccepted'>;
import { canonCidr, diffRoutes, isPodnetRoute, type DesiredRoute } from './common.js';
import { PODNET_RTPROTO_STR, type ActualState, type Backend, type DeviceContext, type DeviceResult, type PeerError, type PeerPlan } from './types.js';

export interface BgpBackendConfig {
  iface: string;
  /** the cluster's pod networks (v4, and v6 when dual-stack): only routes inside them are installed */
  clusterNetworks: string[];
}

export class BgpBackend implements Backend {
  readonly type = 'bgp' as const;
  readonly device = undefined;
  readonly iface: string;
  private readonly clusterNets: Cidr[];
  private speaker?: RouteSource;

  constructor(cfg: BgpBackendConfig) {
    this.iface = cfg.iface;
    this.clusterNets = cfg.clusterNetworks.map((c) => tryParseCidr(c)).filter((c): c is Cidr => !!c);
  }

  /** The speaker whose routes this backend installs (set once it runs). */
  useSpeaker(s: RouteSource): void {
    this.speaker = s;
  }

  mtuOverhead(_underlayV6: boolean): number {
    return 0;
  }

  async ensureDevice(ctx: DeviceContext): Promise<DeviceResult> {
    const l = await ctx.kernel.link(ctx.ns, this.iface);
    if (!l) throw new Error(`bgp: underlay interface ${this.iface} does not exist`);
    return { backendData: {}, mtu: l.mtu, action: 'none', reasons: [] };
  }

  planPeers(own: NodeLease, _peers: NodeLease[], actual: ActualState): PeerPlan {
    const errors: PeerError[] = [];
    const connected: Cidr[] = [];
    const ownAddrs = new Set<string>();
    for (const a of actual.ifaceAddresses) {
      if (a.ifname && a.ifname !== this.iface) continue;
      const c = tryParseCidr(`${a.address}/${a.prefixLen}`);
      if (c) connected.push(masked(c));
      ownAddrs.add(a.address);
    }
    const ownNets = [own.subnet, own.ipv6Subnet].map((s) => (s ? tryParseCidr(s) : undefined)).filter((c): c is Cidr => !!c);
    const desired: DesiredRoute[] = [];
    const counted = new Map<DesiredRoute, string>();
    for (const r of this.speaker?.bestRoutes() ?? []) {
      const dst = tryParseCidr(r.prefix);
      const nh = tryParseIP(r.nextHop);
      if (!dst || !nh || nh.family !== dst.family) continue;
      // only pod subnets: inside a cluster network, not this node's own
      if (!this.clusterNets.some((n) => n.family === dst.family && n.prefix <= dst.prefix && overlaps(n, dst))) continue;
      if (ownNets.some((n) => overlaps(n, dst))) continue;
      // a next hop on this node's segment; anything further is the router's to route
      if (ownAddrs.has(r.nextHop) || !connected.some((c) => contains(c, nh))) continue;
      const peer: NodeLease = { subnet: canonCidr(r.prefix)!, publicIP: r.nextHop, backendType: 'bgp', backendData: {}, nodeName: `BGP peer ${r.peer}` };
      const d: DesiredRoute = { peer, label: `route ${r.prefix} via ${r.nextHop} (learned from BGP peer ${r.peer})`, spec: { dst: peer.subnet, gateway: r.nextHop, dev: this.iface, proto: PODNET_RTPROTO_STR } };
      desired.push(d);
      counted.set(d, r.peer);
    }
    // selection deferral: until the peers have sent everything, no podnet route goes
    if (!this.speaker?.converged()) {
      const have = new Set(desired.map((d) => d.spec.dst));
      for (const r of actual.routes) {
        if (!isPodnetRoute(r) || r.dst === 'default') continue;
        const k = canonCidr(r.dst) ?? r.dst;
        if (have.has(k)) continue;
        have.add(k);
        const peer: NodeLease = { subnet: k, publicIP: r.gateway ?? '', backendType: 'bgp', backendData: {} };
        desired.push({ peer, spec: { dst: k, family: r.family, ...(r.gateway ? { gateway: r.gateway } : {}), ...(r.dev ? { dev: r.dev } : {}), proto: PODNET_RTPROTO_STR } });
      }
    }
    const { dels, adds, refused } = diffRoutes(desired, actual.routes, errors);
    const byPeer = new Map<string, number>();
    for (const [d, p] of counted) if (!refused.has(d.peer)) byPeer.set(p, (byPeer.get(p) ?? 0) + 1);
    this.speaker?.setAccepted(byPeer);
    return { ops: [...dels, ...adds], errors };
  }
}
