// `podnet status`: one node's health, read only, plan-then-diff. Everything the agent decides is
// decided again here with the agent's own code (net-conf parsing, node detection, the backend's pure
// planPeers, renderSubnetEnv, the proxy's normalize + endpointsByFrontend), and diffed against what
// the kernel, the files and the store hold now. Nothing is written: the file store is read from its
// state file (no reaping of expired leases, which a list() would do), the kernel through the
// KernelAdapter's reads, the proxy's ruleset through the engine's programmedEndpoints.
//
// The per-peer diff is pure (diffPeers): the backend's plan against an empty kernel names every object
// a peer needs (route, neighbour, FDB entry; tun: the podnet-tund peer line); its plan against the
// actual kernel names what would be changed. An object the second plan adds is missing (nothing with
// its identity exists) or wrong (something with its identity exists, with other attributes); a
// removal the plan makes on no peer's behalf is a stale object.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { FdbEntry, KernelAdapter, KernelOp, Link, NetnsRef, Neighbour, Route } from '../kernel/types.js';
import { canonicalIP, formatCidr, masked, size, tryParseCidr, type Cidr } from '../util/ip.js';
import { canonCidr, detailedLink, isPodnetRoute, planDeviceAddresses, subnetAddr } from '../agent/backends/common.js';
import { VxlanBackend } from '../agent/backends/vxlan.js';
import type { ActualState, Backend, DatapathPeer, DatapathTable, PeerError } from '../agent/backends/types.js';
import type { NodeLease } from '../agent/lease.js';
import { parseEnvFile } from '../ipam/subnetfile.js';

export type ObjectKind = 'route' | 'neighbour' | 'fdb' | 'tun-peer';

export interface PeerObject {
  kind: ObjectKind;
  /** what the object is, in iproute2's words */
  what: string;
  state: 'present' | 'missing' | 'wrong';
  /** the command that shows it */
  look: string;
}

export interface PeerStatus {
  subnet: string;
  ipv6Subnet?: string;
  nodeName?: string;
  publicIP: string;
  /** programmed: every object present and equal; not-programmed: some missing or wrong; refused: the planner skips this peer (reason) */
  state: 'programmed' | 'not-programmed' | 'refused';
  objects: PeerObject[];
  reasons: string[];
}

export interface StaleObject {
  kind: ObjectKind;
  what: string;
  look: string;
}

export interface PeerDiff {
  peers: PeerStatus[];
  /** podnet's objects that no lease wants (the reconciler would delete them) */
  stale: StaleObject[];
  /** objects every peer shares (tun: the cluster networks' routes into podnet.tun) */
  shared: PeerObject[];
}

const EMPTY: ActualState = { routes: [], neighbours: [], fdb: [], ifaceAddresses: [] };

interface Identified {
  kind: ObjectKind;
  id: string;
  what: string;
  look: string;
}

function describeRoute(r: { dst: string; gateway?: string; dev?: string; onlink?: boolean; proto?: string }): string {
  return `${r.dst}${r.gateway ? ` via ${r.gateway}` : ''}${r.dev ? ` dev ${r.dev}` : ''}${r.onlink ? ' onlink' : ''}${r.proto ? ` proto ${r.proto}` : ''}`;
}

/** The object an op creates or deletes, with its identity (what two versions of it share). */
function identify(o: KernelOp): Identified | undefined {
  switch (o.op) {
    case 'route-add':
    case 'route-del': {
      const dst = canonCidr(o.route.dst) ?? o.route.dst;
      return { kind: 'route', id: `route|${dst}`, what: `route ${describeRoute({ ...o.route, dst })}`, look: `ip route show ${dst}` };
    }
    case 'neigh-replace':
    case 'neigh-del': {
      const dst = canonicalIP(o.dst) ?? o.dst;
      return { kind: 'neighbour', id: `neigh|${o.dev}|${dst}`, what: `neighbour ${dst}${o.op === 'neigh-replace' ? ` lladdr ${o.lladdr}` : ''} dev ${o.dev}${o.op === 'neigh-replace' ? ' nud permanent' : ''}`, look: `ip neigh show ${dst} dev ${o.dev}` };
    }
    case 'fdb-replace':
    case 'fdb-append':
    case 'fdb-del': {
      const mac = o.mac.toLowerCase();
      const dst = canonicalIP(o.dst ?? '') ?? o.dst ?? '';
      return { kind: 'fdb', id: `fdb|${o.dev}|${mac}|${dst}`, what: `FDB entry ${mac} dev ${o.dev} dst ${dst}${o.op === 'fdb-del' ? '' : ' self permanent'}`, look: `bridge fdb show dev ${o.dev} | grep -i ${mac}` };
    }
    default:
      return undefined;
  }
}

