// The rtnetlink adapter against the real kernel, in throw-away namespaces only: the CNI hot path
// (veth, bridge, macvlan, addresses, routes, deletes, errors) and read parity with the iproute2
// adapter on the same objects.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { NetnsFixture, delNetns, leftoverNetns, makeNetns, sh, parkInNetns } from '../helpers/netns.js';
import { Iproute2Adapter } from '../../src/kernel/iproute2.js';
import { NetlinkAdapter } from '../../src/kernel/netlink-adapter.js';
import { KernelError, isExists, isNotFound } from '../../src/kernel/exec.js';
import { defaultKernel, kernelBackendName } from '../../src/kernel/index.js';
import type { Link, NetnsRef } from '../../src/kernel/types.js';

const fx = new NetnsFixture();
const ip = new Iproute2Adapter();
const fallback = new Iproute2Adapter();
const nl = new NetlinkAdapter(fallback, { netnsSocketIdleMs: 100 });
const byName = (name: string): NetnsRef => ({ kind: 'name', name });
const sleepers: ChildProcess[] = [];
const extraNs: string[] = [];

async function parkedPath(ns: string): Promise<string> {
  const { path, child } = await parkInNetns(ns);
  sleepers.push(child);
  return path;
}

/** Both adapters' view of a link, without iproute2's free-form kind data (not read through netlink). */
async function parity(ns: NetnsRef, name: string): Promise<Link> {
  const a = await nl.link(ns, name);
  const b = await ip.link(ns, name);
  assert.ok(a && b, `${name} exists for both`);
  const { info: _i, ...rest } = b;
  assert.deepEqual(a, rest, `link ${name}: netlink and iproute2 agree`);
  assert.deepEqual(await nl.addresses(ns, name), await ip.addresses(ns, name), `addresses of ${name}: netlink and iproute2 agree`);
  return a;
}

after(() => {
  nl.close();
  for (const c of sleepers) if (c.pid && c.exitCode === null) process.kill(c.pid, 'SIGKILL');
  for (const n of extraNs) delNetns(n);
  fx.cleanup();
  assert.deepEqual(leftoverNetns(), []);
});

