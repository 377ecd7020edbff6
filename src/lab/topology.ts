// The lab's underlay: a fabric namespace with a bridge (br0, 192.168.<k>.254/24) standing in
// for the data-centre switch and router, and node namespaces each with eth0 on it. Everything is
// created inside the lab's namespaces; the root namespace is never touched.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { installCni, writeAtomic } from '../cni/install.js';
import { SUPPORTED_VERSIONS } from '../cni/version.js';
import { addNetns, ip, netnsExists, sysctl } from './sys.js';
import { nsName, type LabNode, type LabRack, type LabState } from './state.js';
import { BGP_HOLD_TIME, BGP_RESTART_TIME, createSwitch, NODE_ASN_BASE, rackForNewNode, rackOf, RESERVED_NAMES, segmentOf } from './racks.js';

export const FABRIC_HOST = 254;
export const MAX_NODE_INDEX = 199;
export const ETCD_BASE_INDEX = 200;
export const POD_IFNAME = 'eth0';

export function underlayIp(k: number, host: number): string {
  return `192.168.${k}.${host}`;
}

export function createFabric(s: LabState): void {
  addNetns(s.fabricNs);
  // A switch, not a firewall: bridged frames skip netfilter. The kernel's bridge netfilter
  // (built in here, on by default in every namespace) otherwise sends each frame crossing br0
  // through the IPv4/IPv6/ARP hooks of the fabric namespace, with a header check and an skb
  // extension per packet even when no rule is loaded: measured at about 1.7% of the CPU of a
  // pod-to-pod TCP stream between two nodes, half of all bridge-netfilter work on that path
  // (issue 10). No multicast snooping either (an unmanaged switch floods multicast).
  for (const fam of ['iptables', 'ip6tables', 'arptables']) sysctl(s.fabricNs, `net.bridge.bridge-nf-call-${fam}=0`);
  createSwitch(s.fabricNs, 'br0');
  ip(['-n', s.fabricNs, 'addr', 'replace', `${s.fabricIp}/24`, 'dev', 'br0']);
  // Without racks the fabric is also the underlay's router (every node's gateway): forwarding on
  // lets host-gw packets that hit it by mistake go somewhere visible instead of vanishing. With
  // racks the router namespace routes between them; the fabric only switches (its address on
  // br0 is where the lab itself reaches etcd).
  sysctl(s.fabricNs, `net.ipv4.ip_forward=${s.racks ? 0 : 1}`);
}

/**
 * Connects a namespace to the underlay: a veth whose fabric end (`fabricIf`) is on the rack's
 * bridge (br0 without racks) and whose other end is `eth0` in `ns` with `ipAddr`/24 (and `ip6`/64),
 * lo up, default route via the rack's router leg (the fabric without racks).
 */
