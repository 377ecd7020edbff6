// IPAM inspection and repair (`podnet ipam ls|check|gc`): the reservations of every network under
// a data dir (podnet-ipam and host-local share the layout <dataDir>/<network>/<ip>), classified
// against what is live on the node:
//   live      some namespace other than the node's own has an interface named as the reservation
//             says (any, for host-local's ID-only files) carrying the address
//   pending   nothing carries it yet, but the file is younger than the grace period: an ADD may be
//             between its reservation and its interface; never released
//   conflict  the address is carried, but by an interface of another name: reported, never released
//   leaked    nothing carries the address: the container's interface or its namespace is gone
// and addresses in use with no reservation: every address on the pod end of a host link whose
// owner alias (podnet:<network>:<containerId>:<ifname>, bridge and routed modes) names a network
// of the data dir, that the network's directory does not hold.
//
// The kernel is read behind LiveReader (IpLiveReader: `ip -j` over the node's own namespace, read
// only, and over every named namespace and every namespace a process holds); the classifier is
// pure. Leaks are released through the store's own locked section (IpamStore.locked: the same
// flock on <dir>/lock as podnet-ipam and host-local), each re-read under the lock first so a file
// that changed since the inspection is kept, then the directory is fsynced once.
import { readdirSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnCapture } from '../kernel/exec.js';
import { parseOwnerAlias } from '../cni/modes/common.js';
import { canonicalIP } from '../util/ip.js';
import { fsyncDir, IpamStore, listReservations, type Reservation } from './store.js';

export interface Allocation extends Reservation {
  network: string;
  /** the network's directory */
  dir: string;
  /** the file's modification time (the moment it got its final name) */
  mtimeMs: number;
  ino: number;
}

