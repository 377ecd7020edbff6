// `podnet lab`: a multi-node cluster on one machine, every part of it in network namespaces
// named pnlab-<LAB>-*, every process it starts recorded by PID (and start time) in its state
// file. Each step records its intent before acting, so `lab down` removes everything also
// after a crash of the lab process, of an agent, or half-way through `lab up`.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { leaseKey } from '../agent/lease.js';
import { parseEnvFile } from '../ipam/subnetfile.js';
import { formatCidr, masked, overlaps, parseCidr, tryParseCidr } from '../util/ip.js';
import { withFileLock } from '../util/lock.js';
import { Progress } from '../util/progress.js';
import { agentKnowsProxyMode, deleteLeaseKey, planEtcdMember, startAgent, startEtcd, stopNodeTund, waitForEtcd, waitForSubnets } from './agents.js';
import { cniCall, cniErrorText, parseHostPorts, planPod, resultIps } from './pods.js';
import { planServer, startServer, stopServer, waitForServer } from './serve.js';
import { dropPodsFromServices, slicePods } from './service-ops.js';
import { parseServiceCidr, parseServePorts } from './services.js';
import {
  BACKENDS,
  DEFAULT_PROXY_MODE,
  DEFAULT_SERVICE_CIDR,
  labDir,
  labsRoot,
  loadState,
  nodeSubnets,
  nsName,
  nsPrefix,
  pickUnderlayKs,
  requireState,
  saveState,
  statePath,
  updateState,
  validateLabName,
  validateMemberName,
  withLabLock,
  PROXY_MODES,
  type Backend,
  type LabNode,
  type LabState,
  type ProxyMode,
  type StoreKind,
} from './state.js';
import { addNetns, delNetns, isAlive, listNetns, netnsExists, netnsPids, stopProcess } from './sys.js';
import { attachToUnderlay, createFabric, createNode, FABRIC_HOST, nextNodeIndex, planNode, underlayIp, writeNetConf } from './topology.js';
import { createRacksAndRouter, offSegmentPeer, planRacks, planRouter, routerDaemon, routerFiles, routerPlan } from './racks.js';
import { ROUTER_KINDS, type RouterKind } from './router/types.js';
import { waitForRoutes } from './convergence.js';

export interface UpOptions {
  name: string;
  nodes: number;
  backend: Backend;
  store: StoreKind;
  etcdMembers?: number;
  network?: string;
  /** the cluster's IPv6 network (dual-stack pods: every node leases a /64 of it); none by default */
  ipv6Network?: string;
  /** where cluster IPs come from (default 10.96.0.0/16) */
  serviceCidr?: string;
  /** passed to every agent as --proxy-mode (default nftables) */
  proxyMode?: ProxyMode;
  /** wait this long for every node's subnet lease (default 30 s) */
  timeoutMs?: number;
  /** racks (own underlay segments) joined by a router namespace; default 1 */
  racks?: number;
  /** the router's BGP daemon (bgp backend; default bird) */
  router?: RouterKind;
  /** build the topology only, start no agent (for tests of the lab's own mechanics) */
  noAgents?: boolean;
  progress?: Progress;
  /** where "waiting for …" notes go */
  notes?: NodeJS.WriteStream | null;
}

function quiet(): Progress {
  return new Progress(null);
}

