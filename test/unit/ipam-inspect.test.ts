// The IPAM inspector against fixture files (podnet-ipam's and host-local's) and fixture kernel
// state: live, leaked, pending, conflicting reservations, addresses in use without one, and gc
// releasing only the leaks, under the store's lock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { classify, inspect, parseLinks, problems, readDataDir, releaseLeaks, type LiveState } from '../../src/ipam/inspect.js';
import { withFileLock } from '../../src/util/lock.js';

const NOW = Date.now();
const OLD = NOW - 3600_000;

function dataDir(t: { after(fn: () => void): void }): string {
  const d = mkdtempSync(join(tmpdir(), 'podnet-ipam-inspect-'));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

function put(dir: string, name: string, content: string, mtimeMs = OLD): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, name), content);
  utimesSync(join(dir, name), mtimeMs / 1000, mtimeMs / 1000);
}

/** podnet-ipam's network "pods" and host-local's network "hl" (its files: the ID alone, or ID and ifname) */
function fixture(root: string): void {
  const pods = join(root, 'pods');
  put(pods, '10.50.0.2', 'c-live\r\neth0');
  put(pods, 'fd00:50::2', 'c-live\r\neth0');
  put(pods, '10.50.0.3', 'c-leak\r\neth0');
  put(pods, '10.50.0.4', 'c-new\r\neth0', NOW - 1000);
  put(pods, '10.50.0.5', 'c-conf\r\neth0');
  put(pods, '10.50.0.6', 'c-hostonly\r\neth0');
  put(pods, 'last_reserved_ip.0', '10.50.0.6');
  put(pods, 'lock', '');
  put(pods, '.podnet-tmp.10.50.0.7.123.abcd', 'half');
  const hl = join(root, 'hl');
  put(hl, '10.60.0.2', 'hl-old-format');
  put(hl, '10.60.0.3', 'hl-gone\neth0');
  put(hl, 'last_reserved_ip.0', '10.60.0.3');
  writeFileSync(join(root, 'not-a-network'), 'x');
}

const live: LiveState = {
  host: {
    links: [
      { ifname: 'podnet0', ifindex: 3, addrs: ['10.50.0.1'] },
      // c-live's host end: its peer is eth0 (ifindex 2) in pod-a, which also carries an address nobody reserved
      { ifname: 'veth0a', ifindex: 7, addrs: [], alias: 'podnet:pods:c-live:eth0', linkIndex: 2, linkNetnsid: 1 },
      // c-hostonly's host end is still there, its pod end has no address any more
      { ifname: 'veth0b', ifindex: 8, addrs: [], alias: 'podnet:pods:c-hostonly:eth0', linkIndex: 2, linkNetnsid: 2 },
      // a network that is not under this data dir is not this check's business
      { ifname: 'veth0c', ifindex: 9, addrs: [], alias: 'podnet:elsewhere:c-x:eth0', linkIndex: 2, linkNetnsid: 3 },
    ],
    peers: new Map([
      [1, 'pod-a'],
      [2, 'pod-d'],
      [3, 'pod-x'],
    ]),
  },
  namespaces: [
    { name: 'pod-a', links: [{ ifname: 'lo', ifindex: 1, addrs: [] }, { ifname: 'eth0', ifindex: 2, addrs: ['10.50.0.2', 'fd00:50::2', '10.50.0.9'], linkIndex: 7, linkNetnsid: 0 }] },
    { name: 'pod-b', links: [{ ifname: 'net1', ifindex: 4, addrs: ['10.50.0.5'] }] },
    { name: '/proc/4242/ns/net', links: [{ ifname: 'eth1', ifindex: 5, addrs: ['10.60.0.2'] }] },
    { name: 'pod-d', links: [{ ifname: 'eth0', ifindex: 2, addrs: [] }] },
    { name: 'pod-x', links: [{ ifname: 'eth0', ifindex: 2, addrs: ['10.99.0.7'] }] },
  ],
};

