// `podnet cleanup`'s planner: from what was read of the node, the list of objects podnet created
// there, each with the mark that makes it podnet's. Pure (no I/O): cleanup.ts reads the node and
// applies the plan. Only marked objects are ever planned:
//   - links: the vxlan device podnet.<VNI> (kind vxlan and that name), podnet.tun (kind tun, alias
//     "podnet"), and the CNI's host-side links (alias "podnet:<net>:<cid>:<if>"). Their addresses,
//     connected routes, neighbours and FDB entries go with them. A bridge the CNI created carries
//     the alias "podnet-bridge" and goes too; a bridge that was there before has no such mark.
//   - routes: proto 80 in the main table (the cross-node backends', types.ts), on any device.
//   - neighbours: PERMANENT ones on a planned vxlan device; FDB entries with a remote (dst) on it.
//   - nftables: the tables by family and name (inet podnet, inet podnet-cluster, netdev
//     podnet-cluster, inet podnet-proxy, inet podnet-hostport, inet|bridge podnet-trace-<hex>).
//   - iptables (per backend nft/legacy and family): the proxy's PODNET-* chains of nat and filter,
//     the jumps to them in the built-in chains, and the FORWARD rules commented "podnet-cluster".
//   - the running podnet-tund of the data dir (by its pidfile, verified in /proc), files: the agent's
//     socket (a socket), subnet.env (PODNET_ lines), <data-dir>/tund; with --all also the IPAM
//     state of podnet's networks, <data-dir>/subnet and <data-dir>/bgp-running, and <data-dir>
//     itself when nothing else is in it.
import type { FdbEntry, Link, Neighbour, Route } from '../kernel/types.js';
import { BRIDGE_ALIAS, parseOwnerAlias } from '../cni/modes/common.js';
import { isPodnetRoute, routeDelSpec } from './backends/common.js';
import { PODNET_RTPROTO_STR } from './backends/types.js';
import { TUN_ALIAS, TUN_DEVICE } from './backends/tun.js';
import { CLUSTER_TABLE, IPTABLES_COMMENT } from './firewall.js';
import { TABLE as MASQ_TABLE } from '../cni/masq.js';
import { HOSTPORT_TABLE } from '../cni/hostport.js';
import { TABLE as PROXY_TABLE } from '../proxy/engines/nftables/plan.js';
import { BUILTIN_CHAINS, isPodnetChain } from '../proxy/engines/iptables/names.js';
import { targetOf, tokenize } from '../proxy/engines/iptables/save.js';
import type { RouteSpec } from '../kernel/types.js';

/** podnet's nftables tables: family and name (the trace's are matched by pattern). */
export const PODNET_NFT_TABLES: readonly { family: string; name: string; why: string }[] = [
  { family: 'inet', name: MASQ_TABLE, why: "the CNI's ipMasq table (src/cni/masq.ts)" },
  { family: 'inet', name: CLUSTER_TABLE, why: "the agent's cluster firewall (src/agent/firewall.ts)" },
  { family: 'netdev', name: CLUSTER_TABLE, why: "the agent's tunnel notrack at the underlay's ingress (src/agent/firewall.ts)" },
  { family: 'inet', name: PROXY_TABLE, why: "the service proxy's nftables engine" },
  { family: 'inet', name: HOSTPORT_TABLE, why: "the CNI's hostPort table (src/cni/hostport.ts)" },
];
const TRACE_TABLE = /^podnet-trace-[0-9a-f]{8}$/;

export const VXLAN_DEVICE = /^podnet\.\d{1,8}$/;

export type IptablesBackend = 'nft' | 'legacy';

export interface IptablesSave {
  backend: IptablesBackend;
  family: 4 | 6;
  /** iptables-save's output (all tables) */
  text: string;
}

export interface NodeFiles {
  /** the socket path, when a socket is there */
  socket?: string;
  /** subnet.env, when it exists; its content */
  subnetFile?: { path: string; content: string };
  /** <data-dir>/tund, when it exists */
  tundDir?: string;
  /** <data-dir>/subnet and <data-dir>/bgp-running, those that exist */
  dataFiles: string[];
  /** IPAM network dirs of podnet's networks that exist: path and network name */
  ipamDirs: { path: string; network: string }[];
  /** --data-dir, when it exists, and the names in it */
  dataDir?: { path: string; entries: string[] };
}

export interface TundSeen {
  pid: number;
  pidfile: string;
}

/** What cleanup read of the node. */
export interface NodeState {
  links: Link[];
  /** every route (all tables, both families) */
  routes: Route[];
  /** neighbours of the vxlan devices (others are not looked at) */
  neighbours: Neighbour[];
  /** FDB entries of the vxlan devices */
  fdb: FdbEntry[];
  nftTables: { family: string; name: string }[];
  iptables: IptablesSave[];
  tund?: TundSeen;
  files: NodeFiles;
}

