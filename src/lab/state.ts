// The lab's record of what it created: /run/podnet/labs/<LAB>/state.json (PODNET_LAB_DIR
// overrides the parent dir, for tests). Every step writes its intent here *before* it touches
// the kernel or starts a process, and the result right after, so `lab down` can remove
// everything even when the lab process died half-way. Writes are temp+rename (a reader never
// sees half a file) under a flock (two `lab` commands never clobber each other's update).
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync, fsyncSync, openSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { withFileLock } from '../util/lock.js';
import { formatCidr, masked, tryParseCidr } from '../util/ip.js';
import { BACKEND_TYPES, type BackendType } from '../agent/lease.js';
import type { RouterKind } from './router/types.js';

// the lab runs every backend the agent has
export type Backend = BackendType;
export const BACKENDS = BACKEND_TYPES;
export type StoreKind = 'file' | 'etcd';
export type ProxyMode = 'nftables' | 'iptables' | 'off';
export const PROXY_MODES: readonly ProxyMode[] = ['nftables', 'iptables', 'off'];
export const DEFAULT_PROXY_MODE: ProxyMode = 'nftables';
export const DEFAULT_SERVICE_CIDR = '10.96.0.0/16';

/** A process the lab started: the PID plus its start time (field 22 of /proc/PID/stat), so a
 * recycled PID is never signalled. */
export interface ProcRef {
  pid: number;
  startTime: string;
}

export interface LabNode {
  name: string;
  /** host number on the underlay: the node's IP is 192.168.<k>.<index> */
  index: number;
  ns: string;
  ip: string;
  /** the veth end in the fabric namespace (on br0) */
  fabricIf: string;
  dir: string;
  binDir: string;
  conflist: string;
  socket: string;
  subnetFile: string;
  log: string;
  agent?: ProcRef;
  /** the rack (1-based) whose underlay the node is on, in a lab with a router */
  rack?: number;
  /** the node's IPv6 underlay address, in a lab with racks and an IPv6 network */
  ip6?: string;
  /** the node's own AS number (bgp backend): --bgp-asn */
  asn?: number;
}

/** A rack: its own underlay segment (bridge, /24), joined to the others by the router. */
export interface LabRack {
  index: number;
  /** the underlay is 192.168.<k>.0/24 */
  k: number;
  /** the rack's bridge in the fabric namespace (rack 1's is br0) */
  bridge: string;
  /** the router's leg on this rack: its interface in the router namespace and its addresses */
  routerIf: string;
  /** the veth end of the router's leg in the fabric namespace, on the rack's bridge */
  fabricIf: string;
  routerIp: string;
  /** the rack's IPv6 underlay /64, when the lab has an IPv6 network */
  v6Prefix?: string;
  routerIp6?: string;
}

/** The namespace joining the racks: plain kernel forwarding, or a BGP daemon (bgp backend). */
export interface LabRouter {
  ns: string;
  /** the BGP daemon; none: the router forwards between the racks with its connected routes only */
  kind?: RouterKind;
  asn?: number;
  dir: string;
  log: string;
  procs?: ProcRef[];
}

export interface LabPod {
  name: string;
  node: string;
  ns: string;
  containerId: string;
  ifname: string;
  ips: string[];
  /** false while CNI ADD has not answered yet (a crash there still leaves the netns recorded) */
  ready: boolean;
  /** the `--serve` reply server in the pod's namespace (recorded before it is started) */
  serve?: LabServer;
  /** `--host-port`: the CNI portMappings capability this pod was added (and is deleted) with */
  hostPorts?: HostPortMapping[];
}

export interface HostPortMapping {
  hostPort: number;
  containerPort: number;
  protocol: 'tcp' | 'udp';
}

/** A reply server (`podnet lab serve`) the lab started in a pod's namespace. */
export interface LabServer {
  /** "8080/tcp", "5353/udp" */
  ports: string[];
  log: string;
  readyFile: string;
  proc?: ProcRef;
}

