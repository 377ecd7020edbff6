// The lab's underlay: a fabric namespace with a bridge (br0, 192.168.<k>.254/24) standing in
// for the data-centre switch and router, and node namespaces each with eth0 on it. Everything is
// created inside the lab's namespaces; the root namespace is never touched.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { installCni, writeAtomic } from '../cni/install.js';
import { SUPPORTED_VERSIONS } from '../cni/version.js';
import { addNetns, ip, netnsExists, sysctl } from './sys.js';
import { nsName, type LabNode, type LabState } from './state.js';

export const FABRIC_HOST = 254;
export const MAX_NODE_INDEX = 199;
export const ETCD_BASE_INDEX = 200;
export const POD_IFNAME = 'eth0';

export function underlayIp(k: number, host: number): string {
  return `192.168.${k}.${host}`;
}

export function createFabric(s: LabState): void {
  addNetns(s.fabricNs);
  const links = ip(['-n', s.fabricNs, '-o', 'link', 'show'], true);
  if (!/ br0[:@]/.test(links)) ip(['-n', s.fabricNs, 'link', 'add', 'br0', 'type', 'bridge']);
  // A switch, not a firewall: bridged frames skip netfilter. The kernel's bridge netfilter
  // (built in here, on by default in every namespace) otherwise sends each frame crossing br0
  // through the IPv4/IPv6/ARP hooks of the fabric namespace, with a header check and an skb
  // extension per packet even when no rule is loaded: measured at about 1.7% of the CPU of a
  // pod-to-pod TCP stream between two nodes, half of all bridge-netfilter work on that path
  // (issue 10). No multicast snooping either (an unmanaged switch floods multicast).
  for (const fam of ['iptables', 'ip6tables', 'arptables']) sysctl(s.fabricNs, `net.bridge.bridge-nf-call-${fam}=0`);
  ip(['-n', s.fabricNs, 'link', 'set', 'br0', 'type', 'bridge', 'mcast_snooping', '0', 'nf_call_iptables', '0', 'nf_call_ip6tables', '0', 'nf_call_arptables', '0']);
  ip(['-n', s.fabricNs, 'addr', 'replace', `${s.fabricIp}/24`, 'dev', 'br0']);
  ip(['-n', s.fabricNs, 'link', 'set', 'br0', 'up']);
  // the fabric routes between the underlay and nothing else today; forwarding on lets host-gw
  // packets that hit it by mistake go somewhere visible instead of vanishing
  sysctl(s.fabricNs, 'net.ipv4.ip_forward=1');
}

/**
 * Connects a namespace to the underlay: a veth whose fabric end (`fabricIf`) is on br0 and
 * whose other end is `eth0` in `ns` with `ipAddr`/24, lo up, default route via the fabric.
 */
export function attachToUnderlay(s: LabState, ns: string, fabricIf: string, ipAddr: string): void {
  addNetns(ns);
  if (!ip(['-n', ns, '-o', 'link', 'show', 'eth0'], true)) {
    ip(['-n', s.fabricNs, 'link', 'del', fabricIf], true);
    ip(['-n', s.fabricNs, 'link', 'add', fabricIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
  }
  ip(['-n', s.fabricNs, 'link', 'set', fabricIf, 'master', 'br0']);
  ip(['-n', s.fabricNs, 'link', 'set', fabricIf, 'up']);
  ip(['-n', ns, 'addr', 'replace', `${ipAddr}/24`, 'dev', 'eth0']);
  ip(['-n', ns, 'link', 'set', 'eth0', 'up']);
  ip(['-n', ns, 'route', 'replace', 'default', 'via', s.fabricIp]);
}

/** The record of a node, before anything of it exists (written to the state first). */
export function planNode(s: LabState, name: string, index: number): LabNode {
  const dir = join(s.dir, 'nodes', name);
  return {
    name,
    index,
    ns: nsName(s.name, name),
    ip: underlayIp(s.underlayK, index),
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
  attachToUnderlay(s, n.ns, n.fabricIf, n.ip);
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
  const backend = s.backend === 'vxlan' ? { Type: 'vxlan', VNI: 1, Port: 8472 } : s.backend === 'tun' ? { Type: 'tun', Port: 8285 } : { Type: 'host-gw' };
  const v6 = s.ipv6Network ? { IPv6Network: s.ipv6Network, IPv6SubnetLen: 64 } : {};
  writeFileSync(p, JSON.stringify({ Network: s.network, SubnetLen: 24, ...v6, Backend: backend }, null, 2) + '\n');
  return p;
}

export function nodeNsExists(n: LabNode): boolean {
  return netnsExists(n.ns);
}
