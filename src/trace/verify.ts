// `podnet trace --verify`: a real packet of the query's 5-tuple, sent from SRC's namespace and
// followed by the kernel's own nftables tracing, checked hop by hop against the explanation.
//
// In every namespace on the explained path (and the destination's, when the path breaks before
// it) podnet adds tables of its own, `inet podnet-trace-<random>` and `bridge podnet-trace-<random>`,
// with base chains at every hook (priority raw - 1). The prerouting and output chains set
// `meta nftrace set 1` for exactly this flow: the packet as the hop says it is there and as the
// previous hop had it (a DNAT here comes after the mark; the 5-tuple with ports where the packet
// still has the query's addresses), and in a namespace where a
// hop carries it in a tunnel the outer UDP packet (outer addresses, the tunnel's port, and the
// inner addresses read at their offsets behind the UDP + VXLAN + Ethernet headers, or right behind
// the UDP header in podnet-tund's datagrams). The mark has to
// be set again in each namespace: the kernel clears it when a packet crosses a veth into another
// namespace and when it is encapsulated. The other chains only make the kernel report the packet at
// their hook, with the devices it came in on (prerouting, input, forward) and leaves on (forward,
// output, postrouting); bridge chains see the ports of a bridge, inet chains the IP layer's devices;
// one more inet postrouting chain after source NAT shows the packet as it leaves (translated?).
//
// Events are read by `nft monitor` (ruleset and trace events) started in each namespace before its
// tables exist. Ready means subscribed: the monitor's netlink socket has joined the trace group
// (NFNLGRP_NFTRACE), read from /proc/PID/net/netlink by the socket's inode. After the packet is
// sent, collection ends when the explained path's last namespace saw it delivered, or after a
// window; then a barrier: a chain added to each table, whose notification the monitor prints only
// after every trace event queued before it on the same socket.
//
// Cleanup is unconditional: monitors and the sender stopped by PID and the tables deleted in a
// finally, and from SIGINT/SIGTERM handlers (and an exit handler) installed only while a verify runs.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { canonicalIP, tryParseIP } from '../util/ip.js';
import type { Hop, TraceResult, TraceVerify, VerifyHop } from './types.js';

/** Inner headers behind the outer UDP header of a VXLAN packet: UDP (8) + VXLAN (8) + Ethernet (14). */
const VXLAN_INNER_IP = 8 + 8 + 14;
/** podnet-tund's datagram: the inner IP packet right behind the UDP header */
const TUN_INNER_IP = 8;
/** NFNLGRP_NFTRACE (9): bit 8 of a netlink socket's groups; NETLINK_NETFILTER is protocol 12 */
const NFTRACE_GROUP_BIT = 1 << 8;
const NETLINK_NETFILTER = 12;
const HOOKS = ['prerouting', 'input', 'forward', 'output', 'postrouting'] as const;
type HookName = (typeof HOOKS)[number];
const IN_HOOKS: HookName[] = ['prerouting', 'input', 'forward'];
const OUT_HOOKS: HookName[] = ['forward', 'output', 'postrouting'];

export interface VerifyOptions {
  /** how long to wait for the packet to reach the explained path's end (ms); default 1500 */
  windowMs?: number;
  /** namespaces off the explained path to watch too (the destination's, when the path breaks before it) */
  watch?: string[];
}

/** The packet as one hop has it: its addresses, and the outer header when it is in a tunnel. */
interface Variant {
  src: string;
  dst: string;
  /** innerAt: bytes from the outer transport header to the inner IP header (VXLAN or podnet-tund's) */
  outer?: { src: string; dst: string; dport: number; innerAt: number };
  /** the inner addresses (for the outer packet's payload match) */
  inner?: { src: string; dst: string };
}