export type CleanupItem =
  | { kind: 'process'; what: string; why: string; pid: number; pidfile: string }
  | { kind: 'nft-table'; what: string; why: string; family: string; name: string }
  | { kind: 'iptables-chain'; what: string; why: string; backend: IptablesBackend; family: 4 | 6; table: string; chain: string }
  | { kind: 'iptables-rule'; what: string; why: string; backend: IptablesBackend; family: 4 | 6; table: string; chain: string; spec: string[] }
  | { kind: 'route'; what: string; why: string; route: RouteSpec }
  | { kind: 'neighbour'; what: string; why: string; dev: string; dst: string }
  | { kind: 'fdb'; what: string; why: string; dev: string; mac: string; dst: string }
  | { kind: 'link'; what: string; why: string; name: string }
  | { kind: 'file'; what: string; why: string; path: string }
  | { kind: 'dir'; what: string; why: string; path: string }
  /** removed only if empty by then (rmdir) */
  | { kind: 'empty-dir'; what: string; why: string; path: string };

export interface CleanupPlanOptions {
  /** also the IPAM state and the agent's remembered subnet */
  all: boolean;
}

/** Why a link is podnet's, or undefined when it is not. */
export function podnetLinkMark(l: Link): string | undefined {
  if (l.kind === 'vxlan' && VXLAN_DEVICE.test(l.name)) return `vxlan device named podnet.<VNI> (the vxlan backend's)`;
  if (l.name === TUN_DEVICE && l.kind === 'tun' && l.alias === TUN_ALIAS) return `tun device ${TUN_DEVICE} with alias "${TUN_ALIAS}" (the tun backend's)`;
  if (l.kind === 'bridge' && l.alias === BRIDGE_ALIAS) return `bridge with alias "${BRIDGE_ALIAS}" (created by podnet's CNI in bridge mode)`;
  const owner = parseOwnerAlias(l.alias);
  if (owner) return `alias "${l.alias}": the CNI's host link of container ${owner.containerId} (${owner.ifname}) in network ${owner.network}`;
  return undefined;
}

/** The items of iptables-save output that are podnet's. */
export function planIptables(save: IptablesSave): CleanupItem[] {
  const out: CleanupItem[] = [];
  const tool = `${save.family === 4 ? 'iptables' : 'ip6tables'}-${save.backend}`;
  let table: string | undefined;
  for (const raw of save.text.split('\n')) {
    const l = raw.trimEnd();
    if (l === '' || l.startsWith('#')) continue;
    if (l.startsWith('*')) {
      table = l.slice(1).trim();
      continue;
    }
    if (!table) continue;
    if (l.startsWith(':')) {
      const chain = l.slice(1).split(/\s+/)[0];
      if ((table === 'nat' || table === 'filter') && isPodnetChain(chain)) {
        out.push({ kind: 'iptables-chain', what: `${tool} -t ${table} chain ${chain}`, why: 'chain named PODNET-* (the service proxy\'s iptables engine)', backend: save.backend, family: save.family, table, chain });
      }
      continue;
    }
    if (!l.startsWith('-A ')) continue;
    const tokens = tokenize(l.slice(3));
    const [chain, ...spec] = tokens;
    if (!chain || isPodnetChain(chain)) continue; // a PODNET chain's rules go with it
    const target = targetOf(spec);
    const builtins = (BUILTIN_CHAINS as Record<string, readonly string[]>)[table] ?? [];
    if (builtins.includes(chain) && target !== undefined && isPodnetChain(target)) {
      out.push({ kind: 'iptables-rule', what: `${tool} -t ${table} -A ${chain} ${l.slice(3 + chain.length + 1)}`, why: `jump to podnet's chain ${target}`, backend: save.backend, family: save.family, table, chain, spec });
      continue;
    }
    const ci = spec.indexOf('--comment');
    if (table === 'filter' && chain === 'FORWARD' && ci >= 0 && spec[ci + 1] === IPTABLES_COMMENT) {
      out.push({ kind: 'iptables-rule', what: `${tool} -t filter -A FORWARD ${l.slice(3 + chain.length + 1)}`, why: `comment "${IPTABLES_COMMENT}" (the agent's FORWARD accept for the cluster)`, backend: save.backend, family: save.family, table, chain, spec });
    }
  }
  return out;
}

function routeText(r: Route): string {
  return `${r.family === 6 ? '-6 ' : ''}${r.dst}${r.gateway ? ` via ${r.gateway}` : ''}${r.dev ? ` dev ${r.dev}` : ''}${r.metric !== undefined ? ` metric ${r.metric}` : ''} proto ${r.protocol}`;
}

/**
 * The plan, in the order it is applied: the datapath process first (it holds podnet.tun), the
 * firewall tables, routes, neighbours and FDB entries, the links, then the files. Pure.
 */
