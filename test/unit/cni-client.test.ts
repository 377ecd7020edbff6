import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renderClientConf } from '../../src/cni/install.js';

test('the client config holds one path per line and refuses line breaks', () => {
  assert.equal(renderClientConf({ socket: '/run/podnet/podnet.sock', node: '/usr/bin/node', bundle: '/b.mjs' }), 'socket=/run/podnet/podnet.sock\nnode=/usr/bin/node\nbundle=/b.mjs\n');
  assert.throws(() => renderClientConf({ socket: '/x\nnode=/bin/sh', node: '/n', bundle: '/b' }));
});
