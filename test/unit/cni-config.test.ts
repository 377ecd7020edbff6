import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parsePodnetConfig } from '../../src/cni/config.js';

const base = { cniVersion: '1.0.0', name: 'n', type: 'podnet', ipam: { type: 'podnet-ipam' } };
const code7 = (field: string) => (e: { code?: number; message: string }) => e.code === 7 && e.message.startsWith(field);

test('defaults follow the reference bridge plugin', () => {
  const c = parsePodnetConfig(base);
  assert.equal(c.mode, 'bridge');
  assert.equal(c.bridge, 'cni0');
  assert.equal(c.isGateway, false);
  assert.equal(c.ipMasq, false);
  assert.equal(c.mtu, undefined);
});

test('isDefaultGateway implies isGateway; routed is always a gateway', () => {
  assert.equal(parsePodnetConfig({ ...base, isDefaultGateway: true }).isGateway, true);
  assert.equal(parsePodnetConfig({ ...base, mode: 'routed' }).isGateway, true);
});

test('bad fields are code 7 and name the field', () => {
  assert.throws(() => parsePodnetConfig({ ...base, mode: 'vxlan' }), code7('mode'));
  assert.throws(() => parsePodnetConfig({ ...base, mtu: 20 }), code7('mtu'));
  assert.throws(() => parsePodnetConfig({ ...base, mtu: '1500' }), code7('mtu'));
  assert.throws(() => parsePodnetConfig({ ...base, bridge: 'a/b' }), code7('bridge'));
  assert.throws(() => parsePodnetConfig({ ...base, bridge: 'abcdefghijklmnopq' }), code7('bridge'));
  assert.throws(() => parsePodnetConfig({ ...base, master: 'eth 0' }), code7('master'));
  assert.throws(() => parsePodnetConfig({ ...base, ipMasq: 'yes' }), code7('ipMasq'));
  assert.throws(() => parsePodnetConfig({ ...base, ipam: undefined }), code7('ipam'));
  assert.throws(() => parsePodnetConfig({ ...base, ipam: {} }), code7('ipam.type'));
  assert.throws(() => parsePodnetConfig({ ...base, ipam: { type: '../../bin/sh' } }), code7('ipam.type'));
  assert.throws(() => parsePodnetConfig({ ...base, mode: 'macvlan', macvlanMode: 'x' }), code7('macvlanMode'));
});