const isAdd = (o: KernelOp) => o.op === 'route-add' || o.op === 'neigh-replace' || o.op === 'fdb-replace' || o.op === 'fdb-append';

/** Whether the kernel holds something with this object's identity (then a planned add means "wrong", not "missing"). */
function hasSameIdentity(o: KernelOp, actual: ActualState): boolean {
  switch (o.op) {
    case 'route-add': {
      const dst = canonCidr(o.route.dst);
      return actual.routes.some((r: Route) => isPodnetRoute(r) && canonCidr(r.dst) === dst);
    }
    case 'neigh-replace': {
      const dst = canonicalIP(o.dst);
      return actual.neighbours.some((n: Neighbour) => (!n.dev || n.dev === o.dev) && canonicalIP(n.dst) === dst);
    }
    case 'fdb-replace':
    case 'fdb-append': {
      // an entry for the MAC towards another underlay address is the same entry, wrong
      const mac = o.mac.toLowerCase();
      return actual.fdb.some((e: FdbEntry) => (!e.dev || e.dev === o.dev) && !!e.dst && e.mac.toLowerCase() === mac);
    }
    default:
      return false;
  }
}

/** Which peer an add op is for: routes by destination, neighbours by the VTEP address, FDB entries by the underlay address. */
function ownerOf(o: KernelOp, peers: NodeLease[]): NodeLease | undefined {
  const subnets = (p: NodeLease) => [canonCidr(p.subnet), ...(p.ipv6Subnet ? [canonCidr(p.ipv6Subnet)] : [])].filter((x): x is string => !!x);
  switch (o.op) {
    case 'route-add':
    case 'route-del': {
      const dst = canonCidr(o.route.dst);
      return peers.find((p) => subnets(p).includes(dst ?? ''));
    }
    case 'neigh-replace':
    case 'neigh-del': {
      const dst = canonicalIP(o.dst);
      return peers.find((p) => subnets(p).some((s) => canonicalIP(subnetAddr(s)) === dst));
    }
    case 'fdb-replace':
    case 'fdb-append':
    case 'fdb-del': {
      const dst = canonicalIP(o.dst ?? '');
      return peers.find((p) => canonicalIP(p.publicIP) === dst && (o.op === 'fdb-del' || (p.backendData?.VtepMAC ?? '').toLowerCase() === o.mac.toLowerCase()));
    }
    default:
      return undefined;
  }
}

const tunLine = (p: DatapathPeer) => `peer ${canonCidr(p.subnet) ?? p.subnet} ${canonicalIP(p.publicIP) ?? p.publicIP} ${p.port}`;

/**
 * PURE. Per peer: the objects the backend's planner wants for it, each present, missing or wrong in
 * `actual`; peers the planner refuses, with its reason; podnet's objects no lease wants.
 * `tund`: the tun backend's datapath, the peers file podnet-tund reads (undefined: none readable).
 */
