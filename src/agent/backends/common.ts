// Planning code both backends share: peer validation and the route diff. Pure (no I/O): everything
// the plan depends on comes in as arguments, so plans are unit-testable and printable.
//
// Route diff rules (flannel#2554: routes of nodes deleted while the agent was down must go too):
//   - desired routes are keyed by destination prefix in the main table;
//   - a podnet route (proto 80) with that key but other attributes is replaced;
//   - a podnet route whose key is not desired is deleted, whoever it once belonged to;
//   - a FOREIGN route (any other proto) on a desired key is never replaced: that peer is refused
//     with an error naming the route, because `ip route replace` would silently take it over.
import type { KernelAdapter, KernelOp, Link, NetnsRef, Route, RouteSpec } from '../../kernel/types.js';
import { describeOp } from '../../kernel/render.js';
import type { NodeLease } from '../lease.js';
import { canonicalIP, formatCidr, formatIP, masked, network, overlaps, parseCidr, size, tryParseCidr, type Cidr } from '../../util/ip.js';
import { PODNET_RTPROTO_STR, type PeerError } from './types.js';

export function peerError(p: NodeLease, message: string): PeerError {
  return { peer: p.subnet, ...(p.nodeName ? { nodeName: p.nodeName } : {}), publicIP: p.publicIP, message };
}

export function peerName(p: NodeLease): string {
  return `${p.nodeName ? `${p.nodeName} ` : ''}(subnet ${p.subnet}, public IP ${p.publicIP})`;
}

const canonCidrs = new Map<string, string | null>();

/** a canonical CIDR in network form, or undefined (memoized: every pass asks for every peer's) */
export function canonCidr(s: string | undefined): string | undefined {
  if (!s) return undefined;
  const hit = canonCidrs.get(s);
  if (hit !== undefined) return hit ?? undefined;
  const c = tryParseCidr(s);
  const r = c ? formatCidr(masked(c)) : undefined;
  if (canonCidrs.size >= 100_000) canonCidrs.clear();
  canonCidrs.set(s, r ?? null);
  return r;
}

export function isPodnetRoute(r: Route): boolean {
  return r.protocol === PODNET_RTPROTO_STR && (r.table === undefined || r.table === 254) && (r.type === undefined || r.type === 'unicast');
}

function routeKey(r: { dst: string }): string {
  return canonCidr(r.dst) ?? r.dst;
}

/** A peer's subnets as parsed CIDRs, after the checks common to every backend. */
export interface ValidPeer {
  lease: NodeLease;
  v4: Cidr;
  v6?: Cidr;
}

/**
 * Drops the own lease, and refuses peers whose lease is malformed, whose backend differs, or whose
 * subnets overlap the own subnets or an earlier peer's (two routes for one block would flap).
 */
