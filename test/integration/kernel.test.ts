// The kernel adapter against the real kernel, in throw-away namespaces only.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { NetnsFixture, leftoverNetns, nsExec, parkInNetns } from '../helpers/netns.js';
import { Iproute2Adapter } from '../../src/kernel/iproute2.js';
import { NftCli } from '../../src/kernel/nft.js';
import { KernelError, isExists, isNotFound } from '../../src/kernel/exec.js';
import type { NetnsRef } from '../../src/kernel/types.js';

const fx = new NetnsFixture();
const k = new Iproute2Adapter();
const byName = (name: string): NetnsRef => ({ kind: 'name', name });
const sleepers: ChildProcess[] = [];

async function parkedPath(ns: string): Promise<string> {
  const { path, child } = await parkInNetns(ns);
  sleepers.push(child);
  return path;
}

after(() => {
  for (const c of sleepers) if (c.pid && c.exitCode === null) process.kill(c.pid, 'SIGKILL');
  fx.cleanup();
  assert.deepEqual(leftoverNetns(), []);
});

describe('kernel adapter (iproute2)', () => {
  let A: string;
  let B: string;
  before(() => {
    A = fx.add('ka');
    B = fx.add('kb');
  });

  it('creates a veth pair with the peer directly in another named netns', async () => {
    await k.apply(byName(A), [
      { op: 'link-add', spec: { kind: 'veth', name: 'hv0', mtu: 1450, peer: { name: 'pv0', netns: byName(B), mac: '02:42:00:00:00:01', mtu: 1450 } } },
      { op: 'link-set', name: 'hv0', up: true },
    ]);
    const h = await k.link(byName(A), 'hv0');
    const p = await k.link(byName(B), 'pv0');
    assert.ok(h && p);
    assert.equal(h.kind, 'veth');
    assert.equal(h.mtu, 1450);
    assert.equal(h.up, true);
    assert.equal(p.mac, '02:42:00:00:00:01');
    assert.equal(p.linkIndex, h.index, 'peer points at the host side by ifindex');
    assert.equal(typeof p.linkNetnsId, 'number');
    assert.equal(await k.link(byName(A), 'pv0'), undefined);
    // a missing netns is not a missing link
    await assert.rejects(k.link(byName(`${A}-gone`), 'pv0'), /Cannot open network namespace/);
    await assert.rejects(k.link({ kind: 'path', path: `/run/netns/${A}-gone` }, 'pv0'), KernelError);
  });

  it('creates a veth peer in a netns given by path, and operates inside a path netns', async () => {
    const path = await parkedPath(B);
    const pathNs: NetnsRef = { kind: 'path', path };
    await k.apply(byName(A), [{ op: 'link-add', spec: { kind: 'veth', name: 'hv1', peer: { name: 'pv1', netns: pathNs } } }]);
    assert.ok(await k.link(byName(B), 'pv1'));
    await k.apply(pathNs, [
      { op: 'link-set', name: 'pv1', newName: 'eth1', mac: '02:42:00:00:00:11' },
      { op: 'link-set', name: 'eth1', up: true },
      { op: 'addr-add', dev: 'eth1', cidr: '10.50.0.2/24' },
    ]);
    const l = await k.link(pathNs, 'eth1');
    assert.equal(l?.mac, '02:42:00:00:00:11');
    assert.deepEqual(
      (await k.addresses(pathNs, 'eth1')).filter((a) => a.family === 4).map((a) => `${a.address}/${a.prefixLen}`),
      ['10.50.0.2/24'],
    );
    assert.equal(await k.netnsId(pathNs), await k.netnsId(byName(B)));
    assert.notEqual(await k.netnsId(byName(A)), await k.netnsId(byName(B)));
    assert.equal(await k.netnsId({ kind: 'path', path: '/etc/hostname' }), undefined);
    assert.equal(await k.netnsId(byName(`${A}-missing`)), undefined);
  });

  it('moves a link into a netns given by path, renaming it on the way', async () => {
    const path = await parkedPath(B);
    await k.apply(byName(A), [
      { op: 'link-add', spec: { kind: 'veth', name: 'hv2', peer: { name: 'tmp2' } } },
      { op: 'link-set', name: 'tmp2', mtu: 1400, netns: { kind: 'path', path }, newName: 'eth2' },
    ]);
    assert.equal(await k.link(byName(A), 'tmp2'), undefined);
    assert.equal((await k.link(byName(B), 'eth2'))?.mtu, 1400);
  });

  it('builds a bridge with an enslaved hairpin port, MTU and MAC', async () => {
    await k.apply(byName(A), [
      { op: 'link-add', spec: { kind: 'bridge', name: 'br0', mac: '02:00:00:00:b0:01' } },
      { op: 'link-set', name: 'hv0', master: 'br0', hairpin: true },
      { op: 'link-set', name: 'br0', up: true, mtu: 1450 },
      { op: 'link-set', name: 'hv1', mac: '02:00:00:00:00:a1', mtu: 1300, alias: 'podnet owner x', promisc: true },
    ]);
    const br = await k.link(byName(A), 'br0');
    assert.equal(br?.kind, 'bridge');
    assert.equal(br?.mac, '02:00:00:00:b0:01');
    assert.equal(br?.mtu, 1450);
    assert.equal(br?.up, true);
    assert.equal(typeof br?.info?.vlan_filtering, 'number');
    const port = await k.link(byName(A), 'hv0');
    assert.equal(port?.master, 'br0');
    assert.equal(port?.hairpin, true);
    const hv1 = await k.link(byName(A), 'hv1');
    assert.equal(hv1?.mac, '02:00:00:00:00:a1');
    assert.equal(hv1?.mtu, 1300);
    assert.equal(hv1?.alias, 'podnet owner x');
    assert.equal(hv1?.promisc, true);
    await k.apply(byName(A), [{ op: 'link-set', name: 'hv0', hairpin: false }]);
    assert.equal((await k.link(byName(A), 'hv0'))?.hairpin, false);
    const all = await k.links(byName(A));
    assert.deepEqual(all.map((l) => l.name).sort(), ['br0', 'hv0', 'hv1', 'hv2', 'lo']);
  });

  it('adds v4 and v6 addresses (nodad, replace) and reads them back', async () => {
    await k.apply(byName(A), [
      { op: 'addr-add', dev: 'br0', cidr: '10.60.0.1/24' },
      { op: 'addr-add', dev: 'br0', cidr: 'fd60::1/64', nodad: true },
      { op: 'addr-add', dev: 'br0', cidr: '10.60.0.1/24', replace: true },
    ]);
    const addrs = await k.addresses(byName(A), 'br0');
    assert.ok(addrs.some((a) => a.family === 4 && a.address === '10.60.0.1' && a.prefixLen === 24 && a.scope === 'global'));
    assert.ok(addrs.some((a) => a.family === 6 && a.address === 'fd60::1' && a.prefixLen === 64));
    const every = await k.addresses(byName(A));
    assert.ok(every.some((a) => a.ifname === 'br0' && a.address === 'fd60::1'));
    await assert.rejects(k.apply(byName(A), [{ op: 'addr-add', dev: 'br0', cidr: '10.60.0.1/24' }]), (e) => isExists(e));
  });

  it('adds routes: default via, onlink, /32 host route, v6, other table; replace and delete', async () => {
    await k.apply(byName(A), [
      { op: 'link-set', name: 'hv1', up: true },
      { op: 'route-add', route: { dst: '10.61.0.5/32', dev: 'hv1', scope: 'link', src: '10.60.0.1', mtu: 1400, advmss: 1360, proto: 'static', metric: 20 } },
      { op: 'route-add', route: { dst: 'default', gateway: '169.254.1.1', dev: 'br0', onlink: true } },
      { op: 'route-add', route: { dst: '10.62.0.0/16', gateway: '10.60.0.254' } },
      { op: 'route-add', route: { dst: 'default', gateway: 'fd60::fe', dev: 'br0' } },
      { op: 'route-add', route: { dst: '10.63.0.0/16', dev: 'br0', table: 100 } },
      { op: 'route-add', route: { dst: '10.62.0.0/16', gateway: '10.60.0.253', metric: 0 }, replace: true },
    ]);
    const main = await k.routes(byName(A));
    const host = main.find((r) => r.dst === '10.61.0.5/32');
    assert.ok(host, JSON.stringify(main));
    assert.equal(host.dev, 'hv1');
    assert.equal(host.scope, 'link');
    assert.equal(host.src, '10.60.0.1');
    assert.equal(host.mtu, 1400);
    assert.equal(host.protocol, 'static');
    assert.equal(host.metric, 20);
    assert.equal(host.table, 254);
    const def4 = main.find((r) => r.family === 4 && r.dst === 'default');
    assert.equal(def4?.gateway, '169.254.1.1');
    assert.equal(def4?.onlink, true);
    assert.equal(main.find((r) => r.dst === '10.62.0.0/16')?.gateway, '10.60.0.253');
    assert.equal(main.find((r) => r.family === 6 && r.dst === 'default')?.gateway, 'fd60::fe');
    assert.ok(!main.some((r) => r.dst === '10.63.0.0/16'), 'table 100 is not main');
    assert.ok(!main.some((r) => r.type === 'local'), 'local table not mixed in');
    const v6 = await k.routes(byName(A), { family: 6 });
    assert.ok(v6.every((r) => r.family === 6) && v6.some((r) => r.dst === 'fd60::/64'));
    const t100 = await k.routes(byName(A), { table: 100 });
    assert.deepEqual(t100.map((r) => [r.dst, r.table]), [['10.63.0.0/16', 100]]);
    assert.deepEqual(await k.routes(byName(A), { family: 4, table: 101 }), []);
    const all = await k.routes(byName(A), { table: 'all', dev: 'br0' });
    assert.ok(all.some((r) => r.table === 255 && r.type === 'local'));
    assert.ok(all.every((r) => r.dev === 'br0'));
    await k.apply(byName(A), [
      { op: 'route-del', route: { dst: '10.62.0.0/16', gateway: '10.60.0.253', metric: 0 } },
      { op: 'route-del', route: { dst: '10.62.0.0/16' }, ignoreMissing: true },
    ]);
    assert.ok(!(await k.routes(byName(A), { family: 4 })).some((r) => r.dst === '10.62.0.0/16'));
  });

  it('replaces and deletes neighbours', async () => {
    await k.apply(byName(A), [
      { op: 'neigh-replace', dev: 'br0', dst: '10.60.0.7', lladdr: '02:00:00:00:00:07' },
      { op: 'neigh-replace', dev: 'br0', dst: 'fd60::7', lladdr: '02:00:00:00:00:77' },
    ]);
    const n = await k.neighbours(byName(A), 'br0');
    assert.deepEqual(
      n.filter((x) => x.state.includes('PERMANENT')).map((x) => [x.dst, x.lladdr, x.dev]).sort(),
      [['10.60.0.7', '02:00:00:00:00:07', 'br0'], ['fd60::7', '02:00:00:00:00:77', 'br0']],
    );
    await k.apply(byName(A), [
      { op: 'neigh-del', dev: 'br0', dst: '10.60.0.7' },
      { op: 'neigh-del', dev: 'br0', dst: '10.60.0.7', ignoreMissing: true },
      { op: 'neigh-del', dev: 'br0', dst: 'fd60::7' },
    ]);
    assert.deepEqual((await k.neighbours(byName(A))).filter((x) => x.state.includes('PERMANENT')), []);
  });

  it('creates a vxlan device and manages its fdb (flood entries and a static MAC)', async () => {
    await k.apply(byName(A), [
      { op: 'link-add', spec: { kind: 'vxlan', name: 'vx0', vni: 4242, dstport: 4789, local: '10.60.0.1', dev: 'br0', learning: false, mtu: 1400 } },
      { op: 'fdb-append', dev: 'vx0', mac: '00:00:00:00:00:00', dst: '10.60.0.2' },
      { op: 'fdb-append', dev: 'vx0', mac: '00:00:00:00:00:00', dst: '10.60.0.3' },
      { op: 'fdb-replace', dev: 'vx0', mac: '02:00:00:00:00:33', dst: '10.60.0.3', self: true, permanent: true },
      { op: 'link-set', name: 'vx0', up: true },
    ]);
    const vx = await k.link(byName(A), 'vx0');
    assert.equal(vx?.kind, 'vxlan');
    assert.equal(vx?.info?.id, 4242);
    assert.equal(vx?.info?.port, 4789);
    assert.equal(vx?.info?.local, '10.60.0.1');
    assert.equal(vx?.info?.learning, false);
    const fdb = await k.fdb(byName(A), 'vx0');
    const flood = fdb.filter((e) => e.mac === '00:00:00:00:00:00').map((e) => e.dst).sort();
    assert.deepEqual(flood, ['10.60.0.2', '10.60.0.3']);
    assert.ok(fdb.every((e) => e.dev === 'vx0'));
    assert.ok(fdb.some((e) => e.mac === '02:00:00:00:00:33' && e.dst === '10.60.0.3' && e.flags.includes('self')));
    await k.apply(byName(A), [
      { op: 'fdb-del', dev: 'vx0', mac: '00:00:00:00:00:00', dst: '10.60.0.2' },
      { op: 'fdb-del', dev: 'vx0', mac: '00:00:00:00:00:00', dst: '10.60.0.2', ignoreMissing: true },
      { op: 'link-set', name: 'vx0', mtu: 1350 },
    ]);
    assert.deepEqual((await k.fdb(byName(A), 'vx0')).filter((e) => e.mac === '00:00:00:00:00:00').map((e) => e.dst), ['10.60.0.3']);
    assert.equal((await k.link(byName(A), 'vx0'))?.mtu, 1350, 'ops after an ignored missing fdb entry still run');
    assert.ok((await k.fdb(byName(A))).some((e) => e.dev === 'vx0'));
  });

  it('creates a macvlan on a veth parent directly into another netns (by name and by path)', async () => {
    const path = await parkedPath(B);
    await k.apply(byName(A), [
      { op: 'link-add', spec: { kind: 'veth', name: 'par0', peer: { name: 'par1' } } },
      { op: 'link-add', spec: { kind: 'macvlan', name: 'mv0', master: 'par0', mode: 'bridge', netns: byName(B), mtu: 1400 } },
      { op: 'link-add', spec: { kind: 'macvlan', name: 'mv1', master: 'par0', mode: 'private', netns: { kind: 'path', path } } },
    ]);
    const mv0 = await k.link(byName(B), 'mv0');
    assert.equal(mv0?.kind, 'macvlan');
    assert.equal(mv0?.info?.mode, 'bridge');
    assert.equal(mv0?.mtu, 1400);
    assert.equal((await k.link(byName(B), 'mv1'))?.info?.mode, 'private');
    assert.equal(await k.link(byName(A), 'mv0'), undefined);
  });

  it('creates a tun device with an MTU', async () => {
    await k.apply(byName(A), [{ op: 'link-add', spec: { kind: 'tun', name: 'tun0', mtu: 1380 } }]);
    const t = await k.link(byName(A), 'tun0');
    assert.equal(t?.kind, 'tun');
    assert.equal(t?.mtu, 1380);
  });

  it('reads and writes sysctls in a netns with one spawn for many values', async () => {
    const before = k.spawns;
    await k.sysctlSet(byName(B), { 'net.ipv4.ip_forward': '1', 'net.ipv6.conf.all.forwarding': '1', 'net/ipv4/conf/mv0/rp_filter': '2' });
    assert.equal(k.spawns - before, 1);
    assert.equal(await k.sysctlGet(byName(B), 'net.ipv4.ip_forward'), '1');
    assert.equal(await k.sysctlGet(byName(B), 'net.ipv4.conf.mv0.rp_filter'), '2');
    assert.equal(nsExec(B, ['cat', '/proc/sys/net/ipv6/conf/all/forwarding']).trim(), '1');
    assert.equal(nsExec(A, ['cat', '/proc/sys/net/ipv4/ip_forward']).trim(), '0', 'other netns untouched');
    await assert.rejects(k.sysctlGet(byName(B), 'net.ipv4.nosuch'), (e) => isNotFound(e));
    await assert.rejects(k.sysctlSet(byName(B), { 'net.ipv4.ip_forward': 'abc' }), (e) => e instanceof KernelError && /ip_forward/.test(e.message));
    const n = k.spawns;
    await assert.rejects(k.sysctlSet(byName(B), { 'net.ipv4.../../x': '1' }), (e) => e instanceof KernelError && e.kind === 'invalid');
    await assert.rejects(k.sysctlGet(byName(B), 'net ipv4'), (e) => e instanceof KernelError && e.kind === 'invalid');
    assert.equal(k.spawns, n, 'invalid keys never reach a spawn');
    // The current netns is read straight from /proc/sys (read-only here: the root netns is not ours to change).
    assert.match(await k.sysctlGet({ kind: 'current' }, 'net.ipv4.ip_forward'), /^[01]$/);
    assert.equal(k.spawns, n);
  });

  it('link-del with ignoreMissing succeeds when the link is gone, and keeps going', async () => {
    await k.apply(byName(A), [
      { op: 'link-add', spec: { kind: 'veth', name: 'gone0', peer: { name: 'gone1' } } },
      { op: 'link-del', name: 'gone0' },
      { op: 'link-del', name: 'gone1', ignoreMissing: true },
      { op: 'addr-del', dev: 'br0', cidr: '10.99.0.1/24', ignoreMissing: true },
      { op: 'addr-del', dev: 'nosuchdev', cidr: 'fd99::1/64', ignoreMissing: true },
      { op: 'link-set', name: 'tun0', mtu: 1370 },
    ]);
    assert.equal(await k.link(byName(A), 'gone1'), undefined);
    assert.equal((await k.link(byName(A), 'tun0'))?.mtu, 1370);
    await assert.rejects(k.apply(byName(A), [{ op: 'link-del', name: 'gone1' }]), (e) => isNotFound(e));
  });

  it('reports the failing op and the kernel message (address on a missing device)', async () => {
    const err = await k.apply(byName(A), [{ op: 'addr-add', dev: 'nodev0', cidr: '10.70.0.1/24' }]).then(
      () => assert.fail('should fail'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof KernelError);
    assert.equal(err.name, 'KernelError');
    assert.equal(err.kind, 'not-found');
    assert.ok(isNotFound(err));
    assert.equal(err.opIndex, 0);
    assert.match(err.message, /addr-add 10\.70\.0\.1\/24 dev nodev0/);
    assert.match(err.message, /Cannot find device "nodev0"/);
    assert.deepEqual(err.argv.slice(0, 3), ['ip', '-n', A]);
  });

  it('pins a failure to the 3rd op of a batch, and the ops before it took effect', async () => {
    for (const failing of [
      { op: 'route-add' as const, route: { dst: '10.80.0.0/16', gateway: '10.200.0.1' } },
      // neigh errors make ip exit() without its "Command failed" note; the markers still find the op
      { op: 'neigh-del' as const, dev: 'br0', dst: '10.60.0.99' },
    ]) {
      await k.apply(byName(A), [{ op: 'link-del', name: 'b3', ignoreMissing: true }]);
      const err = await k
        .apply(byName(A), [
          { op: 'link-add', spec: { kind: 'bridge', name: 'b3' } },
          { op: 'link-set', name: 'b3', mtu: 1234 },
          failing,
          { op: 'link-set', name: 'b3', mtu: 1300 },
        ])
        .then(
          () => assert.fail('should fail'),
          (e: unknown) => e,
        );
      assert.ok(err instanceof KernelError);
      assert.equal(err.opIndex, 2, err.message);
      assert.match(err.message, /op #3/);
      assert.match(err.message, new RegExp(failing.op));
      assert.deepEqual(err.kernelOp, failing);
      assert.equal((await k.link(byName(A), 'b3'))?.mtu, 1234, 'ops 1-2 applied, op 4 not');
    }
  });

  it('rejects invalid names and values before spawning anything', async () => {
    const n = k.spawns;
    const bad: Array<() => Promise<unknown>> = [
      () => k.apply(byName(A), [{ op: 'link-add', spec: { kind: 'bridge', name: 'a-very-long-name0' } }]),
      () => k.apply(byName(A), [{ op: 'link-add', spec: { kind: 'bridge', name: 'ok0' } }, { op: 'link-del', name: 'x y' }]),
      () => k.apply(byName(A), [{ op: 'link-set', name: 'a/b', up: true }]),
      () => k.apply(byName(A), [{ op: 'link-set', name: '..', up: true }]),
      () => k.apply(byName(A), [{ op: 'addr-add', dev: 'eth0:1', cidr: '10.0.0.1/24' }]),
      () => k.apply(byName(A), [{ op: 'addr-add', dev: 'br0', cidr: '10.0.0.300/24' }]),
      () => k.apply(byName(A), [{ op: 'neigh-replace', dev: 'br0', dst: '10.0.0.1', lladdr: 'zz:00:00:00:00:00' }]),
      () => k.apply(byName('bad name'), []),
      () => k.apply({ kind: 'path', path: '/run/netns/x y' }, []),
      () => k.link(byName(A), 'bad\nname'),
      () => k.apply(byName(A), [{ op: 'link-add', spec: { kind: 'veth', name: 'v0', peer: { name: 'v1', netns: byName('../etc') } } }]),
    ];
    for (const f of bad) await assert.rejects(f(), (e) => e instanceof KernelError && e.kind === 'invalid');
    assert.equal(k.spawns, n);
    assert.equal(await k.link(byName(A), 'ok0'), undefined, 'a plan with a bad op changes nothing');
  });

  it('probes link kinds once per process', async () => {
    assert.equal(await k.supportsLinkKind('ipvlan'), false);
    assert.equal(await k.supportsLinkKind('vxlan'), true);
    assert.equal(await k.supportsLinkKind('veth'), true);
    assert.equal(await k.supportsLinkKind('macvlan'), true);
    assert.equal(await k.supportsLinkKind('dummy'), false);
    const n = k.spawns;
    assert.equal(await k.supportsLinkKind('vxlan'), true);
    assert.equal(await k.supportsLinkKind('ipvlan'), false);
    assert.equal(k.spawns, n, 'cached');
  });
});

describe('nft runner', () => {
  let C: string;
  const nft = new NftCli();
  before(() => {
    C = fx.add('kn');
  });

  it('applies a script atomically and lists it as JSON', async () => {
    await nft.run(byName(C), 'table inet podnet_t {\n  chain fwd_c { type filter hook forward priority 0; policy accept; }\n}\n');
    const j = (await nft.listJson(byName(C), ['table', 'inet', 'podnet_t'])) as { nftables: Array<Record<string, { name?: string }>> };
    assert.ok(j.nftables.some((o) => o.chain?.name === 'fwd_c'));
    assert.equal(await nft.listJson(byName(C), ['table', 'inet', 'nosuch']), undefined);
    await assert.rejects(nft.listJson(byName(`${C}-gone`), ['tables']), KernelError);
    const err = await nft.run(byName(C), 'add chain inet podnet_t c2\nadd rule inet podnet_t c2 bogus\n').then(
      () => assert.fail('should fail'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof KernelError);
    assert.match(err.message, /syntax error/);
    const after = (await nft.listJson(byName(C), ['table', 'inet', 'podnet_t'])) as { nftables: Array<Record<string, { name?: string }>> };
    assert.ok(!after.nftables.some((o) => o.chain?.name === 'c2'), 'failed script left nothing behind');
    assert.equal(await nft.listJson(byName(fx.add('kn2')), ['tables']) !== undefined, true);
  });
});