export async function labUp(o: UpOptions): Promise<LabState> {
  validateLabName(o.name);
  if (!Number.isInteger(o.nodes) || o.nodes < 1 || o.nodes > 50) throw new Error(`--nodes must be 1..50, not ${o.nodes}`);
  if (!BACKENDS.includes(o.backend)) throw new Error(`unknown backend ${JSON.stringify(o.backend)}: ${BACKENDS.join(', ')}`);
  if (o.store !== 'file' && o.store !== 'etcd') throw new Error(`unknown store ${JSON.stringify(o.store)}: file or etcd`);
  const members = o.store === 'etcd' ? (o.etcdMembers ?? 1) : 0;
  if (o.store === 'etcd' && (!Number.isInteger(members) || members < 1 || members > 9)) throw new Error(`--etcd-members must be 1..9, not ${o.etcdMembers}`);
  const network = o.network ?? '10.244.0.0/16';
  const net = tryParseCidr(network);
  if (!net || net.family !== 4) throw new Error(`--network must be an IPv4 CIDR, not ${JSON.stringify(network)}`);
  let ipv6Network: string | undefined;
  if (o.ipv6Network !== undefined) {
    const v6 = tryParseCidr(o.ipv6Network);
    // each node leases a /64; a /56 or wider holds the /24s of a /16 IPv4 network
    if (!v6 || v6.family !== 6 || v6.prefix > 56) throw new Error(`--ipv6-network must be an IPv6 CIDR of /56 or wider (nodes lease a /64 each), not ${JSON.stringify(o.ipv6Network)}`);
    ipv6Network = formatCidr(masked(v6));
  }
  const serviceCidr = parseServiceCidr(o.serviceCidr ?? DEFAULT_SERVICE_CIDR);
  if (overlaps(parseCidr(serviceCidr), net)) throw new Error(`--service-cidr ${serviceCidr} overlaps the cluster network ${formatCidr(masked(net))}`);
  const proxyMode = o.proxyMode ?? DEFAULT_PROXY_MODE;
  if (!PROXY_MODES.includes(proxyMode)) throw new Error(`unknown proxy mode ${JSON.stringify(proxyMode)}: ${PROXY_MODES.join(', ')}`);
  const racks = o.racks ?? 1;
  if (!Number.isInteger(racks) || racks < 1 || racks > 8) throw new Error(`--racks must be 1..8, not ${o.racks}`);
  if (o.router !== undefined && !ROUTER_KINDS.includes(o.router)) throw new Error(`unknown router ${JSON.stringify(o.router)}: ${ROUTER_KINDS.join(', ')}`);
  if (o.router !== undefined && o.backend !== 'bgp') throw new Error(`--router ${o.router} runs a BGP daemon for the bgp backend; with ${o.backend} the racks' router only forwards (give --racks alone)`);
  // the bgp backend needs a router to announce to, even in one rack
  const routerKind = o.backend === 'bgp' ? (o.router ?? 'bird') : undefined;
  const withRouter = racks > 1 || routerKind !== undefined;
  if (routerKind) routerDaemon(routerKind).preflight();
  const p = o.progress ?? quiet();

  // the underlay's k is chosen under one lock for the whole labs dir, so two `lab up` at once
  // never pick the same
  mkdirSync(labsRoot(), { recursive: true });
  let s = await withFileLock(join(labsRoot(), '.alloc.lock'), () =>
    withLabLock(o.name, () => {
      if (existsSync(statePath(o.name))) {
        const old = loadState(o.name);
        throw new Error(`lab ${o.name} exists already (${old?.phase ?? 'unreadable state'}, ${Object.keys(old?.nodes ?? {}).length} nodes): \`podnet lab down --name ${o.name}\` first`);
      }
      for (const ns of listNetns()) {
        if (ns.startsWith(nsPrefix(o.name))) throw new Error(`namespace ${ns} exists but lab ${o.name} has no state file: remove it first (ip netns del ${ns})`);
      }
      const ks = pickUnderlayKs(o.name, racks);
      const k = ks[0];
      for (const kk of ks) if (overlaps(parseCidr(serviceCidr), parseCidr(`${underlayIp(kk, 0)}/24`))) throw new Error(`--service-cidr ${serviceCidr} overlaps the lab's underlay ${underlayIp(kk, 0)}/24`);
      const st: LabState = {
        version: 1,
        name: o.name,
        dir: labDir(o.name),
        createdAt: new Date().toISOString(),
        phase: 'building',
        underlayK: k,
        fabricNs: nsName(o.name, 'fabric'),
        fabricIp: underlayIp(k, FABRIC_HOST),
        network: formatCidr(masked(net)),
        ...(ipv6Network ? { ipv6Network } : {}),
        backend: o.backend,
        store: o.store,
        namespaces: [nsName(o.name, 'fabric')],
        nodes: {},
        pods: {},
        etcd: {},
        services: {},
        serviceCidr,
        proxyMode,
      };
      if (withRouter) {
        st.racks = planRacks(ks, !!ipv6Network);
        st.router = planRouter(st, routerKind);
        st.namespaces.push(st.router.ns);
        if (o.backend === 'host-gw') refuseHostGwAcrossRacks(st, o.nodes);
      }
      saveState(st);
      return st;
    }),
  );

  p.step(`fabric ${s.fabricNs}: br0 ${s.fabricIp}/24`);
  createFabric(s);
  p.done();
  if (s.router) {
    p.step(`router ${s.router.ns}: ${(s.racks ?? []).map((r) => `${r.routerIf} ${r.routerIp}/24`).join(', ')}`);
    createRacksAndRouter(s);
    p.done();
  }

  if (members > 0) {
    p.step(`etcd: ${members} member${members > 1 ? 's' : ''}`);
    s = await updateState(o.name, (st) => {
      for (let i = 1; i <= members; i++) {
        const m = planEtcdMember(st, i);
        st.etcd[m.name] = m;
        st.namespaces.push(m.ns);
      }
    });
    for (const m of Object.values(s.etcd)) attachToUnderlay(s, m.ns, m.fabricIf, m.ip, s.racks?.[0]);
    for (const m of Object.values(s.etcd)) {
      const proc = startEtcd(s, m);
      s = await updateState(o.name, (st) => {
        st.etcd[m.name].proc = proc;
      });
    }
    await waitForEtcd(s);
    p.done(Object.values(s.etcd).map((m) => `${m.name} ${m.ip}`).join(', '));
  }

  writeNetConf(s);
  for (let i = 1; i <= o.nodes; i++) {
    const n = planNode(s, `n${i}`, i);
    p.step(`node ${n.name}: ${n.ns}, eth0 ${n.ip}/24${n.rack ? ` (rack ${n.rack})` : ''}`);
    s = await updateState(o.name, (st) => {
      st.nodes[n.name] = n;
      st.namespaces.push(n.ns);
    });
    createNode(s, n);
    p.done();
  }

  if (s.router?.kind) {
    p.step(`${s.router.kind} in ${s.router.ns}: AS ${s.router.asn}, ${Object.keys(s.nodes).length} neighbours`);
    s = await startRouter(o.name, s);
    p.done(`PID ${s.router!.procs!.map((x) => x.pid).join(', ')}`);
  }

  if (!o.noAgents) {
    if (proxyMode !== 'off' && !agentKnowsProxyMode()) o.notes?.write(`  note: this podnet agent has no --proxy-mode yet: the agents run without the service proxy (${proxyMode} not passed)\n`);
    p.step(`agents (${o.backend}, store ${o.store}, proxy ${agentKnowsProxyMode() ? proxyMode : 'n/a'})`);
    for (const n of Object.values(s.nodes)) {
      const proc = startAgent(s, n);
      s = await updateState(o.name, (st) => {
        st.nodes[n.name].agent = proc;
      });
    }
    const markFailed = () =>
      updateState(o.name, (st) => {
        st.phase = 'failed';
      });
    try {
      await waitForSubnets(Object.values(s.nodes), { timeoutMs: o.timeoutMs, progress: o.notes });
    } catch (e) {
      await markFailed();
      // the error itself (with the agent log's tail) is reported once, by the caller
      p.fail('an agent did not get its subnet lease');
      throw e;
    }
    p.done(Object.values(s.nodes).map((n) => `${n.name} ${nodeSubnet(n) ?? '?'}`).join(', '));
    if (s.router?.kind) await converged(s, Object.values(s.nodes), p, o, markFailed);
  }
  return updateState(o.name, (st) => {
    st.phase = 'up';
  });
}

