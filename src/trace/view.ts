// What the trace reads from the kernel, per namespace: FIB lookups with a packet's fields (the
// kernel's own RTM_GETROUTE, via `ip -j route get`), links, addresses, neighbours, FDB entries,
// the peer namespaces' IDs. Read-only: a trace never changes a namespace. The walker sees only
// this interface, so its logic is tested against fixtures and runs against live kernels.
import { Iproute2Adapter, iprouteArgv, netnsFile, nsExecArgv, spawnCapture, type Address, type FdbEntry, type Link, type NetnsRef, type Neighbour } from '../kernel/index.js';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { inspectTundProcess, parsePeers } from '../agent/tund/index.js';
import type { DatapathTable } from '../agent/backends/types.js';
import type { Proto } from './types.js';

/**
 * The namespace podnet itself runs in (a real node's own, which has no name): hops there are
 * shown as this; every other namespace is a named one (/run/netns/NAME).
 */
export const HOST_NS = '@host';

export function nsRef(ns: string): NetnsRef {
  return ns === HOST_NS ? { kind: 'current' } : { kind: 'name', name: ns };
}

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
  /** each node's agent: running or not (what keeps the node's routes, FDB and lease) */
  agents?: { node: string; ns: string; running: boolean; pid?: number }[];
  /** the cluster's services (to name a frontend a DNAT or a reject is for) */
  services?: { name: string; ip: string; port: number; proto: string; nodePort?: number }[];
}

/** The flow whose conntrack entries are wanted (the original direction's tuple). */
export interface ConntrackQuery {
  family: 4 | 6;
  proto: string;
  src: string;
  dst: string;
  dport?: number;
}

/** One conntrack entry (`conntrack -L`): both directions' tuples, its state and flags. */
export interface ConntrackEntry {
  proto: string;
  /** seconds until it expires */
  timeout?: number;
  /** TCP's state (ESTABLISHED, TIME_WAIT, ...) */
  state?: string;
  orig: { src: string; dst: string; sport?: number; dport?: number };
  reply: { src: string; dst: string; sport?: number; dport?: number };
  /** ASSURED, UNREPLIED, ... */
  flags: string[];
  mark?: number;
}

