// macvlan (underlay) mode: the pod's interface is a clone of the node's NIC, in the node's own
// subnet. A macvlan cannot talk to its parent, so the node reaches its underlay pods only
// through a macvlan leg of its own ("hostReachable"): the node's address as /32 on the leg and
// a host route per pod through it. ipvlan shares the code and is refused where the kernel lacks it.
import { createHash } from 'node:crypto';
import { CniError, ErrCode } from '../errors.js';
import { isExists } from '../../kernel/exec.js';
import type { KernelOp, Route } from '../../kernel/types.js';
import type { CniResult } from '../types.js';
import type { UndoStack } from '../undo.js';
import { checkPodSide } from './check.js';
import { canonicalIP } from '../../util/ip.js';
import { hostCidr, ipOnly, isV6, planPodSide, podRoutes, randomMac } from './common.js';
import type { Attachment, Mode, ModeAddInput, ModeDeps } from './mode.js';

/** Name of the node's own macvlan leg on `master` (deterministic, ≤ 15 characters). */
export function hostLegName(master: string): string {
  return 'pnh' + createHash('sha256').update(master).digest('hex').slice(0, 10);
}

export function defaultRouteDev(routes: Route[]): string | undefined {
  return routes.find((r) => r.dst === 'default' || r.dst === '0.0.0.0/0' || r.dst === '::/0')?.dev;
}

async function resolveMaster(a: Attachment, deps: ModeDeps): Promise<string> {
  if (a.cfg.master) {
    const l = await deps.kernel.link(deps.host, a.cfg.master);
    if (!l) throw new CniError(ErrCode.InvalidConfig, `master: interface ${JSON.stringify(a.cfg.master)} does not exist on the node`);
    return a.cfg.master;
  }
  const dev = defaultRouteDev(await deps.kernel.routes(deps.host, { family: 4 })) ?? defaultRouteDev(await deps.kernel.routes(deps.host, { family: 6 }));
  if (!dev) throw new CniError(ErrCode.InvalidConfig, 'master: not set and the node has no default route to take it from');
  return dev;
}

/** Pure: the leg (when missing) with the node's addresses as host addresses, and one route per pod IP. */
export function planHostLeg(p: { leg: string; master: string; legExists: boolean; nodeAddrs: string[]; legAddrs: string[]; podIps: string[] }): KernelOp[] {
  const ops: KernelOp[] = [];
  if (!p.legExists) {
    ops.push({ op: 'link-add', spec: { kind: 'macvlan', name: p.leg, master: p.master, mode: 'bridge' } });
  }
  ops.push({ op: 'link-set', name: p.leg, up: true });
  for (const n of p.nodeAddrs) {
    const c = hostCidr(n);
    if (!p.legAddrs.includes(c)) ops.push({ op: 'addr-add', dev: p.leg, cidr: c, nodad: isV6(n), noprefixroute: true, replace: true });
  }
  for (const ip of p.podIps) ops.push({ op: 'route-add', route: { dst: hostCidr(ip), dev: p.leg, scope: 'link' }, replace: true });
  return ops;
}

