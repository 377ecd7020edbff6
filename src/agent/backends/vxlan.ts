// VXLAN backend: pod traffic to another node is routed into podnet's own vxlan device and
// encapsulated in UDP to that node's public IP.
//
// Design (flannel's vxlan backend, "DirectRouting" off, without its L2-miss daemon):
//   - One device per node, podnet.<VNI> (≤ 15 chars: "podnet." + at most 8 digits), created with
//     `nolearning`: the kernel never learns remote MACs from received packets. All forwarding state
//     is programmed from the leases, so a stale or spoofed packet cannot redirect traffic.
//   - The device holds the first address of the own subnet as /32 (10.244.1.0/32, flannel's choice),
//     and of the own IPv6 subnet as /128, so that it has a source address and can answer for it.
//   - Per peer, three objects (flannel#533/#1330/#1788 are all about one of them going stale):
//       route  <peer subnet> via <peer VTEP addr> dev podnet.<VNI> onlink   (proto 80, see types.ts)
//       neigh  <peer VTEP addr> lladdr <peer VtepMAC> dev podnet.<VNI> nud permanent
//       fdb    <peer VtepMAC> dev podnet.<VNI> dst <peer public IP> self permanent
//     where the peer's VTEP addr is its subnet's network address. `onlink` because that address is
//     not in any connected prefix of the device (it only has a /32). The permanent neighbour means
//     no ARP ever crosses the tunnel; the FDB entry tells the device which underlay IP has the MAC.
//   - IPv6 pod subnets (dual-stack) are carried over the SAME device and underlay: one more route and
//     neighbour per peer (its IPv6 subnet's network address → the same VtepMAC), no second FDB entry.
//     flannel creates a second device (flannel-v6.1) for an IPv6 underlay; podnet's underlay family is
//     the family of the own lease's publicIP, and peers must use the same family (checked per peer).
//   - MTU: device MTU = underlay MTU − 50 (IPv4 underlay: 20 IP + 8 UDP + 8 VXLAN + 14 inner Ethernet)
//     or − 70 (IPv6 underlay: 40-byte header). Pods must use that MTU (flannel#463); the planner
//     returns it from ensureDevice so the agent can hand it to the CNI config.
//   - Adoption: ensureDevice accepts an existing podnet.<VNI> when VNI, local IP, dstport, the
//     underlay dev and nolearning match; MTU, up-state, MAC (if pinned) and addresses are fixed in
//     place. Anything else recreates it, with the reason logged. Keeping the device (and so its MAC)
//     across agent restarts means peers do not have to re-learn a new VtepMAC on every restart.
//   - Checksum offload: the "63-second delay" (kubernetes#88986, flannel#1279) was a kernel bug fixed
//     in 5.7 (ea64d8d6c675); podnet requires a newer kernel and does not turn offloads off.
import type { KernelOp, Link } from '../../kernel/types.js';
import type { NodeLease } from '../lease.js';
import { canonicalIP, formatIP, tryParseIP } from '../../util/ip.js';
import { canonCidr, diffRoutes, peerError, peerName, detailedLink, planDeviceAddresses, subnetAddr, validatePeers, type DesiredRoute } from './common.js';
import { DEFAULT_VNI, DEFAULT_VXLAN_PORT, PODNET_RTPROTO_STR, type ActualState, type Backend, type DeviceContext, type DeviceResult, type PeerError, type PeerPlan } from './types.js';

export interface VxlanConfig {
  /** the underlay interface the tunnel runs over (the one holding the node's public IP) */
  iface: string;
  vni?: number;
  /** UDP port, default 8472 */
  dstport?: number;
  /** pins the device's MAC (VtepMAC); by default the kernel picks one at creation and podnet keeps it */
  vtepMAC?: string;
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

export function vxlanDeviceName(vni: number): string {
  return `podnet.${vni}`;
}

/** The VTEP address of a subnet: its network address (10.244.2.0/24 → 10.244.2.0). */
export function vtepAddr(subnet: string): string {
  return subnetAddr(subnet);
}

function normMac(m: unknown): string | undefined {
  if (typeof m !== 'string') return undefined;
  const l = m.toLowerCase();
  return MAC_RE.test(l) ? l : undefined;
}

export class VxlanBackend implements Backend {
  readonly type = 'vxlan' as const;
  readonly device: string;
  readonly iface: string;
  readonly vni: number;
  readonly dstport: number;
  private readonly vtepMAC?: string;

  constructor(cfg: VxlanConfig) {
    this.vni = cfg.vni ?? DEFAULT_VNI;
    this.dstport = cfg.dstport ?? DEFAULT_VXLAN_PORT;
    if (!Number.isInteger(this.vni) || this.vni < 1 || this.vni > 0xffffff) throw new RangeError(`vxlan: VNI ${cfg.vni} must be an integer in 1..16777215`);
    if (!Number.isInteger(this.dstport) || this.dstport < 1 || this.dstport > 65535) throw new RangeError(`vxlan: dstport ${cfg.dstport} must be in 1..65535`);
    if (cfg.vtepMAC !== undefined && !normMac(cfg.vtepMAC)) throw new TypeError(`vxlan: vtepMAC ${JSON.stringify(cfg.vtepMAC)} is not a MAC address`);
    this.iface = cfg.iface;
    this.device = vxlanDeviceName(this.vni);
    if (cfg.vtepMAC) this.vtepMAC = normMac(cfg.vtepMAC);
  }

