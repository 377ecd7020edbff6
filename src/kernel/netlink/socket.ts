// A minimal synchronous rtnetlink socket over libc through koffi, and a way to open one inside
// another network namespace (setns in, socket(), setns back, all without yielding to the event loop).
import { closeSync, openSync } from 'node:fs';
import { createRequire } from 'node:module';
import type Koffi from 'koffi';
import * as C from './constants.js';
import { type Ack, type LinkInfo, type NlMsg, errnoName, parseAck, parseLink, parseMessages } from './message.js';
import * as M from './message.js';

// koffi is loaded on first use, through require: a missing or broken native addon must not break
// importing the kernel module (the iproute2 adapter is the fallback), and the CNI bundle keeps koffi external.
let koffiMod: typeof Koffi | undefined;
export function loadKoffi(): typeof Koffi {
  if (!koffiMod) {
    const req = createRequire(import.meta.url);
    const m = req('koffi') as typeof Koffi & { default?: typeof Koffi };
    koffiMod = m.default ?? m;
  }
  return koffiMod;
}

type Fn = (...args: unknown[]) => number;
interface Libc {
  strerror: (errnum: number) => string;
  socket: Fn;
  bind: Fn;
  sendto: Fn;
  recv: Fn;
  setsockopt: Fn;
  setns: Fn;
  close: Fn;
}

let libc: Libc | undefined;
/** Loads libc and declares the few functions used (the cost a short-lived process pays once). */
export function loadLibc(): Libc {
  if (libc) return libc;
  const lib = loadKoffi().load('libc.so.6');
  libc = {
    strerror: lib.func('const char *strerror(int errnum)') as (errnum: number) => string,
    socket: lib.func('int socket(int domain, int type, int protocol)') as Fn,
    bind: lib.func('int bind(int fd, const void *addr, uint32_t addrlen)') as Fn,
    sendto: lib.func('long sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)') as Fn,
    recv: lib.func('long recv(int fd, void *buf, size_t len, int flags)') as Fn,
    setsockopt: lib.func('int setsockopt(int fd, int level, int name, const void *val, uint32_t len)') as Fn,
    setns: lib.func('int setns(int fd, int nstype)') as Fn,
    close: lib.func('int close(int fd)') as Fn,
  };
  return libc;
}

export class NetlinkError extends Error {
  constructor(
    readonly op: string,
    readonly errno: number,
    readonly extMsg?: string,
  ) {
    super(`${op}: ${errnoName(errno)}${extMsg ? ` (${extMsg})` : ''}`);
  }
}

function sysErr(op: string): NetlinkError {
  return new NetlinkError(op, loadKoffi().errno());
}

/** The C library's text for an errno ("File exists"), as iproute2 prints it. */
export function strerror(errno: number): string {
  try {
    return loadLibc().strerror(errno);
  } catch {
    return errnoName(errno);
  }
}

const EINTR = 4;

function sockaddrNl(): Buffer {
  const b = Buffer.alloc(12); // sa_family u16, pad u16, nl_pid u32 (0: kernel / autobind), nl_groups u32
  b.writeUInt16LE(C.AF_NETLINK, 0);
  return b;
}
const KERNEL = sockaddrNl();

function intOpt(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v, 0);
  return b;
}

/** A request in a batch: a message builder (given its sequence number) and a label for errors. */
export interface Req {
  label: string;
  build: (seq: number) => Buffer;
}

interface Transaction {
  first: number;
  count: number;
  replies: NlMsg[][];
  done: boolean[];
  errors: Ack[];
  pending: number;
  /** settles when an asynchronous send is done */
  sent?: Promise<void>;
}

export class RtNetlink {
  /** SO_RCVTIMEO of new sockets: a kernel that never answers fails the request instead of hanging the process */
  static recvTimeoutSec = 5;
  private seq = Math.floor(Math.random() * 0x7fffffff);
  // dumps come in datagrams of up to 32 KiB (netlink_dump's allocation); room to spare
  private readonly rbuf = Buffer.alloc(128 * 1024);
  private closed = false;

  private constructor(readonly fd: number) {}

