// podman 4.3 (CNI backend) on the network under test
// (PODNET_RUNTIME_PLUGIN=reference|podnet, see networks.ts).
//   node --import tsx --test test/runtimes/podman.test.ts
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { podmanUnavailableReason, withPodman } from './harness/podman.js';
import { netnsExists, pidsUsing } from './harness/common.js';
import { formatCniCalls } from './harness/network.js';
import { networkUnderTest, pluginChoice, referencePluginsAvailable } from './networks.js';

const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

function skipReason(): string | undefined {
  const r = podmanUnavailableReason();
  if (r) return r;
  if (pluginChoice() === 'reference' && !referencePluginsAvailable()) return 'reference CNI plugins not in /usr/lib/cni (containernetworking-plugins)';
  return undefined;
}
const skip = skipReason();
if (skip) console.log(`# podman runtime test skipped: ${skip}`);

test(`podman: two containers on the ${pluginChoice()} network reach each other and leave nothing behind`, { skip: skip ?? false, timeout: 90_000 }, async (t) => {
  const tmp = await mkdtemp(join(tmpdir(), 'pnrt-pnet-'));
  t.after(() => rm(tmp, { recursive: true, force: true }));
  const net = await networkUnderTest(tmp, { name: 'podnet-rt', subnet: '10.88.9.0/24' });

  let runtimeNetns = '';
  let runtimeDir = '';
  await withPodman(net, async (h) => {
    runtimeNetns = h.netns;
    runtimeDir = h.dir;
    const t0 = Date.now();
    const a = await h.run('ctr-a');
    const b = await h.run('ctr-b');
    t.diagnostic(`two containers up in ${Date.now() - t0} ms: ${a.ip} ${b.ip}`);
    assert.match(a.ip, IPV4, 'ctr-a has an IPv4 on the network');
    assert.match(b.ip, IPV4, 'ctr-b has an IPv4 on the network');
    assert.notEqual(a.ip, b.ip);
    assert.ok((await h.veths()).length >= 2, `veths while containers run:\n${await h.describe()}`);

    for (const [from, to] of [[a, b], [b, a]] as const) {
      const r = await h.ping(from, to.ip);
      assert.equal(r.exitCode, 0, `ping ${from.name} -> ${to.ip} failed: ${r.stdout}${r.stderr}\n${await h.describe()}`);
    }

    const t1 = Date.now();
    await h.remove(a);
    await h.remove(b);
    t.diagnostic(`two containers removed in ${Date.now() - t1} ms`);

    assert.deepEqual(await h.veths(), [], `veths left in ${h.netns}:\n${await h.describe()}`);
    assert.deepEqual(await net.leakedAllocations(), [], 'IPAM allocations left after podman rm');
    for (const c of [a, b]) if (c.sandboxKey) assert.ok(!existsSync(c.sandboxKey), `container netns ${c.sandboxKey} left`);

    const calls = await h.cniCalls();
    t.diagnostic(`CNI calls:\n${formatCniCalls(calls)}`);
    const main = net.conflist.plugins[0]!.type;
    for (const c of [a, b]) {
      const mine = calls.filter((x) => x.plugin === main && x.containerId === c.id);
      assert.equal(mine.filter((x) => x.command === 'ADD').length, 1, `one ADD for ${c.name}`);
      assert.ok(mine.filter((x) => x.command === 'DEL').length >= 1, `DEL for ${c.name}`);
      assert.ok(mine.some((x) => x.command === 'ADD' && x.netns === c.sandboxKey && x.ifname === 'eth0'), `ADD for ${c.name} carries its netns and eth0`);
      assert.ok(mine.some((x) => x.args.includes(`K8S_POD_NAME=${c.name}`)), `CNI_ARGS for ${c.name} carry K8S_POD_NAME`);
    }
  });

  assert.ok(runtimeNetns && !netnsExists(runtimeNetns), `runtime netns ${runtimeNetns} removed`);
  assert.ok(!existsSync(runtimeDir), `runtime dir ${runtimeDir} removed`);
  assert.deepEqual(pidsUsing(runtimeDir), [], 'no podman/conmon/container process left');
});
