// Executes an install plan and undoes it. Every file is written under a temp name and renamed
// into place; the manifest (<prefix>/install-manifest.json) records each file with its SHA-256
// and every directory the install created, so `podnet uninstall` removes exactly those — and
// refuses, removing nothing, when a file changed since (unless forced).
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmdirSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { MANIFEST_NAME, type EntryRole, type InstallPlan } from './plan.js';

export const MANIFEST_FORMAT = 1;

export interface ManifestFile {
  path: string;
  mode: number;
  sha256: string;
  role: EntryRole;
}

export interface Manifest {
  format: number;
  podnet: string;
  installedAt: string;
  source: string;
  /** complete: false when the install failed part-way (what is listed was written) */
  complete: boolean;
  files: ManifestFile[];
  /** directories the install created, parents before children */
  dirs: string[];
}

/** The install would overwrite files it did not write, or that changed since it wrote them. */
export class InstallRefused extends Error {
  constructor(message: string, public readonly paths: string[]) {
    super(message);
    this.name = 'InstallRefused';
  }
}

export class NotInstalled extends Error {
  constructor(prefix: string) {
    super(`nothing installed at ${prefix} (no ${join(prefix, MANIFEST_NAME)})`);
    this.name = 'NotInstalled';
  }
}

export function sha256(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

export function manifestPath(prefix: string): string {
  return join(prefix, MANIFEST_NAME);
}

export function readManifest(prefix: string): Manifest | undefined {
  const p = manifestPath(prefix);
  if (!existsSync(p)) return undefined;
  const m = JSON.parse(readFileSync(p, 'utf8')) as Manifest;
  if (m.format !== MANIFEST_FORMAT || !Array.isArray(m.files) || !Array.isArray(m.dirs)) throw new Error(`${p}: not a podnet install manifest (format ${MANIFEST_FORMAT})`);
  return m;
}

/** 'ok', 'missing', or 'changed' (content differs, or no longer a regular file). */
export function fileState(f: ManifestFile): 'ok' | 'missing' | 'changed' {
  let st;
  try {
    st = lstatSync(f.path);
  } catch {
    return 'missing';
  }
  if (!st.isFile()) return 'changed';
  return sha256(readFileSync(f.path)) === f.sha256 ? 'ok' : 'changed';
}

function writeAtomicBytes(path: string, data: Buffer | string, mode: number): void {
  const tmp = `${path}.tmp.${process.pid}`;
  try {
    writeFileSync(tmp, data, { mode });
    chmodSync(tmp, mode);
    renameSync(tmp, path);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      /* not there */
    }
    throw e;
  }
}

/** Creates dir and its missing ancestors one by one, appending each created one to `created`. */
function ensureDir(dir: string, created: string[]): void {
  if (existsSync(dir)) {
    if (!statSync(dir).isDirectory()) throw new Error(`${dir} exists and is not a directory`);
    return;
  }
  ensureDir(dirname(dir), created);
  mkdirSync(dir, { mode: 0o755 });
  created.push(dir);
}

function writeManifest(m: Manifest, path: string): void {
  writeAtomicBytes(path, JSON.stringify(m, null, 1) + '\n', 0o644);
}

export interface InstallResult {
  prefix: string;
  manifest: string;
  files: { path: string; mode: number; role: EntryRole }[];
  /** directories created by this run */
  dirsCreated: string[];
  /** files of an earlier install at this prefix that this one no longer has, removed */
  removedStale: string[];
  /** files that existed before and were overwritten (an earlier install's, or foreign ones with --force) */
  replaced: string[];
  warnings: string[];
}

/**
 * Writes the plan. Before anything is written: a file in the way that this prefix's manifest
 * does not list (not ours), or that it lists but that changed since, refuses the install
 * unless `force`. An install over an earlier one replaces its files and removes those the new
 * plan no longer has. If writing fails part-way, the manifest lists what was written.
 */