  /** Opens a NETLINK_ROUTE socket in the calling thread's current netns. */
  static open(): RtNetlink {
    const c = loadLibc();
    const fd = c.socket(C.AF_NETLINK, C.SOCK_RAW | C.SOCK_CLOEXEC, C.NETLINK_ROUTE);
    if (fd < 0) throw sysErr('socket(AF_NETLINK)');
    try {
      const addr = sockaddrNl();
      if (c.bind(fd, addr, addr.length) !== 0) throw sysErr('bind');
      // ack errors with the kernel's message and without echoing our request back
      c.setsockopt(fd, C.SOL_NETLINK, C.NETLINK_EXT_ACK, intOpt(1), 4);
      c.setsockopt(fd, C.SOL_NETLINK, C.NETLINK_CAP_ACK, intOpt(1), 4);
      const tv = Buffer.alloc(16); // struct timeval { long tv_sec; long tv_usec; }: never block forever
      tv.writeBigInt64LE(BigInt(RtNetlink.recvTimeoutSec), 0);
      if (c.setsockopt(fd, C.SOL_SOCKET, C.SO_RCVTIMEO, tv, 16) !== 0) throw sysErr('setsockopt(SO_RCVTIMEO)');
    } catch (e) {
      c.close(fd);
      throw e;
    }
    return new RtNetlink(fd);
  }

  /** Opens a NETLINK_ROUTE socket bound to the network namespace at netnsPath (e.g. /run/netns/X). */
  static openInNetns(netnsPath: string): RtNetlink {
    return inNetns(netnsPath, () => RtNetlink.open());
  }

  /** Same, from an open netns fd (the caller keeps ownership of the fd). */
  static openInNetnsFd(fd: number, what = `fd ${fd}`): RtNetlink {
    return inNetnsFd(fd, what, () => RtNetlink.open());
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    loadLibc().close(this.fd);
  }

  /**
   * Sends the requests in one datagram and waits for each one's answer: an ack (NLMSG_ERROR with 0),
   * or a reply (for GET requests). Throws on the first failed request, after reading every answer.
   * Returns the reply messages of the requests (empty array for plain acks), in order.
   */
  transact(reqs: Req[]): NlMsg[][] {
    return this.collect(reqs, this.begin(reqs));
  }

  private collect(reqs: Req[], t: Transaction): NlMsg[][] {
    const c = loadLibc();
    while (t.pending > 0) {
      const n = c.recv(this.fd, this.rbuf, this.rbuf.length, 0);
      if (n < 0) {
        // a signal handler ran (the process may have many); the answer is still on its way
        if (loadKoffi().errno() === EINTR) continue;
        throw sysErr('recv');
      }
      this.take(t, n);
    }
    return this.finish(reqs, t);
  }

  /**
   * transact() whose kernel work runs on libuv's thread pool (koffi's async call of sendto: a
   * request to the kernel is processed inside sendto, and a link deletion waits there ~15-20 ms
   * for RCU), so the event loop goes on meanwhile. The answers are queued when sendto returns.
   * Nothing else may use this socket until it settles.
   */
  async transactAsync(reqs: Req[]): Promise<NlMsg[][]> {
    const c = loadLibc();
    const sendAsync = (c.sendto as unknown as { async: (...a: unknown[]) => void }).async;
    const t = this.begin(reqs, async (out) => {
      const sent = await new Promise<number>((resolve, reject) => sendAsync(this.fd, out, out.length, 0, KERNEL, KERNEL.length, (err: unknown, r: number) => (err ? reject(err) : resolve(r))));
      // errno belongs to the pool's thread: what failed is not known here
      if (sent < 0) throw new NetlinkError(reqs.map((r) => r.label).join('; '), 0, 'sendto on the thread pool failed');
    });
    await t.sent;
    return this.collect(reqs, t);
  }

  private begin(reqs: Req[], sendAsync?: (out: Buffer) => Promise<void>): Transaction {
    const c = loadLibc();
    const first = this.seq;
    const bufs = reqs.map((r, i) => r.build((first + i) >>> 0));
    this.seq = (first + reqs.length) >>> 0;
    const out = Buffer.concat(bufs);
    let sent: Promise<void> | undefined;
    if (sendAsync) sent = sendAsync(out);
    else if (c.sendto(this.fd, out, out.length, 0, KERNEL, KERNEL.length) < 0) throw sysErr('sendto');
    return { first, count: reqs.length, replies: reqs.map(() => []), done: reqs.map(() => false), errors: [], pending: reqs.length, sent };
  }

