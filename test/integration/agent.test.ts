// The agent's CNI socket: root-only, a bad request answers its own error and the agent keeps
// serving, and the installed client falls back to standalone when the agent is gone.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { CniHarness } from '../helpers/cni.js';
import { decodeResponse, encodeRequest } from '../../src/agent/protocol.js';

function raw(sock: string, payload: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const c = connect(sock);
    const chunks: Buffer[] = [];
    c.on('data', (d) => chunks.push(d));
    c.on('end', () => resolve(Buffer.concat(chunks)));
    c.on('error', reject);
    c.end(payload);
  });
}

for (const client of ['compiled', 'shell'] as const) {
describe(`agent, with the ${client} client`, () => {
  let h: CniHarness;
  let conf: Record<string, unknown>;
  before(async () => {
    h = new CniHarness({ shellClient: client === 'shell' });
    conf = { cniVersion: '1.0.0', name: 'tagent', type: 'podnet', mode: 'routed', ipam: { type: 'podnet-ipam', ranges: [[{ subnet: '10.81.0.0/24' }]], dataDir: join(h.tmp, 'ipam') } };
    await h.startAgent();
  });
  after(() => h.cleanup());

  test('the socket is a root-only unix socket', () => {
    const st = statSync(h.sock);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600);
  });

  test('garbage and broken requests get CNI errors; the agent keeps serving', async () => {
    const g = decodeResponse(await raw(h.sock, Buffer.from('GET / HTTP/1.1\r\n\r\n')));
    assert.equal(g.exitCode, 1);
    assert.equal(JSON.parse(g.stdout).code, 105);
    const bad = decodeResponse(await raw(h.sock, encodeRequest({ env: { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'x', CNI_NETNS: h.podPath(h.pod('bad')), CNI_IFNAME: 'eth0', CNI_PATH: h.binDir }, stdin: '{not json' })));
    assert.equal(JSON.parse(bad.stdout).code, 6);
    // a connection dropped half-way must not hurt either
    await new Promise<void>((resolve) => {
      const c = connect(h.sock, () => {
        c.write('PODNET1\0CNI_COM');
        c.destroy();
        resolve();
      });
    });
    const p = h.pod('ok');
    const r = await h.invoke({ command: 'ADD', containerId: 'alive', netns: h.podPath(p), ifname: 'eth0', conf });
    assert.equal(r.code, 0, r.stdout);
    assert.equal(h.agent?.exitCode, null, 'agent exited');
    const d = await h.invoke({ command: 'DEL', containerId: 'alive', netns: h.podPath(p), ifname: 'eth0', conf });
    assert.equal(d.code, 0, d.stdout);
  });

  test('the request reaches the agent (its log shows it), and with the agent stopped the client works standalone', async () => {
    const p = h.pod('sa');
    const st = await h.invoke({ command: 'STATUS', conf: { ...conf, cniVersion: '1.1.0' } });
    assert.equal(st.code, 0, st.stdout);
    await h.stopAgent();
    const r = await h.invoke({ command: 'ADD', containerId: 'standalone', netns: h.podPath(p), ifname: 'eth0', conf });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const d = await h.invoke({ command: 'DEL', containerId: 'standalone', netns: h.podPath(p), ifname: 'eth0', conf });
    assert.equal(d.code, 0, d.stdout);
    await h.startAgent();
  });
});
}
