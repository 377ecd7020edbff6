// A node's subnet lease as kept in the cluster store, in flannel's shape so its users can
// read it: key /podnet/network/subnets/10.244.1.0-24, value {"PublicIP","BackendType","BackendData"}.

export type BackendType = 'vxlan' | 'host-gw' | 'tun' | 'bgp';

export const BACKEND_TYPES: readonly BackendType[] = ['vxlan', 'host-gw', 'tun', 'bgp'];

export function isBackendType(v: unknown): v is BackendType {
  return typeof v === 'string' && (BACKEND_TYPES as readonly string[]).includes(v);
}

export interface VxlanBackendData {
  /** the node's VTEP MAC (the vxlan device's address) */
  VtepMAC: string;
  /** VNI, for checking agreement */
  VNI?: number;
}

export interface TunBackendData {
  /** the UDP port the node's podnet-tund listens on (its peers send there) */
  Port: number;
}

export interface BgpBackendData {
  /** the node's own AS number (the net-conf ASN, or the agent's --bgp-asn override) */
  ASN: number;
  /** the BGP peers this node speaks to ("ADDR" or "ADDR:ASN"; the agent's --bgp-peer overrides, else net-conf Peers) */
  Peers: string[];
  RouterID?: string;
}

/** BackendData of any backend: vxlan's VtepMAC/VNI, tun's Port, bgp's ASN/Peers, host-gw's nothing. */
export type BackendData = Partial<VxlanBackendData> & Partial<TunBackendData> & Partial<BgpBackendData>;

export interface NodeLease {
  /** the node's IPv4 pod subnet, CIDR (network address form), e.g. 10.244.1.0/24 */
  subnet: string;
  /** dual-stack: the node's IPv6 pod subnet */
  ipv6Subnet?: string;
  /** the node's underlay address (its NIC), where its peers send tunnel traffic or route via */
  publicIP: string;
  publicIPv6?: string;
  backendType: BackendType;
  backendData: BackendData;
  /** node name, informational */
  nodeName?: string;
}

export const SUBNETS_PREFIX = '/podnet/network/subnets/';
export const CONFIG_KEY = '/podnet/network/config';

/** 10.244.1.0/24 → /podnet/network/subnets/10.244.1.0-24 */
export function leaseKey(subnet: string, prefix = SUBNETS_PREFIX): string {
  return prefix + subnet.replace('/', '-');
}

export function subnetFromKey(key: string, prefix = SUBNETS_PREFIX): string | undefined {
  if (!key.startsWith(prefix)) return undefined;
  const s = key.slice(prefix.length);
  const i = s.lastIndexOf('-');
  return i > 0 ? `${s.slice(0, i)}/${s.slice(i + 1)}` : undefined;
}

export function encodeLease(l: NodeLease): string {
  const v: Record<string, unknown> = { PublicIP: l.publicIP, BackendType: l.backendType, BackendData: l.backendData };
  if (l.publicIPv6) v.PublicIPv6 = l.publicIPv6;
  if (l.ipv6Subnet) v.IPv6Subnet = l.ipv6Subnet;
  if (l.nodeName) v.NodeName = l.nodeName;
  return JSON.stringify(v);
}

export function decodeLease(key: string, value: string, prefix = SUBNETS_PREFIX): NodeLease | undefined {
  const subnet = subnetFromKey(key, prefix);
  if (!subnet) return undefined;
  try {
    const v = JSON.parse(value) as Record<string, unknown>;
    if (typeof v.PublicIP !== 'string' || !isBackendType(v.BackendType)) return undefined;
    return {
      subnet,
      publicIP: v.PublicIP,
      backendType: v.BackendType,
      backendData: (typeof v.BackendData === 'object' && v.BackendData ? v.BackendData : {}) as BackendData,
      ...(typeof v.IPv6Subnet === 'string' ? { ipv6Subnet: v.IPv6Subnet } : {}),
      ...(typeof v.PublicIPv6 === 'string' ? { publicIPv6: v.PublicIPv6 } : {}),
      ...(typeof v.NodeName === 'string' ? { nodeName: v.NodeName } : {}),
    };
  } catch {
    return undefined;
  }
}
