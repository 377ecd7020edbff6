// Socket options Node's net module has no API for, through libc (koffi): TCP MD5 signatures
// (RFC 2385, Linux TCP_MD5SIG) and the IP TTL / IPv6 hop limit of eBGP sessions. An MD5 key has
// to be on the socket before its SYN leaves, which a net.Socket cannot do (libuv creates the fd
// inside connect()), so signed outgoing sessions connect here, in libuv's thread pool, and the
// connected fd is handed to a net.Socket.
import { Socket, type Server } from 'node:net';
import { loadKoffi } from '../../kernel/netlink/socket.js';
import { errnoName } from '../../kernel/netlink/message.js';
import { tryParseIP } from '../../util/ip.js';

const AF_INET = 2;
const AF_INET6 = 10;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SOCK_NONBLOCK = 0o4000;
const SO_ERROR = 4;
const EINPROGRESS = 115;
const POLLOUT = 4;
const SOL_SOCKET = 1;
const IPPROTO_IP = 0;
const IPPROTO_TCP = 6;
const IPPROTO_IPV6 = 41;
const IP_TTL = 2;
const IPV6_UNICAST_HOPS = 16;
const TCP_MD5SIG = 14;
const TCP_MD5SIG_MAXKEYLEN = 80;

type Fn = (...args: unknown[]) => number;
interface SockLibc {
  socket: Fn;
  setsockopt: Fn;
  connect: Fn;
  bind: Fn;
  poll: Fn & { async: (...args: unknown[]) => void };
  getsockopt: Fn;
  close: Fn;
}
let lib: SockLibc | undefined;
function libc(): SockLibc {
  if (lib) return lib;
  const l = loadKoffi().load('libc.so.6');
  lib = {
    socket: l.func('int socket(int domain, int type, int protocol)') as Fn,
    setsockopt: l.func('int setsockopt(int fd, int level, int name, const void *val, uint32_t len)') as Fn,
    connect: l.func('int connect(int fd, const void *addr, uint32_t addrlen)') as Fn,
    bind: l.func('int bind(int fd, const void *addr, uint32_t addrlen)') as Fn,
    poll: l.func('int poll(void *fds, unsigned long nfds, int timeout)') as SockLibc['poll'],
    getsockopt: l.func('int getsockopt(int fd, int level, int name, _Out_ void *val, _Inout_ uint32_t *len)') as Fn,
    close: l.func('int close(int fd)') as Fn,
  };
  return lib;
}

export class SockoptError extends Error {}

function sockaddr(ip: string, port: number): Buffer {
  const a = tryParseIP(ip);
  if (!a) throw new SockoptError(`not an IP address: ${ip}`);
  if (a.family === 4) {
    const b = Buffer.alloc(16);
    b.writeUInt16LE(AF_INET, 0);
    b.writeUInt16BE(port, 2);
    b.writeUInt32BE(Number(a.value), 4);
    return b;
  }
  const b = Buffer.alloc(28);
  b.writeUInt16LE(AF_INET6, 0);
  b.writeUInt16BE(port, 2);
  for (let i = 0; i < 16; i++) b[8 + i] = Number((a.value >> BigInt(8 * (15 - i))) & 0xffn);
  return b;
}

/** struct tcp_md5sig: a sockaddr_storage (128), flags, prefixlen, keylen, ifindex, key[80] */
function md5sig(peer: string, key: string): Buffer {
  const k = Buffer.from(key, 'utf8');
  if (k.length === 0 || k.length > TCP_MD5SIG_MAXKEYLEN) throw new SockoptError(`TCP MD5 key must be 1 to ${TCP_MD5SIG_MAXKEYLEN} bytes`);
  const b = Buffer.alloc(216);
  sockaddr(peer, 0).copy(b, 0);
  b.writeUInt16LE(k.length, 130);
  k.copy(b, 136);
  return b;
}

function setopt(fd: number, level: number, name: number, val: Buffer, what: string): void {
  if (libc().setsockopt(fd, level, name, val, val.length) !== 0) {
    const errno = loadKoffi().errno();
    throw new SockoptError(`${what}: ${errnoName(errno)}${errno === 92 || errno === 22 ? ' (this kernel has no TCP MD5 signatures: CONFIG_TCP_MD5SIG)' : ''}`);
  }
}

