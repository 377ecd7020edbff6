// A lab with racks: each rack its own underlay segment (a bridge in the fabric namespace with its
// own 192.168.<k>.0/24, and fd00:<k>::/64 when the pods are dual-stack), and a `router` namespace
// with a leg on every rack, forwarding between them. The nodes of a rack have their default
// route via the router's leg. With the bgp backend the router runs a real BGP daemon (BIRD or FRR)
// with every node as an eBGP neighbour: router AS 65000, node i AS 4200000000+i (RFC 6996 private
// 4-octet ASNs, one per node as Calico's and kube-router's per-rack designs do).
import { join } from 'node:path';
import { addNetns, ip, sysctl } from './sys.js';
import { randomMac } from '../cni/modes/common.js';
import { nsName, type LabNode, type LabRack, type LabRouter, type LabState } from './state.js';
import { bird } from './router/bird.js';
import { frr } from './router/frr.js';
import type { RouterDaemon, RouterFiles, RouterKind, RouterPlan } from './router/types.js';

export const ROUTER_HOST = 253;
export const ROUTER_ASN = 65000;
export const NODE_ASN_BASE = 4_200_000_000;
export const BGP_HOLD_TIME = 9;
export const BGP_RESTART_TIME = 120;
/** names a node may not have: their namespaces are the lab's own */
export const RESERVED_NAMES = ['fabric', 'router'];

export function routerDaemon(kind: RouterKind): RouterDaemon {
  return kind === 'frr' ? frr : bird;
}

export function planRacks(ks: number[], dualStack: boolean): LabRack[] {
  return ks.map((k, i) => ({
    index: i + 1,
    k,
    bridge: i === 0 ? 'br0' : `br${i + 1}`,
    routerIf: `rack${i + 1}`,
    fabricIf: `r-rack${i + 1}`,
    routerIp: `192.168.${k}.${ROUTER_HOST}`,
    ...(dualStack ? { v6Prefix: `fd00:${k}::/64`, routerIp6: `fd00:${k}::${ROUTER_HOST}` } : {}),
  }));
}

export function planRouter(s: Pick<LabState, 'name' | 'dir'>, kind: RouterKind | undefined): LabRouter {
  const dir = join(s.dir, 'router');
  return { ns: nsName(s.name, 'router'), ...(kind ? { kind, asn: ROUTER_ASN } : {}), dir, log: join(dir, `${kind ?? 'router'}.log`) };
}

/** The rack with the fewest nodes (the lowest on a tie): nodes are spread round-robin. */
export function rackForNewNode(s: LabState): LabRack | undefined {
  if (!s.racks) return undefined;
  const count = new Map(s.racks.map((r) => [r.index, 0]));
  for (const n of Object.values(s.nodes)) if (n.rack) count.set(n.rack, (count.get(n.rack) ?? 0) + 1);
  return [...s.racks].sort((a, b) => count.get(a.index)! - count.get(b.index)! || a.index - b.index)[0];
}

export function rackOf(s: LabState, n: Pick<LabNode, 'rack'>): LabRack | undefined {
  return n.rack ? s.racks?.find((r) => r.index === n.rack) : undefined;
}

/** Where a namespace on a rack's segment sends what is not on it: the router's leg. */
export function segmentOf(s: LabState, rack: LabRack | undefined): { bridge: string; gateway: string; gateway6?: string } {
  if (!rack) return { bridge: 'br0', gateway: s.fabricIp };
  return { bridge: rack.bridge, gateway: rack.routerIp, ...(rack.routerIp6 ? { gateway6: rack.routerIp6 } : {}) };
}

