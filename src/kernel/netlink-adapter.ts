// KernelAdapter that serves the CNI hot path in-process through rtnetlink (koffi → libc), so an ADD
// costs a few request/ack round trips instead of several `ip` process spawns. Whatever it does not
// implement (vxlan/tun creation, neighbours, fdb, netns moves, route/link dumps, sysctl in other
// namespaces, link-kind probes) goes to the iproute2 adapter it wraps, with identical semantics.
//
// Every netlink call is synchronous: a request is sent and its answer read (bounded by the socket's
// receive timeout) without yielding to the event loop, which is also what makes entering another
// netns with setns safe — nothing else runs on the JS thread until it is back in its own netns.
import { closeSync, openSync, statSync } from 'node:fs';
import type { Address, FdbEntry, KernelAdapter, KernelOp, Link, LinkKind, LinkSpec, Neighbour, NetnsRef, Route, RouteSpec } from './types.js';
import { KernelError, type KernelErrorKind, classifyKernelMessage } from './exec.js';
import { describeNetns, netnsFile, validateIfName, validateNetns } from './netns.js';
import { defaultRenderContext, describeOp, ipFamily, isMissingFailure, renderOp } from './render.js';
import type { Iproute2Adapter } from './iproute2.js';
import * as C from './netlink/constants.js';
import * as M from './netlink/message.js';
import { NetlinkError, RtNetlink, originalNetnsFd, strerror } from './netlink/socket.js';
import { errnoName as nlErrnoName } from './netlink/message.js';

export interface NetlinkAdapterOptions {
  /** sockets kept open for namespaces other than the caller's own (least recently used ones are closed) */
  maxNetnsSockets?: number;
  /**
   * A socket holds a reference on its netns: kept open, it would keep a pod's deleted netns (and the
   * veth peer inside it) alive. Sockets of other namespaces are therefore closed after this idle time.
   */
  netnsSocketIdleMs?: number;
}

const E = { ENOENT: 2, ESRCH: 3, EEXIST: 17, ENODEV: 19, EINVAL: 22, ERANGE: 34, EBUSY: 16, EOPNOTSUPP: 95, EAFNOSUPPORT: 97, EPROTONOSUPPORT: 93, EADDRNOTAVAIL: 99 };

/** errno → KernelErrorKind, the same classes the iproute2 adapter derives from the messages. */
export function classifyErrno(errno: number, text = ''): KernelErrorKind {
  switch (errno) {
    case E.EEXIST:
      return 'exists';
    case E.ENODEV:
    case E.ENOENT:
    case E.ESRCH:
    case E.EADDRNOTAVAIL:
      return 'not-found';
    case E.EBUSY:
      return 'busy';
    case E.EOPNOTSUPP:
    case E.EAFNOSUPPORT:
    case E.EPROTONOSUPPORT:
      return 'unsupported';
    case E.EINVAL:
    case E.ERANGE:
      return 'invalid';
    default:
      return classifyKernelMessage(text);
  }
}

/** A failed netlink request (or a name lookup before it), before it is attributed to an op. */
class NlFail extends Error {
  constructor(
    readonly argv: string[],
    readonly errno: number,
    readonly detail: string,
  ) {
    super(detail);
  }
}

/** The kernel's answer in words: its extended ack when it gave one, and always the errno. */
function kernelDetail(errno: number, extMsg?: string): string {
  const base = `RTNETLINK answers: ${strerror(errno)} (${nlErrnoName(errno)})`;
  return extMsg ? `Error: ${extMsg}; ${base}` : base;
}

interface NsSocket {
  key: string;
  file: string;
  sock: RtNetlink;
  lastUse: number;
}

const SCOPES: Record<string, number> = { global: C.RT_SCOPE_UNIVERSE, link: C.RT_SCOPE_LINK, host: C.RT_SCOPE_HOST };

export class NetlinkAdapter implements KernelAdapter {
  readonly backend = 'netlink' as const;
  private current: RtNetlink | undefined;
  private selfId: string | undefined;
  /** other namespaces' sockets by netns id (dev:ino); Map order is the LRU order (oldest first) */
  private readonly sockets = new Map<string, NsSocket>();
  private idleTimer: NodeJS.Timeout | undefined;
  private readonly maxSockets: number;
  private readonly idleMs: number;
  private readonly ctx = defaultRenderContext();
  /** netlink requests sent, for tests and benchmarks */
  requests = 0;

