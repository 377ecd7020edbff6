// A 3-member etcd cluster on loopback: losing the leader (kill -9) must cost a few seconds of
// writes and nothing else — no watch gap — and the killed member must rejoin from its data dir.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { openStore } from '../../src/store/index.js';
import type { Store, WatchEvent } from '../../src/store/types.js';
import { endpointStatus, etcdctl, findLeader, startCluster, waitHealthy, type EtcdCluster } from '../helpers/etcd.js';

function collect(store: Store, prefix: string, from: number) {
  const events: WatchEvent[] = [];
  const errors: string[] = [];
  const resets: string[] = [];
  const w = store.watch(prefix, from, {
    onEvent: (e) => events.push(e),
    onError: (e) => errors.push(e.message),
    onReset: (r) => resets.push(r),
  });
  return {
    events,
    errors,
    resets,
    close: () => w.close(),
    keys: () => events.map((e) => (e.type === 'put' ? e.kv.key : `-${e.key}`)),
    async waitFor(pred: (evs: WatchEvent[]) => boolean, timeoutMs: number, what: string): Promise<void> {
      const deadline = Date.now() + timeoutMs;
      while (!pred(events)) {
        if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}; got ${events.length} events, errors ${JSON.stringify(errors.slice(-3))}, resets ${JSON.stringify(resets)}`);
        await sleep(50);
      }
    },
  };
}

/** create, retried through an election; an unknown-outcome write that landed counts as done */
async function createRetrying(s: Store, key: string, value: string, timeoutMs: number): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    try {
      if (await s.create(key, value)) return Date.now() - t0;
      if ((await s.get(key))?.value === value) return Date.now() - t0;
      assert.fail(`${key} exists with another value`);
    } catch (e) {
      if (e instanceof assert.AssertionError) throw e;
      if (Date.now() - t0 > timeoutMs) throw new Error(`writes did not recover within ${timeoutMs} ms: ${(e as Error).message}`);
      await sleep(100);
    }
  }
}

describe('etcd store against a 3-member cluster', () => {
  let cluster: EtcdCluster;
  const stores: Store[] = [];

  before(async () => {
    cluster = await startCluster({ size: 3, namePrefix: 'c' });
  });
  after(async () => {
    for (const s of stores) await s.close().catch(() => undefined);
    await cluster?.destroy();
  });

  it('survives a leader kill -9 without a watch gap, and the member rejoins', { timeout: 90_000 }, async () => {
    const p = '/podnet/test/cluster/';
    const leaderUrl = await findLeader(cluster.endpoints);
    const leader = cluster.members.find((m) => m.spec.clientUrl === leaderUrl)!;
    const sAll = await openStore('etcd', { endpoints: cluster.endpoints });
    // a store that can only reach the leader: its watch must survive the member being down for
    // a while and resume, from its last revision, once the member is back
    const sLeader = await openStore('etcd', { endpoints: [leaderUrl] });
    stores.push(sAll, sLeader);

    for (let i = 0; i < 5; i++) assert.equal(await sAll.create(`${p}pre-${i}`, 'v'), true);
    const { revision } = await sAll.list(p);
    const wAll = collect(sAll, p, revision);
    const wLeader = collect(sLeader, p, revision);
    await sAll.create(`${p}before-kill`, 'v');
    await wAll.waitFor((e) => e.length >= 1, 5000, 'the first event (all endpoints)');
    await wLeader.waitFor((e) => e.length >= 1, 5000, 'the first event (leader only)');

    await leader.stop('SIGKILL');
    const recovery = await createRetrying(sAll, `${p}after-00`, 'v', 15_000);
    console.log(`# leader ${leader.spec.name} killed; first write succeeded after ${recovery} ms`);
    assert.ok(recovery < 6000, `writes took ${recovery} ms to recover`);
    const newLeader = await findLeader(cluster.endpoints.filter((e) => e !== leaderUrl));
    assert.notEqual(newLeader, leaderUrl);

    const expected = [`${p}before-kill`];
    for (let i = 0; i < 20; i++) {
      const k = `${p}after-${String(i).padStart(2, '0')}`;
      if (i > 0) await createRetrying(sAll, k, 'v', 10_000);
      expected.push(k);
    }
    await wAll.waitFor((e) => e.length >= expected.length, 10_000, 'the writes after the kill (all endpoints)');
    await sleep(300);
    assert.deepEqual(wAll.keys(), expected, 'every event, once, in order');
    const revs = wAll.events.map((e) => e.revision);
    for (let i = 1; i < revs.length; i++) assert.ok(revs[i] > revs[i - 1]);
    assert.deepEqual(wAll.resets, []);

    // restart the killed member from its data dir; it must catch up with what it missed
    const restarted = await cluster.restart(leader.spec.name);
    await waitHealthy([leaderUrl], { procs: [restarted], timeoutMs: 20_000 });
    const deadline = Date.now() + 15_000;
    for (;;) {
      const st = await endpointStatus(cluster.endpoints);
      const mine = st.find((s) => s.endpoint === leaderUrl);
      const others = st.filter((s) => s.endpoint !== leaderUrl);
      if (mine && others.length === 2 && others.every((o) => o.revision === mine.revision)) break;
      if (Date.now() > deadline) assert.fail(`restarted member did not catch up: ${JSON.stringify(st)}`);
      await sleep(200);
    }
    // a serializable read is answered from the member's own data
    const local = await etcdctl([leaderUrl], ['get', `${p}after-19`, '--consistency=s', '--print-value-only']);
    assert.equal(local.trim(), 'v');

    // the leader-only watch resumed after the restart and missed nothing
    await wLeader.waitFor((e) => e.length >= expected.length, 20_000, 'the leader-only watch to resume');
    await sleep(300);
    assert.deepEqual(wLeader.keys(), expected, 'the resumed watch has no gap and no duplicates');
    assert.ok(wLeader.errors.length > 0, 'the leader-only watch saw the outage');
    assert.deepEqual(wLeader.resets, []);
    wAll.close();
    wLeader.close();
  });

  it('an unreachable cluster fails with an error naming the endpoints', { timeout: 30_000 }, async () => {
    const dead = ['http://127.0.0.1:9', 'http://127.0.0.1:1'];
    const s = await openStore('etcd', { endpoints: dead, callTimeoutMs: 1500 });
    stores.push(s);
    await assert.rejects(s.get('/x'), (e: Error) => e.message.includes('127.0.0.1:9') && e.message.includes('127.0.0.1:1'));
  });
});