/** A switch: bridged frames skip netfilter, no multicast snooping (see createFabric). */
export function createSwitch(ns: string, bridge: string): void {
  const links = ip(['-n', ns, '-o', 'link', 'show'], true);
  // an address of its own: a bridge whose MAC the kernel chose takes the lowest MAC of its ports,
  // so a node joining later could change it, and the namespaces already up keep the old one in
  // their neighbour caches for the bridge's own addresses (the fabric's gateway, the etcd members
  // behind it are reached through it): their frames to it are dropped until each entry is refreshed
  if (!new RegExp(` ${bridge}[:@]`).test(links)) ip(['-n', ns, 'link', 'add', bridge, 'address', randomMac(), 'type', 'bridge']);
  ip(['-n', ns, 'link', 'set', bridge, 'type', 'bridge', 'mcast_snooping', '0', 'nf_call_iptables', '0', 'nf_call_ip6tables', '0', 'nf_call_arptables', '0']);
  ip(['-n', ns, 'link', 'set', bridge, 'up']);
}

/** The bridges of racks 2.. (rack 1's br0 is the fabric's own) and the router with a leg on each. */
export function createRacksAndRouter(s: LabState): void {
  const router = s.router!;
  for (const r of s.racks ?? []) if (r.index > 1) createSwitch(s.fabricNs, r.bridge);
  addNetns(router.ns);
  sysctl(router.ns, 'net.ipv4.ip_forward=1');
  sysctl(router.ns, 'net.ipv6.conf.all.forwarding=1');
  for (const r of s.racks ?? []) {
    if (!ip(['-n', router.ns, '-o', 'link', 'show', r.routerIf], true)) {
      ip(['-n', s.fabricNs, 'link', 'del', r.fabricIf], true);
      ip(['-n', s.fabricNs, 'link', 'add', r.fabricIf, 'type', 'veth', 'peer', 'name', r.routerIf, 'netns', router.ns]);
    }
    ip(['-n', s.fabricNs, 'link', 'set', r.fabricIf, 'master', r.bridge]);
    ip(['-n', s.fabricNs, 'link', 'set', r.fabricIf, 'up']);
    ip(['-n', router.ns, 'addr', 'replace', `${r.routerIp}/24`, 'dev', r.routerIf]);
    if (r.routerIp6) {
      // no DAD, for the link-local too (see attachToUnderlay)
      ip(['-n', router.ns, 'addr', 'replace', `${r.routerIp6}/64`, 'dev', r.routerIf, 'nodad']);
      sysctl(router.ns, `net.ipv6.conf.${r.routerIf}.accept_dad=0`);
    }
    ip(['-n', router.ns, 'link', 'set', r.routerIf, 'up']);
  }
}

/** What the router's daemon is configured with: every bgp node as a neighbour. */
export function routerPlan(s: LabState): RouterPlan {
  const racks = s.racks ?? [];
  return {
    asn: s.router?.asn ?? ROUTER_ASN,
    routerId: racks[0]?.routerIp ?? s.fabricIp,
    legs: racks.map((r) => ({ ifname: r.routerIf, v4: `${r.routerIp}/24`, ...(r.routerIp6 ? { v6: `${r.routerIp6}/64` } : {}) })),
    neighbors: Object.values(s.nodes)
      .filter((n) => n.asn !== undefined)
      .sort((a, b) => a.index - b.index)
      .map((n) => ({ name: n.name, address: n.ip, asn: n.asn! })),
    clusterNetworks: [s.network, ...(s.ipv6Network ? [s.ipv6Network] : [])],
    restartTime: BGP_RESTART_TIME,
    holdTime: BGP_HOLD_TIME,
  };
}

export function routerFiles(r: LabRouter): RouterFiles {
  return { dir: r.dir, log: r.log };
}

/** host-gw needs every node on one segment: the first node off the first node's segment, if any. */
export function offSegmentPeer(s: LabState): { node: LabNode; other: LabNode } | undefined {
  const nodes = Object.values(s.nodes).sort((a, b) => a.index - b.index);
  const first = nodes[0];
  const off = nodes.find((n) => (n.rack ?? 1) !== (first?.rack ?? 1));
  return first && off ? { node: first, other: off } : undefined;
}