/** The node's pod subnet from its subnet file (10.244.1.0/24), undefined before the lease. */
export function nodeSubnet(n: LabNode): string | undefined {
  return nodeSubnets(n).find((c) => !c.includes(':'));
}

export interface DownReport {
  stopped: number[];
  namespaces: string[];
  removedDir: boolean;
}

/**
 * Removes everything the lab recorded, in reverse order of dependency, tolerating any part
 * being gone already. Namespaces with the lab's prefix that the state does not know (a crash
 * between creating one and recording it cannot happen — intent is recorded first — but a lost
 * state file can) are removed too: the prefix is the lab's own.
 */
export async function labDown(name: string, p: Progress = quiet()): Promise<DownReport> {
  validateLabName(name);
  return withLabLock(name, async () => {
    let s: LabState | undefined;
    try {
      s = loadState(name);
    } catch {
      s = undefined; // a torn state cannot happen (rename), but an edited one can: fall back to the prefix
    }
    const report: DownReport = { stopped: [], namespaces: [], removedDir: false };
    if (s) {
      p.step('stopping agents and etcd members');
      // pods' reply servers first, each only if /proc still shows it is that pod's server
      for (const pod of Object.values(s.pods)) if (pod.serve?.proc && (await stopServer(pod.serve, pod.name))) report.stopped.push(pod.serve.proc.pid);
      const procs = [...Object.values(s.nodes).map((n) => n.agent), ...Object.values(s.etcd).map((m) => m.proc)];
      await Promise.all(
        procs.map(async (ref) => {
          if (ref && (await stopProcess(ref, 'SIGTERM', 5000))) report.stopped.push(ref.pid);
        }),
      );
      // the router last: the agents' withdrawals reach it as they stop
      for (const ref of s.router?.procs ?? []) if (await stopProcess(ref, 'SIGTERM', 5000)) report.stopped.push(ref.pid);
      p.done(`${report.stopped.length} stopped`);
    }
    // the tun backend's podnet-tund outlives its agent by design: each node's is stopped by PID
    // (the agents are stopped already, so none starts it again), before the namespaces go. Node
    // dirs the state does not know (a lost state file) are looked at too.
    const nodeDirs = new Set(s ? Object.values(s.nodes).map((n) => n.dir) : []);
    const nodesRoot = join(s?.dir ?? labDir(name), 'nodes');
    try {
      for (const d of readdirSync(nodesRoot)) nodeDirs.add(join(nodesRoot, d));
    } catch {
      /* no nodes dir */
    }
    const stopTunds = async () => {
      for (const dir of nodeDirs) {
        const pid = await stopNodeTund({ dir });
        if (pid !== undefined) report.stopped.push(pid);
      }
    };
    await stopTunds();
    const prefix = nsPrefix(name);
    const recorded = s ? [...Object.values(s.pods).map((x) => x.ns), ...s.namespaces.slice().reverse()] : [];
    const found = listNetns().filter((ns) => ns.startsWith(prefix));
    // pods first, then nodes and members, the fabric last (reverse of creation)
    const order = [...new Set([...recorded, ...found.filter((n) => !recorded.includes(n))])];
    // A process started in a lab namespace whose PID the lab never got to record (killed between
    // spawn and the state write) would keep running after its namespace is deleted. The kernel
    // knows which processes live in the lab's own namespaces: stop those, by PID.
    // An unrecorded agent stopped here may have started a podnet-tund meanwhile: look again
    // (stopping each node's daemon through its pidfile first) until the namespaces hold nothing.
    for (let pass = 0; pass < 3; pass++) {
      const strays = order.filter(netnsExists).flatMap((ns) => netnsPids(ns));
      if (strays.length === 0) break;
      for (const ref of strays) if (await stopProcess(ref, 'SIGTERM', 3000)) report.stopped.push(ref.pid);
      await stopTunds();
    }
    p.step(`deleting ${order.filter(netnsExists).length} namespaces`);
    for (const ns of order) {
      if (!netnsExists(ns)) continue;
      delNetns(ns);
      report.namespaces.push(ns);
    }
    p.done();
    const dir = s?.dir ?? labDir(name);
    if (existsSync(dir)) {
      rmSync(dir, { recursive: true, force: true });
      report.removedDir = true;
    }
    return report;
  }).finally(() => {
    rmSync(join(labsRoot(), `.${name}.lock`), { force: true });
  });
}

