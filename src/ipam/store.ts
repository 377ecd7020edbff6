// Reservations on disk in host-local's layout, so host-local and podnet can read each other's
// state: <dir>/<ip> holding "<containerID>\r\n<ifname>", <dir>/last_reserved_ip.<set>, <dir>/lock.
//
// Invariant: a reservation exists iff its final-named file exists, and a final-named file is
// always complete. Content is written to a temp file, made durable, then hard-linked to the
// final name (atomic, and unlike rename it fails instead of overwriting), so a kill -9 at any
// point leaves either nothing or a complete file. Temp files left behind are removed by the
// next locked operation. Every change happens under flock(<dir>/lock), the guard against other
// processes (standalone executables, the reference host-local).
//
// Group commit: inside one process (the agent serves many CNI ADDs and DELs at once) requests
// queue on a per-directory GroupCommit. Those that arrive in the same event-loop turn, or while
// a batch holds the lock, are served by the next single locked section: each member chooses in
// turn against a view that includes the earlier members' choices, all temp files are written
// and flushed together, linked, the directory is fsynced once, last_reserved_ip.<set> written
// once per set, then every member is answered. A member that fails on its own (range full,
// requested IP taken, EEXIST from a writer that ignores the lock) fails alone; an I/O failure
// fails every member of the batch and unlinks the final names it had created for them. A
// second request of the same container in one batch waits for the next batch, so it sees the
// first one's result on disk instead of choosing again. Releases (DEL) are members too: their
// unlinks share the batch's directory fsync. GC and the readers (CHECK, STATUS) stay unbatched.
import {
  closeSync,
  existsSync,
  fdatasync,
  fsyncSync,
  linkSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import type Koffi from 'koffi';
import type { Attachment } from '../cni/types.js';
import { formatIP, tryParseIP, type IP } from '../util/ip.js';
import { withFileLock, type LockOptions } from '../util/lock.js';

export const LINE_BREAK = '\r\n';
export const LAST_IP_PREFIX = 'last_reserved_ip.';
export const LOCK_FILE = 'lock';
const TMP_PREFIX = '.podnet-tmp.';

export interface Reservation {
  /** canonical address text */
  ip: string;
  containerID: string;
  /** absent in files written by old host-local versions (content is the ID alone) */
  ifname?: string;
  /** the file's actual name, which a foreign writer may not have spelled canonically */
  file: string;
}

export interface StoreHooks {
  /** test seam: runs after the temp file is durable and before it gets its final name */
  beforeCommit?(tmpPath: string, ip: string): void;
  /** test seam: every durability flush of a group commit: 'data' covers `files` temp files, 'dir' the directory */
  onFlush?(kind: 'data' | 'dir', files: number): void;
}

export interface GcOutcome {
  released: Reservation[];
  errors: string[];
}

function errno(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException)?.code;
}

export function parseReservation(ip: string, content: string, file = ip): Reservation {
  const [id = '', ifname = ''] = content.split(/\r?\n/);
  const r: Reservation = { ip, containerID: id.trim(), file };
  if (ifname.trim() !== '') r.ifname = ifname.trim();
  return r;
}

/** An entry written without an ifname belongs to every interface of its container, as in host-local. */
export function belongsTo(r: Reservation, containerID: string, ifname: string): boolean {
  return r.containerID === containerID.trim() && (r.ifname === undefined || r.ifname === ifname);
}

/** Makes a directory's entries durable (after a link or an unlink in it). */
export function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function tmpName(dir: string, tag: string): string {
  return join(dir, `${TMP_PREFIX}${tag}.${process.pid}.${randomBytes(4).toString('hex')}`);
}

function rmQuiet(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    /* already gone */
  }
}

