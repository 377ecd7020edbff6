// Runs `podnet lab` from source, with the lab's state under a test directory.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { netnsWithPrefix } from './netns.js';
import type { TraceResult } from '../../src/trace/types.js';

const ROOT = new URL('../../', import.meta.url).pathname;

export function labCli(labDir: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'src/lab/standalone.ts'), 'lab', ...args], {
    encoding: 'utf8',
    cwd: ROOT,
    env: { ...process.env, PODNET_LAB_DIR: labDir },
    input: opts.input,
    timeout: opts.timeoutMs ?? 240_000,
  });
  return { code: r.status ?? 1, stdout: r.stdout, stderr: r.stderr };
}

/**
 * A directory for one test file's labs (PODNET_LAB_DIR): after the file, every lab registered is
 * taken down, any namespace of its left behind deleted, and the directory removed.
 */
export function labSuite(prefix: string): { dir: string; register(tag: string): void } {
  const dir = mkdtempSync(join(tmpdir(), `${prefix}-`));
  const tags: string[] = [];
  after(() => {
    for (const tag of tags) {
      if (existsSync(join(dir, tag))) labCli(dir, ['down', '--name', tag]);
      for (const ns of netnsWithPrefix(`pnlab-${tag}-`)) spawnSync('ip', ['netns', 'del', ns]);
    }
    rmSync(dir, { recursive: true, force: true });
  });
  return { dir, register: (tag) => void tags.push(tag) };
}

/**
 * Builds dist/ when the bundle the lab starts its agents and pod servers from is missing, has no
 * `lab serve` yet, or is older than any source under src/.
 */
export function ensureLabBundle(): void {
  const bundle = join(ROOT, 'dist/podnet.mjs');
  // every source the bundle is built from: the lab starts agents from it too
  const sources = (readdirSync(join(ROOT, 'src'), { recursive: true }) as string[]).filter((f) => f.endsWith('.ts')).map((f) => join(ROOT, 'src', f));
  const stale = !existsSync(bundle) || sources.some((f) => statSync(f).mtimeMs > statSync(bundle).mtimeMs);
  const hasServe = !stale && spawnSync(process.execPath, [bundle, 'lab', 'serve', '--help'], { encoding: 'utf8' }).status === 0;
  if (stale || !hasServe) execFileSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'inherit' });
}

// A one-shot client run inside a namespace: connects (TCP) or sends one datagram from a
// connected UDP socket (so only a reply from the address it sent to is accepted), prints what
// comes back. Arguments: proto host port timeoutMs.
const PROBE = `
const [proto, host, port, ms] = process.argv.slice(1);
const fail = (m) => { process.stderr.write(m + '\\n'); process.exit(1); };
setTimeout(() => fail('timeout after ' + ms + ' ms'), Number(ms)).unref();
if (proto === 'tcp') {
  const c = require('node:net').connect({ host, port: Number(port) });
  let out = '';
  c.on('data', (d) => (out += d));
  c.on('end', () => { process.stdout.write(out); process.exit(0); });
  c.on('error', (e) => fail(e.message));
} else {
  const s = require('node:dgram').createSocket('udp4');
  s.on('error', (e) => fail(e.message));
  s.on('message', (m) => { process.stdout.write(m); process.exit(0); });
  s.connect(Number(port), host, () => s.send('ping'));
}
`;

/** What a TCP connection to, or a UDP datagram sent to, host:port from inside `ns` gets back. */
export function probe(ns: string, proto: 'tcp' | 'udp', host: string, port: number, timeoutMs = 3000): { code: number; out: string; err: string } {
  const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, '-e', PROBE, proto, host, String(port), String(timeoutMs)], { encoding: 'utf8', timeout: timeoutMs + 5000 });
  return { code: r.status ?? 1, out: r.stdout ?? '', err: r.stderr ?? '' };
}

/** `podnet trace ARGS --name TAG -o json` from the bundle in a lab directory: exit code, the parsed result (when it printed one), stdout, stderr. */
export function labTrace(labDir: string, tag: string, args: string[], timeoutMs = 60_000): { code: number; r?: TraceResult; out: string; err: string } {
  const p = spawnSync(process.execPath, [join(ROOT, 'dist/podnet.mjs'), 'trace', ...args, '--name', tag, '-o', 'json'], { encoding: 'utf8', env: { ...process.env, PODNET_LAB_DIR: labDir }, timeout: timeoutMs });
  let r: TraceResult | undefined;
  try {
    r = JSON.parse(p.stdout) as TraceResult;
  } catch {
    r = undefined;
  }
  return { code: p.status ?? 1, r, out: p.stdout, err: p.stderr };
}

/**
 * `podnet trace` on "a real node" (no lab): from the named namespace `from` (--from-netns), or
 * with --host when `from` is undefined; fails the test when it prints no JSON.
 */
export function nodeTrace(from: string | undefined, src: string, dst: string, extra: string[] = []): { code: number; r: TraceResult; out: string } {
  const where = from ? ['--from-netns', `/run/netns/${from}`] : ['--host'];
  const p = spawnSync(process.execPath, [join(ROOT, 'dist/podnet.mjs'), 'trace', ...where, ...extra, src, dst, '-o', 'json'], { encoding: 'utf8' });
  try {
    return { code: p.status ?? 1, r: JSON.parse(p.stdout) as TraceResult, out: p.stdout + p.stderr };
  } catch {
    throw new Error(`podnet trace printed no JSON (exit ${p.status}): ${p.stdout}${p.stderr}`);
  }
}
