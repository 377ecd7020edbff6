// Delegation both ways with Debian's reference plugins, and chaining after another plugin.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CniHarness } from '../helpers/cni.js';
import { MODE_CASES, setupUnderlay } from '../helpers/modes.js';

const haveRef = existsSync('/usr/lib/cni/host-local') && existsSync('/usr/lib/cni/bridge');

describe('interop with the reference plugins', { skip: haveRef ? false : 'containernetworking-plugins is not installed (/usr/lib/cni)' }, () => {
  let h: CniHarness;
  before(() => {
    h = new CniHarness();
    setupUnderlay(h);
  });
  after(() => h.cleanup());

  for (const c of MODE_CASES) {
    test(`podnet (${c.mode} mode) with ipam.type host-local`, async () => {
      const dataDir = join(h.tmp, `hl-${c.mode}`);
      const name = `thl${c.mode}`;
      const conf = c.conf(name, { type: 'host-local', ranges: c.ranges, dataDir });
      // Debian's host-local (plugins 1.1.1) speaks up to 1.0.0
      if (conf.cniVersion === '1.1.0') conf.cniVersion = '1.0.0';
      const pods = [h.pod('h1'), h.pod('h2')];
      const ips: string[] = [];
      for (const [i, p] of pods.entries()) {
        const r = await h.invoke({ command: 'ADD', containerId: `hl${i}`, netns: h.podPath(p), ifname: 'eth0', conf });
        assert.equal(r.code, 0, r.stdout + r.stderr);
        ips.push((r.json as { ips: { address: string }[] }).ips[0].address.split('/')[0]);
        const chk = await h.invoke({ command: 'CHECK', containerId: `hl${i}`, netns: h.podPath(p), ifname: 'eth0', conf: { ...conf, prevResult: r.json } });
        assert.equal(chk.code, 0, chk.stdout);
      }
      assert.ok(h.ping(pods[0], ips[1]));
      assert.equal(h.reservations(dataDir, name).length, 4, 'host-local holds a v4 and a v6 address per pod');
      for (const [i, p] of pods.entries()) {
        const d = await h.invoke({ command: 'DEL', containerId: `hl${i}`, netns: h.podPath(p), ifname: 'eth0', conf });
        assert.equal(d.code, 0, d.stdout);
      }
      assert.deepEqual(h.reservations(dataDir, name), []);
    });
  }

  test('the reference bridge with ipam.type podnet-ipam', async () => {
    const dataDir = join(h.tmp, 'pi');
    const conf = { cniVersion: '1.0.0', name: 'trefpi', type: 'bridge', bridge: 'pnref0', isGateway: true, isDefaultGateway: true, ipam: { type: 'podnet-ipam', ranges: [[{ subnet: '10.80.2.0/24' }]], dataDir } };
    const pods = [h.pod('r1'), h.pod('r2')];
    const ips: string[] = [];
    for (const [i, p] of pods.entries()) {
      const r = await h.invoke({ command: 'ADD', containerId: `ref${i}`, netns: h.podPath(p), ifname: 'eth0', conf, plugin: 'bridge' });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      ips.push((r.json as { ips: { address: string }[] }).ips[0].address.split('/')[0]);
    }
    assert.notEqual(ips[0], ips[1]);
    assert.ok(h.ping(pods[0], ips[1]));
    assert.equal(h.reservations(dataDir, 'trefpi').length, 2);
    for (const [i, p] of pods.entries()) {
      const d = await h.invoke({ command: 'DEL', containerId: `ref${i}`, netns: h.podPath(p), ifname: 'eth0', conf, plugin: 'bridge' });
      assert.equal(d.code, 0, d.stdout);
    }
    assert.deepEqual(h.reservations(dataDir, 'trefpi'), []);
  });

  test('podnet chained after another plugin keeps and extends prevResult', async () => {
    const dataDir = join(h.tmp, 'ch');
    const p = h.pod('ch');
    const prevResult = { cniVersion: '1.0.0', interfaces: [{ name: 'lo', sandbox: h.podPath(p) }], ips: [{ address: '127.0.0.1/8', interface: 0 }] };
    const conf = { cniVersion: '1.0.0', name: 'tchain', type: 'podnet', mode: 'routed', ipam: { type: 'podnet-ipam', ranges: [[{ subnet: '10.80.3.0/24' }]], dataDir }, prevResult };
    const r = await h.invoke({ command: 'ADD', containerId: 'chain', netns: h.podPath(p), ifname: 'eth0', conf });
    assert.equal(r.code, 0, r.stdout);
    const res = r.json as { interfaces: { name: string }[]; ips: { address: string; interface: number }[] };
    assert.equal(res.interfaces[0].name, 'lo');
    assert.equal(res.ips[0].address, '127.0.0.1/8');
    assert.equal(res.interfaces[res.ips[1].interface].name, 'eth0');
    const d = await h.invoke({ command: 'DEL', containerId: 'chain', netns: h.podPath(p), ifname: 'eth0', conf: { ...conf, prevResult: res } });
    assert.equal(d.code, 0, d.stdout);
  });
});
