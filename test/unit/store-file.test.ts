// File store internals the contract suite cannot reach: log compaction, crash leftovers,
// a recreated store, and openStore's URL forms.
import assert from 'node:assert/strict';
import { appendFile, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { FileStore } from '../../src/store/file-store.js';
import { openStore } from '../../src/store/index.js';
import type { WatchEvent } from '../../src/store/types.js';

let base = '';
let n = 0;
const freshDir = () => join(base, `s${n++}`);

before(async () => {
  base = await mkdtemp(join(tmpdir(), 'podnet-store-unit-'));
});
after(async () => {
  await rm(base, { recursive: true, force: true });
});

async function waitUntil(pred: () => boolean, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    assert.ok(Date.now() < deadline, 'timed out');
    await sleep(20);
  }
}

describe('file store', () => {
  it('keeps the newest maxEvents events; a watcher needing older ones is reset', async () => {
    const dir = freshDir();
    const s = new FileStore(dir, { maxEvents: 10 });
    try {
      for (let i = 0; i < 30; i++) await s.create(`/k${i}`, 'v');
      const files = (await readdir(dir)).filter((f) => f.startsWith('events-'));
      assert.equal(files.length, 1, `old log generations removed: ${files}`);
      const st = JSON.parse(await readFile(join(dir, 'state.json'), 'utf8'));
      assert.ok(st.compactRevision > 0 && st.log.count <= 15, JSON.stringify(st.log));

      const resets: string[] = [];
      const events: WatchEvent[] = [];
      s.watch('/', 1, { onEvent: (e) => events.push(e), onReset: (r) => resets.push(r) });
      await waitUntil(() => resets.length > 0);
      assert.match(resets[0], /compacted/);
      assert.equal(events.length, 0);

      // from a revision still in the log: replayed exactly
      const recent: WatchEvent[] = [];
      const w = s.watch('/', 27, { onEvent: (e) => recent.push(e) });
      await waitUntil(() => recent.length >= 3);
      w.close();
      assert.deepEqual(recent.map((e) => e.revision), [28, 29, 30]);
    } finally {
      await s.close();
    }
  });

  it('ignores log bytes a crashed writer left past the committed size', async () => {
    const dir = freshDir();
    const s = new FileStore(dir);
    try {
      await s.create('/a', '1');
      const st = JSON.parse(await readFile(join(dir, 'state.json'), 'utf8'));
      // a writer that died after appending but before renaming its state
      await appendFile(join(dir, st.log.file), JSON.stringify({ type: 'put', key: '/ghost', value: 'x', modRevision: 2, lease: 0, revision: 2 }) + '\n{"partial');
      await s.create('/b', '2');
      const events: WatchEvent[] = [];
      const w = s.watch('/', 0, { onEvent: (e) => events.push(e) });
      await waitUntil(() => events.length >= 2);
      await sleep(100);
      w.close();
      assert.deepEqual(events.map((e) => (e.type === 'put' ? `${e.kv.key}@${e.revision}` : '')), ['/a@1', '/b@2']);
      assert.equal(await s.get('/ghost'), undefined);
    } finally {
      await s.close();
    }
  });

  it('resets watchers when the store is removed and recreated', async () => {
    const dir = freshDir();
    const s = new FileStore(dir);
    const resets: string[] = [];
    try {
      await s.create('/a', '1');
      s.watch('/', 1, { onEvent: () => undefined, onReset: (r) => resets.push(r) });
      await sleep(300);
      await rm(join(dir, 'state.json'));
      const s2 = new FileStore(dir);
      await s2.create('/b', '1');
      await s2.close();
      await waitUntil(() => resets.length > 0);
      assert.match(resets[0], /recreated/);
    } finally {
      await s.close();
    }
  });

  it('reaps expired leases on its timer, without any writer', async () => {
    const dir = freshDir();
    const s = new FileStore(dir, { reapIntervalMs: 100 });
    try {
      const lease = await s.grantLease(1);
      await s.create('/l', 'v', lease);
      await sleep(1400);
      // read the raw state: get() would reap by itself
      const st = JSON.parse(await readFile(join(dir, 'state.json'), 'utf8'));
      assert.deepEqual(st.kvs, {});
      assert.deepEqual(st.leases, {});
    } finally {
      await s.close();
    }
  });

  it('rejects calls after close', async () => {
    const s = new FileStore(freshDir());
    await s.close();
    await assert.rejects(s.create('/a', 'v'), /closed/);
  });
});

describe('openStore', () => {
  it('opens file stores from file:/dir, file:///dir and file:/x/name.json', async () => {
    const d = freshDir();
    for (const url of [`file:${d}`, `file://${d}`]) {
      const s = await openStore(url);
      assert.equal(s.describe, `file:${join(d, 'state.json')}`);
      await s.close();
    }
    const s = await openStore(`file:${d}/other.json`);
    assert.equal(s.describe, `file:${join(d, 'other.json')}`);
    await s.create('/x', 'y');
    await s.close();
    assert.ok((await readdir(d)).includes('other.lock'));
  });

  it('describes etcd stores by their endpoints, and refuses bad URLs', async () => {
    const s = await openStore('etcd', { endpoints: ['http://10.0.0.1:2379', 'http://10.0.0.2:2379'] });
    assert.equal(s.describe, 'etcd:http://10.0.0.1:2379,http://10.0.0.2:2379');
    await s.close();
    const s2 = await openStore('etcd://10.0.0.1:2379,10.0.0.2:2379');
    assert.equal(s2.describe, 'etcd:10.0.0.1:2379,10.0.0.2:2379');
    await s2.close();
    await assert.rejects(openStore('etcd'), /no etcd endpoints/);
    await assert.rejects(openStore('consul:x'), /unknown store URL/);
    await assert.rejects(openStore('file://host/x'), /file:\/path/);
  });
});
