import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseEnv, parseCniArgs, validateIfname } from '../../src/cni/env.js';

const base = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'abc123', CNI_NETNS: '/proc/1/ns/net', CNI_IFNAME: 'eth0', CNI_PATH: '/opt/cni/bin', CNI_NETNS_OVERRIDE: '1' };
const code = (n: number) => (e: { code?: number }) => e.code === n;

test('missing variables are named, code 4', () => {
  assert.throws(() => parseEnv({ ...base, CNI_IFNAME: undefined }), (e: { code?: number; message: string }) => e.code === 4 && e.message.includes('CNI_IFNAME'));
  assert.throws(() => parseEnv({ ...base, CNI_PATH: '' }), code(4));
  assert.throws(() => parseEnv({ ...base, CNI_COMMAND: undefined }), code(4));
  assert.throws(() => parseEnv({ ...base, CNI_COMMAND: 'FROB' }), code(4));
});

test('DEL does not need CNI_NETNS; GC needs only CNI_PATH; STATUS nothing', () => {
  assert.equal(parseEnv({ ...base, CNI_COMMAND: 'DEL', CNI_NETNS: '' }).command, 'DEL');
  assert.equal(parseEnv({ CNI_COMMAND: 'GC', CNI_PATH: '/x' }).command, 'GC');
  assert.equal(parseEnv({ CNI_COMMAND: 'STATUS' }).command, 'STATUS');
  assert.throws(() => parseEnv({ CNI_COMMAND: 'GC' }), code(4));
});

test('interface names as skel validates them', () => {
  for (const bad of ['', '.', '..', 'a/b', 'a:b', 'a b', 'a\tb', 'abcdefghijklmnop']) assert.throws(() => validateIfname(bad), code(4), bad);
  for (const good of ['eth0', 'net1', 'abcdefghijklmno', 'e-th_0.1']) validateIfname(good);
});

test('container IDs: empty is code 3 only past the missing check; bad characters code 4', () => {
  assert.throws(() => parseEnv({ ...base, CNI_CONTAINERID: '-abc' }), code(4));
  assert.throws(() => parseEnv({ ...base, CNI_CONTAINERID: 'a;rm -rf /' }), code(4));
  assert.throws(() => parseEnv({ ...base, CNI_CONTAINERID: '' }), code(4));
});

test('netns: relative, missing, directory and our own netns are refused', () => {
  const noOverride = { ...base, CNI_NETNS_OVERRIDE: undefined };
  assert.throws(() => parseEnv({ ...noOverride, CNI_NETNS: 'run/netns/x' }), code(4));
  assert.throws(() => parseEnv({ ...noOverride, CNI_NETNS: '/run/netns/does-not-exist-xyz' }), code(4));
  assert.throws(() => parseEnv({ ...noOverride, CNI_NETNS: '/tmp' }), code(4));
  assert.throws(() => parseEnv({ ...noOverride, CNI_NETNS: '/proc/self/ns/net' }), (e: { code?: number; message: string }) => e.code === 4 && /own network namespace/.test(e.message));
  assert.throws(() => parseEnv({ ...noOverride, CNI_NETNS: `/proc/${process.pid}/ns/net` }), code(4));
});

test('CNI_ARGS: known keys validated, unknown keys need IgnoreUnknown, shell characters refused', () => {
  assert.deepEqual(parseCniArgs('IgnoreUnknown=1;K8S_POD_NAME=web-0;FOO=bar'), { IgnoreUnknown: '1', K8S_POD_NAME: 'web-0', FOO: 'bar' });
  assert.throws(() => parseCniArgs('FOO=bar'), code(4));
  assert.throws(() => parseCniArgs('K8S_POD_NAME=$(reboot)'), code(4));
  assert.throws(() => parseCniArgs('IP=10.0.0.1;`id`'), code(4));
  assert.throws(() => parseCniArgs('IP=1.2.3.4 && rm'), code(4));
  assert.deepEqual(parseCniArgs(''), {});
});
