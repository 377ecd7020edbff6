// Which interface and address are this node's "public" ones (where peers reach it): from the
// default route, as flannel does, unless --iface / --public-ip say otherwise.
import type { KernelAdapter, NetnsRef } from '../kernel/types.js';
import { masked, parseCidr, type Cidr } from '../util/ip.js';

export interface NodeIdentity {
  iface: string;
  publicIP: string;
  publicIPv6?: string;
  mtu: number;
  /** the networks directly connected on the public interface (the L2 segment of host-gw) */
  connected: Cidr[];
}

export async function detectNode(kernel: KernelAdapter, ns: NetnsRef, o: { iface?: string; publicIP?: string }): Promise<NodeIdentity> {
  let iface = o.iface;
  if (!iface) {
    const routes = await kernel.routes(ns, { family: 4 });
    const def = routes.find((r) => r.dst === 'default' || r.dst === '0.0.0.0/0');
    if (!def?.dev) throw new Error('cannot find the node\'s public interface: there is no IPv4 default route; pass --iface (and --public-ip)');
    iface = def.dev;
  }
  const link = await kernel.link(ns, iface);
  if (!link) throw new Error(`--iface ${iface}: no such interface on this node`);
  const addrs = (await kernel.addresses(ns, iface)).filter((a) => a.scope === 'global');
  const v4 = addrs.filter((a) => a.family === 4);
  const publicIP = o.publicIP ?? v4[0]?.address;
  if (!publicIP) throw new Error(`interface ${iface} has no IPv4 address to use as the node's public IP; pass --public-ip`);
  if (o.publicIP && !addrs.some((a) => a.address === o.publicIP)) throw new Error(`--public-ip ${o.publicIP} is not an address of ${iface}`);
  return {
    iface,
    publicIP,
    publicIPv6: addrs.find((a) => a.family === 6)?.address,
    mtu: link.mtu,
    connected: addrs.map((a) => masked(parseCidr(`${a.address}/${a.prefixLen}`))),
  };
}
