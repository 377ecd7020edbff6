// The podnet agent of each lab node, run inside the node's namespace as on a real node, and
// the etcd members (for --store etcd), each in a namespace of its own on the underlay.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { packageRoot } from '../cni/install.js';
import { FileStore } from '../store/file-store.js';
import { findTund, stopTund } from '../agent/tund/index.js';
import { isAlive, runAsync, startDetached, tail } from './sys.js';
import { DEFAULT_PROXY_MODE, nsName, type LabEtcdMember, type LabNode, type LabState, type ProcRef } from './state.js';
import { ETCD_BASE_INDEX, underlayIp } from './topology.js';
import { rackOf } from './racks.js';

export function podnetBundle(): string {
  const p = join(packageRoot(), 'dist', 'podnet.mjs');
  if (!existsSync(p)) throw new Error(`${p} is missing: run \`npm run build\` first`);
  return p;
}

export function etcdEndpoints(s: LabState): string[] {
  return Object.values(s.etcd)
    .sort((a, b) => a.index - b.index)
    .map((m) => `http://${m.ip}:2379`);
}

export function storeArgs(s: LabState): string[] {
  if (s.store === 'etcd') return ['--store', 'etcd', '--etcd-endpoints', etcdEndpoints(s).join(',')];
  return ['--store', `file:${join(s.dir, 'store')}`];
}

let proxyModeFlag: boolean | undefined;

/**
 * Whether the built agent takes --proxy-mode (the service proxy inside the agent). An agent
 * that does not would refuse to start on an unknown flag, so the lab asks its --help once.
 */
export function agentKnowsProxyMode(): boolean {
  if (proxyModeFlag === undefined) {
    const r = spawnSync(process.execPath, [podnetBundle(), 'agent', '--help'], { encoding: 'utf8', timeout: 15_000 });
    proxyModeFlag = /--proxy-mode\b/.test(r.stdout ?? '');
  }
  return proxyModeFlag;
}

/** --proxy-mode for the agent: the lab's mode (nftables by default), when the agent has the flag. */
export function proxyModeArgs(s: LabState): string[] {
  return agentKnowsProxyMode() ? ['--proxy-mode', s.proxyMode ?? DEFAULT_PROXY_MODE] : [];
}

/** Every lab agent's metrics and probes, on its node namespace's own loopback (`lab exec NODE -- curl http://127.0.0.1:9603/metrics`). */
export const LAB_METRICS_ADDR = '127.0.0.1:9603';

export function agentArgv(s: LabState, n: LabNode): string[] {
  return [
    'ip', 'netns', 'exec', n.ns,
    process.execPath, podnetBundle(), 'agent',
    '--config', join(s.dir, 'net-conf.json'),
    ...storeArgs(s),
    '--iface', 'eth0',
    '--public-ip', n.ip,
    '--node-name', n.name,
    '--socket', n.socket,
    '--subnet-file', n.subnetFile,
    '--data-dir', agentDataDir(n),
    '--metrics-addr', LAB_METRICS_ADDR,
    ...proxyModeArgs(s),
    ...bgpArgs(s, n),
  ];
}

/** bgp backend: the node's own AS and its rack's router as its one peer (as on a real rack: the top-of-rack router). */
export function bgpArgs(s: LabState, n: LabNode): string[] {
  if (s.backend !== 'bgp' || n.asn === undefined) return [];
  const rack = rackOf(s, n);
  if (!rack || !s.router?.asn) return ['--bgp-asn', String(n.asn)];
  return ['--bgp-asn', String(n.asn), '--bgp-peer', `${rack.routerIp}:${s.router.asn}`];
}

/** The node agent's --data-dir (podnet-tund's files are under <it>/tund/). */
export function agentDataDir(n: Pick<LabNode, 'dir'>): string {
  return join(n.dir, 'agent');
}

/** The PID of the node's podnet-tund (tun backend), verified by the supervisor against /proc. */
export function nodeTundPid(n: Pick<LabNode, 'dir'>): number | undefined {
  return findTund(agentDataDir(n))?.pid;
}

/**
 * Stops the node's podnet-tund by its PID (the supervisor's stopTund: only a process /proc shows
 * to be this node's daemon is signalled). The daemon outlives its agent by design, so every
 * teardown calls this after the agent is stopped (a running agent would start it again) and before
 * the node's namespace is deleted (the daemon would keep the namespace alive and run forever).
 * Returns the PID stopped, if one ran.
 */
export async function stopNodeTund(n: Pick<LabNode, 'dir'>): Promise<number | undefined> {
  const pid = nodeTundPid(n);
  if (pid === undefined) return undefined;
  return (await stopTund(agentDataDir(n))) ? pid : undefined;
}

export function startAgent(s: LabState, n: LabNode): ProcRef {
  mkdirSync(n.dir, { recursive: true });
  if (s.store === 'file') mkdirSync(join(s.dir, 'store'), { recursive: true });
  return startDetached(agentArgv(s, n), n.log, { ...process.env, PODNET_CNI_LOG: join(n.dir, 'cni.log') });
}

export class AgentStartError extends Error {}

