// What the trace reads from the kernel, per namespace: FIB lookups with a packet's fields (the
// kernel's own RTM_GETROUTE, via `ip -j route get`), links, addresses, neighbours, FDB entries,
// the peer namespaces' IDs. Read-only: a trace never changes a namespace. The walker sees only
// this interface, so its logic is tested against fixtures and runs against live kernels.
import { Iproute2Adapter, iprouteArgv, spawnCapture, type Address, type FdbEntry, type Link, type Neighbour } from '../kernel/index.js';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { inspectTundProcess, parsePeers } from '../agent/tund/index.js';
import type { DatapathTable } from '../agent/backends/types.js';
import type { Proto } from './types.js';

export interface FibQuery {
  dst: string;
  src?: string;
  /** the device the packet arrived on (input routing, rp_filter included); absent: sent from this namespace */
  iif?: string;
  proto?: Proto;
  sport?: number;
  dport?: number;
}

export interface FibAnswer {
  /** unicast, local, broadcast, blackhole, unreachable, prohibit; 'error' when the kernel refused the lookup */
  type: string;
  dev?: string;
  gateway?: string;
  prefsrc?: string;
  table?: string;
  /** the FIB entry that matched (`route get fibmatch`): its prefix and protocol (kernel, static, bgp, 80 = podnet, ...) */
  entry?: { dst: string; protocol?: string; gateway?: string; dev?: string; flags?: string[] };
  /** the kernel's message when it refused the lookup ("Network is unreachable", "Invalid cross-device link") */
  error?: string;
  /** the command that makes the same lookup */
  command: string;
}

/** What the trace knows of the cluster (from the lab's state or the store): which route a node must have. */
export interface ClusterFacts {
  /** the cluster's pod networks */
  networks: string[];
  /** each node's pod subnet(s) and the node's namespace */
  subnets: { cidr: string; node: string; ns: string }[];
  /** routers beyond the nodes know the pod subnets (bgp): a node's default route is a path to pods too */
  routersKnowPods?: boolean;
}

export interface TraceView {
  /** the cluster's networks and node subnets, when known */
  cluster?(): ClusterFacts | undefined;
  /** the namespaces the trace may pass (to find an address's owner); the lab's or every named one */
  namespaces(): string[];
  /** what a namespace is, when known (pod, node, fabric, router) */
  role(ns: string): string | undefined;
  fib(ns: string, q: FibQuery): Promise<FibAnswer>;
  links(ns: string): Promise<Link[]>;
  addresses(ns: string): Promise<Address[]>;
  neighbours(ns: string): Promise<Neighbour[]>;
  fdb(ns: string): Promise<FdbEntry[]>;
  /** the name of the namespace that `ns` knows as netnsid `id` (a veth or macvlan peer's), if it has one */
  peerNs(ns: string, id: number): Promise<string | undefined>;
  /** the userspace datapath (podnet-tund) attached to TUN device `dev` in `ns`: its UDP address and its peer table; undefined when none runs */
  tunDatapath?(ns: string, dev: string): Promise<TunDatapath | undefined>;
}

export interface TunDatapath {
  pid: number;
  listen: string;
  port: number;
  /** the own subnets (inner destinations it accepts) and the peers' subnets with their node address and port */
  table: DatapathTable;
  /** where the table was read */
  peersFile: string;
}

const ipArgs = (q: FibQuery, fibmatch: boolean): string[] => {
  const a = ['-j', '-d', 'route', 'get', ...(fibmatch ? ['fibmatch'] : []), q.dst];
  if (q.src) a.push('from', q.src);
  if (q.iif) a.push('iif', q.iif);
  if (q.proto) a.push('ipproto', q.proto === 'icmp' && q.dst.includes(':') ? 'ipv6-icmp' : q.proto);
  if (q.proto !== 'icmp' && q.sport !== undefined) a.push('sport', String(q.sport));
  if (q.proto !== 'icmp' && q.dport !== undefined) a.push('dport', String(q.dport));
  return a;
};

/** The kernel as it is now, each answer read once per trace (one consistent-enough snapshot). */
export class LiveView implements TraceView {
  private readonly ip = new Iproute2Adapter();
  private readonly memo = new Map<string, Promise<unknown>>();

  constructor(
    private readonly known: string[],
    private readonly roles: Record<string, string> = {},
    private readonly facts?: ClusterFacts,
  ) {}

  cluster(): ClusterFacts | undefined {
    return this.facts;
  }

  namespaces(): string[] {
    return this.known;
  }

