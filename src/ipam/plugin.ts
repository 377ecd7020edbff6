// podnet-ipam: host-local-compatible address management. The same functions serve the
// standalone `podnet-ipam` executable (via dispatch) and the main plugin in-process.
import { CniError, ErrCode } from '../cni/errors.js';
import type { CniPlugin, CniContext } from '../cni/skel.js';
import type { Attachment, CniIpConfig, CniResult } from '../cni/types.js';
import { formatIP, tryParseCidr, tryParseIP, type IP } from '../util/ip.js';
import { LockTimeoutError } from '../util/lock.js';
import { allocate, freeCount, type Allocation } from './allocator.js';
import { describeRangeSet, loadIpamConfig, loadStoreConfig, type IpamConfig } from './config.js';
import { readResolvConf } from './resolv.js';
import { IpamStore, ReservedConcurrentlyError, reservedAddresses, type Reservation } from './store.js';

function openStore(dir: string): IpamStore {
  return new IpamStore(dir);
}

/** I/O errors become CniError 5 and a lock held too long 11, so callers always see a CNI code. */
async function io<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof CniError) throw e;
    if (e instanceof LockTimeoutError) throw new CniError(ErrCode.TryAgainLater, `${what}: ${e.message}`);
    const err = e as NodeJS.ErrnoException;
    if (err && typeof err.code === 'string') throw new CniError(ErrCode.IoFailure, `${what}: ${err.message}`);
    throw e;
  }
}

function ipConfig(a: Allocation): CniIpConfig {
  return { address: `${formatIP(a.ip)}/${a.range.subnet.prefix}`, gateway: formatIP(a.range.gateway) };
}

function buildResult(ctx: CniContext, cfg: IpamConfig, allocs: Allocation[]): CniResult {
  const result: CniResult = { cniVersion: ctx.cniVersion, ips: allocs.map(ipConfig) };
  if (cfg.routes.length) result.routes = cfg.routes.map((r) => ({ ...r }));
  const dns = cfg.dns ?? (cfg.resolvConf ? readResolvConf(cfg.resolvConf) : undefined);
  if (dns && Object.keys(dns).length) result.dns = dns;
  return result;
}

function ipsOf(rs: Reservation[]): IP[] {
  return rs.map((r) => tryParseIP(r.ip)).filter((x): x is IP => x !== undefined);
}

/**
 * ADD's store work: one member of the store's group commit, so concurrent ADDs in this process
 * share a locked section and its flushes, each seeing the addresses the members before it took.
 */
export async function reserveFor(store: IpamStore, cfg: IpamConfig, id: string, ifname: string): Promise<Allocation[]> {
  try {
    return await store.transact(id, ifname, (view) => {
      const chosen = allocate({
        rangeSets: cfg.rangeSets,
        reserved: view.reserved,
        lastReserved: cfg.rangeSets.map((_, i) => view.lastReserved(i)),
        requested: cfg.requested,
        owned: ipsOf(view.owned(id, ifname)),
      });
      return { reserve: chosen.filter((a) => a.isNew).map((a) => ({ ip: a.ip, rangeSetIndex: a.rangeSetIndex })), value: chosen };
    });
  } catch (e) {
    // the allocator saw it free under this same lock: a foreign writer ignores the lock
    if (e instanceof ReservedConcurrentlyError) throw new CniError(ErrCode.TryAgainLater, `IPAM ADD: ${e.message}`);
    throw e;
  }
}

/**
 * Allocates one address per range set for (containerID, ifname), or returns the ones it
 * already holds, so a repeated ADD is harmless.
 */
export async function ipamAdd(ctx: CniContext): Promise<CniResult> {
  const cfg = loadIpamConfig(ctx.conf, ctx.env.args);
  const id = ctx.env.containerId;
  const ifname = ctx.env.ifname;
  const allocs = await io('IPAM ADD', () => reserveFor(openStore(cfg.storeDir), cfg, id, ifname));
  ctx.log.info('IPAM reserved', { ips: allocs.map((a) => formatIP(a.ip)), reused: allocs.filter((a) => !a.isNew).length });
  return buildResult(ctx, cfg, allocs);
}

/** Releases everything (containerID, ifname) holds. Needs neither the netns nor valid ranges. */
export async function ipamDel(ctx: CniContext): Promise<void> {
  const cfg = loadStoreConfig(ctx.conf);
  const store = openStore(cfg.storeDir);
  const released = await io('IPAM DEL', () => store.releaseByID(ctx.env.containerId, ctx.env.ifname));
  if (released.length) ctx.log.info('IPAM released', { ips: released.map((r) => r.ip) });
}

