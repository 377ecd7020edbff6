// LeaseWatcher.relist: a listing taken while the watch runs fills in what the watch missed and
// never undoes what it delivered after the listing's snapshot.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { LeaseWatcher } from '../../src/agent/leases.js';
import { encodeLease, leaseKey } from '../../src/agent/lease.js';
import type { KeyValue, Store, WatchHandlers } from '../../src/store/types.js';
import { createLogger } from '../../src/util/log.js';

const kv = (subnet: string, rev: number): KeyValue => ({
  key: leaseKey(subnet),
  value: encodeLease({ subnet, publicIP: `192.168.0.${rev}`, backendType: 'host-gw', backendData: {} }),
  modRevision: rev,
  lease: 1,
});

/** A store whose list answers are scripted and whose watch events the test pushes. */
function scriptedStore(lists: { kvs: KeyValue[]; revision: number }[]) {
  let handlers: WatchHandlers | undefined;
  const store = {
    describe: 'scripted',
    list: async () => lists.shift() ?? { kvs: [], revision: 0 },
    watch: (_p: string, _r: number, h: WatchHandlers) => {
      handlers = h;
      return { close() {} };
    },
  } as unknown as Store;
  return { store, push: (ev: Parameters<WatchHandlers['onEvent']>[0]) => handlers!.onEvent(ev) };
}

const subnets = (w: LeaseWatcher) => [...w.leases.values()].map((l) => l.subnet).sort();

describe('LeaseWatcher.relist', () => {
  it('adds what the watch missed, drops what is gone, keeps what the watch delivered after the snapshot', async () => {
    const { store, push } = scriptedStore([
      { kvs: [kv('10.244.1.0/24', 1)], revision: 1 },
      // a snapshot older than the watch's put of .2 (revision 3): .2 must stay
      { kvs: [kv('10.244.1.0/24', 1)], revision: 2 },
      // a newer one: .3 appeared unseen by the watch, .2 is gone
      { kvs: [kv('10.244.1.0/24', 1), kv('10.244.3.0/24', 4)], revision: 5 },
      // an older snapshot still holding .1, which the watch saw deleted at 6: it stays deleted
      { kvs: [kv('10.244.1.0/24', 1), kv('10.244.3.0/24', 4)], revision: 5 },
    ]);
    let changes = 0;
    const w = new LeaseWatcher(store, () => changes++, createLogger({ subsys: 'test', level: 'error' }));
    await w.start();
    assert.deepEqual(subnets(w), ['10.244.1.0/24']);
    push({ type: 'put', kv: kv('10.244.2.0/24', 3), revision: 3 });
    assert.deepEqual(subnets(w), ['10.244.1.0/24', '10.244.2.0/24']);
    assert.equal(await w.relist(), false);
    assert.deepEqual(subnets(w), ['10.244.1.0/24', '10.244.2.0/24']);
    const before = changes;
    assert.equal(await w.relist(), true);
    assert.deepEqual(subnets(w), ['10.244.1.0/24', '10.244.3.0/24']);
    assert.equal(changes, before + 1, 'a change found is reported once');
    push({ type: 'delete', key: leaseKey('10.244.1.0/24'), revision: 6 });
    assert.equal(await w.relist(), false);
    assert.deepEqual(subnets(w), ['10.244.3.0/24']);
    w.close();
  });
});