  mtuOverhead(underlayV6: boolean): number {
    return underlayV6 ? 70 : 50;
  }

  /** Why an existing link cannot be adopted as the device; [] when it can. Pure, exported for tests. */
  incompatibilities(l: Link, localIP: string): string[] {
    if (l.kind !== 'vxlan') return [`${l.name} is a ${l.kind ?? 'non-vxlan'} link, not vxlan`];
    const i = l.info ?? {};
    const why: string[] = [];
    if (i.id !== this.vni) why.push(`VNI ${String(i.id)} ≠ ${this.vni}`);
    const local = typeof i.local === 'string' ? canonicalIP(i.local) : typeof i.local6 === 'string' ? canonicalIP(i.local6) : undefined;
    if (local !== canonicalIP(localIP)) why.push(`local ${local ?? 'unset'} ≠ ${localIP}`);
    if (i.port !== this.dstport) why.push(`dstport ${String(i.port)} ≠ ${this.dstport}`);
    if (i.learning !== false) why.push('learning is on (podnet needs nolearning)');
    if (i.link !== this.iface) why.push(`underlay dev ${String(i.link ?? 'unset')} ≠ ${this.iface}`);
    return why;
  }

  async ensureDevice(ctx: DeviceContext): Promise<DeviceResult> {
    const { kernel, ns, own } = ctx;
    const pub = tryParseIP(own.publicIP);
    if (!pub) throw new TypeError(`vxlan: own public IP ${JSON.stringify(own.publicIP)} is not an IP address`);
    const under = await kernel.link(ns, this.iface);
    if (!under) throw new Error(`vxlan: underlay interface ${this.iface} does not exist`);
    const mtu = under.mtu - this.mtuOverhead(pub.family === 6);
    const localIP = formatIP(pub);
    const reasons: string[] = [];
    const ops: KernelOp[] = [];
    let action: DeviceResult['action'];
    const existing = await detailedLink(kernel, ns, this.device, 'vxlan');
    const why = existing ? this.incompatibilities(existing, localIP) : [];
    if (existing && why.length === 0) {
      action = 'adopted';
      if (existing.mtu !== mtu) {
        reasons.push(`MTU ${existing.mtu} → ${mtu}`);
        ops.push({ op: 'link-set', name: this.device, mtu });
      }
      if (this.vtepMAC && existing.mac.toLowerCase() !== this.vtepMAC) {
        reasons.push(`MAC ${existing.mac} → ${this.vtepMAC}`);
        ops.push({ op: 'link-set', name: this.device, mac: this.vtepMAC });
      }
    } else {
      action = existing ? 'recreated' : 'created';
      if (existing) {
        reasons.push(...why);
        ctx.log?.warn('vxlan device incompatible, recreating it', { device: this.device, reasons: why });
        ops.push({ op: 'link-del', name: this.device, ignoreMissing: true });
      }
      ops.push({
        op: 'link-add',
        spec: { kind: 'vxlan', name: this.device, vni: this.vni, dstport: this.dstport, local: localIP, dev: this.iface, learning: false, mtu, ...(this.vtepMAC ? { mac: this.vtepMAC } : {}) },
      });
    }
    if (!existing || why.length > 0 || !existing.up) ops.push({ op: 'link-set', name: this.device, up: true });
    if (existing && why.length === 0 && !existing.up) reasons.push('was down');

    // addresses: exactly the VTEP /32 (and /128)
    await planDeviceAddresses(kernel, ns, this.device, own, !!existing && why.length === 0, action === 'adopted', ops, reasons);
    if (action === 'adopted' && ops.length === 0) action = 'none';
    if (ops.length) await kernel.apply(ns, ops);
    const l = await kernel.link(ns, this.device);
    if (!l) throw new Error(`vxlan: ${this.device} vanished right after it was set up`);
    if (action !== 'none') ctx.log?.info(`vxlan device ${action}`, { device: this.device, ifindex: l.index, mac: l.mac, mtu, reasons });
    return { backendData: { VtepMAC: l.mac.toLowerCase(), VNI: this.vni }, mtu, device: this.device, ifindex: l.index, action, reasons };
  }