test('readDataDir: every network directory, podnet-ipam and host-local files alike, nothing but reservations', (t) => {
  const root = dataDir(t);
  fixture(root);
  const d = readDataDir(root);
  assert.deepEqual(d.networks, ['hl', 'pods']);
  assert.deepEqual(
    d.allocations.map((a) => [a.network, a.ip, a.containerID, a.ifname]),
    [
      ['hl', '10.60.0.2', 'hl-old-format', undefined],
      ['hl', '10.60.0.3', 'hl-gone', 'eth0'],
      ['pods', '10.50.0.2', 'c-live', 'eth0'],
      ['pods', '10.50.0.3', 'c-leak', 'eth0'],
      ['pods', '10.50.0.4', 'c-new', 'eth0'],
      ['pods', '10.50.0.5', 'c-conf', 'eth0'],
      ['pods', '10.50.0.6', 'c-hostonly', 'eth0'],
      ['pods', 'fd00:50::2', 'c-live', 'eth0'],
    ],
  );
  assert.equal(d.allocations[0].dir, join(root, 'hl'));
  assert.equal(Math.round(d.allocations[0].mtimeMs / 1000), Math.round(OLD / 1000));
});

test('classify: live, leaked, pending, conflict, and addresses on pod interfaces without a reservation', (t) => {
  const root = dataDir(t);
  fixture(root);
  const i = classify(root, readDataDir(root), live, { now: NOW, graceMs: 30_000 });
  const state = Object.fromEntries(i.allocations.map((a) => [`${a.network}/${a.ip}`, a.state]));
  assert.deepEqual(state, {
    'hl/10.60.0.2': 'live', // host-local's ID-only file: any interface of the container carrying it
    'hl/10.60.0.3': 'leaked',
    'pods/10.50.0.2': 'live',
    'pods/10.50.0.3': 'leaked',
    'pods/10.50.0.4': 'pending',
    'pods/10.50.0.5': 'conflict',
    'pods/10.50.0.6': 'leaked',
    'pods/fd00:50::2': 'live',
  });
  const by = (ip: string) => i.allocations.find((a) => a.ip === ip)!;
  assert.deepEqual(by('10.50.0.2').carrier, { netns: 'pod-a', ifname: 'eth0' });
  assert.deepEqual(by('10.60.0.2').carrier, { netns: '/proc/4242/ns/net', ifname: 'eth1' });
  assert.match(by('10.50.0.3').reason, /no namespace has eth0 with 10\.50\.0\.3, and no host link names container c-leak/);
  assert.match(by('10.50.0.6').reason, /host link veth0b of the container is still there \(its peer in pod-d\)/);
  assert.match(by('10.50.0.5').reason, /reserved for c-conf\/eth0, but 10\.50\.0\.5 is on net1 in pod-b/);
  assert.match(by('10.50.0.4').reason, /reserved 1\.0 s ago/);
  // the gateway on the node's bridge, the other network's pod and pod-a's reserved addresses are not reported
  assert.deepEqual(
    i.unreserved.map((u) => [u.network, u.ip, u.netns, u.ifname, u.containerId, u.hostLink]),
    [['pods', '10.50.0.9', 'pod-a', 'eth0', 'c-live', 'veth0a']],
  );
  const p = problems(i);
  assert.deepEqual(p.leaked.map((a) => a.ip), ['10.60.0.3', '10.50.0.3', '10.50.0.6']);
  assert.deepEqual(p.conflicts.map((a) => a.ip), ['10.50.0.5']);

  // past the grace period the young one is a leak too; with nothing live everything is
  const later = classify(root, readDataDir(root), live, { now: NOW + 60_000, graceMs: 30_000 });
  assert.equal(later.allocations.find((a) => a.ip === '10.50.0.4')!.state, 'leaked');
  const empty = classify(root, readDataDir(root), { host: { links: [], peers: new Map() }, namespaces: [] }, { now: NOW, graceMs: 0 });
  assert.ok(empty.allocations.every((a) => a.state === 'leaked'));
  assert.deepEqual(empty.unreserved, []);
});

