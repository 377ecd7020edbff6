// podman (CNI backend) under test: every podman command runs inside a network
// namespace of our own (nsenter --net), with private containers.conf/storage.conf,
// storage, tmp dir and lock files under a temp dir, pointed at a given CNI bin dir
// + conflist.
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Scope, describeNetns, isRoot, pidsUsing, run, sleep, vethsIn, which, type RunResult } from './common.js';
import { IMAGE_DEFAULT_CMD, buildBusyboxRootfs, findBusybox, tarDirectory } from './image.js';
import { installConflist, readCniCalls, recordingBinDir, type CniCall, type CniNetwork } from './network.js';

export const PODMAN_IMAGE_REF = 'localhost/podnet-rt-busybox:test';

export interface PodmanOptions {
  /** Wrap every plugin of binDir in a logging shell wrapper (see recordingBinDir). Default true. */
  recordCniCalls?: boolean;
  /** Storage driver for the private store. Default 'vfs' (no overlay mounts to clean up). */
  storageDriver?: 'vfs' | 'overlay';
}

export interface PodmanContainer {
  name: string;
  id: string;
  /** IP on the network under test (podman inspect .NetworkSettings.Networks[net].IPAddress). */
  ip: string;
  /** Container netns as podman reports it (/run/netns/netns-<uuid>). */
  sandboxKey: string;
}

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface PodmanHarness {
  /** Name of the network namespace podman runs in (bridge/veths land here). */
  readonly netns: string;
  readonly dir: string;
  readonly imageRef: string;
  /** Network name (conflist name) to pass to --network. */
  readonly network: string;
  readonly confDir: string;
  readonly binDir: string;
  /** Environment every podman command runs with (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF). */
  readonly env: NodeJS.ProcessEnv;
  /** Runs `podman <global flags> ...args` inside the netns. Throws on failure unless allowFail. */
  podman(args: string[], opts?: { allowFail?: boolean; timeoutMs?: number }): Promise<RunResult>;
  /** `podman run -d --network <net> --name <name> <image> sleep 3600`, then inspect for the IP. */
  run(name: string, opts?: { command?: string[]; extraArgs?: string[] }): Promise<PodmanContainer>;
  exec(c: PodmanContainer | string, cmd: string[]): Promise<ExecResult>;
  ping(from: PodmanContainer, ip: string): Promise<ExecResult>;
  /** `podman rm -f -t 0 <name>`. */
  remove(c: PodmanContainer | string): Promise<void>;
  removeAll(): Promise<void>;
  veths(): Promise<string[]>;
  cniCalls(): Promise<CniCall[]>;
  describe(): Promise<string>;
}

/** Why podman cannot run here, or undefined when it can. */
export function podmanUnavailableReason(): string | undefined {
  if (!isRoot()) return 'podman tests need root (rootful podman)';
  for (const b of ['podman', 'conmon', 'runc', 'nsenter', 'ip']) {
    if (!which(b)) return `${b} not found`;
  }
  if (!findBusybox()) return 'busybox(-static) not found';
  return undefined;
}

function tomlList(xs: string[]): string {
  return `[${xs.map((x) => JSON.stringify(x)).join(', ')}]`;
}

/**
 * Runs `fn` with a private podman pointed at the given CNI network, inside a netns
 * of our own; afterwards removes containers, podman storage/state, mounts, netns
 * and the temp dir — also when `fn` throws.
 */