  constructor(
    readonly fallback: Iproute2Adapter,
    opts: NetlinkAdapterOptions = {},
  ) {
    this.maxSockets = Math.max(1, opts.maxNetnsSockets ?? 8);
    this.idleMs = Math.max(0, opts.netnsSocketIdleMs ?? 200);
  }

  /** Closes every socket (tests; a long-running agent keeps them). */
  close(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    for (const e of this.sockets.values()) e.sock.close();
    this.sockets.clear();
    this.current?.close();
    this.current = undefined;
  }

  /** Open sockets to other namespaces (tests). */
  get cachedNetnsSockets(): number {
    return this.sockets.size;
  }

  // ------------------------------------------------------------ sockets

  private currentSocket(): RtNetlink {
    return (this.current ??= RtNetlink.open());
  }

  private ownNetnsId(): string {
    if (this.selfId === undefined) {
      const st = statSync(`/proc/self/fd/${originalNetnsFd()}`);
      this.selfId = `${st.dev}:${st.ino}`;
    }
    return this.selfId;
  }

  /** The socket for ns; throws KernelError (not attributed to an op) when the netns cannot be entered. */
  private socketFor(ns: NetnsRef): RtNetlink {
    validateNetns(ns);
    if (ns.kind === 'current') return this.currentSocket();
    const file = netnsFile(ns);
    let key: string;
    try {
      const st = statSync(file);
      key = `${st.dev}:${st.ino}`;
    } catch (e) {
      // the netns is gone: so is any socket opened in it under this name
      for (const [k, v] of this.sockets) if (v.file === file) this.drop(k);
      throw netnsError(ns, e);
    }
    if (key === this.ownNetnsId()) return this.currentSocket();
    const have = this.sockets.get(key);
    if (have) {
      this.sockets.delete(key);
      this.sockets.set(key, have);
      have.lastUse = Date.now();
      this.scheduleIdle();
      return have.sock;
    }
    let sock: RtNetlink;
    try {
      sock = RtNetlink.openInNetns(file);
    } catch (e) {
      throw netnsError(ns, e);
    }
    this.sockets.set(key, { key, file, sock, lastUse: Date.now() });
    while (this.sockets.size > this.maxSockets) this.drop(this.sockets.keys().next().value as string);
    this.scheduleIdle();
    return sock;
  }

  private drop(key: string): void {
    const e = this.sockets.get(key);
    if (!e) return;
    this.sockets.delete(key);
    e.sock.close();
  }

  /** Drops the socket a request failed on at the socket level (timeout, closed): the next call opens a fresh one. */
  private dropSocket(sock: RtNetlink): void {
    if (sock === this.current) {
      this.current = undefined;
      sock.close();
      return;
    }
    for (const [k, v] of this.sockets) if (v.sock === sock) this.drop(k);
  }