// ---------------------------------------------------------------------------------------------
// The flush. Measured on this project's 2-core Debian 12 VM (ext4 on virtio, write cache on),
// medians of 80 rounds, idle machine (busy machine, load 3-13, in brackets), for 1 | 8 files:
//   fsync of each in turn                               0.56 | 4.05 ms   [3.3-7.4]
//   fdatasync of each in turn                           0.58 | 4.32 ms   [3.6-8.1]
//   fdatasync of each, issued concurrently (libuv pool) 0.79 | 2.42 ms   [2.4-3.8]
//   sync_file_range(WRITE) on all, fdatasync in turn    0.58 | 1.69 ms   [2.0-4.9]
//   sync_file_range(WRITE) on all, fdatasync concurrent 0.66 | 1.85 ms   [2.1]
//   one syncfs(2) through koffi                         0.68 | 0.93 ms   [0.8-2.4]
// syncfs is cheapest on an idle disk but flushes every dirty page of the filesystem: with 64 MiB
// of someone else's unwritten data it took 33-63 ms against 10-24 ms for the per-file flush, so
// its cost belongs to whatever else the node writes. sync_file_range alone is not durable (no
// metadata, no cache flush), and one fsync covering the other files' metadata is an ext4 journal
// detail that XFS does not share. So: every temp file gets its own fdatasync (its data and size,
// which is all a later link needs; the name comes from the link and the directory fsync), after
// a sync_file_range(SYNC_FILE_RANGE_WRITE) on each that puts all the data writes in flight at
// once, so the first fdatasync's journal commit covers the others (a hint: skipped when koffi
// cannot load, correctness does not depend on it). The fdatasyncs go concurrently to the libuv
// pool: as cheap as in turn here, and the event loop keeps serving (and queueing the next batch).
const SYNC_FILE_RANGE_WRITE = 2;
type SfrFn = (fd: number, off: number, n: number, flags: number) => number;
let sfrFn: SfrFn | null | undefined;
function syncFileRange(): SfrFn | null {
  if (sfrFn === undefined) {
    try {
      const m = createRequire(import.meta.url)('koffi') as typeof Koffi & { default?: typeof Koffi };
      const koffi = m.default ?? m;
      sfrFn = koffi.load('libc.so.6').func('int sync_file_range(int fd, int64_t off, int64_t n, unsigned int flags)') as SfrFn;
    } catch {
      sfrFn = null;
    }
  }
  return sfrFn;
}

