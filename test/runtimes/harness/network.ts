// The network a runtime is pointed at: a CNI bin dir plus a conflist, and helpers
// to install it in a runtime's conf dir and to record the CNI calls it makes.
import { chmod, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';

export interface CniConflist {
  cniVersion: string;
  name: string;
  plugins: Array<Record<string, unknown> & { type: string }>;
  [key: string]: unknown;
}

export interface CniNetwork {
  /** Directory holding the plugin executables (must include `loopback` for containerd). */
  binDir: string;
  conflist: CniConflist;
}

/** Writes the conflist as `<confDir>/10-<name>.conflist` (created). Returns the file path. */
export async function installConflist(confDir: string, conflist: CniConflist): Promise<string> {
  await mkdir(confDir, { recursive: true });
  const file = join(confDir, `10-${conflist.name}.conflist`);
  await writeFile(file, JSON.stringify(conflist, null, 2) + '\n');
  return file;
}

export interface CniCall {
  plugin: string;
  command: string;
  containerId: string;
  netns: string;
  ifname: string;
  args: string;
  path: string;
}

/**
 * Makes `wrapDir` a bin dir whose every entry is a tiny /bin/sh wrapper around the
 * same-named plugin of `realBinDir`: it appends one tab-separated line per call to
 * `logFile` (plugin, CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS,
 * CNI_PATH) and execs the real plugin with stdin/stdout untouched. Delegations
 * (e.g. bridge -> host-local via CNI_PATH=wrapDir) are recorded too.
 */
export async function recordingBinDir(realBinDir: string, wrapDir: string, logFile: string): Promise<string> {
  await mkdir(wrapDir, { recursive: true });
  const real = resolve(realBinDir);
  for (const name of await readdir(real)) {
    if (!/^[A-Za-z0-9._-]+$/.test(name)) continue;
    const script =
      '#!/bin/sh\n' +
      `printf '%s\\t%s\\t%s\\t%s\\t%s\\t%s\\t%s\\n' '${name}' "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_NETNS" "$CNI_IFNAME" "$CNI_ARGS" "$CNI_PATH" >> '${logFile}'\n` +
      `exec '${join(real, name)}' "$@"\n`;
    const file = join(wrapDir, name);
    await writeFile(file, script);
    await chmod(file, 0o755);
  }
  return wrapDir;
}

export async function readCniCalls(logFile: string): Promise<CniCall[]> {
  if (!existsSync(logFile)) return [];
  const text = await readFile(logFile, 'utf8');
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [plugin = '', command = '', containerId = '', netns = '', ifname = '', args = '', path = ''] = l.split('\t');
      return { plugin, command, containerId, netns, ifname, args, path };
    });
}

/** One-line-per-call summary, e.g. "bridge ADD netns=/var/run/netns/cni-… args=…". */
export function formatCniCalls(calls: CniCall[]): string {
  return calls
    .map((c) => `${c.plugin} ${c.command || '?'} id=${c.containerId.slice(0, 12) || '-'} if=${c.ifname || '-'} netns=${c.netns || '-'} args=${c.args || '-'}`)
    .join('\n');
}
