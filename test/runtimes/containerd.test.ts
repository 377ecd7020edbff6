// containerd 1.6 CRI, driven like kubelet, on the network under test
// (PODNET_RUNTIME_PLUGIN=reference|podnet, see networks.ts).
//   node --import tsx --test test/runtimes/containerd.test.ts
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { containerdUnavailableReason, withContainerd } from './harness/containerd.js';
import { netnsExists, pidsUsing } from './harness/common.js';
import { formatCniCalls } from './harness/network.js';
import { networkUnderTest, pluginChoice, referencePluginsAvailable } from './networks.js';

const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

function skipReason(): string | undefined {
  const r = containerdUnavailableReason();
  if (r) return r;
  if (pluginChoice() === 'reference' && !referencePluginsAvailable()) return 'reference CNI plugins not in /usr/lib/cni (containernetworking-plugins)';
  return undefined;
}
const skip = skipReason();
if (skip) console.log(`# containerd runtime test skipped: ${skip}`);

test(`containerd CRI: two pods on the ${pluginChoice()} network reach each other and leave nothing behind`, { skip: skip ?? false, timeout: 90_000 }, async (t) => {
  const tmp = await mkdtemp(join(tmpdir(), 'pnrt-cnet-'));
  t.after(() => rm(tmp, { recursive: true, force: true }));
  const net = await networkUnderTest(tmp, { name: 'podnet-rt', subnet: '10.88.7.0/24' });

  let runtimeNetns = '';
  let runtimeDir = '';
  await withContainerd(net, async (h) => {
    runtimeNetns = h.netns;
    runtimeDir = h.dir;
    const t0 = Date.now();
    const a = await h.runPod('pod-a');
    const b = await h.runPod('pod-b');
    t.diagnostic(`two pods up in ${Date.now() - t0} ms: ${a.ip} ${b.ip}`);
    assert.match(a.ip, IPV4, 'pod-a has an IPv4 from PodSandboxStatus.network.ip');
    assert.match(b.ip, IPV4, 'pod-b has an IPv4 from PodSandboxStatus.network.ip');
    assert.notEqual(a.ip, b.ip);
    assert.ok((await h.veths()).length >= 2, `veths while pods run:\n${await h.describe()}`);

    for (const [from, to] of [[a, b], [b, a]] as const) {
      const r = await h.ping(from, to.ip);
      assert.equal(r.exitCode, 0, `ping ${from.name} -> ${to.ip} failed: ${r.stdout}${r.stderr}\n${await h.describe()}`);
    }

    const t1 = Date.now();
    await h.removePod(a);
    await h.removePod(b);
    t.diagnostic(`two pods removed in ${Date.now() - t1} ms`);

    assert.deepEqual(await h.veths(), [], `veths left in ${h.netns}:\n${await h.describe()}`);
    assert.deepEqual(await net.leakedAllocations(), [], 'IPAM allocations left after RemovePodSandbox');
    for (const p of [a, b]) if (p.netnsPath) assert.ok(!existsSync(p.netnsPath), `pod netns ${p.netnsPath} left`);

    const calls = await h.cniCalls();
    t.diagnostic(`CNI calls:\n${formatCniCalls(calls)}`);
    const main = net.conflist.plugins[0]!.type;
    for (const p of [a, b]) {
      const mine = calls.filter((c) => c.plugin === main && c.containerId === p.sandboxId);
      assert.equal(mine.filter((c) => c.command === 'ADD').length, 1, `one ADD for ${p.name}`);
      assert.ok(mine.filter((c) => c.command === 'DEL').length >= 1, `DEL for ${p.name}`);
      assert.ok(mine.some((c) => c.command === 'ADD' && c.netns === p.netnsPath && c.ifname === 'eth0'), `ADD for ${p.name} carries its netns and eth0`);
      assert.ok(mine.some((c) => c.args.includes(`K8S_POD_NAME=${p.name}`)), `CNI_ARGS for ${p.name} carry K8S_POD_NAME`);
    }
  });

  // the harness tore everything down
  assert.ok(runtimeNetns && !netnsExists(runtimeNetns), `runtime netns ${runtimeNetns} removed`);
  assert.ok(!existsSync(runtimeDir), `runtime dir ${runtimeDir} removed`);
  assert.deepEqual(pidsUsing(runtimeDir), [], 'no containerd/shim/container process left');
});