/** One packet line of the trace: the packet at one chain, and the verdicts it got there. */
export interface Sighting {
  family: string;
  table: string;
  chain: string;
  /** the hook, for the chains of podnet's own trace table */
  hook?: HookName;
  /** podnet's last postrouting chain (after source NAT): the packet as it leaves */
  late?: boolean;
  iif?: string;
  oif?: string;
  src?: string;
  dst?: string;
  l4?: string;
  sport?: number;
  dport?: number;
  /** verdicts in order (continue, accept, drop, jump ..., return) and the rule that gave each */
  verdicts: { verdict: string; rule?: string }[];
}

/** Parses `nft monitor` output lines into sightings; the hook is known for the chains of table `own`. */
export function parseTraceLines(lines: string[], own: string): Sighting[] {
  const out: Sighting[] = [];
  const last = new Map<string, Sighting>();
  for (const line of lines) {
    const m = /^trace id (\S+) (\S+) (\S+) (\S+) (.*)$/.exec(line.trimEnd());
    if (!m) continue;
    const [, id, family, table, chain, rest] = m;
    const key = `${id} ${family} ${table} ${chain}`;
    if (rest.startsWith('packet:')) {
      const f = (re: RegExp) => re.exec(rest)?.[1];
      const late = table === own && chain === 'h_postrouting_late';
      const hook = late ? 'postrouting' : table === own ? HOOKS.find((h) => chain === `h_${h}`) : undefined;
      const s: Sighting = { family, table, chain, ...(hook ? { hook } : {}), ...(late ? { late } : {}), verdicts: [] };
      const iif = f(/\biif "([^"]+)"/);
      const oif = f(/\boif "([^"]+)"/);
      const src = f(/\bip6? saddr (\S+)/);
      const dst = f(/\bip6? daddr (\S+)/);
      const l4 = f(/\b(tcp|udp|icmp|icmpv6) (?:sport|type)\b/);
      const sport = f(/\b(?:tcp|udp) sport (\d+)/);
      const dport = f(/\b(?:tcp|udp) dport (\d+)/);
      if (iif) s.iif = iif;
      if (oif) s.oif = oif;
      if (src) s.src = canonicalIP(src) ?? src;
      if (dst) s.dst = canonicalIP(dst) ?? dst;
      if (l4) s.l4 = l4;
      if (sport) s.sport = Number(sport);
      if (dport) s.dport = Number(dport);
      out.push(s);
      last.set(key, s);
      continue;
    }
    const s = last.get(key);
    if (!s) continue;
    const rule = /^(?:rule (.*)|unknown rule handle (\d+)) \(verdict ([^)]+)\)$/.exec(rest.trim());
    if (rule) {
      s.verdicts.push({ verdict: rule[3], rule: rule[1] ?? `handle ${rule[2]}` });
      continue;
    }
    const pol = /^(policy|verdict) (\S+)/.exec(rest.trim());
    if (pol) s.verdicts.push({ verdict: pol[2], ...(pol[1] === 'policy' ? { rule: 'policy' } : {}) });
  }
  return out;
}

const same = (a: string | undefined, b: string) => a !== undefined && (canonicalIP(a) ?? a) === (canonicalIP(b) ?? b);

function variantOf(h: Hop): Variant {
  const p = h.packet;
  return p.outer
    ? { src: p.outer.src, dst: p.outer.dst, outer: { src: p.outer.src, dst: p.outer.dst, dport: p.outer.dport, innerAt: p.outer.vni !== undefined ? VXLAN_INNER_IP : TUN_INNER_IP }, inner: { src: p.src, dst: p.dst } }
    : { src: p.src, dst: p.dst };
}

function matches(s: Sighting, v: Variant): boolean {
  if (!same(s.src, v.src) || !same(s.dst, v.dst)) return false;
  return v.outer ? s.l4 === 'udp' && s.dport === v.outer.dport : true;
}

const hexAddr = (ip: string): string => {
  const a = tryParseIP(ip);
  if (!a) throw new Error(`not an address: ${ip}`);
  return `0x${a.value.toString(16).padStart(a.family === 4 ? 8 : 32, '0')}`;
};

