// `podnet trace --from-netns` on pods the CNI plugin wired in each of its modes (a node namespace
// and pods, as a runtime would make them): bridge (the node's bridge switches pod to pod), routed
// (a veth per pod and host routes: pod -> node -> pod, no bridge), macvlan (an underlay pod: pod to
// pod directly on the parent, pod to the gateway out of the node's NIC). Each path is complete, in
// the namespaces the mode puts on it, and a real ping agrees; a pod is also found by its container ID.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { CniHarness } from '../helpers/cni.js';
import { ensureLabBundle } from '../helpers/lab.js';
import { MODE_CASES, type Conf } from '../helpers/modes.js';
import type { TraceResult } from '../../src/trace/types.js';

const PODNET = new URL('../../dist/podnet.mjs', import.meta.url).pathname;

function trace(from: string | undefined, src: string, dst: string, extra: string[] = []): { code: number; r: TraceResult; out: string } {
  const where = from ? ['--from-netns', `/run/netns/${from}`] : ['--host'];
  const p = spawnSync(process.execPath, [PODNET, 'trace', ...where, ...extra, src, dst, '-o', 'json'], { encoding: 'utf8' });
  let r: TraceResult;
  try {
    r = JSON.parse(p.stdout) as TraceResult;
  } catch {
    assert.fail(`podnet trace printed no JSON (exit ${p.status}): ${p.stdout}${p.stderr}`);
  }
  return { code: p.status ?? 1, r, out: p.stdout + p.stderr };
}

for (const c of MODE_CASES) {
  describe(`podnet trace: ${c.mode} mode pods`, () => {
    let h: CniHarness;
    let conf: Conf;
    const pods: { ns: string; ip: string; id: string }[] = [];
    before(async () => {
      ensureLabBundle();
      h = new CniHarness();
      conf = c.conf(`tr${c.mode}`, { type: 'podnet-ipam', ranges: c.ranges, dataDir: join(h.tmp, 'ipam') });
      c.setupNode?.(h);
      for (const tag of ['a', 'b']) {
        const ns = h.pod(tag);
        // container IDs as runtimes make them: 64 hex digits
        const id = randomBytes(32).toString('hex');
        const r = await h.invoke({ command: 'ADD', containerId: id, netns: h.podPath(ns), ifname: 'eth0', conf });
        assert.equal(r.code, 0, `ADD: ${r.stdout} ${r.stderr}`);
        pods.push({ ns, ip: (r.json as { ips: { address: string }[] }).ips[0].address.split('/')[0], id });
      }
    });
    after(async () => {
      await h.cleanup();
    });

    test('pod to pod: complete through the namespaces of the mode, and a ping agrees', () => {
      const [a, b] = pods;
      const t = trace(a.ns, a.ip, b.ip);
      assert.equal(t.code, 0, t.out);
      const path = t.r.hops.map((x) => x.ns);
      const kinds = t.r.hops.flatMap((x) => x.steps.map((s) => s.kind));
      if (c.mode === 'macvlan') {
        // bridge-mode siblings on the node's NIC: straight from one pod to the other
        assert.deepEqual(path, [a.ns, b.ns], t.out);
        assert.ok(kinds.includes('macvlan'), t.out);
      } else {
        assert.deepEqual(path, [a.ns, h.nodeNs, b.ns], t.out);
        if (c.mode === 'bridge') assert.ok(t.r.hops[1].steps.some((s) => s.kind === 'bridge'), t.out);
        else {
          // routed: the node routes by a host route to the pod's veth; no bridge anywhere
          assert.ok(!kinds.includes('bridge'), t.out);
          assert.match(t.r.hops[1].steps.find((s) => s.kind === 'route')!.text, new RegExp(`route ${b.ip.replace(/\./g, '\\.')}/32`), t.out);
        }
      }
      assert.equal(t.r.hops.at(-1)!.steps.at(-1)!.kind, 'deliver');
      assert.ok(h.ping(a.ns, b.ip));
      const v = trace(a.ns, a.ip, b.ip, ['--verify']);
      assert.equal(v.code, 0, v.out);
      assert.equal(v.r.verify?.agrees, true, `the kernel disagrees: ${JSON.stringify(v.r.verify, null, 1)}`);
    });

    test('pod to its gateway', () => {
      const [a] = pods;
      const gw = c.gateways[0];
      const t = trace(a.ns, a.ip, gw);
      assert.equal(t.code, 0, t.out);
      const last = t.r.hops.at(-1)!;
      if (c.mode === 'macvlan') {
        // the gateway is the underlay's router: out of the pod's macvlan, its parent eth0, the uplink
        assert.notEqual(last.ns, h.nodeNs, t.out);
        assert.ok(t.r.hops.some((x) => x.ns === h.nodeNs), `the frame leaves by the node's NIC: ${t.out}`);
      } else assert.equal(last.ns, h.nodeNs, t.out);
      assert.ok(h.ping(a.ns, gw));
    });

    test("from a pod by its container ID (the CNI's host link alias, or its IPAM reservation)", () => {
      const [a, b] = pods;
      const t = trace(undefined, a.id.slice(0, 12), b.ip, ['--ipam-dir', join(h.tmp, 'ipam')]);
      assert.equal(t.code, 0, t.out);
      assert.equal(t.r.hops[0].ns, a.ns);
      assert.equal(t.r.query.src, a.ip);
      assert.equal(t.r.hops.at(-1)!.ns, b.ns);
      const none = spawnSync(process.execPath, [PODNET, 'trace', '--host', '--ipam-dir', join(h.tmp, 'ipam'), 'abcdef0123', b.ip], { encoding: 'utf8' });
      assert.equal(none.status, 2, none.stderr);
      assert.match(none.stderr, /no pod of container abcdef0123 here/);
    });

    test('node to pod', () => {
      const [a] = pods;
      const t = trace(h.nodeNs, '-', a.ip);
      assert.equal(t.code, 0, t.out);
      assert.equal(t.r.hops.at(-1)!.ns, a.ns);
    });
  });
}
