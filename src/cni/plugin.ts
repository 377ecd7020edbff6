// The `podnet` CNI plugin: IPAM, then the mode's wiring, then shared host state (forwarding,
// masquerade), all under one undo stack so a failed ADD leaves nothing behind.
import { readFileSync } from 'node:fs';
import { CniError, ErrCode } from './errors.js';
import { parseEnvFile } from '../ipam/subnetfile.js';
import { parsePodnetConfig, type Mode as ModeName, type PodnetConfig } from './config.js';
import { ipamClient } from './ipam-client.js';
import type { MasqEntry } from './masq.js';
import { choosePodFirewall, type PodFirewall } from './podfw/index.js';
import { bridgeMode } from './modes/bridge.js';
import { hostVethName, ipOnly, isV6, parseOwnerAlias } from './modes/common.js';
import { macvlanMode, ipvlanMode, gcHostRoutes } from './modes/macvlan.js';
import { routedMode } from './modes/routed.js';
import type { Attachment, Mode, ModeDeps } from './modes/mode.js';
import { timed, type CniContext, type CniPlugin } from './skel.js';
import type { Attachment as GcAttachment, CniResult } from './types.js';
import { UndoStack } from './undo.js';
import { defaultKernel, defaultNft } from '../kernel/index.js';
import { formatCidr, masked, parseCidr, parseIP } from '../util/ip.js';
import { loadIpamConfig } from '../ipam/config.js';
import { listReservations } from '../ipam/store.js';
import { findRange } from '../ipam/allocator.js';
import { hostportOwner, hostportOwnerPrefix, missingElements, parsePortMappings, planHostports, type PortMapping } from './hostport.js';
import { ConntrackCli, flushAddConntrack, flushDelConntrack, type ConntrackRunner } from './hostport-apply.js';

const MODES: Record<ModeName, Mode> = { bridge: bridgeMode, routed: routedMode, macvlan: macvlanMode, ipvlan: ipvlanMode };

/** nft element comment naming the attachment (hashed like the host veth, so any ifname fits). */
export function masqOwner(network: string, containerId: string, ifname: string): string {
  return `${network}:${hostVethName(containerId, ifname)}`;
}

function attachment(ctx: CniContext, cfg: PodnetConfig): Attachment {
  return { ctx, cfg, pod: { kind: 'path', path: ctx.env.netns }, ifname: ctx.env.ifname, containerId: ctx.env.containerId };
}

/** A chained plugin appends to prevResult and keeps its interface indices straight. */
export function mergeResults(prev: CniResult | undefined, ours: CniResult): CniResult {
  if (!prev) return ours;
  const base = prev.interfaces?.length ?? 0;
  return {
    cniVersion: ours.cniVersion,
    interfaces: [...(prev.interfaces ?? []), ...(ours.interfaces ?? [])],
    ips: [...(prev.ips ?? []), ...(ours.ips ?? []).map((i) => (i.interface === undefined ? i : { ...i, interface: i.interface + base }))],
    routes: [...(prev.routes ?? []), ...(ours.routes ?? [])],
    dns: ours.dns && Object.keys(ours.dns).length ? ours.dns : prev.dns,
  };
}

export function isOrphanHostVeth(l: { name: string; alias?: string; master?: string; up: boolean }): boolean {
  return /^veth[0-9a-f]{11}$/.test(l.name) && !l.alias && !l.master && !l.up;
}

function validAttachments(conf: Record<string, unknown>): GcAttachment[] {
  const raw = conf['cni.dev/valid-attachments'] ?? conf['cni.dev/attachments'];
  // without the list, "everything else is stale" would mean every pod on the node
  if (raw === undefined) throw new CniError(ErrCode.InvalidConfig, 'GC needs cni.dev/valid-attachments (or the older cni.dev/attachments) in the config');
  if (!Array.isArray(raw)) throw new CniError(ErrCode.InvalidConfig, 'cni.dev/valid-attachments: expected a list');
  return raw.map((x, i) => {
    const o = x as Record<string, unknown>;
    if (typeof o?.containerID !== 'string' || typeof o?.ifname !== 'string') {
      throw new CniError(ErrCode.InvalidConfig, `cni.dev/valid-attachments[${i}]: expected {containerID, ifname}`);
    }
    return { containerID: o.containerID, ifname: o.ifname };
  });
}