export function diffPeers(backend: Backend, own: NodeLease, peers: NodeLease[], actual: ActualState, tund?: { table?: DatapathTable; file: string }): PeerDiff {
  // the interface's addresses are an input of the plan (host-gw: the same-L2 check), not an object it makes
  const want = backend.planPeers(own, peers, { ...EMPTY, ifaceAddresses: actual.ifaceAddresses });
  const plan = backend.planPeers(own, peers, actual);
  const pending = new Map<string, KernelOp>();
  for (const o of plan.ops) {
    const id = identify(o);
    if (id && isAdd(o)) pending.set(id.id, o);
  }
  const wantedIds = new Set<string>();
  const byPeer = new Map<NodeLease, PeerObject[]>();
  const shared: PeerObject[] = [];
  for (const o of want.ops) {
    const id = identify(o);
    if (!id || !isAdd(o)) continue;
    wantedIds.add(id.id);
    const p = pending.get(id.id);
    const obj: PeerObject = { kind: id.kind, what: id.what, look: id.look, state: !p ? 'present' : hasSameIdentity(p, actual) ? 'wrong' : 'missing' };
    const owner = ownerOf(o, peers);
    if (owner) byPeer.set(owner, [...(byPeer.get(owner) ?? []), obj]);
    else shared.push(obj);
  }
  const stale: StaleObject[] = [];
  // the MACs the plan (re)adds FDB entries for: removing an entry of one of them towards another address is that entry being wrong
  const readdedMacs = new Set([...pending.values()].flatMap((o) => (o.op === 'fdb-replace' || o.op === 'fdb-append' ? [`${o.dev}|${o.mac.toLowerCase()}`] : [])));
  for (const o of plan.ops) {
    if (isAdd(o)) continue;
    const id = identify(o);
    // a removal that makes way for a wanted object (a wrong route or FDB entry replaced) is part of "wrong", not stale
    if (!id || wantedIds.has(id.id)) continue;
    if (o.op === 'fdb-del' && readdedMacs.has(`${o.dev}|${o.mac.toLowerCase()}`)) continue;
    stale.push({ kind: id.kind, what: id.what, look: id.look });
  }
  // a userspace datapath (tun): its peer table is part of what a peer needs
  if (want.datapath && tund) {
    const haveLines = (tund.table?.peers ?? []).map(tunLine);
    const wantLines = new Set(want.datapath.peers.map(tunLine));
    const wantSubnets = new Set(want.datapath.peers.map((d) => canonCidr(d.subnet)));
    for (const dp of want.datapath.peers) {
      const owner = peers.find((p) => canonCidr(p.subnet) === canonCidr(dp.subnet) || (!!p.ipv6Subnet && canonCidr(p.ipv6Subnet) === canonCidr(dp.subnet)));
      const state: PeerObject['state'] = haveLines.includes(tunLine(dp)) ? 'present' : (tund.table?.peers ?? []).some((x) => canonCidr(x.subnet) === canonCidr(dp.subnet)) ? 'wrong' : 'missing';
      const obj: PeerObject = { kind: 'tun-peer', what: `podnet-tund line "${tunLine(dp)}"`, look: `cat ${tund.file}`, state };
      if (owner) byPeer.set(owner, [...(byPeer.get(owner) ?? []), obj]);
    }
    for (const [i, line] of haveLines.entries()) {
      if (!wantLines.has(line) && !wantSubnets.has(canonCidr(tund.table!.peers[i].subnet))) stale.push({ kind: 'tun-peer', what: `podnet-tund line "${line}"`, look: `cat ${tund.file}` });
    }
  }
  const refusedBy = new Map<string, PeerError[]>();
  for (const e of [...want.errors, ...plan.errors]) {
    const list = refusedBy.get(e.peer) ?? [];
    if (!list.some((x) => x.message === e.message)) list.push(e);
    refusedBy.set(e.peer, list);
  }
  const out: PeerStatus[] = [];
  for (const p of [...peers].sort((a, b) => (a.nodeName ?? a.subnet).localeCompare(b.nodeName ?? b.subnet))) {
    if (canonCidr(p.subnet) === canonCidr(own.subnet)) continue;
    const objects = byPeer.get(p) ?? [];
    const errs = refusedBy.get(p.subnet) ?? [];
    const state: PeerStatus['state'] = errs.length ? 'refused' : objects.every((o) => o.state === 'present') ? 'programmed' : 'not-programmed';
    out.push({ subnet: p.subnet, ...(p.ipv6Subnet ? { ipv6Subnet: p.ipv6Subnet } : {}), ...(p.nodeName ? { nodeName: p.nodeName } : {}), publicIP: p.publicIP, state, objects, reasons: errs.map((e) => e.message) });
  }
  return { peers: out, stale, shared };
}

// ---- the device, subnet.env ----

export interface DeviceStatus {
  name?: string;
  exists: boolean;
  kind?: string;
  mtu?: number;
  wantMtu: number;
  up?: boolean;
  problems: { message: string; look: string }[];
}

/** The backend device against what ensureDevice would leave (kind, MTU = underlay − overhead, up, VXLAN attributes, addresses). Reads only. */
export async function checkDevice(kernel: KernelAdapter, ns: NetnsRef, backend: Backend, own: NodeLease, underlay: Link): Promise<DeviceStatus> {
  const wantMtu = underlay.mtu - backend.mtuOverhead((canonicalIP(own.publicIP) ?? '').includes(':'));
  if (!backend.device) return { exists: true, wantMtu, problems: [] };
  const kind = backend.type === 'tun' ? 'tun' : 'vxlan';
  const l = await detailedLink(kernel, ns, backend.device, kind);
  const look = `ip -d link show ${backend.device}`;
  if (!l) return { name: backend.device, exists: false, wantMtu, problems: [{ message: `backend device ${backend.device} does not exist`, look }] };
  const problems: DeviceStatus['problems'] = [];
  const add = (message: string, where = look) => problems.push({ message, look: where });
  if (l.kind !== kind) add(`backend device ${backend.device} is a ${l.kind ?? 'plain'} link, not ${kind}`);
  if (l.mtu !== wantMtu) add(`backend device ${backend.device} has MTU ${l.mtu}, planned ${wantMtu} (${underlay.name} ${underlay.mtu} − ${underlay.mtu - wantMtu})`);
  if (!l.up) add(`backend device ${backend.device} is down`);
  if (backend instanceof VxlanBackend && l.kind === 'vxlan') for (const why of backend.incompatibilities(l, canonicalIP(own.publicIP) ?? own.publicIP)) add(`backend device ${backend.device}: ${why}`);
  if (l.kind === kind) {
    const ops: KernelOp[] = [];
    await planDeviceAddresses(kernel, ns, backend.device, own, true, true, ops, []);
    for (const o of ops) if (o.op === 'addr-add' || o.op === 'addr-del') add(`backend device ${backend.device}: address ${o.cidr} ${o.op === 'addr-add' ? 'missing' : 'not podnet\'s (stray)'}`, `ip addr show dev ${backend.device}`);
  }
  return { name: backend.device, exists: true, kind: l.kind, mtu: l.mtu, wantMtu, up: l.up, problems };
}

