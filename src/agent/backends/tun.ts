// tun backend: an L3 tunnel. Pod traffic to another node is routed into podnet's TUN device
// podnet.tun; podnet-tund (src/tund/, supervised by src/agent/tund/) reads each IP packet from it
// and sends it as the payload of one UDP datagram to the peer node's public IP and lease port
// (flannel's UDP backend wire format). Design: docs/tun.md.
//
//   - One device per node, podnet.tun: TUN mode, no packet-information header, vnet_hdr on
//     (offloads), persistent, alias "podnet". The agent creates it (`ip tuntap add name podnet.tun
//     mode tun vnet_hdr`, then alias, MTU, up); podnet-tund only attaches to it. A podnet.tun that
//     is not such a device is someone else's: ensureDevice refuses, naming what differs, and
//     touches nothing.
//   - Addresses: the own subnet's network address /32 (and the IPv6 subnet's /128), as vxlan, so
//     that the node has a source address on the tunnel.
//   - Routes (proto 80, see types.ts): the cluster Network (and IPv6Network) → dev podnet.tun, so
//     that a packet for a subnet nobody leases reaches the datapath and gets ICMP unreachable back
//     instead of leaving by the default route; plus one route per peer subnet → dev podnet.tun (no
//     gateway: the device is point-to-point, the datapath picks the peer by the inner destination).
//   - The datapath's peer table (PeerPlan.datapath): exactly the peers whose routes the plan keeps,
//     with their public IP and lease Port; syncDatapath writes it to podnet-tund's peers file.
//   - MTU: underlay MTU − 28 (IPv4 underlay: 20 IP + 8 UDP) or − 48 (IPv6: 40 + 8). Below 576
//     (1280 when the cluster carries IPv6) the tunnel is refused.
import type { KernelOp, Link } from '../../kernel/types.js';
import type { NodeLease } from '../lease.js';
import { canonicalIP, tryParseIP } from '../../util/ip.js';
import { writePeers } from '../tund/index.js';
import { canonCidr, diffRoutes, peerError, peerName, validatePeers, detailedLink, planDeviceAddresses, type DesiredRoute } from './common.js';
import {
  DEFAULT_TUN_PORT,
  PODNET_RTPROTO_STR,
  type ActualState,
  type Backend,
  type DatapathPeer,
  type DatapathTable,
  type DeviceContext,
  type DeviceResult,
  type PeerError,
  type PeerPlan,
} from './types.js';

export const TUN_DEVICE = 'podnet.tun';
/** the ifalias that marks podnet.tun as podnet's */
export const TUN_ALIAS = 'podnet';

export interface TunConfig {
  /** the underlay interface (the one holding the node's public IP) */
  iface: string;
  /** the UDP port podnet-tund listens on and peers send to; default 8285 */
  port?: number;
  /** the cluster Network (and IPv6Network), each routed into the device as a whole */
  clusterNetworks?: string[];
  /** the agent's data dir: when set, syncDatapath writes <dataDir>/tund/peers and signals the daemon */
  dataDir?: string;
}

export class TunMtuError extends Error {
  constructor(msg: string) {
    super(msg);
    this.name = 'TunMtuError';
  }
}

export class ForeignDeviceError extends Error {
  constructor(msg: string) {
    super(msg);
    this.name = 'ForeignDeviceError';
  }
}

function validPort(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535 ? v : undefined;
}

export class TunBackend implements Backend {
  readonly type = 'tun' as const;
  readonly device = TUN_DEVICE;
  readonly iface: string;
  readonly port: number;
  /** canonical cluster networks */
  readonly clusterNetworks: string[];
  readonly dataDir?: string;

  constructor(cfg: TunConfig) {
    this.port = cfg.port ?? DEFAULT_TUN_PORT;
    if (!Number.isInteger(this.port) || this.port < 1 || this.port > 65535) throw new RangeError(`tun: Backend.Port ${cfg.port} must be an integer in 1..65535`);
    this.iface = cfg.iface;
    this.clusterNetworks = (cfg.clusterNetworks ?? []).map((n) => {
      const c = canonCidr(n);
      if (!c) throw new TypeError(`tun: cluster network ${JSON.stringify(n)} is not a CIDR`);
      return c;
    });
    if (cfg.dataDir !== undefined) this.dataDir = cfg.dataDir;
  }