export async function nodeAdd(lab: string, name: string | undefined, o: { timeoutMs?: number; noAgent?: boolean; progress?: Progress; notes?: NodeJS.WriteStream | null } = {}): Promise<LabNode> {
  const p = o.progress ?? quiet();
  let n!: LabNode;
  let s = await updateState(lab, (st) => {
    const index = nextNodeIndex(st);
    const nodeName = name ?? `n${index}`;
    validateMemberName(nodeName, 'node');
    if (st.nodes[nodeName]) throw new Error(`lab ${lab} has a node ${nodeName} already`);
    n = planNode(st, nodeName, index);
    if (st.backend === 'host-gw' && st.racks) {
      const off = offSegmentPeer({ ...st, nodes: { ...st.nodes, [nodeName]: n } });
      if (off) throw hostGwError(off);
    }
    st.nodes[nodeName] = n;
    st.namespaces.push(n.ns);
  });
  p.step(`node ${n.name}: ${n.ns}, eth0 ${n.ip}/24${n.rack ? ` (rack ${n.rack})` : ''}`);
  createNode(s, n);
  p.done();
  if (s.router?.kind) {
    // the router knows the new neighbour before its agent first connects
    p.step(`${s.router.kind}: neighbour ${n.name} ${n.ip} AS ${n.asn}`);
    await reloadRouter(s);
    p.done();
  }
  if (!o.noAgent) {
    p.step(`agent of ${n.name}`);
    const proc = startAgent(s, n);
    s = await updateState(lab, (st) => {
      st.nodes[n.name].agent = proc;
    });
    n = s.nodes[n.name];
    await waitForSubnets([n], { timeoutMs: o.timeoutMs, progress: o.notes });
    p.done(nodeSubnet(n));
    if (s.router?.kind) await converged(s, Object.values(s.nodes), p, o);
  }
  return n;
}