export function planCleanup(state: NodeState, opts: CleanupPlanOptions): CleanupItem[] {
  const items: CleanupItem[] = [];
  if (state.tund) {
    items.push({ kind: 'process', what: `podnet-tund pid ${state.tund.pid}`, why: `its pidfile ${state.tund.pidfile}, and /proc shows podnet-tund started with that pidfile`, pid: state.tund.pid, pidfile: state.tund.pidfile });
  }
  const seenTables = new Set<string>();
  for (const t of state.nftTables) {
    const k = `${t.family} ${t.name}`;
    if (seenTables.has(k)) continue;
    const known = PODNET_NFT_TABLES.find((p) => p.family === t.family && p.name === t.name);
    const trace = (t.family === 'inet' || t.family === 'bridge') && TRACE_TABLE.test(t.name);
    if (!known && !trace) continue;
    seenTables.add(k);
    items.push({ kind: 'nft-table', what: `nftables table ${k}`, why: known ? `table name: ${known.why}` : 'table name podnet-trace-<hex> (a trace --verify left it)', family: t.family, name: t.name });
  }
  for (const s of state.iptables) items.push(...planIptables(s));

  const planned = new Map<string, string>();
  for (const l of state.links) {
    const why = podnetLinkMark(l);
    if (why) planned.set(l.name, why);
  }
  for (const r of state.routes) {
    if (!isPodnetRoute(r)) continue;
    items.push({ kind: 'route', what: `route ${routeText(r)}`, why: `proto ${PODNET_RTPROTO_STR} in the main table (the cross-node backends')`, route: routeDelSpec(r) });
  }
  const vxlans = new Set([...planned.keys()].filter((n) => VXLAN_DEVICE.test(n)));
  for (const n of state.neighbours) {
    if (!vxlans.has(n.dev) || !n.state.includes('PERMANENT')) continue;
    items.push({ kind: 'neighbour', what: `neighbour ${n.dst} lladdr ${n.lladdr ?? '?'} dev ${n.dev}`, why: `PERMANENT neighbour on podnet's vxlan device ${n.dev}`, dev: n.dev, dst: n.dst });
  }
  for (const e of state.fdb) {
    if (!vxlans.has(e.dev) || !e.dst) continue;
    items.push({ kind: 'fdb', what: `fdb ${e.mac} dev ${e.dev} dst ${e.dst}`, why: `FDB entry with a remote on podnet's vxlan device ${e.dev}`, dev: e.dev, mac: e.mac, dst: e.dst });
  }
  for (const l of state.links) {
    const why = planned.get(l.name);
    if (why) items.push({ kind: 'link', what: `link ${l.name}${l.kind ? ` (${l.kind})` : ''}`, why, name: l.name });
  }

  const f = state.files;
  if (f.socket) items.push({ kind: 'file', what: `socket ${f.socket}`, why: "the agent's CNI socket (--socket), nothing answers on it", path: f.socket });
  if (f.subnetFile && /^PODNET_SUBNET=/m.test(f.subnetFile.content)) items.push({ kind: 'file', what: `file ${f.subnetFile.path}`, why: 'subnet.env written by the agent (--subnet-file, PODNET_SUBNET=)', path: f.subnetFile.path });
  if (f.tundDir) items.push({ kind: 'dir', what: `dir ${f.tundDir}`, why: "podnet-tund's runtime files (<data-dir>/tund)", path: f.tundDir });
  if (opts.all) {
    for (const p of f.dataFiles) items.push({ kind: 'file', what: `file ${p}`, why: "the agent's state in --data-dir (--all)", path: p });
    for (const d of f.ipamDirs) items.push({ kind: 'dir', what: `dir ${d.path}`, why: `IPAM reservations of podnet network ${d.network} (--all)`, path: d.path });
    // the data dir itself when nothing but what goes now is in it (a file store there stays, and so does the dir)
    const d = f.dataDir;
    const going = new Set(items.flatMap((i) => (i.kind === 'file' || i.kind === 'dir' ? [i.path] : [])));
    if (d && d.entries.every((e) => going.has(`${d.path.replace(/\/$/, '')}/${e}`))) {
      items.push({ kind: 'empty-dir', what: `dir ${d.path} (empty by then)`, why: 'the agent\'s --data-dir, holding nothing else (--all)', path: d.path });
    }
  }
  return items;
}

/** The IPAM networks the CNI host links name in their owner alias (podnet:<net>:...). Pure. */
export function networksOfLinks(links: Link[]): string[] {
  const out = new Set<string>();
  for (const l of links) {
    const o = parseOwnerAlias(l.alias);
    if (o && /^[A-Za-z0-9_.-]+$/.test(o.network)) out.add(o.network);
  }
  return [...out].sort();
}