  mtuOverhead(underlayV6: boolean): number {
    return underlayV6 ? 48 : 28;
  }

  /** The smallest tunnel MTU allowed: 576 (IPv4's minimum datagram every host accepts), 1280 with IPv6. */
  minMtu(ipv6: boolean): number {
    return ipv6 ? 1280 : 576;
  }

  /** Why an existing link is not podnet's tun device; [] when it is. Pure, exported for tests. */
  incompatibilities(l: Link): string[] {
    if (l.kind !== 'tun') return [`it is a ${l.kind ?? 'physical'} link, not a TUN device`];
    const i = l.info ?? {};
    const why: string[] = [];
    if (i.type !== 'tun') why.push(`mode ${String(i.type ?? 'unknown')}, not tun`);
    if (i.vnet_hdr !== true) why.push('vnet_hdr off');
    if (i.pi !== false) why.push('packet information header on');
    if (i.multi_queue === true) why.push('multi_queue on');
    if (i.persist === false) why.push('not persistent');
    if (l.alias !== TUN_ALIAS) why.push(l.alias === undefined ? `no alias "${TUN_ALIAS}"` : `alias ${JSON.stringify(l.alias)}, not "${TUN_ALIAS}"`);
    return why;
  }

  /**
   * Every refusal of ensureDevice, read-only: the underlay must exist, leave a big enough MTU, and a
   * podnet.tun already there must be podnet's. Returns what ensureDevice will find.
   */
  async check(ctx: DeviceContext): Promise<{ mtu: number; underlayMtu: number; existing?: Link }> {
    const { kernel, ns, own } = ctx;
    const pub = tryParseIP(own.publicIP);
    if (!pub) throw new TypeError(`tun: own public IP ${JSON.stringify(own.publicIP)} is not an IP address`);
    const under = await kernel.link(ns, this.iface);
    if (!under) throw new Error(`tun: underlay interface ${this.iface} does not exist`);
    const overhead = this.mtuOverhead(pub.family === 6);
    const mtu = under.mtu - overhead;
    const v6 = !!own.ipv6Subnet || this.clusterNetworks.some((n) => n.includes(':'));
    const min = this.minMtu(v6);
    if (mtu < min) {
      throw new TunMtuError(
        `tun: underlay MTU too small for the tunnel: ${this.iface} has MTU ${under.mtu}, which leaves ${mtu} after ${overhead} bytes of IPv${pub.family}+UDP encapsulation, ` +
          `below the ${min} bytes ${v6 ? 'IPv6 needs' : 'IPv4 requires'}; raise ${this.iface}'s MTU to at least ${min + overhead}`,
      );
    }
    const existing = await detailedLink(kernel, ns, this.device, 'tun');
    if (existing) {
      const why = this.incompatibilities(existing);
      if (why.length) {
        throw new ForeignDeviceError(
          `tun: ${this.device} exists and is not podnet's (${why.join(', ')}): remove it (ip link del ${this.device}) or free the name; podnet leaves it as it is`,
        );
      }
    }
    return { mtu, underlayMtu: under.mtu, ...(existing ? { existing } : {}) };
  }