/** iptables-save output of one backend (xtables over nf_tables, or the legacy tables). */
export interface IptablesDump {
  backend: 'nft' | 'legacy';
  text: string;
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
  /** the namespace's nftables ruleset as `nft -j list ruleset` prints it (undefined: nft cannot be run); without this method the walk has no netfilter steps */
  ruleset?(ns: string): Promise<unknown>;
  /** iptables-save output of a family per backend that has tables there; `nftTables`: nft listed xtables-named tables (else iptables-nft-save is not run) */
  iptables?(ns: string, family: 4 | 6, nftTables: boolean): Promise<IptablesDump[]>;
  /** the conntrack entries of a flow (original direction), from `conntrack -L` */
  conntrack?(ns: string, q: ConntrackQuery): Promise<ConntrackEntry[]>;
  /** the addresses in an xt_recent list (/proc/net/xt_recent/NAME), undefined when there is no such list */
  xtRecent?(ns: string, name: string): Promise<string[] | undefined>;
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

/**
 * A namespace deleted while the trace reads it (the walk looks through every namespace it may pass
 * for an address's owner) holds nothing any more: empty, not an error.
 */
async function orGone<T>(ns: string, p: Promise<T[]>): Promise<T[]> {
  try {
    return await p;
  } catch (e) {
    if (ns !== HOST_NS && !existsSync(netnsFile(nsRef(ns)))) return [];
    throw e;
  }
}

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
      const ref = nsRef(ns);
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
    return this.once(`links ${ns}`, () => orGone(ns, this.ip.links(nsRef(ns))));
  }

  addresses(ns: string): Promise<Address[]> {
    return this.once(`addrs ${ns}`, () => orGone(ns, this.ip.addresses(nsRef(ns))));
  }

  neighbours(ns: string): Promise<Neighbour[]> {
    return this.once(`neigh ${ns}`, () => orGone(ns, this.ip.neighbours(nsRef(ns))));
  }

  fdb(ns: string): Promise<FdbEntry[]> {
    return this.once(`fdb ${ns}`, () => orGone(ns, this.ip.fdb(nsRef(ns))));
  }

  async tunDatapath(ns: string, dev: string): Promise<TunDatapath | undefined> {
    return this.once(`tund ${ns} ${dev}`, async () => {
      // the daemon is found by what /proc says: a podnet-tund whose network namespace is this one
      const ino = statSync(netnsFile(nsRef(ns))).ino;
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
      const r = await spawnCapture(iprouteArgv(nsRef(ns), 'ip', ['-j', 'netns', 'list-id']));
      return r.exitCode === 0 && r.stdout.trim() ? (JSON.parse(r.stdout) as { nsid: number; name?: string }[]) : [];
    });
    return ids.find((x) => x.nsid === id)?.name;
  }

  ruleset(ns: string): Promise<unknown> {
    return this.once(`nft ${ns}`, async () => {
      try {
        const r = await spawnCapture(nsExecArgv(nsRef(ns), ['nft', '-j', 'list', 'ruleset']));
        return r.exitCode === 0 && r.stdout.trim() ? (JSON.parse(r.stdout) as unknown) : undefined;
      } catch {
        return undefined; // nft is not installed
      }
    });
  }

  iptables(ns: string, family: 4 | 6, nftTables: boolean): Promise<IptablesDump[]> {
    return this.once(`xt ${ns} ${family} ${nftTables}`, async () => {
      const out: IptablesDump[] = [];
      for (const backend of nftTables ? (['nft', 'legacy'] as const) : (['legacy'] as const)) {
        const tool = `${family === 4 ? 'iptables' : 'ip6tables'}-${backend}-save`;
        try {
          const r = await spawnCapture(nsExecArgv(nsRef(ns), [tool]));
          if (r.exitCode === 0 && /^\*/m.test(r.stdout)) out.push({ backend, text: r.stdout });
        } catch {
          // that backend's tools are not installed: it has no tables to show
        }
      }
      return out;
    });
  }

  conntrack(ns: string, q: ConntrackQuery): Promise<ConntrackEntry[]> {
    return this.once(`ct ${ns} ${JSON.stringify(q)}`, async () => {
      const args = ['conntrack', '-L', '-f', q.family === 4 ? 'ipv4' : 'ipv6', '-p', q.proto === 'icmp' && q.family === 6 ? 'icmpv6' : q.proto, '--orig-src', q.src, '--orig-dst', q.dst];
      if (q.dport !== undefined && q.proto !== 'icmp') args.push('--dport', String(q.dport));
      try {
        const r = await spawnCapture(nsExecArgv(nsRef(ns), args));
        return r.exitCode === 0 ? parseConntrack(r.stdout) : [];
      } catch {
        return []; // conntrack-tools not installed
      }
    });
  }

  xtRecent(ns: string, name: string): Promise<string[] | undefined> {
    return this.once(`recent ${ns} ${name}`, async () => {
      if (!/^[A-Za-z0-9_.-]+$/.test(name)) return undefined;
      const r = await spawnCapture(nsExecArgv(nsRef(ns), ['cat', `/proc/net/xt_recent/${name}`]));
      if (r.exitCode !== 0) return undefined;
      return [...r.stdout.matchAll(/^src=(\S+)/gm)].map((m) => m[1]);
    });
  }
}

/** `conntrack -L` lines: "tcp 6 117 TIME_WAIT src=.. dst=.. sport=.. dport=.. src=.. dst=.. sport=.. dport=.. [ASSURED] mark=0 use=1". */
export function parseConntrack(text: string): ConntrackEntry[] {
  const out: ConntrackEntry[] = [];
  for (const line of text.split('\n')) {
    const words = line.trim().split(/\s+/);
    if (!words.some((w) => w.startsWith('src='))) continue;
    // with -o extended the line starts with the L3 protocol and its number
    if (words[0] === 'ipv4' || words[0] === 'ipv6') words.splice(0, 2);
    const e: ConntrackEntry = { proto: words[0], orig: { src: '', dst: '' }, reply: { src: '', dst: '' }, flags: [] };
    if (/^\d+$/.test(words[2] ?? '')) e.timeout = Number(words[2]);
    let dir: 'orig' | 'reply' | undefined;
    for (const w of words.slice(3)) {
      const kv = /^(\w+)=(.*)$/.exec(w);
      if (!kv) {
        if (/^\[.*\]$/.test(w)) e.flags.push(w.slice(1, -1));
        else if (/^[A-Z_]+$/.test(w) && !dir) e.state = w;
        continue;
      }
      const [, k, v] = kv;
      if (k === 'src') dir = dir === undefined ? 'orig' : 'reply';
      if (k === 'mark') e.mark = Number(v);
      if (!dir || !['src', 'dst', 'sport', 'dport'].includes(k)) continue;
      const t = e[dir];
      if (k === 'src' || k === 'dst') t[k] = v;
      else t[k as 'sport' | 'dport'] = Number(v);
    }
    out.push(e);
  }
  return out;
}
