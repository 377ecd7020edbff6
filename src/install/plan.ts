// `podnet install`'s plan: every file it writes, with its mode and where its bytes come from,
// computed from a scanned source package and the options alone (no file system access), so the
// layout is testable and `apply.ts` only executes it.
//
// The prefix is a self-contained podnet package root, so the bundles find what they look up
// beside themselves (packageRoot(): podnet-cni.mjs, podnet-cni-client, podnet-tund) and Node
// resolves koffi and etcd3 from the bundles' own directory as it does in the checkout:
//   <prefix>/bin/podnet                      launcher: the Node the install ran with + the bundle
//   <prefix>/lib/package.json                {"name":"podnet",...}: the package root marker
//   <prefix>/lib/dist/*                      podnet.mjs, podnet-cni.mjs, podnet-cni-client, podnet-tund
//   <prefix>/lib/node_modules/...            the runtime dependency closure (koffi, @koromix/koffi-<platform>, etcd3, ...)
//   <prefix>/install-manifest.json           what was written (apply.ts), for `podnet uninstall`
//   <cni-bin-dir>/podnet, podnet-ipam        the CNI client, pointing at <prefix>/lib/dist/podnet-cni.mjs
//   <cni-bin-dir>/.podnet-client.conf        the compiled client's settings (socket, node, bundle)
//   <cni-conf-dir>/10-podnet.conflist
//   <systemd-dir>/podnet-agent.service       ExecStart=<prefix>/bin/podnet agent
import { isAbsolute, join } from 'node:path';
import { DEFAULT_SOCKET_PATH, defaultConflist, renderClientConf, renderThinClient } from '../cni/install.js';
import type { SourceScan } from './source.js';

export const INSTALL_DEFAULTS = {
  prefix: '/opt/podnet',
  cniBinDir: '/opt/cni/bin',
  cniConfDir: '/etc/cni/net.d',
  systemdDir: '/etc/systemd/system',
  socket: DEFAULT_SOCKET_PATH,
  network: 'podnet',
  mode: 'bridge',
} as const;

export const MANIFEST_NAME = 'install-manifest.json';
export const UNIT_NAME = 'podnet-agent.service';
export const AGENT_ENV_FILE = '/etc/default/podnet-agent';

export interface InstallOptions {
  prefix: string;
  cniBinDir: string;
  /** undefined: no conflist */
  cniConfDir?: string;
  /** undefined: no unit */
  systemdDir?: string;
  /** the Node binary the launcher, the CNI client and the unit run (the one the install runs with) */
  node: string;
  socket: string;
  network: string;
  subnet?: string;
  mode: 'bridge' | 'routed' | 'macvlan';
  /** the POSIX shell client even when the compiled one is there */
  shellClient?: boolean;
  /** CNI versions the shell client answers VERSION with */
  cniVersions: string[];
}

export type EntryRole = 'launcher' | 'package' | 'bundle' | 'native' | 'dependency' | 'cni' | 'cni-conf' | 'systemd';

export interface PlanEntry {
  path: string;
  mode: number;
  role: EntryRole;
  /** copy this file... */
  from?: string;
  /** ...or write this text */
  content?: string;
}

export interface InstallPlan {
  prefix: string;
  lib: string;
  manifest: string;
  entries: PlanEntry[];
  warnings: string[];
  source: { root: string; version: string };
}

