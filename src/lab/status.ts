// `lab status` and `lab ls`: what the state file records, checked against the live system
// (is the PID still the process the lab started, does the namespace exist, what subnet did the
// agent lease).
import { isAlive, netnsExists } from './sys.js';
import { labSettings, listLabs, loadState, type LabState } from './state.js';
import { nodeSubnet } from './lab.js';
import { nodeTundPid } from './agents.js';
import { isPodServer } from './serve.js';
import { serviceList, serviceListFromState } from './service-ops.js';
import { renderServices, type ServiceView } from './services.js';
import { table } from '../util/table.js';

export interface LabStatus {
  name: string;
  phase: string;
  dir: string;
  backend: string;
  store: string;
  network: string;
  ipv6Network?: string;
  serviceCidr: string;
  proxyMode: string;
  underlay: string;
  fabric: { ns: string; ip: string; exists: boolean };
  racks?: { index: number; underlay: string; underlay6?: string; bridge: string; router: string; router6?: string }[];
  router?: { ns: string; exists: boolean; daemon?: string; asn?: number; pids: number[]; running: boolean; log: string };
  nodes: { name: string; ns: string; ip: string; ip6?: string; rack?: number; asn?: number; subnet?: string; agentPid?: number; agentAlive: boolean; nsExists: boolean; log: string; tundPid?: number }[];
  pods: { name: string; node: string; ns: string; ips: string[]; ready: boolean; nsExists: boolean; serve?: { ports: string[]; pid?: number; alive: boolean; log: string } }[];
  etcd: { name: string; ns: string; ip: string; pid?: number; alive: boolean; endpoint: string }[];
  services: ServiceView[];
  /** where `services` was read: the cluster store (what the proxy sees), or the lab's own record when the store could not be read */
  servicesFrom: 'store' | 'state';
  servicesError?: string;
}

/** The status with the services read from the store (falling back to the lab's record of them). */
export async function labStatusWithServices(s: LabState): Promise<LabStatus> {
  const st = labStatus(s);
  try {
    return { ...st, services: await serviceList(s), servicesFrom: 'store' };
  } catch (e) {
    return { ...st, servicesError: (e as Error).message };
  }
}

/** The status, with the services as the lab last wrote them (no store read: synchronous). */
export function labStatus(s: LabState): LabStatus {
  return {
    ...labSettings(s),
    dir: s.dir,
    underlay: `192.168.${s.underlayK}.0/24`,
    fabric: { ns: s.fabricNs, ip: s.fabricIp, exists: netnsExists(s.fabricNs) },
    ...(s.racks ? { racks: s.racks.map((r) => ({ index: r.index, underlay: `192.168.${r.k}.0/24`, ...(r.v6Prefix ? { underlay6: r.v6Prefix } : {}), bridge: r.bridge, router: r.routerIp, ...(r.routerIp6 ? { router6: r.routerIp6 } : {}) })) } : {}),
    ...(s.router
      ? {
          router: {
            ns: s.router.ns,
            exists: netnsExists(s.router.ns),
            ...(s.router.kind ? { daemon: s.router.kind, asn: s.router.asn } : {}),
            pids: (s.router.procs ?? []).map((x) => x.pid),
            running: (s.router.procs ?? []).length > 0 && s.router.procs!.every((x) => isAlive(x)),
            log: s.router.log,
          },
        }
      : {}),
    nodes: Object.values(s.nodes)
      .sort((a, b) => a.index - b.index)
      .map((n) => ({ name: n.name, ns: n.ns, ip: n.ip, ...(n.ip6 ? { ip6: n.ip6 } : {}), ...(n.rack ? { rack: n.rack } : {}), ...(n.asn ? { asn: n.asn } : {}), subnet: nodeSubnet(n), agentPid: n.agent?.pid, agentAlive: isAlive(n.agent), nsExists: netnsExists(n.ns), log: n.log, ...(s.backend === 'tun' ? { tundPid: nodeTundPid(n) } : {}) })),
    pods: Object.values(s.pods)
      .sort((a, b) => a.node.localeCompare(b.node) || a.name.localeCompare(b.name))
      .map((p) => ({
        name: p.name,
        node: p.node,
        ns: p.ns,
        ips: p.ips,
        ready: p.ready,
        nsExists: netnsExists(p.ns),
        ...(p.serve ? { serve: { ports: p.serve.ports, pid: p.serve.proc?.pid, alive: isPodServer(p.serve.proc, p.name), log: p.serve.log } } : {}),
      })),
    etcd: Object.values(s.etcd)
      .sort((a, b) => a.index - b.index)
      .map((m) => ({ name: m.name, ns: m.ns, ip: m.ip, pid: m.proc?.pid, alive: isAlive(m.proc), endpoint: `http://${m.ip}:2379` })),
    services: serviceListFromState(s),
    servicesFrom: 'state',
  };
}

