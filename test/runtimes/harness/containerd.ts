// containerd (CRI plugin) under test: a private containerd started inside a network
// namespace of our own, pointed at a given CNI bin dir + conflist, driven over CRI
// gRPC the way kubelet does (RunPodSandbox, CreateContainer, ExecSync, ...).
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { closeSync, existsSync, openSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CriClient, type ContainerConfig, type PodSandboxConfig } from './cri-client.js';
import { Scope, describeNetns, isRoot, pidAlive, pidsUsing, run, sleep, vethsIn, waitFor, which } from './common.js';
import { buildBusyboxRootfs, buildOciArchive, findBusybox } from './image.js';
import { installConflist, readCniCalls, recordingBinDir, type CniCall, type CniNetwork } from './network.js';

export const CRI_IMAGE_REF = 'docker.io/podnet/rt-busybox:test';
const K8S_NAMESPACE = 'k8s.io';

export interface ContainerdOptions {
  /** Wrap every plugin of binDir in a logging shell wrapper (see recordingBinDir). Default true. */
  recordCniCalls?: boolean;
  /** How long to wait for Status NetworkReady=true. Default 15 s. */
  networkReadyTimeoutMs?: number;
}

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface CriPod {
  name: string;
  uid: string;
  sandboxId: string;
  /** The workload container (busybox `sleep 3600`). */
  containerId: string;
  /** Pod IP from PodSandboxStatus.network.ip. */
  ip: string;
  /** Pod netns path as containerd reports it (/var/run/netns/cni-<uuid>), if found. */
  netnsPath?: string;
  sandboxConfig: PodSandboxConfig;
}

export interface CriHarness {
  /** Name of the network namespace containerd runs in (bridge/veths land here). */
  readonly netns: string;
  /** Private temp dir (config, root, state, socket, logs). */
  readonly dir: string;
  readonly socket: string;
  readonly imageRef: string;
  readonly confDir: string;
  /** Bin dir containerd actually uses (the recording wrapper dir when recording). */
  readonly binDir: string;
  readonly cri: CriClient;
  /** RunPodSandbox + CreateContainer/StartContainer(`sleep 3600`); resolves with the pod IP. */
  runPod(name: string, opts?: { command?: string[] }): Promise<CriPod>;
  exec(pod: CriPod | string, cmd: string[], timeoutS?: number): Promise<ExecResult>;
  /** `ping -c1 -W2 <ip>` from inside the pod. */
  ping(from: CriPod, ip: string): Promise<ExecResult>;
  /** StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox. */
  removePod(pod: CriPod): Promise<void>;
  /** Stops and removes every sandbox the runtime knows. */
  removeAllPods(): Promise<void>;
  /** veth devices left in the runtime netns. */
  veths(): Promise<string[]>;
  /** CNI calls recorded so far (empty when recording is off). */
  cniCalls(): Promise<CniCall[]>;
  /** Tail of containerd's log. */
  logTail(lines?: number): Promise<string>;
  describe(): Promise<string>;
}

/** Why containerd cannot run here, or undefined when it can. */
export function containerdUnavailableReason(): string | undefined {
  if (!isRoot()) return 'containerd tests need root';
  for (const b of ['containerd', 'ctr', 'containerd-shim-runc-v2', 'runc', 'nsenter', 'ip']) {
    if (!which(b)) return `${b} not found`;
  }
  if (!findBusybox()) return 'busybox(-static) not found';
  return undefined;
}

function containerdConfig(dir: string, binDir: string, confDir: string, sandboxImage: string): string {
  const q = (s: string) => JSON.stringify(s);
  return `version = 2
root = ${q(join(dir, 'root'))}
state = ${q(join(dir, 'state'))}
oom_score = 0
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = ${q(join(dir, 'containerd.sock'))}

[ttrpc]
  address = ""

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = ${q(join(dir, 'opt'))}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = ${q(sandboxImage)}
  restrict_oom_score_adj = true
  enable_selinux = false
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  max_container_log_line_size = 16384

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = ${q(join(dir, 'runc'))}

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = ${q(binDir)}
  conf_dir = ${q(confDir)}
  max_conf_num = 1
`;
}