  async ensureDevice(ctx: DeviceContext): Promise<DeviceResult> {
    const { kernel, ns, own } = ctx;
    const { mtu, existing } = await this.check(ctx);
    const reasons: string[] = [];
    const ops: KernelOp[] = [];
    let action: DeviceResult['action'];
    if (existing) {
      action = 'adopted';
      if (existing.mtu !== mtu) {
        reasons.push(`MTU ${existing.mtu} → ${mtu}`);
        ops.push({ op: 'link-set', name: this.device, mtu });
      }
      if (!existing.up) {
        reasons.push('was down');
        ops.push({ op: 'link-set', name: this.device, up: true });
      }
    } else {
      action = 'created';
      ops.push({ op: 'link-add', spec: { kind: 'tun', name: this.device, vnetHdr: true, mtu } }, { op: 'link-set', name: this.device, alias: TUN_ALIAS, up: true });
    }
    // addresses: exactly the own subnet's network address /32 (and /128)
    await planDeviceAddresses(kernel, ns, this.device, own, !!existing, action === 'adopted', ops, reasons);
    if (action === 'adopted' && ops.length === 0) action = 'none';
    if (ops.length) {
      try {
        await kernel.apply(ns, ops);
      } catch (e) {
        // nothing half-built: a device this call created goes again
        if (action === 'created') await kernel.apply(ns, [{ op: 'link-del', name: this.device, ignoreMissing: true }]).catch(() => undefined);
        throw e;
      }
    }
    const l = await kernel.link(ns, this.device);
    if (!l) throw new Error(`tun: ${this.device} vanished right after it was set up`);
    if (action !== 'none') ctx.log?.info(`tun device ${action}`, { device: this.device, ifindex: l.index, mtu, reasons });
    return { backendData: { Port: this.port }, mtu, device: this.device, ifindex: l.index, action, reasons };
  }

  planPeers(own: NodeLease, peers: NodeLease[], actual: ActualState): PeerPlan {
    const errors: PeerError[] = [];
    const ownPub = tryParseIP(own.publicIP);
    const ok: { p: NodeLease; port: number; v4: string; v6?: string }[] = [];
    for (const { lease: p, v6 } of validatePeers(own, peers, errors)) {
      const port = validPort(p.backendData?.Port);
      if (port === undefined) {
        errors.push(peerError(p, `peer ${peerName(p)}: lease has no valid Port (${JSON.stringify(p.backendData?.Port)}): skipped until it has`));
        continue;
      }
      const pub = tryParseIP(p.publicIP)!;
      if (ownPub && pub.family !== ownPub.family) {
        errors.push(peerError(p, `peer ${peerName(p)}: underlay is IPv${pub.family}, this node's is IPv${ownPub.family}: skipped`));
        continue;
      }
      ok.push({ p, port, v4: canonCidr(p.subnet)!, ...(v6 && own.ipv6Subnet ? { v6: canonCidr(p.ipv6Subnet)! } : {}) });
    }

    const route = (dst: string) => ({ dst, dev: this.device, proto: PODNET_RTPROTO_STR });
    const desired: DesiredRoute[] = [];
    // the cluster networks, each its own entry: a foreign route on one refuses only that one
    for (const net of this.clusterNetworks) desired.push({ peer: { ...own, subnet: net }, spec: route(net), label: `cluster network ${net}` });
    for (const { p, v4, v6 } of ok) {
      desired.push({ peer: p, spec: route(v4) });
      if (v6) desired.push({ peer: p, spec: route(v6) });
    }
    const { dels, adds, refused } = diffRoutes(desired, actual.routes, errors);

    const locals = [canonCidr(own.subnet) ?? own.subnet, ...(own.ipv6Subnet ? [canonCidr(own.ipv6Subnet) ?? own.ipv6Subnet] : [])];
    const dpPeers: DatapathPeer[] = [];
    for (const { p, port, v4, v6 } of ok) {
      if (refused.has(p)) continue;
      const publicIP = canonicalIP(p.publicIP)!;
      dpPeers.push({ subnet: v4, publicIP, port });
      if (v6) dpPeers.push({ subnet: v6, publicIP, port });
    }
    return { ops: [...dels, ...adds], errors, datapath: { locals, peers: dpPeers } };
  }

  /** Writes podnet-tund's peers file (when it changed) and signals the daemon; no-op without dataDir. */
  syncDatapath(table: DatapathTable): void {
    if (this.dataDir === undefined) return;
    writePeers(this.dataDir, table);
  }
}