/** The nft match (without the statement) for one variant of the packet in a namespace. */
export function flowMatch(v: Variant, q: TraceResult['query']): string {
  const l3 = v.src.includes(':') ? 'ip6' : 'ip';
  const addrs = `${l3} saddr ${v.src} ${l3} daddr ${v.dst}`;
  if (v.outer) {
    // the encapsulated packet: outer addresses and the tunnel's port, and our inner packet inside
    const inner = v.inner!;
    const bits = inner.src.includes(':') ? 128 : 32;
    const at = (v.outer.innerAt + (bits === 32 ? 12 : 8)) * 8;
    return `${addrs} udp dport ${v.outer.dport} @th,${at},${bits} ${hexAddr(inner.src)} @th,${at + bits},${bits} ${hexAddr(inner.dst)}`;
  }
  if (q.proto === 'icmp') return `${addrs} ${l3 === 'ip' ? 'icmp' : 'icmpv6'} type echo-request`;
  // ports where the packet still has the query's addresses (a NAT may have changed them)
  const sport = same(v.src, q.src) && q.sport !== undefined ? ` ${q.proto} sport ${q.sport}` : '';
  const dport = same(v.dst, q.dst) && q.dport !== undefined ? ` ${q.proto} dport ${q.dport}` : '';
  return `${addrs} meta l4proto ${q.proto}${sport}${dport}`;
}

/** The ruleset of one namespace's trace tables (inet and bridge, both named `name`). */
export function traceRuleset(name: string, variants: Variant[], q: TraceResult['query']): string {
  const marks = [...new Set(variants.map((v) => flowMatch(v, q)))].map((m) => `    ${m} meta nftrace set 1`);
  const chain = (hook: string, mark: boolean) => [`  chain h_${hook} {`, `    type filter hook ${hook} priority -301; policy accept;`, ...(mark ? marks : []), '  }'];
  // inet: one more postrouting chain after source NAT (srcnat = 100), where the packet is as it leaves
  const late = ['  chain h_postrouting_late {', '    type filter hook postrouting priority 500; policy accept;', '  }'];
  const table = (family: string) => [`table ${family} ${name} {`, ...HOOKS.flatMap((h) => chain(h, h === 'prerouting' || h === 'output')), ...(family === 'inet' ? late : []), '}'];
  return [...table('inet'), ...table('bridge'), ''].join('\n');
}

/** A `nft monitor` in one namespace: its lines as they come, waiters on them. */
class Monitor {
  readonly lines: string[] = [];
  stderr = '';
  exited: number | null | undefined = undefined;
  private waiters: { pred: (l: string) => boolean; resolve: () => void }[] = [];
  constructor(
    readonly ns: string,
    readonly proc: ChildProcess,
  ) {
    createInterface({ input: proc.stdout! }).on('line', (l) => {
      this.lines.push(l);
      this.waiters = this.waiters.filter((w) => {
        if (!w.pred(l)) return true;
        w.resolve();
        return false;
      });
    });
    proc.stderr!.on('data', (b: Buffer) => (this.stderr += b.toString()));
    proc.on('exit', (code) => (this.exited = code));
    proc.on('error', (e) => ((this.stderr += e.message), (this.exited = null)));
  }

  /** Resolves true when a line (already printed or to come) satisfies pred, false at the deadline. */
  waitLine(pred: (l: string) => boolean, ms: number): Promise<boolean> {
    if (this.lines.some(pred)) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        resolve(false);
      }, ms);
      timer.unref();
      const waiter = { pred, resolve: () => (clearTimeout(timer), resolve(true)) };
      this.waiters.push(waiter);
    });
  }
}

/** Whether process `pid` holds a NETLINK_NETFILTER socket that has joined the nftables trace group. */
export function subscribedToTrace(pid: number): boolean {
  let inodes: Set<string>;
  let table: string;
  try {
    inodes = new Set(
      readdirSync(`/proc/${pid}/fd`)
        .map((fd) => {
          try {
            return /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1];
          } catch {
            return undefined;
          }
        })
        .filter((x): x is string => x !== undefined),
    );
    table = readFileSync(`/proc/${pid}/net/netlink`, 'utf8');
  } catch {
    return false;
  }
  // sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
  return table
    .split('\n')
    .slice(1)
    .some((row) => {
      const c = row.trim().split(/\s+/);
      return c.length >= 10 && Number(c[1]) === NETLINK_NETFILTER && (parseInt(c[3], 16) & NFTRACE_GROUP_BIT) !== 0 && inodes.has(c[9]);
    });
}

