// Bad input gets the right CNI error code on stdout, a non-zero exit, and leaves the node as it was.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { CniHarness, type CniCall } from '../helpers/cni.js';

describe('bad input', () => {
  let h: CniHarness;
  let dataDir: string;
  let pod: string;
  let conf: Record<string, unknown>;
  let baseline: string;

  const snapshot = () =>
    [
      h.exec(h.nodeNs, ['ip', '-br', 'link']),
      h.exec(h.nodeNs, ['ip', '-br', 'addr']),
      h.exec(h.nodeNs, ['ip', 'route']),
      h.exec(h.nodeNs, ['nft', 'list', 'ruleset']),
      h.exec(pod, ['ip', '-br', 'link']),
      h.reservations(dataDir, 'terr').join(','),
    ].join('\n');

  before(() => {
    h = new CniHarness();
    dataDir = join(h.tmp, 'ipam');
    pod = h.pod('p');
    conf = { cniVersion: '1.0.0', name: 'terr', type: 'podnet', bridge: 'pnerr0', isGateway: true, ipMasq: true, ipam: { type: 'podnet-ipam', ranges: [[{ subnet: '10.78.0.0/30' }]], dataDir } };
    baseline = snapshot();
  });
  after(() => h.cleanup());

  const base = (): CniCall => ({ command: 'ADD', containerId: 'bad1', netns: h.podPath(pod), ifname: 'eth0', conf });

  const cases: [string, () => CniCall, number][] = [
    ['malformed JSON', () => ({ ...base(), conf: '{"cniVersion": "1.0.0", ' }), 6],
    ['unknown cniVersion', () => ({ ...base(), conf: { ...conf, cniVersion: '9.9.9' } }), 1],
    ['missing CNI_NETNS', () => ({ ...base(), netns: undefined }), 4],
    ['CNI_NETNS that does not exist', () => ({ ...base(), netns: '/run/netns/podnet-no-such-ns' }), 4],
    ['CNI_NETNS that is the node itself', () => ({ ...base(), netns: '/proc/self/ns/net' }), 4],
    ['invalid CNI_IFNAME', () => ({ ...base(), ifname: 'eth/0' }), 4],
    ['over-long CNI_IFNAME', () => ({ ...base(), ifname: 'a-very-long-ifname0' }), 4],
    ['CNI_ARGS with shell characters', () => ({ ...base(), args: 'K8S_POD_NAME=$(touch /tmp/pwned);IgnoreUnknown=1' }), 4],
    ['unknown mode', () => ({ ...base(), conf: { ...conf, mode: 'wormhole' } }), 7],
    ['a master that does not exist', () => ({ ...base(), conf: { ...conf, mode: 'macvlan', master: 'nosuchnic0' } }), 7],
    ['ipvlan on a kernel without it', () => ({ ...base(), conf: { ...conf, mode: 'ipvlan', master: 'lo' } }), 101],
    ['CHECK with a 0.3.1 config', () => ({ ...base(), command: 'CHECK', conf: { ...conf, cniVersion: '0.3.1' } }), 1],
  ];

  for (const [what, call, code] of cases) {
    test(`${what} → code ${code}, nothing changed`, async () => {
      const r = await h.invoke(call());
      assert.notEqual(r.code, 0);
      assert.ok(r.json, `stdout is not error JSON: ${r.stdout}`);
      assert.equal(r.json!.code, code, `got ${JSON.stringify(r.json)}`);
      assert.equal(typeof r.json!.msg, 'string');
      assert.equal(snapshot(), baseline);
    });
  }

  test('an ifname that already exists in the pod: error, and the allocation is rolled back', async () => {
    h.exec(pod, ['ip', 'link', 'add', 'name', 'eth0', 'type', 'veth', 'peer', 'name', 'other0']);
    try {
      const r = await h.invoke(base());
      assert.notEqual(r.code, 0);
      assert.equal(r.json?.code, 103, JSON.stringify(r.json));
      assert.deepEqual(h.reservations(dataDir, 'terr'), []);
      assert.deepEqual(h.nodeLinks().filter((l) => l.ifname.startsWith('veth')), []);
    } finally {
      h.exec(pod, ['ip', 'link', 'del', 'eth0']);
    }
  });

  test('an exhausted range: ADD fails with the IPAM code and STATUS answers 50; after DEL both recover', async () => {
    // a /30 has one usable address besides the gateway
    const pods = [h.pod('x1'), h.pod('x2')];
    const first = await h.invoke({ ...base(), containerId: 'ex1', netns: h.podPath(pods[0]) });
    assert.equal(first.code, 0, first.stdout);
    const status = await h.invoke({ command: 'STATUS', conf: { ...conf, cniVersion: '1.1.0' } });
    assert.equal(status.json?.code, 50, status.stdout);
    const second = await h.invoke({ ...base(), containerId: 'ex2', netns: h.podPath(pods[1]) });
    assert.notEqual(second.code, 0);
    assert.equal(second.json?.code, 102, second.stdout);
    assert.equal(h.exec(pods[1], ['ip', '-br', 'link']).includes('eth0'), false);
    const del = await h.invoke({ ...base(), command: 'DEL', containerId: 'ex1', netns: h.podPath(pods[0]) });
    assert.equal(del.code, 0);
    const ok = await h.invoke({ command: 'STATUS', conf: { ...conf, cniVersion: '1.1.0' } });
    assert.equal(ok.code, 0, ok.stdout);
  });

  test('VERSION answers every supported version', async () => {
    const r = await h.invoke({ command: 'VERSION', conf: { cniVersion: '1.1.0' } });
    assert.equal(r.code, 0);
    assert.deepEqual((r.json as { supportedVersions: string[] }).supportedVersions, ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']);
  });
});