  planPeers(own: NodeLease, peers: NodeLease[], actual: ActualState): PeerPlan {
    const errors: PeerError[] = [];
    const ownPub = tryParseIP(own.publicIP);
    const ownMac = normMac(own.backendData?.VtepMAC);
    const macOwner = new Map<string, NodeLease>();
    const ok: { p: NodeLease; mac: string; v4: string; v6?: string }[] = [];
    for (const { lease: p, v6 } of validatePeers(own, peers, errors)) {
      const mac = normMac(p.backendData?.VtepMAC);
      if (!mac) {
        errors.push(peerError(p, `peer ${peerName(p)}: lease has no valid VtepMAC (${JSON.stringify(p.backendData?.VtepMAC)}): skipped until it has`));
        continue;
      }
      if (p.backendData?.VNI !== undefined && p.backendData.VNI !== this.vni) {
        errors.push(peerError(p, `peer ${peerName(p)}: VNI ${p.backendData.VNI} ≠ this node's ${this.vni}: skipped`));
        continue;
      }
      const pub = tryParseIP(p.publicIP)!;
      if (ownPub && pub.family !== ownPub.family) {
        errors.push(peerError(p, `peer ${peerName(p)}: underlay is IPv${pub.family}, this node's is IPv${ownPub.family}: skipped`));
        continue;
      }
      const other = macOwner.get(mac);
      if (mac === ownMac || other) {
        errors.push(peerError(p, `peer ${peerName(p)}: VtepMAC ${mac} is also ${other ? `that of ${peerName(other)}` : "this node's own"}: skipped`));
        continue;
      }
      macOwner.set(mac, p);
      ok.push({ p, mac, v4: canonCidr(p.subnet)!, ...(v6 && own.ipv6Subnet ? { v6: canonCidr(p.ipv6Subnet)! } : {}) });
    }

    const desiredRoutes: DesiredRoute[] = [];
    for (const { p, v4, v6 } of ok) {
      desiredRoutes.push({ peer: p, spec: { dst: v4, gateway: vtepAddr(v4), dev: this.device, onlink: true, proto: PODNET_RTPROTO_STR } });
      if (v6) desiredRoutes.push({ peer: p, spec: { dst: v6, gateway: vtepAddr(v6), dev: this.device, onlink: true, proto: PODNET_RTPROTO_STR } });
    }
    const { dels: routeDels, adds: routeAdds, refused } = diffRoutes(desiredRoutes, actual.routes, errors);
    const live = ok.filter((x) => !refused.has(x.p));

    // neighbours: only PERMANENT ones on the device are podnet's
    const wantNeigh = new Map<string, string>();
    for (const { mac, v4, v6 } of live) {
      wantNeigh.set(vtepAddr(v4), mac);
      if (v6) wantNeigh.set(vtepAddr(v6), mac);
    }
    const neighDels: KernelOp[] = [];
    const neighAdds: KernelOp[] = [];
    const haveNeigh = new Map<string, { mac?: string; permanent: boolean }>();
    for (const n of actual.neighbours) {
      if (n.dev && n.dev !== this.device) continue;
      const dst = canonicalIP(n.dst);
      if (!dst) continue;
      const permanent = n.state.includes('PERMANENT');
      haveNeigh.set(dst, { mac: normMac(n.lladdr), permanent });
      if (permanent && !wantNeigh.has(dst)) neighDels.push({ op: 'neigh-del', dev: this.device, dst, ignoreMissing: true });
    }
    for (const [dst, mac] of wantNeigh) {
      const h = haveNeigh.get(dst);
      if (!h || !h.permanent || h.mac !== mac) neighAdds.push({ op: 'neigh-replace', dev: this.device, dst, lladdr: mac });
    }

    // FDB: entries with a remote (dst) are podnet's; address-list entries (no dst) are the kernel's
    const wantFdb = new Map<string, { mac: string; dst: string }>();
    for (const { p, mac } of live) {
      const dst = canonicalIP(p.publicIP)!;
      wantFdb.set(`${mac}|${dst}`, { mac, dst });
    }
    const fdbDels: KernelOp[] = [];
    const haveFdb = new Set<string>();
    for (const e of actual.fdb) {
      if (e.dev && e.dev !== this.device) continue;
      if (!e.dst) continue;
      const mac = normMac(e.mac);
      const dst = canonicalIP(e.dst);
      if (!mac || !dst) continue;
      const k = `${mac}|${dst}`;
      haveFdb.add(k);
      if (!wantFdb.has(k)) fdbDels.push({ op: 'fdb-del', dev: this.device, mac, dst, ignoreMissing: true });
    }
    const fdbAdds: KernelOp[] = [];
    for (const [k, { mac, dst }] of wantFdb) if (!haveFdb.has(k)) fdbAdds.push({ op: 'fdb-replace', dev: this.device, mac, dst, self: true, permanent: true });

    // Removals first (a changed VtepMAC's old entries go before the new ones come), then the
    // forwarding state, routes last so traffic is only steered once neighbour and FDB are in place.
    // Grouped by tool: at most three batch runs (ip, bridge, ip).
    return { ops: [...routeDels, ...neighDels, ...fdbDels, ...fdbAdds, ...neighAdds, ...routeAdds], errors };
  }
}