export function attachToUnderlay(s: LabState, ns: string, fabricIf: string, ipAddr: string, rack?: LabRack, ip6?: string): void {
  const seg = segmentOf(s, rack);
  addNetns(ns);
  if (!ip(['-n', ns, '-o', 'link', 'show', 'eth0'], true)) {
    ip(['-n', s.fabricNs, 'link', 'del', fabricIf], true);
    ip(['-n', s.fabricNs, 'link', 'add', fabricIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
  }
  ip(['-n', s.fabricNs, 'link', 'set', fabricIf, 'master', seg.bridge]);
  ip(['-n', s.fabricNs, 'link', 'set', fabricIf, 'up']);
  ip(['-n', ns, 'addr', 'replace', `${ipAddr}/24`, 'dev', 'eth0']);
  // no duplicate address detection: the lab assigns every address once, and a tentative address
  // would delay the node's first IPv6 packets (and its BGP next hop) by a second or two. The
  // link-local too (accept_dad=0 before the link is up): the kernel solicits neighbours for
  // forwarded packets only from a non-tentative link-local
  if (ip6) {
    ip(['-n', ns, 'addr', 'replace', `${ip6}/64`, 'dev', 'eth0', 'nodad']);
    sysctl(ns, 'net.ipv6.conf.eth0.accept_dad=0');
  }
  ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
  ip(['-n', ns, 'route', 'replace', 'default', 'via', seg.gateway]);
  if (ip6 && seg.gateway6) ip(['-n', ns, '-6', 'route', 'replace', 'default', 'via', seg.gateway6]);
}

/** The record of a node, before anything of it exists (written to the state first). */
export function planNode(s: LabState, name: string, index: number): LabNode {
  if (RESERVED_NAMES.includes(name)) throw new Error(`a node may not be named ${name}: the lab's ${name} namespace has that name`);
  const dir = join(s.dir, 'nodes', name);
  const rack = rackForNewNode(s);
  return {
    name,
    index,
    ns: nsName(s.name, name),
    ip: underlayIp(rack?.k ?? s.underlayK, index),
    ...(rack ? { rack: rack.index } : {}),
    ...(rack?.v6Prefix ? { ip6: `fd00:${rack.k}::${index}` } : {}),
    ...(s.backend === 'bgp' ? { asn: NODE_ASN_BASE + index } : {}),
    fabricIf: `v-${name}`,
    dir,
    binDir: join(dir, 'bin'),
    conflist: join(dir, 'net.d', '10-podnet.conflist'),
    socket: join(dir, 'podnet.sock'),
    subnetFile: join(dir, 'subnet.env'),
    log: join(dir, 'agent.log'),
  };
}

export function nextNodeIndex(s: LabState): number {
  const used = new Set(Object.values(s.nodes).map((n) => n.index));
  for (let i = 1; i <= MAX_NODE_INDEX; i++) if (!used.has(i)) return i;
  throw new Error(`the lab has ${MAX_NODE_INDEX} nodes already`);
}

/**
 * The node's conflist: what a kubelet node would have in /etc/cni/net.d. No subnet and no MTU:
 * the plugin takes both from the agent's subnet file, as flannel's CNI does.
 */
export function nodeConflist(s: LabState, n: LabNode): Record<string, unknown> {
  return {
    cniVersion: '1.0.0',
    cniVersions: ['0.4.0', '1.0.0', '1.1.0'],
    name: `pnlab-${s.name}`,
    plugins: [
      {
        type: 'podnet',
        mode: 'bridge',
        capabilities: { portMappings: true },
        bridge: 'podnet0',
        isGateway: true,
        isDefaultGateway: true,
        ipMasq: true,
        hairpinMode: true,
        ipam: { type: 'podnet-ipam', subnetFile: n.subnetFile, dataDir: join(n.dir, 'ipam') },
      },
    ],
  };
}

/** Node namespace on the underlay, forwarding on, its CNI bin dir and conflist. */
export function createNode(s: LabState, n: LabNode): void {
  mkdirSync(n.dir, { recursive: true });
  attachToUnderlay(s, n.ns, n.fabricIf, n.ip, rackOf(s, n), n.ip6);
  sysctl(n.ns, 'net.ipv4.ip_forward=1');
  if (s.ipv6Network) sysctl(n.ns, 'net.ipv6.conf.all.forwarding=1');
  // one bin dir per node: the compiled client reads .podnet-client.conf beside itself, and
  // that names the node's own agent socket
  installCni({ binDir: n.binDir, socket: n.socket }, [...SUPPORTED_VERSIONS]);
  writeAtomic(n.conflist, JSON.stringify(nodeConflist(s, n), null, 2) + '\n', 0o644);
}

export function writeNetConf(s: LabState): string {
  const p = join(s.dir, 'net-conf.json');
  mkdirSync(s.dir, { recursive: true });
  const backend = netConfBackend(s.backend);
  const v6 = s.ipv6Network ? { IPv6Network: s.ipv6Network, IPv6SubnetLen: 64 } : {};
  writeFileSync(p, JSON.stringify({ Network: s.network, SubnetLen: 24, ...v6, Backend: backend }, null, 2) + '\n');
  return p;
}

/**
 * The net-conf Backend of each lab backend. bgp: the cluster-wide defaults only; each node's own
 * AS and its rack's router come from the agent's --bgp-asn and --bgp-peer (agents.ts).
 */
export function netConfBackend(b: LabState['backend']): Record<string, unknown> {
  switch (b) {
    case 'vxlan':
      return { Type: 'vxlan', VNI: 1, Port: 8472 };
    case 'tun':
      return { Type: 'tun', Port: 8285 };
    case 'bgp':
      return { Type: 'bgp', ASN: 64512, Peers: [], HoldTime: BGP_HOLD_TIME, GracefulRestart: { RestartTime: BGP_RESTART_TIME } };
    case 'host-gw':
      return { Type: 'host-gw' };
  }
}

export function nodeNsExists(n: LabNode): boolean {
  return netnsExists(n.ns);
}