function makeMode(kind: 'macvlan' | 'ipvlan'): Mode & { master: (a: Attachment, d: ModeDeps) => Promise<string> } {
  return {
    ownsHostLinks: false,
    master: resolveMaster,

    async preflight(a: Attachment, deps: ModeDeps) {
      if (!(await deps.kernel.supportsLinkKind(kind))) {
        throw new CniError(ErrCode.UnsupportedKernelFeature, `mode ${kind}: this kernel cannot create ${kind} links (module missing or not built); use "mode": "macvlan" or "bridge"`);
      }
      await resolveMaster(a, deps);
      if (a.cfg.hostReachable && a.cfg.macvlanMode !== 'bridge') {
        throw new CniError(ErrCode.InvalidConfig, `hostReachable: needs "macvlanMode": "bridge" (is ${a.cfg.macvlanMode})`);
      }
    },

    async add(a: ModeAddInput, deps: ModeDeps, undo: UndoStack): Promise<CniResult> {
      const master = await resolveMaster(a, deps);
      const podNsPath = (a.pod as { path: string }).path;
      const mac = randomMac();
      try {
        await deps.kernel.apply(deps.host, [
          { op: 'link-add', spec: { kind, name: a.ifname, master, mode: a.cfg.macvlanMode, netns: a.pod, mtu: a.cfg.mtu, mac: kind === 'macvlan' ? mac : undefined } },
        ]);
      } catch (e) {
        if (isExists(e)) throw new CniError(ErrCode.InterfaceExists, `interface ${a.ifname} already exists in ${podNsPath}`);
        throw e;
      }
      undo.push(`delete ${a.ifname} in pod`, () => deps.kernel.apply(a.pod, [{ op: 'link-del', name: a.ifname, ignoreMissing: true }]));
      const routes = podRoutes(a.ips, a.routes, true);
      await deps.kernel.apply(a.pod, planPodSide(a.ifname, a.ips.map((i) => i.address), routes));
      if (a.cfg.hostReachable) {
        const leg = hostLegName(master);
        const legLink = await deps.kernel.link(deps.host, leg);
        const nodeAddrs = (await deps.kernel.addresses(deps.host, master)).filter((x) => x.scope === 'global').map((x) => x.address);
        const legAddrs = legLink ? (await deps.kernel.addresses(deps.host, leg)).map((x) => `${x.address}/${x.prefixLen}`) : [];
        const podIps = a.ips.map((i) => ipOnly(i.address));
        try {
          await deps.kernel.apply(deps.host, planHostLeg({ leg, master, legExists: !!legLink, nodeAddrs, legAddrs, podIps }));
        } catch (e) {
          if (!isExists(e)) throw e;
          // a concurrent ADD made the leg: add only our routes
          await deps.kernel.apply(deps.host, planHostLeg({ leg, master, legExists: true, nodeAddrs: [], legAddrs: [], podIps }));
        }
        undo.push('remove host routes to pod', () => removeHostRoutes(deps, master, podIps));
      }
      // ipvlan shares its parent's MAC, so only that case needs a read-back
      const podMac = kind === 'macvlan' ? mac : (await deps.kernel.link(a.pod, a.ifname))?.mac;
      return {
        cniVersion: a.cfg.cniVersion,
        interfaces: [{ name: a.ifname, mac: podMac, sandbox: podNsPath, ...(a.cfg.mtu ? { mtu: a.cfg.mtu } : {}) }],
        ips: a.ips.map((i) => ({ ...i, interface: 0 })),
        routes,
      };
    },

    async del(a: Attachment, deps: ModeDeps, ips: string[]): Promise<void> {
      if (a.cfg.hostReachable && ips.length) {
        const master = await resolveMaster(a, deps).catch(() => undefined);
        if (master) await removeHostRoutes(deps, master, ips);
      }
      // the interface lives in the pod netns: gone with it, or deleted here while it exists
      if (a.ctx.env.netns && (await deps.kernel.netnsId(a.pod))) {
        await deps.kernel.apply(a.pod, [{ op: 'link-del', name: a.ifname, ignoreMissing: true }]);
      }
    },

    async check(a: Attachment, deps: ModeDeps, prev: CniResult): Promise<void> {
      const l = await deps.kernel.link(a.pod, a.ifname);
      if (l && l.kind !== kind) throw new CniError(ErrCode.CheckFailed, `interface ${a.ifname} is a ${l.kind ?? 'device'}, expected ${kind}`);
      await checkPodSide(a, deps, prev);
    },
  };
}

/**
 * GC: host routes on the leg to addresses of this network that no attachment holds any more
 * (their pods were killed without DEL). `mine` says whether an address is in this network's
 * ranges — other networks may share the leg — and `held` lists what is still reserved.
 */
export async function gcHostRoutes(deps: ModeDeps, master: string, mine: (ip: string) => boolean, held: Set<string>): Promise<number> {
  const leg = hostLegName(master);
  if (!(await deps.kernel.link(deps.host, leg))) return 0;
  const routes = await deps.kernel.routes(deps.host, { dev: leg });
  const stale = routes.map((r) => canonicalIP(ipOnly(r.dst)) ?? ipOnly(r.dst)).filter((ip) => mine(ip) && !held.has(ip));
  if (stale.length) await removeHostRoutes(deps, master, stale);
  return stale.length;
}

async function removeHostRoutes(deps: ModeDeps, master: string, ips: string[]): Promise<void> {
  const leg = hostLegName(master);
  await deps.kernel.apply(
    deps.host,
    ips.map((ip) => ({ op: 'route-del', route: { dst: hostCidr(ip), dev: leg }, ignoreMissing: true }) as KernelOp),
  );
}

export const macvlanMode = makeMode('macvlan');
export const ipvlanMode = makeMode('ipvlan');