  private scheduleIdle(): void {
    if (this.idleTimer || this.sockets.size === 0) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      const now = Date.now();
      for (const [k, v] of [...this.sockets]) if (now - v.lastUse >= this.idleMs) this.drop(k);
      this.scheduleIdle();
    }, this.idleMs);
    // never what keeps a process alive
    this.idleTimer.unref();
  }

  // ------------------------------------------------------------ requests

  /** One request; its reply messages (none for an ack). Kernel errors become NlFail, socket failures KernelError. */
  private send(sock: RtNetlink, argv: string[], build: (seq: number) => Buffer): M.NlMsg[] {
    this.requests++;
    try {
      return sock.transact([{ label: argv.join(' '), build }])[0];
    } catch (e) {
      if (e instanceof NetlinkError && e.op === argv.join(' ')) throw new NlFail(argv, e.errno, kernelDetail(e.errno, e.extMsg));
      // sendto/recv failed (or timed out): the socket's state is unknown, so it is not reused
      this.dropSocket(sock);
      if (e instanceof NetlinkError) throw new NlFail(argv, e.errno, `${e.message}`);
      throw e;
    }
  }

  private getLink(sock: RtNetlink, q: { name?: string; index?: number }): M.LinkInfo | undefined {
    const argv = ['netlink', 'RTM_GETLINK', q.name !== undefined ? q.name : `index ${q.index}`];
    try {
      const r = this.send(sock, argv, (s) => M.getLink(s, q));
      return r.length ? M.parseLink(r[0].data) : undefined;
    } catch (e) {
      if (e instanceof NlFail && e.errno === E.ENODEV) return undefined;
      throw e;
    }
  }

  /** ifindex of a device, failing the way iproute2 does when it is missing. */
  private index(sock: RtNetlink, name: string): number {
    const l = this.getLink(sock, { name });
    if (!l) throw new NlFail(['netlink', 'RTM_GETLINK', name], E.ENODEV, `Cannot find device "${name}"`);
    return l.index;
  }

  // ------------------------------------------------------------ reads

  async links(ns: NetnsRef): Promise<Link[]> {
    return this.fallback.links(ns);
  }

  async link(ns: NetnsRef, name: string): Promise<Link | undefined> {
    validateIfName(name);
    const sock = this.socketFor(ns);
    try {
      const l = this.getLink(sock, { name });
      return l ? this.toLink(sock, l) : undefined;
    } catch (e) {
      throw this.readError(e, `show link ${name} in ${describeNetns(ns)}`);
    }
  }

  private toLink(sock: RtNetlink, l: M.LinkInfo): Link {
    const out: Link = {
      index: l.index,
      name: l.name ?? '',
      mtu: l.mtu ?? 0,
      mac: l.mac ?? '',
      up: (l.flags & C.IFF_UP) !== 0,
      operState: C.OPERSTATES[l.operState ?? 0] ?? 'UNKNOWN',
    };
    if (l.kind) out.kind = l.kind;
    if (l.master) {
      const m = this.getLink(sock, { index: l.master });
      // iproute2 names an index it cannot resolve "if<N>"
      out.master = m?.name ?? `if${l.master}`;
    }
    if (l.link) {
      // a peer/parent in the same netns is named; one elsewhere is an index in the netns behind the nsid
      if (l.linkNetnsId !== undefined) {
        out.linkIndex = l.link;
        out.linkNetnsId = l.linkNetnsId;
      } else {
        out.link = this.getLink(sock, { index: l.link })?.name ?? `if${l.link}`;
      }
    }
    if (l.alias) out.alias = l.alias;
    out.promisc = (l.flags & C.IFF_PROMISC) !== 0;
    if (l.hairpin !== undefined) out.hairpin = l.hairpin;
    return out;
  }

  async addresses(ns: NetnsRef, dev?: string): Promise<Address[]> {
    // the whole netns' list needs every link's name as well: rare, and iproute2 does it in one spawn
    if (dev === undefined) return this.fallback.addresses(ns);
    validateIfName(dev);
    const sock = this.socketFor(ns);
    try {
      const l = this.getLink(sock, { name: dev });
      if (!l) throw new NlFail(['netlink', 'RTM_GETLINK', dev], E.ENODEV, `Device "${dev}" does not exist.`);
      const out: Address[] = [];
      for (const m of this.send(sock, ['netlink', 'RTM_GETADDR', 'dump'], (s) => M.dumpAddrs(s))) {
        if (m.type !== C.RTM_NEWADDR) continue;
        const a = M.parseAddr(m.data);
        if (a.index !== l.index || !a.address || (a.family !== C.AF_INET && a.family !== C.AF_INET6)) continue;
        out.push({ ifname: dev, family: a.family === C.AF_INET ? 4 : 6, address: a.address, prefixLen: a.prefixLen, scope: C.SCOPE_NAMES[a.scope] ?? String(a.scope) });
      }
      return out;
    } catch (e) {
      throw this.readError(e, `list addresses of ${dev} in ${describeNetns(ns)}`);
    }
  }

  private readError(e: unknown, op: string): unknown {
    if (!(e instanceof NlFail)) return e;
    return new KernelError({ argv: e.argv, exitCode: null, stderr: '', op, kind: classifyErrno(e.errno, e.detail), detail: e.detail });
  }

  routes(ns: NetnsRef, opts?: { family?: 4 | 6; table?: number | 'all'; dev?: string }): Promise<Route[]> {
    return this.fallback.routes(ns, opts);
  }

  neighbours(ns: NetnsRef, dev?: string): Promise<Neighbour[]> {
    return this.fallback.neighbours(ns, dev);
  }

  fdb(ns: NetnsRef, dev?: string): Promise<FdbEntry[]> {
    return this.fallback.fdb(ns, dev);
  }

  sysctlGet(ns: NetnsRef, key: string): Promise<string> {
    return this.fallback.sysctlGet(ns, key);
  }

  sysctlSet(ns: NetnsRef, values: Record<string, string>): Promise<void> {
    return this.fallback.sysctlSet(ns, values);
  }

  supportsLinkKind(kind: LinkKind): Promise<boolean> {
    return this.fallback.supportsLinkKind(kind);
  }

  netnsId(ns: NetnsRef): Promise<string | undefined> {
    return this.fallback.netnsId(ns);
  }

  // ------------------------------------------------------------ changes

  async apply(ns: NetnsRef, ops: KernelOp[]): Promise<void> {
    validateNetns(ns);
    if (!Array.isArray(ops)) throw new KernelError({ argv: [], exitCode: null, stderr: '', op: 'apply', kind: 'invalid', detail: 'ops must be an array' });
    // The iproute2 renderer is the validator: a plan it would refuse is refused here too, before anything is sent.
    ops.forEach((op, index) => {
      try {
        renderOp(op, this.ctx);
      } catch (e) {
        if (e instanceof KernelError) {
          throw new KernelError({ argv: [], exitCode: null, stderr: '', op: `op #${index + 1} ${e.op}`, kind: 'invalid', detail: e.detail, opIndex: index, kernelOp: op });
        }
        throw e;
      }
    });
    let i = 0;
    while (i < ops.length) {
      if (!implemented(ops[i])) {
        let end = i + 1;
        while (end < ops.length && !implemented(ops[end])) end++;
        await this.applyFallback(ns, ops, i, end);
        i = end;
        continue;
      }
      // looked up per op: a fallback run before may have changed nothing about it, but the idle timer may have closed it
      const sock = this.socketFor(ns);
      const op = ops[i];
      try {
        this.applyOne(sock, op);
      } catch (e) {
        if (!(e instanceof NlFail)) throw e;
        const kind = classifyErrno(e.errno, e.detail);
        if (!isMissingFailure(op, kind)) {
          throw new KernelError({ argv: e.argv, exitCode: null, stderr: '', op: `op #${i + 1} ${describeOp(op)} in ${describeNetns(ns)}`, kind, detail: e.detail, opIndex: i, kernelOp: op });
        }
      }
      i++;
    }
  }

  async deleteLinksTogether(ns: NetnsRef, names: string[]): Promise<void> {
    validateNetns(ns);
    for (const n of names) validateIfName(n);
    if (!names.length) return;
    const sock = this.socketFor(ns);
    // one group for this deletion (a single link too: the same path, the same wait off the loop),
    // random in [2^30, 2^31), far from the small numbers administrators name in /etc/iproute2/group
    const group = 0x40000000 + Math.floor(Math.random() * 0x3fffffff);
    let tagged = 0;
    for (const name of names) {
      try {
        this.send(sock, ['netlink', 'RTM_NEWLINK', name, 'group', String(group)], (s) => M.setLinkGroup(s, { name, group }));
        tagged++;
      } catch (e) {
        if (!(e instanceof NlFail) || e.errno !== E.ENODEV) throw e;
      }
    }
    if (!tagged) return;
    // the deletion waits in the kernel for RCU grace periods: on a socket of its own whose wait
    // runs on the thread pool, so the event loop serves other requests meanwhile
    let own: RtNetlink;
    try {
      own = ns.kind === 'current' ? RtNetlink.open() : RtNetlink.openInNetns(netnsFile(ns));
    } catch (e) {
      throw netnsError(ns, e);
    }
    const argv = ['netlink', 'RTM_DELLINK', 'group', String(group)];
    this.requests++;
    try {
      await own.transactAsync([{ label: argv.join(' '), build: (s) => M.delLinkGroup(s, group) }]);
    } catch (e) {
      if (!(e instanceof NetlinkError)) throw e;
      // one by one, then (the group delete refuses a group with a link it cannot delete)
      await this.apply(ns, names.map((name) => ({ op: 'link-del', name, ignoreMissing: true }) as KernelOp));
    } finally {
      own.close();
    }
  }

  /** ops[start..end) through iproute2 in one batch; its errors renumbered to this plan's op indexes. */
  private async applyFallback(ns: NetnsRef, ops: KernelOp[], start: number, end: number): Promise<void> {
    try {
      await this.fallback.apply(ns, ops.slice(start, end));
    } catch (e) {
      if (!(e instanceof KernelError) || start === 0) throw e;
      const renumber = (s: string): string => s.replace(/op(s?) #(\d+)(\.\.#(\d+))?/, (_m, pl: string, a: string, _r: string, b?: string) => `op${pl} #${Number(a) + start}${b ? `..#${Number(b) + start}` : ''}`);
      throw new KernelError({
        argv: e.argv,
        exitCode: e.exitCode,
        stderr: e.stderr,
        op: renumber(e.op),
        kind: e.kind,
        detail: e.detail,
        ...(e.opIndex !== undefined ? { opIndex: e.opIndex + start } : {}),
        ...(e.kernelOp !== undefined ? { kernelOp: e.kernelOp } : {}),
      });
    }
  }

  private applyOne(sock: RtNetlink, op: KernelOp): void {
    switch (op.op) {
      case 'link-add':
        return this.linkAdd(sock, op.spec);
      case 'link-del': {
        this.send(sock, ['netlink', 'RTM_DELLINK', op.name], (s) => M.delLink(s, { name: op.name }));
        return;
      }
      case 'link-set':
        return this.linkSet(sock, op as Extract<KernelOp, { op: 'link-set' }>);
      case 'addr-add':
      case 'addr-del': {
        const index = this.index(sock, op.dev);
        const [address, plen] = op.cidr.split('/');
        const v4 = ipFamily(address) === 4;
        const prefixLen = plen === undefined ? (v4 ? 32 : 128) : Number(plen);
        const type = op.op === 'addr-add' ? C.RTM_NEWADDR : C.RTM_DELADDR;
        let flags = 0;
        let scope = C.RT_SCOPE_UNIVERSE;
        let replace = false;
        if (op.op === 'addr-add') {
          // as `ip addr add`: nodad is only meaningful (and only rendered) for IPv6; 127/8 gets host scope
          if (op.nodad && !v4) flags |= C.IFA_F_NODAD;
          if (op.noprefixroute) flags |= C.IFA_F_NOPREFIXROUTE;
          if (v4 && address.startsWith('127.')) scope = C.RT_SCOPE_HOST;
          replace = !!op.replace;
        }
        this.send(sock, ['netlink', C.RTM_NAMES[type], op.cidr, 'dev', op.dev], (s) => M.addrMsg(s, type, { index, address, prefixLen, scope, flags, replace }));
        return;
      }
      case 'route-add':
      case 'route-del': {
        const del = op.op === 'route-del';
        const req = this.routeReq(sock, op.route, del);
        if (!del) req.replace = !!op.replace;
        const type = del ? C.RTM_DELROUTE : C.RTM_NEWROUTE;
        this.send(sock, ['netlink', C.RTM_NAMES[type], JSON.stringify(op.route)], (s) => M.routeMsg(s, type, req));
        return;
      }
      case 'neigh-replace':
      case 'neigh-del': {
        const index = this.index(sock, op.dev);
        const family = ipFamily(op.dst) === 6 ? C.AF_INET6 : C.AF_INET;
        const del = op.op === 'neigh-del';
        const type = del ? C.RTM_DELNEIGH : C.RTM_NEWNEIGH;
        const lladdr = op.op === 'neigh-replace' ? op.lladdr : undefined;
        this.send(sock, ['netlink', C.RTM_NAMES[type], op.dst, 'dev', op.dev], (s) => M.neighMsg(s, type, { family, index, dst: op.dst, lladdr, state: C.NUD_PERMANENT, flags: 0, mode: 'replace' }));
        return;
      }
      case 'fdb-replace':
      case 'fdb-append':
      case 'fdb-del': {
        const index = this.index(sock, op.dev);
        const del = op.op === 'fdb-del';
        const type = del ? C.RTM_DELNEIGH : C.RTM_NEWNEIGH;
        this.send(sock, ['netlink', C.RTM_NAMES[type], 'AF_BRIDGE', op.mac, 'dev', op.dev, ...(op.dst ? ['dst', op.dst] : [])], (s) =>
          M.neighMsg(s, type, { family: C.AF_BRIDGE, index, dst: op.dst, lladdr: op.mac, state: C.NUD_PERMANENT, flags: C.NTF_SELF, mode: op.op === 'fdb-append' ? 'append' : 'replace' }),
        );
        return;
      }
      default:
        throw new Error(`netlink adapter: op ${(op as KernelOp).op} is not implemented`);
    }
  }

  private linkAdd(sock: RtNetlink, spec: LinkSpec): void {
    const argv = ['netlink', 'RTM_NEWLINK', spec.kind, spec.name];
    switch (spec.kind) {
      case 'veth': {
        const p = spec.peer;
        withNetnsFd(p.netns, (fd) => {
          const peer = M.vethPeer({ name: p.name, mac: p.mac, mtu: p.mtu, netnsFd: fd });
          this.send(sock, argv, (s) => M.newLink(s, { name: spec.name, mac: spec.mac, mtu: spec.mtu, kind: 'veth', data: [peer] }));
        });
        return;
      }
      case 'bridge': {
        const data = spec.vlanFiltering === undefined ? [] : [M.attrU8(C.IFLA_BR_VLAN_FILTERING, spec.vlanFiltering ? 1 : 0)];
        this.send(sock, argv, (s) => M.newLink(s, { name: spec.name, mac: spec.mac, mtu: spec.mtu, kind: 'bridge', data }));
        return;
      }
      case 'macvlan':
      case 'ipvlan': {
        const link = this.index(sock, spec.master);
        const data = spec.kind === 'macvlan' ? [M.attrU32(C.IFLA_MACVLAN_MODE, C.MACVLAN_MODES[spec.mode])] : [M.attrU16(C.IFLA_IPVLAN_MODE, C.IPVLAN_MODES[spec.mode])];
        // created directly in the target netns; IFLA_LINK is looked up in the socket's netns
        withNetnsFd(spec.netns, (fd) => {
          this.send(sock, argv, (s) => M.newLink(s, { name: spec.name, mac: spec.mac, mtu: spec.mtu, link, netnsFd: fd, kind: spec.kind, data }));
        });
        return;
      }
      default:
        throw new Error(`netlink adapter: link kind ${spec.kind} is not implemented`);
    }
  }

  private linkSet(sock: RtNetlink, op: Extract<KernelOp, { op: 'link-set' }>): void {
    const index = this.index(sock, op.name);
    const master = op.master === undefined ? undefined : op.master === null ? 0 : this.index(sock, op.master);
    const change: M.ChangeLinkReq = { index, name: op.newName, mac: op.mac, mtu: op.mtu, alias: op.alias, master, up: op.up, promisc: op.promisc };
    const any = [op.newName, op.mac, op.mtu, op.alias, master, op.up, op.promisc].some((v) => v !== undefined);
    // one message, as `ip link set dev X name .. address .. mtu .. promisc .. alias .. master .. up` sends it
    if (any) this.send(sock, ['netlink', 'RTM_NEWLINK', op.name], (s) => M.changeLink(s, change));
    if (op.hairpin !== undefined) {
      const on = op.hairpin;
      this.send(sock, ['netlink', 'RTM_SETLINK', 'AF_BRIDGE', op.newName ?? op.name, 'hairpin', on ? 'on' : 'off'], (s) => M.bridgePortHairpin(s, index, on));
    }
  }

  /** RouteSpec → rtmsg + attributes, with the defaults `ip route add|replace|del` fills in. */
  private routeReq(sock: RtNetlink, r: RouteSpec, del: boolean): M.RouteReq {
    let fam: 4 | 6 | undefined = r.family;
    if (r.gateway !== undefined) fam = ipFamily(r.gateway);
    else if (r.src !== undefined) fam = ipFamily(r.src);
    let dst: string | undefined;
    let dstLen = 0;
    if (r.dst !== 'default') {
      const [a, p] = r.dst.split('/');
      fam ??= ipFamily(a);
      dstLen = p === undefined ? (fam === 6 ? 128 : 32) : Number(p);
      dst = a;
    }
    const family = fam === 6 ? C.AF_INET6 : C.AF_INET;
    const protocol = r.proto !== undefined ? protoNumber(r.proto)! : del ? C.RTPROT_UNSPEC : C.RTPROT_BOOT;
    let scope: number;
    if (r.scope !== undefined) scope = SCOPES[r.scope];
    else if (family === C.AF_INET6) scope = C.RT_SCOPE_UNIVERSE;
    else if (del) scope = C.RT_SCOPE_NOWHERE;
    else scope = r.gateway === undefined ? C.RT_SCOPE_LINK : C.RT_SCOPE_UNIVERSE;
    const req: M.RouteReq = {
      family,
      dst,
      dstLen,
      table: r.table ?? C.RT_TABLE_MAIN,
      protocol,
      scope,
      type: del ? C.RTN_UNSPEC : C.RTN_UNICAST,
    };
    if (r.gateway !== undefined) req.gateway = r.gateway;
    if (r.dev !== undefined) req.oif = this.index(sock, r.dev);
    if (r.src !== undefined) req.prefsrc = r.src;
    if (r.metric !== undefined) req.priority = r.metric;
    if (r.onlink) req.onlink = true;
    if (r.mtu !== undefined) req.mtu = r.mtu;
    if (r.advmss !== undefined) req.advmss = r.advmss;
    return req;
  }
}

