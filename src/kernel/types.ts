// The kernel seam: every other module reads and changes kernel network state only through
// KernelAdapter. Every call names its network namespace explicitly; there is no ambient one.

/** Where an operation runs: the caller's own netns, a named netns (/run/netns/NAME), or a netns file path. */
export type NetnsRef =
  | { kind: 'current' }
  | { kind: 'name'; name: string }
  | { kind: 'path'; path: string };

export type LinkKind = 'veth' | 'bridge' | 'vxlan' | 'macvlan' | 'ipvlan' | 'tun' | 'dummy' | 'vlan' | 'ipip' | 'gre' | 'geneve' | 'wireguard' | 'vrf';

export interface Link {
  index: number;
  name: string;
  /** linkinfo kind (veth, bridge, vxlan, macvlan, tun...); undefined for physical/loopback */
  kind?: string;
  mtu: number;
  mac: string;
  /** administratively up (IFF_UP) */
  up: boolean;
  operState: string;
  master?: string;
  /** for veth/macvlan: the index of the peer/parent link, possibly in another netns */
  link?: string;
  linkIndex?: number;
  linkNetnsId?: number;
  alias?: string;
  promisc?: boolean;
  /** bridge port option, when the link is enslaved to a bridge */
  hairpin?: boolean;
  /** kind specific data as iproute2 reports it (vxlan id, port, local, macvlan mode...) */
  info?: Record<string, unknown>;
}

export interface Address {
  ifname: string;
  family: 4 | 6;
  address: string;
  prefixLen: number;
  scope: string;
}

export interface Route {
  family: 4 | 6;
  /** 'default' or CIDR (host routes as a.b.c.d/32) */
  dst: string;
  gateway?: string;
  dev?: string;
  protocol?: string;
  scope?: string;
  table?: number;
  metric?: number;
  src?: string;
  onlink?: boolean;
  type?: string;
  mtu?: number;
}

export interface Neighbour {
  dst: string;
  dev: string;
  lladdr?: string;
  state: string[];
}

export interface FdbEntry {
  mac: string;
  dev: string;
  dst?: string;
  master?: string;
  vlan?: number;
  state?: string;
  flags: string[];
}

export type LinkSpec =
  | { kind: 'veth'; name: string; mtu?: number; mac?: string; peer: { name: string; netns?: NetnsRef; mac?: string; mtu?: number } }
  | { kind: 'bridge'; name: string; mtu?: number; mac?: string; vlanFiltering?: boolean }
  | { kind: 'vxlan'; name: string; vni: number; dstport: number; local?: string; dev?: string; learning?: boolean; mtu?: number; mac?: string }
  | { kind: 'macvlan' | 'ipvlan'; name: string; master: string; mode: string; netns?: NetnsRef; mtu?: number; mac?: string }
  | { kind: 'tun'; name: string; mtu?: number; /** IFF_VNET_HDR: the attaching process reads and writes a virtio-net header (offloads) */ vnetHdr?: boolean };

export interface RouteSpec {
  dst: string;
  /** only needed to disambiguate a gateway-less IPv6 default route (rendered as ::/0); otherwise inferred */
  family?: 4 | 6;
  gateway?: string;
  dev?: string;
  onlink?: boolean;
  scope?: 'global' | 'link' | 'host';
  src?: string;
  metric?: number;
  table?: number;
  mtu?: number;
  advmss?: number;
  proto?: string;
}

/** One change. A plan is an ordered list of these; the adapter applies a plan in as few kernel round trips as it can. */
export type KernelOp =
  | { op: 'link-add'; spec: LinkSpec }
  | { op: 'link-del'; name: string; ignoreMissing?: boolean }
  | {
      op: 'link-set';
      name: string;
      up?: boolean;
      mtu?: number;
      mac?: string;
      /** name of a bridge to enslave to; null to release */
      master?: string | null;
      netns?: NetnsRef;
      newName?: string;
      promisc?: boolean;
      /** IFLA_IFALIAS: podnet marks the owner of host-side links here */
      alias?: string;
      /** bridge port options (only for a link enslaved to a bridge) */
      hairpin?: boolean;
    }
  | { op: 'addr-add'; dev: string; cidr: string; nodad?: boolean; noprefixroute?: boolean; replace?: boolean }
  | { op: 'addr-del'; dev: string; cidr: string; ignoreMissing?: boolean }
  | { op: 'route-add'; route: RouteSpec; replace?: boolean }
  | { op: 'route-del'; route: RouteSpec; ignoreMissing?: boolean }
  | { op: 'neigh-replace'; dev: string; dst: string; lladdr: string }
  | { op: 'neigh-del'; dev: string; dst: string; ignoreMissing?: boolean }
  | { op: 'fdb-replace'; dev: string; mac: string; dst?: string; self?: boolean; master?: boolean; permanent?: boolean }
  | { op: 'fdb-append'; dev: string; mac: string; dst: string }
  | { op: 'fdb-del'; dev: string; mac: string; dst?: string; ignoreMissing?: boolean };

export interface KernelAdapter {
  links(ns: NetnsRef): Promise<Link[]>;
  /** undefined when the link does not exist */
  link(ns: NetnsRef, name: string): Promise<Link | undefined>;
  addresses(ns: NetnsRef, dev?: string): Promise<Address[]>;
  routes(ns: NetnsRef, opts?: { family?: 4 | 6; table?: number | 'all'; dev?: string }): Promise<Route[]>;
  neighbours(ns: NetnsRef, dev?: string): Promise<Neighbour[]>;
  fdb(ns: NetnsRef, dev?: string): Promise<FdbEntry[]>;
  /**
   * Applies ops in order, batched (one `ip -batch` where possible). Stops at the first failing op
   * and throws a KernelError naming that op and the kernel's message; ops flagged ignoreMissing
   * succeed when the object is already gone.
   */
  apply(ns: NetnsRef, ops: KernelOp[]): Promise<void>;
  /**
   * Deletes these links (missing ones are skipped) in ONE kernel unregister, where the adapter can:
   * each unregister waits for RCU grace periods (~15-20 ms here) under the rtnl lock, so links
   * deleted one by one queue behind each other while links deleted together share one wait.
   */
  deleteLinksTogether?(ns: NetnsRef, names: string[]): Promise<void>;
  sysctlGet(ns: NetnsRef, key: string): Promise<string>;
  /** sets several sysctls in one go; keys in dotted form (net.ipv4.ip_forward) */
  sysctlSet(ns: NetnsRef, values: Record<string, string>): Promise<void>;
  /** whether this kernel can create links of this kind (probed once, in a throw-away netns or by module presence) */
  supportsLinkKind(kind: LinkKind): Promise<boolean>;
  /** identity of a netns (dev:inode) to compare namespaces; undefined when the path is not a netns */
  netnsId(ns: NetnsRef): Promise<string | undefined>;
}

/** Runs nft scripts as one atomic transaction in a netns (`nft -f -`). */
export interface NftRunner {
  /** applies the script atomically; throws KernelError with nft's message on failure */
  run(ns: NetnsRef, script: string): Promise<void>;
  /** `nft -j list ...` parsed; undefined when the object does not exist */
  listJson(ns: NetnsRef, args: string[], opts?: { terse?: boolean }): Promise<unknown | undefined>;
}
