// Two podnet speakers over loopback (127.0.0.1 and 127.0.0.2): sessions come up, routes are
// exchanged, withdrawn on change and on stop, and a wrong AS is refused with NOTIFICATION 2/2.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BgpSpeaker } from '../../src/agent/bgp/speaker.js';
import type { BgpConfig } from '../../src/agent/bgp/config.js';
import { createLogger } from '../../src/util/log.js';

const log = createLogger({ subsys: 'bgp-test', level: 'error' });
const base = 20000 + Math.floor(Math.random() * 20000);

function speaker(addr: string, port: number, asn: number, peer: { address: string; asn: number; port: number }, v4: string): BgpSpeaker {
  const config: BgpConfig = {
    asn,
    peers: [{ address: peer.address, asn: peer.asn, holdTime: 9, passive: false, port: peer.port, multihop: 64 }],
    gracefulRestart: { enabled: true, restartTime: 30 },
    listenPort: port,
  };
  return new BgpSpeaker({ config, routerId: addr, nextHops: { v4, v6: 'fd00::1' }, sourceAddress: { v4: addr }, listenAddress: addr, log, onChange: () => {} });
}

async function until(what: string, f: () => boolean, ms = 8000): Promise<void> {
  const t0 = Date.now();
  while (!f()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('eBGP with 4-octet ASNs: established, routes both ways (v4 and v6), withdrawn on change and on stop', async () => {
  const a = speaker('127.0.0.1', base, 4200000001, { address: '127.0.0.2', asn: 65000, port: base + 1 }, '192.0.2.1');
  const b = speaker('127.0.0.2', base + 1, 65000, { address: '127.0.0.1', asn: 4200000001, port: base }, '192.0.2.2');
  a.setOwnPrefixes([{ prefix: '10.244.1.0/24', family: 'ipv4' }, { prefix: 'fd00:10:244:1::/64', family: 'ipv6' }]);
  b.setOwnPrefixes([{ prefix: '10.244.2.0/24', family: 'ipv4' }]);
  await Promise.all([a.start(), b.start()]);
  try {
    await until('both sessions Established', () => a.status().peers[0].state === 'Established' && b.status().peers[0].state === 'Established');
    await until('routes at b', () => b.bestRoutes().length === 2);
    const v4 = b.bestRoutes().find((r) => r.family === 'ipv4')!;
    assert.deepEqual([v4.prefix, v4.nextHop, v4.asPath], ['10.244.1.0/24', '192.0.2.1', [4200000001]]);
    assert.equal(b.bestRoutes().find((r) => r.family === 'ipv6')?.nextHop, 'fd00::1');
    await until('route at a', () => a.bestRoutes().some((r) => r.prefix === '10.244.2.0/24' && r.nextHop === '192.0.2.2'));
    await until('both converged (End-of-RIB)', () => a.converged() && b.converged());
    a.setOwnPrefixes([{ prefix: '10.244.1.0/24', family: 'ipv4' }]);
    await until('v6 withdrawn at b', () => b.bestRoutes().length === 1);
    await a.stop('withdraw');
    await until('everything of a gone at b, not kept stale', () => b.bestRoutes().length === 0);
  } finally {
    await a.stop();
    await b.stop();
  }
});

test('a peer with the wrong AS: NOTIFICATION bad peer AS, both sides say so', async () => {
  const a = speaker('127.0.0.1', base + 2, 64600, { address: '127.0.0.2', asn: 65000, port: base + 3 }, '192.0.2.1');
  // b expects AS 64700, a is 64600
  const b = speaker('127.0.0.2', base + 3, 65000, { address: '127.0.0.1', asn: 64700, port: base + 2 }, '192.0.2.2');
  await Promise.all([a.start(), b.start()]);
  try {
    await until('b refuses a', () => /bad peer AS/.test(b.status().peers[0].lastError ?? ''));
    await until('a hears why', () => /NOTIFICATION 2\/2/.test(a.status().peers[0].lastError ?? ''));
    assert.notEqual(a.status().peers[0].state, 'Established');
  } finally {
    await a.stop();
    await b.stop();
  }
});

test('a peer that does not answer: retried with backoff, status says so', async () => {
  const a = speaker('127.0.0.1', 0, 64600, { address: '127.0.0.3', asn: 65000, port: base + 4 }, '192.0.2.1');
  await a.start();
  try {
    await until('two failed attempts', () => a.status().peers[0].connectRetries >= 2, 10_000);
    const p = a.status().peers[0];
    assert.match(p.lastError ?? '', /ECONNREFUSED|refused/);
    assert.ok(p.state === 'Active' || p.state === 'Connect');
  } finally {
    await a.stop();
  }
});
