// `podnet status`: gathers one node's report (src/node/status.ts has the pure diffs) and renders it.
// Read only: nothing here writes to the store, the kernel or a file.
import { readFileSync } from 'node:fs';
import { defaultKernel, defaultNft } from '../kernel/index.js';
import type { NetnsRef } from '../kernel/types.js';
import { createBackend, Reconciler } from '../agent/backends/index.js';
import { BgpBackend } from '../agent/backends/bgp.js';
import type { SpeakerStatus } from '../agent/bgp/speaker.js';
import { askAgent } from '../agent/control-client.js';
import type { NetConf } from '../agent/netconf.js';
import { detectNode, type NodeIdentity } from '../agent/node-ip.js';
import { leasesOf } from '../agent/leases.js';
import type { NodeLease } from '../agent/lease.js';
import { renderSubnetEnv } from '../agent/subnet-env.js';
import { openStore } from '../store/index.js';
import type { KeyValue } from '../store/types.js';
import { formatCidr } from '../util/ip.js';
import { table } from '../util/table.js';
import { checkDevice, checkSocket, diffPeers, diffSubnetEnv, ipamUsage, readIfExists, type DeviceStatus, type IpamNetworkUsage, type PeerStatus, type SocketStatus, type StaleObject } from './status.js';
import { readConfig as readAgentConfig } from '../agent/cluster.js';

export interface StatusOptions {
  config: string;
  store: string;
  etcdEndpoints: string[];
  etcdPrefix: string;
  iface?: string;
  publicIP?: string;
  nodeName?: string;
  subnetFile: string;
  socket: string;
  dataDir: string;
  ipamDataDir: string;
  proxyMode: 'nftables' | 'iptables' | 'off';
  nodePortRange: [number, number];
  /** the agent's --metrics-addr, for the proxy's last sync (optional) */
  metricsAddr?: string;
}

/** Bad usage or an unreachable store: exit 2. */
export class StatusUsageError extends Error {}

export interface Problem {
  section: string;
  message: string;
  look?: string;
}

export interface ProxyServiceStatus {
  service: string;
  frontends: number;
  state: 'programmed' | 'not-programmed';
  details: string[];
}

export interface NodeStatus {
  node: { name?: string; iface: string; publicIP: string };
  store: { describe: string; reachable: boolean; leases: number; expiryKnown: boolean };
  lease?: NodeLease & { key: string; expiresAt?: string; expiresInSeconds?: number };
  backend: { type: string; device: DeviceStatus };
  subnetFile: { path: string; exists: boolean; differences: string[] };
  peers: PeerStatus[];
  /** bgp backend: the speaker's sessions as the agent reports them */
  bgp?: { converged: boolean; peers: { address: string; asn: number; state: string; accepted: number; lastError?: string }[] };
  peersChecked: boolean;
  stale: StaleObject[];
  socket: SocketStatus;
  proxy: { mode: string; table?: { name: string; exists: boolean }; services: ProxyServiceStatus[]; staleFrontends: string[]; lastSync?: string; lastSyncNote?: string };
  ipam: { dataDir: string; exists: boolean; networks: IpamNetworkUsage[] };
  problems: Problem[];
}

const ns: NetnsRef = { kind: 'current' };

/** The agent's own net-conf reading; its errors are bad usage here. */
function readConfig(path: string, node: NodeIdentity): NetConf {
  try {
    return readAgentConfig(path, node);
  } catch (e) {
    const msg = (e as Error).message;
    throw new StatusUsageError(msg.startsWith('--config ') ? msg : `--config ${path}: ${msg}`);
  }
}

interface StoreRead {
  describe: string;
  kvs: (prefix: string) => KeyValue[];
  /** ms since the epoch, by store lease id; undefined when the store does not tell (etcd) */
  expiresAt?: (lease: number) => number | undefined;
}

