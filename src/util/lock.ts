// Cross-process locking with flock(2): the kernel drops the lock when the holder dies, so a
// kill -9 never leaves a stale lock (unlike lock files that record a PID).
import { closeSync, constants, openSync } from 'node:fs';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;
// libuv opens every fd with O_CLOEXEC, so spawned children never inherit the lock.
const EINTR = 4;
const EAGAIN = 11; // also EWOULDBLOCK on Linux

export class LockTimeoutError extends Error {
  constructor(public readonly path: string, public readonly waitedMs: number) {
    super(`timed out after ${waitedMs} ms waiting for the lock on ${path}`);
    this.name = 'LockTimeoutError';
  }
}

type FlockFn = (fd: number, op: number) => number;
let flockImpl: { flock: FlockFn; errno: () => number } | undefined;

/** koffi is loaded on first use so code that never locks does not pay for it. */
async function libc(): Promise<{ flock: FlockFn; errno: () => number }> {
  if (!flockImpl) {
    const koffi = (await import('koffi')).default;
    const lib = koffi.load('libc.so.6');
    const flock = lib.func('int flock(int fd, int op)') as FlockFn;
    flockImpl = { flock, errno: () => koffi.errno() };
  }
  return flockImpl;
}

/**
 * flock conflicts between two fds of the same process too, so callers inside one process
 * queue here first instead of spinning against each other.
 */
const queues = new Map<string, Promise<void>>();

async function inProcess<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const prevTail = queues.get(key) ?? Promise.resolve();
  let release!: () => void;
  const mine = new Promise<void>((r) => (release = r));
  const tail = prevTail.then(() => mine);
  queues.set(key, tail);
  await prevTail;
  try {
    return await fn();
  } finally {
    release();
    if (queues.get(key) === tail) queues.delete(key);
  }
}

export interface LockOptions {
  /** give up after this long (default 60 s); host-local blocks forever, which hides a hung holder */
  timeoutMs?: number;
  /** first retry delay; doubles up to 50 ms */
  retryMs?: number;
}

/**
 * Runs fn while holding an exclusive flock on `path` (created if missing). The lock is taken
 * with LOCK_NB and retried, because a blocking flock would stall the whole event loop.
 */
export async function withFileLock<T>(path: string, fn: () => Promise<T> | T, opts: LockOptions = {}): Promise<T> {
  const key = resolve(path);
  const timeoutMs = opts.timeoutMs ?? 60_000;
  return inProcess(key, async () => {
    const { flock, errno } = await libc();
    const fd = openSync(key, constants.O_RDONLY | constants.O_CREAT, 0o600);
    try {
      const started = Date.now();
      let delay = opts.retryMs ?? 2;
      for (;;) {
        if (flock(fd, LOCK_EX | LOCK_NB) === 0) break;
        const e = errno();
        if (e !== EAGAIN && e !== EINTR) throw new Error(`flock(${key}) failed: errno ${e}`);
        const waited = Date.now() - started;
        if (waited >= timeoutMs) throw new LockTimeoutError(key, waited);
        // jitter keeps a crowd of waiting processes from retrying in lockstep
        await sleep(Math.min(delay * (0.5 + Math.random()), Math.max(1, timeoutMs - waited)));
        delay = Math.min(delay * 2, 50);
      }
      try {
        return await fn();
      } finally {
        flock(fd, LOCK_UN);
      }
    } finally {
      closeSync(fd);
    }
  });
}
