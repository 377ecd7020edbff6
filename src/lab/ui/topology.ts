// The lab as the web page draws it (`podnet lab ui`, GET /api/topology): the fabric (or its
// racks) and the router, the nodes, the pods under their node, the services with their endpoints,
// the links between namespaces (with the device at each end, so a trace hop's in/out devices pick
// the link it crossed) and the tunnels between nodes for the vxlan and tun backends. Pure: the
// state file plus a few live facts read elsewhere (src/lab/ui/live.ts) in, the graph model out.
import type { LabState } from '../state.js';
import { labSettings } from '../state.js';
import { serviceListFromState } from '../service-ops.js';
import { portText } from '../services.js';
import type { Hop, TraceResult } from '../../trace/types.js';
import { labNamespaces } from '../../trace/lab-endpoints.js';

/** What is read from the running system (cheap reads only), per namespace or node name. */
export interface LiveFacts {
  /** namespaces that exist now (/run/netns) */
  namespaces: ReadonlySet<string>;
  /** node name → its agent runs (the recorded PID is still that process) */
  agents: Readonly<Record<string, boolean>>;
  routerRunning?: boolean;
  etcd: Readonly<Record<string, boolean>>;
  /** node name → its leased pod subnet(s) (subnet.env), IPv4 first */
  subnets: Readonly<Record<string, string[]>>;
  /** node name → its tunnel datapath as the kernel has it; absent when it could not be read */
  dataplane: Readonly<Record<string, NodeDataplane>>;
}

export interface NodeDataplane {
  /** vxlan and tun devices in the node's namespace */
  tunnels: { dev: string; kind: 'vxlan' | 'tun'; vni?: number; port?: number }[];
  /** routes of the main table: destination prefix and device */
  routes: { dst: string; dev?: string }[];
  /** vxlan device → the remote VTEPs its FDB sends to */
  fdb: Record<string, string[]>;
}

export type Health = 'ok' | 'down' | 'missing';

export interface UiNode {
  name: string;
  ns: string;
  ip: string;
  ip6?: string;
  rack?: number;
  asn?: number;
  subnets: string[];
  /** the node's veth end in the fabric namespace */
  fabricIf: string;
  agent: 'running' | 'stopped';
  health: Health;
}

export interface UiPod {
  name: string;
  node: string;
  ns: string;
  ips: string[];
  ready: boolean;
  serve?: string[];
  health: Health;
}

export interface UiService {
  name: string;
  type: string;
  clusterIP: string;
  ports: string[];
  endpoints: { ip: string; pod?: string; ns?: string; ready: boolean }[];
  problems: string[];
}

export interface UiLink {
  id: string;
  kind: 'underlay' | 'pod' | 'router' | 'etcd';
  /** the namespaces at each end, and the device there when known */
  a: string;
  aDev?: string;
  b: string;
  bDev?: string;
  /** underlay links: the rack (segment) they are on */
  rack?: number;
}

export interface UiTunnel {
  id: string;
  kind: 'vxlan' | 'tun';
  /** node names */
  a: string;
  b: string;
  dev?: string;
  vni?: number;
  port?: number;
  /** does a route b's pod subnet into the tunnel (and, for vxlan, has an FDB entry for b's VTEP); undefined: not known */
  ab?: boolean;
  ba?: boolean;
  state: 'up' | 'one-way' | 'down' | 'unknown';
}

export interface UiTopology {
  lab: { name: string; phase: string; backend: string; store: string; network: string; ipv6Network?: string; serviceCidr: string; proxyMode: string };
  fabric: { ns: string; ip: string; underlay: string; health: Health };
  /** empty without racks (one underlay, br0 in the fabric) */
  racks: { index: number; underlay: string; underlay6?: string; bridge: string; routerIf: string; fabricIf: string; routerIp: string }[];
  router?: { ns: string; daemon?: string; asn?: number; running: boolean; health: Health };
  nodes: UiNode[];
  pods: UiPod[];
  services: UiService[];
  etcd: { name: string; ns: string; ip: string; alive: boolean; health: Health }[];
  links: UiLink[];
  tunnels: UiTunnel[];
  /** every namespace of the lab and what it is (pod a, node n1, fabric, router, etcd e1) */
  roles: Record<string, string>;
}