/** bgp: the routes through the router (convergence.ts) before the lab counts as up. */
async function converged(s: LabState, nodes: LabNode[], p: Progress, o: { timeoutMs?: number; notes?: NodeJS.WriteStream | null }, onFail?: () => Promise<unknown>): Promise<void> {
  p.step(`routes: ${nodes.length} nodes and the ${s.router!.kind} router`);
  try {
    await waitForRoutes(s, nodes, { timeoutMs: o.timeoutMs, progress: o.notes });
  } catch (e) {
    await onFail?.();
    p.fail('the routes did not converge');
    throw e;
  }
  p.done();
}

export async function nodeDel(lab: string, name: string, p: Progress = quiet()): Promise<{ lease?: string; leaseDeleted: boolean; detail: string; endpointWarnings: string[] }> {
  const s = requireState(lab);
  const n = s.nodes[name];
  if (!n) throw new Error(`lab ${lab} has no node ${name}`);
  p.step(`stopping the agent of ${name}`);
  const subnet = nodeSubnet(n);
  await stopProcess(n.agent, 'SIGTERM', 5000);
  // its datapath outlives the agent by design: stopped by PID before its namespace goes
  await stopNodeTund(n);
  p.done();
  let leaseDeleted = false;
  let detail = 'no lease (the node never got a subnet)';
  if (subnet) {
    // a stopped agent's lease would live on until its TTL; deleting it makes the peers drop
    // the node's routes now, as a cluster operator removing a node would
    p.step(`deleting the lease of ${subnet}`);
    const r = await deleteLeaseKey(s, leaseKey(subnet));
    leaseDeleted = r.ok;
    detail = r.detail;
    if (r.ok) p.done();
    else p.fail(`${r.detail}; the lease expires with its TTL instead`);
  }
  p.step(`deleting ${n.ns} and its pods`);
  const pods = Object.values(s.pods).filter((x) => x.node === name);
  for (const pod of pods) {
    await stopServer(pod.serve, pod.name);
    delNetns(pod.ns);
  }
  delNetns(n.ns);
  await updateState(lab, (st) => {
    for (const pod of pods) delete st.pods[pod.name];
    delete st.nodes[name];
    st.namespaces = st.namespaces.filter((x) => x !== n.ns);
  });
  rmSync(n.dir, { recursive: true, force: true });
  const after = requireState(lab);
  if (after.router?.kind && isRouterRunning(after)) await reloadRouter(after);
  for (const pod of pods) rmSync(join(s.dir, 'pods', pod.name), { recursive: true, force: true });
  p.done();
  // the pods are gone: so are they from the endpoints of every service (as Kubernetes' endpoint
  // controller would do)
  const endpointWarnings = pods.length > 0 ? await dropPodsFromServices(lab, pods.map((x) => x.name)) : [];
  return { lease: subnet, leaseDeleted, detail, endpointWarnings };
}

