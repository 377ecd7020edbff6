// Network namespace references and the argv prefixes that run a tool inside one.
// iproute2 6.1 `ip -n` only takes names (it prefixes /run/netns/), so paths go through nsenter.
import type { NetnsRef } from './types.js';
import { KernelError } from './exec.js';

export const NETNS_RUN_DIR = '/run/netns';

/** '' or undefined → the current netns; anything with a '/' → a path; otherwise a name under /run/netns. */
export function netnsFromPath(s?: string | null): NetnsRef {
  if (s === undefined || s === null || s === '') return { kind: 'current' };
  if (s.includes('/')) return { kind: 'path', path: s };
  return { kind: 'name', name: s };
}

export function describeNetns(ns: NetnsRef): string {
  switch (ns.kind) {
    case 'current':
      return 'current netns';
    case 'name':
      return `netns ${ns.name}`;
    case 'path':
      return `netns ${ns.path}`;
  }
}

function invalid(what: string): KernelError {
  return new KernelError({ argv: [], exitCode: null, stderr: '', op: 'validate', kind: 'invalid', detail: what });
}

/** Linux interface names: 1..15 bytes, no '/', ':' or whitespace, not '.' or '..' (dev_valid_name). */
export function validateIfName(name: unknown, role = 'interface name'): asserts name is string {
  if (typeof name !== 'string') throw invalid(`${role} must be a string, got ${typeof name}`);
  if (name.length < 1 || Buffer.byteLength(name) > 15) throw invalid(`${role} ${JSON.stringify(name)} must be 1..15 bytes long`);
  if (name === '.' || name === '..') throw invalid(`${role} ${JSON.stringify(name)} is not allowed`);
  // Quotes, '#' and backslashes would also be reinterpreted by `ip -batch` line splitting.
  if (/[\/:\s"'#\\]/.test(name) || /[\x00-\x1f\x7f]/.test(name)) {
    throw invalid(`${role} ${JSON.stringify(name)} contains a forbidden character (/, :, whitespace, quotes, #, \\ or control)`);
  }
}

export function validateNetnsName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || !/^[A-Za-z0-9_.-]+$/.test(name) || name === '.' || name === '..' || name.length > 255) {
    throw invalid(`netns name ${JSON.stringify(name)} is invalid (allowed: A-Z a-z 0-9 _ . -)`);
  }
}

export function validateNetnsPath(path: unknown): asserts path is string {
  // Paths end up in ip batch lines (veth peer netns), where whitespace and quotes would split or re-quote them.
  if (typeof path !== 'string' || path.length === 0 || path.length > 4096 || /[\s"'#\\\x00-\x1f\x7f]/.test(path)) {
    throw invalid(`netns path ${JSON.stringify(path)} is invalid (no whitespace, quotes, '#', '\\' or control characters)`);
  }
}

export function validateNetns(ns: NetnsRef): void {
  if (!ns || typeof ns !== 'object') throw invalid(`netns reference must be an object, got ${JSON.stringify(ns)}`);
  switch (ns.kind) {
    case 'current':
      return;
    case 'name':
      return validateNetnsName(ns.name);
    case 'path':
      return validateNetnsPath(ns.path);
    default:
      throw invalid(`unknown netns reference kind ${JSON.stringify((ns as { kind?: unknown }).kind)}`);
  }
}

/** The file a netns reference designates (for stat / nsenter). */
export function netnsFile(ns: NetnsRef): string {
  switch (ns.kind) {
    case 'current':
      return '/proc/self/ns/net';
    case 'name':
      return `${NETNS_RUN_DIR}/${ns.name}`;
    case 'path':
      return ns.path;
  }
}

/** argv for an iproute2 tool (ip, bridge) in a netns: `ip -n NAME ...`, `nsenter --net=PATH ip ...` or plain. */
export function iprouteArgv(ns: NetnsRef, tool: 'ip' | 'bridge', args: string[]): string[] {
  validateNetns(ns);
  switch (ns.kind) {
    case 'current':
      return [tool, ...args];
    case 'name':
      return [tool, '-n', ns.name, ...args];
    case 'path':
      return ['nsenter', `--net=${ns.path}`, tool, ...args];
  }
}

/**
 * argv for any other command (sysctl, nft) in a netns. Named namespaces go through nsenter on
 * /run/netns/NAME rather than `ip netns exec`: the latter also unshares the mount namespace and
 * remounts /sys, which these tools do not need (/proc/sys/net and netlink follow the task's netns).
 */
export function nsExecArgv(ns: NetnsRef, argv: string[]): string[] {
  validateNetns(ns);
  if (ns.kind === 'current') return [...argv];
  return ['nsenter', `--net=${netnsFile(ns)}`, ...argv];
}
