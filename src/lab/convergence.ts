// With the bgp backend a lab is not up when the leases are: the routes travel node → router →
// node, and the router installs what it learnt in its kernel on its own schedule (FRR's zebra
// after bgpd has already re-advertised it; BIRD's kernel protocol in parallel with its exports).
// A pod that pings in that window is dropped at the router. `lab up` and `lab node add` wait
// until every node has a route for every other node's pod subnets and the router's kernel has a
// route for each subnet via the node that owns it.
import { setTimeout as sleep } from 'node:timers/promises';
import { runAsync } from './sys.js';
import { nodeSubnets, type LabNode, type LabState } from './state.js';

export interface RouteView {
  /** the node's (or router's) namespace */
  ns: string;
  /** "DST" and "DST via GATEWAY" of every route in its main table, both families */
  routes: Set<string>;
}

export interface ConvergenceNode {
  name: string;
  ns: string;
  ip: string;
  ip6?: string;
  subnets: string[];
}

/** What is still missing, one "where: what" line each; empty once converged. Pure. */
export function missingRoutes(nodes: ConvergenceNode[], router: string | undefined, view: (ns: string) => Set<string>): string[] {
  const out: string[] = [];
  for (const n of nodes) {
    if (n.subnets.length === 0) out.push(`${n.name}: no subnet lease (subnet.env)`);
    const have = view(n.ns);
    for (const m of nodes) if (m !== n) for (const c of m.subnets) if (!have.has(c)) out.push(`${n.name}: ${c}`);
  }
  if (router) {
    const have = view(router);
    for (const m of nodes) {
      for (const c of m.subnets) {
        const via = c.includes(':') ? m.ip6 : m.ip;
        if (!have.has(via ? `${c} via ${via}` : c)) out.push(`router: ${c}${via ? ` via ${via}` : ''}`);
      }
    }
  }
  return out;
}

async function readRoutes(ns: string): Promise<Set<string>> {
  const out = new Set<string>();
  for (const fam of ['-4', '-6']) {
    const r = await runAsync('ip', ['-n', ns, fam, '-j', 'route', 'show', 'table', 'main'], { timeoutMs: 10_000 });
    if (r.code !== 0) continue;
    for (const route of JSON.parse(r.stdout || '[]') as { dst: string; gateway?: string }[]) {
      out.add(route.dst);
      if (route.gateway) out.add(`${route.dst} via ${route.gateway}`);
    }
  }
  return out;
}

export class ConvergenceError extends Error {}

/** Resolves once missingRoutes is empty for these nodes (and the lab's router); throws after timeoutMs naming what is missing. */
export async function waitForRoutes(s: LabState, nodes: LabNode[], opts: { timeoutMs?: number; progress?: NodeJS.WriteStream | null } = {}): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const started = Date.now();
  let lastNote = '';
  for (;;) {
    const cn: ConvergenceNode[] = nodes.map((n) => ({ name: n.name, ns: n.ns, ip: n.ip, ...(n.ip6 ? { ip6: n.ip6 } : {}), subnets: nodeSubnets(n) }));
    const views = new Map<string, Set<string>>();
    const namespaces = [...cn.map((n) => n.ns), ...(s.router?.kind ? [s.router.ns] : [])];
    await Promise.all(namespaces.map(async (ns) => views.set(ns, await readRoutes(ns))));
    const missing = missingRoutes(cn, s.router?.kind ? s.router.ns : undefined, (ns) => views.get(ns) ?? new Set());
    if (missing.length === 0) return;
    if (Date.now() - started > timeoutMs) {
      throw new ConvergenceError(`routes not in place after ${(timeoutMs / 1000).toFixed(0)} s: ${missing.slice(0, 8).join(', ')}${missing.length > 8 ? ` (and ${missing.length - 8} more)` : ''}`);
    }
    const note = `  waiting for routes: ${missing.length} missing (${missing[0]}${missing.length > 1 ? ', …' : ''})`;
    if (note !== lastNote && opts.progress) {
      opts.progress.write(note + '\n');
      lastNote = note;
    }
    await sleep(100);
  }
}