/** Sends one packet of the flow (a datagram, a SYN from the fixed source port) and resets the connection. */
const SENDER = `
const [proto, src, sport, dst, dport] = process.argv.slice(1);
const fail = (m) => { process.stderr.write(m + '\\n'); process.exit(1); };
if (proto === 'tcp') {
  const c = require('node:net').connect({ host: dst, port: Number(dport), localAddress: src, localPort: Number(sport) });
  c.on('connect', () => { c.resetAndDestroy(); process.exit(0); });
  c.on('error', (e) => fail(e.message));
} else {
  const s = require('node:dgram').createSocket(dst.includes(':') ? 'udp6' : 'udp4');
  s.on('error', (e) => fail(e.message));
  s.bind({ address: src, port: Number(sport) }, () => s.send('podnet trace --verify', Number(dport), dst, (e) => (e ? fail(e.message) : process.exit(0))));
}
`;

function senderArgv(q: TraceResult['query']): string[] {
  const exec = ['ip', 'netns', 'exec', q.fromNs];
  if (q.proto === 'icmp') {
    // the query's size as the IP packet, DF set (as the walk checks it against each MTU)
    const payload = Math.max(0, q.size - (q.dst.includes(':') ? 48 : 28));
    return [...exec, 'ping', '-n', '-c1', '-W1', '-M', 'do', '-s', String(payload), '-I', q.src, q.dst];
  }
  return [...exec, process.execPath, '-e', SENDER, q.proto, q.src, String(q.sport ?? 40000), q.dst, String(q.dport ?? 80)];
}

/** Links of a namespace by name with their bridge (master), to relate a bridge port to the bridge's IP layer. */
const mastersMemo = new Map<string, Map<string, string | undefined>>();
function masters(ns: string): Map<string, string | undefined> {
  const hit = mastersMemo.get(ns);
  if (hit) return hit;
  const r = spawnSync('ip', ['-j', '-n', ns, 'link', 'show'], { encoding: 'utf8' });
  const m = new Map<string, string | undefined>();
  if (r.status !== 0) return m;
  for (const l of JSON.parse(r.stdout || '[]') as { ifname: string; master?: string }[]) m.set(l.ifname, l.master);
  mastersMemo.set(ns, m);
  return m;
}

/** The namespace among `candidates` that has `addr` as one of its addresses. */
export function destinationNamespace(addr: string, candidates: string[]): string | undefined {
  for (const ns of candidates) {
    const r = spawnSync('ip', ['-j', '-n', ns, 'addr', 'show'], { encoding: 'utf8' });
    if (r.status !== 0) continue;
    const infos = (JSON.parse(r.stdout || '[]') as { addr_info?: { local?: string }[] }[]).flatMap((x) => x.addr_info ?? []);
    if (infos.some((a) => a.local !== undefined && same(a.local, addr))) return ns;
  }
  return undefined;
}

/** `nft ARGS` in a namespace (input on stdin), as its exit code and stderr. */
function nft(ns: string, args: string[], track: ChildProcess[], input?: string): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn('ip', ['netns', 'exec', ns, 'nft', ...args], { stdio: [input === undefined ? 'ignore' : 'pipe', 'ignore', 'pipe'] });
    // tracked: an add still running when the verify is interrupted is stopped before the tables are deleted
    track.push(p);
    let stderr = '';
    p.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
    p.on('error', (e) => resolve({ code: null, stderr: e.message }));
    p.on('close', (code) => resolve({ code, stderr }));
    if (p.stdin) {
      p.stdin.on('error', () => undefined); // nft gone before reading: its exit code and stderr say why
      p.stdin.end(input);
    }
  });
}