async function flushFiles(fds: number[]): Promise<void> {
  const sfr = syncFileRange();
  if (sfr && fds.length > 1) for (const fd of fds) sfr(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
  const results = await Promise.allSettled(fds.map((fd) => new Promise<void>((ok, fail) => fdatasync(fd, (e) => (e ? fail(e) : ok())))));
  const bad = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (bad) throw bad.reason;
}

// ---------------------------------------------------------------------------------------------
// Who owns what, without reading every file on every ADD. Per directory, this process keeps
// what it read from each reservation file together with the file's identity (inode, size,
// mtime, ctime, birth time); a locked scan stats each name (about half the cost of reading it)
// and reads only files that are new or changed. Reservation files are never rewritten in
// place by podnet (link of a new inode) and this process drops its entry whenever it links or
// unlinks a name, so an entry can only be stale if another process deleted the file and created
// the same name again on the same inode within one timestamp tick of the original's creation,
// with this process scanning in between: three lock hand-overs and a process start inside a few
// milliseconds. Even then, ownership that matters is confirmed by reading the file fresh under
// the lock (see owned()), so a stale entry could at worst hide a caller's own old reservation
// (a second address for it, which GC or DEL of the other owner reclaims), never hand out an
// address that someone else holds.
interface Known {
  key: string;
  r: Reservation;
}
const known = new Map<string, Map<string, Known>>();

function knownFor(dir: string): Map<string, Known> {
  const k = resolve(dir);
  let m = known.get(k);
  if (!m) known.set(k, (m = new Map()));
  return m;
}

function forget(dir: string, name: string): void {
  known.get(resolve(dir))?.delete(name);
}

function readReservation(dir: string, name: string, ip: IP): Reservation | undefined {
  try {
    return parseReservation(formatIP(ip), readFileSync(join(dir, name), 'utf8'), name);
  } catch (e) {
    if (errno(e) === 'ENOENT' || errno(e) === 'EISDIR') return undefined;
    throw e;
  }
}

interface Scan {
  /** file name → its reservation (content as last read); two spellings of one address are two files */
  byFile: Map<string, Reservation>;
}

/** Under the lock: removes dead writers' temp files and lists every reservation. */
function scanLocked(dir: string): Scan {
  const cache = knownFor(dir);
  const seen = new Set<string>();
  const byFile = new Map<string, Reservation>();
  for (const name of readdirSync(dir)) {
    if (name.startsWith(TMP_PREFIX)) {
      rmQuiet(join(dir, name));
      continue;
    }
    const ip = tryParseIP(name);
    if (!ip) continue;
    const st = statSync(join(dir, name), { bigint: true, throwIfNoEntry: false });
    if (!st || !st.isFile()) continue;
    seen.add(name);
    const key = `${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}:${st.birthtimeNs}`;
    let k = cache.get(name);
    if (!k || k.key !== key) {
      const r = readReservation(dir, name, ip);
      if (!r) {
        cache.delete(name);
        continue;
      }
      cache.set(name, (k = { key, r }));
    }
    byFile.set(name, k.r);
  }
  for (const name of cache.keys()) if (!seen.has(name)) cache.delete(name);
  return { byFile };
}

// ---------------------------------------------------------------------------------------------
// Group commit.

/** What one request wants done, decided under the lock by its plan. */
export interface Change<T> {
  /** new reservations for the member's (containerID, ifname) */
  reserve?: Array<{ ip: IP; rangeSetIndex: number }>;
  /** reservations to remove (normally the member's own, from view.owned) */
  release?: Reservation[];
  value: T;
}

/** The store as a member of a batch sees it: disk state plus the earlier members' choices. */
export interface BatchView {
  /** canonical text of every reserved address (any owner), including earlier members' picks */
  readonly reserved: ReadonlySet<string>;
  lastReserved(rangeSetIndex: number): IP | undefined;
  /** the reservations (containerID, ifname) holds, each confirmed by reading its file now */
  owned(containerID: string, ifname: string): Reservation[];
}

export type Plan<T> = (view: BatchView) => Change<T>;

/** The final name appeared between the scan and the link: a writer that does not hold the lock. */
export class ReservedConcurrentlyError extends Error {
  constructor(
    readonly ip: string,
    readonly dir: string,
  ) {
    super(`${ip} was reserved concurrently by a writer that does not hold ${dir}/lock`);
    this.name = 'ReservedConcurrentlyError';
  }
}

interface Member {
  /** requests of one container never share a batch */
  owner: string;
  containerID: string;
  ifname: string;
  plan: Plan<unknown>;
  resolve(v: unknown): void;
  reject(e: unknown): void;
}

interface Active {
  m: Member;
  change: Change<unknown>;
  writes: Write[];
  linked: string[];
  failed?: unknown;
}

interface Write {
  a: Active;
  name: string;
  content: string;
  tmp: string;
  fd?: number;
}

class View implements BatchView {
  readonly reserved: Set<string>;
  private readonly last = new Map<number, IP | undefined>();
  constructor(
    private readonly dir: string,
    private readonly scan: Scan,
  ) {
    this.reserved = new Set([...scan.byFile.values()].map((r) => r.ip));
  }

  lastReserved(i: number): IP | undefined {
    if (!this.last.has(i)) {
      let v: IP | undefined;
      try {
        v = tryParseIP(readFileSync(join(this.dir, LAST_IP_PREFIX + i), 'utf8').trim());
      } catch {
        v = undefined;
      }
      this.last.set(i, v);
    }
    return this.last.get(i);
  }

  take(name: string, ip: IP, rangeSetIndex: number): void {
    this.reserved.add(name);
    this.last.set(rangeSetIndex, ip);
  }

  owned(containerID: string, ifname: string): Reservation[] {
    const out: Reservation[] = [];
    for (const r of this.scan.byFile.values()) {
      if (!belongsTo(r, containerID, ifname)) continue;
      const ip = tryParseIP(r.file);
      const fresh = ip && readReservation(this.dir, r.file, ip);
      if (fresh && belongsTo(fresh, containerID, ifname)) out.push(fresh);
      else forget(this.dir, r.file);
    }
    return out;
  }
}

/** Serves the requests of one process against one store directory in batches. */
class GroupCommit {
  private queue: Member[] = [];
  private running = false;
  constructor(
    private readonly dir: string,
    private readonly hooks: StoreHooks,
    private readonly lock: LockOptions | undefined,
  ) {}

  submit<T>(containerID: string, ifname: string, plan: Plan<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ owner: containerID.trim(), containerID, ifname, plan, resolve: resolve as (v: unknown) => void, reject });
      if (!this.running) {
        this.running = true;
        // the rest of this event-loop turn (other sockets' requests) joins the first batch
        setImmediate(() => void this.drain());
      }
    });
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length) {
        try {
          mkdirSync(this.dir, { recursive: true, mode: 0o755 });
          // members are taken once the lock is held: whoever queued while it was awaited joins
          await withFileLock(join(this.dir, LOCK_FILE), () => this.batch(), this.lock);
        } catch (e) {
          // the lock (or the directory) could not be had: everyone waiting fails with it
          for (const m of this.queue.splice(0)) m.reject(e);
        }
      }
    } finally {
      this.running = false;
    }
  }

  private async batch(): Promise<void> {
    const members = this.queue.splice(0);
    const active: Active[] = [];
    const settled = new Set<Member>();
    const fail = (m: Member, e: unknown) => {
      if (!settled.has(m)) settled.add(m), m.reject(e);
    };
    try {
      const view = new View(this.dir, scanLocked(this.dir));
      const owners = new Set<string>();
      const deferred: Member[] = [];
      for (const m of members) {
        if (owners.has(m.owner)) {
          deferred.push(m);
          continue;
        }
        owners.add(m.owner);
        let change: Change<unknown>;
        try {
          change = m.plan(view);
          const names = (change.reserve ?? []).map((r) => formatIP(r.ip));
          const dup = names.find((n, i) => view.reserved.has(n) || names.indexOf(n) !== i);
          if (dup) throw new Error(`${dup} is already reserved`);
        } catch (e) {
          fail(m, e);
          continue;
        }
        const a: Active = { m, change, writes: [], linked: [] };
        for (const r of change.reserve ?? []) {
          const name = formatIP(r.ip);
          view.take(name, r.ip, r.rangeSetIndex);
          a.writes.push({ a, name, content: m.containerID.trim() + LINE_BREAK + m.ifname, tmp: tmpName(this.dir, name) });
        }
        active.push(a);
      }
      // a container's second request waits for the first one's result on disk
      this.queue.unshift(...deferred);
      await this.commit(active, fail);
    } catch (e) {
      for (const m of members) if (!this.queue.includes(m)) fail(m, e);
      return;
    }
    for (const a of active) {
      if (a.failed !== undefined) fail(a.m, a.failed);
      else if (!settled.has(a.m)) settled.add(a.m), a.m.resolve(a.change.value);
    }
  }

  /** Writes, flushes, links and releases for the active members; throws only on a batch-wide I/O failure. */
  private async commit(active: Active[], fail: (m: Member, e: unknown) => void): Promise<void> {
    const writes = active.flatMap((a) => a.writes);
    const releases = active.filter((a) => a.change.release?.length);
    if (!writes.length && !releases.length) return;
    // last_reserved_ip.<set>: only a hint for where the next search starts; written once per set
    const lastBySet = new Map<number, string>();
    for (const a of active) for (const r of a.change.reserve ?? []) lastBySet.set(r.rangeSetIndex, formatIP(r.ip));
    const lastTmps = [...lastBySet].map(([set, name]) => ({ set, name, tmp: tmpName(this.dir, 'last'), fd: undefined as number | undefined }));
    const all = [...writes, ...lastTmps];
    const unwind = () => {
      for (const a of active) {
        for (const name of a.linked) {
          rmQuiet(join(this.dir, name));
          forget(this.dir, name);
        }
        a.linked = [];
      }
    };
    try {
      try {
        for (const w of all) {
          w.fd = openSync(w.tmp, 'wx', 0o644);
          writeSync(w.fd, 'content' in w ? w.content : w.name);
        }
        if (all.length) {
          await flushFiles(all.map((w) => w.fd!));
          this.hooks.onFlush?.('data', all.length);
        }
      } finally {
        for (const w of all) if (w.fd !== undefined) closeSync(w.fd);
      }
      let ioError: unknown;
      for (const w of writes) {
        if (w.a.failed !== undefined) continue;
        try {
          this.hooks.beforeCommit?.(w.tmp, w.name);
          forget(this.dir, w.name);
          linkSync(w.tmp, join(this.dir, w.name));
          w.a.linked.push(w.name);
        } catch (e) {
          if (errno(e) !== 'EEXIST') {
            ioError = e;
            break;
          }
          // this member alone: its other new names go, the rest of the batch goes on
          w.a.failed = new ReservedConcurrentlyError(w.name, this.dir);
          for (const name of w.a.linked) rmQuiet(join(this.dir, name));
          w.a.linked = [];
        }
      }
      for (const w of writes) rmQuiet(w.tmp);
      if (ioError !== undefined) throw ioError;
      for (const a of releases) {
        try {
          for (const r of a.change.release!) {
            if (r.file.includes('/') || !tryParseIP(r.file)) throw new Error(`not a reservation file name: ${JSON.stringify(r.file)}`);
            forget(this.dir, r.file);
            try {
              unlinkSync(join(this.dir, r.file));
            } catch (e) {
              if (errno(e) !== 'ENOENT') throw e;
            }
          }
        } catch (e) {
          // what was removed stays removed; a retried DEL finishes the rest
          a.failed = e;
        }
      }
      for (const l of lastTmps) {
        try {
          renameSync(l.tmp, join(this.dir, LAST_IP_PREFIX + l.set));
        } catch {
          /* a hint: losing it only moves where the next search starts */
        }
      }
      fsyncDir(this.dir);
      this.hooks.onFlush?.('dir', 1);
    } catch (e) {
      unwind();
      for (const w of all) rmQuiet(w.tmp);
      try {
        fsyncDir(this.dir);
      } catch {
        /* the batch fails either way; a final name that comes back after a power loss is a leak GC reclaims */
      }
      for (const a of active) fail(a.m, e);
    }
  }
}