function int32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v, 0);
  return b;
}

/** The fd under a net.Socket or net.Server (Node keeps it on the libuv handle). */
export function fdOf(s: Socket | Server): number {
  const fd = (s as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new SockoptError('socket has no file descriptor yet');
  return fd;
}

/** Signs the segments to and from `peer` with `key` (on a listener: accepted connections from it). */
export function setMd5Key(fd: number, peer: string, key: string): void {
  setopt(fd, IPPROTO_TCP, TCP_MD5SIG, md5sig(peer, key), `TCP MD5 key for ${peer}`);
}

/** Drops the key for `peer` (keylen 0). */
export function clearMd5Key(fd: number, peer: string): void {
  const b = Buffer.alloc(216);
  sockaddr(peer, 0).copy(b, 0);
  try {
    libc().setsockopt(fd, IPPROTO_TCP, TCP_MD5SIG, b, b.length);
  } catch {
    /* the listener is gone */
  }
}

/** The TTL (IPv4) or hop limit (IPv6) of the socket's packets. */
export function setTtl(fd: number, v6: boolean, ttl: number): void {
  if (v6) setopt(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, int32(ttl), 'IPv6 hop limit');
  else setopt(fd, IPPROTO_IP, IP_TTL, int32(ttl), 'IP TTL');
}

/** Whether this kernel takes TCP MD5 keys (tried on a throwaway socket). */
export function md5Supported(): { ok: true } | { ok: false; reason: string } {
  let fd = -1;
  try {
    fd = libc().socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return { ok: false, reason: `socket: ${errnoName(loadKoffi().errno())}` };
    setMd5Key(fd, '192.0.2.1', 'probe');
    return { ok: true };
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  } finally {
    if (fd >= 0) libc().close(fd);
  }
}

/**
 * Connects to peer:port with the MD5 key set before the SYN (and the TTL when given), waiting in
 * the thread pool (poll) for at most timeoutMs, and wraps the connected fd in a net.Socket.
 */
export function connectSigned(o: { peer: string; port: number; key: string; ttl?: number; source?: string; timeoutMs: number }): Promise<Socket> {
  const c = libc();
  const v6 = tryParseIP(o.peer)?.family === 6;
  const fd = c.socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Promise.reject(new SockoptError(`socket: ${errnoName(loadKoffi().errno())}`));
  const fail = (msg: string): Promise<never> => {
    c.close(fd);
    return Promise.reject(new SockoptError(msg));
  };
  try {
    setMd5Key(fd, o.peer, o.key);
    if (o.ttl !== undefined) setTtl(fd, v6, o.ttl);
    if (o.source) {
      const src = sockaddr(o.source, 0);
      if (c.bind(fd, src, src.length) !== 0) throw new SockoptError(`bind ${o.source}: ${errnoName(loadKoffi().errno())}`);
    }
  } catch (e) {
    return fail((e as Error).message);
  }
  const addr = sockaddr(o.peer, o.port);
  if (c.connect(fd, addr, addr.length) !== 0) {
    const errno = loadKoffi().errno();
    if (errno !== EINPROGRESS) return fail(`connect ${o.peer}:${o.port}: ${errnoName(errno)}`);
  }
  // struct pollfd { int fd; short events; short revents; }
  const pfd = Buffer.alloc(8);
  pfd.writeInt32LE(fd, 0);
  pfd.writeInt16LE(POLLOUT, 4);
  return new Promise((resolve, reject) => {
    c.poll.async(pfd, 1, o.timeoutMs, (err: Error | null, n: number) => {
      if (err) return void fail(`poll: ${err.message}`).catch(reject);
      if (n === 0) return void fail(`connect ${o.peer}:${o.port}: timed out after ${o.timeoutMs} ms`).catch(reject);
      const val = Buffer.alloc(4);
      const len = [4];
      c.getsockopt(fd, SOL_SOCKET, SO_ERROR, val, len);
      const soErr = val.readInt32LE(0);
      if (soErr !== 0) return void fail(`connect ${o.peer}:${o.port}: ${errnoName(soErr)}`).catch(reject);
      try {
        resolve(new Socket({ fd, readable: true, writable: true }));
      } catch (e) {
        void fail((e as Error).message).catch(reject);
      }
    });
  });
}