function protoNumber(p: string): number | undefined {
  if (/^\d+$/.test(p)) return Number(p) <= 255 ? Number(p) : undefined;
  return C.RT_PROTOS[p];
}

/** Whether the netlink path implements this (already validated) op; the rest goes to iproute2. */
export function implemented(op: KernelOp): boolean {
  switch (op.op) {
    case 'link-add':
      switch (op.spec.kind) {
        case 'veth':
        case 'bridge':
          return true;
        case 'macvlan':
          return op.spec.mode in C.MACVLAN_MODES;
        case 'ipvlan':
          return op.spec.mode in C.IPVLAN_MODES;
        default:
          return false;
      }
    case 'link-del':
      return true;
    case 'link-set':
      // a move to another netns keeps iproute2's two-step order (settings, then the move)
      return op.netns === undefined;
    case 'addr-add':
      return true;
    case 'addr-del':
      // without a prefix iproute2 does a compatibility wildcard deletion
      return op.cidr.includes('/');
    case 'route-add':
    case 'route-del':
      return op.route.proto === undefined || protoNumber(op.route.proto) !== undefined;
    case 'neigh-replace':
    case 'neigh-del':
      return true;
    // podnet's FDB entries are the vxlan device's own (self); master entries stay with iproute2
    case 'fdb-replace':
      return !op.master && (op.self === true || op.dst !== undefined);
    case 'fdb-append':
      return true;
    case 'fdb-del':
      return true;
    default:
      return false;
  }
}