const shared = new Map<string, GroupCommit>();

/** All operations on the store while its lock is held; synchronous so nothing interleaves. */
export class LockedStore {
  constructor(readonly dir: string) {}

  list(): Reservation[] {
    return listReservations(this.dir);
  }

  reservedSet(): Set<string> {
    return new Set(this.list().map((r) => r.ip));
  }

  getByID(containerID: string, ifname: string): Reservation[] {
    return this.list().filter((r) => belongsTo(r, containerID, ifname));
  }

  lastReserved(rangeSetIndex: number): IP | undefined {
    try {
      return tryParseIP(readFileSync(join(this.dir, LAST_IP_PREFIX + rangeSetIndex), 'utf8').trim());
    } catch {
      return undefined;
    }
  }

  /** `file` is a reservation's file name (normally the canonical address). */
  releaseIP(file: string): void {
    if (file.includes('/') || !tryParseIP(file)) throw new Error(`not a reservation file name: ${JSON.stringify(file)}`);
    forget(this.dir, file);
    try {
      unlinkSync(join(this.dir, file));
    } catch (e) {
      if (errno(e) !== 'ENOENT') throw e;
    }
  }

  /** GC: releases everything not owned by a valid attachment, continuing past failures. */
  releaseAllExcept(valid: Attachment[]): GcOutcome {
    const keep = new Set(valid.map((a) => `${a.containerID.trim()}\n${a.ifname}`));
    const keepIds = new Set(valid.map((a) => a.containerID.trim()));
    const out: GcOutcome = { released: [], errors: [] };
    // read fresh: what GC removes must belong to no valid attachment now
    for (const r of this.list()) {
      const kept = r.ifname === undefined ? keepIds.has(r.containerID) : keep.has(`${r.containerID}\n${r.ifname}`);
      if (kept) continue;
      try {
        this.releaseIP(r.file);
        out.released.push(r);
      } catch (e) {
        out.errors.push(`${r.ip} (${r.containerID}/${r.ifname ?? ''}): ${(e as Error).message}`);
      }
    }
    if (out.released.length) fsyncDir(this.dir);
    return out;
  }