const health = (exists: boolean, running = true): Health => (!exists ? 'missing' : running ? 'ok' : 'down');

/** Does `from` send `to`'s pod subnet into its tunnel (and, for vxlan, know `to`'s VTEP)? */
function tunnelDirection(from: NodeDataplane | undefined, toSubnet: string | undefined, toIp: string): { ok?: boolean; dev?: string; vni?: number; port?: number } {
  if (!from || !toSubnet) return {};
  const route = from.routes.find((r) => r.dst === toSubnet);
  const dev = route?.dev ? from.tunnels.find((t) => t.dev === route.dev) : undefined;
  if (!dev) return { ok: false, ...(from.tunnels[0] ? { dev: from.tunnels[0].dev, vni: from.tunnels[0].vni, port: from.tunnels[0].port } : {}) };
  const ok = dev.kind === 'tun' || (from.fdb[dev.dev] ?? []).includes(toIp);
  return { ok, dev: dev.dev, vni: dev.vni, port: dev.port };
}

/** The graph model of a lab: its state plus the live facts. */
export function buildTopology(s: LabState, live: LiveFacts): UiTopology {
  const has = (ns: string) => live.namespaces.has(ns);
  const nodes = Object.values(s.nodes)
    .sort((a, b) => (a.rack ?? 0) - (b.rack ?? 0) || a.index - b.index)
    .map<UiNode>((n) => ({
      name: n.name,
      ns: n.ns,
      ip: n.ip,
      ...(n.ip6 ? { ip6: n.ip6 } : {}),
      ...(n.rack ? { rack: n.rack } : {}),
      ...(n.asn ? { asn: n.asn } : {}),
      subnets: live.subnets[n.name] ?? [],
      fabricIf: n.fabricIf,
      agent: live.agents[n.name] ? 'running' : 'stopped',
      health: health(has(n.ns), !!live.agents[n.name]),
    }));
  const pods = Object.values(s.pods)
    .sort((a, b) => a.node.localeCompare(b.node) || a.name.localeCompare(b.name))
    .map<UiPod>((p) => ({ name: p.name, node: p.node, ns: p.ns, ips: p.ips, ready: p.ready, ...(p.serve ? { serve: p.serve.ports } : {}), health: health(has(p.ns), p.ready) }));
  const podByName = new Map(pods.map((p) => [p.name, p]));
  const podByIp = new Map(pods.flatMap((p) => p.ips.map((ip) => [ip, p] as const)));
  const services = serviceListFromState(s).map<UiService>((v) => ({
    name: v.name,
    type: v.type,
    clusterIP: v.clusterIP,
    ports: v.ports.map(portText),
    endpoints: v.addresses.map((a) => {
      const pod = (a.pod ? podByName.get(a.pod) : undefined) ?? podByIp.get(a.ip);
      return { ip: a.ip, ...(pod ? { pod: pod.name, ns: pod.ns } : a.pod ? { pod: a.pod } : {}), ready: a.ready };
    }),
    problems: v.problems,
  }));

  const racks = (s.racks ?? []).map((r) => ({
    index: r.index,
    underlay: `192.168.${r.k}.0/24`,
    ...(r.v6Prefix ? { underlay6: r.v6Prefix } : {}),
    bridge: r.bridge,
    routerIf: r.routerIf,
    fabricIf: r.fabricIf,
    routerIp: r.routerIp,
  }));
  const links: UiLink[] = [];
  for (const n of nodes) links.push({ id: `underlay:${n.name}`, kind: 'underlay', a: n.ns, aDev: 'eth0', b: s.fabricNs, bDev: n.fabricIf, ...(n.rack ? { rack: n.rack } : {}) });
  for (const p of pods) {
    const node = s.nodes[p.node];
    if (node) links.push({ id: `pod:${p.name}`, kind: 'pod', a: p.ns, aDev: s.pods[p.name].ifname, b: node.ns });
  }
  if (s.router) for (const r of racks) links.push({ id: `router:rack${r.index}`, kind: 'router', a: s.router.ns, aDev: r.routerIf, b: s.fabricNs, bDev: r.fabricIf, rack: r.index });
  const etcd = Object.values(s.etcd)
    .sort((a, b) => a.index - b.index)
    .map((m) => ({ name: m.name, ns: m.ns, ip: m.ip, alive: !!live.etcd[m.name], health: health(has(m.ns), !!live.etcd[m.name]) }));
  for (const m of Object.values(s.etcd)) links.push({ id: `etcd:${m.name}`, kind: 'etcd', a: m.ns, aDev: 'eth0', b: s.fabricNs, bDev: m.fabricIf, ...(racks.length ? { rack: 1 } : {}) });

  const tunnels: UiTunnel[] = [];
  if (s.backend === 'vxlan' || s.backend === 'tun') {
    for (let i = 0; i < nodes.length; i++)
      for (let j = i + 1; j < nodes.length; j++) {
        const a = nodes[i];
        const b = nodes[j];
        const ab = tunnelDirection(live.dataplane[a.name], b.subnets.find((c) => !c.includes(':')), b.ip);
        const ba = tunnelDirection(live.dataplane[b.name], a.subnets.find((c) => !c.includes(':')), a.ip);
        const known = ab.ok !== undefined && ba.ok !== undefined;
        const state: UiTunnel['state'] = !known ? 'unknown' : ab.ok && ba.ok ? 'up' : ab.ok || ba.ok ? 'one-way' : 'down';
        const d = ab.dev ? ab : ba;
        tunnels.push({
          id: `tunnel:${a.name}:${b.name}`,
          kind: s.backend,
          a: a.name,
          b: b.name,
          ...(d.dev ? { dev: d.dev } : {}),
          ...(d.vni !== undefined ? { vni: d.vni } : {}),
          ...(d.port !== undefined ? { port: d.port } : {}),
          ...(ab.ok !== undefined ? { ab: ab.ok } : {}),
          ...(ba.ok !== undefined ? { ba: ba.ok } : {}),
          state,
        });
      }
  }

  const roles = labNamespaces(s);

  return {
    lab: labSettings(s),
    fabric: { ns: s.fabricNs, ip: s.fabricIp, underlay: `192.168.${s.underlayK}.0/24`, health: health(has(s.fabricNs)) },
    racks,
    ...(s.router
      ? { router: { ns: s.router.ns, ...(s.router.kind ? { daemon: s.router.kind, asn: s.router.asn } : {}), running: !!live.routerRunning, health: health(has(s.router.ns), !s.router.kind || !!live.routerRunning) } }
      : {}),
    nodes,
    pods,
    services,
    etcd,
    links,
    tunnels,
    roles,
  };
}

