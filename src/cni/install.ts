// `podnet cni install`: what a CNI install container does — put the executables the runtime
// execs into its bin dir and (optionally) a conflist into its conf dir, each written under a
// temp name and renamed into place so a runtime never sees half a file.
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync, chmodSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const DEFAULT_SOCKET_PATH = '/run/podnet/podnet.sock';

/** The repository (or installed package) root: the nearest package.json named podnet above this module. */
export function packageRoot(from = dirname(fileURLToPath(import.meta.url))): string {
  let dir = from;
  for (;;) {
    const pj = join(dir, 'package.json');
    if (existsSync(pj)) {
      try {
        if (JSON.parse(readFileSync(pj, 'utf8')).name === 'podnet') return dir;
      } catch {
        /* keep looking */
      }
    }
    const up = dirname(dir);
    if (up === dir) throw new Error(`cannot find podnet's package root above ${from}`);
    dir = up;
  }
}

export function cniBundlePath(): string {
  const p = join(packageRoot(), 'dist', 'podnet-cni.mjs');
  if (!existsSync(p)) throw new Error(`${p} is missing: run \`npm run build\` first`);
  return p;
}

function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * The thin client the runtime execs. VERSION is answered by the shell itself (no process
 * start); other verbs go to the agent through socat; with no agent answering, the same request
 * runs standalone in Node. stdin is buffered first so the fallback still has it.
 */
export function renderThinClient(opts: { plugin: 'podnet' | 'podnet-ipam'; node: string; bundle: string; socket: string; versions: string[] }): string {
  const versionJson = JSON.stringify({ cniVersion: '1.1.0', supportedVersions: opts.versions });
  const vars = ['CNI_COMMAND', 'CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_ARGS', 'CNI_PATH', 'CNI_NETNS_OVERRIDE', 'PODNET_CNI_LOG'];
  return `#!/bin/sh
# podnet CNI client (${opts.plugin}), written by \`podnet cni install\`.
PODNET_PLUGIN=${opts.plugin}
export PODNET_PLUGIN
sock=\${PODNET_SOCKET:-${shQuote(opts.socket)}}
node=${shQuote(opts.node)}
bundle=${shQuote(opts.bundle)}
if [ "$CNI_COMMAND" = VERSION ]; then
  printf '%s\\n' ${shQuote(versionJson)}
  exit 0
fi
if [ -S "$sock" ] && command -v socat >/dev/null 2>&1; then
  input=$(cat; printf x)
  input=\${input%x}
  out=$( { printf 'PODNET1\\0'; printf '%s\\0' ${vars.map((v) => `"${v}=\${${v}}"`).join(' ')} "PODNET_PLUGIN=$PODNET_PLUGIN"; printf '\\0'; printf '%s' "$input"; } | socat -t 600 -T 600 - "UNIX-CONNECT:$sock" 2>/dev/null; printf x)
  out=\${out%x}
  nl='
'
  case $out in
    [0-9]*"$nl"*)
      code=\${out%%"$nl"*}
      printf '%s' "\${out#*"$nl"}"
      exit "$code" ;;
  esac
  # no agent answered: do the work here
  printf '%s' "$input" | "$node" "$bundle"
  exit $?
fi
exec "$node" "$bundle"
`;
}

export function writeAtomic(path: string, content: string, mode: number): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp.${process.pid}`;
  writeFileSync(tmp, content, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}

export interface InstallOptions {
  binDir: string;
  confDir?: string;
  socket?: string;
  network?: string;
  subnet?: string;
  mode?: string;
  bridge?: string;
  conflistName?: string;
}

export function defaultConflist(o: InstallOptions): Record<string, unknown> {
  const ipam: Record<string, unknown> = { type: 'podnet-ipam' };
  if (o.subnet) ipam.ranges = [[{ subnet: o.subnet }]];
  else ipam.subnetFile = '/run/podnet/subnet.env';
  // the runtime passes runtimeConfig.portMappings (hostPort) only to plugins that declare it
  const plugin: Record<string, unknown> = { type: 'podnet', mode: o.mode ?? 'bridge', capabilities: { portMappings: true }, ipam };
  if ((o.mode ?? 'bridge') === 'bridge') Object.assign(plugin, { bridge: o.bridge ?? 'podnet0', isGateway: true, isDefaultGateway: true, ipMasq: true, hairpinMode: true });
  if (o.mode === 'routed') Object.assign(plugin, { ipMasq: true });
  // cniVersion is what runtimes with an older libcni (containerd 1.6, podman 4.3: results up to
  // 1.0.0, no `cniVersions`) use; newer ones pick the highest of cniVersions they support.
  return { cniVersion: '1.0.0', cniVersions: ['0.3.1', '0.4.0', '1.0.0', '1.1.0'], name: o.network ?? 'podnet', plugins: [plugin] };
}

/** The compiled client, when the build could compile it. */
export function compiledClientPath(): string | undefined {
  const p = join(packageRoot(), 'dist', 'podnet-cni-client');
  return existsSync(p) ? p : undefined;
}

function copyAtomic(src: string, dst: string, mode: number): void {
  mkdirSync(dirname(dst), { recursive: true });
  const tmp = `${dst}.tmp.${process.pid}`;
  copyFileSync(src, tmp);
  chmodSync(tmp, mode);
  renameSync(tmp, dst);
}

export function renderClientConf(o: { socket: string; node: string; bundle: string }): string {
  for (const v of Object.values(o)) if (/[\n\r]/.test(v)) throw new Error(`path with a line break: ${JSON.stringify(v)}`);
  return `socket=${o.socket}\nnode=${o.node}\nbundle=${o.bundle}\n`;
}

export function installCni(o: InstallOptions, versions: string[], opts: { shellClient?: boolean } = {}): string[] {
  const bundle = cniBundlePath();
  const socket = o.socket ?? DEFAULT_SOCKET_PATH;
  const written: string[] = [];
  const compiled = opts.shellClient ? undefined : compiledClientPath();
  if (compiled) writeAtomic(resolve(o.binDir, '.podnet-client.conf'), renderClientConf({ socket, node: process.execPath, bundle }), 0o644);
  for (const plugin of ['podnet', 'podnet-ipam'] as const) {
    const p = resolve(o.binDir, plugin);
    if (compiled) copyAtomic(compiled, p, 0o755);
    else writeAtomic(p, renderThinClient({ plugin, node: process.execPath, bundle, socket, versions }), 0o755);
    written.push(p);
  }
  if (o.confDir) {
    const p = resolve(o.confDir, o.conflistName ?? '10-podnet.conflist');
    writeAtomic(p, JSON.stringify(defaultConflist(o), null, 2) + '\n', 0o644);
    written.push(p);
  }
  return written;
}
