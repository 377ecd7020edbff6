// The lab with its agents: 3 nodes, 2 pods per node, every pod pings every other pod (vxlan and
// host-gw, through `lab demo`), a node added later is reachable, a node removed leaves no route
// behind on its peers, and the etcd store. Everything in a temp PODNET_LAB_DIR under unique names.
import { labCli } from '../helpers/lab.js';
import { netnsWithPrefix } from '../helpers/netns.js';
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureBuilt } from '../helpers/cni.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const LAB_DIR = mkdtempSync(join(tmpdir(), 'pnlab-test-'));
const TAG = `c${process.pid.toString(36)}${randomBytes(2).toString('hex')}`;
const labs: string[] = [];

function labName(suffix: string): string {
  const n = `${TAG}${suffix}`;
  labs.push(n);
  return n;
}

const cli = (args: string[]) => labCli(LAB_DIR, args, { timeoutMs: 240_000 });


/** The cluster side of `podnet agent` is what these tests need; without it they are skipped. */
function agentHasClusterSide(): boolean {
  const r = spawnSync(process.execPath, [join(ROOT, 'dist/podnet.mjs'), 'agent', '--help'], { encoding: 'utf8' });
  return /--store/.test(r.stdout);
}

const skip = (() => {
  ensureBuilt();
  return agentHasClusterSide() ? false : 'podnet agent has no --store (cluster side) yet';
})();

after(() => {
  for (const l of labs) if (existsSync(join(LAB_DIR, l))) cli(['down', '--name', l]);
  for (const ns of netnsWithPrefix(`pnlab-${TAG}`)) spawnSync('ip', ['netns', 'del', ns]);
  rmSync(LAB_DIR, { recursive: true, force: true });
});

interface DemoJson {
  backend: string;
  pods: { name: string; node: string; ip: string }[];
  pairs: { from: string; to: string; path: string; ok: boolean }[];
  failures: number;
}

for (const backend of ['vxlan', 'host-gw'] as const) {
  test(`lab demo --backend ${backend}: 3 nodes, 2 pods each, every pod reaches every other pod, the right path, nothing left`, { skip, timeout: 240_000 }, () => {
    const l = labName(backend === 'vxlan' ? 'v' : 'h');
    const r = cli(['demo', '--name', l, '--backend', backend, '-o', 'json']);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const d = JSON.parse(r.stdout) as DemoJson;
    assert.equal(d.pods.length, 6);
    assert.equal(d.pairs.length, 30);
    assert.equal(d.failures, 0, JSON.stringify(d.pairs.filter((p) => !p.ok)));
    const nodeOf = new Map(d.pods.map((p) => [p.name, p.node]));
    for (const p of d.pairs) {
      const expected = nodeOf.get(p.from) === nodeOf.get(p.to) ? 'same node' : backend === 'vxlan' ? 'overlay (vxlan)' : 'routed (host-gw)';
      assert.equal(p.path, expected, `${p.from} → ${p.to}`);
    }
    assert.deepEqual(netnsWithPrefix(`pnlab-${l}-`), []);
    assert.ok(!existsSync(join(LAB_DIR, l)));
  });
}

test('a node added later is reachable from every pod; a node removed leaves no route to its subnet on its peers', { skip, timeout: 240_000 }, () => {
  const l = labName('n');
  let r = cli(['up', '--name', l, '--nodes', '2']);
  assert.equal(r.code, 0, r.stderr);
  for (const [pod, node] of [['a', 'n1'], ['b', 'n2']]) {
    r = cli(['pod', 'add', pod, '--node', node, '--name', l]);
    assert.equal(r.code, 0, r.stderr);
  }
  r = cli(['node', 'add', '--name', l, '-o', 'json']);
  assert.equal(r.code, 0, r.stderr);
  const added = JSON.parse(r.stdout) as { node: string; subnet: string };
  r = cli(['pod', 'add', 'c', '--node', added.node, '--name', l]);
  assert.equal(r.code, 0, r.stderr);
  const st = JSON.parse(readFileSync(join(LAB_DIR, l, 'state.json'), 'utf8')) as { pods: Record<string, { ips: string[] }> };
  for (const src of ['a', 'b']) {
    // within 2 s of the new pod existing (the bar), retried each 200 ms
    r = cli(['exec', src, '--name', l, '--', 'ping', '-c1', '-w2', st.pods.c.ips[0]]);
    assert.equal(r.code, 0, `${src} → c: ${r.stdout}${r.stderr}`);
  }
  r = cli(['node', 'del', added.node, '--name', l]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /deleted/);
  // the peers drop the removed node's subnet as soon as its lease is gone
  let left = '';
  for (let i = 0; i < 20; i++) {
    left = ['n1', 'n2'].map((n) => cli(['exec', n, '--name', l, '--', 'ip', 'route', 'show', added.subnet]).stdout.trim()).join('');
    if (!left) break;
    spawnSync('sleep', ['0.2']);
  }
  assert.equal(left, '', `routes to ${added.subnet} left: ${left}`);
  r = cli(['down', '--name', l]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(netnsWithPrefix(`pnlab-${l}-`), []);
});

test('lab up --store etcd --etcd-members 3: pods on different nodes reach each other', { skip, timeout: 240_000 }, () => {
  const l = labName('e');
  let r = cli(['up', '--name', l, '--nodes', '2', '--store', 'etcd', '--etcd-members', '3']);
  try {
    assert.equal(r.code, 0, r.stderr);
    for (const [pod, node] of [['a', 'n1'], ['b', 'n2']]) {
      r = cli(['pod', 'add', pod, '--node', node, '--name', l]);
      assert.equal(r.code, 0, r.stderr);
    }
    const st = JSON.parse(readFileSync(join(LAB_DIR, l, 'state.json'), 'utf8')) as { pods: Record<string, { ips: string[] }> };
    r = cli(['exec', 'a', '--name', l, '--', 'ping', '-c1', '-w3', st.pods.b.ips[0]]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    r = cli(['status', '--name', l, '-o', 'json']);
    const status = JSON.parse(r.stdout) as { etcd: { alive: boolean }[] };
    assert.deepEqual(status.etcd.map((m) => m.alive), [true, true, true]);
  } finally {
    r = cli(['down', '--name', l]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(netnsWithPrefix(`pnlab-${l}-`), []);
  }
});
