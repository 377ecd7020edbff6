// Which CNI network the runtime tests run against.
//
//   PODNET_RUNTIME_PLUGIN=reference (default)  Debian's containernetworking-plugins
//   PODNET_RUNTIME_PLUGIN=podnet               the podnet plugin (podnetNetwork below)
import { mkdir, readdir, symlink } from 'node:fs/promises';
import { existsSync } from 'node:fs';
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
    async leakedAllocations() {
      // host-local keeps one file per reserved IP in <dataDir>/<network name>/,
      // next to `lock` and `last_reserved_ip.<range>`.
      const netDir = join(dataDir, name);
      if (!existsSync(netDir)) return [];
      return (await readdir(netDir)).filter((f) => /^[0-9.]+$|:/.test(f)).map((f) => join(netDir, f));
    },
  };
}

/**
 * ============================  NOT WIRED YET  ============================
 * The podnet plugin: must return a bin dir holding the podnet CNI executable
 * (plus `loopback`, which containerd execs for every sandbox) and a conflist
 * using it. Fill in when the plugin is packaged.
 * ========================================================================
 */
export async function podnetNetwork(tmpDir: string, opts: NetworkOptions = {}): Promise<NetworkUnderTest> {
  void tmpDir;
  void opts;
  throw new Error('podnetNetwork: not wired yet');
}

export type PluginChoice = 'reference' | 'podnet';

export function pluginChoice(): PluginChoice {
  const v = (process.env.PODNET_RUNTIME_PLUGIN ?? 'reference').trim();
  if (v === 'reference' || v === 'podnet') return v;
  throw new Error(`PODNET_RUNTIME_PLUGIN must be 'reference' or 'podnet', got '${v}'`);
}

/** The network the runtime tests run against (selected by PODNET_RUNTIME_PLUGIN). */
export async function networkUnderTest(tmpDir: string, opts: NetworkOptions = {}): Promise<NetworkUnderTest> {
  return pluginChoice() === 'podnet' ? podnetNetwork(tmpDir, opts) : referenceNetwork(tmpDir, opts);
}