export interface PodAddResult {
  name: string;
  node: string;
  ips: string[];
  ns: string;
  /** the --serve reply server: its ports ("8080/tcp"), PID and log */
  serve?: { ports: string[]; pid: number; log: string };
}

export async function podAdd(lab: string, name: string, node: string, o: { serve?: string[]; serveTimeoutMs?: number; hostPorts?: string[] } = {}): Promise<PodAddResult> {
  validateMemberName(name, 'pod');
  // a bad --serve or --host-port is refused before anything is created
  const serve = o.serve && o.serve.length > 0 ? parseServePorts(o.serve) : undefined;
  const hostPorts = o.hostPorts && o.hostPorts.length > 0 ? parseHostPorts(o.hostPorts) : undefined;
  let pod!: ReturnType<typeof planPod>;
  const s = await updateState(lab, (st) => {
    if (!st.nodes[node]) throw new Error(`lab ${lab} has no node ${node} (nodes: ${Object.keys(st.nodes).join(', ') || 'none'})`);
    if (st.pods[name]) throw new Error(`lab ${lab} has a pod ${name} already (on ${st.pods[name].node})`);
    pod = planPod(st, name, node);
    if (hostPorts) pod.hostPorts = hostPorts;
    st.pods[name] = pod;
  });
  const n = s.nodes[node];
  addNetns(pod.ns);
  const r = await cniCall(n, 'ADD', pod, `/run/netns/${pod.ns}`);
  if (r.code !== 0) {
    // a failed ADD unwinds itself (the plugin's contract); the lab removes its pod namespace
    delNetns(pod.ns);
    await updateState(lab, (st) => {
      delete st.pods[name];
    });
    throw new Error(`CNI ADD of pod ${name} on node ${node} failed: ${cniErrorText(r)}`);
  }
  const ips = resultIps(r.stdout);
  await updateState(lab, (st) => {
    if (st.pods[name]) Object.assign(st.pods[name], { ips, ready: true });
  });
  if (!serve) return { name, node, ips, ns: pod.ns };

  // the server: intent recorded, started, its PID recorded, then waited for until it listens
  const srv = planServer(s, name, serve.ports);
  await updateState(lab, (st) => {
    if (st.pods[name]) st.pods[name].serve = srv;
  });
  try {
    srv.proc = startServer(pod, srv);
    await updateState(lab, (st) => {
      if (st.pods[name]) st.pods[name].serve = srv;
    });
    await waitForServer(pod, srv, srv.proc, o.serveTimeoutMs);
  } catch (e) {
    // a pod that was asked to serve and does not is removed whole, server included
    await podDel(lab, name).catch(() => undefined);
    throw e;
  }
  return { name, node, ips, ns: pod.ns, serve: { ports: serve.ports, pid: srv.proc.pid, log: srv.log } };
}

