// Environment validation, as the reference pkg/skel does it (see shared/reference/cni-spec.md §2).
import { statSync } from 'node:fs';
import { CniError, ErrCode } from './errors.js';
import type { CniCommand, CniEnv } from './types.js';

const COMMANDS: readonly CniCommand[] = ['ADD', 'DEL', 'CHECK', 'VERSION', 'STATUS', 'GC'];
export const NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$/;

/** Which variables each verb needs; skel is stricter than the spec about CNI_PATH, and so are we. */
const REQUIRED: Record<CniCommand, string[]> = {
  ADD: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_PATH'],
  CHECK: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_PATH'],
  DEL: ['CNI_CONTAINERID', 'CNI_IFNAME', 'CNI_PATH'],
  GC: ['CNI_PATH'],
  STATUS: [],
  VERSION: [],
};

export function parseCommand(env: Record<string, string | undefined>): CniCommand {
  const c = env.CNI_COMMAND;
  if (!c) throw new CniError(ErrCode.InvalidEnv, 'required env variables [CNI_COMMAND] missing');
  if (!(COMMANDS as readonly string[]).includes(c)) {
    throw new CniError(ErrCode.InvalidEnv, `unknown CNI_COMMAND: ${JSON.stringify(c)}`, `expected one of ${COMMANDS.join(', ')}`);
  }
  return c as CniCommand;
}

export function validateIfname(name: string): void {
  if (name === '') throw new CniError(ErrCode.InvalidEnv, 'CNI_IFNAME: interface name is empty');
  if (Buffer.byteLength(name) > 15) throw new CniError(ErrCode.InvalidEnv, `CNI_IFNAME: interface name is longer than 15 characters: ${JSON.stringify(name)}`);
  if (name === '.' || name === '..') throw new CniError(ErrCode.InvalidEnv, `CNI_IFNAME: interface name is . or ..`);
  if (/[/:\s]/.test(name)) throw new CniError(ErrCode.InvalidEnv, `CNI_IFNAME: interface name contains / or : or whitespace: ${JSON.stringify(name)}`);
}

export function validateContainerId(id: string): void {
  if (id === '') throw new CniError(ErrCode.UnknownContainer, 'missing containerID');
  if (!NAME_RE.test(id)) throw new CniError(ErrCode.InvalidEnv, 'CNI_CONTAINERID: invalid characters in containerID', id);
}

/** Keys podnet understands in CNI_ARGS; values are checked so nothing odd reaches the kernel or logs. */
const KNOWN_ARGS: Record<string, RegExp> = {
  IgnoreUnknown: /^(1|true|false|0)$/i,
  IP: /^[0-9a-fA-F:.,]+$/,
  MAC: /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/,
  K8S_POD_NAMESPACE: /^[a-zA-Z0-9._-]*$/,
  K8S_POD_NAME: /^[a-zA-Z0-9._-]*$/,
  K8S_POD_INFRA_CONTAINER_ID: /^[a-zA-Z0-9._-]*$/,
  K8S_POD_UID: /^[a-zA-Z0-9._-]*$/,
};

export function parseCniArgs(raw: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (!raw) return out;
  for (const pair of raw.split(';')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new CniError(ErrCode.InvalidEnv, `CNI_ARGS: invalid pair ${JSON.stringify(pair)} (expected KEY=VALUE)`);
    out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  const ignoreUnknown = /^(1|true)$/i.test(out.IgnoreUnknown ?? '');
  for (const [k, v] of Object.entries(out)) {
    const re = KNOWN_ARGS[k];
    if (!re) {
      if (!ignoreUnknown) throw new CniError(ErrCode.InvalidEnv, `CNI_ARGS: unknown key ${JSON.stringify(k)} (set IgnoreUnknown=1 to allow it)`);
      continue;
    }
    if (!re.test(v)) throw new CniError(ErrCode.InvalidEnv, `CNI_ARGS: invalid value for ${k}: ${JSON.stringify(v)}`);
  }
  return out;
}

function sameInode(a: string, b: string): boolean {
  try {
    const sa = statSync(a);
    const sb = statSync(b);
    return sa.dev === sb.dev && sa.ino === sb.ino;
  } catch {
    return false;
  }
}

/** CNI_NETNS must exist and must not be the namespace the plugin itself runs in (recycled /proc/PID/ns/net hazard). */
export function validateNetns(path: string, env: Record<string, string | undefined>): void {
  if (!path.startsWith('/')) throw new CniError(ErrCode.InvalidEnv, `CNI_NETNS: not an absolute path: ${JSON.stringify(path)}`);
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    throw new CniError(ErrCode.InvalidEnv, `CNI_NETNS: cannot open network namespace ${path}: ${(e as Error).message}`);
  }
  if (st.isDirectory()) throw new CniError(ErrCode.InvalidEnv, `CNI_NETNS: ${path} is a directory, not a network namespace`);
  if (!env.CNI_NETNS_OVERRIDE && sameInode(path, '/proc/self/ns/net')) {
    throw new CniError(ErrCode.InvalidEnv, `CNI_NETNS: ${path} is the plugin's own network namespace; refusing to configure the host`);
  }
}

/** Validates the environment for a verb (not VERSION) exactly once, up front. */
export function parseEnv(env: Record<string, string | undefined>): CniEnv {
  const command = parseCommand(env);
  const missing = REQUIRED[command].filter((k) => !env[k]);
  if (missing.length) throw new CniError(ErrCode.InvalidEnv, `required env variables [${missing.join(',')}] missing`);
  const containerId = env.CNI_CONTAINERID ?? '';
  if (command === 'ADD' || command === 'DEL' || command === 'CHECK') {
    validateContainerId(containerId);
    validateIfname(env.CNI_IFNAME ?? '');
  }
  const netns = env.CNI_NETNS ?? '';
  if (command === 'ADD' || command === 'CHECK') validateNetns(netns, env);
  const argsRaw = env.CNI_ARGS ?? '';
  const args = parseCniArgs(argsRaw);
  const raw: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined) raw[k] = v;
  return {
    command,
    containerId,
    netns,
    ifname: env.CNI_IFNAME ?? '',
    args,
    argsRaw,
    path: (env.CNI_PATH ?? '').split(':').filter(Boolean),
    raw,
  };
}