export function renderStatus(st: LabStatus): string {
  const out: string[] = [];
  out.push(`lab ${st.name} (${st.phase}): backend ${st.backend}, store ${st.store}, cluster ${st.network}${st.ipv6Network ? ` + ${st.ipv6Network}` : ''}, services ${st.serviceCidr} (proxy ${st.proxyMode}), underlay ${st.underlay} (fabric ${st.fabric.ip}${st.fabric.exists ? '' : ', MISSING'})`);
  out.push(`state ${st.dir}/state.json`);
  if (st.racks && st.router) {
    out.push(`\nRacks (router ${st.router.ns}${st.router.exists ? '' : ', MISSING'}${st.router.daemon ? `: ${st.router.daemon} AS ${st.router.asn}, ${st.router.running ? `PID ${st.router.pids.join(', ')}` : 'stopped'}` : ': forwarding only'}):`);
    out.push(table([['RACK', 'UNDERLAY', 'BRIDGE', 'ROUTER LEG'], ...st.racks.map((r) => [String(r.index), [r.underlay, r.underlay6].filter(Boolean).join(', '), r.bridge, [r.router, r.router6].filter(Boolean).join(', ')])]));
  }
  out.push('\nNodes:');
  if (st.nodes.length === 0) out.push('  (none)');
  else if (st.racks)
    out.push(
      table([
        ['NODE', 'RACK', 'UNDERLAY IP', ...(st.backend === 'bgp' ? ['AS'] : []), 'POD SUBNET', 'AGENT PID', 'AGENT'],
        ...st.nodes.map((n) => [n.name + (n.nsExists ? '' : ' (netns missing)'), String(n.rack ?? '-'), [n.ip, n.ip6].filter(Boolean).join(', '), ...(st.backend === 'bgp' ? [String(n.asn ?? '-')] : []), n.subnet ?? '-', n.agentPid ? String(n.agentPid) : '-', n.agentAlive ? 'running' : 'stopped']),
      ]),
    );
  else if (st.backend === 'tun')
    out.push(
      table([
        ['NODE', 'UNDERLAY IP', 'POD SUBNET', 'AGENT PID', 'AGENT', 'PODNET-TUND'],
        ...st.nodes.map((n) => [n.name + (n.nsExists ? '' : ' (netns missing)'), n.ip, n.subnet ?? '-', n.agentPid ? String(n.agentPid) : '-', n.agentAlive ? 'running' : 'stopped', n.tundPid ? `PID ${n.tundPid}` : 'not running']),
      ]),
    );
  else
    out.push(
      table([
        ['NODE', 'UNDERLAY IP', 'POD SUBNET', 'AGENT PID', 'AGENT'],
        ...st.nodes.map((n) => [n.name + (n.nsExists ? '' : ' (netns missing)'), n.ip, n.subnet ?? '-', n.agentPid ? String(n.agentPid) : '-', n.agentAlive ? 'running' : 'stopped']),
      ]),
    );
  out.push('\nPods:');
  if (st.pods.length === 0) out.push('  (none)');
  else
    out.push(
      table([
        ['POD', 'NODE', 'IPS', 'SERVES'],
        ...st.pods.map((p) => [p.name + (p.ready ? '' : ' (adding)'), p.node, p.ips.join(', ') || '-', p.serve ? `${p.serve.ports.join(', ')} (${p.serve.alive ? `PID ${p.serve.pid}` : 'stopped'})` : '-']),
      ]),
    );
  out.push(`\nServices${st.servicesError ? ` (as the lab wrote them: the store could not be read: ${st.servicesError})` : ''}:`);
  out.push(renderServices(st.services));
  if (st.etcd.length > 0) {
    out.push('\netcd:');
    out.push(table([['MEMBER', 'CLIENT URL', 'PID', 'STATE'], ...st.etcd.map((m) => [m.name, m.endpoint, m.pid ? String(m.pid) : '-', m.alive ? 'running' : 'stopped'])]));
  }
  return out.join('\n');
}

export interface LabSummary {
  name: string;
  phase: string;
  backend: string;
  store: string;
  nodes: number;
  pods: number;
  agentsRunning: number;
  underlay: string;
}

export function labSummaries(): LabSummary[] {
  const out: LabSummary[] = [];
  for (const name of listLabs()) {
    let s: LabState | undefined;
    try {
      s = loadState(name);
    } catch {
      s = undefined;
    }
    if (!s) continue;
    const nodes = Object.values(s.nodes);
    out.push({
      name,
      phase: s.phase,
      backend: s.backend,
      store: s.store,
      nodes: nodes.length,
      pods: Object.keys(s.pods).length,
      agentsRunning: nodes.filter((n) => isAlive(n.agent)).length,
      underlay: `192.168.${s.underlayK}.0/24`,
    });
  }
  return out;
}

export function renderSummaries(l: LabSummary[]): string {
  if (l.length === 0) return 'no labs';
  return table([
    ['LAB', 'PHASE', 'BACKEND', 'STORE', 'NODES', 'AGENTS', 'PODS', 'UNDERLAY'],
    ...l.map((x) => [x.name, x.phase, x.backend, x.store, String(x.nodes), `${x.agentsRunning}/${x.nodes}`, String(x.pods), x.underlay]),
  ]);
}