export function validatePeers(own: NodeLease, peers: NodeLease[], errors: PeerError[]): ValidPeer[] {
  const ownV4 = tryParseCidr(own.subnet);
  const ownV6 = own.ipv6Subnet ? tryParseCidr(own.ipv6Subnet) : undefined;
  const own4 = ownV4 ? [ownV4] : [];
  const taken6: Cidr[] = ownV6 ? [ownV6] : [];
  const out: ValidPeer[] = [];
  // sorted by address so that which of two overlapping peers wins does not depend on the store's
  // order, and so that an overlap with an earlier peer is one comparison with the furthest end
  // seen so far (a pairwise check is quadratic: 300 ms at 1,000 peers)
  const keyed = peers.map((p) => ({ p, c: tryParseCidr(p.subnet) }));
  keyed.sort((a, b) => {
    const av = a.c?.addr.value ?? -1n;
    const bv = b.c?.addr.value ?? -1n;
    return av < bv ? -1 : av > bv ? 1 : a.p.subnet < b.p.subnet ? -1 : a.p.subnet > b.p.subnet ? 1 : 0;
  });
  let furthest: { end: bigint; cidr: Cidr } | undefined;
  for (const { p, c: v4 } of keyed) {
    if (canonCidr(p.subnet) === canonCidr(own.subnet)) continue;
    if (!v4 || v4.family !== 4) {
      errors.push(peerError(p, `peer ${peerName(p)}: subnet is not an IPv4 CIDR`));
      continue;
    }
    if (!canonicalIP(p.publicIP)) {
      errors.push(peerError(p, `peer ${peerName(p)}: public IP is not an IP address`));
      continue;
    }
    if (p.backendType !== own.backendType) {
      errors.push(peerError(p, `peer ${peerName(p)} uses backend ${p.backendType}, this node ${own.backendType}: skipped`));
      continue;
    }
    let v6: Cidr | undefined;
    if (p.ipv6Subnet) {
      v6 = tryParseCidr(p.ipv6Subnet);
      if (!v6 || v6.family !== 6) {
        errors.push(peerError(p, `peer ${peerName(p)}: ipv6Subnet ${p.ipv6Subnet} is not an IPv6 CIDR`));
        continue;
      }
    }
    const net = masked(v4);
    const start = net.addr.value;
    const clash4 = own4.find((t) => overlaps(t, v4)) ?? (furthest && furthest.end >= start ? furthest.cidr : undefined);
    const clash = clash4 ? ([v4, clash4] as const) : v6 ? taken6.filter((t) => overlaps(t, v6!)).map((t) => [v6!, t] as const)[0] : undefined;
    if (clash) {
      errors.push(peerError(p, `peer ${peerName(p)}: ${formatCidr(clash[0])} overlaps ${formatCidr(clash[1])} (own or another peer's subnet): skipped`));
      continue;
    }
    const end = start + size(net) - 1n;
    if (!furthest || end > furthest.end) furthest = { end, cidr: v4 };
    if (v6) taken6.push(v6);
    out.push({ lease: p, v4, ...(v6 ? { v6 } : {}) });
  }
  return out;
}

export interface DesiredRoute {
  spec: RouteSpec;
  /** whose route it is: a refusal drops every route of this peer */
  peer: NodeLease;
  /** how a refusal names it (default "peer NAME") */
  label?: string;
}

/** the kernel's metric for a route added without one; `route replace` overwrites that route in place */
function defaultMetric(r: Route): number {
  return r.family === 6 ? 1024 : 0;
}

function sameRoute(a: Route, want: RouteSpec): boolean {
  return (
    canonicalIP(a.gateway ?? '') === canonicalIP(want.gateway ?? '') &&
    (a.dev ?? '') === (want.dev ?? '') &&
    !!a.onlink === !!want.onlink &&
    // podnet adds without a metric: the kernel's default (0 for IPv4, 1024 for IPv6)
    (a.metric ?? defaultMetric(a)) === (want.metric ?? defaultMetric(a)) &&
    // an MTU we do not set must not be there either (a stale hand-made change is corrected)
    (a.mtu ?? 0) === (want.mtu ?? 0)
  );
}

/** The spec that deletes exactly this route (proto and metric pinned so only that one goes). */
export function routeDelSpec(r: Route): RouteSpec {
  const spec: RouteSpec = { dst: r.dst, family: r.family, proto: PODNET_RTPROTO_STR };
  if (r.gateway) spec.gateway = r.gateway;
  if (r.dev) spec.dev = r.dev;
  if (r.metric !== undefined) spec.metric = r.metric;
  return spec;
}

/**
 * Route ops: deletions (stale podnet routes) and additions/replacements. Peers whose desired route
 * collides with a foreign route are reported and none of their routes are planned.
 */
