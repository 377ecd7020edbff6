import { test } from 'node:test';
import assert from 'node:assert/strict';
import { convertResult, parseResult, SUPPORTED_VERSIONS, requireSupported, compareVersions } from '../../src/cni/version.js';
import type { CniResult } from '../../src/cni/types.js';

const full: CniResult = {
  cniVersion: '1.1.0',
  interfaces: [
    { name: 'cni0', mac: '02:00:00:00:00:01', mtu: 1400 },
    { name: 'veth1', mac: '02:00:00:00:00:02' },
    { name: 'eth0', mac: '02:00:00:00:00:03', sandbox: '/run/netns/x', socketPath: '/s', pciID: '0000:00:01.0' },
  ],
  ips: [
    { address: '10.1.0.5/24', gateway: '10.1.0.1', interface: 2 },
    { address: 'fd00::5/64', gateway: 'fd00::1', interface: 2 },
  ],
  routes: [{ dst: '0.0.0.0/0', gw: '10.1.0.1', mtu: 1400, advmss: 1360, priority: 100, table: 254, scope: 0 }],
  dns: { nameservers: ['10.1.0.1'] },
};

test('every supported version round-trips through its own wire format', () => {
  for (const v of SUPPORTED_VERSIONS) {
    const wire = convertResult(full, v);
    assert.equal(wire.cniVersion, v);
    const back = parseResult(JSON.parse(JSON.stringify(wire)), v);
    assert.deepEqual(back.ips?.map((i) => i.address), ['10.1.0.5/24', 'fd00::5/64']);
    assert.equal(back.interfaces?.length, 3);
    assert.equal(back.routes?.[0].gw, '10.1.0.1');
  }
});

test('0.3.x and 0.4.0 carry ips[].version; 1.0.0+ do not', () => {
  for (const v of ['0.3.0', '0.3.1', '0.4.0']) {
    const ips = convertResult(full, v).ips as Record<string, unknown>[];
    assert.deepEqual(ips.map((i) => i.version), ['4', '6']);
  }
  for (const v of ['1.0.0', '1.1.0']) {
    const ips = convertResult(full, v).ips as Record<string, unknown>[];
    assert.ok(ips.every((i) => !('version' in i)));
  }
});

test('1.1.0-only fields (route mtu/advmss/priority/table/scope, interface mtu/socketPath/pciID) appear only in 1.1.0', () => {
  const r110 = convertResult(full, '1.1.0');
  assert.deepEqual((r110.routes as object[])[0], full.routes![0]);
  assert.equal((r110.interfaces as Record<string, unknown>[])[2].socketPath, '/s');
  assert.equal((r110.interfaces as Record<string, unknown>[])[0].mtu, 1400);
  for (const v of ['0.3.1', '0.4.0', '1.0.0']) {
    const r = convertResult(full, v);
    assert.deepEqual((r.routes as object[])[0], { dst: '0.0.0.0/0', gw: '10.1.0.1' });
    const itf = r.interfaces as Record<string, unknown>[];
    assert.ok(!('mtu' in itf[0]) && !('socketPath' in itf[2]) && !('pciID' in itf[2]));
  }
});

test('unknown or missing cniVersion is error code 1', () => {
  for (const v of ['0.2.0', '2.0.0', '', undefined, 5]) {
    assert.throws(() => requireSupported(v), (e: { code?: number }) => e.code === 1);
  }
  assert.equal(requireSupported('0.4.0'), '0.4.0');
});

test('version comparison', () => {
  assert.equal(compareVersions('0.4.0', '1.0.0'), -1);
  assert.equal(compareVersions('1.1.0', '1.1.0'), 0);
  assert.equal(compareVersions('1.10.0', '1.9.0'), 1);
});

test('a malformed prevResult is a decode failure (code 6)', () => {
  assert.throws(() => parseResult({ ips: 'x' }, '1.0.0'), (e: { code?: number }) => e.code === 6);
  assert.throws(() => parseResult({ ips: [{ gateway: '1.2.3.4' }] }, '1.0.0'), (e: { code?: number }) => e.code === 6);
});
