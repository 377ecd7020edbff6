// The seam between the node agent and its cross-node datapath backends (vxlan, host-gw, tun).
//
// A backend is small and differs from the others only in its plan (flannel's pkg/backend layout):
// it owns one optional device (ensureDevice) and maps (own lease, peer leases, what podnet owns in the
// kernel now) to KernelOps (planPeers, pure). Reading the kernel, applying the plan, resyncing and
// reporting are shared code in reconciler.ts.
//
// Ownership: podnet recognises what it created, and touches nothing else.
//   - routes: by route protocol PODNET_RTPROTO (80). The kernel treats rtm_protocol as an opaque tag
//     for "who installed this"; 80 is not in the kernel's RTPROT_* list nor in iproute2's rt_protos
//     (0-4 kernel, 8-18 and 42/99/186-192 routing daemons), and 80 = 0x50 = 'P' is easy to remember.
//     `ip route show proto 80` lists exactly podnet's cross-node routes. This proto is reserved for the
//     cross-node backends: every proto-80 route in the main table belongs to them (other podnet parts
//     must not use it), so routes of peers that vanished while the agent was down are found by it.
//   - neighbours and FDB entries: by device. The vxlan device podnet.<VNI> is podnet's, so its
//     PERMANENT neighbours and its FDB entries that have a remote (dst) are podnet's. Neighbours of the
//     kernel's own making (REACHABLE, STALE, FAILED...) and the device's own address-list entries
//     (no dst) are left alone.
import type { KernelAdapter, KernelOp, Link, NetnsRef, Route, Neighbour, FdbEntry, Address } from '../../kernel/types.js';
import type { BackendData, BackendType, NodeLease } from '../lease.js';
import type { Logger } from '../../util/log.js';

/** rtm_protocol of every route podnet's cross-node backends install; see the note at the top. */
export const PODNET_RTPROTO = 80;
export const PODNET_RTPROTO_STR = String(PODNET_RTPROTO);

/** Default VXLAN UDP port: the Linux kernel's historical one, flannel's default (IANA's is 4789). */
export const DEFAULT_VXLAN_PORT = 8472;
export const DEFAULT_VNI = 1;
/** Default tun backend UDP port: flannel's UDP backend's (8285). */
export const DEFAULT_TUN_PORT = 8285;

/** What ensureDevice needs. Every call names its netns. */
export interface DeviceContext {
  kernel: KernelAdapter;
  ns: NetnsRef;
  /** this node's lease (subnet, publicIP); backendData is what ensureDevice produces */
  own: Pick<NodeLease, 'subnet' | 'ipv6Subnet' | 'publicIP' | 'publicIPv6'>;
  log?: Logger;
}

export interface DeviceResult {
  /** goes into the node's lease (vxlan: VtepMAC, VNI; tun: Port); {} for host-gw */
  backendData: BackendData;
  /** the pod MTU this backend allows: underlay MTU − overhead */
  mtu: number;
  device?: string;
  ifindex?: number;
  /** what ensureDevice did: nothing to do, created, adopted a compatible one (maybe fixing MTU/up/addresses), recreated */
  action: 'none' | 'created' | 'adopted' | 'recreated';
  /** why the device was recreated or fixed, for logs */
  reasons: string[];
}

/** What podnet owns in the kernel now, read once per reconcile pass (reconciler.ts). */
export interface ActualState {
  /** every route of the main table (the planner tells podnet's (proto 80) from foreign ones) */
  routes: Route[];
  /** neighbours on the backend's device (vxlan); [] when it has none */
  neighbours: Neighbour[];
  /** FDB entries on the backend's device (vxlan); [] when it has none */
  fdb: FdbEntry[];
  /** addresses of the public interface (host-gw: the same-L2 check) */
  ifaceAddresses: Address[];
}

export interface PeerError {
  /** the peer's subnet (its identity in the store) */
  peer: string;
  nodeName?: string;
  publicIP?: string;
  message: string;
}

/** One peer subnet as a userspace datapath (podnet-tund) sees it: where to send its packets. */
export interface DatapathPeer {
  subnet: string;
  publicIP: string;
  port: number;
}

/** The peer table of a userspace datapath: the own subnets and the accepted peers' (tun backend). */
export interface DatapathTable {
  /** the own subnets (v4, and v6 when leased): inner destinations accepted from peers */
  locals: string[];
  /** one entry per accepted peer subnet (v4, and v6 when both sides have one) */
  peers: DatapathPeer[];
}

export interface PeerPlan {
  ops: KernelOp[];
  /** peers refused (not on the same L2, missing VtepMAC, overlapping subnets, conflicting foreign route…); they are skipped, the others proceed */
  errors: PeerError[];
  /**
   * backends with a userspace datapath (tun): its peer table for this plan, exactly the peers the
   * plan accepted. To be handed to Backend.syncDatapath once the ops have been applied.
   */
  datapath?: DatapathTable;
}

export interface Backend {
  readonly type: BackendType;
  /** the device podnet owns for this backend (podnet.<VNI>), undefined for host-gw */
  readonly device?: string;
  /** the underlay interface (eth0) */
  readonly iface: string;
  /** bytes of encapsulation per packet: vxlan 50 over IPv4 (20 IP + 8 UDP + 8 VXLAN + 14 inner Ethernet), 70 over IPv6; host-gw 0 */
  mtuOverhead(underlayV6: boolean): number;
  /** creates or adopts the node's own device; never recreates a compatible one */
  ensureDevice(ctx: DeviceContext): Promise<DeviceResult>;
  /** PURE: desired state for these peers diffed against actual, as ops in a safe order (removals first) */
  planPeers(own: NodeLease, peers: NodeLease[], actual: ActualState): PeerPlan;
  /**
   * backends with a userspace datapath (tun): hands it the peer table of the plan just applied.
   * Called after each successful pass by whoever runs the reconciler (cluster.ts).
   */
  syncDatapath?(table: DatapathTable): Promise<void> | void;
}

export type { Link };
