// Which CNI network the runtime tests run against.
//
//   PODNET_RUNTIME_PLUGIN=podnet (default)     the podnet plugin (podnetNetwork below)
//   PODNET_RUNTIME_PLUGIN=reference            Debian's containernetworking-plugins
import { mkdir, readdir, symlink } from 'node:fs/promises';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import type { CniConflist, CniNetwork } from './harness/network.js';

export interface NetworkUnderTest extends CniNetwork {
  /** Short label for test names and logs. */
  label: string;
  /**
   * IPAM allocations still held (e.g. host-local reservation files), checked after
   * all pods/containers are removed. Must return [] when everything was released.
   */
  leakedAllocations(): Promise<string[]>;
}

export interface NetworkOptions {
  /** Network name (conflist `name`). */
  name?: string;
  /** IPv4 subnet handed to IPAM. */
  subnet?: string;
  /** Bridge device name (created inside the runtime's private netns). */
  bridge?: string;
}

export const REFERENCE_CNI_DIR = '/usr/lib/cni';

/**
 * host-local and podnet-ipam keep one file per reserved IP in <dataDir>/<network name>/,
 * next to `lock` and `last_reserved_ip.<range>`.
 */
async function reservationFiles(netDir: string): Promise<string[]> {
  if (!existsSync(netDir)) return [];
  return (await readdir(netDir)).filter((f) => /^[0-9.]+$|:/.test(f)).map((f) => join(netDir, f));
}

/** True when Debian's reference plugins (bridge, host-local, loopback) are installed. */
export function referencePluginsAvailable(): boolean {
  return ['bridge', 'host-local', 'loopback'].every((p) => existsSync(join(REFERENCE_CNI_DIR, p)));
}

/**
 * Debian's reference plugins: bridge (cni0, gateway, no masquerade) + host-local IPAM
 * with its dataDir under `tmpDir`. The bin dir is `tmpDir/cni-bin` with symlinks to
 * every plugin of /usr/lib/cni (containerd needs `loopback` there too).
 */
export async function referenceNetwork(tmpDir: string, opts: NetworkOptions = {}): Promise<NetworkUnderTest> {
  const name = opts.name ?? 'podnet-rt';
  const binDir = join(tmpDir, 'cni-bin');
  const dataDir = join(tmpDir, 'host-local');
  await mkdir(binDir, { recursive: true });
  await mkdir(dataDir, { recursive: true });
  for (const p of await readdir(REFERENCE_CNI_DIR)) {
    const dst = join(binDir, p);
    if (!existsSync(dst)) await symlink(join(REFERENCE_CNI_DIR, p), dst);
  }
  const conflist: CniConflist = {
    cniVersion: '1.0.0',
    name,
    plugins: [
      {
        type: 'bridge',
        bridge: opts.bridge ?? 'cni0',
        isGateway: true,
        ipMasq: false,
        ipam: { type: 'host-local', ranges: [[{ subnet: opts.subnet ?? '10.88.7.0/24' }]], dataDir },
      },
    ],
  };
  return {
    label: 'reference',
    binDir,
    conflist,
    leakedAllocations: () => reservationFiles(join(dataDir, name)),
  };
}

/**
 * The podnet plugin as an operator installs it: `podnet install` run from a copy of the checkout
 * (its package.json, dist/ and node_modules) into a prefix under `tmpDir`, the copy then deleted,
 * so the runtime execs only what was installed — the thin-client executables podnet and
 * podnet-ipam in the CNI bin dir (standalone here: no agent runs in the runtime's namespace),
 * pointing at the prefix. Plus `loopback` from the reference plugins (containerd execs it for
 * every sandbox), and a bridge conflist with podnet-ipam keeping its reservations under `tmpDir`.
 */
export async function podnetNetwork(tmpDir: string, opts: NetworkOptions = {}): Promise<NetworkUnderTest> {
  const { ensureBuilt } = await import('../helpers/cni.js');
  ensureBuilt();
  const name = opts.name ?? 'podnet-rt';
  const binDir = join(tmpDir, 'cni-bin');
  const dataDir = join(tmpDir, 'podnet-ipam');
  await mkdir(binDir, { recursive: true });
  await mkdir(dataDir, { recursive: true });
  const root = new URL('../../', import.meta.url).pathname;
  const copy = join(tmpDir, 'podnet-copy');
  await mkdir(copy);
  execFileSync('cp', ['-a', join(root, 'package.json'), join(root, 'dist'), join(root, 'node_modules'), copy]);
  const prefix = join(tmpDir, 'opt', 'podnet');
  execFileSync(process.execPath, [join(copy, 'dist/podnet.mjs'), 'install', '--prefix', prefix, '--cni-bin-dir', binDir, '--no-cni-conf', '--no-systemd', '--socket', join(tmpDir, 'no-agent.sock')], { stdio: ['ignore', 'ignore', 'pipe'] });
  rmSync(copy, { recursive: true, force: true });
  for (const f of await readdir(binDir)) {
    if (readFileSync(join(binDir, f), 'latin1').includes(root) || readFileSync(join(binDir, f), 'latin1').includes(copy)) throw new Error(`${f} in the CNI bin dir names the checkout or the copy it was installed from`);
  }
  if (existsSync(join(REFERENCE_CNI_DIR, 'loopback'))) await symlink(join(REFERENCE_CNI_DIR, 'loopback'), join(binDir, 'loopback'));
  // containerd 1.6 and podman 4.3 vendor a libcni that reads results only up to 1.0.0 and does
  // not know `cniVersions`: 1.0.0 is what they get; newer runtimes pick 1.1.0 from the list.
  const conflist: CniConflist = {
    cniVersion: '1.0.0',
    cniVersions: ['0.4.0', '1.0.0', '1.1.0'],
    name,
    plugins: [
      {
        type: 'podnet',
        mode: 'bridge',
        bridge: opts.bridge ?? 'podnet0',
        isGateway: true,
        isDefaultGateway: true,
        ipMasq: true,
        hairpinMode: true,
        ipam: { type: 'podnet-ipam', ranges: [[{ subnet: opts.subnet ?? '10.88.7.0/24' }]], dataDir },
      },
    ],
  };
  return {
    label: 'podnet',
    binDir,
    conflist,
    leakedAllocations: () => reservationFiles(join(dataDir, name)),
  };
}

export type PluginChoice = 'reference' | 'podnet';

export function pluginChoice(): PluginChoice {
  const v = (process.env.PODNET_RUNTIME_PLUGIN ?? 'podnet').trim();
  if (v === 'reference' || v === 'podnet') return v;
  throw new Error(`PODNET_RUNTIME_PLUGIN must be 'reference' or 'podnet', got '${v}'`);
}

/** The network the runtime tests run against (selected by PODNET_RUNTIME_PLUGIN). */
export async function networkUnderTest(tmpDir: string, opts: NetworkOptions = {}): Promise<NetworkUnderTest> {
  return pluginChoice() === 'podnet' ? podnetNetwork(tmpDir, opts) : referenceNetwork(tmpDir, opts);
}
