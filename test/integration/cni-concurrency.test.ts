// Concurrent ADDs never share an address, with and without the agent; a plugin or agent killed
// with SIGKILL in the middle of ADDs leaves nothing GC cannot reclaim.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { CniHarness } from '../helpers/cni.js';
import { MODE_CASES } from '../helpers/modes.js';

const N = 20;

for (const c of MODE_CASES) {
for (const agent of [false, true]) {
  describe(`concurrency, ${c.mode} mode (${agent ? 'agent' : 'standalone'})`, () => {
    let h: CniHarness;
    let dataDir: string;
    let conf: Record<string, unknown>;
    before(async () => {
      h = new CniHarness();
      dataDir = join(h.tmp, 'ipam');
      conf = c.conf('tconc', { type: 'podnet-ipam', ranges: c.smallRanges, dataDir });
      c.setupNode?.(h);
      if (agent) await h.startAgent();
    });
    after(() => h.cleanup());

    test(`${N} concurrent ADDs get ${N} distinct addresses; ${N} concurrent DELs leave nothing`, async () => {
      const pods = Array.from({ length: N }, (_, i) => h.pod(`c${i}`));
      const results = await Promise.all(pods.map((p, i) => h.invoke({ command: 'ADD', containerId: `conc${i}`, netns: h.podPath(p), ifname: 'eth0', conf })));
      for (const r of results) assert.equal(r.code, 0, r.stdout + r.stderr);
      const addrs = results.map((r) => (r.json as { ips: { address: string }[] }).ips[0].address);
      assert.equal(new Set(addrs).size, N, `duplicates in ${addrs.join(' ')}`);
      if (conf.ipMasq) {
        // the shared masquerade rules exist exactly once despite the concurrent ADDs
        const chain = h.exec(h.nodeNs, ['nft', 'list', 'chain', 'inet', 'podnet', 'cni-masquerade']);
        assert.equal((chain.match(/masquerade comment/g) ?? []).length, 2, chain);
      }
      assert.ok(h.ping(pods[0], addrs[N - 1].split('/')[0]));
      const dels = await Promise.all(pods.map((p, i) => h.invoke({ command: 'DEL', containerId: `conc${i}`, netns: h.podPath(p), ifname: 'eth0', conf })));
      for (const d of dels) assert.equal(d.code, 0, d.stdout);
      assert.deepEqual(h.reservations(dataDir, 'tconc'), []);
      assert.deepEqual(h.nodeLinks().filter((l) => l.ifname.startsWith('veth')), []);
    });

    test('SIGKILL in the middle of ADDs, then GC: the full range is allocatable again', async () => {
      const pods = Array.from({ length: 10 }, (_, i) => h.pod(`k${i}`));
      const inflight = pods.map((p, i) => h.start({ command: 'ADD', containerId: `kill${i}`, netns: h.podPath(p), ifname: 'eth0', conf }));
      await new Promise((r) => setTimeout(r, agent ? 60 : 250));
      if (agent) {
        await h.stopAgent('SIGKILL');
      } else {
        for (const c of inflight) c.child.kill('SIGKILL');
      }
      await Promise.all(inflight.map((c) => c.done));
      if (agent) await h.startAgent();
      // the runtime's GC: nothing is valid any more
      const gc = await h.invoke({ command: 'GC', conf: { ...conf, cniVersion: '1.1.0', 'cni.dev/valid-attachments': [] } });
      assert.equal(gc.code, 0, gc.stdout);
      assert.deepEqual(h.reservations(dataDir, 'tconc'), []);
      assert.deepEqual(h.nodeLinks().filter((l) => l.ifname.startsWith('veth')), []);
      const hostRoutes = h.exec(h.nodeNs, ['ip', 'route', 'show']);
      assert.equal(/192\.168\.77\.1\d\d /.test(hostRoutes), false, `host routes to killed underlay pods left: ${hostRoutes}`);
      // the whole range can be handed out again
      const again = Array.from({ length: c.smallSize }, (_, i) => h.pod(`r${i}`));
      const res = [];
      for (const [i, p] of again.entries()) res.push(await h.invoke({ command: 'ADD', containerId: `re${i}`, netns: h.podPath(p), ifname: 'eth0', conf }));
      for (const r of res) assert.equal(r.code, 0, r.stdout);
      const gc2 = await h.invoke({ command: 'GC', conf: { ...conf, cniVersion: '1.1.0', 'cni.dev/valid-attachments': [] } });
      assert.equal(gc2.code, 0, gc2.stdout);
      assert.deepEqual(h.reservations(dataDir, 'tconc'), []);
    });
  });
}
}