/**
 * The step that decided where the packet went from this hop: the broken step at the broken hop;
 * else the tunnel's encapsulation or decapsulation, the delivery, the route that forwarded it (not
 * "is local"), the bridge's forwarding decision, a macvlan or veth crossing — the first of these
 * kinds present, else the last step.
 */
export function decidingStep(r: TraceResult, hopIndex: number): number {
  const hop: Hop = r.hops[hopIndex];
  if (r.verdict === 'broken' && r.broken && r.broken.hop === hopIndex) return r.broken.step;
  const firstOf = (pred: (k: Hop['steps'][number]) => boolean) => hop.steps.findIndex(pred);
  for (const pred of [
    (x: Hop['steps'][number]) => x.kind === 'encap' || x.kind === 'decap' || x.kind === 'deliver',
    (x: Hop['steps'][number]) => x.kind === 'netfilter' && !x.ok,
    (x: Hop['steps'][number]) => x.kind === 'route' && !/ is local here/.test(x.text),
    (x: Hop['steps'][number]) => x.kind === 'bridge',
    (x: Hop['steps'][number]) => x.kind === 'macvlan' || x.kind === 'veth',
  ]) {
    const i = firstOf(pred);
    if (i >= 0) return i;
  }
  return hop.steps.length - 1;
}

/** The trace as /api/trace answers: the TraceResult of `podnet trace -o json`, plus the index of each hop's deciding step. */
export function traceForPage(r: TraceResult): TraceResult & { deciding: number[] } {
  return { ...r, deciding: r.hops.map((_, i) => decidingStep(r, i)) };
}