describe('kernel adapter (netlink)', () => {
  let A: string;
  let B: string;
  before(() => {
    A = fx.add('na');
    B = fx.add('nb');
  });

  it('is the default backend when koffi loads', () => {
    if (process.env.PODNET_KERNEL === 'iproute2') return;
    assert.equal(kernelBackendName(), 'netlink');
    assert.ok(defaultKernel() instanceof NetlinkAdapter);
  });

  it('deletes links together in one group deletion: missing names skipped, links of other groups and untagged ones untouched', async () => {
    const C = fx.add('ng');
    const D = fx.add('nh');
    for (let i = 0; i < 4; i++) sh('ip', ['-n', C, 'link', 'add', `dl${i}`, 'type', 'veth', 'peer', 'name', `pe${i}`, 'netns', D]);
    sh('ip', ['-n', C, 'link', 'add', 'keep0', 'type', 'veth', 'peer', 'name', 'keep1']);
    sh('ip', ['-n', C, 'link', 'set', 'keep0', 'group', '7']);
    const spawns = fallback.spawns;
    await nl.deleteLinksTogether(byName(C), ['dl0', 'dl1', 'gone0', 'dl2', 'dl3']);
    assert.equal(fallback.spawns, spawns, 'no iproute2 spawn');
    const left = (await nl.links(byName(C))).map((l) => l.name).sort();
    assert.deepEqual(left, ['keep0', 'keep1', 'lo']);
    assert.match(sh('ip', ['-n', C, '-d', 'link', 'show', 'keep0']), /group 7\b/);
    assert.deepEqual((await nl.links(byName(D))).map((l) => l.name), ['lo'], 'the peers went with them');
    await nl.deleteLinksTogether(byName(C), ['gone1', 'gone2']);
    await nl.deleteLinksTogether(byName(C), ['keep1']);
    assert.deepEqual((await nl.links(byName(C))).map((l) => l.name), ['lo']);
  });

  it('creates a veth with MAC/MTU and its peer directly in a netns given by path', async () => {
    const path = await parkedPath(B);
    const pathNs: NetnsRef = { kind: 'path', path };
    const spawns = fallback.spawns;
    await nl.apply(byName(A), [
      { op: 'link-add', spec: { kind: 'veth', name: 'hv0', mtu: 1450, mac: '02:42:00:00:00:10', peer: { name: 'eth0', netns: pathNs, mac: '02:42:00:00:00:01', mtu: 1450 } } },
      { op: 'link-set', name: 'hv0', up: true, alias: 'podnet:net:c0:eth0' },
    ]);
    await nl.apply(pathNs, [{ op: 'link-set', name: 'eth0', up: true }]);
    assert.equal(fallback.spawns, spawns, 'no iproute2 spawn on this path');
    const h = await parity(byName(A), 'hv0');
    const p = await parity(pathNs, 'eth0');
    assert.equal(h.kind, 'veth');
    assert.equal(h.mtu, 1450);
    assert.equal(h.mac, '02:42:00:00:00:10');
    assert.equal(h.up, true);
    assert.equal(h.alias, 'podnet:net:c0:eth0');
    assert.equal(p.mac, '02:42:00:00:00:01');
    assert.equal(p.linkIndex, h.index, 'peer points at the host side by ifindex');
    assert.equal(typeof p.linkNetnsId, 'number');
    assert.equal(await nl.link(byName(A), 'eth0'), undefined);
    assert.deepEqual(await nl.link(byName(B), 'eth0'), p, 'the same netns by name and by path');
  });

  it('builds a bridge (MAC, MTU, promisc) with an enslaved hairpin port', async () => {
    await nl.apply(byName(A), [
      { op: 'link-add', spec: { kind: 'bridge', name: 'br0', mac: '02:00:00:00:b0:01', mtu: 1450 } },
      { op: 'link-set', name: 'br0', up: true, promisc: true },
      { op: 'link-set', name: 'hv0', master: 'br0', up: true, alias: 'owner x' },
      { op: 'link-set', name: 'hv0', hairpin: true },
    ]);
    const br = await parity(byName(A), 'br0');
    assert.equal(br.kind, 'bridge');
    assert.equal(br.mac, '02:00:00:00:b0:01');
    assert.equal(br.mtu, 1450);
    assert.equal(br.up, true);
    assert.equal(br.promisc, true);
    const port = await parity(byName(A), 'hv0');
    assert.equal(port.master, 'br0');
    assert.equal(port.hairpin, true);
    assert.equal(port.alias, 'owner x');
    await nl.apply(byName(A), [
      { op: 'link-set', name: 'hv0', hairpin: false },
      { op: 'link-set', name: 'br0', promisc: false },
    ]);
    assert.equal((await parity(byName(A), 'hv0')).hairpin, false);
    assert.equal((await parity(byName(A), 'br0')).promisc, false);
    await nl.apply(byName(A), [{ op: 'link-set', name: 'hv0', master: null }]);
    assert.equal((await parity(byName(A), 'hv0')).master, undefined);
    await nl.apply(byName(A), [{ op: 'link-set', name: 'hv0', master: 'br0' }]);
  });

  it('creates a macvlan on a parent directly into another netns (by name and by path)', async () => {
    const path = await parkedPath(B);
    await nl.apply(byName(A), [
      { op: 'link-add', spec: { kind: 'veth', name: 'par0', peer: { name: 'par1' } } },
      { op: 'link-add', spec: { kind: 'macvlan', name: 'mv0', master: 'par0', mode: 'bridge', netns: byName(B), mtu: 1400, mac: '02:00:00:00:0a:01' } },
      { op: 'link-add', spec: { kind: 'macvlan', name: 'mv1', master: 'par0', mode: 'private', netns: { kind: 'path', path } } },
      { op: 'link-add', spec: { kind: 'macvlan', name: 'mvh', master: 'par0', mode: 'bridge' } },
    ]);
    const mv0 = await parity(byName(B), 'mv0');
    assert.equal(mv0.kind, 'macvlan');
    assert.equal(mv0.mtu, 1400);
    assert.equal(mv0.mac, '02:00:00:00:0a:01');
    assert.equal((await ip.link(byName(B), 'mv0'))?.info?.mode, 'bridge');
    assert.equal((await ip.link(byName(B), 'mv1'))?.info?.mode, 'private');
    assert.equal(await nl.link(byName(A), 'mv0'), undefined);
    // a same-netns parent is reported by name
    assert.equal((await parity(byName(A), 'mvh')).link, 'par0');
    assert.equal((await parity(byName(A), 'par1')).link, 'par0');
  });

  it('adds v4 and v6 addresses (nodad, noprefixroute, replace), reads them back like iproute2', async () => {
    await nl.apply(byName(A), [
      { op: 'addr-add', dev: 'br0', cidr: '10.60.0.1/24' },
      { op: 'addr-add', dev: 'br0', cidr: 'fd60::1/64', nodad: true },
      { op: 'addr-add', dev: 'br0', cidr: '10.60.0.1/24', replace: true },
      { op: 'addr-add', dev: 'br0', cidr: 'fd60:0:0:0:0:0:a:1/128', nodad: true, noprefixroute: true, replace: true },
      { op: 'addr-add', dev: 'hv0', cidr: '10.60.1.1/32', noprefixroute: true },
    ]);
    const addrs = await nl.addresses(byName(A), 'br0');
    assert.deepEqual(await ip.addresses(byName(A), 'br0'), addrs);
    assert.ok(addrs.some((a) => a.family === 4 && a.address === '10.60.0.1' && a.prefixLen === 24 && a.scope === 'global'));
    assert.ok(addrs.some((a) => a.family === 6 && a.address === 'fd60::1' && a.prefixLen === 64));
    assert.ok(addrs.some((a) => a.family === 6 && a.address === 'fd60::a:1' && a.prefixLen === 128));
    assert.ok(addrs.some((a) => a.family === 6 && a.scope === 'link'), 'link-local address with its scope');
    const flags = sh('ip', ['-n', A, '-6', 'addr', 'show', 'dev', 'br0']);
    assert.match(flags, /fd60::1\/64 scope global nodad/);
    assert.match(flags, /fd60::a:1\/128 scope global nodad noprefixroute/);
    assert.doesNotMatch(flags, /fd60\S* scope global[^\n]*tentative/, 'nodad: no DAD on our addresses');
    const err = await nl.apply(byName(A), [{ op: 'addr-add', dev: 'br0', cidr: '10.60.0.1/24' }]).then(
      () => assert.fail('should fail'),
      (e: unknown) => e,
    );
    assert.ok(isExists(err));
    assert.match((err as Error).message, /EEXIST/);
    await assert.rejects(nl.addresses(byName(A), 'nodev9'), (e) => isNotFound(e));
    await nl.apply(byName(A), [{ op: 'addr-del', dev: 'br0', cidr: 'fd60::a:1/128' }]);
    assert.ok(!(await nl.addresses(byName(A), 'br0')).some((a) => a.address === 'fd60::a:1'));
  });

  it('adds routes: default via (v4 onlink, v6), host /32 with src and metrics, other table; replace and delete', async () => {
    await nl.apply(byName(A), [
      { op: 'route-add', route: { dst: '10.61.0.5/32', dev: 'hv0', scope: 'link', src: '10.60.0.1', mtu: 1400, advmss: 1360, proto: 'static', metric: 20 } },
      { op: 'route-add', route: { dst: 'default', gateway: '169.254.1.1', dev: 'br0', onlink: true } },
      { op: 'route-add', route: { dst: '10.62.0.0/16', gateway: '10.60.0.254' } },
      { op: 'route-add', route: { dst: 'default', gateway: 'fd60::fe', dev: 'br0' } },
      { op: 'route-add', route: { dst: 'fd61::/64', gateway: 'fd60::fe', metric: 50, mtu: 1300 } },
      { op: 'route-add', route: { dst: '10.63.0.0/16', dev: 'br0', table: 100 } },
      { op: 'route-add', route: { dst: '10.64.0.0/16', dev: 'br0', table: 1000 } },
      { op: 'route-add', route: { dst: '10.62.0.0/16', gateway: '10.60.0.253', metric: 0 }, replace: true },
      { op: 'route-add', route: { dst: '10.61.0.6/32', dev: 'hv0', scope: 'link', src: '10.60.0.1' }, replace: true },
      { op: 'route-add', route: { dst: '10.61.0.6/32', dev: 'hv0', scope: 'link', src: '10.60.0.1' }, replace: true },
    ]);
    const main = await ip.routes(byName(A));
    const host = main.find((r) => r.dst === '10.61.0.5/32');
    assert.ok(host, JSON.stringify(main));
    assert.equal(host.dev, 'hv0');
    assert.equal(host.scope, 'link');
    assert.equal(host.src, '10.60.0.1');
    assert.equal(host.mtu, 1400);
    assert.equal(host.protocol, 'static');
    assert.equal(host.metric, 20);
    assert.match(sh('ip', ['-n', A, 'route', 'show', '10.61.0.5/32']), /advmss 1360/);
    const def4 = main.find((r) => r.family === 4 && r.dst === 'default');
    assert.equal(def4?.gateway, '169.254.1.1');
    assert.equal(def4?.onlink, true);
    assert.equal(def4?.protocol, 'boot');
    assert.equal(main.find((r) => r.dst === '10.62.0.0/16')?.gateway, '10.60.0.253');
    assert.equal(main.find((r) => r.dst === '10.61.0.6/32')?.src, '10.60.0.1');
    assert.equal(main.find((r) => r.family === 6 && r.dst === 'default')?.gateway, 'fd60::fe');
    const r6 = main.find((r) => r.dst === 'fd61::/64');
    assert.equal(r6?.metric, 50);
    assert.equal(r6?.mtu, 1300);
    assert.deepEqual((await ip.routes(byName(A), { table: 100 })).map((r) => r.dst), ['10.63.0.0/16']);
    assert.deepEqual((await ip.routes(byName(A), { table: 1000 })).map((r) => r.dst), ['10.64.0.0/16']);
    await assert.rejects(nl.apply(byName(A), [{ op: 'route-add', route: { dst: '10.62.0.0/16', gateway: '10.60.0.253', metric: 0 } }]), (e) => isExists(e));
    await nl.apply(byName(A), [
      { op: 'route-del', route: { dst: '10.62.0.0/16', gateway: '10.60.0.253', metric: 0 } },
      { op: 'route-del', route: { dst: '10.62.0.0/16' }, ignoreMissing: true },
      { op: 'route-del', route: { dst: '10.61.0.5/32', dev: 'hv0' } },
      { op: 'route-del', route: { dst: 'fd61::/64', gateway: 'fd60::fe', metric: 50 } },
      { op: 'route-del', route: { dst: '10.64.0.0/16', table: 1000 } },
    ]);
    const left = await ip.routes(byName(A), { table: 'all' });
    for (const d of ['10.62.0.0/16', '10.61.0.5/32', 'fd61::/64', '10.64.0.0/16']) assert.ok(!left.some((r) => r.dst === d), `${d} deleted`);
  });

  it('link-del / addr-del / route-del with ignoreMissing succeed when the object is gone, and keep going', async () => {
    await nl.apply(byName(A), [
      { op: 'link-add', spec: { kind: 'veth', name: 'gone0', peer: { name: 'gone1' } } },
      { op: 'link-del', name: 'gone0' },
      { op: 'link-del', name: 'gone1', ignoreMissing: true },
      { op: 'addr-del', dev: 'br0', cidr: '10.99.0.1/24', ignoreMissing: true },
      { op: 'addr-del', dev: 'nosuchdev', cidr: 'fd99::1/64', ignoreMissing: true },
      { op: 'route-del', route: { dst: '10.98.0.0/16', dev: 'br0' }, ignoreMissing: true },
      { op: 'link-set', name: 'par0', mtu: 1370 },
    ]);
    assert.equal(await nl.link(byName(A), 'gone1'), undefined);
    assert.equal((await nl.link(byName(A), 'par0'))?.mtu, 1370);
    await assert.rejects(nl.apply(byName(A), [{ op: 'link-del', name: 'gone1' }]), (e) => isNotFound(e));
  });

  it('reports the failing op, its index and the errno (address on a missing device)', async () => {
    const err = await nl.apply(byName(A), [{ op: 'link-set', name: 'br0', up: true }, { op: 'addr-add', dev: 'nodev0', cidr: '10.70.0.1/24' }]).then(
      () => assert.fail('should fail'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof KernelError);
    assert.equal(err.kind, 'not-found');
    assert.equal(err.opIndex, 1);
    assert.deepEqual(err.kernelOp, { op: 'addr-add', dev: 'nodev0', cidr: '10.70.0.1/24' });
    assert.match(err.message, /op #2 addr-add 10\.70\.0\.1\/24 dev nodev0/);
    assert.match(err.message, /Cannot find device "nodev0"/);
    assert.equal(err.argv[0], 'netlink');
  });

  it('pins a failure to the 3rd op, the ops before it took effect, the kernel message is kept', async () => {
    await nl.apply(byName(A), [{ op: 'link-del', name: 'b3', ignoreMissing: true }]);
    const failing = { op: 'route-add' as const, route: { dst: '10.80.0.0/16', gateway: '10.200.0.1' } };
    const err = await nl
      .apply(byName(A), [{ op: 'link-add', spec: { kind: 'bridge', name: 'b3' } }, { op: 'link-set', name: 'b3', mtu: 1234 }, failing, { op: 'link-set', name: 'b3', mtu: 1300 }])
      .then(
        () => assert.fail('should fail'),
        (e: unknown) => e,
      );
    assert.ok(err instanceof KernelError);
    assert.equal(err.opIndex, 2, err.message);
    assert.match(err.message, /op #3 route-add/);
    assert.match(err.message, /ENETUNREACH|Nexthop has invalid gateway/);
    assert.deepEqual(err.argv.slice(0, 2), ['netlink', 'RTM_NEWROUTE']);
    assert.equal((await nl.link(byName(A), 'b3'))?.mtu, 1234, 'ops 1-2 applied, op 4 not');
    // an unknown link kind / exists
    const ex = await nl.apply(byName(A), [{ op: 'link-add', spec: { kind: 'bridge', name: 'b3' } }]).catch((e: unknown) => e);
    assert.ok(isExists(ex));
    assert.match((ex as Error).message, /File exists \(EEXIST\)/);
  });

  it('hands unimplemented ops to iproute2 in batches (neighbours and FDB go through netlink), numbering failures in the whole plan', async () => {
    const spawns = fallback.spawns;
    await nl.apply(byName(A), [
      { op: 'link-add', spec: { kind: 'vxlan', name: 'vx0', vni: 42, dstport: 4789, dev: 'br0', learning: false } },
      { op: 'fdb-append', dev: 'vx0', mac: '00:00:00:00:00:00', dst: '10.60.0.2' },
      { op: 'link-set', name: 'vx0', up: true, mtu: 1400 },
      { op: 'neigh-replace', dev: 'br0', dst: '10.60.0.7', lladdr: '02:00:00:00:00:07' },
    ]);
    assert.equal(fallback.spawns - spawns, 1, 'one ip batch (vxlan); fdb and neigh through netlink');
    const fdb = await fallback.fdb(byName(A), 'vx0');
    assert.ok(fdb.some((e) => e.mac === '00:00:00:00:00:00' && e.dst === '10.60.0.2'), JSON.stringify(fdb));
    const neigh = await fallback.neighbours(byName(A), 'br0');
    assert.ok(neigh.some((n) => n.dst === '10.60.0.7' && n.lladdr === '02:00:00:00:00:07' && n.state.includes('PERMANENT')), JSON.stringify(neigh));
    await nl.apply(byName(A), [
      { op: 'fdb-replace', dev: 'vx0', mac: '02:00:00:00:00:09', dst: '10.60.0.9', self: true, permanent: true },
      { op: 'fdb-del', dev: 'vx0', mac: '00:00:00:00:00:00', dst: '10.60.0.2' },
      { op: 'fdb-del', dev: 'vx0', mac: '00:00:00:00:00:00', dst: '10.60.0.2', ignoreMissing: true },
      { op: 'neigh-del', dev: 'br0', dst: '10.60.0.7' },
    ]);
    const fdb2 = await fallback.fdb(byName(A), 'vx0');
    assert.ok(fdb2.some((e) => e.mac === '02:00:00:00:00:09' && e.dst === '10.60.0.9') && !fdb2.some((e) => e.dst === '10.60.0.2'), JSON.stringify(fdb2));
    assert.equal((await fallback.neighbours(byName(A), 'br0')).some((n) => n.dst === '10.60.0.7'), false);
    const vx = await parity(byName(A), 'vx0');
    assert.equal(vx.kind, 'vxlan');
    assert.equal(vx.mtu, 1400);
    const err = await nl
      .apply(byName(A), [
        { op: 'link-set', name: 'vx0', mtu: 1350 },
        { op: 'neigh-replace', dev: 'br0', dst: '10.60.0.8', lladdr: '02:00:00:00:00:08' },
        { op: 'neigh-del', dev: 'br0', dst: '10.60.0.99' },
      ])
      .then(
        () => assert.fail('should fail'),
        (e: unknown) => e,
      );
    assert.ok(err instanceof KernelError);
    assert.equal(err.opIndex, 2, err.message);
    assert.match(err.message, /op #3 neigh-del/);
    assert.equal((await nl.link(byName(A), 'vx0'))?.mtu, 1350);
  });

  it('rejects invalid names and values before sending anything', async () => {
    const n = nl.requests;
    const s = fallback.spawns;
    const bad: Array<() => Promise<unknown>> = [
      () => nl.apply(byName(A), [{ op: 'link-add', spec: { kind: 'bridge', name: 'a-very-long-name0' } }]),
      () => nl.apply(byName(A), [{ op: 'link-add', spec: { kind: 'bridge', name: 'ok0' } }, { op: 'link-del', name: 'x y' }]),
      () => nl.apply(byName(A), [{ op: 'link-set', name: 'a/b', up: true }]),
      () => nl.apply(byName(A), [{ op: 'addr-add', dev: 'br0', cidr: '10.0.0.300/24' }]),
      () => nl.apply(byName(A), [{ op: 'addr-add', dev: 'br0', cidr: 'fd00::1/129' }]),
      () => nl.apply(byName(A), [{ op: 'route-add', route: { dst: '10.0.0.0/8', gateway: 'fd00::1' } }]),
      () => nl.apply(byName(A), [{ op: 'link-set', name: 'br0', mac: '02:00:00:00:00' }]),
      () => nl.apply(byName('bad name'), []),
      () => nl.link(byName(A), 'bad\nname'),
      () => nl.apply(byName(A), [{ op: 'link-add', spec: { kind: 'veth', name: 'v0', peer: { name: 'v1', netns: byName('../etc') } } }]),
    ];
    for (const f of bad) await assert.rejects(f(), (e) => e instanceof KernelError && e.kind === 'invalid');
    assert.equal(nl.requests, n, 'no netlink request');
    assert.equal(fallback.spawns, s, 'no spawn');
    assert.equal(await nl.link(byName(A), 'ok0'), undefined, 'a plan with a bad op changes nothing');
  });

  it('a missing netns is an error of the call, not a missing object', async () => {
    await assert.rejects(nl.link(byName(`${A}-gone`), 'eth0'), /Cannot open network namespace/);
    await assert.rejects(nl.link({ kind: 'path', path: `/run/netns/${A}-gone` }, 'eth0'), KernelError);
    await assert.rejects(nl.apply(byName(`${A}-gone`), [{ op: 'link-del', name: 'eth0', ignoreMissing: true }]), /Cannot open network namespace/);
    await assert.rejects(
      nl.apply(byName(A), [{ op: 'link-add', spec: { kind: 'veth', name: 'vz0', peer: { name: 'eth0', netns: byName(`${A}-gone`) } } }]),
      (e) => e instanceof KernelError && e.opIndex === 0 && /Cannot open network namespace/.test(e.message),
    );
  });

  it('does not keep a deleted pod netns alive: idle sockets are closed, the veth goes with the netns', async () => {
    const pod = makeNetns('np');
    extraNs.push(pod);
    await nl.apply(byName(A), [{ op: 'link-add', spec: { kind: 'veth', name: 'hvp', peer: { name: 'eth0', netns: { kind: 'path', path: `/run/netns/${pod}` } } } }]);
    await nl.apply({ kind: 'path', path: `/run/netns/${pod}` }, [{ op: 'addr-add', dev: 'eth0', cidr: '10.77.0.2/24' }, { op: 'link-set', name: 'eth0', up: true }]);
    assert.ok(nl.cachedNetnsSockets >= 1);
    await new Promise((r) => setTimeout(r, 350));
    assert.equal(nl.cachedNetnsSockets, 0, 'closed when idle');
    delNetns(pod);
    let gone = false;
    for (let i = 0; i < 100 && !gone; i++) {
      gone = (await nl.link(byName(A), 'hvp')) === undefined;
      if (!gone) await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(gone, 'host veth vanished with the pod netns');
    await assert.rejects(nl.link({ kind: 'path', path: `/run/netns/${pod}` }, 'eth0'), (e) => isNotFound(e));
  });
});
