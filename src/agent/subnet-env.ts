// /run/podnet/subnet.env, flannel's subnet.env with podnet's names: what the CNI config reads
// (ipam.subnetFile) instead of a hard-coded subnet. Written atomically, only once the lease exists.
import { formatCidr, formatIP, parseCidr } from '../util/ip.js';
import { writeAtomic } from '../cni/install.js';
import type { NodeLease } from './lease.js';
import type { NetConf } from './netconf.js';

/** The first address of a subnet is the node's gateway: 10.244.1.0/24 → 10.244.1.1/24. */
export function gatewayCidr(subnet: string): string {
  const c = parseCidr(subnet);
  return `${formatIP({ family: c.family, value: c.addr.value + 1n })}/${c.prefix}`;
}

export function renderSubnetEnv(conf: NetConf, lease: NodeLease, mtu: number, ipMasq: boolean): string {
  const lines = [
    `PODNET_NETWORK=${formatCidr(conf.network)}`,
    `PODNET_SUBNET=${gatewayCidr(lease.subnet)}`,
    `PODNET_MTU=${mtu}`,
    `PODNET_IPMASQ=${ipMasq}`,
  ];
  if (conf.ipv6Network && lease.ipv6Subnet) {
    lines.push(`PODNET_IPV6_NETWORK=${formatCidr(conf.ipv6Network)}`, `PODNET_IPV6_SUBNET=${gatewayCidr(lease.ipv6Subnet)}`);
  }
  return lines.join('\n') + '\n';
}

export function writeSubnetEnv(path: string, content: string): void {
  writeAtomic(path, content, 0o644);
}