/** Whether a process still runs (not gone, not a zombie); a child that exited is a zombie until reaped. */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** What podnet made for one verify: undone in every case (finally, signal, exit). */
class Leftovers {
  readonly tables: { ns: string; family: string; name: string }[] = [];
  readonly procs: ChildProcess[] = [];

  /** Synchronous, so that it also runs from a signal or exit handler; idempotent. */
  undo(): void {
    for (const p of this.procs) {
      if (p.pid !== undefined && p.exitCode === null && p.signalCode === null) {
        try {
          process.kill(p.pid, 'SIGTERM');
        } catch {
          // already gone
        }
      }
    }
    // until each stopped process has terminated (a zombie, or reaped), up to 2 s: also when the
    // process exits right after this (from a signal handler), nothing it started still runs, and
    // no table add still in flight can land after the tables are deleted
    const until = Date.now() + 2000;
    const sleep = new Int32Array(new SharedArrayBuffer(4));
    for (const p of this.procs) {
      while (p.pid !== undefined && p.exitCode === null && p.signalCode === null && running(p.pid) && Date.now() < until) Atomics.wait(sleep, 0, 0, 5);
    }
    // one transaction per namespace (its tables were added in one); table by table when that fails
    for (const ns of new Set(this.tables.map((t) => t.ns))) {
      const ts = this.tables.filter((t) => t.ns === ns);
      const all = spawnSync('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], { input: ts.map((t) => `delete table ${t.family} ${t.name}\n`).join(''), stdio: ['pipe', 'ignore', 'ignore'] });
      if (all.status !== 0) for (const t of ts) spawnSync('ip', ['netns', 'exec', ns, 'nft', 'delete', 'table', t.family, t.name], { stdio: 'ignore' });
    }
  }
}

const hooksOf = (ss: Sighting[], hooks: HookName[]) => ss.filter((s) => s.hook && hooks.includes(s.hook));
const uniq = (xs: (string | undefined)[]) => [...new Set(xs.filter((x): x is string => x !== undefined))];

function dropOf(ss: Sighting[]): string | undefined {
  for (const s of ss) {
    const d = s.verdicts.find((v) => v.verdict === 'drop');
    if (d) return `${s.family} ${s.table} chain ${s.chain}${d.rule && d.rule !== 'policy' ? `, rule ${d.rule}` : ' (policy drop)'}`;
  }
  return undefined;
}

/** The kernel's view of one hop against the explanation. */
function judge(
  h: Hop,
  i: number,
  r: TraceResult,
  ss: Sighting[],
  links: Map<string, string | undefined>,
  reached: boolean,
  sender: { failed: boolean; err: string },
  translated: Sighting[],
): VerifyHop {
  const base = { hop: i, ns: h.ns };
  const broken = r.verdict === 'broken' && r.broken?.hop === i;
  const q = r.query;
  if (broken && q.proto !== 'icmp' && h.steps[r.broken!.step]?.kind === 'mtu') {
    // a real TCP connection or UDP socket never sends such a packet: MSS and fragmentation fit it
    return { ...base, seen: ss.length > 0, agrees: false, detail: `not verified: the kernel fits ${q.proto} to the MTU (${q.proto === 'tcp' ? 'the SYN is small, segments follow the MSS' : 'it fragments the datagram'}); --proto icmp sends a ${q.size}-byte packet with DF` };
  }
  if (ss.length === 0) {
    if (i === 0 && sender.failed) {
      const lines = sender.err.split('\n').map((l) => l.trim()).filter(Boolean);
      const why = lines.find((l) => /error/i.test(l)) ?? lines.pop() ?? 'the sender failed';
      return { ...base, seen: false, agrees: broken, detail: broken ? `kernel agrees: it refused to send the packet (${why})` : `kernel refused to send the packet instead (${why})` };
    }
    // a frame a macvlan sends out of its parent, or one the parent hands to a macvlan child, crosses
    // the parent's namespace below every hook (no IP layer, no bridge): nothing there can see it,
    // and the next hop's sighting speaks for it
    const l2only = h.steps.length > 0 && h.steps.every((x) => x.kind === 'veth' || x.kind === 'macvlan');
    if (!broken && l2only && (h.steps.some((x) => x.kind === 'macvlan') || r.hops[i - 1]?.steps.some((x) => x.kind === 'macvlan'))) {
      return { ...base, seen: false, agrees: true, detail: 'not observable: a macvlan frame passes its parent here below every netfilter hook (the next hop sees it)' };
    }
    return { ...base, seen: false, agrees: false, detail: 'kernel did not see the packet here' };
  }
  const ins = uniq(hooksOf(ss, IN_HOOKS).map((s) => s.iif));
  const outs = uniq(hooksOf(ss, OUT_HOOKS).map((s) => s.oif));
  // inet input is local delivery; a bridge's input hook only passes the frame up to the bridge's IP layer
  const delivered = hooksOf(ss, ['input']).some((s) => s.family !== 'bridge');
  const drop = dropOf(ss);
  // a bridge port and its bridge are the same place: the bridge family sees the port, the IP layer the bridge
  const eq = (a: string, b: string) => a === b || links.get(a) === b || links.get(b) === a;
  const saw = [ins.length ? `in on ${ins.join(', ')}` : 'sent here', ...(outs.length ? [`out ${outs.join(', ')}`] : []), ...(delivered ? ['delivered locally'] : [])].join(', ');
  if (broken) {
    if (reached) return { ...base, seen: true, agrees: false, detail: `kernel saw it ${saw} and delivered at the destination instead: the path does not break here` };
    return { ...base, seen: true, agrees: true, detail: `kernel agrees: seen ${saw}${drop ? `; dropped by ${drop}` : ''}; not delivered beyond` };
  }
  const wrong: string[] = [];
  if (h.in === undefined && ins.length) wrong.push(`come in on ${ins.join(', ')} instead of being sent here`);
  if (h.in !== undefined && !ins.some((d) => eq(d, h.in!))) wrong.push(ins.length ? `come in on ${ins.join(', ')} instead of ${h.in}` : `sent here instead of coming in on ${h.in}`);
  const last = h.steps.at(-1)?.kind;
  if (h.out !== undefined && !outs.some((d) => eq(d, h.out!))) wrong.push(outs.length ? `leave on ${outs.join(', ')} instead of ${h.out}` : `${delivered ? 'delivered here' : 'leave on no device'} instead of leaving on ${h.out}`);
  if (h.out === undefined && (last === 'deliver' || last === 'decap') && !delivered) wrong.push(outs.length ? `forwarded out ${outs.join(', ')} instead of delivered here` : 'pass no input hook here instead of being delivered');
  // the packet left as no hop of the explanation has it: translated (NAT) on the way out
  const ep = (a: string | undefined, port: number | undefined) => (port !== undefined ? `${a?.includes(':') ? `[${a}]` : a}:${port}` : `${a}`);
  const as = uniq(translated.filter((t) => h.out !== undefined && t.oif !== undefined && eq(t.oif, h.out)).map((t) => `${ep(t.src, t.sport)} -> ${ep(t.dst, t.dport)}`));
  const expected = `${ep(h.packet.src, same(h.packet.src, q.src) ? q.sport : undefined)} -> ${ep(h.packet.dst, same(h.packet.dst, q.dst) ? q.dport : undefined)}`;
  if (as.length) wrong.push(`leave on ${h.out} as ${as.join(', ')} (translated) instead of ${expected}`);
  if (drop) wrong.push(`dropped by ${drop} instead of passed on`);
  if (wrong.length) return { ...base, seen: true, agrees: false, detail: `kernel saw it ${wrong.join('; ')}` };
  return { ...base, seen: true, agrees: true, detail: `kernel agrees: seen ${saw}` };
}

/**
 * Sends the real packet and compares. Everything it adds is removed before it returns or throws,
 * and when the process gets SIGINT or SIGTERM meanwhile (it then exits 130 / 143).
 */
export async function verifyTrace(r: TraceResult, o: VerifyOptions = {}): Promise<TraceVerify> {
  const q = r.query;
  const windowMs = o.windowMs ?? 1500;
  const name = `podnet-trace-${randomBytes(4).toString('hex')}`;
  const pathNs = [...new Set(r.hops.map((h) => h.ns))];
  const beyond = (o.watch ?? []).filter((ns) => !pathNs.includes(ns));
  const all = [...pathNs, ...beyond];
  // the variants of the packet per namespace: each hop's there, and the query's for a watched namespace
  const variants = new Map<string, Variant[]>(all.map((ns) => [ns, []]));
  // the packet as it arrives from another namespace is marked too: a DNAT here (the hop already
  // has the translated header) happens after the prerouting mark
  r.hops.forEach((h, i) => {
    variants.get(h.ns)!.push(variantOf(h));
    const prev = r.hops[i - 1];
    if (prev && prev.ns !== h.ns) variants.get(h.ns)!.push(variantOf(prev));
  });
  for (const ns of beyond) variants.get(ns)!.push({ src: q.src, dst: q.dst });
  if (!variants.get(q.fromNs)) throw new Error(`the explained path does not start in ${q.fromNs}`);

  const left = new Leftovers();
  const onSignal = (sig: NodeJS.Signals) => {
    left.undo();
    process.stderr.write(`podnet trace: ${sig}: --verify stopped, its tables and monitors removed\n`);
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  const onExit = () => left.undo();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', onExit);
  const monitors: Monitor[] = [];
  let sender: ChildProcess | undefined;
  const senderState = { failed: false, err: '' };
  try {
    for (const ns of all) {
      const p = spawn('ip', ['netns', 'exec', ns, 'nft', 'monitor'], { stdio: ['ignore', 'pipe', 'pipe'] });
      left.procs.push(p);
      monitors.push(new Monitor(ns, p));
    }
    // ready: each monitor's socket has joined the trace group (before any table exists to trace)
    const deadline = Date.now() + 5000;
    for (const m of monitors) {
      while (!subscribedToTrace(m.proc.pid!)) {
        if (m.exited !== undefined) throw new Error(`nft monitor in ${m.ns} exited (${m.exited}): ${m.stderr.trim()}`);
        if (Date.now() > deadline) throw new Error(`nft monitor in ${m.ns} did not subscribe to trace events within 5 s`);
        await new Promise((res) => setTimeout(res, 5));
      }
    }
    for (const ns of all) for (const family of ['inet', 'bridge']) left.tables.push({ ns, family, name });
    const added = await Promise.all(all.map((ns) => nft(ns, ['-f', '-'], left.procs, traceRuleset(name, variants.get(ns)!, q))));
    const failed = added.findIndex((a) => a.code !== 0);
    if (failed >= 0) throw new Error(`adding the trace table in ${all[failed]}: ${added[failed].stderr.trim()}`);

    // the packet; collection ends when the path's last namespace saw it delivered, or after the window
    const argv = senderArgv(q);
    sender = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    left.procs.push(sender);
    // why it could not send: ping's "local error: message too long" (stderr), node's error
    sender.stdout!.on('data', (b: Buffer) => (senderState.err += b.toString()));
    sender.stderr!.on('data', (b: Buffer) => (senderState.err += b.toString()));
    sender.on('error', (e) => (senderState.err += e.message));
    // a sender that fails has nothing more to send: what the kernel did with it is queued already
    const senderFailed = new Promise<boolean>((res) => sender!.on('exit', (code) => (code !== 0 ? ((senderState.failed = true), res(true)) : undefined)));
    const endHop = r.hops.at(-1)!;
    const endNs = beyond.length ? beyond[0] : endHop.ns;
    const endVariant: Variant = beyond.length ? { src: q.src, dst: q.dst } : variantOf(endHop);
    const endMon = monitors.find((m) => m.ns === endNs)!;
    const isDelivery = (s: Sighting) => s.family !== 'bridge' && s.hook === 'input' && matches(s, endVariant);
    const arrived = (l: string) => l.startsWith('trace id ') && l.includes(` ${name} h_input packet:`) && parseTraceLines([l], name).some(isDelivery);
    await Promise.race([endMon.waitLine(arrived, windowMs), senderFailed]);

    // barrier: a ruleset change each monitor prints only after every trace event before it
    await Promise.all(all.map((ns) => nft(ns, ['add', 'chain', 'inet', name, 'barrier'], left.procs)));
    const flushed = await Promise.all(monitors.map((m) => m.waitLine((l) => l.startsWith(`add chain inet ${name} barrier`), 3000)));
    const late = monitors.filter((_, k) => !flushed[k]).map((m) => m.ns);
    if (late.length) throw new Error(`nft monitor in ${late.join(', ')} did not print the barrier within 3 s`);

    const sightings = new Map(monitors.map((m) => [m.ns, parseTraceLines(m.lines, name)]));
    // delivered at the destination: the watched one, or the path's end when the path is complete
    // (a broken path's last hop is where it breaks, not the destination)
    const endDelivered = (sightings.get(endNs) ?? []).some(isDelivery);
    const destReached = (beyond.length > 0 || r.verdict === 'complete') && endDelivered;
    const hops = r.hops.map((h, i) => {
      // the packet may arrive as the previous hop had it, and leave as the next one has it (NAT here)
      const next = r.hops[i + 1];
      const prev = r.hops[i - 1];
      const vs = [variantOf(h), ...(prev && prev.ns !== h.ns ? [variantOf(prev)] : []), ...(next && next.ns !== h.ns ? [variantOf(next)] : [])];
      const all = sightings.get(h.ns) ?? [];
      const ss = all.filter((s) => vs.some((v) => matches(s, v)));
      const known = variants.get(h.ns)!.concat(next ? [variantOf(next)] : []);
      // a translated packet keeps its protocol; a packet line without one is one nft decoded by a
      // stale link-layer header (an encapsulated packet after routing: the inner frame's EtherType)
      const l4 = q.proto === 'icmp' ? (q.dst.includes(':') ? 'icmpv6' : 'icmp') : q.proto;
      // or, after source NAT (the last postrouting chain), the query's source with another source port
      // (a NAT clash with a conntrack entry of the same tuple): the next namespaces' marks match the query's port
      const portMoved = (s: Sighting) => s.late === true && q.proto !== 'icmp' && same(s.src, q.src) && s.sport !== undefined && s.sport !== q.sport;
      const translated = all.filter((s) => s.family === 'inet' && s.hook && OUT_HOOKS.includes(s.hook) && s.src && s.dst && s.l4 === l4 && (!known.some((v) => matches(s, v)) || portMoved(s)));
      return judge(h, i, r, ss, masters(h.ns), destReached, senderState, translated);
    });
    // where the kernel lost it: the first hop not seen after one that was
    const lost = hops.findIndex((h, i) => !h.seen && i > 0 && hops[i - 1].seen);
    if (lost > 0) hops[lost].detail += ` (last seen at hop ${lost}, ${hops[lost - 1].ns})`;
    const others = beyond.map((ns) => {
      const ss = (sightings.get(ns) ?? []).filter((s) => matches(s, { src: q.src, dst: q.dst }));
      const delivered = ss.some((s) => s.family !== 'bridge' && s.hook === 'input');
      return { ns, seen: ss.length > 0, detail: ss.length === 0 ? 'kernel did not see the packet here (the destination)' : `kernel saw it here (the destination)${delivered ? ', delivered' : ''}` };
    });
    const agrees = hops.every((h) => h.agrees) && others.every((x) => r.verdict === 'complete' || !x.seen);
    return { agrees, hops, ...(others.length ? { beyond: others } : {}) };
  } finally {
    left.undo();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('exit', onExit);
    // wait for what was stopped, so that no monitor outlives the verify
    await Promise.all(left.procs.map((p) => (p.exitCode !== null || p.signalCode !== null ? undefined : new Promise((res) => p.once('exit', res)))));
  }
}