async function ensureForwarding(deps: ModeDeps, ips: string[]): Promise<void> {
  const want: Record<string, string> = {};
  if (ips.some((i) => !isV6(i))) want['net.ipv4.ip_forward'] = '1';
  if (ips.some((i) => isV6(i))) want['net.ipv6.conf.all.forwarding'] = '1';
  const missing: Record<string, string> = {};
  for (const [k, v] of Object.entries(want)) if ((await deps.kernel.sysctlGet(deps.host, k)).trim() !== v) missing[k] = v;
  if (Object.keys(missing).length) await deps.kernel.sysctlSet(deps.host, missing);
}

interface LeaseInfo {
  mtu?: number;
  /** the cluster networks: pod traffic to them is not masqueraded (it is another node's pod) */
  networks: string[];
}

/**
 * What the agent's subnet file says beyond the range (flannel's habit): pods behind an overlay
 * need its MTU when the config sets none, and ipMasq must leave traffic to other nodes' pods
 * alone. Underlay (macvlan/ipvlan) pods keep the NIC's MTU.
 */
function leaseInfo(cfg: PodnetConfig): LeaseInfo {
  const file = cfg.ipam.subnetFile;
  if (typeof file !== 'string') return { networks: [] };
  try {
    const env = parseEnvFile(readFileSync(file, 'utf8'));
    const mtu = Number(env.PODNET_MTU);
    return {
      mtu: Number.isInteger(mtu) && mtu >= 68 && cfg.mode !== 'macvlan' && cfg.mode !== 'ipvlan' ? mtu : undefined,
      networks: [env.PODNET_NETWORK, env.PODNET_IPV6_NETWORK].filter((x): x is string => !!x),
    };
  } catch {
    return { networks: [] }; // IPAM reports the missing lease with its own code (11)
  }
}

/** runtimeConfig.portMappings, validated; hostPorts need a node that routes to the pod. */
function portMappings(cfg: PodnetConfig): PortMapping[] {
  const m = parsePortMappings(cfg.runtimeConfig);
  if (m.length && (cfg.mode === 'macvlan' || cfg.mode === 'ipvlan') && !cfg.hostReachable) {
    throw new CniError(ErrCode.InvalidConfig, `runtimeConfig.portMappings: hostPort in ${cfg.mode} mode needs "hostReachable": true (the node must reach its pods)`);
  }
  return m;
}

/** DEL must not fail on a runtimeConfig it cannot read: the mappings only refine the conntrack flush. */
function portMappingsLenient(cfg: PodnetConfig): PortMapping[] {
  try {
    return parsePortMappings(cfg.runtimeConfig);
  } catch {
    return [];
  }
}

