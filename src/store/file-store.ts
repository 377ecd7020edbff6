// The embedded store: one directory shared by every process on a machine (the lab runs several
// agents in different network namespaces against one directory), no daemon to run.
//
// Layout (for the default name "state"):
//   state.json              {uid, revision, compactRevision, leases, kvs, log}: written to a temp
//                           file, fsynced and renamed, so a reader never sees a partial state
//   events-<gen>.jsonl      the event log: one JSON line per event; state.json records the file
//                           name and its committed byte size
//   lock                    flock(2) taken by every mutation (freed by the kernel if a writer dies)
//
// Why the log is a separate file: state.json is rewritten on every mutation (keepAlive included),
// so it must stay small; 10,000 events inside it would make each write megabytes.
//
// Crash safety: a writer appends events to the log first, fsyncs, then renames the new state.
// A writer that dies between the two leaves bytes past the committed size; the next writer
// truncates the log to the committed size before appending, and readers never read past it.
// When the log holds too many events it is rewritten to a new generation file (temp + rename)
// keeping the newest `maxEvents`; compactRevision records what was dropped, and a watcher that
// needs older events gets onReset (like an etcd watch hitting a compacted revision).
//
// Leases use wall-clock time (expiresAt, ms since the epoch), because several processes share
// them. Expired leases are reaped — their keys deleted, with delete events — by any mutation,
// and by a timer in every open store, so keys vanish even when nobody writes.
//
// Watch: fs.watch (inotify) on the directory wakes watchers early; a poll timer is the safety
// net (inotify can miss renames, and fs.watch is unreliable on some filesystems).
import { randomBytes, randomInt } from 'node:crypto';
import { watch as fsWatch, type FSWatcher } from 'node:fs';
import { mkdir, open, readFile, rename, rm, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { withFileLock } from '../util/lock.js';
import type { KeyValue, Store, Watch, WatchEvent, WatchHandlers } from './types.js';

export interface FileStoreOptions {
  /** events kept for watchers that resume from an old revision (default 10,000) */
  maxEvents?: number;
  /** how often each open store reaps expired leases (default 500 ms) */
  reapIntervalMs?: number;
  /** watcher poll interval, the fallback behind inotify (default 250 ms) */
  pollIntervalMs?: number;
}

interface StoredKv {
  value: string;
  modRevision: number;
  createRevision: number;
  lease: number;
}

interface StoredLease {
  ttl: number;
  /** wall-clock ms */
  expiresAt: number;
}

interface LogRef {
  file: string;
  /** committed byte length: readers stop here, writers truncate to it */
  size: number;
  count: number;
}

interface State {
  /** changes when the store is recreated, so watchers of the old one reset */
  uid: string;
  revision: number;
  /** events with revision <= compactRevision are gone from the log */
  compactRevision: number;
  leases: Record<string, StoredLease>;
  kvs: Record<string, StoredKv>;
  log: LogRef;
}

type LoggedEvent =
  | { type: 'put'; key: string; value: string; modRevision: number; lease: number; revision: number }
  | { type: 'delete'; key: string; revision: number };

function freshState(): State {
  return { uid: randomBytes(8).toString('hex'), revision: 0, compactRevision: 0, leases: {}, kvs: {}, log: { file: 'events-1.jsonl', size: 0, count: 0 } };
}

function toWatchEvent(e: LoggedEvent): WatchEvent {
  if (e.type === 'delete') return { type: 'delete', key: e.key, revision: e.revision };
  return { type: 'put', kv: { key: e.key, value: e.value, modRevision: e.modRevision, lease: e.lease }, revision: e.revision };
}

/** A mutation's working set: the state being changed and the events it produced. */
class Txn {
  events: LoggedEvent[] = [];
  dirty = false;
  constructor(public st: State, public readonly now: number) {}

  /** starts a new revision for the events that follow */
  bump(): number {
    this.dirty = true;
    return ++this.st.revision;
  }
  put(key: string, value: string, lease: number): void {
    const rev = this.bump();
    const prev = this.st.kvs[key];
    this.st.kvs[key] = { value, modRevision: rev, createRevision: prev ? prev.createRevision : rev, lease };
    this.events.push({ type: 'put', key, value, modRevision: rev, lease, revision: rev });
  }
  del(key: string, rev = this.bump()): void {
    delete this.st.kvs[key];
    this.events.push({ type: 'delete', key, revision: rev });
  }
  /** drops expired leases and their keys; one revision per lease, as etcd revokes a lease in one txn */
  reap(): void {
    for (const [id, l] of Object.entries(this.st.leases)) {
      if (l.expiresAt > this.now) continue;
      this.dropLease(Number(id));
    }
  }
  dropLease(id: number): void {
    delete this.st.leases[String(id)];
    this.dirty = true;
    const keys = Object.keys(this.st.kvs).filter((k) => this.st.kvs[k].lease === id);
    if (keys.length === 0) return;
    const rev = this.bump();
    for (const k of keys.sort()) this.del(k, rev);
  }
  checkLease(lease: number | undefined): number {
    if (!lease) return 0;
    if (!this.st.leases[String(lease)]) throw new Error(`file store: lease ${lease} not found (expired or revoked)`);
    return lease;
  }
}

export class FileStore implements Store {
  readonly describe: string;
  private readonly statePath: string;
  private readonly lockPath: string;
  private readonly logPrefix: string;
  private readonly maxEvents: number;
  private readonly pollMs: number;
  private reapTimer: NodeJS.Timeout | undefined;
  private fsWatcher: FSWatcher | undefined;
  private watchers = new Set<FileWatch>();
  private closed = false;
  private ready: Promise<void>;

  /**
   * @param path a directory (created if missing; the state is `state.json` in it) or a path
   *   ending in `.json` (the state file itself; lock and log sit next to it, named after it)
   */
  constructor(path: string, private readonly opts: FileStoreOptions = {}) {
    const isFile = path.endsWith('.json');
    const dir = isFile ? dirname(path) : path;
    const name = isFile ? basename(path, '.json') : 'state';
    this.dir = dir;
    this.statePath = join(dir, `${name}.json`);
    this.lockPath = isFile ? join(dir, `${name}.lock`) : join(dir, 'lock');
    this.logPrefix = isFile ? `${name}.events-` : 'events-';
    this.maxEvents = opts.maxEvents ?? 10_000;
    this.pollMs = opts.pollIntervalMs ?? 250;
    this.describe = `file:${this.statePath}`;
    this.ready = mkdir(dir, { recursive: true }).then(() => undefined);
    const reapMs = opts.reapIntervalMs ?? 500;
    this.reapTimer = setInterval(() => void this.reapIfDue().catch(() => undefined), reapMs);
    // a background reaper must not keep a CLI process alive
    this.reapTimer.unref();
  }
  private readonly dir: string;

  // ---- state I/O ----

  /** Lock-free read: state.json is only ever replaced by rename, so this sees a whole state. */
  private async readState(): Promise<State> {
    await this.ready;
    let text: string;
    try {
      text = await readFile(this.statePath, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return freshState();
      throw e;
    }
    const st = JSON.parse(text) as State;
    if (typeof st.revision !== 'number' || !st.kvs || !st.leases || !st.log) throw new Error(`${this.statePath}: not a podnet store state`);
    return st;
  }

  private async writeFileAtomic(path: string, data: string): Promise<void> {
    const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  }

  private async fsyncDir(): Promise<void> {
    const fh = await open(this.dir, 'r');
    try {
      await fh.sync();
    } catch {
      // some filesystems refuse fsync on a directory; the rename is still atomic
    } finally {
      await fh.close();
    }
  }

  /**
   * Runs fn on the current state under the lock; writes back only if something changed.
   * Mutations queued in this process while a commit is in flight share the next lock and
   * commit (group commit): two fsyncs per batch instead of per call.
   */
  private mutate<T>(fn: (t: Txn) => T): Promise<T> {
    if (this.closed) return Promise.reject(new Error(`${this.describe}: store is closed`));
    return new Promise<T>((resolve, reject) => {
      this.pending.push({ fn, resolve: resolve as (v: unknown) => void, reject });
      if (!this.draining) void this.drain();
    });
  }

  private pending: { fn: (t: Txn) => unknown; resolve: (v: unknown) => void; reject: (e: unknown) => void }[] = [];
  private draining = false;

  private async drain(): Promise<void> {
    this.draining = true;
    try {
      await this.ready;
      while (this.pending.length > 0) {
        const batch = this.pending.splice(0, 256);
        let results: { ok: boolean; v: unknown }[];
        try {
          results = await withFileLock(this.lockPath, async () => {
            const t = new Txn(await this.readState(), Date.now());
            t.reap();
            // each fn either changes the state or throws before changing it (checks come first)
            const out = batch.map((op) => {
              try {
                return { ok: true, v: op.fn(t) };
              } catch (e) {
                return { ok: false, v: e };
              }
            });
            if (t.dirty) await this.commit(t);
            return out;
          });
        } catch (e) {
          for (const op of batch) op.reject(e);
          continue;
        }
        batch.forEach((op, i) => (results[i].ok ? op.resolve(results[i].v) : op.reject(results[i].v)));
      }
    } catch (e) {
      for (const op of this.pending.splice(0)) op.reject(e);
    } finally {
      this.draining = false;
    }
  }

  private async commit(t: Txn): Promise<void> {
    const st = t.st;
    let oldLog: string | undefined;
    if (t.events.length > 0) {
      const lines = t.events.map((e) => JSON.stringify(e) + '\n').join('');
      const logPath = join(this.dir, st.log.file);
      const fh = await open(logPath, 'a+', 0o600);
      try {
        // drop anything a writer that died before its rename left past the committed size
        await fh.truncate(st.log.size);
        await fh.write(lines, st.log.size);
        await fh.sync();
      } finally {
        await fh.close();
      }
      st.log.size += Buffer.byteLength(lines);
      st.log.count += t.events.length;
      // hysteresis: rewrite the log only when it is half again over the limit
      if (st.log.count > this.maxEvents * 1.5) oldLog = await this.compactLog(st);
    }
    await this.writeFileAtomic(this.statePath, JSON.stringify(st));
    if (oldLog) {
      await this.fsyncDir();
      await unlink(join(this.dir, oldLog)).catch(() => undefined);
    }
  }

  /** Keeps the newest maxEvents events in a new generation file; returns the old file's name. */
  private async compactLog(st: State): Promise<string> {
    const all = await this.readLog(st.log.file, 0, st.log.size);
    const keep = all.slice(-this.maxEvents);
    // never split one revision: drop a partial revision at the start of what is kept
    let start = 0;
    const dropped = all.length - keep.length;
    if (dropped > 0) {
      const cut = all[dropped - 1].revision;
      while (start < keep.length && keep[start].revision === cut) start++;
    }
    const kept = keep.slice(start);
    const gen = Number(/(\d+)\.jsonl$/.exec(st.log.file)?.[1] ?? '1') + 1;
    const file = `${this.logPrefix}${gen}.jsonl`;
    const text = kept.map((e) => JSON.stringify(e) + '\n').join('');
    await this.writeFileAtomic(join(this.dir, file), text);
    const old = st.log.file;
    st.compactRevision = kept.length > 0 ? kept[0].revision - 1 : st.revision;
    st.log = { file, size: Buffer.byteLength(text), count: kept.length };
    return old;
  }

  /** Events in [from, to) bytes of a log file; throws ENOENT if the file was compacted away. */
  async readLog(file: string, from: number, to: number): Promise<LoggedEvent[]> {
    if (to <= from) return [];
    const fh = await open(join(this.dir, file), 'r');
    try {
      const buf = Buffer.alloc(to - from);
      let off = 0;
      while (off < buf.length) {
        const { bytesRead } = await fh.read(buf, off, buf.length - off, from + off);
        if (bytesRead === 0) throw new Error(`${file}: shorter than its committed size ${to}`);
        off += bytesRead;
      }
      return buf
        .toString('utf8')
        .split('\n')
        .filter((l) => l.length > 0)
        .map((l) => JSON.parse(l) as LoggedEvent);
    } finally {
      await fh.close();
    }
  }

  private async reapIfDue(): Promise<void> {
    if (this.closed) return;
    const st = await this.readState();
    const now = Date.now();
    if (Object.values(st.leases).some((l) => l.expiresAt <= now)) await this.mutate(() => undefined);
  }

  /** Reads for get/list: reaps first when a lease is overdue, so readers never see dead keys. */
  private async readFresh(): Promise<State> {
    const st = await this.readState();
    const now = Date.now();
    if (!Object.values(st.leases).some((l) => l.expiresAt <= now)) return st;
    await this.mutate(() => undefined);
    return this.readState();
  }

  // ---- Store ----

  async get(key: string): Promise<KeyValue | undefined> {
    const st = await this.readFresh();
    const kv = st.kvs[key];
    return kv ? { key, value: kv.value, modRevision: kv.modRevision, lease: kv.lease } : undefined;
  }

  async list(prefix: string): Promise<{ kvs: KeyValue[]; revision: number }> {
    const st = await this.readFresh();
    const kvs = Object.keys(st.kvs)
      .filter((k) => k.startsWith(prefix))
      .sort()
      .map((k) => ({ key: k, value: st.kvs[k].value, modRevision: st.kvs[k].modRevision, lease: st.kvs[k].lease }));
    return { kvs, revision: st.revision };
  }

  create(key: string, value: string, lease?: number): Promise<boolean> {
    return this.compareAndSet(key, value, 0, lease);
  }

  compareAndSet(key: string, value: string, expected: number, lease?: number): Promise<boolean> {
    return this.mutate((t) => {
      const cur = t.st.kvs[key];
      if ((cur?.modRevision ?? 0) !== expected) return false;
      t.put(key, value, t.checkLease(lease));
      return true;
    });
  }

  delete(key: string, expected?: number): Promise<boolean> {
    return this.mutate((t) => {
      const cur = t.st.kvs[key];
      if (!cur) return false;
      if (expected !== undefined && cur.modRevision !== expected) return false;
      t.del(key);
      return true;
    });
  }

  grantLease(ttlSeconds: number): Promise<number> {
    if (!(ttlSeconds > 0)) throw new Error(`file store: lease TTL must be positive, got ${ttlSeconds}`);
    return this.mutate((t) => {
      let id: number;
      // random ids (not a counter) so a lease id from a deleted and recreated store never matches
      do id = randomInt(1, 2 ** 47);
      while (t.st.leases[String(id)]);
      t.st.leases[String(id)] = { ttl: ttlSeconds, expiresAt: t.now + ttlSeconds * 1000 };
      t.dirty = true;
      return id;
    });
  }

  keepAlive(lease: number): Promise<boolean> {
    return this.mutate((t) => {
      const l = t.st.leases[String(lease)];
      if (!l) return false;
      l.expiresAt = t.now + l.ttl * 1000;
      t.dirty = true;
      return true;
    });
  }

  async revokeLease(lease: number): Promise<void> {
    await this.mutate((t) => {
      if (t.st.leases[String(lease)]) t.dropLease(lease);
    });
  }

  watch(prefix: string, fromRevision: number, handlers: WatchHandlers): Watch {
    if (this.closed) throw new Error(`${this.describe}: store is closed`);
    const w = new FileWatch(this, prefix, fromRevision, handlers, this.pollMs, () => this.watchers.delete(w));
    this.watchers.add(w);
    this.ensureFsWatch();
    w.kick();
    return w;
  }

  /** for FileWatch */
  async snapshot(): Promise<State> {
    return this.readState();
  }

  private ensureFsWatch(): void {
    if (this.fsWatcher) return;
    this.ready
      .then(() => {
        if (this.fsWatcher || this.closed) return;
        try {
          this.fsWatcher = fsWatch(this.dir, { persistent: false }, (_ev, file) => {
            // only a new state means new events; log appends alone are not committed yet
            if (file === null || file === basename(this.statePath)) for (const w of this.watchers) w.kick();
          });
          this.fsWatcher.on('error', () => {
            // polling carries on
            this.fsWatcher?.close();
            this.fsWatcher = undefined;
          });
        } catch {
          // no inotify (limits, odd filesystem): polling alone
        }
      })
      .catch(() => undefined);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.reapTimer);
    this.fsWatcher?.close();
    for (const w of [...this.watchers]) w.close();
    // let in-flight mutations finish before the caller removes the directory
    while (this.draining) await new Promise((r) => setTimeout(r, 5));
  }

  /** Removes the store's files (tests, `podnet cleanup`). */
  static async destroy(dir: string): Promise<void> {
    await rm(dir, { recursive: true, force: true });
  }
}

/** One watcher: reads committed events past its revision and delivers them one at a time. */
class FileWatch implements Watch {
  private rev: number;
  private uid: string | undefined;
  private logFile: string | undefined;
  private logOffset = 0;
  private timer: NodeJS.Timeout;
  private running = false;
  private again = false;
  private closed = false;
  private failing = false;

  constructor(
    private readonly store: FileStore,
    private readonly prefix: string,
    fromRevision: number,
    private readonly h: WatchHandlers,
    pollMs: number,
    private readonly onClose: () => void,
  ) {
    this.rev = fromRevision;
    this.timer = setInterval(() => this.kick(), pollMs);
  }

  kick(): void {
    if (this.closed) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    void this.poll().finally(() => {
      this.running = false;
      if (this.again && !this.closed) {
        this.again = false;
        this.kick();
      }
    });
  }

  private reset(reason: string): void {
    this.close();
    this.h.onReset?.(reason);
  }

  private async poll(): Promise<void> {
    try {
      const st = await this.store.snapshot();
      this.failing = false;
      if (this.uid === undefined) this.uid = st.uid;
      else if (this.uid !== st.uid) return this.reset(`store ${this.store.describe} was recreated`);
      if (st.revision < this.rev && this.logFile !== undefined) return this.reset(`store revision went back from ${this.rev} to ${st.revision}`);
      if (st.revision <= this.rev) return;
      if (this.rev < st.compactRevision) return this.reset(`revision ${this.rev} is compacted (oldest kept: ${st.compactRevision + 1})`);
      // first read, or the log was compacted into a new file: start at its beginning
      if (this.logFile !== st.log.file) {
        this.logFile = st.log.file;
        this.logOffset = 0;
      }
      let events: LoggedEvent[];
      try {
        events = await this.store.readLog(st.log.file, this.logOffset, st.log.size);
      } catch (e) {
        // compacted between reading the state and opening the log: the next poll sees the new file
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
          this.again = true;
          return;
        }
        throw e;
      }
      this.logOffset = st.log.size;
      for (const e of events) {
        if (this.closed) return;
        if (e.revision <= this.rev || !e.key.startsWith(this.prefix)) continue;
        try {
          this.h.onEvent(toWatchEvent(e));
        } catch (err) {
          this.h.onError?.(err as Error);
        }
      }
      this.rev = Math.max(this.rev, st.revision);
    } catch (e) {
      // report once per outage, not every poll
      if (!this.failing) this.h.onError?.(e as Error);
      this.failing = true;
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.onClose();
  }
}
