// The network config in the shape flannel users know (net-conf.json), parsed and validated
// purely: every error names the field.
import { BITS, cidr, formatCidr, hasHostBits, masked, overlaps, tryParseCidr, type Cidr } from '../util/ip.js';
import { BACKEND_TYPES, isBackendType, type BackendType } from './lease.js';
import { DEFAULT_TUN_PORT, DEFAULT_VXLAN_PORT } from './backends/types.js';
import { BgpConfigError, parseBgpBackend, type BgpConfig } from './bgp/config.js';

export interface NetConf {
  network: Cidr;
  subnetLen: number;
  /** first and last subnet index (inclusive) that may be leased */
  subnetMin: number;
  subnetMax: number;
  ipv6Network?: Cidr;
  ipv6SubnetLen: number;
  /** bgp: its ASN, peers, graceful restart (bgp/config.ts) */
  backend: { type: BackendType; vni: number; port: number; mtu?: number; bgp?: BgpConfig };
}

export class NetConfError extends Error {
  constructor(
    public readonly field: string,
    msg: string,
  ) {
    super(`net-conf ${field}: ${msg}`);
    this.name = 'NetConfError';
  }
}

function cidrField(v: unknown, field: string, family: 4 | 6): Cidr {
  if (typeof v !== 'string') throw new NetConfError(field, `expected a CIDR string, got ${JSON.stringify(v)}`);
  const c = tryParseCidr(v);
  if (!c) throw new NetConfError(field, `malformed CIDR ${JSON.stringify(v)}`);
  if (c.family !== family) throw new NetConfError(field, `${v} is not an IPv${family} network`);
  if (hasHostBits(c)) throw new NetConfError(field, `${v} has host bits set (did you mean ${formatCidr(masked(c))}?)`);
  return c;
}

function intField(o: Record<string, unknown>, key: string, field: string, dflt: number, min: number, max: number): number {
  const v = o[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new NetConfError(field, `expected an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
  return v;
}

/** How many subnets of `len` fit into `net`. */
export function subnetCount(net: Cidr, len: number): bigint {
  return 1n << BigInt(len - net.prefix);
}

/** The i-th subnet of length `len` in `net`. */
export function subnetAt(net: Cidr, len: number, i: number): Cidr {
  const step = 1n << BigInt(BITS[net.family] - len);
  return cidr({ family: net.family, value: net.addr.value + step * BigInt(i) }, len);
}

/** Parses net-conf.json; `avoid` are networks the cluster CIDR must not overlap (the node's underlay). */
export function parseNetConf(raw: unknown, avoid: { what: string; net: Cidr }[] = []): NetConf {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new NetConfError('(root)', 'expected a JSON object');
  const o = raw as Record<string, unknown>;
  const network = cidrField(o.Network, 'Network', 4);
  if (network.prefix > 28) throw new NetConfError('Network', `${formatCidr(network)} is too small for a cluster`);
  for (const a of avoid) {
    if (overlaps(network, a.net)) throw new NetConfError('Network', `${formatCidr(network)} overlaps ${a.what} ${formatCidr(a.net)}`);
  }
  const subnetLen = intField(o, 'SubnetLen', 'SubnetLen', Math.max(24, network.prefix + 1), 1, 30);
  if (subnetLen <= network.prefix) {
    throw new NetConfError('SubnetLen', `/${subnetLen} does not fit in ${formatCidr(network)}: it must be longer than /${network.prefix}`);
  }
  const count = subnetCount(network, subnetLen);
  // as flannel: the first subnet (which holds the network address) is not handed out
  const maxIdx = Number(count > 1n << 30n ? 1n << 30n : count) - 1;
  const subnetMin = parseSubnetBound(o.SubnetMin, 'SubnetMin', network, subnetLen, 1);
  const subnetMax = parseSubnetBound(o.SubnetMax, 'SubnetMax', network, subnetLen, maxIdx);
  if (subnetMin > subnetMax) throw new NetConfError('SubnetMin', 'is after SubnetMax');
  let ipv6Network: Cidr | undefined;
  if (o.IPv6Network !== undefined || o.EnableIPv6 === true) {
    ipv6Network = cidrField(o.IPv6Network, 'IPv6Network', 6);
  }
  const ipv6SubnetLen = intField(o, 'IPv6SubnetLen', 'IPv6SubnetLen', 64, 1, 126);
  if (ipv6Network && ipv6SubnetLen <= ipv6Network.prefix) throw new NetConfError('IPv6SubnetLen', `/${ipv6SubnetLen} does not fit in ${formatCidr(ipv6Network)}`);
  if (ipv6Network && subnetCount(ipv6Network, ipv6SubnetLen) <= BigInt(subnetMax)) {
    throw new NetConfError('IPv6SubnetLen', `${formatCidr(ipv6Network)} has fewer /${ipv6SubnetLen} subnets than the IPv4 network has /${subnetLen} subnets`);
  }
  const b = o.Backend;
  if (typeof b !== 'object' || b === null) throw new NetConfError('Backend', 'required, e.g. {"Type": "vxlan"}');
  const bo = b as Record<string, unknown>;
  if (!isBackendType(bo.Type)) throw new NetConfError('Backend.Type', `unknown backend ${JSON.stringify(bo.Type)} (expected ${BACKEND_TYPES.map((t) => JSON.stringify(t)).join(', ').replace(/, ([^,]*)$/, ' or $1')})`);
  // the default UDP port is the backend's: vxlan 8472 (the kernel's historical one), tun 8285 (flannel's UDP backend)
  const defaultPort = bo.Type === 'tun' ? DEFAULT_TUN_PORT : DEFAULT_VXLAN_PORT;
  const mtu = bo.MTU === undefined ? undefined : intField(bo, 'MTU', 'Backend.MTU', 1450, 576, 65535);
  let bgp: BgpConfig | undefined;
  if (bo.Type === 'bgp') {
    try {
      bgp = parseBgpBackend(bo);
    } catch (e) {
      if (e instanceof BgpConfigError) throw new NetConfError(e.field, e.message.slice(e.field.length + 2));
      throw e;
    }
  }
  return {
    network,
    subnetLen,
    subnetMin,
    subnetMax,
    ipv6Network,
    ipv6SubnetLen,
    backend: { type: bo.Type, vni: intField(bo, 'VNI', 'Backend.VNI', 1, 1, 16777215), port: intField(bo, 'Port', 'Backend.Port', defaultPort, 1, 65535), mtu, ...(bgp ? { bgp } : {}) },
  };
}

function parseSubnetBound(v: unknown, field: string, net: Cidr, len: number, dflt: number): number {
  if (v === undefined) return dflt;
  const c = typeof v === 'string' ? tryParseCidr(v.includes('/') ? v : `${v}/${len}`) : undefined;
  if (!c || c.family !== net.family || !overlaps(net, c)) throw new NetConfError(field, `${JSON.stringify(v)} is not a subnet of ${formatCidr(net)}`);
  const step = 1n << BigInt(BITS[net.family] - len);
  return Number((c.addr.value - net.addr.value) / step);
}