/** The store's keys, read without writing: the file store from its state file (expired leases' keys left out, not reaped), etcd by range reads. */
async function readStore(o: StatusOptions, prefixes: string[]): Promise<StoreRead> {
  if (o.store.startsWith('file:')) {
    let path = o.store.slice('file:'.length);
    if (path.startsWith('//')) path = path.slice(2);
    const dirOrFile = decodeURIComponent(path);
    const statePath = dirOrFile.endsWith('.json') ? dirOrFile : `${dirOrFile.replace(/\/$/, '')}/state.json`;
    let st: { leases: Record<string, { expiresAt: number }>; kvs: Record<string, { value: string; modRevision: number; lease: number }> };
    try {
      st = JSON.parse(readFileSync(statePath, 'utf8')) as typeof st;
      if (!st.kvs || !st.leases) throw new Error('not a podnet store state');
    } catch (e) {
      throw new StatusUsageError(`cluster store file:${statePath} is unreachable: ${(e as Error).message}`);
    }
    const now = Date.now();
    const alive = (lease: number) => lease === 0 || (st.leases[String(lease)]?.expiresAt ?? 0) > now;
    return {
      describe: `file:${statePath}`,
      kvs: (prefix) =>
        Object.keys(st.kvs)
          .filter((k) => k.startsWith(prefix) && alive(st.kvs[k].lease))
          .sort()
          .map((k) => ({ key: k, ...st.kvs[k] })),
      expiresAt: (lease) => st.leases[String(lease)]?.expiresAt,
    };
  }
  let store;
  try {
    store = await openStore(o.store, { endpoints: o.etcdEndpoints, callTimeoutMs: 2000 });
  } catch (e) {
    throw new StatusUsageError((e as Error).message);
  }
  try {
    const got = new Map<string, KeyValue[]>();
    for (const p of prefixes) got.set(p, (await store.list(p)).kvs);
    return { describe: store.describe, kvs: (prefix) => got.get(prefix) ?? [] };
  } catch (e) {
    throw new StatusUsageError(`cluster store ${store.describe} is unreachable: ${(e as Error).message}`);
  } finally {
    await store.close().catch(() => undefined);
  }
}

async function lastProxySync(addr: string): Promise<string | undefined> {
  const ctl = AbortSignal.timeout(2000);
  const text = await (await fetch(`http://${addr}/metrics`, { signal: ctl })).text();
  const m = /^podnet_sync_proxy_rules_last_timestamp_seconds(?:\{[^}]*\})?\s+(\S+)/m.exec(text);
  const v = m ? Number(m[1]) : NaN;
  return Number.isFinite(v) && v > 0 ? new Date(v * 1000).toISOString() : undefined;
}

