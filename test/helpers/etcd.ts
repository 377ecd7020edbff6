// etcd members for tests and the lab: started directly (never under `timeout`, whose PID would
// be the one we kill), each with its own data dir, on loopback ports probed free or inside a
// network namespace the caller owns. Only processes started here are ever signalled, by PID.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface EtcdMemberSpec {
  name: string;
  dataDir: string;
  /** client URL(s) to listen on and advertise, e.g. http://127.0.0.1:23790 */
  clientUrl: string;
  peerUrl: string;
  /** name=peerUrl,... for every member */
  initialCluster: string;
  /** `new` for a first start, `existing` for a restart from the data dir */
  state: 'new' | 'existing';
  clusterToken?: string;
  /** run inside this network namespace (ip netns exec NAME etcd ...: exec keeps the PID) */
  netns?: string;
  extraArgs?: string[];
}

export interface EtcdProcess {
  pid: number;
  spec: EtcdMemberSpec;
  /** resolves with the exit code/signal once the process is gone */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** the last 64 KiB of its output, for failure messages */
  output(): string;
  /** signals it (default SIGTERM) and waits for it to exit; SIGKILL after 5 s */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

// If the test process dies early (uncaught error, closed stdout pipe), still kill what we started
// and remove our data dirs: synchronously, since 'exit' handlers cannot wait.
const livePids = new Set<number>();
const ownDirs = new Set<string>();
process.once('exit', () => {
  for (const pid of livePids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  for (const d of ownDirs) rmSync(d, { recursive: true, force: true });
});

/** Ports nobody listens on right now (bind-probe on 127.0.0.1). Racy by nature; good enough for tests. */
export async function freePorts(n: number, host = '127.0.0.1'): Promise<number[]> {
  const servers = [];
  const ports: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const s = createServer();
      servers.push(s);
      await new Promise<void>((res, rej) => {
        s.once('error', rej);
        s.listen(0, host, () => res());
      });
      ports.push((s.address() as { port: number }).port);
    }
  } finally {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  }
  return ports;
}

export function startEtcd(spec: EtcdMemberSpec): EtcdProcess {
  const args = [
    '--name', spec.name,
    '--data-dir', spec.dataDir,
    '--listen-client-urls', spec.clientUrl,
    '--advertise-client-urls', spec.clientUrl,
    '--listen-peer-urls', spec.peerUrl,
    '--initial-advertise-peer-urls', spec.peerUrl,
    '--initial-cluster', spec.initialCluster,
    '--initial-cluster-state', spec.state,
    '--initial-cluster-token', spec.clusterToken ?? 'podnet-test',
    // quieter logs and faster failure detection than the defaults (100 ms / 1000 ms are fine on
    // loopback; a loaded 2-core box wants some slack)
    '--logger', 'zap', '--log-level', 'warn',
    '--heartbeat-interval', '100', '--election-timeout', '1000',
    ...(spec.extraArgs ?? []),
  ];
  const [cmd, argv] = spec.netns ? ['ip', ['netns', 'exec', spec.netns, 'etcd', ...args]] : ['etcd', args];
  const child: ChildProcess = spawn(cmd, argv as string[], { stdio: ['ignore', 'pipe', 'pipe'] });
  if (child.pid === undefined) throw new Error(`could not start etcd ${spec.name}`);
  let out = '';
  const keep = (b: Buffer) => {
    out = (out + b.toString()).slice(-65536);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => {
    if (child.exitCode !== null || child.signalCode !== null) res({ code: child.exitCode, signal: child.signalCode });
    else child.once('exit', (code, signal) => res({ code, signal }));
  });
  let gone = false;
  const pid = child.pid;
  livePids.add(pid);
  void exited.then(() => {
    gone = true;
    livePids.delete(pid);
  });
  return {
    pid,
    spec,
    exited,
    output: () => out,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (gone) return;
      try {
        process.kill(pid, signal);
      } catch {
        return;
      }
      const t = setTimeout(() => {
        if (!gone) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // already gone
          }
        }
      }, 5000);
      await exited;
      clearTimeout(t);
    },
  };
}

/** etcdctl (API v3) against endpoints, inside netns when given. */
export function etcdctl(endpoints: string[], args: string[], netns?: string): Promise<string> {
  const full = ['--endpoints', endpoints.join(','), '--dial-timeout', '2s', '--command-timeout', '3s', ...args];
  const [cmd, argv] = netns ? ['ip', ['netns', 'exec', netns, 'etcdctl', ...full]] : ['etcdctl', full];
  return new Promise((res, rej) => {
    execFile(cmd, argv as string[], { env: { ...process.env, ETCDCTL_API: '3' }, timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) rej(new Error(`etcdctl ${args.join(' ')}: ${stderr || err.message}`));
      else res(stdout);
    });
  });
}

/** Waits until every endpoint reports healthy; fails with the members' output if one died. */
export async function waitHealthy(endpoints: string[], opts: { timeoutMs?: number; netns?: string; procs?: EtcdProcess[] } = {}): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 15_000);
  let last = '';
  for (;;) {
    for (const p of opts.procs ?? []) {
      const dead = await Promise.race([p.exited.then(() => true), sleep(0).then(() => false)]);
      if (dead) throw new Error(`etcd ${p.spec.name} (pid ${p.pid}) exited:\n${p.output()}`);
    }
    try {
      await etcdctl(endpoints, ['endpoint', 'health'], opts.netns);
      return;
    } catch (e) {
      last = (e as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`etcd not healthy at ${endpoints.join(',')}: ${last}`);
    await sleep(150);
  }
}

export interface EndpointStatus {
  endpoint: string;
  memberId: string;
  leaderId: string;
  revision: number;
  raftIndex: number;
}