/** Every reservation of every network under dataDir; a network is a subdirectory. */
export function readDataDir(dataDir: string): { networks: string[]; allocations: Allocation[] } {
  const networks: string[] = [];
  const allocations: Allocation[] = [];
  for (const e of readdirSync(dataDir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    if (!e.isDirectory()) continue;
    const dir = join(dataDir, e.name);
    networks.push(e.name);
    for (const r of listReservations(dir)) {
      const st = statSync(join(dir, r.file), { throwIfNoEntry: false });
      if (!st) continue; // released meanwhile
      allocations.push({ ...r, network: e.name, dir, mtimeMs: st.mtimeMs, ino: st.ino });
    }
  }
  allocations.sort((a, b) => a.network.localeCompare(b.network) || compareAddr(a.ip, b.ip));
  return { networks, allocations };
}

function compareAddr(a: string, b: string): number {
  const v6 = (s: string) => s.includes(':');
  if (v6(a) !== v6(b)) return v6(a) ? 1 : -1;
  if (!v6(a)) {
    const n = (s: string) => s.split('.').reduce((x, o) => x * 256 + Number(o), 0);
    return n(a) - n(b);
  }
  return a.localeCompare(b);
}

// ---------------------------------------------------------------------------------------------
// What is live.

export interface LiveLink {
  ifname: string;
  ifindex: number;
  /** global-scope addresses, canonical text */
  addrs: string[];
  alias?: string;
  /** a veth's peer (or a macvlan's parent): its ifindex in the namespace link_netnsid names */
  linkIndex?: number;
  linkNetnsid?: number;
}

export interface LiveNamespace {
  /** a name under /run/netns, or /proc/PID/ns/net for one only a process holds */
  name: string;
  links: LiveLink[];
}

export interface LiveState {
  /** the node's own namespace (where the host links of bridge and routed pods are) */
  host: { links: LiveLink[]; /** nsid as the node sees it → named namespace */ peers: Map<number, string> };
  /** every other namespace */
  namespaces: LiveNamespace[];
}

export interface LiveReader {
  snapshot(): Promise<LiveState>;
}

// ---------------------------------------------------------------------------------------------
// The classifier.

export type AllocationState = 'live' | 'pending' | 'conflict' | 'leaked';

export interface Classified extends Allocation {
  state: AllocationState;
  /** for live and conflict: who carries the address */
  carrier?: { netns: string; ifname: string };
  reason: string;
}

export interface Unreserved {
  network: string;
  ip: string;
  netns: string;
  ifname: string;
  containerId: string;
  hostLink: string;
  reason: string;
}

export interface Inspection {
  dataDir: string;
  networks: string[];
  allocations: Classified[];
  unreserved: Unreserved[];
}

export interface ClassifyOptions {
  now: number;
  /** a reservation younger than this with nothing carrying it is pending, not leaked */
  graceMs: number;
}

export const DEFAULT_GRACE_SECONDS = 30;

const who = (r: { containerID: string; ifname?: string }) => `${r.containerID}/${r.ifname ?? '*'}`;

export function classify(dataDir: string, disk: { networks: string[]; allocations: Allocation[] }, live: LiveState, opts: ClassifyOptions): Inspection {
  // address → every (namespace, interface) carrying it
  const carriers = new Map<string, { netns: string; ifname: string }[]>();
  for (const ns of live.namespaces) {
    for (const l of ns.links) {
      for (const a of l.addrs) {
        let c = carriers.get(a);
        if (!c) carriers.set(a, (c = []));
        c.push({ netns: ns.name, ifname: l.ifname });
      }
    }
  }
  const hostLinkOf = new Map<string, LiveLink>();
  for (const l of live.host.links) {
    const o = parseOwnerAlias(l.alias);
    if (o) hostLinkOf.set(`${o.network}\n${o.containerId}\n${o.ifname}`, l);
  }
  const allocations = disk.allocations.map((r): Classified => {
    const on = carriers.get(r.ip) ?? [];
    const mine = on.find((c) => r.ifname === undefined || c.ifname === r.ifname);
    if (mine) return { ...r, state: 'live', carrier: mine, reason: `${r.ip} is on ${mine.ifname} in ${mine.netns}` };
    if (on.length) {
      const c = on[0];
      return { ...r, state: 'conflict', carrier: c, reason: `reserved for ${who(r)}, but ${r.ip} is on ${c.ifname} in ${c.netns}: not released (another interface uses the address)` };
    }
    const ageMs = opts.now - r.mtimeMs;
    if (ageMs < opts.graceMs) {
      return { ...r, state: 'pending', reason: `no interface carries ${r.ip} yet, reserved ${(ageMs / 1000).toFixed(1)} s ago (an ADD may be in flight; leaked after ${opts.graceMs / 1000} s)` };
    }
    const host = r.ifname !== undefined ? hostLinkOf.get(`${r.network}\n${r.containerID}\n${r.ifname}`) : undefined;
    const peer = host?.linkNetnsid !== undefined ? live.host.peers.get(host.linkNetnsid) : undefined;
    const reason = host
      ? `the interface is gone: no namespace has ${r.ifname} with ${r.ip}, though host link ${host.ifname} of the container is still there${peer ? ` (its peer in ${peer})` : ''}`
      : `the interface or its namespace is gone: no namespace has ${r.ifname ?? 'an interface'} with ${r.ip}, and no host link names container ${r.containerID}`;
    return { ...r, state: 'leaked', reason };
  });

  // addresses on pod interfaces that their network does not hold
  const reserved = new Map<string, Set<string>>();
  for (const n of disk.networks) reserved.set(n, new Set());
  for (const r of disk.allocations) reserved.get(r.network)?.add(r.ip);
  const byName = new Map(live.namespaces.map((n) => [n.name, n]));
  const unreserved: Unreserved[] = [];
  for (const h of live.host.links) {
    const o = parseOwnerAlias(h.alias);
    if (!o || !reserved.has(o.network) || h.linkNetnsid === undefined || h.linkIndex === undefined) continue;
    const peerNs = live.host.peers.get(h.linkNetnsid);
    const pod = peerNs !== undefined ? byName.get(peerNs)?.links.find((l) => l.ifindex === h.linkIndex) : undefined;
    if (!pod || peerNs === undefined) continue;
    for (const a of pod.addrs) {
      if (reserved.get(o.network)!.has(a)) continue;
      unreserved.push({
        network: o.network,
        ip: a,
        netns: peerNs,
        ifname: pod.ifname,
        containerId: o.containerId,
        hostLink: h.ifname,
        reason: `${a} is on ${pod.ifname} in ${peerNs} (container ${o.containerId}, host link ${h.ifname}) with no reservation in ${join(dataDir, o.network)}`,
      });
    }
  }
  unreserved.sort((a, b) => a.network.localeCompare(b.network) || compareAddr(a.ip, b.ip));
  return { dataDir, networks: disk.networks, allocations, unreserved };
}

/** The problems `check` reports (and exits 1 for). */
export function problems(i: Inspection): { leaked: Classified[]; conflicts: Classified[]; unreserved: Unreserved[] } {
  return { leaked: i.allocations.filter((a) => a.state === 'leaked'), conflicts: i.allocations.filter((a) => a.state === 'conflict'), unreserved: i.unreserved };
}

/** Reads the data dir, then what is live, and classifies. */
export async function inspect(dataDir: string, reader: LiveReader, opts: { graceMs: number; now?: () => number }): Promise<Inspection> {
  const disk = readDataDir(dataDir);
  // the kernel after the files: an ADD that completes in between is seen live
  const live = await reader.snapshot();
  return classify(dataDir, disk, live, { graceMs: opts.graceMs, now: (opts.now ?? Date.now)() });
}

// ---------------------------------------------------------------------------------------------
// Repair.

export interface GcResult {
  released: Classified[];
  /** leaks not released: the file changed or went since the inspection, or the release failed */
  kept: { allocation: Classified; reason: string }[];
}

/** Releases the inspection's leaks (only those), each confirmed unchanged under its directory's lock. */
export async function releaseLeaks(i: Inspection, opts: { dryRun?: boolean } = {}): Promise<GcResult> {
  const leaks = i.allocations.filter((a) => a.state === 'leaked');
  const out: GcResult = { released: [], kept: [] };
  if (opts.dryRun) return { released: leaks, kept: [] };
  const byDir = new Map<string, Classified[]>();
  for (const a of leaks) {
    let l = byDir.get(a.dir);
    if (!l) byDir.set(a.dir, (l = []));
    l.push(a);
  }
  for (const [dir, list] of byDir) {
    await new IpamStore(dir).locked((s) => {
      const fresh = new Map(s.list().map((r) => [r.file, r]));
      let removed = 0;
      for (const a of list) {
        const now = fresh.get(a.file);
        const st = statSync(join(dir, a.file), { throwIfNoEntry: false });
        if (!now || !st) {
          out.kept.push({ allocation: a, reason: 'released by someone else since the inspection' });
          continue;
        }
        if (now.containerID !== a.containerID || now.ifname !== a.ifname || st.ino !== a.ino || st.mtimeMs !== a.mtimeMs) {
          out.kept.push({ allocation: a, reason: `the reservation changed since the inspection (now ${who(now)})` });
          continue;
        }
        try {
          s.releaseIP(a.file);
          removed++;
          out.released.push(a);
        } catch (e) {
          out.kept.push({ allocation: a, reason: (e as Error).message });
        }
      }
      if (removed) fsyncDir(dir);
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The kernel side: `ip -j`, argument arrays, reads only.

interface JLink {
  ifindex: number;
  ifname: string;
  ifalias?: string;
  link_index?: number;
  link_netnsid?: number;
  addr_info?: { local?: string; scope?: string }[];
}

export function parseLinks(json: string, aliases?: string): LiveLink[] {
  const rows = json.trim() ? (JSON.parse(json) as JLink[]) : [];
  const alias = new Map<number, string>();
  if (aliases?.trim()) for (const l of JSON.parse(aliases) as JLink[]) if (l.ifalias) alias.set(l.ifindex, l.ifalias);
  return rows.map((l) => {
    const out: LiveLink = {
      ifname: l.ifname,
      ifindex: l.ifindex,
      addrs: (l.addr_info ?? []).filter((a) => a.local && a.scope === 'global').map((a) => canonicalIP(a.local!) ?? a.local!),
    };
    const al = l.ifalias ?? alias.get(l.ifindex);
    if (al) out.alias = al;
    if (l.link_index !== undefined) out.linkIndex = l.link_index;
    if (l.link_netnsid !== undefined) out.linkNetnsid = l.link_netnsid;
    return out;
  });
}

export class NamespaceReadError extends Error {}

/** The node's own namespace is the one this process runs in; every other one is read with `ip -n` or nsenter. */
export class IpLiveReader implements LiveReader {
  constructor(private readonly opts: { netnsDir?: string; proc?: string; concurrency?: number } = {}) {}

  private async ip(argv: string[], what: string, stillThere: () => boolean): Promise<string | undefined> {
    const r = await spawnCapture(argv, { op: what, timeoutMs: 20_000 });
    if (r.exitCode === 0) return r.stdout;
    if (!stillThere()) return undefined; // the namespace went away while it was read: nothing lives there
    throw new NamespaceReadError(`${argv.join(' ')}: ${r.stderr.trim() || `exit ${r.exitCode}`}`);
  }

  async snapshot(): Promise<LiveState> {
    const netnsDir = this.opts.netnsDir ?? '/run/netns';
    const proc = this.opts.proc ?? '/proc';
    const self = statSync('/proc/self/ns/net');
    const seen = new Set<number>([self.ino]);
    const targets: { name: string; argv: (args: string[]) => string[]; file: string }[] = [];
    let names: string[] = [];
    try {
      names = readdirSync(netnsDir).sort();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    for (const name of names) {
      const file = join(netnsDir, name);
      const st = statSync(file, { throwIfNoEntry: false });
      // a stale entry (no namespace mounted on it) is on /run's own filesystem, not nsfs
      if (!st || st.dev !== self.dev || seen.has(st.ino)) continue;
      seen.add(st.ino);
      targets.push({ name, file, argv: (args) => ['ip', '-n', name, ...args] });
    }
    // namespaces only a process holds (runtimes that do not bind-mount theirs): one per inode
    for (const pid of readdirSync(proc).filter((p) => /^\d+$/.test(p))) {
      const file = join(proc, pid, 'ns/net');
      let ino: number;
      try {
        const m = /^net:\[(\d+)\]$/.exec(readlinkSync(file));
        if (!m) continue;
        ino = Number(m[1]);
      } catch {
        continue; // exited, or a kernel thread's
      }
      if (seen.has(ino)) continue;
      seen.add(ino);
      targets.push({ name: file, file, argv: (args) => ['nsenter', `--net=${file}`, 'ip', ...args] });
    }
    const there = (file: string) => () => statSync(file, { throwIfNoEntry: false }) !== undefined;
    const [hostAddrs, hostLinks, ids] = await Promise.all([
      this.ip(['ip', '-j', 'addr', 'show'], 'read the node namespace\'s addresses', () => true),
      this.ip(['ip', '-j', 'link', 'show'], 'read the node namespace\'s links', () => true),
      this.ip(['ip', '-j', 'netns', 'list-id'], 'read the node namespace\'s nsids', () => true),
    ]);
    const peers = new Map<number, string>();
    for (const x of ids?.trim() ? (JSON.parse(ids) as { nsid: number; name?: string }[]) : []) if (x.name) peers.set(x.nsid, x.name);
    const namespaces: LiveNamespace[] = [];
    const queue = [...targets];
    const worker = async () => {
      for (let t = queue.shift(); t; t = queue.shift()) {
        const out = await this.ip(t.argv(['-j', 'addr', 'show']), `read ${t.name}`, there(t.file));
        if (out !== undefined) namespaces.push({ name: t.name, links: parseLinks(out) });
      }
    };
    await Promise.all(Array.from({ length: this.opts.concurrency ?? 8 }, worker));
    namespaces.sort((a, b) => a.name.localeCompare(b.name));
    return { host: { links: parseLinks(hostAddrs ?? '', hostLinks), peers }, namespaces };
  }
}