/** A service the lab wrote to the cluster store: the objects as written, and where. */
export interface LabService {
  name: string;
  namespace: string;
  serviceKey: string;
  sliceKey: string;
  /** the v1 Service written under serviceKey */
  service: Record<string, unknown>;
  /** the discovery/v1 EndpointSlice written under sliceKey */
  slice: Record<string, unknown>;
}

export interface LabEtcdMember {
  name: string;
  index: number;
  ns: string;
  ip: string;
  fabricIf: string;
  dir: string;
  log: string;
  proc?: ProcRef;
}

export interface LabState {
  version: 1;
  name: string;
  dir: string;
  createdAt: string;
  phase: 'building' | 'up' | 'failed';
  /** the k of the underlay 192.168.<k>.0/24, unique among the labs in this dir */
  underlayK: number;
  fabricNs: string;
  fabricIp: string;
  network: string;
  /** the cluster's IPv6 network (net-conf IPv6Network), when the pods are dual-stack */
  ipv6Network?: string;
  backend: Backend;
  store: StoreKind;
  /** every namespace created (or about to be), in creation order */
  namespaces: string[];
  nodes: Record<string, LabNode>;
  pods: Record<string, LabPod>;
  etcd: Record<string, LabEtcdMember>;
  /** services the lab wrote to the store, by name (namespace "default") */
  services: Record<string, LabService>;
  /** where cluster IPs come from (absent in labs made before services: DEFAULT_SERVICE_CIDR) */
  serviceCidr?: string;
  /** passed to every agent as --proxy-mode (absent in older labs: DEFAULT_PROXY_MODE) */
  proxyMode?: ProxyMode;
  /** the racks (absent: one underlay, br0, with the fabric as every node's gateway) */
  racks?: LabRack[];
  router?: LabRouter;
}

export const NS_PREFIX = 'pnlab';

/** Lab names have no '-', so the namespace prefix `pnlab-<LAB>-` of one lab is never a prefix of another's. */
export const LAB_NAME_RE = /^[a-z0-9]{1,16}$/;
/** Node, pod and member names: short enough for interface names like `v-<name>` (15 bytes max). */
export const MEMBER_NAME_RE = /^[a-z0-9]{1,12}$/;

export function validateLabName(name: string): void {
  if (!LAB_NAME_RE.test(name)) throw new Error(`invalid lab name ${JSON.stringify(name)}: 1-16 characters of a-z and 0-9`);
}

export function validateMemberName(name: string, what: string): void {
  if (!MEMBER_NAME_RE.test(name)) throw new Error(`invalid ${what} name ${JSON.stringify(name)}: 1-12 characters of a-z and 0-9`);
}

export function labsRoot(): string {
  return process.env.PODNET_LAB_DIR || '/run/podnet/labs';
}

export function labDir(name: string): string {
  return join(labsRoot(), name);
}

export function statePath(name: string): string {
  return join(labDir(name), 'state.json');
}

/** The lock lives beside the lab dir, not in it, so `lab down` can remove the dir while holding it. */
function lockPath(name: string): string {
  return join(labsRoot(), `.${name}.lock`);
}

export function nsName(lab: string, what: string): string {
  return `${NS_PREFIX}-${lab}-${what}`;
}

export function nsPrefix(lab: string): string {
  return `${NS_PREFIX}-${lab}-`;
}

export function loadState(name: string): LabState | undefined {
  const p = statePath(name);
  if (!existsSync(p)) return undefined;
  return JSON.parse(readFileSync(p, 'utf8')) as LabState;
}

export function requireState(name: string): LabState {
  const s = loadState(name);
  if (!s) throw new Error(`no lab named ${JSON.stringify(name)} (no ${statePath(name)}); \`podnet lab ls\` lists the labs`);
  return s;
}