export function applyInstall(plan: InstallPlan, opts: { force?: boolean; source: string } = { source: '' }): InstallResult {
  const prev = readManifest(plan.prefix);
  const prevFiles = new Map((prev?.files ?? []).map((f) => [f.path, f]));
  const planned = new Set(plan.entries.map((e) => e.path));
  const conflicts: string[] = [];
  const replaced: string[] = [];
  for (const e of plan.entries) {
    let st;
    try {
      st = lstatSync(e.path);
    } catch {
      continue;
    }
    if (st.isDirectory()) throw new InstallRefused(`${e.path} is a directory`, [e.path]);
    const pf = prevFiles.get(e.path);
    if (!pf) conflicts.push(`${e.path} (not written by podnet install)`);
    else if (fileState(pf) === 'changed') conflicts.push(`${e.path} (changed since it was installed)`);
    replaced.push(e.path);
  }
  const stale = [...prevFiles.values()].filter((f) => !planned.has(f.path));
  for (const f of stale) if (fileState(f) === 'changed') conflicts.push(`${f.path} (changed since it was installed; the new install would remove it)`);
  if (conflicts.length && !opts.force) throw new InstallRefused(`refusing to overwrite (use --force):\n  ${conflicts.join('\n  ')}`, conflicts);

  const created: string[] = [];
  const dirs = [...(prev?.dirs ?? []).filter((d) => existsSync(d))];
  const written: ManifestFile[] = [];
  // what an earlier install wrote stays listed until it is replaced or removed
  const carried = new Map(prevFiles);
  const manifestNow = (complete: boolean): Manifest => ({
    format: MANIFEST_FORMAT,
    podnet: plan.source.version,
    installedAt: new Date().toISOString(),
    source: opts.source || plan.source.root,
    complete,
    files: [...written, ...[...carried.values()]],
    dirs: [...dirs, ...created],
  });
  ensureDir(plan.prefix, created);
  const removedStale: string[] = [];
  try {
    for (const e of plan.entries) {
      ensureDir(dirname(e.path), created);
      const data = e.from !== undefined ? readFileSync(e.from) : Buffer.from(e.content ?? '', 'utf8');
      writeAtomicBytes(e.path, data, e.mode);
      carried.delete(e.path);
      written.push({ path: e.path, mode: e.mode, sha256: sha256(data), role: e.role });
    }
    for (const f of stale) {
      if (existsSync(f.path)) unlinkSync(f.path);
      carried.delete(f.path);
      removedStale.push(f.path);
    }
  } catch (e) {
    writeManifest(manifestNow(false), plan.manifest);
    throw e;
  }
  writeManifest(manifestNow(true), plan.manifest);
  return {
    prefix: plan.prefix,
    manifest: plan.manifest,
    files: written.map(({ path, mode, role }) => ({ path, mode, role })),
    dirsCreated: created,
    removedStale,
    replaced,
    warnings: plan.warnings,
  };
}

export interface UninstallResult {
  prefix: string;
  removed: string[];
  /** listed but already gone */
  missing: string[];
  /** changed since install, removed because of --force */
  forced: string[];
  dirsRemoved: string[];
  /** created by the install but holding files it did not write: left in place */
  dirsKept: string[];
}

/**
 * Removes the files the manifest lists, the manifest, then the directories the install
 * created (children first; one that is not empty holds something else and stays). Refuses,
 * removing nothing, when a listed file changed since install, unless `force`.
 */
export function uninstall(prefix: string, opts: { force?: boolean } = {}): UninstallResult {
  const m = readManifest(prefix);
  if (!m) throw new NotInstalled(prefix);
  const states = m.files.map((f) => ({ f, state: fileState(f) }));
  const changed = states.filter((s) => s.state === 'changed').map((s) => s.f.path);
  if (changed.length && !opts.force) throw new InstallRefused(`refusing to remove files changed since install (use --force):\n  ${changed.join('\n  ')}`, changed);
  const r: UninstallResult = { prefix, removed: [], missing: [], forced: [], dirsRemoved: [], dirsKept: [] };
  for (const { f, state } of states) {
    if (state === 'missing') {
      r.missing.push(f.path);
      continue;
    }
    unlinkSync(f.path);
    r.removed.push(f.path);
    if (state === 'changed') r.forced.push(f.path);
  }
  unlinkSync(manifestPath(prefix));
  r.removed.push(manifestPath(prefix));
  for (const d of [...m.dirs].reverse()) {
    if (!existsSync(d)) continue;
    if (readdirSync(d).length) {
      r.dirsKept.push(d);
      continue;
    }
    rmdirSync(d);
    r.dirsRemoved.push(d);
  }
  return r;
}
