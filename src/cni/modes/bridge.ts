// bridge mode (default): the reference bridge plugin's datapath. The pod's veth peer is created
// directly inside the pod netns, the host end is enslaved to a Linux bridge that (with
// isGateway) carries the gateway addresses.
import { CniError, ErrCode } from '../errors.js';
import { isExists } from '../../kernel/exec.js';
import type { KernelOp, Link } from '../../kernel/types.js';
import { contains, formatCidr, masked, parseCidr } from '../../util/ip.js';
import type { CniInterface, CniIpConfig, CniResult } from '../types.js';
import type { UndoStack } from '../undo.js';
import { checkPodSide } from './check.js';
import { BRIDGE_ALIAS, createHostVeth, deleteHostVeth, hostLinkSysctls, hostVethName, isV6, ownerAlias, planPodSide, podRoutes, randomMac } from './common.js';
import type { Attachment, Mode, ModeAddInput, ModeDeps } from './mode.js';

/** Gateway addresses the bridge must carry (gw/prefix of each IP's subnet). Pure. */
export function bridgeGatewayAddrs(ips: CniIpConfig[]): string[] {
  const out: string[] = [];
  for (const ip of ips) {
    if (!ip.gateway) continue;
    const prefix = parseCidr(ip.address).prefix;
    const a = `${ip.gateway}/${prefix}`;
    if (!out.includes(a)) out.push(a);
  }
  return out;
}

/**
 * What must change on the bridge's addresses: add missing gateways; with forceAddress remove
 * other addresses of the same subnet, without it refuse them (as the reference plugin does).
 */
export function planBridgeAddrs(bridge: string, want: string[], have: string[], force: boolean): KernelOp[] {
  const ops: KernelOp[] = [];
  for (const w of want) {
    if (have.includes(w)) continue;
    const wc = parseCidr(w);
    const net = masked(wc);
    const clash = have.filter((h) => {
      const hc = parseCidr(h);
      return hc.family === wc.family && contains(net, hc.addr) && formatCidr(hc) !== w;
    });
    for (const c of clash) {
      if (!force) {
        throw new CniError(ErrCode.InvalidConfig, `bridge ${bridge} already has address ${c} in ${formatCidr(net)}, different from ${w}; set "forceAddress": true to replace it`);
      }
      ops.push({ op: 'addr-del', dev: bridge, cidr: c, ignoreMissing: true });
    }
    ops.push({ op: 'addr-add', dev: bridge, cidr: w, nodad: isV6(w), replace: true });
  }
  return ops;
}

export interface BridgePlanInput {
  bridge: string;
  hostVeth: string;
  ifname: string;
  podNsPath: string;
  podMac: string;
  hostMac: string;
  mtu?: number;
  hairpin: boolean;
  alias: string;
}

/** Host-side ops that create the veth (peer straight into the pod) and plug it into the bridge. Pure. */
export function planBridgeVeth(p: BridgePlanInput): KernelOp[] {
  return [
    {
      op: 'link-add',
      spec: { kind: 'veth', name: p.hostVeth, mtu: p.mtu, mac: p.hostMac, peer: { name: p.ifname, netns: { kind: 'path', path: p.podNsPath }, mac: p.podMac, mtu: p.mtu } },
    },
    { op: 'link-set', name: p.hostVeth, master: p.bridge, up: true, alias: p.alias },
    ...(p.hairpin ? [{ op: 'link-set', name: p.hostVeth, hairpin: true } as KernelOp] : []),
  ];
}