test('releaseLeaks: --dry-run changes nothing; gc removes only the leaks, keeps a file changed since the inspection', async (t) => {
  const root = dataDir(t);
  fixture(root);
  const reader = { snapshot: async () => live };
  const i = await inspect(root, reader, { graceMs: 30_000, now: () => NOW });
  const before = readdirSync(join(root, 'pods')).sort();

  const dry = await releaseLeaks(i, { dryRun: true });
  assert.deepEqual(dry.released.map((a) => a.ip).sort(), ['10.50.0.3', '10.50.0.6', '10.60.0.3']);
  assert.deepEqual(readdirSync(join(root, 'pods')).sort(), before);
  assert.ok(existsSync(join(root, 'hl', '10.60.0.3')));

  // between inspection and gc: 10.50.0.6 released and taken again by another container
  unlinkSync(join(root, 'pods', '10.50.0.6'));
  put(join(root, 'pods'), '10.50.0.6', 'c-again\r\neth0');
  const r = await releaseLeaks(i);
  assert.deepEqual(r.released.map((a) => a.ip).sort(), ['10.50.0.3', '10.60.0.3']);
  assert.deepEqual(r.kept.map((k) => [k.allocation.ip, k.reason]), [['10.50.0.6', 'the reservation changed since the inspection (now c-again/eth0)']]);
  assert.deepEqual(readdirSync(join(root, 'pods')).sort(), ['10.50.0.2', '10.50.0.4', '10.50.0.5', '10.50.0.6', 'fd00:50::2', 'last_reserved_ip.0', 'lock']);
  assert.deepEqual(readdirSync(join(root, 'hl')).sort(), ['10.60.0.2', 'last_reserved_ip.0', 'lock']);

  // a second gc finds the same leak gone
  const again = await releaseLeaks(i);
  assert.deepEqual(again.released, []);
  assert.equal(again.kept.filter((k) => k.reason.startsWith('released by someone else')).length, 2);
});

test('releaseLeaks waits for the store lock another process (host-local, podnet-ipam) holds', async (t) => {
  const root = dataDir(t);
  put(join(root, 'n'), '10.70.0.2', 'gone\r\neth0');
  const i = await inspect(root, { snapshot: async () => ({ host: { links: [], peers: new Map() }, namespaces: [] }) }, { graceMs: 0 });
  let gc: Promise<unknown> | undefined;
  await withFileLock(join(root, 'n', 'lock'), async () => {
    gc = releaseLeaks(i);
    const first = await Promise.race([gc.then(() => 'done'), new Promise((r) => setTimeout(() => r('waiting'), 200))]);
    assert.equal(first, 'waiting');
    assert.ok(existsSync(join(root, 'n', '10.70.0.2')), 'nothing released while the lock is held elsewhere');
  });
  await gc;
  assert.ok(!existsSync(join(root, 'n', '10.70.0.2')));
});

test('parseLinks: ip -j addr show, global addresses only (canonical), aliases from ip -j link show', () => {
  const addr = JSON.stringify([
    { ifindex: 1, ifname: 'lo', addr_info: [{ family: 'inet', local: '127.0.0.1', prefixlen: 8, scope: 'host' }] },
    {
      ifindex: 2,
      link_index: 9,
      ifname: 'eth0',
      link_netnsid: 0,
      addr_info: [
        { family: 'inet', local: '10.9.9.2', prefixlen: 24, scope: 'global' },
        { family: 'inet6', local: 'fd00:0:0::0002', prefixlen: 64, scope: 'global' },
        { family: 'inet6', local: 'fe80::1', prefixlen: 64, scope: 'link' },
      ],
    },
  ]);
  const link = JSON.stringify([{ ifindex: 2, ifname: 'eth0', ifalias: 'podnet:n:c:eth0' }]);
  assert.deepEqual(parseLinks(addr, link), [
    { ifname: 'lo', ifindex: 1, addrs: [] },
    { ifname: 'eth0', ifindex: 2, addrs: ['10.9.9.2', 'fd00::2'], alias: 'podnet:n:c:eth0', linkIndex: 9, linkNetnsid: 0 },
  ]);
  assert.deepEqual(parseLinks(''), []);
});