export function diffRoutes(desired: DesiredRoute[], actual: Route[], errors: PeerError[]): { dels: KernelOp[]; adds: KernelOp[]; refused: Set<NodeLease> } {
  const mine = new Map<string, Route[]>();
  const foreign = new Map<string, Route>();
  for (const r of actual) {
    if (r.dst === 'default' || (r.table !== undefined && r.table !== 254)) continue;
    if (isPodnetRoute(r)) {
      const k = routeKey(r);
      mine.set(k, [...(mine.get(k) ?? []), r]);
    } else {
      // any other route to the same prefix, whatever its metric: ours would either replace it or
      // shadow it, and either way podnet would be deciding over a route it does not own
      foreign.set(routeKey(r), r);
    }
  }
  const refused = new Set<NodeLease>();
  for (const d of desired) {
    const f = foreign.get(routeKey(d.spec));
    if (f && !refused.has(d.peer)) {
      refused.add(d.peer);
      errors.push(
        peerError(
          d.peer,
          `${d.label ?? `peer ${peerName(d.peer)}`}: a route to ${f.dst} not created by podnet exists (proto ${f.protocol ?? '?'}${f.dev ? `, dev ${f.dev}` : ''}${f.gateway ? `, via ${f.gateway}` : ''}); podnet does not replace it: skipped`,
        ),
      );
    }
  }
  const want = new Map<string, RouteSpec>();
  for (const d of desired) if (!refused.has(d.peer)) want.set(routeKey(d.spec), d.spec);
  const dels: KernelOp[] = [];
  const adds: KernelOp[] = [];
  for (const [k, rs] of mine) {
    const w = want.get(k);
    const keep = w ? rs.find((r) => sameRoute(r, w)) : undefined;
    for (const r of rs) {
      if (r === keep) continue;
      if (w && !keep && (r.metric ?? defaultMetric(r)) === defaultMetric(r)) continue; // replaced below
      dels.push({ op: 'route-del', route: routeDelSpec(r), ignoreMissing: true });
    }
    if (keep) want.delete(k);
  }
  for (const spec of want.values()) adds.push({ op: 'route-add', route: spec, replace: true });
  return { dels, adds, refused };
}

/** One line per op, the way the reconciler reports and logs them. */
export function describePlan(ops: KernelOp[]): string[] {
  return ops.map((o) => describeOp(o));
}

/** A subnet's network address (10.244.2.0/24 → 10.244.2.0): the address a tunnel device holds. */
export function subnetAddr(subnet: string): string {
  return formatIP(network(parseCidr(subnet)));
}

/**
 * The ops that leave a tunnel device (vxlan, tun) with exactly the own subnet's network address
 * /32 (and the IPv6 subnet's /128), appended to `ops`; what differs is noted in `reasons` when the
 * device was adopted. `existing`: the device is kept (its addresses are read); IPv6 link-local
 * addresses are the kernel's and stay.
 */
export async function planDeviceAddresses(
  kernel: KernelAdapter,
  ns: NetnsRef,
  device: string,
  own: { subnet: string; ipv6Subnet?: string },
  existing: boolean,
  adopted: boolean,
  ops: KernelOp[],
  reasons: string[],
): Promise<void> {
  const want = [`${subnetAddr(own.subnet)}/32`, ...(own.ipv6Subnet ? [`${subnetAddr(own.ipv6Subnet)}/128`] : [])];
  const have = existing ? (await kernel.addresses(ns, device)).filter((a) => !(a.family === 6 && a.scope === 'link')).map((a) => `${canonicalIP(a.address)}/${a.prefixLen}`) : [];
  for (const h of have) {
    if (!want.includes(h)) {
      reasons.push(`stray address ${h} removed`);
      ops.push({ op: 'addr-del', dev: device, cidr: h, ignoreMissing: true });
    }
  }
  for (const w of want) {
    if (!have.includes(w)) {
      if (adopted) reasons.push(`address ${w} added`);
      ops.push({ op: 'addr-add', dev: device, cidr: w, nodad: true });
    }
  }
}

/**
 * The device with its kind-specific data (vxlan: VNI, local, port, learning; tun: type, vnet_hdr,
 * pi, persist). The netlink adapter's link() answers without IFLA_INFO_DATA (it leaves `info`
 * unset); links() comes from iproute2's detailed dump and has it. One extra read, only when a
 * device of that kind exists and only in ensureDevice.
 */
export async function detailedLink(kernel: KernelAdapter, ns: NetnsRef, name: string, kind: string): Promise<Link | undefined> {
  const l = await kernel.link(ns, name);
  if (!l || l.info !== undefined || l.kind !== kind) return l;
  return (await kernel.links(ns)).find((x) => x.name === name) ?? l;
}