export async function gatherStatus(o: StatusOptions): Promise<NodeStatus> {
  const kernel = defaultKernel();
  const problems: Problem[] = [];
  const add = (section: string, message: string, look?: string) => problems.push({ section, message, ...(look ? { look } : {}) });
  let node: NodeIdentity;
  try {
    node = await detectNode(kernel, ns, { iface: o.iface, publicIP: o.publicIP });
  } catch (e) {
    throw new StatusUsageError((e as Error).message);
  }
  const conf = readConfig(o.config, node);
  const clusterCidrs = [formatCidr(conf.network), ...(conf.ipv6Network ? [formatCidr(conf.ipv6Network)] : [])];
  const backend = createBackend({ type: conf.backend.type, vni: conf.backend.vni, dstport: conf.backend.port, port: conf.backend.port, clusterNetworks: clusterCidrs, dataDir: o.dataDir, iface: node.iface });
  const prefix = `${o.etcdPrefix.replace(/\/$/, '')}/subnets/`;
  const { SERVICES_PREFIX, SLICES_PREFIX } = await import('../proxy/document.js');
  const store = await readStore(o, [prefix, SERVICES_PREFIX, SLICES_PREFIX]);
  const all = leasesOf(store.kvs(prefix), prefix);
  // as the agent finds its own: by public IP (chooseSubnet)
  const mine = all.find((x) => x.lease.publicIP === node.publicIP);
  let lease: NodeStatus['lease'];
  if (!mine) {
    add('lease', `no lease in ${store.describe} for this node's public IP ${node.publicIP} (the agent is not running, or its lease expired)`, `podnet status -o json; systemctl status podnet-agent`);
  } else {
    const exp = store.expiresAt?.(mine.kv.lease);
    lease = { ...mine.lease, key: mine.kv.key, ...(exp ? { expiresAt: new Date(exp).toISOString(), expiresInSeconds: Math.round((exp - Date.now()) / 100) / 10 } : {}) };
    if (o.nodeName && mine.lease.nodeName && mine.lease.nodeName !== o.nodeName) add('lease', `the lease of ${node.publicIP} names node ${mine.lease.nodeName}, not ${o.nodeName}`);
    if (mine.lease.backendType !== backend.type) add('lease', `the lease says backend ${mine.lease.backendType}, net-conf ${backend.type}`);
  }
  const underlay = (await kernel.link(ns, node.iface))!;
  const own = mine?.lease;
  const device: DeviceStatus = own ? await checkDevice(kernel, ns, backend, own, underlay) : { name: backend.device, exists: !!(backend.device && (await kernel.link(ns, backend.device))), wantMtu: underlay.mtu - backend.mtuOverhead(node.publicIP.includes(':')), problems: [] };
  for (const p of device.problems) add('device', p.message, p.look);
  if (own && backend.type === 'vxlan' && device.exists) {
    const l = await kernel.link(ns, backend.device!);
    if (l && own.backendData.VtepMAC?.toLowerCase() !== l.mac.toLowerCase()) add('lease', `the lease's VtepMAC ${own.backendData.VtepMAC ?? '(none)'} is not ${backend.device}'s MAC ${l.mac}: peers send to the wrong MAC`, `ip link show ${backend.device}`);
  }

  // subnet.env as the agent writes it for this lease
  const envText = readIfExists(o.subnetFile);
  const podMtu = Math.min(device.wantMtu, conf.backend.mtu ?? device.wantMtu);
  const differences = own ? diffSubnetEnv(envText, (masq) => renderSubnetEnv(conf, own, podMtu, masq)) : envText === undefined ? ['missing'] : [];
  for (const d of differences) add('subnet.env', d === 'missing' ? `${o.subnetFile} does not exist` : `${o.subnetFile}: ${d}`, `cat ${o.subnetFile}`);

  // peers: the backend's plan against the kernel
  const peersOnly = all.map((x) => x.lease).filter((l) => !own || l.subnet !== own.subnet);
  let peers: PeerStatus[] = [];
  let stale: StaleObject[] = [];
  // bgp: the routes come from the agent's speaker, not from the leases; its status (over the
  // agent's socket) has the sessions and the best paths the agent plans its routes from
  let bgp: NodeStatus['bgp'];
  if (own && backend instanceof BgpBackend) {
    try {
      const st = (await askAgent(o.socket, 'bgp-status')) as SpeakerStatus;
      bgp = { peers: st.peers.map((p) => ({ address: p.address, asn: p.asn, state: p.state, accepted: p.prefixes.accepted, ...(p.lastError ? { lastError: p.lastError } : {}) })), converged: st.converged };
      for (const p of bgp.peers) if (p.state !== 'Established') add('bgp', `BGP peer ${p.address} (AS ${p.asn}) is ${p.state}${p.lastError ? `: ${p.lastError}` : ''}`, 'podnet bgp status');
      backend.useSpeaker({ bestRoutes: () => st.best ?? [], converged: () => st.converged, setAccepted: () => {} });
    } catch (e) {
      add('bgp', `the agent's BGP status cannot be read (${(e as Error).message}): the routes learned over BGP are not checked`, 'podnet bgp status');
    }
  }
  const peersChecked = !!own && (!(backend instanceof BgpBackend) || !!bgp);
  if (peersChecked && own) {
    const actual = await new Reconciler({ kernel, ns, backend }).observe();
    let tund: { table?: ReturnType<typeof import('../agent/tund/index.js').readPeers>; file: string } | undefined;
    if (backend.type === 'tun') {
      const t = await import('../agent/tund/index.js');
      tund = { table: t.readPeers(o.dataDir), file: t.tundFiles(o.dataDir).peers };
      if (!t.findTund(o.dataDir)) add('datapath', `podnet-tund is not running (no live process behind ${t.tundFiles(o.dataDir).pid})`, `cat ${t.tundFiles(o.dataDir).log}`);
    }
    const d = diffPeers(backend, own, peersOnly, actual, tund);
    peers = d.peers;
    stale = d.stale;
    for (const s of d.shared) if (s.state !== 'present') add('datapath', `${s.what}: ${s.state}`, s.look);
    // bgp: a node whose subnet no peer announces has no route at all (nothing in the plan to miss)
    if (bgp) {
      for (const p of peers) {
        if (p.objects.length || p.state === 'refused') continue;
        p.objects.push({ kind: 'route', what: `route ${p.subnet} (no BGP peer announces it)`, look: 'podnet bgp status -o json', state: 'missing' });
        p.state = 'not-programmed';
      }
    }
    for (const p of peers) {
      const name = `peer ${p.nodeName ?? p.subnet} (subnet ${p.subnet}, ${p.publicIP})`;
      for (const r of p.reasons) add('peers', `${name} refused: ${r}`);
      for (const ob of p.objects) if (ob.state !== 'present') add('peers', `${name}: ${ob.what} ${ob.state}`, ob.look);
    }
    for (const s of stale) add('peers', `stale ${s.what}: no lease wants it`, s.look);
  }

  // the CNI socket
  const socket = await checkSocket(o.socket);
  if (!socket.answers) add('socket', `CNI socket ${o.socket}: ${socket.error ?? 'does not answer'}`, `ls -l ${o.socket}; systemctl status podnet-agent`);

  // the proxy: what the store's services want (normalize + endpointsByFrontend) against the engine's programmedEndpoints
  const proxy: NodeStatus['proxy'] = { mode: o.proxyMode, services: [], staleFrontends: [] };
  if (o.proxyMode !== 'off') {
    const [{ normalize }, { endpointsByFrontend }, { createEngine }, { frontendKeys }] = await Promise.all([import('../proxy/normalize.js'), import('../proxy/frontends.js'), import('../proxy/engines/index.js'), import('../proxy/engine.js')]);
    const parse = (kvs: KeyValue[]) => kvs.flatMap((kv) => {
      try {
        const v = JSON.parse(kv.value) as unknown;
        return v && typeof v === 'object' ? [v] : [];
      } catch {
        return [];
      }
    });
    const pnode = { name: o.nodeName ?? node.publicIP, nodeIPs: [node.publicIP, ...(node.publicIPv6 ? [node.publicIPv6] : [])], clusterCIDRs: clusterCidrs, nodePortRange: o.nodePortRange };
    const model = normalize({ services: parse(store.kvs(SERVICES_PREFIX)) as never, endpointSlices: parse(store.kvs(SLICES_PREFIX)) as never }, pnode);
    const want = endpointsByFrontend(model, pnode);
    let tableName = 'podnet-proxy';
    if (o.proxyMode === 'nftables') {
      const has = await defaultNft().listJson(ns, ['table', 'inet', tableName], { terse: true });
      proxy.table = { name: `inet ${tableName}`, exists: !!has };
      if (!has && model.ports.length > 0) add('proxy', `nftables table inet ${tableName} does not exist, but the store has ${model.ports.length} service port(s)`, `nft list table inet ${tableName}`);
    } else tableName = '';
    const engine = await createEngine(o.proxyMode);
    let have: Map<string, Set<string>>;
    try {
      have = await engine.programmedEndpoints(pnode);
    } finally {
      engine.close?.();
    }
    const look = o.proxyMode === 'nftables' ? `nft list table inet ${tableName}` : 'iptables-save -t nat | grep PODNET';
    const bySvc = new Map<string, ProxyServiceStatus>();
    const same = (a: Set<string>, b: Set<string>) => a.size === b.size && [...a].every((x) => b.has(x));
    for (const p of model.ports) {
      const s = bySvc.get(p.service) ?? { service: p.service, frontends: 0, state: 'programmed' as const, details: [] };
      for (const k of frontendKeys(p)) {
        if (!want.has(k)) continue;
        s.frontends++;
        const w = want.get(k)!;
        const h = have.get(k) ?? new Set<string>();
        if (!same(w, h)) {
          s.state = 'not-programmed';
          const missing = [...w].filter((x) => !h.has(x));
          const extra = [...h].filter((x) => !w.has(x));
          s.details.push(`${k}:${missing.length ? ` missing endpoints ${missing.join(',')}` : ''}${extra.length ? ` extra endpoints ${extra.join(',')}` : ''}`);
        }
      }
      bySvc.set(p.service, s);
    }
    proxy.services = [...bySvc.values()].sort((a, b) => a.service.localeCompare(b.service));
    for (const s of proxy.services) for (const d of s.details) add('proxy', `service ${s.service}: ${d}`, look);
    proxy.staleFrontends = [...have.keys()].filter((k) => !want.has(k) && (have.get(k)?.size ?? 0) > 0).sort();
    for (const k of proxy.staleFrontends) add('proxy', `frontend ${k} is programmed but no service in the store wants it`, look);
    if (o.metricsAddr) {
      try {
        const t = await lastProxySync(o.metricsAddr);
        if (t) proxy.lastSync = t;
        else proxy.lastSyncNote = `the agent's /metrics on ${o.metricsAddr} reports no proxy sync yet`;
      } catch (e) {
        proxy.lastSyncNote = `cannot read the agent's /metrics on ${o.metricsAddr}: ${(e as Error).message}`;
      }
    } else proxy.lastSyncNote = 'unknown: only the agent knows it (give --metrics-addr of an agent serving /metrics)';
  }

  const ipam = await ipamUsage(o.ipamDataDir, envText);

  return {
    node: { ...(o.nodeName ? { name: o.nodeName } : {}), iface: node.iface, publicIP: node.publicIP },
    store: { describe: store.describe, reachable: true, leases: all.length, expiryKnown: !!store.expiresAt },
    ...(lease ? { lease } : {}),
    backend: { type: backend.type, device },
    subnetFile: { path: o.subnetFile, exists: envText !== undefined, differences },
    peers,
    peersChecked,
    ...(bgp ? { bgp } : {}),
    stale,
    socket,
    proxy,
    ipam,
    problems,
  };
}