export function createPodnetPlugin(over: Partial<ModeDeps> & { conntrack?: ConntrackRunner } = {}): CniPlugin {
  const deps: ModeDeps = { kernel: over.kernel ?? defaultKernel(), nft: over.nft ?? defaultNft(), host: over.host ?? { kind: 'current' } };
  const conntrack = over.conntrack ?? new ConntrackCli();
  let podfw: PodFirewall | undefined;
  // chosen on first use: a plugin process that only answers VERSION opens no socket
  const fw = (): PodFirewall => (podfw ??= choosePodFirewall(deps.nft, deps.host, { injectedNft: over.nft !== undefined }));

  return {
    name: 'podnet',

    async add(ctx) {
      const parsed = parsePodnetConfig(ctx.conf);
      const lease = leaseInfo(parsed);
      const cfg = parsed.mtu === undefined && lease.mtu ? { ...parsed, mtu: lease.mtu } : parsed;
      const mode = MODES[cfg.mode];
      const a = attachment(ctx, cfg);
      const mappings = portMappings(cfg);
      await mode.preflight(a, deps);
      const ipam = ipamClient(cfg.ipamType);
      const undo = new UndoStack();
      try {
        const ipamRes = await timed(ctx, 'ipam', () => ipam.add(ctx));
        undo.push('release IPAM allocation', () => ipam.del(ctx));
        const ips = ipamRes.ips ?? [];
        if (!ips.length) throw new CniError(ErrCode.InvalidConfig, `IPAM plugin ${cfg.ipamType} returned no IP addresses`);
        const res = await timed(ctx, 'netlink', () => mode.add({ ...a, ips, routes: ipamRes.routes ?? [] }, deps, undo));
        const addrs = ips.map((i) => ipOnly(i.address));
        // hostPort traffic is forwarded to the pod whatever the mode
        if (cfg.mode === 'routed' || (cfg.mode === 'bridge' && cfg.isGateway) || mappings.length) await timed(ctx, 'sysctl', () => ensureForwarding(deps, addrs));
        if (cfg.ipMasq) {
          const owner = masqOwner(cfg.name, a.containerId, a.ifname);
          const entries: MasqEntry[] = ips.map((i) => {
            const own = masked(parseCidr(i.address));
            const cluster = lease.networks.find((n) => parseCidr(n).family === own.family);
            return { ip: ipOnly(i.address), network: cluster ?? formatCidr(own) };
          });
          await timed(ctx, 'nft-masq', () => fw().masqAdd(entries, owner));
          undo.push('remove masquerade elements', async () => void (await fw().masqRemove(owner, addrs)));
        }
        if (mappings.length) {
          const owner = hostportOwner(cfg.name, a.containerId, a.ifname);
          const plan = planHostports(mappings, addrs, owner);
          await timed(ctx, 'nft-hostport', () => fw().hostportAdd(plan, () => undo.push('remove hostPort elements', async () => void (await fw().hostportRemove((o) => o === owner, addrs)))));
          await timed(ctx, 'conntrack', () => flushAddConntrack(conntrack, deps.host, plan.elements));
        }
        const dns = ipamRes.dns && Object.keys(ipamRes.dns).length ? ipamRes.dns : (cfg.dns as CniResult['dns']);
        if (dns) res.dns = dns;
        undo.clear();
        return mergeResults(ctx.prevResult, res);
      } catch (e) {
        await undo.unwind(ctx.log);
        throw e;
      }
    },

    async del(ctx) {
      const cfg = parsePodnetConfig(ctx.conf);
      const mode = MODES[cfg.mode];
      const a = attachment(ctx, cfg);
      const errors: Error[] = [];
      const step = async (what: string, fn: () => Promise<unknown>, profileAs: string) => {
        try {
          await timed(ctx, profileAs, fn);
        } catch (e) {
          ctx.log.warn('DEL step failed', { step: what, error: (e as Error).message });
          errors.push(e as Error);
        }
      };
      let ips = (ctx.prevResult?.ips ?? []).map((i) => ipOnly(i.address));
      if (!ips.length && cfg.mode !== 'bridge' && cfg.mode !== 'routed' && cfg.hostReachable && ctx.env.netns) {
        ips = await deps.kernel.addresses(a.pod, a.ifname).then((l) => l.filter((x) => x.scope === 'global').map((x) => x.address), () => []);
      }
      // netfilter elements first and the address last: while the address is still reserved no
      // other pod can hold it, so the elements found under it are this attachment's own
      if (cfg.ipMasq) await step('remove masquerade elements', () => fw().masqRemove(masqOwner(cfg.name, a.containerId, a.ifname), ips), 'nft-masq');
      // hostPort elements go whatever the config says now (a runtime may drop runtimeConfig on
      // DEL); then the UDP flows still translated to the pod: what the elements said, plus what
      // runtimeConfig and prevResult say (a retried DEL finds no elements any more)
      const hpOwner = hostportOwner(cfg.name, a.containerId, a.ifname);
      let removed: Awaited<ReturnType<PodFirewall['hostportRemove']>> = { elements: [], hairpin: [] };
      await step('remove hostPort elements', async () => void (removed = await fw().hostportRemove((o) => o === hpOwner, ips)), 'nft-hostport');
      const targets = [...removed.elements, ...portMappingsLenient(cfg).flatMap((m) => ips.map((ip) => ({ protocol: m.protocol, podIP: ip, containerPort: m.containerPort })))];
      if (targets.length) await step('flush hostPort UDP conntrack', () => flushDelConntrack(conntrack, deps.host, targets), 'conntrack');
      await step('remove links', () => mode.del(a, deps, ips), 'netlink');
      await step('IPAM release', () => ipamClient(cfg.ipamType).del(ctx), 'ipam');
      if (errors.length) throw errors[0];
    },

    async check(ctx) {
      const cfg = parsePodnetConfig(ctx.conf);
      if (!ctx.prevResult) throw new CniError(ErrCode.InvalidConfig, 'CHECK needs prevResult (the ADD result)');
      const a = attachment(ctx, cfg);
      await ipamClient(cfg.ipamType).check(ctx);
      await MODES[cfg.mode].check(a, deps, ctx.prevResult);
      if (cfg.ipMasq) {
        const owner = masqOwner(cfg.name, a.containerId, a.ifname);
        const present = await fw().masqList();
        if (!present.some((p) => p.owner === owner)) throw new CniError(ErrCode.CheckFailed, `masquerade elements for ${a.containerId}/${a.ifname} are missing from table inet podnet`);
      }
      const mappings = portMappings(cfg);
      if (mappings.length) {
        const addrs = (ctx.prevResult.ips ?? []).map((i) => ipOnly(i.address));
        const plan = planHostports(mappings, addrs, hostportOwner(cfg.name, a.containerId, a.ifname));
        const missing = missingElements(plan, await fw().hostportList());
        if (missing.length) throw new CniError(ErrCode.CheckFailed, `hostPort entries for ${a.containerId}/${a.ifname} missing from table inet podnet-hostport: ${missing.join(', ')}`);
      }
    },

    async status(ctx) {
      const cfg = parsePodnetConfig(ctx.conf);
      if (cfg.mode === 'macvlan' || cfg.mode === 'ipvlan') {
        try {
          await MODES[cfg.mode].preflight({ ...attachment(ctx, cfg), pod: { kind: 'current' } }, deps);
        } catch (e) {
          throw new CniError(ErrCode.NotAvailable, (e as Error).message);
        }
      }
      await ipamClient(cfg.ipamType).status(ctx);
    },

    async gc(ctx) {
      const cfg = parsePodnetConfig(ctx.conf);
      const valid = validAttachments(ctx.conf);
      const errors: string[] = [];
      try {
        await ipamClient(cfg.ipamType).gc(ctx);
      } catch (e) {
        errors.push(`IPAM: ${(e as Error).message}`);
      }
      const validSet = new Set(valid.map((v) => `${v.containerID}/${v.ifname}`));
      if (MODES[cfg.mode].ownsHostLinks) {
        try {
          const validNames = new Set(valid.map((v) => hostVethName(v.containerID, v.ifname)));
          const stale = (await deps.kernel.links(deps.host)).filter((l) => {
            const o = parseOwnerAlias(l.alias);
            if (o) return o.network === cfg.name && !validSet.has(`${o.containerId}/${o.ifname}`);
            // an ADD killed between creating the pair and marking it leaves a bare veth: podnet's
            // name, no owner, no bridge, down (an ADD in flight holds that state for microseconds)
            return l.kind === 'veth' && isOrphanHostVeth(l) && !validNames.has(l.name);
          });
          if (stale.length) await deps.kernel.apply(deps.host, stale.map((l) => ({ op: 'link-del', name: l.name, ignoreMissing: true }) as const));
          ctx.log.info('GC removed stale links', { count: stale.length });
        } catch (e) {
          errors.push(`links: ${(e as Error).message}`);
        }
      }
      if ((cfg.mode === 'macvlan' || cfg.mode === 'ipvlan') && cfg.hostReachable && cfg.ipamType === 'podnet-ipam') {
        try {
          // after IPAM's GC, what is still reserved is exactly what may keep a host route
          const ipamCfg = loadIpamConfig(ctx.conf, ctx.env.args);
          const held = new Set(listReservations(ipamCfg.storeDir).map((r) => r.ip));
          const mine = (ip: string) => ipamCfg.rangeSets.some((set) => findRange(set, parseIP(ip)) >= 0);
          const master = await (MODES[cfg.mode] as typeof macvlanMode).master(attachment(ctx, cfg), deps);
          const n = await gcHostRoutes(deps, master, mine, held);
          ctx.log.info('GC removed stale host routes', { count: n });
        } catch (e) {
          errors.push(`host routes: ${(e as Error).message}`);
        }
      }
      if (cfg.ipMasq) {
        try {
          const validOwners = new Set(valid.map((v) => masqOwner(cfg.name, v.containerID, v.ifname)));
          const present = await fw().masqList();
          const doomed = new Set(present.map((p) => p.owner ?? '').filter((o) => o.startsWith(`${cfg.name}:`) && !validOwners.has(o)));
          await fw().masqRemoveOwners(doomed);
        } catch (e) {
          errors.push(`masquerade: ${(e as Error).message}`);
        }
      }
      try {
        // hostPort elements of this network's vanished attachments (whatever ipMasq or the mode)
        const validOwners = new Set(valid.map((v) => hostportOwner(cfg.name, v.containerID, v.ifname)));
        const prefix = hostportOwnerPrefix(cfg.name);
        const removed = await fw().hostportRemove((o) => o.startsWith(prefix) && !validOwners.has(o));
        await flushDelConntrack(conntrack, deps.host, removed.elements);
        ctx.log.info('GC removed stale hostPort elements', { count: removed.elements.length + removed.hairpin.length });
      } catch (e) {
        errors.push(`hostPort: ${(e as Error).message}`);
      }
      if (errors.length) throw new CniError(ErrCode.IoFailure, `GC finished with errors: ${errors.join('; ')}`);
    },
  };
}
