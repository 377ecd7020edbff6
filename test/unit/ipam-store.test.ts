import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IpamStore, parseReservation } from '../../src/ipam/store.js';
import { withFileLock } from '../../src/util/lock.js';
import { parseIP } from '../../src/util/ip.js';
import { setTimeout as sleep } from 'node:timers/promises';

function tmp(t: { after(fn: () => void): void }): string {
  const d = mkdtempSync(join(tmpdir(), 'podnet-ipam-store-'));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

test('reserve writes host-local files and refuses a taken address', async (t) => {
  const dir = join(tmp(t), 'net1');
  const s = new IpamStore(dir);
  assert.equal(s.exists(), false);
  assert.equal(await s.reserve(parseIP('10.1.0.2'), 'c1', 'eth0', 0), true);
  assert.equal(await s.reserve(parseIP('10.1.0.2'), 'c2', 'eth0', 0), false);
  assert.equal(await s.reserve(parseIP('fd00::2'), 'c1', 'eth0', 1), true);
  assert.equal(readFileSync(join(dir, '10.1.0.2'), 'utf8'), 'c1\r\neth0');
  assert.equal(readFileSync(join(dir, 'last_reserved_ip.0'), 'utf8'), '10.1.0.2');
  assert.equal(readFileSync(join(dir, 'last_reserved_ip.1'), 'utf8'), 'fd00::2');
  assert.ok(existsSync(join(dir, 'lock')));
  assert.deepEqual(readdirSync(dir).sort(), ['10.1.0.2', 'fd00::2', 'last_reserved_ip.0', 'last_reserved_ip.1', 'lock']);
  assert.deepEqual((await s.getByID('c1', 'eth0')).map((r) => r.ip).sort(), ['10.1.0.2', 'fd00::2']);
  assert.deepEqual(await s.getByID('c1', 'eth1'), []);
  assert.equal(await s.locked((l) => l.lastReserved(1)?.family), 6);
});

test('reads the old format without ifname and non-canonical names', async (t) => {
  const dir = tmp(t);
  writeFileSync(join(dir, '10.1.0.5'), 'old-container');
  writeFileSync(join(dir, '2001:DB8::5'), 'c6\r\neth0\r\n');
  writeFileSync(join(dir, 'not-an-ip'), 'x');
  const s = new IpamStore(dir);
  const all = s.list().sort((a, b) => a.ip.localeCompare(b.ip));
  assert.deepEqual(all, [
    { ip: '10.1.0.5', containerID: 'old-container', file: '10.1.0.5' },
    { ip: '2001:db8::5', containerID: 'c6', ifname: 'eth0', file: '2001:DB8::5' },
  ]);
  assert.equal((await s.getByID('old-container', 'net9')).length, 1, 'an entry without ifname matches any ifname');
  assert.deepEqual((await s.releaseByID('c6', 'eth0')).map((r) => r.ip), ['2001:db8::5']);
  assert.ok(!existsSync(join(dir, '2001:DB8::5')));
  assert.deepEqual(parseReservation('1.2.3.4', ' id \n if0\n'), { ip: '1.2.3.4', containerID: 'id', ifname: 'if0', file: '1.2.3.4' });
});

test('releaseByID touches only that attachment; missing dir is fine and stays missing', async (t) => {
  const base = tmp(t);
  const s = new IpamStore(join(base, 'net1'));
  assert.deepEqual(await s.releaseByID('c1', 'eth0'), []);
  assert.ok(!existsSync(join(base, 'net1')), 'DEL must not create the data dir');
  await s.reserve(parseIP('10.1.0.2'), 'c1', 'eth0', 0);
  await s.reserve(parseIP('10.1.0.3'), 'c1', 'eth1', 0);
  await s.reserve(parseIP('10.1.0.4'), 'c2', 'eth0', 0);
  assert.deepEqual((await s.releaseByID('c1', 'eth0')).map((r) => r.ip), ['10.1.0.2']);
  assert.deepEqual(s.list().map((r) => r.ip).sort(), ['10.1.0.3', '10.1.0.4']);
});

test('releaseAllExcept keeps exactly the valid attachments', async (t) => {
  const dir = tmp(t);
  const s = new IpamStore(dir);
  await s.reserve(parseIP('10.1.0.2'), 'a', 'eth0', 0);
  await s.reserve(parseIP('10.1.0.3'), 'a', 'eth1', 0);
  await s.reserve(parseIP('10.1.0.4'), 'b', 'eth0', 0);
  writeFileSync(join(dir, '10.1.0.5'), 'legacy');
  writeFileSync(join(dir, '10.1.0.6'), 'legacy-gone');
  const out = await s.releaseAllExcept([
    { containerID: 'a', ifname: 'eth0' },
    { containerID: 'legacy', ifname: 'eth0' },
  ]);
  assert.deepEqual(out.errors, []);
  assert.deepEqual(out.released.map((r) => r.ip).sort(), ['10.1.0.3', '10.1.0.4', '10.1.0.6']);
  assert.deepEqual(s.list().map((r) => r.ip).sort(), ['10.1.0.2', '10.1.0.5']);
});

test('temp files of dead writers are ignored by readers and removed under the lock', async (t) => {
  const dir = tmp(t);
  writeFileSync(join(dir, '.podnet-tmp.10.1.0.9.123.abcd'), 'half');
  const s = new IpamStore(dir);
  assert.deepEqual(s.list(), []);
  await s.locked(() => undefined);
  assert.deepEqual(readdirSync(dir).sort(), ['lock']);
});

test('withFileLock serializes callers in one process', async (t) => {
  const lock = join(tmp(t), 'lock');
  let inside = 0;
  let maxInside = 0;
  const order: number[] = [];
  await Promise.all(
    Array.from({ length: 10 }, (_, i) =>
      withFileLock(lock, async () => {
        inside++;
        maxInside = Math.max(maxInside, inside);
        await sleep(2);
        order.push(i);
        inside--;
      }),
    ),
  );
  assert.equal(maxInside, 1);
  assert.deepEqual(order, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  // an exception releases the lock for the next caller
  await assert.rejects(withFileLock(lock, () => Promise.reject(new Error('boom'))), /boom/);
  assert.equal(await withFileLock(lock, () => 42), 42);
});
