// The README's main job: `podnet demo` builds, proves reachability, and removes everything.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { ensureBuilt } from '../helpers/cni.js';

const ROOT = new URL('../../', import.meta.url).pathname;

test('podnet demo -o json: every pod reaches every other, nothing is left afterwards', { timeout: 180_000 }, () => {
  ensureBuilt();
  const r = spawnSync(process.execPath, [`${ROOT}dist/podnet.mjs`, 'demo', '-o', 'json'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr + r.stdout);
  const out = JSON.parse(r.stdout) as { pods: { name: string; mode: string; ips: string[] }[]; matrix: Record<string, Record<string, boolean>> };
  assert.deepEqual([...new Set(out.pods.map((p) => p.mode))].sort(), ['bridge', 'macvlan', 'routed']);
  for (const [src, row] of Object.entries(out.matrix)) for (const [dst, ok] of Object.entries(row)) assert.ok(ok, `${src} → ${dst}`);
  const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').filter((l) => l.startsWith('pndemo-'));
  assert.deepEqual(left, []);
});