export function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** One ExecStart word: systemd's specifier (%) and variable ($) characters escaped, quoted when needed. */
export function systemdWord(s: string): string {
  const e = s.replace(/\\/g, '\\\\').replace(/%/g, '%%').replace(/\$/g, '$$$$').replace(/"/g, '\\"');
  return /[\s"'\\;]/.test(s) ? `"${e}"` : e;
}

export function renderLauncher(o: { node: string; bundle: string; version: string }): string {
  return `#!/bin/sh
# podnet ${o.version}, written by \`podnet install\`: the Node it ran with and the installed bundle.
exec ${shQuote(o.node)} ${shQuote(o.bundle)} "$@"
`;
}

export function renderUnit(o: { launcher: string; socket: string; version: string }): string {
  const exec = [o.launcher, 'agent', ...(o.socket === DEFAULT_SOCKET_PATH ? [] : ['--socket', o.socket])].map(systemdWord).join(' ');
  return `# podnet node agent (podnet ${o.version}), written by \`podnet install\`; \`podnet uninstall\` removes it.
#   systemctl daemon-reload && systemctl enable --now podnet-agent
# Settings go in ${AGENT_ENV_FILE} as PODNET_<FLAG> variables, e.g.
#   PODNET_NET_CONFIG_PATH=/etc/podnet/net-conf.json
#   PODNET_STORE=etcd
#   PODNET_ETCD_ENDPOINTS=http://10.0.0.1:2379,http://10.0.0.2:2379,http://10.0.0.3:2379
#   PODNET_IFACE=eth0
[Unit]
Description=podnet node agent (CNI, subnet lease, cross-node datapath)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
EnvironmentFile=-${AGENT_ENV_FILE}
ExecStart=${exec}
Restart=on-failure
RestartSec=2
# a restart adopts the datapath: never tear it down on stop
KillMode=process
RuntimeDirectory=podnet
RuntimeDirectoryPreserve=yes
StateDirectory=podnet
AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
`;
}

/** The ExecStart line of a unit as argv (the words renderUnit writes; for tests and checks). */
export function unitExecStart(unit: string): string[] {
  const line = unit.split('\n').find((l) => l.startsWith('ExecStart='));
  if (!line) throw new Error('the unit has no ExecStart=');
  const words: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (const m of line.slice('ExecStart='.length).matchAll(re)) {
    const w = m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2];
    words.push(w.replace(/%%/g, '%').replace(/\$\$/g, '$'));
  }
  return words;
}

export function planInstall(src: SourceScan, o: InstallOptions): InstallPlan {
  const paths: [string, string | undefined][] = [
    ['--prefix', o.prefix],
    ['--cni-bin-dir', o.cniBinDir],
    ['--cni-conf-dir', o.cniConfDir],
    ['--systemd-dir', o.systemdDir],
    ['node', o.node],
    ['--socket', o.socket],
  ];
  for (const [what, p] of paths) {
    if (p === undefined) continue;
    if (!isAbsolute(p)) throw new Error(`${what}: not an absolute path: ${JSON.stringify(p)}`);
    if (/[\n\r\0]/.test(p)) throw new Error(`${what}: path with a line break: ${JSON.stringify(p)}`);
  }
  const lib = join(o.prefix, 'lib');
  const dist = join(lib, 'dist');
  const bundle = join(dist, 'podnet.mjs');
  const cniBundle = join(dist, 'podnet-cni.mjs');
  const launcher = join(o.prefix, 'bin', 'podnet');
  const entries: PlanEntry[] = [];
  const warnings: string[] = [];

  entries.push({ path: launcher, mode: 0o755, role: 'launcher', content: renderLauncher({ node: o.node, bundle, version: src.version }) });
  const pkg = { name: 'podnet', version: src.version, private: true, type: 'module', description: `podnet, installed by \`podnet install\` (see ../${MANIFEST_NAME})` };
  entries.push({ path: join(lib, 'package.json'), mode: 0o644, role: 'package', content: JSON.stringify(pkg, null, 2) + '\n' });
  for (const f of src.dist) {
    entries.push({ path: join(dist, f.rel), mode: f.mode, role: f.rel.endsWith('.mjs') || f.rel.endsWith('.js') ? 'bundle' : 'native', from: join(src.root, 'dist', f.rel) });
  }
  for (const d of src.deps) {
    for (const f of d.files) entries.push({ path: join(lib, d.to, f.rel), mode: f.mode, role: f.rel.endsWith('.node') ? 'native' : 'dependency', from: join(d.dir, f.rel) });
  }
  const has = (rel: string) => src.dist.some((f) => f.rel === rel);
  if (!has('podnet-tund')) warnings.push('dist/podnet-tund is missing (no C compiler at build time): the tun backend will be unavailable');
  if (!src.deps.some((d) => d.name === 'koffi')) warnings.push('koffi is not among the dependencies: the netlink fast path and IPAM locking will not load');
  else if (!src.deps.some((d) => d.files.some((f) => f.rel.endsWith('.node')))) warnings.push(`no koffi native binary for ${process.platform}-${process.arch} was found (its optional dependency @koromix/koffi-${process.platform}-${process.arch} is not installed)`);

  const compiled = !o.shellClient && has('podnet-cni-client');
  if (!compiled && !o.shellClient) warnings.push('dist/podnet-cni-client is missing (no C compiler at build time): installing the POSIX shell client');
  if (compiled) entries.push({ path: join(o.cniBinDir, '.podnet-client.conf'), mode: 0o644, role: 'cni', content: renderClientConf({ socket: o.socket, node: o.node, bundle: cniBundle }) });
  for (const plugin of ['podnet', 'podnet-ipam'] as const) {
    const path = join(o.cniBinDir, plugin);
    if (compiled) entries.push({ path, mode: 0o755, role: 'cni', from: join(src.root, 'dist', 'podnet-cni-client') });
    else entries.push({ path, mode: 0o755, role: 'cni', content: renderThinClient({ plugin, node: o.node, bundle: cniBundle, socket: o.socket, versions: o.cniVersions }) });
  }
  if (o.cniConfDir) {
    const list = defaultConflist({ binDir: o.cniBinDir, network: o.network, subnet: o.subnet, mode: o.mode });
    entries.push({ path: join(o.cniConfDir, '10-podnet.conflist'), mode: 0o644, role: 'cni-conf', content: JSON.stringify(list, null, 2) + '\n' });
  }
  if (o.systemdDir) entries.push({ path: join(o.systemdDir, UNIT_NAME), mode: 0o644, role: 'systemd', content: renderUnit({ launcher, socket: o.socket, version: src.version }) });

  const manifest = join(o.prefix, MANIFEST_NAME);
  const seen = new Set<string>([manifest]);
  for (const e of entries) {
    if (seen.has(e.path)) throw new Error(`two files of the install would be written to ${e.path} (overlapping directories?)`);
    seen.add(e.path);
  }
  return { prefix: o.prefix, lib, manifest, entries, warnings, source: { root: src.root, version: src.version } };
}