function findNetnsPath(info: Record<string, string>): string | undefined {
  const raw = info['info'];
  if (!raw) return undefined;
  try {
    const j = JSON.parse(raw) as { runtimeSpec?: { linux?: { namespaces?: Array<{ type: string; path?: string }> } } };
    return j.runtimeSpec?.linux?.namespaces?.find((n) => n.type === 'network')?.path;
  } catch {
    return undefined;
  }
}

/**
 * Starts a private containerd in its own netns with the given CNI network, runs
 * `fn`, then tears everything down (pods, containerd, shims, mounts, netns, temp
 * dir) — also when `fn` throws.
 */
export async function withContainerd<T>(net: CniNetwork, fn: (h: CriHarness) => Promise<T>, opts: ContainerdOptions = {}): Promise<T> {
  const reason = containerdUnavailableReason();
  if (reason) throw new Error(`containerd unavailable: ${reason}`);
  const scope = await Scope.create('c');
  let child: ChildProcess | undefined;
  let cri: CriClient | undefined;
  let harness: CriHarness | undefined;
  const cleanupErrors: string[] = [];
  let result: T;
  try {
    const dir = scope.dir;
    const netns = await scope.netns('rt');
    // cgroupfs paths containerd's CRI gives containers without a cgroup_parent
    scope.cgroupPattern((id) => `k8s.io/${id}`);
    const confDir = join(dir, 'net.d');
    const cniLog = join(dir, 'cni-calls.log');
    const binDir = opts.recordCniCalls === false ? net.binDir : await recordingBinDir(net.binDir, join(dir, 'cni-bin-rec'), cniLog);
    await installConflist(confDir, net.conflist);

    // image
    const rootfs = await buildBusyboxRootfs(join(dir, 'image', 'rootfs'));
    const oci = await buildOciArchive(rootfs, join(dir, 'image'), CRI_IMAGE_REF, join(dir, 'image', 'busybox-oci.tar'));

    // containerd
    const cfg = join(dir, 'config.toml');
    await writeFile(cfg, containerdConfig(dir, binDir, confDir, CRI_IMAGE_REF));
    await mkdir(join(dir, 'opt'), { recursive: true });
    const socket = join(dir, 'containerd.sock');
    const logFile = join(dir, 'containerd.log');
    const logFd = openSync(logFile, 'a');
    try {
      child = spawn('nsenter', [`--net=/run/netns/${netns}`, 'containerd', '--config', cfg], {
        stdio: ['ignore', logFd, logFd],
        env: { ...process.env, PATH: process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' },
      });
    } finally {
      closeSync(logFd);
    }
    const daemon = child;
    let exited: string | undefined;
    daemon.on('exit', (code, sig) => {
      exited = `containerd exited (${code ?? sig})`;
    });
    const logTail = async (lines = 40) => {
      const t = existsSync(logFile) ? await readFile(logFile, 'utf8') : '';
      return t.split('\n').slice(-lines).join('\n');
    };
    scope.defer('stop containerd', async () => {
      if (daemon.pid && pidAlive(daemon.pid) && daemon.exitCode === null) {
        daemon.kill('SIGTERM');
        const t0 = Date.now();
        while (daemon.exitCode === null && daemon.signalCode === null && Date.now() - t0 < 5000) await sleep(50);
        if (daemon.exitCode === null && daemon.signalCode === null) daemon.kill('SIGKILL');
      }
      // shims exit once their tasks are gone; give them a moment before the sweep kills them
      const t1 = Date.now();
      while (pidsUsing(dir).length && Date.now() - t1 < 3000) await sleep(100);
    });

    cri = new CriClient(socket);
    const client = cri;
    scope.defer('close CRI client', () => client.close());
    await waitFor(
      'containerd CRI socket',
      async () => {
        if (exited) throw new Error(`${exited}\n${await logTail()}`);
        if (!existsSync(socket)) return false;
        return client.version();
      },
      15000,
      50,
    );

    await run('ctr', ['-a', socket, '-n', K8S_NAMESPACE, 'images', 'import', '--snapshotter', 'overlayfs', oci.archive], { timeoutMs: 60000 });

    await waitFor(
      'CRI Status NetworkReady',
      async () => {
        const st = await client.status();
        const c = st.status?.conditions.find((x) => x.type === 'NetworkReady');
        return c?.status === true;
      },
      opts.networkReadyTimeoutMs ?? 15000,
      100,
    ).catch(async (e: Error) => {
      const st = await client.status().catch(() => undefined);
      throw new Error(`${e.message}; status=${JSON.stringify(st?.status)}\n${await logTail()}`);
    });

    const pods = new Map<string, CriPod>();
    const execIn = async (pod: CriPod | string, cmd: string[], timeoutS = 10): Promise<ExecResult> => {
      const id = typeof pod === 'string' ? pod : pod.containerId;
      const r = await client.execSync(id, cmd, timeoutS);
      return { exitCode: r.exitCode, stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8') };
    };

    harness = {
      netns,
      dir,
      socket,
      imageRef: CRI_IMAGE_REF,
      confDir,
      binDir,
      cri: client,
      async runPod(name, podOpts = {}) {
        const uid = randomUUID();
        const sandboxConfig: PodSandboxConfig = {
          metadata: { name, uid, namespace: 'podnet-rt', attempt: 0 },
          hostname: name,
          logDirectory: '',
          labels: { 'podnet.test/harness': 'runtimes' },
          annotations: {},
          linux: { securityContext: { namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } } },
        };
        const sandboxId = await client.runPodSandbox(sandboxConfig);
        scope.trackContainerId(sandboxId);
        // the shim's socket: /run/containerd/s/<sha256("/<address>/<ns>/<sandbox id>")>; the shim
        // removes it on a clean exit, the sweep removes it if the shim had to be killed
        scope.trackPath(`/run/containerd/s/${createHash('sha256').update(join('/', socket, K8S_NAMESPACE, sandboxId)).digest('hex')}`);
        const pod: CriPod = { name, uid, sandboxId, containerId: '', ip: '', sandboxConfig };
        pods.set(sandboxId, pod);
        const st = await client.podSandboxStatus(sandboxId, true);
        pod.ip = st.status?.network?.ip ?? '';
        pod.netnsPath = findNetnsPath(st.info);
        if (pod.netnsPath) scope.trackNetnsPath(pod.netnsPath);
        const cfg: ContainerConfig = {
          metadata: { name: 'main', attempt: 0 },
          image: { image: CRI_IMAGE_REF },
          command: podOpts.command ?? ['/bin/sleep', '3600'],
          linux: { securityContext: { namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } } },
        };
        pod.containerId = await client.createContainer(sandboxId, cfg, sandboxConfig);
        scope.trackContainerId(pod.containerId);
        await client.startContainer(pod.containerId);
        return pod;
      },
      exec: execIn,
      ping(from, ip) {
        return execIn(from, ['ping', '-c1', '-W2', ip], 10);
      },
      async removePod(pod) {
        if (pod.containerId) {
          await client.stopContainer(pod.containerId, 0);
          await client.removeContainer(pod.containerId);
        }
        await client.stopPodSandbox(pod.sandboxId);
        await client.removePodSandbox(pod.sandboxId);
        pods.delete(pod.sandboxId);
      },
      async removeAllPods() {
        const list = await client.listPodSandbox();
        const cs = await client.listContainers();
        for (const c of cs.containers) {
          await client.stopContainer(c.id, 0).catch(() => undefined);
          await client.removeContainer(c.id).catch(() => undefined);
        }
        for (const s of list.items) {
          await client.stopPodSandbox(s.id);
          await client.removePodSandbox(s.id);
          pods.delete(s.id);
        }
      },
      veths: () => vethsIn(netns),
      cniCalls: () => readCniCalls(cniLog),
      logTail,
      async describe() {
        return `${await describeNetns(netns)}\n--- containerd log\n${await logTail(30)}`;
      },
    };
    scope.defer('remove pods', async () => {
      if (exited) return;
      await harness!.removeAllPods();
    });
    result = await fn(harness);
  } finally {
    cleanupErrors.push(...(await scope.close()));
  }
  // teardown problems surface only when the body itself succeeded
  const serious = cleanupErrors.filter((e) => !e.startsWith('killed leftover'));
  if (serious.length) throw new Error(`containerd harness cleanup: ${serious.join('; ')}`);
  if (cleanupErrors.length) console.error(`# containerd harness cleanup: ${cleanupErrors.join('; ')}`);
  return result;
}