/** Runs fn with an fd for IFLA_NET_NS_FD (undefined: no netns given), closing what it opened. */
function withNetnsFd(ns: NetnsRef | undefined, fn: (fd: number | undefined) => void): void {
  if (ns === undefined) return fn(undefined);
  if (ns.kind === 'current') return fn(originalNetnsFd());
  let fd: number;
  try {
    fd = openSync(netnsFile(ns), 'r');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const errno = err.code === 'ENOENT' ? E.ENOENT : E.EINVAL;
    throw new NlFail(['netlink', 'open', netnsFile(ns)], errno, `Cannot open network namespace "${ns.kind === 'name' ? ns.name : ns.path}": ${err.code === 'ENOENT' ? 'No such file or directory' : err.message}`);
  }
  try {
    fn(fd);
  } finally {
    closeSync(fd);
  }
}

function netnsError(ns: NetnsRef, e: unknown): KernelError {
  const what = ns.kind === 'name' ? ns.name : ns.kind === 'path' ? ns.path : 'self';
  const code = (e as NodeJS.ErrnoException).code;
  const errno = e instanceof NetlinkError ? e.errno : code === 'ENOENT' ? E.ENOENT : undefined;
  const text = errno !== undefined ? strerror(errno) : (e as Error).message;
  // a missing netns is an error of the call, never a missing object an ignoreMissing op could swallow
  return new KernelError({
    argv: ['netlink', 'setns', netnsFile(ns)],
    exitCode: null,
    stderr: '',
    op: `enter ${describeNetns(ns)}`,
    kind: errno !== undefined ? classifyErrno(errno, text) : 'other',
    detail: `Cannot open network namespace "${what}": ${text}`,
  });
}