  /** Removes temp files of writers that died; safe only under the lock. */
  cleanTemps(): number {
    let n = 0;
    for (const name of readdirSync(this.dir)) {
      if (name.startsWith(TMP_PREFIX)) {
        rmQuiet(join(this.dir, name));
        n++;
      }
    }
    return n;
  }
}

/** Reads reservations without the lock: every file is complete, so readers never see a torn one. */
export function listReservations(dir: string): Reservation[] {
  const out: Reservation[] = [];
  for (const name of ipNames(dir)) {
    const r = readReservation(dir, name, tryParseIP(name)!);
    if (r) out.push(r);
  }
  return out;
}

function ipNames(dir: string): string[] {
  try {
    return readdirSync(dir).filter((n) => tryParseIP(n) !== undefined);
  } catch (e) {
    if (errno(e) === 'ENOENT') return [];
    throw e;
  }
}

/** The canonical text of every reserved address, from the names alone (no file is read). */
export function reservedAddresses(dir: string): Set<string> {
  return new Set(ipNames(dir).map((n) => formatIP(tryParseIP(n)!)));
}

export class IpamStore {
  private own: GroupCommit | undefined;
  constructor(
    readonly dir: string,
    private readonly opts: { hooks?: StoreHooks; lock?: LockOptions } = {},
  ) {}