async function ensureBridge(deps: ModeDeps, name: string, mtu: number | undefined, promisc: boolean, ipv6: boolean): Promise<Link> {
  const have = await deps.kernel.link(deps.host, name);
  if (have) {
    if (have.kind !== 'bridge') throw new CniError(ErrCode.InvalidConfig, `bridge: ${name} exists but is a ${have.kind ?? 'non-bridge'} device, not a bridge`);
    const fix: KernelOp[] = [];
    if (!have.up) fix.push({ op: 'link-set', name, up: true });
    if (promisc && !have.promisc) fix.push({ op: 'link-set', name, promisc: true });
    if (fix.length) await deps.kernel.apply(deps.host, fix);
    return have;
  }
  try {
    await deps.kernel.apply(deps.host, [{ op: 'link-add', spec: { kind: 'bridge', name, mtu, mac: randomMac() } }]);
    await deps.kernel.sysctlSet(deps.host, hostLinkSysctls(name, ipv6));
    await deps.kernel.apply(deps.host, [{ op: 'link-set', name, up: true, alias: BRIDGE_ALIAS, ...(promisc ? { promisc: true } : {}) }]);
  } catch (e) {
    // a concurrent ADD created it first: fine, use theirs (it brings it up)
    if (!isExists(e)) throw e;
  }
  const made = await deps.kernel.link(deps.host, name);
  if (!made) throw new CniError(ErrCode.KernelFailure, `bridge ${name} vanished right after creation`);
  // the concurrent ADD that created it may not have brought it up yet
  if (!made.up) await deps.kernel.apply(deps.host, [{ op: 'link-set', name, up: true }]);
  return made;
}

export const bridgeMode: Mode = {
  ownsHostLinks: true,

  async preflight() {},

  async add(a: ModeAddInput, deps: ModeDeps, undo: UndoStack): Promise<CniResult> {
    const { cfg } = a;
    const br = await ensureBridge(deps, cfg.bridge, cfg.mtu, cfg.promiscMode, a.ips.some((i) => isV6(i.address)));
    const hostVeth = hostVethName(a.containerId, a.ifname);
    const podMac = randomMac();
    // both MACs chosen here, so the result needs no read-back
    const hostMac = randomMac();
    const hostOps: KernelOp[] = [];
    if (cfg.isGateway) {
      const have = (await deps.kernel.addresses(deps.host, cfg.bridge)).map((x) => `${x.address}/${x.prefixLen}`);
      hostOps.push(...planBridgeAddrs(cfg.bridge, bridgeGatewayAddrs(a.ips), have, cfg.forceAddress));
    }
    const vethOps = planBridgeVeth({
      bridge: cfg.bridge,
      hostVeth,
      ifname: a.ifname,
      podNsPath: (a.pod as { path: string }).path,
      podMac,
      hostMac,
      mtu: cfg.mtu,
      hairpin: cfg.hairpinMode,
      alias: ownerAlias(cfg.name, a.containerId, a.ifname),
    });
    await createHostVeth(deps, [...hostOps, ...vethOps], hostVeth, a, undo);
    const routes = podRoutes(a.ips, a.routes, cfg.isDefaultGateway);
    await deps.kernel.apply(a.pod, planPodSide(a.ifname, a.ips.map((i) => i.address), routes));
    const interfaces: CniInterface[] = [
      { name: cfg.bridge, mac: br.mac },
      { name: hostVeth, mac: hostMac },
      { name: a.ifname, mac: podMac, sandbox: (a.pod as { path: string }).path },
    ];
    if (cfg.mtu) for (const i of interfaces) i.mtu = cfg.mtu;
    return {
      cniVersion: cfg.cniVersion,
      interfaces,
      ips: a.ips.map((i) => ({ ...i, interface: 2 })),
      routes,
    };
  },

  del: (a: Attachment, deps: ModeDeps) => deleteHostVeth(deps, a),

  async check(a: Attachment, deps: ModeDeps, prev: CniResult): Promise<void> {
    const hostVeth = hostVethName(a.containerId, a.ifname);
    const host = await deps.kernel.link(deps.host, hostVeth);
    if (!host) throw new CniError(ErrCode.CheckFailed, `host veth ${hostVeth} is missing`);
    if (host.master !== a.cfg.bridge) throw new CniError(ErrCode.CheckFailed, `host veth ${hostVeth} is not attached to bridge ${a.cfg.bridge} (master: ${host.master ?? 'none'})`);
    const br = await deps.kernel.link(deps.host, a.cfg.bridge);
    if (!br) throw new CniError(ErrCode.CheckFailed, `bridge ${a.cfg.bridge} is missing`);
    await checkPodSide(a, deps, prev);
  },
};
