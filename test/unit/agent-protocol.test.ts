import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeRequest, encodeRequest, decodeResponse, encodeResponse } from '../../src/agent/protocol.js';
import { renderThinClient } from '../../src/cni/install.js';

test('requests round-trip, empty values mean unset, odd characters survive', () => {
  const req = { env: { CNI_COMMAND: 'ADD', CNI_ARGS: 'K8S_POD_NAME=a;b=$(x)\n"q"' }, stdin: '{"a":"b"}\n\n' };
  assert.deepEqual(decodeRequest(encodeRequest(req)), req);
  const withEmpty = Buffer.from('PODNET1\0CNI_COMMAND=DEL\0CNI_NETNS=\0\0{}');
  assert.deepEqual(decodeRequest(withEmpty), { env: { CNI_COMMAND: 'DEL' }, stdin: '{}' });
  assert.throws(() => decodeRequest(Buffer.from('GET / HTTP/1.1\r\n')));
  assert.throws(() => decodeRequest(Buffer.from('PODNET1\0CNI_COMMAND=ADD')));
});

test('responses round-trip', () => {
  const r = { exitCode: 1, stdout: '{"code":7}\n', stderr: '' };
  assert.deepEqual(decodeResponse(encodeResponse(r)), r);
  assert.throws(() => decodeResponse(Buffer.from('')));
});

test('the thin client quotes its paths and answers VERSION itself', () => {
  const s = renderThinClient({ plugin: 'podnet', node: "/usr/bin/no'de", bundle: '/b', socket: '/run/podnet/podnet.sock', versions: ['1.0.0'] });
  assert.match(s, /node='\/usr\/bin\/no'\\''de'/);
  assert.match(s, /"\$CNI_COMMAND" = VERSION/);
});
