// Pieces every mode shares: deterministic names, MACs, the pod-side plan, result assembly.
import { createHash, randomBytes } from 'node:crypto';
import type { KernelOp, RouteSpec } from '../../kernel/types.js';
import { isExists } from '../../kernel/exec.js';
import { CniError, ErrCode } from '../errors.js';
import type { CniIpConfig, CniRoute } from '../types.js';
import type { UndoStack } from '../undo.js';
import type { Attachment, ModeDeps } from './mode.js';
import { deleteLinkBatched } from './link-deleter.js';

/** Host-side veth name, deterministic per attachment so DEL and GC find it without state. */
export function hostVethName(containerId: string, ifname: string): string {
  return 'veth' + createHash('sha256').update(`${containerId}/${ifname}`).digest('hex').slice(0, 11);
}

/**
 * The alias of a bridge podnet's CNI created itself (bridge mode), so `podnet cleanup` knows it is
 * podnet's; a bridge that was there before keeps its own alias and is never taken over.
 */
export const BRIDGE_ALIAS = 'podnet-bridge';

/** Link alias marking who owns a host-side link; GC reads it back. */
export function ownerAlias(network: string, containerId: string, ifname: string): string {
  return `podnet:${network}:${containerId}:${ifname}`;
}

export function parseOwnerAlias(alias: string | undefined): { network: string; containerId: string; ifname: string } | undefined {
  if (!alias || !alias.startsWith('podnet:')) return undefined;
  const parts = alias.split(':');
  if (parts.length !== 4) return undefined;
  return { network: parts[1], containerId: parts[2], ifname: parts[3] };
}

/** A random locally administered unicast MAC; chosen up front so no read-back is needed. */
export function randomMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0] & 0xfe) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

export function isV6(addr: string): boolean {
  return addr.includes(':');
}

export function ipOnly(cidr: string): string {
  return cidr.split('/')[0];
}

export function hostCidr(ip: string): string {
  return `${ip}/${isV6(ip) ? 128 : 32}`;
}

export function defaultDst(v6: boolean): string {
  return v6 ? '::/0' : '0.0.0.0/0';
}

function routeSpec(r: CniRoute, dev: string, fallbackGw?: string): RouteSpec {
  const gw = r.gw ?? fallbackGw;
  const spec: RouteSpec = { dst: r.dst, dev };
  if (gw) spec.gateway = gw;
  if (r.mtu !== undefined) spec.mtu = r.mtu;
  if (r.advmss !== undefined) spec.advmss = r.advmss;
  if (r.priority !== undefined) spec.metric = r.priority;
  if (r.table !== undefined) spec.table = r.table;
  return spec;
}

/**
 * Routes for the pod: IPAM's routes (through the family's gateway when they name none), plus a
 * default route per family when asked for and not already present.
 */
export function podRoutes(ips: CniIpConfig[], ipamRoutes: CniRoute[], addDefault: boolean): CniRoute[] {
  const out: CniRoute[] = [];
  const gwOf = (v6: boolean) => ips.find((i) => isV6(i.address) === v6 && i.gateway)?.gateway;
  for (const r of ipamRoutes) {
    const v6 = isV6(r.dst);
    const gw = r.gw ?? gwOf(v6);
    out.push(gw ? { ...r, gw } : { ...r });
  }
  if (addDefault) {
    for (const v6 of [false, true]) {
      const gw = gwOf(v6);
      if (!gw) continue;
      if (out.some((r) => r.dst === defaultDst(v6) || (r.dst === 'default' && isV6(r.gw ?? '') === v6))) continue;
      out.push({ dst: defaultDst(v6), gw });
    }
  }
  return out;
}

/** Pod-side plan: addresses, link up, routes. Pure. */
export function planPodSide(ifname: string, addrs: string[], routes: CniRoute[], extraFirst: KernelOp[] = []): KernelOp[] {
  const ops: KernelOp[] = [...extraFirst];
  for (const a of addrs) ops.push({ op: 'addr-add', dev: ifname, cidr: a, nodad: isV6(a) });
  ops.push({ op: 'link-set', name: ifname, up: true });
  for (const r of routes) ops.push({ op: 'route-add', route: routeSpec(r, ifname) });
  return ops;
}

/**
 * Applies the host-side plan that creates an attachment's veth pair and registers its undo.
 * "exists" here means the pod already has the interface (or a stale host end is in the way).
 */
export async function createHostVeth(deps: ModeDeps, ops: KernelOp[], hostVeth: string, a: Attachment, undo: UndoStack): Promise<void> {
  try {
    await deps.kernel.apply(deps.host, ops);
  } catch (e) {
    if (isExists(e)) {
      throw new CniError(ErrCode.InterfaceExists, `interface ${a.ifname} already exists in ${(a.pod as { path: string }).path}, or host link ${hostVeth} exists (${(e as Error).message})`);
    }
    throw e;
  }
  undo.push(`delete ${hostVeth}`, () => deleteHostVeth(deps, a));
}

/**
 * sysctls for a host-side link podnet creates, set while it is still down. accept_dad=0: the
 * kernel sends a neighbour solicitation for a forwarded packet only from a non-tentative
 * link-local address of the outgoing link (ndisc_send_ns), so with DAD the first 1-2 s of a new
 * bridge or routed veth drop every IPv6 packet forwarded to its pods. The link's MAC is podnet's
 * own random one and nothing else is on the link to collide with.
 */
export function hostLinkSysctls(link: string, ipv6: boolean): Record<string, string> {
  return ipv6 ? { [`net/ipv6/conf/${link}/accept_dad`]: '0' } : {};
}

/** Deleting the host end removes the pod end (and the host routes through it) too. */
export function deleteHostVeth(deps: ModeDeps, a: Attachment): Promise<void> {
  return deleteLinkBatched(deps.kernel, deps.host, hostVethName(a.containerId, a.ifname));
}