export async function withPodman<T>(net: CniNetwork, fn: (h: PodmanHarness) => Promise<T>, opts: PodmanOptions = {}): Promise<T> {
  const reason = podmanUnavailableReason();
  if (reason) throw new Error(`podman unavailable: ${reason}`);
  const scope = await Scope.create('p');
  const cleanupErrors: string[] = [];
  let result: T;
  try {
    const dir = scope.dir;
    const netns = await scope.netns('rt');
    // podman's cgroupfs layout; its runc keeps state in the global /run/runc/<id>
    scope.cgroupPattern((id) => `libpod_parent/libpod-${id}`);
    const confDir = join(dir, 'net.d');
    const cniLog = join(dir, 'cni-calls.log');
    const binDir = opts.recordCniCalls === false ? net.binDir : await recordingBinDir(net.binDir, join(dir, 'cni-bin-rec'), cniLog);
    await installConflist(confDir, net.conflist);

    const graphroot = join(dir, 'storage');
    const runroot = join(dir, 'runroot');
    const tmp = join(dir, 'libpod-tmp');
    for (const d of [graphroot, runroot, tmp]) await mkdir(d, { recursive: true });
    const driver = opts.storageDriver ?? 'vfs';
    const storageConf = join(dir, 'storage.conf');
    await writeFile(storageConf, `[storage]\ndriver = "${driver}"\nrunroot = ${JSON.stringify(runroot)}\ngraphroot = ${JSON.stringify(graphroot)}\n`);
    const containersConf = join(dir, 'containers.conf');
    await writeFile(
      containersConf,
      `[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
log_driver = "k8s-file"

[network]
network_backend = "cni"
cni_plugin_dirs = ${tomlList([binDir])}
network_config_dir = ${JSON.stringify(confDir)}
default_network = ${JSON.stringify(net.conflist.name)}

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = ${JSON.stringify(join(dir, 'events.log'))}
tmp_dir = ${JSON.stringify(tmp)}
static_dir = ${JSON.stringify(join(graphroot, 'libpod'))}
volume_path = ${JSON.stringify(join(graphroot, 'volumes'))}
lock_type = "file"
num_locks = 128
`,
    );
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      CONTAINERS_CONF: containersConf,
      CONTAINERS_STORAGE_CONF: storageConf,
      // keep podman away from the user's/machine's registries and policy: nothing is pulled
      CONTAINERS_REGISTRIES_CONF: join(dir, 'registries.conf'),
    };
    await writeFile(join(dir, 'registries.conf'), 'unqualified-search-registries = []\n');
    const globalFlags = [
      '--root', graphroot,
      '--runroot', runroot,
      '--tmpdir', tmp,
      '--storage-driver', driver,
      '--cgroup-manager', 'cgroupfs',
      '--events-backend', 'file',
      '--runtime', 'runc',
      '--network-config-dir', confDir,
    ];
    const podman = (args: string[], o: { allowFail?: boolean; timeoutMs?: number; input?: string } = {}) =>
      run('nsenter', [`--net=/run/netns/${netns}`, 'podman', ...globalFlags, ...args], { env, allowFail: o.allowFail, timeoutMs: o.timeoutMs ?? 60000, input: o.input });

    scope.defer('podman storage cleanup', async () => {
      // remove whatever is left, then wipe the private store (unmounts its layers)
      await podman(['rm', '-a', '-f', '-t', '0'], { allowFail: true, timeoutMs: 30000 });
      await podman(['system', 'reset', '--force'], { allowFail: true, timeoutMs: 30000 });
      // conmon / `podman container cleanup` may linger a moment after rm
      const t0 = Date.now();
      while (pidsUsing(dir).length && Date.now() - t0 < 3000) await sleep(100);
    });

    // image
    const rootfs = await buildBusyboxRootfs(join(dir, 'image', 'rootfs'));
    const tarFile = join(dir, 'image', 'rootfs.tar');
    await tarDirectory(rootfs, tarFile);
    await podman(['import', '--change', `CMD ${JSON.stringify(IMAGE_DEFAULT_CMD)}`, '--change', 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin', tarFile, PODMAN_IMAGE_REF]);

    const inspect = async (name: string) => {
      const r = await podman(['inspect', '--type', 'container', name]);
      return (JSON.parse(r.stdout) as Array<{
        Id: string;
        NetworkSettings?: { SandboxKey?: string; Networks?: Record<string, { IPAddress?: string }> };
      }>)[0];
    };
    const idOf = (c: PodmanContainer | string) => (typeof c === 'string' ? c : c.name);
    const execIn = async (c: PodmanContainer | string, cmd: string[]): Promise<ExecResult> => {
      const r = await podman(['exec', idOf(c), ...cmd], { allowFail: true, timeoutMs: 30000 });
      return { exitCode: r.code, stdout: r.stdout, stderr: r.stderr };
    };

    const harness: PodmanHarness = {
      netns,
      dir,
      imageRef: PODMAN_IMAGE_REF,
      network: net.conflist.name,
      confDir,
      binDir,
      env,
      podman,
      async run(name, o = {}) {
        const r = await podman([
          'run', '-d', '--pull', 'never', '--network', net.conflist.name, '--name', name, ...(o.extraArgs ?? []),
          PODMAN_IMAGE_REF, ...(o.command ?? ['/bin/sleep', '3600']),
        ]);
        const info = await inspect(name);
        const ip = info?.NetworkSettings?.Networks?.[net.conflist.name]?.IPAddress ?? '';
        const sandboxKey = info?.NetworkSettings?.SandboxKey ?? '';
        if (sandboxKey) scope.trackNetnsPath(sandboxKey);
        const id = info?.Id ?? r.stdout.trim();
        scope.trackContainerId(id);
        scope.trackPath(`/run/runc/${id}`);
        return { name, id, ip, sandboxKey };
      },
      exec: execIn,
      ping(from, ip) {
        return execIn(from, ['ping', '-c1', '-W2', ip]);
      },
      async remove(c) {
        await podman(['rm', '-f', '-t', '0', idOf(c)], { timeoutMs: 30000 });
      },
      async removeAll() {
        await podman(['rm', '-a', '-f', '-t', '0'], { timeoutMs: 30000 });
      },
      veths: () => vethsIn(netns),
      cniCalls: () => readCniCalls(cniLog),
      async describe() {
        const ev = join(dir, 'events.log');
        const events = existsSync(ev) ? (await readFile(ev, 'utf8')).split('\n').slice(-10).join('\n') : '';
        return `${await describeNetns(netns)}\n--- podman events\n${events}`;
      },
    };
    result = await fn(harness);
  } finally {
    cleanupErrors.push(...(await scope.close()));
  }
  const serious = cleanupErrors.filter((e) => !e.startsWith('killed leftover'));
  if (serious.length) throw new Error(`podman harness cleanup: ${serious.join('; ')}`);
  if (cleanupErrors.length) console.error(`# podman harness cleanup: ${cleanupErrors.join('; ')}`);
  return result;
}