  role(ns: string): string | undefined {
    return this.roles[ns];
  }

  private once<T>(key: string, f: () => Promise<T>): Promise<T> {
    let p = this.memo.get(key) as Promise<T> | undefined;
    if (!p) {
      p = f();
      this.memo.set(key, p);
    }
    return p;
  }

  async fib(ns: string, q: FibQuery): Promise<FibAnswer> {
    return this.once(`fib ${ns} ${JSON.stringify(q)}`, async () => {
      const ref = { kind: 'name', name: ns } as const;
      const argv = iprouteArgv(ref, 'ip', ipArgs(q, false));
      const command = argv.join(' ').replace(' -j -d', '');
      const r = await spawnCapture(argv);
      if (r.exitCode !== 0) return { type: 'error', error: r.stderr.replace(/^RTNETLINK answers:\s*/, '').trim(), command };
      const o = (JSON.parse(r.stdout) as Record<string, unknown>[])[0] ?? {};
      const a: FibAnswer = { type: String(o.type ?? 'unicast'), command };
      if (typeof o.dev === 'string') a.dev = o.dev;
      if (typeof o.gateway === 'string') a.gateway = o.gateway;
      if (typeof o.prefsrc === 'string') a.prefsrc = o.prefsrc;
      if (typeof o.table === 'string') a.table = o.table;
      const m = await spawnCapture(iprouteArgv(ref, 'ip', ipArgs(q, true)));
      if (m.exitCode === 0) {
        const e = (JSON.parse(m.stdout) as Record<string, unknown>[])[0];
        if (e) {
          const dst = String(e.dst ?? q.dst);
          a.entry = {
            dst: dst === 'default' || dst.includes('/') ? dst : `${dst}/${dst.includes(':') ? 128 : 32}`,
            ...(typeof e.protocol === 'string' ? { protocol: e.protocol } : {}),
            ...(typeof e.gateway === 'string' ? { gateway: e.gateway } : {}),
            ...(typeof e.dev === 'string' ? { dev: e.dev } : {}),
            ...(Array.isArray(e.flags) && e.flags.length ? { flags: e.flags as string[] } : {}),
          };
        }
      }
      return a;
    });
  }

  links(ns: string): Promise<Link[]> {
    return this.once(`links ${ns}`, () => this.ip.links({ kind: 'name', name: ns }));
  }

  addresses(ns: string): Promise<Address[]> {
    return this.once(`addrs ${ns}`, () => this.ip.addresses({ kind: 'name', name: ns }));
  }

  neighbours(ns: string): Promise<Neighbour[]> {
    return this.once(`neigh ${ns}`, () => this.ip.neighbours({ kind: 'name', name: ns }));
  }

  fdb(ns: string): Promise<FdbEntry[]> {
    return this.once(`fdb ${ns}`, () => this.ip.fdb({ kind: 'name', name: ns }));
  }

  async tunDatapath(ns: string, dev: string): Promise<TunDatapath | undefined> {
    return this.once(`tund ${ns} ${dev}`, async () => {
      // the daemon is found by what /proc says: a podnet-tund whose network namespace is this one
      const ino = statSync(`/run/netns/${ns}`).ino;
      for (const e of readdirSync('/proc')) {
        if (!/^\d+$/.test(e)) continue;
        const p = inspectTundProcess(Number(e));
        if (!p || p.dev !== dev || p.listen === undefined || p.port === undefined) continue;
        try {
          if (statSync(`/proc/${e}/ns/net`).ino !== ino) continue;
        } catch {
          continue; // exited meanwhile
        }
        const i = p.argv.indexOf('--peers');
        const peersFile = i >= 0 ? p.argv[i + 1] : undefined;
        if (!peersFile) continue;
        let text = '';
        try {
          text = readFileSync(peersFile, 'utf8');
        } catch {
          // a missing file is no peers (as the daemon reads it)
        }
        return { pid: p.pid, listen: p.listen, port: p.port, table: parsePeers(text), peersFile };
      }
      return undefined;
    });
  }

  async peerNs(ns: string, id: number): Promise<string | undefined> {
    const ids = await this.once(`nsids ${ns}`, async () => {
      const r = await spawnCapture(iprouteArgv({ kind: 'name', name: ns }, 'ip', ['-j', 'netns', 'list-id']));
      return r.exitCode === 0 && r.stdout.trim() ? (JSON.parse(r.stdout) as { nsid: number; name?: string }[]) : [];
    });
    return ids.find((x) => x.nsid === id)?.name;
  }
}
