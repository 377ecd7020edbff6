// The etcd store's per-member fault policy (src/store/etcd-store.ts MemberSkip), which replaces
// etcd3's circuit breaker: a member that failed is passed over for a moment, but never every
// member at once (after a full outage the breaker refused every call for 5 s or more while etcd
// was already back).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemberSkip } from '../../src/store/etcd-store.js';

class Transient extends Error {}
const fail = () => {
  throw new Transient('14 UNAVAILABLE: Connection dropped');
};

function setup() {
  let now = 1_000;
  const skip = new MemberSkip((e) => e instanceof Transient, 1000, () => now);
  const p = { a: skip.policy('a'), b: skip.policy('b'), c: skip.policy('c') };
  return { skip, p, advance: (ms: number) => (now += ms) };
}

test('a member that failed is passed over for skipMs while another member is fine, then tried again', async () => {
  const { skip, p, advance } = setup();
  await assert.rejects(p.a.execute(fail), Transient);
  assert.equal(skip.skipped('a'), true);
  assert.equal(skip.skipped('b'), false);
  let called = false;
  // etcd3 takes an error with isBrokenCircuitError as "not called, try the next member"
  await assert.rejects(
    p.a.execute(() => (called = true)),
    (e: Error & { isBrokenCircuitError?: boolean }) => e.isBrokenCircuitError === true,
  );
  assert.equal(called, false);
  assert.equal(await p.b.execute(() => 'b answers'), 'b answers');
  advance(1000);
  assert.equal(skip.skipped('a'), false);
  assert.equal(await p.a.execute(() => 'a is back'), 'a is back');
});

test('when every member failed recently, none is passed over (the cluster may be back)', async () => {
  const { skip, p } = setup();
  for (const m of [p.a, p.b, p.c]) await assert.rejects(m.execute(fail), Transient);
  assert.deepEqual(['a', 'b', 'c'].map((h) => skip.skipped(h)), [false, false, false]);
  assert.equal(await p.b.execute(() => 'ok'), 'ok');
  // b answered (its mark is cleared): a and c, failed within skipMs, are passed over again in favour of b
  assert.equal(skip.skipped('a'), true);
  assert.equal(skip.skipped('c'), true);
});

test('errors that are not transport failures (etcd refusing a request) do not mark the member', async () => {
  const { skip, p } = setup();
  await assert.rejects(
    p.a.execute(() => {
      throw new Error('etcdserver: requested lease not found');
    }),
  );
  assert.equal(skip.skipped('a'), false);
  assert.equal(await p.a.execute(() => 'ok'), 'ok');
});