/**
 * Waits until every node's agent has written its subnet file, showing which are still missing
 * on stderr; an agent that died or a timeout is an error naming the node with its log's tail.
 */
export async function waitForSubnets(nodes: LabNode[], opts: { timeoutMs?: number; progress?: NodeJS.WriteStream | null } = {}): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const started = Date.now();
  let lastNote = '';
  for (;;) {
    const missing = nodes.filter((n) => !existsSync(n.subnetFile));
    if (missing.length === 0) return;
    for (const n of missing) {
      if (n.agent && !isAlive(n.agent)) {
        throw new AgentStartError(`the agent of node ${n.name} exited before writing ${n.subnetFile}; the end of ${n.log}:\n${tail(n.log)}`);
      }
    }
    const waited = Date.now() - started;
    if (waited > timeoutMs) {
      const n = missing[0];
      throw new AgentStartError(
        `timed out after ${(timeoutMs / 1000).toFixed(0)} s waiting for the subnet lease of node ${n.name} (${n.subnetFile}` +
          `${missing.length > 1 ? `; also missing: ${missing.slice(1).map((m) => m.name).join(', ')}` : ''}); the end of ${n.log}:\n${tail(n.log)}`,
      );
    }
    const note = `  waiting for subnet leases: ${missing.map((m) => m.name).join(', ')}`;
    if (note !== lastNote && opts.progress) {
      opts.progress.write(note + '\n');
      lastNote = note;
    }
    await sleep(100);
  }
}

export function planEtcdMember(s: LabState, i: number): LabEtcdMember {
  const name = `e${i}`;
  const dir = join(s.dir, 'etcd', name);
  return { name, index: i, ns: nsName(s.name, name), ip: underlayIp(s.underlayK, ETCD_BASE_INDEX + i), fabricIf: `v-${name}`, dir, log: join(dir, 'etcd.log') };
}

export function initialCluster(s: LabState): string {
  return Object.values(s.etcd)
    .sort((a, b) => a.index - b.index)
    .map((m) => `${m.name}=http://${m.ip}:2380`)
    .join(',');
}

export function startEtcd(s: LabState, m: LabEtcdMember): ProcRef {
  mkdirSync(m.dir, { recursive: true });
  const dataDir = join(m.dir, 'data');
  // a member with a data dir rejoins with what it stored; the initial-cluster flags only
  // matter the first time
  const state = existsSync(join(dataDir, 'member')) ? 'existing' : 'new';
  const argv = [
    'ip', 'netns', 'exec', m.ns, 'etcd',
    '--name', m.name,
    '--data-dir', dataDir,
    '--listen-client-urls', `http://${m.ip}:2379`,
    '--advertise-client-urls', `http://${m.ip}:2379`,
    '--listen-peer-urls', `http://${m.ip}:2380`,
    '--initial-advertise-peer-urls', `http://${m.ip}:2380`,
    '--initial-cluster', initialCluster(s),
    '--initial-cluster-state', state,
    '--initial-cluster-token', `pnlab-${s.name}`,
    '--heartbeat-interval', '100',
    '--election-timeout', '1000',
  ];
  return startDetached(argv, m.log);
}

/** Waits until the etcd cluster answers /health from the fabric (the lab itself is not on the underlay). */
export async function waitForEtcd(s: LabState, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  const endpoints = etcdEndpoints(s);
  for (;;) {
    for (const m of Object.values(s.etcd)) {
      if (m.proc && !isAlive(m.proc)) throw new Error(`etcd member ${m.name} exited; the end of ${m.log}:\n${tail(m.log)}`);
    }
    const r = await runAsync('ip', ['netns', 'exec', s.fabricNs, 'curl', '-s', '-m', '2', `${endpoints[0]}/health`], { timeoutMs: 5000 });
    if (r.code === 0 && /"health":\s*"true"/.test(r.stdout)) return;
    if (Date.now() > until) {
      const m = Object.values(s.etcd)[0];
      throw new Error(`etcd did not become healthy within ${timeoutMs / 1000} s (${endpoints.join(', ')}): ${r.stdout || r.stderr}; the end of ${m.log}:\n${tail(m.log)}`);
    }
    await sleep(200);
  }
}

/**
 * Deletes a node's lease key so its peers drop it at once instead of after the TTL. The lab
 * process is not on the underlay, so this runs inside the fabric namespace.
 */
export async function deleteLeaseKey(s: LabState, key: string): Promise<{ ok: boolean; detail: string }> {
  if (s.store === 'etcd') {
    const r = await runAsync('ip', ['netns', 'exec', s.fabricNs, 'etcdctl', '--endpoints', etcdEndpoints(s).join(','), 'del', key], {
      env: { ...process.env, ETCDCTL_API: '3' },
      timeoutMs: 15_000,
    });
    return { ok: r.code === 0, detail: (r.stdout + r.stderr).trim() };
  }
  // the file store is a directory every process on the machine shares: open it here
  const store = new FileStore(join(s.dir, 'store'));
  try {
    const ok = await store.delete(key);
    return { ok, detail: ok ? 'deleted' : 'not found (already expired?)' };
  } catch (e) {
    return { ok: false, detail: (e as Error).message };
  } finally {
    await store.close();
  }
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
