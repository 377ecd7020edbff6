// The store's group commit: concurrent requests in one process share one locked section and its
// flushes, each member fails on its own, an I/O failure leaves none of the batch's final names.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CniError, ErrCode } from '../../src/cni/errors.js';
import { loadIpamConfig } from '../../src/ipam/config.js';
import { reserveFor } from '../../src/ipam/plugin.js';
import { IpamStore, ReservedConcurrentlyError, type StoreHooks } from '../../src/ipam/store.js';
import { formatIP, parseIP } from '../../src/util/ip.js';

function tmp(t: { after(fn: () => void): void }): string {
  const d = mkdtempSync(join(tmpdir(), 'podnet-ipam-group-'));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

interface Counted {
  store: IpamStore;
  flushes: { data: number; dataFiles: number; dir: number };
  hooks: StoreHooks;
}

function counted(dir: string, extra: StoreHooks = {}): Counted {
  const flushes = { data: 0, dataFiles: 0, dir: 0 };
  const hooks: StoreHooks = {
    ...extra,
    onFlush(kind, files) {
      if (kind === 'data') {
        flushes.data++;
        flushes.dataFiles += files;
      } else flushes.dir++;
      extra.onFlush?.(kind, files);
    },
  };
  return { store: new IpamStore(dir, { hooks }), flushes, hooks };
}

function cfgFor(dir: string, ranges: unknown, args: Record<string, string> = {}) {
  const cfg = loadIpamConfig({ name: 'gc', ipam: { ranges } }, args);
  return { ...cfg, storeDir: dir };
}

function ipFiles(dir: string): string[] {
  return readdirSync(dir).filter((f) => /^[0-9a-f.:]+$/i.test(f) && !f.startsWith('last_')).sort();
}

const ip4 = (allocs: { ip: ReturnType<typeof parseIP> }[]) => allocs.map((a) => formatIP(a.ip));

test('8 concurrent ADDs in one process: 8 distinct addresses, one data flush and one directory fsync', async (t) => {
  const dir = tmp(t);
  const { store, flushes } = counted(dir);
  const cfg = cfgFor(dir, [[{ subnet: '10.20.0.0/24' }], [{ subnet: 'fd00:20::/64' }]]);
  const N = 8;
  const got = await Promise.all(Array.from({ length: N }, (_, i) => reserveFor(store, cfg, `c${i}`, 'eth0')));
  const v4 = got.map((g) => formatIP(g[0].ip));
  const v6 = got.map((g) => formatIP(g[1].ip));
  assert.equal(new Set(v4).size, N, v4.join(' '));
  assert.equal(new Set(v6).size, N, v6.join(' '));
  // in arrival order, each member saw the choices of the ones before it
  assert.deepEqual(v4, Array.from({ length: N }, (_, i) => `10.20.0.${i + 2}`));
  assert.ok(flushes.data < N && flushes.dir < N, JSON.stringify(flushes));
  assert.deepEqual(flushes, { data: 1, dataFiles: 2 * N + 2, dir: 1 }, 'all 16 reservations and both last_reserved_ip files in one flush');
  for (let i = 0; i < N; i++) assert.equal(readFileSync(join(dir, v4[i]), 'utf8'), `c${i}\r\neth0`);
  assert.equal(readFileSync(join(dir, 'last_reserved_ip.0'), 'utf8'), '10.20.0.9');
  assert.equal(readFileSync(join(dir, 'last_reserved_ip.1'), 'utf8'), 'fd00:20::9');
  assert.ok(!readdirSync(dir).some((f) => f.startsWith('.podnet-tmp')), 'no temp file left');
});

test('requests arriving while a batch commits are served together by the next one', async (t) => {
  const dir = tmp(t);
  const cfg = cfgFor(dir, [[{ subnet: '10.21.0.0/24' }]]);
  const late: Promise<unknown>[] = [];
  let store!: IpamStore;
  const c = counted(dir, {
    beforeCommit() {
      // first batch, between its flush and its links: 5 more requests come in
      if (late.length === 0) for (let i = 0; i < 5; i++) late.push(reserveFor(store, cfg, `late${i}`, 'eth0'));
    },
  });
  store = c.store;
  const first = await Promise.all(Array.from({ length: 3 }, (_, i) => reserveFor(store, cfg, `early${i}`, 'eth0')));
  const second = (await Promise.all(late)) as Awaited<ReturnType<typeof reserveFor>>[];
  const all = [...first, ...second].map((g) => formatIP(g[0].ip));
  assert.equal(new Set(all).size, 8, all.join(' '));
  assert.equal(c.flushes.data, 2, '3 then 5: two batches');
  assert.equal(c.flushes.dir, 2);
  assert.equal(ipFiles(dir).length, 8);
});

test('a member that fails on its own fails alone; the others are reserved', async (t) => {
  const dir = tmp(t);
  const { store, flushes } = counted(dir);
  const small = cfgFor(dir, [[{ subnet: '10.22.0.0/24', rangeStart: '10.22.0.10', rangeEnd: '10.22.0.12' }]]);
  assert.deepEqual(ip4(await reserveFor(store, small, 'holder', 'eth0')), ['10.22.0.10']);
  const wantTaken = cfgFor(dir, [[{ subnet: '10.22.0.0/24', rangeStart: '10.22.0.10', rangeEnd: '10.22.0.12' }]], { IP: '10.22.0.10' });
  const outs = await Promise.allSettled([
    reserveFor(store, small, 'a', 'eth0'),
    reserveFor(store, wantTaken, 'wants-taken', 'eth0'), // requested IP held by someone else
    reserveFor(store, small, 'b', 'eth0'),
    reserveFor(store, small, 'c', 'eth0'), // the range is full by now
    store.transact('boom', 'eth0', () => {
      throw new Error('plan failed');
    }),
  ]);
  assert.equal(flushes.data, 2, 'the second ADD batch is one flush');
  const [a, taken, b, full, boom] = outs;
  assert.equal(a.status, 'fulfilled');
  assert.equal(b.status, 'fulfilled');
  assert.deepEqual(a.status === 'fulfilled' && ip4(a.value), ['10.22.0.11']);
  assert.deepEqual(b.status === 'fulfilled' && ip4(b.value), ['10.22.0.12']);
  assert.ok(taken.status === 'rejected' && taken.reason instanceof CniError && taken.reason.code === ErrCode.IpamExhausted && /already reserved/.test(taken.reason.message));
  assert.ok(full.status === 'rejected' && full.reason instanceof CniError && full.reason.code === ErrCode.IpamExhausted && /no IP addresses available/.test(full.reason.message));
  assert.ok(boom.status === 'rejected' && /plan failed/.test((boom.reason as Error).message));
  assert.deepEqual(ipFiles(dir), ['10.22.0.10', '10.22.0.11', '10.22.0.12']);
  assert.equal(readFileSync(join(dir, '10.22.0.10'), 'utf8'), 'holder\r\neth0');
});

test('a final name taken by a writer that ignores the lock fails that member only, with all its new names', async (t) => {
  const dir = tmp(t);
  const cfg = cfgFor(dir, [[{ subnet: '10.23.0.0/24' }], [{ subnet: 'fd00:23::/64' }]]);
  const { store } = counted(dir, {
    beforeCommit(_tmp, ip) {
      // the second member's v6 address appears between flush and link, written by someone else
      if (ip === 'fd00:23::3') writeFileSync(join(dir, ip), 'intruder\r\neth0');
    },
  });
  const outs = await Promise.allSettled([0, 1, 2].map((i) => reserveFor(store, cfg, `m${i}`, 'eth0')));
  assert.equal(outs[0].status, 'fulfilled');
  assert.equal(outs[2].status, 'fulfilled');
  const r = outs[1];
  assert.ok(r.status === 'rejected' && r.reason instanceof CniError && r.reason.code === ErrCode.TryAgainLater && /fd00:23::3 was reserved concurrently/.test(r.reason.message), String(r.status === 'rejected' && r.reason));
  assert.deepEqual(ipFiles(dir), ['10.23.0.2', '10.23.0.4', 'fd00:23::2', 'fd00:23::3', 'fd00:23::4'], 'm1 keeps neither of its addresses');
  assert.equal(readFileSync(join(dir, 'fd00:23::3'), 'utf8'), 'intruder\r\neth0');
  // the plain reserve() answers false for the same situation
  const plain = new IpamStore(dir, { hooks: { beforeCommit: (_t, ip) => writeFileSync(join(dir, ip), 'x\r\neth0') } });
  assert.equal(await plain.reserve(parseIP('10.23.0.99'), 'y', 'eth0', 0), false);
  assert.ok(!(await plain.getByID('y', 'eth0')).length);
  assert.ok(new ReservedConcurrentlyError('1.2.3.4', dir).message.includes(`${dir}/lock`));
});

test('an I/O failure fails every member of the batch and leaves no final name of theirs', async (t) => {
  const dir = tmp(t);
  const cfg = cfgFor(dir, [[{ subnet: '10.24.0.0/24' }]]);
  let links = 0;
  let armed = false;
  const { store, flushes } = counted(dir, {
    beforeCommit() {
      if (armed && ++links === 3) throw Object.assign(new Error('EIO: i/o error, link'), { code: 'EIO' });
    },
  });
  assert.deepEqual(ip4(await reserveFor(store, cfg, 'before', 'eth0')), ['10.24.0.2']);
  await store.reserve(parseIP('10.24.0.50'), 'other', 'eth0', 0);
  armed = true;
  const outs = await Promise.allSettled([
    ...Array.from({ length: 4 }, (_, i) => reserveFor(store, cfg, `io${i}`, 'eth0')),
    store.releaseByID('other', 'eth0'),
  ]);
  for (const o of outs) assert.ok(o.status === 'rejected' && (o.reason as NodeJS.ErrnoException).code === 'EIO', JSON.stringify(o));
  assert.deepEqual(ipFiles(dir), ['10.24.0.2', '10.24.0.50'], 'two links had succeeded: both undone; the DEL member did not run');
  assert.ok(!readdirSync(dir).some((f) => f.startsWith('.podnet-tmp')), 'temp files removed');
  armed = false;
  // the store works on afterwards and the failed members' addresses are free again
  const again = await Promise.all(Array.from({ length: 4 }, (_, i) => reserveFor(store, cfg, `io${i}`, 'eth0')));
  assert.equal(new Set(again.map((g) => formatIP(g[0].ip))).size, 4);
  assert.ok(flushes.dir >= 3);
});

test('a repeated ADD of one (containerID, ifname) in a batch gets the same addresses, reserved once', async (t) => {
  const dir = tmp(t);
  const { store, flushes } = counted(dir);
  const cfg = cfgFor(dir, [[{ subnet: '10.25.0.0/24' }], [{ subnet: 'fd00:25::/64' }]]);
  const [x, other, y, z] = await Promise.all([
    reserveFor(store, cfg, 'same', 'eth0'),
    reserveFor(store, cfg, 'diff', 'eth0'),
    reserveFor(store, cfg, 'same', 'eth0'),
    reserveFor(store, cfg, 'same', 'eth0'),
  ]);
  assert.deepEqual(ip4(y), ip4(x));
  assert.deepEqual(ip4(z), ip4(x));
  assert.deepEqual(x.map((a) => a.isNew), [true, true]);
  assert.deepEqual(y.map((a) => a.isNew), [false, false]);
  assert.notDeepEqual(ip4(other), ip4(x));
  assert.equal(ipFiles(dir).length, 4, 'two addresses per container');
  assert.equal(flushes.data, 1, 'the repeats wrote nothing');
  // a DEL and an ADD of one container in one batch: the ADD runs after the DEL, on fresh state
  const [released, readded] = await Promise.all([store.releaseByID('same', 'eth0'), reserveFor(store, cfg, 'same', 'eth0')]);
  assert.deepEqual(released.map((r) => r.ip).sort(), ip4(x).sort());
  assert.equal(readded.every((a) => a.isNew), true);
  assert.equal((await store.getByID('same', 'eth0')).length, 2);
});

test('concurrent DELs share one directory fsync; a DEL of nothing writes nothing', async (t) => {
  const dir = tmp(t);
  const { store, flushes } = counted(dir);
  const cfg = cfgFor(dir, [[{ subnet: '10.26.0.0/24' }]]);
  await Promise.all(Array.from({ length: 6 }, (_, i) => reserveFor(store, cfg, `d${i}`, 'eth0')));
  const before = { ...flushes };
  const rel = await Promise.all([...Array.from({ length: 6 }, (_, i) => store.releaseByID(`d${i}`, 'eth0')), store.releaseByID('nobody', 'eth0')]);
  assert.deepEqual(rel.map((r) => r.length), [1, 1, 1, 1, 1, 1, 0]);
  assert.deepEqual(ipFiles(dir), []);
  assert.equal(flushes.dir - before.dir, 1);
  assert.equal(flushes.data - before.data, 0);
  await store.releaseByID('nobody', 'eth0');
  assert.equal(flushes.dir - before.dir, 1, 'nothing to release: no flush');
});

test('ownership comes from the file as it is now, not from what this process read before', async (t) => {
  const dir = tmp(t);
  const store = new IpamStore(dir);
  const cfg = cfgFor(dir, [[{ subnet: '10.27.0.0/24' }]]);
  assert.deepEqual(ip4(await reserveFor(store, cfg, 'aaaa', 'eth0')), ['10.27.0.2']);
  assert.deepEqual(ip4(await reserveFor(store, cfg, 'aaaa', 'eth0')), ['10.27.0.2'], 'read and remembered');
  // another process replaces the file: same name and size, new owner
  rmSync(join(dir, '10.27.0.2'));
  writeFileSync(join(dir, '10.27.0.2'), 'bbbb\r\neth0');
  assert.deepEqual(ip4(await reserveFor(store, cfg, 'aaaa', 'eth0')), ['10.27.0.3'], 'aaaa no longer holds .2');
  assert.deepEqual(ip4(await reserveFor(store, cfg, 'bbbb', 'eth0')), ['10.27.0.2'], 'bbbb does');
  // rewritten in place (as host-local writes): same inode, new content
  writeFileSync(join(dir, '10.27.0.3'), 'cccc\r\neth0');
  assert.deepEqual((await store.releaseByID('aaaa', 'eth0')).map((r) => r.ip), [], 'DEL of aaaa must not remove cccc');
  assert.ok(existsSync(join(dir, '10.27.0.3')));
  assert.deepEqual((await store.releaseByID('cccc', 'eth0')).map((r) => r.ip), ['10.27.0.3']);
  // two spellings of one address written by foreign tools are two files, both released
  writeFileSync(join(dir, 'fd00::7'), 'dddd\r\neth0');
  writeFileSync(join(dir, 'FD00::7'), 'dddd\r\neth0');
  assert.deepEqual((await store.releaseByID('dddd', 'eth0')).map((r) => r.file).sort(), ['FD00::7', 'fd00::7']);
});