/** subnet.env against what the agent would write for this lease (PODNET_IPMASQ taken from the file: the agent's flag is not known here). Pure. */
export function diffSubnetEnv(text: string | undefined, expected: (ipMasq: boolean) => string): string[] {
  if (text === undefined) return ['missing'];
  const have = parseEnvFile(text);
  const want = parseEnvFile(expected(have.PODNET_IPMASQ !== 'false'));
  const out: string[] = [];
  for (const [k, v] of Object.entries(want)) if (have[k] !== v) out.push(`${k}=${have[k] ?? '(unset)'}, the lease says ${v}`);
  for (const k of Object.keys(have)) if (!(k in want)) out.push(`${k}=${have[k]} is not in what the lease says`);
  return out;
}

// ---- the CNI socket ----

export interface SocketStatus {
  path: string;
  exists: boolean;
  answers: boolean;
  error?: string;
}

/** Connects to the agent's socket and asks a control question no agent answers with data: any well-formed answer means it serves. */
export async function checkSocket(path: string, timeoutMs = 3000): Promise<SocketStatus> {
  const st = statSync(path, { throwIfNoEntry: false });
  if (!st) return { path, exists: false, answers: false, error: 'no such socket' };
  if (!st.isSocket()) return { path, exists: true, answers: false, error: 'not a unix socket' };
  const { decodeResponse, encodeRequest } = await import('../agent/protocol.js');
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const c = connect(path);
    const done = (s: SocketStatus) => {
      clearTimeout(t);
      c.destroy();
      resolve(s);
    };
    const t = setTimeout(() => done({ path, exists: true, answers: false, error: `no answer within ${timeoutMs} ms` }), timeoutMs);
    c.on('connect', () => c.end(encodeRequest({ env: { PODNET_CONTROL: 'status-probe' }, stdin: '' })));
    c.on('data', (d: Buffer) => chunks.push(d));
    c.on('error', (e) => done({ path, exists: true, answers: false, error: e.message }));
    c.on('end', () => {
      try {
        decodeResponse(Buffer.concat(chunks));
        done({ path, exists: true, answers: true });
      } catch (e) {
        done({ path, exists: true, answers: false, error: `malformed answer: ${(e as Error).message}` });
      }
    });
  });
}

// ---- IPAM ----

export interface IpamNetworkUsage {
  network: string;
  dir: string;
  allocated: number;
  /** from subnet.env's PODNET_SUBNET (podnet-ipam's subnetFile ranges), when this network uses it */
  range?: string;
  /** addresses in that range (the network, gateway and broadcast addresses included) */
  size?: number;
}

/** Reservations per network dir (src/ipam/inspect.ts readDataDir); the range size when subnet.env gives the node's range. */
export async function ipamUsage(dataDir: string, subnetEnv: string | undefined): Promise<{ dataDir: string; exists: boolean; networks: IpamNetworkUsage[] }> {
  if (!existsSync(dataDir)) return { dataDir, exists: false, networks: [] };
  const { readDataDir } = await import('../ipam/inspect.js');
  const { networks, allocations } = readDataDir(dataDir);
  const env = subnetEnv ? parseEnvFile(subnetEnv) : {};
  const range = env.PODNET_SUBNET ? tryParseCidr(env.PODNET_SUBNET) : undefined;
  return {
    dataDir,
    exists: true,
    networks: networks.map((n) => {
      const mine = allocations.filter((a) => a.network === n);
      const v4 = mine.filter((a) => !a.ip.includes(':'));
      // a range is only claimed when every IPv4 reservation of the network lies in it
      const inRange = !!range && range.family === 4 && v4.length > 0 && v4.every((a) => rangeHas(range, a.ip));
      return { network: n, dir: join(dataDir, n), allocated: mine.length, ...(inRange ? { range: formatCidr(masked(range)), size: Number(size(range)) } : {}) };
    }),
  };
}

function rangeHas(c: Cidr, ip: string): boolean {
  const a = tryParseCidr(`${ip}/32`);
  if (!a) return false;
  const hostBits = BigInt(32 - c.prefix);
  return a.addr.value >> hostBits === c.addr.value >> hostBits;
}

export function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}