/** `etcdctl endpoint status` for each reachable endpoint (unreachable ones are left out). */
export async function endpointStatus(endpoints: string[], netns?: string): Promise<EndpointStatus[]> {
  const result: EndpointStatus[] = [];
  for (const ep of endpoints) {
    let out: string;
    try {
      out = await etcdctl([ep], ['endpoint', 'status', '-w', 'json'], netns);
    } catch {
      continue;
    }
    // member ids are uint64: take them as strings from the text, JSON numbers would round them
    const member = /"member_id":(\d+)/.exec(out)?.[1] ?? '';
    const leader = /"leader":(\d+)/.exec(out)?.[1] ?? '';
    const revision = Number(/"revision":(\d+)/.exec(out)?.[1] ?? 0);
    const raftIndex = Number(/"raft_index":(\d+)/.exec(out)?.[1] ?? 0);
    result.push({ endpoint: ep, memberId: member, leaderId: leader, revision, raftIndex });
  }
  return result;
}

/** The endpoint of the current leader, waiting for an election if needed. */
export async function findLeader(endpoints: string[], opts: { timeoutMs?: number; netns?: string } = {}): Promise<string> {
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  for (;;) {
    const st = await endpointStatus(endpoints, opts.netns);
    const leader = st.find((s) => s.memberId !== '' && s.memberId === s.leaderId);
    if (leader) return leader.endpoint;
    if (Date.now() > deadline) throw new Error(`no etcd leader among ${endpoints.join(',')}`);
    await sleep(200);
  }
}

export interface EtcdCluster {
  members: EtcdProcess[];
  /** client URLs of all members, in member order */
  endpoints: string[];
  baseDir: string;
  member(name: string): EtcdProcess;
  /** restarts a stopped member from its data dir (--initial-cluster-state existing) */
  restart(name: string): Promise<EtcdProcess>;
  /** stops every member and removes the data dirs (call in after/finally) */
  destroy(): Promise<void>;
}

/**
 * Starts `size` members. Without `hosts`, all on 127.0.0.1 with free ports; with `hosts` (one
 * address per member, e.g. lab namespaces' addresses) on the fixed ports 2379/2380, each member in
 * `netns[i]` when given.
 */
export async function startCluster(opts: { size?: number; hosts?: string[]; netns?: string[]; namePrefix?: string; baseDir?: string } = {}): Promise<EtcdCluster> {
  const size = opts.hosts?.length ?? opts.size ?? 3;
  // data on tmpfs where there is one: raft fsyncs its WAL on every append, and on this shared
  // machine's disk an fsync now and then takes longer than the election timeout, which once kept
  // a fresh 3-member cluster from electing a stable leader for 45 s in CI
  const baseDir = opts.baseDir ?? (await mkdtemp(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'podnet-etcd-')));
  const ownDir = !opts.baseDir;
  if (ownDir) ownDirs.add(baseDir);
  const prefix = opts.namePrefix ?? 'm';
  const ports = opts.hosts ? [] : await freePorts(size * 2);
  const specs: EtcdMemberSpec[] = [];
  for (let i = 0; i < size; i++) {
    const host = opts.hosts?.[i] ?? '127.0.0.1';
    const cport = opts.hosts ? 2379 : ports[2 * i];
    const pport = opts.hosts ? 2380 : ports[2 * i + 1];
    specs.push({
      name: `${prefix}${i}`,
      dataDir: join(baseDir, `${prefix}${i}`),
      clientUrl: `http://${host}:${cport}`,
      peerUrl: `http://${host}:${pport}`,
      initialCluster: '',
      state: 'new',
      netns: opts.netns?.[i],
      clusterToken: `podnet-${process.pid}-${Date.now()}`,
    });
  }
  const initialCluster = specs.map((s) => `${s.name}=${s.peerUrl}`).join(',');
  for (const s of specs) s.initialCluster = initialCluster;
  const members: EtcdProcess[] = [];
  const cluster: EtcdCluster = {
    members,
    endpoints: specs.map((s) => s.clientUrl),
    baseDir,
    member(name) {
      const m = members.find((p) => p.spec.name === name);
      if (!m) throw new Error(`no etcd member ${name}`);
      return m;
    },
    async restart(name) {
      const i = members.findIndex((p) => p.spec.name === name);
      if (i < 0) throw new Error(`no etcd member ${name}`);
      await members[i].stop();
      const p = startEtcd({ ...members[i].spec, state: 'existing' });
      members[i] = p;
      return p;
    },
    async destroy() {
      await Promise.all(members.map((m) => m.stop('SIGKILL')));
      if (ownDir) {
        await rm(baseDir, { recursive: true, force: true });
        ownDirs.delete(baseDir);
      }
    },
  };
  try {
    for (const s of specs) members.push(startEtcd(s));
    // members in different namespaces: ask each from its own namespace
    // a member that joins while the others hold their first election can take well over 20 s to
    // commit its first proposal on a loaded two-core machine (seen once in CI); it does recover
    if (opts.netns) for (let i = 0; i < size; i++) await waitHealthy([specs[i].clientUrl], { netns: opts.netns[i], procs: members, timeoutMs: 45_000 });
    else await waitHealthy(cluster.endpoints, { procs: members, timeoutMs: 45_000 });
  } catch (e) {
    await cluster.destroy();
    throw e;
  }
  return cluster;
}

/** A single member on loopback with a temp data dir. */
export async function startSingle(): Promise<{ proc: EtcdProcess; endpoint: string; destroy(): Promise<void> }> {
  const c = await startCluster({ size: 1, namePrefix: 's' });
  return { proc: c.members[0], endpoint: c.endpoints[0], destroy: () => c.destroy() };
}