export async function podDel(lab: string, name: string): Promise<{ serverStopped: boolean; endpointWarnings: string[] }> {
  const s = requireState(lab);
  const pod = s.pods[name];
  if (!pod) throw new Error(`lab ${lab} has no pod ${name}`);
  const serverStopped = await stopServer(pod.serve, name);
  const n = s.nodes[pod.node];
  if (n && netnsExists(n.ns)) {
    // CNI DEL as a runtime does it, with the netns still there, so the plugin releases the
    // address and removes the host side
    const r = await cniCall(n, 'DEL', pod, netnsExists(pod.ns) ? `/run/netns/${pod.ns}` : '');
    if (r.code !== 0) throw new Error(`CNI DEL of pod ${name} failed: ${cniErrorText(r)}`);
  }
  delNetns(pod.ns);
  await updateState(lab, (st) => {
    delete st.pods[name];
  });
  rmSync(join(s.dir, 'pods', name), { recursive: true, force: true });
  // a deleted pod is no service's endpoint any more (as Kubernetes' endpoint controller does)
  const endpointWarnings = Object.values(s.services).some((x) => slicePods(x.slice).includes(name)) ? await dropPodsFromServices(lab, [name]) : [];
  return { serverStopped, endpointWarnings };
}

export async function agentCtl(lab: string, action: 'start' | 'stop' | 'restart', node: string, kill = false): Promise<{ pid?: number; stopped: boolean }> {
  const s = requireState(lab);
  const n = s.nodes[node];
  if (!n) throw new Error(`lab ${lab} has no node ${node}`);
  let stopped = false;
  if (action === 'stop' || action === 'restart') {
    stopped = await stopProcess(n.agent, kill ? 'SIGKILL' : 'SIGTERM', 5000);
    await updateState(lab, (st) => {
      if (st.nodes[node]) delete st.nodes[node].agent;
    });
  }
  if (action === 'start' || action === 'restart') {
    if (isAlive(n.agent) && action === 'start') return { pid: n.agent!.pid, stopped };
    const proc = startAgent(s, n);
    await updateState(lab, (st) => {
      if (st.nodes[node]) st.nodes[node].agent = proc;
    });
    return { pid: proc.pid, stopped };
  }
  return { stopped };
}

export async function etcdCtl(lab: string, action: 'start' | 'stop', member: string, kill = false): Promise<{ pid?: number; stopped: boolean }> {
  const s = requireState(lab);
  const m = s.etcd[member];
  if (!m) throw new Error(`lab ${lab} has no etcd member ${member} (members: ${Object.keys(s.etcd).join(', ') || 'none; the lab uses the file store'})`);
  if (action === 'stop') {
    const stopped = await stopProcess(m.proc, kill ? 'SIGKILL' : 'SIGTERM', 5000);
    await updateState(lab, (st) => {
      if (st.etcd[member]) delete st.etcd[member].proc;
    });
    return { stopped };
  }
  if (isAlive(m.proc)) return { pid: m.proc!.pid, stopped: false };
  const proc = startEtcd(s, m);
  await updateState(lab, (st) => {
    if (st.etcd[member]) st.etcd[member].proc = proc;
  });
  return { pid: proc.pid, stopped: false };
}

/** The namespace of a pod, node, etcd member or "fabric". */
export function resolveTarget(s: LabState, target: string): string {
  if (s.pods[target]) return s.pods[target].ns;
  if (s.nodes[target]) return s.nodes[target].ns;
  if (s.etcd[target]) return s.etcd[target].ns;
  if (target === 'fabric') return s.fabricNs;
  if (target === 'router' && s.router) return s.router.ns;
  throw new Error(`lab ${s.name} has no pod, node or etcd member named ${target}${s.router ? '' : ' (and no router: it comes with --racks or --backend bgp)'}`);
}

function hostGwError(off: { node: LabNode; other: LabNode }): Error {
  return new Error(
    `host-gw needs every node on one L2 segment: node ${off.other.name} (${off.other.ip}, rack ${off.other.rack}) is off the segment of node ${off.node.name} (${off.node.ip}, rack ${off.node.rack ?? 1}), so neither can be the other's next hop; across racks use --backend bgp, vxlan or tun`,
  );
}

