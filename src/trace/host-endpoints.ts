// SRC and DST of a trace on a real node (no lab): the node's own namespace (HOST_NS) and every
// named one are what the walk may pass. SRC is an address in --from-netns (or its first one), an
// address some namespace here owns, or the container ID of a pod podnet's CNI wired — found by
// the owner alias on its host-side link (bridge and routed modes) or by its IPAM reservation
// (host-local's layout: <dir>/<network>/<ip> holding the container ID), then by who owns that IP.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { parseOwnerAlias } from '../cni/modes/common.js';
import { DEFAULT_DATA_DIR } from '../ipam/config.js';
import { tryParseIP } from '../util/ip.js';
import { HOST_NS } from './view.js';

export class HostEndpointError extends Error {}

interface JLink {
  ifname: string;
  ifalias?: string;
  link_netnsid?: number;
}
interface JAddr {
  ifname: string;
  addr_info?: { local: string; family: string; scope: string }[];
}

function ipJson<T>(ns: string, args: string[]): T[] {
  const argv = ns === HOST_NS ? ['ip', '-j', ...args] : ['ip', '-n', ns, '-j', ...args];
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8' });
  return r.status === 0 && r.stdout.trim() ? (JSON.parse(r.stdout) as T[]) : [];
}

/** The node's own namespace first, then every named one. */
export function machineNamespaces(): string[] {
  return [HOST_NS, ...ipJson<{ name: string }>(HOST_NS, ['netns', 'list']).map((x) => x.name)];
}

function globalAddrs(ns: string): { ip: string; family: 4 | 6 }[] {
  return ipJson<JAddr>(ns, ['addr', 'show', 'scope', 'global'])
    .flatMap((x) => x.addr_info ?? [])
    .map((a) => ({ ip: a.local, family: a.family === 'inet6' ? 6 : 4 }) as const);
}

/** The namespace that has this address, if one here does. */
export function ownerOf(namespaces: string[], ip: string): string | undefined {
  return namespaces.find((ns) => globalAddrs(ns).some((a) => a.ip === ip));
}

/** A pod's namespace by the container ID (or a unique prefix of it, 6+ hex digits) podnet's CNI recorded. */
export function podOfContainer(namespaces: string[], id: string, ipamDir = DEFAULT_DATA_DIR): { ns: string; how: string } {
  const hits = new Map<string, string>();
  for (const ns of namespaces) {
    for (const l of ipJson<JLink>(ns, ['link', 'show'])) {
      const owner = parseOwnerAlias(l.ifalias);
      if (!owner || !owner.containerId.startsWith(id) || l.link_netnsid === undefined) continue;
      const peer = ipJson<{ nsid: number; name?: string }>(ns, ['netns', 'list-id']).find((x) => x.nsid === l.link_netnsid)?.name;
      if (peer) hits.set(owner.containerId, peer);
    }
  }
  if (hits.size === 0 && existsSync(ipamDir)) {
    // macvlan pods have no host-side link of their own: their reservation names the address
    for (const net of readdirSync(ipamDir)) {
      const dir = join(ipamDir, net);
      let files: string[] = [];
      try {
        files = readdirSync(dir).filter((f) => tryParseIP(f));
      } catch {
        continue;
      }
      for (const f of files) {
        const cid = readFileSync(join(dir, f), 'utf8').split(/\r?\n/)[0].trim();
        if (!cid.startsWith(id)) continue;
        const ns = ownerOf(namespaces, f);
        if (ns) hits.set(cid, ns);
      }
    }
  }
  if (hits.size === 0) throw new HostEndpointError(`no pod of container ${id} here: no podnet host link (ip link, alias podnet:...) and no reservation under ${ipamDir} names it`);
  if (hits.size > 1) throw new HostEndpointError(`container ID ${id} is ambiguous: ${[...hits.keys()].join(', ')}`);
  const [[cid, ns]] = [...hits];
  return { ns, how: `container ${cid.slice(0, 12)}` };
}

/** SRC on a real node: where the packet is sent from, and its source address. */
export function resolveHostSource(src: string, o: { fromNetns?: string; family?: 4 | 6; ipamDir?: string }, namespaces: string[]): { ns: string; ip: string; label: string } {
  const pick = (ns: string, label: string) => {
    const a = globalAddrs(ns).find((x) => x.family === (o.family ?? 4));
    if (!a) throw new HostEndpointError(`${ns === HOST_NS ? 'this node' : ns} has no global IPv${o.family ?? 4} address to send from`);
    return { ns, ip: a.ip, label };
  };
  if (o.fromNetns) {
    const name = basename(o.fromNetns);
    if (!namespaces.includes(name)) throw new HostEndpointError(`--from-netns ${o.fromNetns}: no named network namespace ${name} (ip netns list)`);
    if (src === '-') return pick(name, name);
    if (!tryParseIP(src)) throw new HostEndpointError(`with --from-netns, SRC is an address in that namespace or "-" (its first address), not ${src}`);
    return { ns: name, ip: src, label: src };
  }
  if (tryParseIP(src)) {
    const ns = ownerOf(namespaces, src);
    if (!ns) throw new HostEndpointError(`no namespace here has ${src}: trace from an address of this node, of a named namespace or of a pod`);
    return { ns, ip: src, label: src };
  }
  if (/^[0-9a-f]{6,64}$/i.test(src)) {
    const pod = podOfContainer(namespaces, src.toLowerCase(), o.ipamDir);
    return pick(pod.ns, pod.how);
  }
  throw new HostEndpointError(`SRC ${src} is no address and no container ID (6 to 64 hex digits); in a lab, give --name LAB`);
}
