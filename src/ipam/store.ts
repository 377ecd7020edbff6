// Reservations on disk in host-local's layout, so host-local and podnet can read each other's
// state: <dir>/<ip> holding "<containerID>\r\n<ifname>", <dir>/last_reserved_ip.<set>, <dir>/lock.
//
// Crash safety: a reservation exists iff its final-named file exists. Content is written to a
// temp file, fsynced, then hard-linked to the final name (atomic, and unlike rename it fails
// instead of overwriting), so a kill -9 at any point leaves either nothing or a complete file.
// Temp files left behind are removed by the next locked operation.
import {
  closeSync,
  existsSync,
  fsyncSync,
  linkSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
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

function fsyncDir(dir: string): void {
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

function writeDurable(path: string, content: string): void {
  const fd = openSync(path, 'wx', 0o644);
  try {
    writeSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** All operations on the store while its lock is held; synchronous so nothing interleaves. */
export class LockedStore {
  constructor(
    readonly dir: string,
    private readonly hooks: StoreHooks = {},
  ) {}

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

  /** False when the address is already taken. */
  reserve(ip: IP, containerID: string, ifname: string, rangeSetIndex: number): boolean {
    const name = formatIP(ip);
    const final = join(this.dir, name);
    if (existsSync(final)) return false;
    const tmp = tmpName(this.dir, name);
    writeDurable(tmp, containerID.trim() + LINE_BREAK + ifname);
    try {
      this.hooks.beforeCommit?.(tmp, name);
      linkSync(tmp, final);
    } catch (e) {
      if (errno(e) === 'EEXIST') return false;
      throw e;
    } finally {
      rmQuiet(tmp);
    }
    fsyncDir(this.dir);
    // only a hint for where the next search starts; losing it to a crash is harmless
    const lastTmp = tmpName(this.dir, 'last');
    writeDurable(lastTmp, name);
    renameSync(lastTmp, join(this.dir, LAST_IP_PREFIX + rangeSetIndex));
    return true;
  }

  /** `file` is a reservation's file name (normally the canonical address). */
  releaseIP(file: string): void {
    if (file.includes('/') || !tryParseIP(file)) throw new Error(`not a reservation file name: ${JSON.stringify(file)}`);
    try {
      unlinkSync(join(this.dir, file));
    } catch (e) {
      if (errno(e) !== 'ENOENT') throw e;
    }
  }

  /** Releases every address of (containerID, ifname); returns what was released. */
  releaseByID(containerID: string, ifname: string): Reservation[] {
    const mine = this.getByID(containerID, ifname);
    for (const r of mine) this.releaseIP(r.file);
    if (mine.length) fsyncDir(this.dir);
    return mine;
  }

  /** GC: releases everything not owned by a valid attachment, continuing past failures. */
  releaseAllExcept(valid: Attachment[]): GcOutcome {
    const keep = new Set(valid.map((a) => `${a.containerID.trim()}\n${a.ifname}`));
    const keepIds = new Set(valid.map((a) => a.containerID.trim()));
    const out: GcOutcome = { released: [], errors: [] };
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

function rmQuiet(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    /* already gone */
  }
}

/** Reads reservations without the lock: every file is complete, so readers never see a torn one. */
export function listReservations(dir: string): Reservation[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e) {
    if (errno(e) === 'ENOENT') return [];
    throw e;
  }
  const out: Reservation[] = [];
  for (const name of names) {
    const ip = tryParseIP(name);
    if (!ip) continue;
    let content: string;
    try {
      content = readFileSync(join(dir, name), 'utf8');
    } catch (e) {
      if (errno(e) === 'ENOENT' || errno(e) === 'EISDIR') continue;
      throw e;
    }
    out.push(parseReservation(formatIP(ip), content, name));
  }
  return out;
}

export class IpamStore {
  constructor(
    readonly dir: string,
    private readonly opts: { hooks?: StoreHooks; lock?: LockOptions } = {},
  ) {}

  exists(): boolean {
    return existsSync(this.dir);
  }

  /** Runs fn under the store's flock, creating the directory first. */
  async locked<T>(fn: (s: LockedStore) => T | Promise<T>): Promise<T> {
    mkdirSync(this.dir, { recursive: true, mode: 0o755 });
    return withFileLock(
      join(this.dir, LOCK_FILE),
      async () => {
        const s = new LockedStore(this.dir, this.opts.hooks);
        s.cleanTemps();
        return fn(s);
      },
      this.opts.lock,
    );
  }

  list(): Reservation[] {
    return listReservations(this.dir);
  }

  async reserve(ip: IP, containerID: string, ifname: string, rangeSetIndex: number): Promise<boolean> {
    return this.locked((s) => s.reserve(ip, containerID, ifname, rangeSetIndex));
  }

  async getByID(containerID: string, ifname: string): Promise<Reservation[]> {
    return this.list().filter((r) => belongsTo(r, containerID, ifname));
  }

  /** A missing directory means nothing was ever reserved, so there is nothing to release. */
  async releaseByID(containerID: string, ifname: string): Promise<Reservation[]> {
    if (!this.exists()) return [];
    return this.locked((s) => s.releaseByID(containerID, ifname));
  }

  async releaseAllExcept(valid: Attachment[]): Promise<GcOutcome> {
    if (!this.exists()) return { released: [], errors: [] };
    return this.locked((s) => s.releaseAllExcept(valid));
  }
}
