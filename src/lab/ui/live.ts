// The live facts the lab's page shows beside the state file (src/lab/ui/topology.ts): which
// namespaces exist, which recorded processes still run, each node's leased subnets, and each
// node's tunnel datapath as its kernel has it (tunnel devices, routes, VXLAN FDB). Cheap reads: a
// stat or a /proc read per object, and per node of a vxlan or tun lab two or three iproute2 calls
// (`ip -j -d link`, `ip -j route`, `bridge -j fdb`), run concurrently.
import { nodeSubnets, type LabNode, type LabState } from '../state.js';
import { isAlive, netnsExists, runAsync } from '../sys.js';
import type { LiveFacts, NodeDataplane } from './topology.js';

const json = <T>(text: string): T | undefined => {
  try {
    return text.trim() ? (JSON.parse(text) as T) : undefined;
  } catch {
    return undefined;
  }
};

/** The node's tunnel devices, routes and VXLAN FDB; undefined when its namespace cannot be read. */
export async function nodeDataplane(ns: string): Promise<NodeDataplane | undefined> {
  const [links, routes] = await Promise.all([runAsync('ip', ['-n', ns, '-j', '-d', 'link', 'show'], { timeoutMs: 5000 }), runAsync('ip', ['-n', ns, '-j', 'route', 'show'], { timeoutMs: 5000 })]);
  if (links.code !== 0 || routes.code !== 0) return undefined;
  type Link = { ifname: string; linkinfo?: { info_kind?: string; info_data?: { id?: number; port?: number } } };
  const tunnels: NodeDataplane['tunnels'] = [];
  for (const l of json<Link[]>(links.stdout) ?? []) {
    const kind = l.linkinfo?.info_kind;
    if (kind === 'vxlan') tunnels.push({ dev: l.ifname, kind, ...(l.linkinfo?.info_data?.id !== undefined ? { vni: l.linkinfo.info_data.id } : {}), ...(l.linkinfo?.info_data?.port !== undefined ? { port: l.linkinfo.info_data.port } : {}) });
    else if (kind === 'tun') tunnels.push({ dev: l.ifname, kind });
  }
  const fdb: NodeDataplane['fdb'] = {};
  await Promise.all(
    tunnels
      .filter((t) => t.kind === 'vxlan')
      .map(async (t) => {
        const r = await runAsync('bridge', ['-n', ns, '-j', 'fdb', 'show', 'dev', t.dev], { timeoutMs: 5000 });
        fdb[t.dev] = [...new Set((json<{ dst?: string }[]>(r.stdout) ?? []).map((e) => e.dst).filter((d): d is string => !!d))];
      }),
  );
  return { tunnels, routes: (json<{ dst: string; dev?: string }[]>(routes.stdout) ?? []).map((r) => ({ dst: r.dst, ...(r.dev ? { dev: r.dev } : {}) })), fdb };
}

/** Everything the topology reads from the running system for this lab. */
export async function gatherLive(s: LabState): Promise<LiveFacts> {
  const all = [s.fabricNs, ...(s.router ? [s.router.ns] : []), ...Object.values(s.nodes).map((n) => n.ns), ...Object.values(s.pods).map((p) => p.ns), ...Object.values(s.etcd).map((m) => m.ns)];
  const namespaces = new Set(all.filter(netnsExists));
  const dataplane: Record<string, NodeDataplane> = {};
  if (s.backend === 'vxlan' || s.backend === 'tun')
    await Promise.all(
      Object.values(s.nodes)
        .filter((n) => namespaces.has(n.ns))
        .map(async (n) => {
          const d = await nodeDataplane(n.ns);
          if (d) dataplane[n.name] = d;
        }),
    );
  return {
    namespaces,
    agents: Object.fromEntries(Object.values(s.nodes).map((n) => [n.name, isAlive(n.agent)])),
    ...(s.router?.kind ? { routerRunning: (s.router.procs ?? []).length > 0 && s.router.procs!.every((p) => isAlive(p)) } : {}),
    etcd: Object.fromEntries(Object.values(s.etcd).map((m) => [m.name, isAlive(m.proc)])),
    subnets: Object.fromEntries(Object.values(s.nodes).map((n) => [n.name, nodeSubnets(n)])),
    dataplane,
  };
}