function addressOf(a: string): string | undefined {
  const ip = tryParseIP(a) ?? tryParseCidr(a)?.addr;
  return ip ? formatIP(ip) : undefined;
}

/** CheckFailed (106) when the reservation is gone or disagrees with prevResult. */
export async function ipamCheck(ctx: CniContext): Promise<void> {
  const cfg = loadStoreConfig(ctx.conf);
  const id = ctx.env.containerId;
  const ifname = ctx.env.ifname;
  const mine = await io('IPAM CHECK', () => openStore(cfg.storeDir).getByID(id, ifname));
  if (mine.length === 0) {
    throw new CniError(ErrCode.CheckFailed, `IPAM: no address is reserved for container ${id} interface ${ifname} in ${cfg.storeDir}`);
  }
  if (!ctx.prevResult) return;
  const reserved = new Set(mine.map((r) => r.ip));
  const expected = new Set((ctx.prevResult.ips ?? []).map((i) => addressOf(i.address) ?? i.address));
  const missing = [...expected].filter((a) => !reserved.has(a));
  const extra = [...reserved].filter((a) => !expected.has(a));
  if (missing.length || extra.length) {
    const parts: string[] = [];
    if (missing.length) parts.push(`prevResult has ${missing.join(', ')} but it is not reserved for it`);
    if (extra.length) parts.push(`${extra.join(', ')} is reserved for it but missing from prevResult`);
    throw new CniError(ErrCode.CheckFailed, `IPAM: container ${id} interface ${ifname}: ${parts.join('; ')}`);
  }
}

/** NotAvailable (50) while the subnet lease is missing or any range set is full. */
export async function ipamStatus(ctx: CniContext): Promise<void> {
  let cfg: IpamConfig;
  try {
    cfg = loadIpamConfig(ctx.conf, {});
  } catch (e) {
    if (e instanceof CniError && e.code === ErrCode.TryAgainLater) throw new CniError(ErrCode.NotAvailable, e.message);
    throw e;
  }
  // names alone tell what is reserved: no file needs reading
  const reserved = await io('IPAM STATUS', async () => reservedAddresses(cfg.storeDir));
  for (const set of cfg.rangeSets) {
    if (freeCount(set, reserved) <= 0n) {
      throw new CniError(ErrCode.NotAvailable, `no IP addresses available in range set ${describeRangeSet(set)}`);
    }
  }
}

/** The GC keys: `cni.dev/valid-attachments`, or the older `cni.dev/attachments` that libcni also sends. */
export function gcAttachments(conf: Record<string, unknown>): Attachment[] {
  const key = conf['cni.dev/valid-attachments'] !== undefined ? 'cni.dev/valid-attachments' : 'cni.dev/attachments';
  const raw = conf[key];
  if (raw === undefined || raw === null) {
    // releasing everything because a key is missing would wipe a node's addresses
    throw new CniError(ErrCode.InvalidConfig, 'cni.dev/valid-attachments: missing; GC needs the list of attachments to keep');
  }
  if (!Array.isArray(raw)) throw new CniError(ErrCode.InvalidConfig, `${key}: expected a list of {containerID, ifname}`);
  return raw.map((x, i) => {
    const o = x as Record<string, unknown> | null;
    if (typeof o?.containerID !== 'string' || o.containerID === '' || typeof o.ifname !== 'string') {
      throw new CniError(ErrCode.InvalidConfig, `${key}[${i}]: expected {containerID, ifname}`);
    }
    return { containerID: o.containerID, ifname: o.ifname };
  });
}

/** Releases every reservation no valid attachment owns; failures are collected, not fatal. */
export async function ipamGc(ctx: CniContext): Promise<void> {
  const cfg = loadStoreConfig(ctx.conf);
  const valid = gcAttachments(ctx.conf);
  const out = await io('IPAM GC', () => openStore(cfg.storeDir).releaseAllExcept(valid));
  ctx.log.info('IPAM GC', { released: out.released.map((r) => `${r.ip}=${r.containerID}/${r.ifname ?? ''}`), errors: out.errors.length });
  if (out.errors.length) {
    throw new CniError(ErrCode.IoFailure, `IPAM GC: could not release ${out.errors.length} reservation(s)`, out.errors.join('; '));
  }
}

export const ipamPlugin: CniPlugin = {
  name: 'podnet-ipam',
  add: ipamAdd,
  del: ipamDel,
  check: ipamCheck,
  status: ipamStatus,
  gc: ipamGc,
};
