// routed mode: no bridge. The pod's address is a host address (/32, /128) on its veth; the host
// end carries the gateway address and a host route to the pod, so traffic between pods on one
// node is routed by the host, never switched. (The shape of the reference ptp plugin.)
import { CniError, ErrCode } from '../errors.js';
import type { KernelOp } from '../../kernel/types.js';
import type { CniIpConfig, CniResult, CniRoute } from '../types.js';
import type { UndoStack } from '../undo.js';
import { checkPodSide, routePresent } from './check.js';
import { createHostVeth, defaultDst, deleteHostVeth, hostCidr, hostLinkSysctls, hostVethName, ipOnly, isV6, ownerAlias, planPodSide, randomMac } from './common.js';
import type { Attachment, Mode, ModeAddInput, ModeDeps } from './mode.js';

export interface RoutedPlan {
  /** the veth (host end down), then hostSysctls, then host */
  link: KernelOp;
  hostSysctls: Record<string, string>;
  host: KernelOp[];
  pod: KernelOp[];
  podIps: CniIpConfig[];
  podRoutes: CniRoute[];
}

/** Pure: the veth, the host's gateway address and host route per IP, the pod's on-link gateway and routes. */
export function planRouted(p: {
  hostVeth: string;
  ifname: string;
  podNsPath: string;
  podMac: string;
  hostMac?: string;
  mtu?: number;
  alias: string;
  ips: CniIpConfig[];
  routes: CniRoute[];
}): RoutedPlan {
  const link: KernelOp = { op: 'link-add', spec: { kind: 'veth', name: p.hostVeth, mtu: p.mtu, mac: p.hostMac, peer: { name: p.ifname, netns: { kind: 'path', path: p.podNsPath }, mac: p.podMac, mtu: p.mtu } } };
  const host: KernelOp[] = [{ op: 'link-set', name: p.hostVeth, up: true, alias: p.alias }];
  const podIps: CniIpConfig[] = [];
  const onlink: KernelOp[] = [];
  const podRoutes: CniRoute[] = [];
  for (const ip of p.ips) {
    if (!ip.gateway) throw new CniError(ErrCode.InvalidConfig, `routed mode needs a gateway for ${ip.address} (ipam.ranges[].gateway)`);
    const addr = ipOnly(ip.address);
    const v6 = isV6(addr);
    host.push({ op: 'addr-add', dev: p.hostVeth, cidr: hostCidr(ip.gateway), nodad: v6, replace: true });
    host.push({ op: 'route-add', route: { dst: hostCidr(addr), dev: p.hostVeth, scope: 'link', src: ip.gateway }, replace: true });
    podIps.push({ address: hostCidr(addr), gateway: ip.gateway });
    // the gateway is reachable on the link although no prefix covers it
    onlink.push({ op: 'route-add', route: { dst: hostCidr(ip.gateway), dev: p.ifname, scope: 'link' } });
    const hasDefault = p.routes.some((r) => isV6(r.dst) === v6 && (r.dst === defaultDst(v6)));
    if (!hasDefault) podRoutes.push({ dst: defaultDst(v6), gw: ip.gateway });
  }
  for (const r of p.routes) {
    const gw = r.gw ?? p.ips.find((i) => isV6(i.address) === isV6(r.dst))?.gateway;
    podRoutes.push(gw ? { ...r, gw } : r);
  }
  const pod = planPodSide(p.ifname, podIps.map((i) => i.address), [], []);
  pod.push(...onlink);
  for (const r of podRoutes) pod.push({ op: 'route-add', route: { dst: r.dst, gateway: r.gw, dev: p.ifname } });
  return { link, hostSysctls: hostLinkSysctls(p.hostVeth, p.ips.some((i) => isV6(i.address))), host, pod, podIps, podRoutes };
}

export const routedMode: Mode = {
  ownsHostLinks: true,

  async preflight() {},

  async add(a: ModeAddInput, deps: ModeDeps, undo: UndoStack): Promise<CniResult> {
    const hostVeth = hostVethName(a.containerId, a.ifname);
    const podMac = randomMac();
    const hostMac = randomMac();
    const podNsPath = (a.pod as { path: string }).path;
    const plan = planRouted({
      hostVeth,
      ifname: a.ifname,
      podNsPath,
      podMac,
      hostMac,
      mtu: a.cfg.mtu,
      alias: ownerAlias(a.cfg.name, a.containerId, a.ifname),
      ips: a.ips,
      routes: a.routes,
    });
    await createHostVeth(deps, [plan.link], hostVeth, a, undo);
    await deps.kernel.sysctlSet(deps.host, plan.hostSysctls);
    await deps.kernel.apply(deps.host, plan.host);
    await deps.kernel.apply(a.pod, plan.pod);
    const interfaces = [
      { name: hostVeth, mac: hostMac, ...(a.cfg.mtu ? { mtu: a.cfg.mtu } : {}) },
      { name: a.ifname, mac: podMac, sandbox: podNsPath, ...(a.cfg.mtu ? { mtu: a.cfg.mtu } : {}) },
    ];
    return { cniVersion: a.cfg.cniVersion, interfaces, ips: plan.podIps.map((i) => ({ ...i, interface: 1 })), routes: plan.podRoutes };
  },

  del: (a: Attachment, deps: ModeDeps) => deleteHostVeth(deps, a),

  async check(a: Attachment, deps: ModeDeps, prev: CniResult): Promise<void> {
    const hostVeth = hostVethName(a.containerId, a.ifname);
    const host = await deps.kernel.link(deps.host, hostVeth);
    if (!host) throw new CniError(ErrCode.CheckFailed, `host veth ${hostVeth} is missing`);
    const hostRoutes = [...(await deps.kernel.routes(deps.host, { family: 4, dev: hostVeth })), ...(await deps.kernel.routes(deps.host, { family: 6, dev: hostVeth }))];
    for (const ip of prev.ips ?? []) {
      const addr = ipOnly(ip.address);
      if (!routePresent(hostRoutes, hostCidr(addr))) throw new CniError(ErrCode.CheckFailed, `host route to ${addr} via ${hostVeth} is missing`);
    }
    await checkPodSide(a, deps, prev);
  },
};