export function renderStatusText(s: NodeStatus): string {
  const out: string[] = [];
  const sec = (title: string, rows: string[][]) => out.push(`${title}\n${table(rows)}`);
  sec('NODE', [['NAME', 'IFACE', 'PUBLIC IP', 'STORE', 'LEASES'], [s.node.name ?? '-', s.node.iface, s.node.publicIP, s.store.describe, String(s.store.leases)]]);
  const l = s.lease;
  sec('LEASE', [['SUBNET', 'IPV6 SUBNET', 'BACKEND', 'EXPIRES'], l ? [l.subnet, l.ipv6Subnet ?? '-', l.backendType, l.expiresAt ? `${l.expiresAt} (in ${l.expiresInSeconds}s)` : s.store.expiryKnown ? '-' : 'not known (etcd: etcdctl lease timetolive)'] : ['none', '-', '-', '-']]);
  const d = s.backend.device;
  sec('BACKEND', [['TYPE', 'DEVICE', 'KIND', 'MTU', 'UP', 'OK'], [s.backend.type, d.name ?? '(none)', d.kind ?? '-', d.mtu !== undefined ? `${d.mtu}${d.mtu === d.wantMtu ? '' : ` (planned ${d.wantMtu})`}` : `- (planned ${d.wantMtu})`, d.up === undefined ? '-' : d.up ? 'yes' : 'no', d.name && !d.exists ? 'missing' : d.problems.length ? 'no' : 'yes']]);
  sec('SUBNET.ENV', [['PATH', 'AGREES WITH THE LEASE'], [s.subnetFile.path, !s.subnetFile.exists ? 'missing' : s.subnetFile.differences.length ? `no (${s.subnetFile.differences.length} line(s))` : 'yes']]);
  if (s.bgp) sec(`BGP (${s.bgp.converged ? 'converged' : 'waiting for End-of-RIB'})`, [['PEER', 'AS', 'STATE', 'ACCEPTED'], ...s.bgp.peers.map((p) => [p.address, String(p.asn), p.state, String(p.accepted)])]);
  if (!s.peersChecked) out.push('PEERS\n  not checked' + (s.lease ? " (bgp backend: the agent's BGP status cannot be read)" : ' (no lease of this node)'));
  else sec('PEERS', [['NODE', 'SUBNET', 'PUBLIC IP', 'STATE', 'OBJECTS'], ...s.peers.map((p) => [p.nodeName ?? '-', p.subnet, p.publicIP, p.state, p.state === 'refused' ? p.reasons.join('; ') : p.objects.filter((o) => o.state !== 'present').map((o) => `${o.kind} ${o.state}`).join(', ') || `${p.objects.length} present`])]);
  sec('CNI SOCKET', [['PATH', 'EXISTS', 'ANSWERS'], [s.socket.path, s.socket.exists ? 'yes' : 'no', s.socket.answers ? 'yes' : `no${s.socket.error ? ` (${s.socket.error})` : ''}`]]);
  const p = s.proxy;
  if (p.mode === 'off') out.push('PROXY\n  off');
  else {
    out.push(`PROXY (${p.mode}${p.table ? `, table ${p.table.name} ${p.table.exists ? 'exists' : 'missing'}` : ''}; last sync: ${p.lastSync ?? p.lastSyncNote ?? '-'})`);
    if (p.services.length) out.push(table([['SERVICE', 'FRONTENDS', 'STATE'], ...p.services.map((x) => [x.service, String(x.frontends), x.state])]));
    else out.push('  no services in the store');
  }
  if (!s.ipam.exists) out.push(`IPAM\n  ${s.ipam.dataDir} does not exist (no reservations)`);
  else sec(`IPAM (${s.ipam.dataDir})`, [['NETWORK', 'ALLOCATED', 'RANGE', 'SIZE'], ...s.ipam.networks.map((n) => [n.network, String(n.allocated), n.range ?? '-', n.size !== undefined ? String(n.size) : '-'])]);
  if (s.problems.length) {
    out.push(`PROBLEMS (${s.problems.length})`);
    for (const pr of s.problems) out.push(`  [${pr.section}] ${pr.message}${pr.look ? `\n      look: ${pr.look}` : ''}`);
  } else out.push('all good');
  return out.join('\n') + '\n';
}