  exists(): boolean {
    return existsSync(this.dir);
  }

  /** Stores opened without options share their directory's group commit with the whole process. */
  private group(): GroupCommit {
    if (this.opts.hooks || this.opts.lock) return (this.own ??= new GroupCommit(this.dir, this.opts.hooks ?? {}, this.opts.lock));
    const key = resolve(this.dir);
    let g = shared.get(key);
    if (!g) shared.set(key, (g = new GroupCommit(this.dir, {}, undefined)));
    return g;
  }

  /**
   * Runs `plan` for (containerID, ifname) as a member of the next group commit and resolves
   * with its value once its changes are durable. A plan must be synchronous and must not
   * have side effects: it may throw to fail its own request only.
   */
  transact<T>(containerID: string, ifname: string, plan: Plan<T>): Promise<T> {
    return this.group().submit(containerID, ifname, plan);
  }

  /** Runs fn under the store's flock, creating the directory first (not batched). */
  async locked<T>(fn: (s: LockedStore) => T | Promise<T>): Promise<T> {
    mkdirSync(this.dir, { recursive: true, mode: 0o755 });
    return withFileLock(
      join(this.dir, LOCK_FILE),
      async () => {
        const s = new LockedStore(this.dir);
        s.cleanTemps();
        return fn(s);
      },
      this.opts.lock,
    );
  }

  list(): Reservation[] {
    return listReservations(this.dir);
  }

  /** False when the address is already taken. */
  async reserve(ip: IP, containerID: string, ifname: string, rangeSetIndex: number): Promise<boolean> {
    const name = formatIP(ip);
    try {
      return await this.transact(containerID, ifname, (v) => (v.reserved.has(name) ? { value: false } : { reserve: [{ ip, rangeSetIndex }], value: true }));
    } catch (e) {
      if (e instanceof ReservedConcurrentlyError) return false;
      throw e;
    }
  }

  async getByID(containerID: string, ifname: string): Promise<Reservation[]> {
    return this.list().filter((r) => belongsTo(r, containerID, ifname));
  }

  /** Releases every address of (containerID, ifname). A missing directory means nothing was ever reserved. */
  async releaseByID(containerID: string, ifname: string): Promise<Reservation[]> {
    if (!this.exists()) return [];
    return this.transact(containerID, ifname, (v) => {
      const mine = v.owned(containerID, ifname);
      return { release: mine, value: mine };
    });
  }

  async releaseAllExcept(valid: Attachment[]): Promise<GcOutcome> {
    if (!this.exists()) return { released: [], errors: [] };
    return this.locked((s) => s.releaseAllExcept(valid));
  }
}
