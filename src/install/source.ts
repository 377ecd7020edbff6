// What `podnet install` copies from: a podnet package root (this checkout, an `npm pack`
// tarball installed with npm, or an earlier install's <prefix>/lib) — its dist/ files and the
// runtime closure of its package.json `dependencies` as Node resolves them from there. The
// bundles keep koffi (a native addon: its binary is the per-platform optional dependency
// @koromix/koffi-<platform>-<arch>) and etcd3 (reads .proto files beside itself) external, so
// these must sit in a node_modules the bundles resolve from.
import { existsSync, lstatSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

export interface SourceFile {
  /** path relative to its base (the package root for dist/, the package's dir for a dependency) */
  rel: string;
  mode: number;
}

export interface SourceDependency {
  name: string;
  version: string;
  /** the package's directory (real path) */
  dir: string;
  /** where it goes, relative to the installed package root: node_modules/NAME or nested under its parent */
  to: string;
  files: SourceFile[];
}

export interface SourceScan {
  root: string;
  name: string;
  version: string;
  dist: SourceFile[];
  deps: SourceDependency[];
}

function fileMode(st: { mode: number }): number {
  return st.mode & 0o111 ? 0o755 : 0o644;
}

/** Regular files under dir (symlinks followed), sorted; `skipTop` names skipped at the top level only. */
export function listFiles(dir: string, skipTop: string[] = []): SourceFile[] {
  const out: SourceFile[] = [];
  const walk = (d: string, rel: string, depth: number): void => {
    if (depth > 64) throw new Error(`${d}: directories nested too deep (a symlink loop?)`);
    for (const ent of readdirSync(d).sort()) {
      if (depth === 0 && skipTop.includes(ent)) continue;
      const p = join(d, ent);
      const st = lstatSync(p).isSymbolicLink() ? statSync(p) : lstatSync(p);
      const r = rel ? `${rel}/${ent}` : ent;
      if (st.isDirectory()) walk(p, r, depth + 1);
      else if (st.isFile()) out.push({ rel: r, mode: fileMode(st) });
    }
  };
  walk(dir, '', 0);
  return out;
}

interface PackageJson {
  name?: string;
  version?: string;
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
}

function readPackageJson(dir: string): PackageJson {
  return JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as PackageJson;
}

/** Node's lookup of a bare package name from a directory: DIR/node_modules/NAME, then each ancestor's. */
function resolvePackage(from: string, name: string): { dir: string; base: string } | undefined {
  for (let d = from; ; d = dirname(d)) {
    if (basename(d) !== 'node_modules') {
      const cand = join(d, 'node_modules', name);
      if (existsSync(join(cand, 'package.json'))) return { dir: cand, base: d };
    }
    if (dirname(d) === d) return undefined;
  }
}

/**
 * The package root's dist/ files and its runtime dependency closure. A dependency found at
 * ROOT-or-an-ancestor/node_modules/NAME goes to node_modules/NAME; one nested in another
 * dependency's node_modules goes under that dependency's destination, so Node resolves the
 * same versions from the copy. Missing optional (and peer) dependencies are skipped — that is
 * how only this platform's koffi binary is present; a missing regular dependency is an error.
 */
export function scanSource(root: string): SourceScan {
  const pj = readPackageJson(root);
  if (pj.name !== 'podnet') throw new Error(`${root}/package.json is not podnet's`);
  const distDir = join(root, 'dist');
  for (const f of ['podnet.mjs', 'podnet-cni.mjs']) {
    if (!existsSync(join(distDir, f))) throw new Error(`${join(distDir, f)} is missing: run \`npm run build\` first`);
  }
  const rootChain = new Set<string>();
  for (let d = root; ; d = dirname(d)) {
    rootChain.add(d);
    if (dirname(d) === d) break;
  }
  const deps: SourceDependency[] = [];
  const byDir = new Map<string, SourceDependency>();
  const byTo = new Map<string, SourceDependency>();
  // the lookup walks the path the package was found at (not its real path), as Node does for packages under node_modules
  const visit = (fromDir: string, pkg: PackageJson, who: string): void => {
    const wanted: [string, boolean][] = [
      ...Object.keys(pkg.dependencies ?? {}).map((n) => [n, false] as [string, boolean]),
      ...Object.keys(pkg.optionalDependencies ?? {}).map((n) => [n, true] as [string, boolean]),
      ...Object.keys(pkg.peerDependencies ?? {}).map((n) => [n, true] as [string, boolean]),
    ];
    for (const [name, optional] of wanted) {
      const hit = resolvePackage(fromDir, name);
      if (!hit) {
        if (optional) continue;
        throw new Error(`${who} depends on ${name}, which is not installed under ${fromDir} (run \`npm install\`)`);
      }
      const real = realpathSync(hit.dir);
      if (byDir.has(real)) continue;
      let to: string;
      if (rootChain.has(hit.base)) to = `node_modules/${name}`;
      else {
        const parent = byDir.get(realpathSync(hit.base));
        if (!parent) throw new Error(`${hit.dir}: found in a node_modules podnet cannot reproduce (not beside the package, nor inside a dependency)`);
        to = `${parent.to}/node_modules/${name}`;
      }
      const clash = byTo.get(to);
      if (clash) throw new Error(`${name}: two copies (${clash.dir}, ${real}) would both go to ${to}`);
      const dpj = readPackageJson(hit.dir);
      const dep: SourceDependency = { name, version: dpj.version ?? '', dir: real, to, files: listFiles(hit.dir, ['node_modules']) };
      byDir.set(real, dep);
      byTo.set(to, dep);
      deps.push(dep);
      visit(hit.dir, dpj, `${name}@${dep.version}`);
    }
  };
  visit(root, pj, 'podnet');
  deps.sort((a, b) => (a.to < b.to ? -1 : a.to > b.to ? 1 : 0));
  return { root, name: pj.name, version: pj.version ?? '0.0.0', dist: listFiles(distDir), deps };
}