  private take(t: Transaction, n: number): void {
    for (const m of parseMessages(this.rbuf.subarray(0, n))) {
      const i = (m.seq - t.first) >>> 0;
      if (i >= t.count || t.done[i]) continue; // not ours (stale) or already answered
      if (m.type === C.NLMSG_ERROR) {
        const ack = parseAck(m);
        if (ack.errno !== 0) t.errors.push({ ...ack, seq: i });
      } else if (m.type === C.NLMSG_DONE) {
        // end of a multipart reply
      } else {
        t.replies[i].push({ ...m, data: Buffer.from(m.data) }); // rbuf is reused: copy
        if (m.flags & C.NLM_F_MULTI) continue;
      }
      t.done[i] = true;
      t.pending--;
    }
  }

  private finish(reqs: Req[], t: Transaction): NlMsg[][] {
    if (t.errors.length) {
      const e = t.errors[0];
      throw new NetlinkError(reqs[e.seq].label, e.errno, e.extMsg);
    }
    return t.replies;
  }

  // ------------------------------------------------------------ one-request helpers

  private one(label: string, build: (seq: number) => Buffer): NlMsg[] {
    return this.transact([{ label, build }])[0];
  }

  getLink(name: string): LinkInfo {
    const r = this.one(`get link ${name}`, (s) => M.getLink(s, { name }));
    if (!r.length) throw new Error(`get link ${name}: no reply`);
    return parseLink(r[0].data);
  }

  createBridge(name: string, up = true): void {
    this.one(`add bridge ${name}`, (s) => M.newBridge(s, { name, up }));
  }

  createVeth(o: { name: string; peerName: string; peerNetnsFd?: number; up?: boolean; master?: number }): void {
    this.one(`add veth ${o.name}`, (s) => M.newVeth(s, o));
  }

  setLink(o: { index?: number; name?: string; up?: boolean; master?: number }): void {
    this.one(`set link ${o.name ?? o.index}`, (s) => M.setLink(s, o));
  }

  delLink(name: string): void {
    this.one(`del link ${name}`, (s) => M.delLink(s, { name }));
  }

  addAddr4(index: number, address: string, prefixLen: number): void {
    this.one(`add addr ${address}/${prefixLen}`, (s) => M.newAddr4(s, { index, address, prefixLen }));
  }

  addDefaultRoute4(gateway: string, oif?: number): void {
    this.one(`add default via ${gateway}`, (s) => M.newRoute4(s, { gateway, oif }));
  }
}

/**
 * Runs fn with the calling (JS) thread inside the netns at netnsPath, and always comes back. fn must
 * be synchronous: nothing else may run on this thread while it is in the other netns.
 */
export function inNetns<T>(netnsPath: string, fn: () => T): T {
  const target = openSync(netnsPath, 'r');
  try {
    return inNetnsFd(target, netnsPath, fn);
  } finally {
    closeSync(target);
  }
}

export function inNetnsFd<T>(target: number, what: string, fn: () => T): T {
  const c = loadLibc();
  const orig = originalNetnsFd();
  if (c.setns(target, C.CLONE_NEWNET) !== 0) throw sysErr(`setns(${what})`);
  try {
    return fn();
  } finally {
    if (c.setns(orig, C.CLONE_NEWNET) !== 0) {
      // the JS thread would be left in the wrong netns: nothing after this can be trusted
      process.stderr.write(`FATAL: setns back to the original netns failed: ${errnoName(loadKoffi().errno())}\n`);
      process.exit(70);
    }
  }
}

let origNetns: number | undefined;
/** fd of the JS thread's netns at first use, kept open to come back to after setns. */
export function originalNetnsFd(): number {
  if (origNetns === undefined) origNetns = openSync('/proc/thread-self/ns/net', 'r');
  return origNetns;
}