/** host-gw with racks: refused before anything is built when the nodes would span two racks. */
function refuseHostGwAcrossRacks(st: LabState, nodes: number): void {
  const scratch: LabState = { ...st, nodes: {} };
  for (let i = 1; i <= nodes; i++) {
    const n = planNode(scratch, `n${i}`, i);
    scratch.nodes[n.name] = n;
  }
  const off = offSegmentPeer(scratch);
  if (off) throw hostGwError(off);
}

export function isRouterRunning(s: LabState): boolean {
  return (s.router?.procs ?? []).length > 0 && s.router!.procs!.every((p) => isAlive(p));
}

/** Starts the router's daemon with every node as a neighbour; its PIDs are recorded. */
async function startRouter(lab: string, s: LabState): Promise<LabState> {
  const r = s.router!;
  const procs = await routerDaemon(r.kind!).start(r.ns, routerPlan(s), routerFiles(r));
  return updateState(lab, (st) => {
    st.router!.procs = procs;
  });
}

/** The router's config rewritten for the lab's nodes now, applied without resetting the other sessions. */
async function reloadRouter(s: LabState): Promise<void> {
  const r = s.router!;
  await routerDaemon(r.kind!).reload(r.ns, routerPlan(s), routerFiles(r));
}

/** `lab router stop|start|restart [--kill]`: the router's daemon, by its recorded PIDs. */
export async function routerCtl(lab: string, action: 'start' | 'stop' | 'restart', kill = false): Promise<{ pids: number[]; stopped: boolean }> {
  const s = requireState(lab);
  if (!s.router) throw new Error(`lab ${lab} has no router (it comes with --racks or --backend bgp)`);
  if (!s.router.kind) throw new Error(`lab ${lab}'s router runs no daemon (it forwards between the racks; the daemon comes with --backend bgp)`);
  let stopped = false;
  if (action === 'stop' || action === 'restart') {
    for (const ref of s.router.procs ?? []) if (await stopProcess(ref, kill ? 'SIGKILL' : 'SIGTERM', 5000)) stopped = true;
    await updateState(lab, (st) => {
      delete st.router!.procs;
    });
  }
  if (action === 'start' || action === 'restart') {
    const cur = requireState(lab);
    if (action === 'start' && isRouterRunning(cur)) return { pids: cur.router!.procs!.map((x) => x.pid), stopped };
    // a half-running daemon (FRR's zebra without bgpd) is stopped before it starts again
    for (const ref of cur.router!.procs ?? []) await stopProcess(ref, 'SIGTERM', 5000);
    const next = await startRouter(lab, cur);
    return { pids: next.router!.procs!.map((x) => x.pid), stopped };
  }
  return { pids: [], stopped };
}

/** The router's sessions, by neighbour address, as its daemon reports them. */
export async function routerSessions(s: LabState): Promise<Record<string, string>> {
  if (!s.router?.kind) return {};
  return routerDaemon(s.router.kind).sessions(s.router.ns, routerFiles(s.router));
}

/** `lab router sessions`: each bgp node's session with the router, as the daemon reports it ("missing" when the daemon has no such neighbour). */
export async function routerSessionsByNode(lab: string): Promise<{ node: string; address: string; state: string }[]> {
  const s = requireState(lab);
  if (!s.router?.kind) throw new Error(`lab ${lab} runs no BGP router (it comes with --backend bgp)`);
  if (!isRouterRunning(s)) throw new Error(`lab ${lab}'s router daemon is not running (lab router start)`);
  const by = await routerSessions(s);
  return Object.values(s.nodes)
    .filter((n) => n.asn !== undefined)
    .map((n) => ({ node: n.name, address: n.ip, state: by[n.ip] ?? 'missing' }));
}

/** `lab exec router -- birdc ...` / `vtysh ...`: the daemon's CLI pointed at this lab's router. */
export function execArgvFor(s: LabState, target: string, argv: string[]): string[] {
  if (target !== 'router' || !s.router?.kind) return argv;
  return routerDaemon(s.router.kind).execArgv(argv, routerFiles(s.router));
}
