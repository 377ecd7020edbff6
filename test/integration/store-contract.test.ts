// One contract, every backend: the file store and a single-member etcd (loopback, free ports,
// temp data dir) must behave the same for everything lease allocation relies on.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { openStore } from '../../src/store/index.js';
import type { Store, WatchEvent } from '../../src/store/types.js';
import { startSingle } from '../helpers/etcd.js';

const ROOT = resolve(import.meta.dirname, '../..');

interface Backend {
  name: string;
  setup(): Promise<void>;
  teardown(): Promise<void>;
  open(): Promise<Store>;
  /** a writer in another OS process, when the backend is shared by processes on one machine */
  childWriter?: (keys: string[]) => Promise<void>;
  /** how long a TTL=1 lease may take to go (etcd raises tiny TTLs to its minimum) */
  ttl1ExpiryMs: number;
}

function fileBackend(): Backend {
  let dir = '';
  return {
    name: 'file store',
    ttl1ExpiryMs: 3000,
    async setup() {
      // a directory that does not exist yet: the store creates it
      dir = join(await mkdtemp(join(tmpdir(), 'podnet-store-')), 'store');
    },
    async teardown() {
      await rm(join(dir, '..'), { recursive: true, force: true });
    },
    open: () => openStore(`file:${dir}`),
    async childWriter(keys) {
      const script = join(dir, '..', 'writer.mts');
      await writeFile(
        script,
        `import { openStore } from ${JSON.stringify(join(ROOT, 'src/store/index.ts'))};
const s = await openStore(${JSON.stringify(`file:${dir}`)});
for (const k of ${JSON.stringify(keys)}) if (!(await s.create(k, 'from-child-' + process.pid))) throw new Error('create failed: ' + k);
await s.close();
`,
      );
      const child = spawn(process.execPath, ['--import', 'tsx', script], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      child.stderr.on('data', (b: Buffer) => (err += b.toString()));
      const code = await new Promise<number | null>((r) => child.once('exit', r));
      assert.equal(code, 0, `child writer failed: ${err}`);
    },
  };
}

function etcdBackend(): Backend {
  let etcd: Awaited<ReturnType<typeof startSingle>> | undefined;
  return {
    name: 'etcd (single member)',
    ttl1ExpiryMs: 5000,
    async setup() {
      etcd = await startSingle();
    },
    async teardown() {
      await etcd?.destroy();
    },
    open: () => openStore('etcd', { endpoints: [etcd!.endpoint], prefix: '/contract' }),
  };
}

/** Collects a watch's events; waitFor polls the collected list. */
function collect(store: Store, prefix: string, from: number) {
  const events: WatchEvent[] = [];
  const resets: string[] = [];
  const w = store.watch(prefix, from, { onEvent: (e) => events.push(e), onReset: (r) => resets.push(r) });
  return {
    events,
    resets,
    close: () => w.close(),
    async waitFor(pred: (evs: WatchEvent[]) => boolean, timeoutMs = 3000, what = 'events'): Promise<void> {
      const deadline = Date.now() + timeoutMs;
      while (!pred(events)) {
        if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}; got ${JSON.stringify(events)} resets ${JSON.stringify(resets)}`);
        await sleep(20);
      }
    },
  };
}

const summary = (e: WatchEvent) => (e.type === 'put' ? `put ${e.kv.key}=${e.kv.value}` : `delete ${e.key}`);

let seq = 0;
for (const backend of [fileBackend(), etcdBackend()]) {
  describe(`store contract: ${backend.name}`, () => {
    let s: Store;
    // every test works under its own prefix, so tests never see each other's keys
    const px = () => `/t${seq++}-${Date.now().toString(36)}/`;

    before(async () => {
      await backend.setup();
      s = await backend.open();
    });
    after(async () => {
      await s?.close();
      await backend.teardown();
    });

    it('create is create-if-absent', async () => {
      const p = px();
      assert.equal(await s.create(p + 'a', 'one'), true);
      assert.equal(await s.create(p + 'a', 'two'), false, 'second create must lose');
      const kv = await s.get(p + 'a');
      assert.equal(kv?.value, 'one');
      assert.equal(kv?.lease, 0);
      assert.ok(kv && kv.modRevision > 0);
      assert.equal(await s.get(p + 'missing'), undefined);
      // concurrent creates: exactly one wins
      const results = await Promise.all([1, 2, 3, 4, 5].map((i) => s.create(p + 'race', String(i))));
      assert.equal(results.filter(Boolean).length, 1);
    });

    it('compareAndSet succeeds on the expected revision and fails on a stale one', async () => {
      const p = px();
      assert.equal(await s.compareAndSet(p + 'k', 'v0', 0), true, 'expected 0 creates');
      assert.equal(await s.compareAndSet(p + 'k', 'again', 0), false, 'expected 0 fails when present');
      const v0 = (await s.get(p + 'k'))!;
      assert.equal(await s.compareAndSet(p + 'k', 'v1', v0.modRevision), true);
      const v1 = (await s.get(p + 'k'))!;
      assert.ok(v1.modRevision > v0.modRevision);
      assert.equal(v1.value, 'v1');
      assert.equal(await s.compareAndSet(p + 'k', 'stale', v0.modRevision), false);
      assert.equal((await s.get(p + 'k'))!.value, 'v1');
      assert.equal(await s.compareAndSet(p + 'absent', 'x', 12345), false, 'a revision guard on an absent key fails');
    });

    it('delete honours its revision guard', async () => {
      const p = px();
      assert.equal(await s.delete(p + 'none'), false, 'absent');
      await s.create(p + 'k', 'v');
      const kv = (await s.get(p + 'k'))!;
      assert.equal(await s.delete(p + 'k', kv.modRevision + 1000), false, 'wrong revision');
      assert.ok(await s.get(p + 'k'));
      assert.equal(await s.delete(p + 'k', kv.modRevision), true);
      assert.equal(await s.get(p + 'k'), undefined);
      assert.equal(await s.delete(p + 'k', kv.modRevision), false, 'already gone');
      await s.create(p + 'u', 'v');
      assert.equal(await s.delete(p + 'u'), true, 'unguarded delete');
    });

    it('list returns the prefix and a revision consistent with it', async () => {
      const p = px();
      for (const k of ['b', 'a', 'c']) await s.create(p + k, k.toUpperCase());
      await s.create(p.slice(0, -1) + 'x-outside', 'no');
      const l1 = await s.list(p);
      assert.deepEqual(l1.kvs.map((kv) => kv.key), [p + 'a', p + 'b', p + 'c']);
      assert.deepEqual(l1.kvs.map((kv) => kv.value), ['A', 'B', 'C']);
      assert.ok(l1.revision >= Math.max(...l1.kvs.map((kv) => kv.modRevision)));
      // a watch from the listing's revision sees exactly what happened after it
      const w = collect(s, p, l1.revision);
      await s.delete(p + 'a');
      await s.create(p + 'd', 'D');
      await w.waitFor((e) => e.length >= 2);
      await sleep(200);
      w.close();
      assert.deepEqual(w.events.map(summary), [`delete ${p}a`, `put ${p}d=D`]);
      const l2 = await s.list(p);
      assert.ok(l2.revision > l1.revision);
      assert.deepEqual(l2.kvs.map((kv) => kv.key), [p + 'b', p + 'c', p + 'd']);
    });

    it('an expired lease deletes its keys and emits delete events', async () => {
      const p = px();
      const { revision } = await s.list(p);
      const w = collect(s, p, revision);
      const lease = await s.grantLease(1);
      assert.ok(lease > 0 && Number.isSafeInteger(lease));
      assert.equal(await s.create(p + 'a', '1', lease), true);
      assert.equal(await s.create(p + 'b', '2', lease), true);
      await s.create(p + 'keep', '3');
      assert.equal((await s.get(p + 'a'))!.lease, lease);
      const t0 = Date.now();
      await w.waitFor((e) => e.filter((x) => x.type === 'delete').length >= 2, backend.ttl1ExpiryMs + 2000, 'lease expiry');
      const took = Date.now() - t0;
      assert.ok(took >= 700, `expired too early (${took} ms)`);
      assert.equal(await s.get(p + 'a'), undefined);
      assert.equal(await s.get(p + 'b'), undefined);
      assert.ok(await s.get(p + 'keep'), 'keys without the lease stay');
      const dels = w.events.filter((e) => e.type === 'delete');
      assert.deepEqual(dels.map(summary).sort(), [`delete ${p}a`, `delete ${p}b`]);
      w.close();
    });

    it('keepAlive keeps a key alive past its TTL', async () => {
      const p = px();
      const lease = await s.grantLease(2);
      await s.create(p + 'k', 'v', lease);
      const until = Date.now() + 5000;
      while (Date.now() < until) {
        assert.equal(await s.keepAlive(lease), true);
        await sleep(500);
      }
      assert.ok(await s.get(p + 'k'), 'kept alive 5 s with TTL 2 s');
      await s.revokeLease(lease);
      assert.equal(await s.get(p + 'k'), undefined, 'revoke deletes the key at once');
      assert.equal(await s.keepAlive(lease), false, 'a revoked lease cannot be renewed');
      await s.revokeLease(lease); // revoking twice is fine
    });

    it('keepAlive on an expired lease returns false', async () => {
      const p = px();
      const lease = await s.grantLease(1);
      await s.create(p + 'k', 'v', lease);
      const deadline = Date.now() + backend.ttl1ExpiryMs + 2000;
      while (await s.get(p + 'k')) {
        assert.ok(Date.now() < deadline, 'lease did not expire');
        await sleep(100);
      }
      assert.equal(await s.keepAlive(lease), false);
      await assert.rejects(s.create(p + 'again', 'v', lease), /lease/i, 'attaching a key to an expired lease fails');
    });

    it('watch delivers puts and deletes in order', async () => {
      const p = px();
      const { revision } = await s.list(p);
      const w = collect(s, p, revision);
      await s.create(p + 'a', '1');
      const a = (await s.get(p + 'a'))!;
      await s.compareAndSet(p + 'a', '2', a.modRevision);
      await s.create(p + 'b', '1');
      await s.delete(p + 'a');
      await s.create(p + 'a', '3');
      await w.waitFor((e) => e.length >= 5);
      await sleep(200);
      w.close();
      assert.deepEqual(w.events.map(summary), [`put ${p}a=1`, `put ${p}a=2`, `put ${p}b=1`, `delete ${p}a`, `put ${p}a=3`]);
      const revs = w.events.map((e) => e.revision);
      assert.deepEqual(revs, [...revs].sort((x, y) => x - y));
      assert.equal(new Set(revs).size, revs.length);
      for (const e of w.events) if (e.type === 'put') assert.equal(e.kv.modRevision, e.revision);
    });

    it('watch from an old revision replays what was missed', async () => {
      const p = px();
      const { revision } = await s.list(p);
      await s.create(p + 'a', '1');
      await s.create(p + 'b', '2');
      await s.delete(p + 'a');
      const mid = (await s.list(p)).revision;
      await s.create(p + 'c', '3');
      const all = collect(s, p, revision);
      const fromMid = collect(s, p, mid);
      await all.waitFor((e) => e.length >= 4);
      await fromMid.waitFor((e) => e.length >= 1);
      await s.create(p + 'd', '4');
      await all.waitFor((e) => e.length >= 5);
      await fromMid.waitFor((e) => e.length >= 2);
      await sleep(200);
      all.close();
      fromMid.close();
      assert.deepEqual(all.events.map(summary), [`put ${p}a=1`, `put ${p}b=2`, `delete ${p}a`, `put ${p}c=3`, `put ${p}d=4`]);
      assert.deepEqual(fromMid.events.map(summary), [`put ${p}c=3`, `put ${p}d=4`]);
    });

    it('two store instances see each other’s changes within a second', async () => {
      const p = px();
      const other = await backend.open();
      try {
        const { revision } = await s.list(p);
        const w1 = collect(s, p, revision);
        const w2 = collect(other, p, revision);
        let t0 = Date.now();
        await s.create(p + 'from1', 'x');
        await w2.waitFor((e) => e.some((x) => x.type === 'put' && x.kv.key === p + 'from1'), 1000, 'the other instance to see from1');
        const lag1 = Date.now() - t0;
        t0 = Date.now();
        await other.create(p + 'from2', 'y');
        await w1.waitFor((e) => e.some((x) => x.type === 'put' && x.kv.key === p + 'from2'), 1000, 'the first instance to see from2');
        const lag2 = Date.now() - t0;
        w1.close();
        w2.close();
        assert.ok(lag1 <= 1000 && lag2 <= 1000, `lags ${lag1} ms, ${lag2} ms`);
      } finally {
        await other.close();
      }
    });

    it('a writer in another process is seen through watch', { skip: !backend.childWriter && 'the backend is not shared through the local filesystem' }, async () => {
      const p = px();
      const { revision } = await s.list(p);
      const w = collect(s, p, revision);
      const keys = Array.from({ length: 20 }, (_, i) => `${p}child-${String(i).padStart(2, '0')}`);
      // meanwhile this process writes too: both contend for the same lock
      const mine = (async () => {
        for (let i = 0; i < 20; i++) assert.equal(await s.create(`${p}parent-${i}`, 'p'), true);
      })();
      await backend.childWriter!(keys);
      await mine;
      await w.waitFor((e) => e.length >= 40, 2000);
      w.close();
      const childKeys = w.events.filter((e) => e.type === 'put' && e.kv.key.includes('/child-')).map((e) => (e.type === 'put' ? e.kv.key : ''));
      assert.deepEqual(childKeys, keys, 'the child’s creates, all of them, in its order');
      const revs = w.events.map((e) => e.revision);
      assert.deepEqual(revs, [...revs].sort((x, y) => x - y));
      assert.equal(new Set(revs).size, 40);
    });

    it('a burst of 1,000 creates is watched completely and in order', { timeout: 120_000 }, async () => {
      const p = px();
      const { revision } = await s.list(p);
      const w = collect(s, p, revision);
      const N = 1000;
      const keys = Array.from({ length: N }, (_, i) => `${p}k${String(i).padStart(4, '0')}`);
      const t0 = Date.now();
      // 16 writers at once, as a busy cluster would have
      let next = 0;
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          while (next < N) {
            const k = keys[next++];
            assert.equal(await s.create(k, 'v'), true);
          }
        }),
      );
      const writeMs = Date.now() - t0;
      await w.waitFor((e) => e.length >= N, 10_000, `${N} events`);
      await sleep(300);
      w.close();
      assert.equal(w.events.length, N, 'no duplicates');
      assert.deepEqual(new Set(w.events.map((e) => (e.type === 'put' ? e.kv.key : ''))), new Set(keys));
      const revs = w.events.map((e) => e.revision);
      for (let i = 1; i < revs.length; i++) assert.ok(revs[i] > revs[i - 1], `out of order at ${i}: ${revs[i - 1]} then ${revs[i]}`);
      const l = await s.list(p);
      assert.equal(l.kvs.length, N);
      assert.equal(l.revision, revs[revs.length - 1]);
      console.log(`# ${backend.name}: ${N} creates in ${writeMs} ms`);
    });
  });
}