export function saveState(s: LabState): void {
  mkdirSync(s.dir, { recursive: true });
  const p = statePath(s.name);
  const tmp = `${p}.tmp.${process.pid}`;
  writeFileSync(tmp, JSON.stringify(s, null, 2) + '\n', { mode: 0o600 });
  // fsync before rename: after a power cut or a crash the file is either old or new, never empty
  const fd = openSync(tmp, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, p);
}

/** Serializes read-modify-write of one lab's state across processes. */
export async function withLabLock<T>(name: string, fn: () => Promise<T> | T): Promise<T> {
  mkdirSync(labsRoot(), { recursive: true });
  return withFileLock(lockPath(name), fn, { timeoutMs: 30_000 });
}

/** Reloads the state under the lock, applies fn, writes it back; returns the new state. */
export async function updateState(name: string, fn: (s: LabState) => void): Promise<LabState> {
  return withLabLock(name, () => {
    const s = requireState(name);
    fn(s);
    saveState(s);
    return s;
  });
}

/** Names of the labs with a state file. */
export function listLabs(): string[] {
  const root = labsRoot();
  if (!existsSync(root)) return [];
  return readdirSync(root, { withFileTypes: true })
    .filter((d) => d.isDirectory() && LAB_NAME_RE.test(d.name) && existsSync(join(root, d.name, 'state.json')))
    .map((d) => d.name)
    .sort();
}

/** k values of the underlays of the other labs in this dir. */
export function usedUnderlays(except?: string): Set<number> {
  const used = new Set<number>();
  for (const l of listLabs()) {
    if (l === except) continue;
    try {
      const s = loadState(l);
      if (s) used.add(s.underlayK);
      for (const r of s?.racks ?? []) used.add(r.k);
    } catch {
      /* an unreadable state cannot claim a k */
    }
  }
  return used;
}

/** Picks `count` k's in 100..249 (one per rack) starting from a hash of the name, skipping those other labs use. */
export function pickUnderlayKs(name: string, count = 1): number[] {
  const used = usedUnderlays(name);
  let h = 0;
  for (const c of name) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  const ks: number[] = [];
  for (let i = 0; i < 150 && ks.length < count; i++) {
    const k = 100 + ((h + i) % 150);
    if (!used.has(k)) ks.push(k);
  }
  if (ks.length < count) throw new Error(`no ${count} free underlays 192.168.<k>.0/24 left for another lab (${used.size} in use)`);
  return ks;
}

/** The lab to act on: --name, else $PODNET_LAB, else the only lab there is, else "lab". */
export function resolveLabName(given?: string): string {
  const n = given ?? process.env.PODNET_LAB;
  if (n) {
    validateLabName(n);
    return n;
  }
  const labs = listLabs();
  return labs.length === 1 ? labs[0] : 'lab';
}

/** What a lab was made with, with the defaults of labs made before a setting existed (for status and the web page). */
export function labSettings(s: LabState) {
  return {
    name: s.name,
    phase: s.phase,
    backend: s.backend,
    store: s.store,
    network: s.network,
    ...(s.ipv6Network ? { ipv6Network: s.ipv6Network } : {}),
    serviceCidr: s.serviceCidr ?? DEFAULT_SERVICE_CIDR,
    proxyMode: s.proxyMode ?? DEFAULT_PROXY_MODE,
  };
}

/** The node's leased pod subnets (subnet.env), IPv4 first; none before its agent wrote it. */
export function nodeSubnets(n: Pick<LabNode, 'subnetFile'>): string[] {
  let env: string;
  try {
    env = readFileSync(n.subnetFile, 'utf8');
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const key of ['PODNET_SUBNET', 'PODNET_IPV6_SUBNET']) {
    const c = tryParseCidr(new RegExp(`^${key}=(\\S+)`, 'm').exec(env)?.[1] ?? '');
    if (c) out.push(formatCidr(masked(c)));
  }
  return out;
}
