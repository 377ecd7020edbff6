// The tun backend: its planner is pure ((own lease, peers, actual state) → ops + the datapath's peer
// table); ensureDevice is checked against a fake kernel (refusals change nothing); the peers file
// format and the supervisor's pure parts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TunBackend, TUN_DEVICE } from '../../src/agent/backends/tun.js';
import { createBackend, PODNET_RTPROTO_STR, type ActualState } from '../../src/agent/backends/index.js';
import { applyToActual } from '../../src/agent/backends/reconciler.js';
import type { Address, KernelAdapter, KernelOp, Link, NetnsRef, Route } from '../../src/kernel/types.js';
import { decodeLease, encodeLease, leaseKey, type NodeLease } from '../../src/agent/lease.js';
import { renderOp } from '../../src/kernel/render.js';
import { parsePeers, renderPeers, tundExitError, tundFiles, tundMatches, writePeers, readTundStats, stopTund, checkUdpPort } from '../../src/agent/tund/index.js';
import { createSocket } from 'node:dgram';

const empty = (): ActualState => ({ routes: [], neighbours: [], fdb: [], ifaceAddresses: [] });

function lease(n: number, extra: Partial<NodeLease> = {}): NodeLease {
  return { subnet: `10.244.${n}.0/24`, publicIP: `192.168.200.${n}`, backendType: 'tun', backendData: { Port: 8285 }, nodeName: `node${n}`, ...extra };
}
const dual = (n: number, extra: Partial<NodeLease> = {}) => lease(n, { ipv6Subnet: `fd00:10:244:${n}::/64`, ...extra });

const backend = (extra: Partial<ConstructorParameters<typeof TunBackend>[0]> = {}) => new TunBackend({ iface: 'eth0', clusterNetworks: ['10.244.0.0/16'], ...extra });
const routeDsts = (ops: KernelOp[], op: 'route-add' | 'route-del') => ops.flatMap((o) => (o.op === op ? [o.route.dst] : [])).sort();

test('tun backend: device, overhead, default port; createBackend knows it', () => {
  const b = backend();
  assert.equal(b.device, 'podnet.tun');
  assert.equal(b.mtuOverhead(false), 28);
  assert.equal(b.mtuOverhead(true), 48);
  assert.equal(b.port, 8285);
  assert.equal(createBackend({ type: 'tun', iface: 'eth0', port: 9000 }).type, 'tun');
  assert.equal((createBackend({ type: 'tun', iface: 'eth0', port: 9000 }) as TunBackend).port, 9000);
  assert.throws(() => new TunBackend({ iface: 'eth0', port: 70000 }), /Backend\.Port/);
  assert.throws(() => new TunBackend({ iface: 'eth0', clusterNetworks: ['nope'] }), /not a CIDR/);
});

test('tun plan: the cluster network and each peer subnet → dev podnet.tun (proto 80), peer table with ports', () => {
  const b = backend();
  const own = lease(1);
  const plan = b.planPeers(own, [own, lease(2), lease(3, { backendData: { Port: 9999 } })], empty());
  assert.deepEqual(plan.errors, []);
  assert.deepEqual(routeDsts(plan.ops, 'route-add'), ['10.244.0.0/16', '10.244.2.0/24', '10.244.3.0/24']);
  for (const o of plan.ops) {
    assert.equal(o.op, 'route-add');
    if (o.op !== 'route-add') continue;
    assert.equal(o.route.dev, TUN_DEVICE);
    assert.equal(o.route.proto, PODNET_RTPROTO_STR);
    assert.equal(o.route.gateway, undefined);
    // renders as a plain device route
    assert.match(renderOp(o).lines[0] ?? '', /^route replace 10\.244\.\d+\.0\/\d+ dev podnet\.tun proto 80$/);
  }
  assert.deepEqual(plan.datapath, {
    locals: ['10.244.1.0/24'],
    peers: [
      { subnet: '10.244.2.0/24', publicIP: '192.168.200.2', port: 8285 },
      { subnet: '10.244.3.0/24', publicIP: '192.168.200.3', port: 9999 },
    ],
  });
  // idempotent: planned against its own result, nothing to do, the same table
  const after = applyToActual(empty(), plan.ops);
  const again = b.planPeers(own, [lease(2), lease(3, { backendData: { Port: 9999 } })], after);
  assert.deepEqual(again.ops, []);
  assert.deepEqual(again.datapath, plan.datapath);
});

test('tun plan: a vanished peer loses its route and its table entry; foreign routes are kept', () => {
  const b = backend();
  const own = lease(1);
  const foreign: Route = { family: 4, dst: '192.168.50.0/24', dev: 'eth0', gateway: '192.168.200.254', protocol: 'static', table: 254, type: 'unicast' };
  let actual = applyToActual({ ...empty(), routes: [foreign] }, b.planPeers(own, [lease(2), lease(3)], empty()).ops);
  const plan = b.planPeers(own, [lease(3)], actual);
  assert.deepEqual(routeDsts(plan.ops, 'route-del'), ['10.244.2.0/24']);
  assert.deepEqual(routeDsts(plan.ops, 'route-add'), []);
  assert.deepEqual(plan.datapath?.peers.map((p) => p.subnet), ['10.244.3.0/24']);
  actual = applyToActual(actual, plan.ops);
  assert.ok(actual.routes.includes(foreign));
  // every peer gone: only the cluster route stays
  const last = b.planPeers(own, [], actual);
  assert.deepEqual(routeDsts(last.ops, 'route-del'), ['10.244.3.0/24']);
  assert.deepEqual(last.datapath, { locals: ['10.244.1.0/24'], peers: [] });
});

test('tun plan: refusals (no Port, other underlay family, other backend, overlap, foreign route) name the peer and leave it out of the table', () => {
  const b = backend();
  const own = lease(1);
  const foreignRoute: Route = { family: 4, dst: '10.244.7.0/24', dev: 'eth0', gateway: '192.168.200.254', protocol: 'static', table: 254, type: 'unicast' };
  const peers = [
    lease(2, { backendData: {} }),
    lease(3, { backendData: { Port: 0 } }),
    lease(4, { publicIP: 'fd00::4' }),
    lease(5, { backendType: 'vxlan', backendData: { VtepMAC: '02:00:00:00:00:05' } }),
    lease(6),
    lease(7),
    { ...lease(8), subnet: '10.244.8.0/23' },
    lease(9),
  ];
  const plan = b.planPeers(own, peers, { ...empty(), routes: [foreignRoute] });
  const byPeer = new Map(plan.errors.map((e) => [e.peer, e.message]));
  assert.match(byPeer.get('10.244.2.0/24') ?? '', /node2 .*no valid Port/);
  assert.match(byPeer.get('10.244.3.0/24') ?? '', /no valid Port \(0\)/);
  assert.match(byPeer.get('10.244.4.0/24') ?? '', /underlay is IPv6, this node's is IPv4/);
  assert.match(byPeer.get('10.244.5.0/24') ?? '', /uses backend vxlan, this node tun/);
  assert.match(byPeer.get('10.244.7.0/24') ?? '', /not created by podnet/);
  assert.match(byPeer.get('10.244.9.0/24') ?? '', /overlaps 10\.244\.8\.0\/23/);
  assert.equal(plan.errors.length, 6);
  assert.deepEqual(routeDsts(plan.ops, 'route-add'), ['10.244.0.0/16', '10.244.6.0/24', '10.244.8.0/23']);
  assert.deepEqual(plan.datapath?.peers.map((p) => p.subnet), ['10.244.6.0/24', '10.244.8.0/23']);
});

test('tun plan: a foreign route on the cluster network is reported and not replaced; peers still proceed', () => {
  const b = backend();
  const foreign: Route = { family: 4, dst: '10.244.0.0/16', dev: 'eth0', gateway: '192.168.200.254', protocol: 'boot', table: 254, type: 'unicast' };
  const plan = b.planPeers(lease(1), [lease(2)], { ...empty(), routes: [foreign] });
  assert.equal(plan.errors.length, 1);
  assert.match(plan.errors[0].message, /cluster network 10\.244\.0\.0\/16: a route .* not created by podnet exists \(proto boot, dev eth0, via 192\.168\.200\.254\)/);
  assert.deepEqual(routeDsts(plan.ops, 'route-add'), ['10.244.2.0/24']);
  assert.deepEqual(plan.datapath?.peers.map((p) => p.subnet), ['10.244.2.0/24']);
});

test('tun plan: dual-stack routes and table entries v4+v6 when both sides have IPv6; the v6 cluster network too', () => {
  const b = backend({ clusterNetworks: ['10.244.0.0/16', 'fd00:10:244::/48'] });
  const own = dual(1);
  const plan = b.planPeers(own, [dual(2), lease(3)], empty());
  assert.deepEqual(plan.errors, []);
  assert.deepEqual(routeDsts(plan.ops, 'route-add'), ['10.244.0.0/16', '10.244.2.0/24', '10.244.3.0/24', 'fd00:10:244:2::/64', 'fd00:10:244::/48']);
  assert.deepEqual(plan.datapath, {
    locals: ['10.244.1.0/24', 'fd00:10:244:1::/64'],
    peers: [
      { subnet: '10.244.2.0/24', publicIP: '192.168.200.2', port: 8285 },
      { subnet: 'fd00:10:244:2::/64', publicIP: '192.168.200.2', port: 8285 },
      { subnet: '10.244.3.0/24', publicIP: '192.168.200.3', port: 8285 },
    ],
  });
  // an IPv4-only own lease routes no peer IPv6 subnet
  const v4only = backend().planPeers(lease(1), [dual(2)], empty());
  assert.deepEqual(routeDsts(v4only.ops, 'route-add'), ['10.244.0.0/16', '10.244.2.0/24']);
  // IPv6 underlay
  const six = (n: number) => lease(n, { publicIP: `fd00:99::${n}` });
  const p6 = backend().planPeers(six(1), [six(2), lease(3)], empty());
  assert.deepEqual(p6.datapath?.peers, [{ subnet: '10.244.2.0/24', publicIP: 'fd00:99::2', port: 8285 }]);
  assert.match(p6.errors[0].message, /underlay is IPv4, this node's is IPv6/);
});

test('tun plan: a stale podnet route is replaced (other attributes) and vxlan leftovers of podnet are removed', () => {
  const b = backend();
  const stale: Route[] = [
    // the same prefix via a gateway (a former vxlan route of podnet): replaced in place
    { family: 4, dst: '10.244.2.0/24', gateway: '10.244.2.0', dev: 'podnet.1', onlink: true, protocol: PODNET_RTPROTO_STR, table: 254, type: 'unicast' },
    { family: 4, dst: '10.244.9.0/24', gateway: '10.244.9.0', dev: 'podnet.1', onlink: true, protocol: PODNET_RTPROTO_STR, table: 254, type: 'unicast' },
  ];
  const plan = b.planPeers(lease(1), [lease(2)], { ...empty(), routes: stale });
  assert.deepEqual(routeDsts(plan.ops, 'route-del'), ['10.244.9.0/24']);
  assert.deepEqual(routeDsts(plan.ops, 'route-add'), ['10.244.0.0/16', '10.244.2.0/24']);
  assert.equal(plan.ops[0].op, 'route-del', 'removals first');
});

test('lease: BackendType tun with BackendData Port round-trips; unknown types are still refused', () => {
  const l = lease(2);
  const d = decodeLease(leaseKey(l.subnet), encodeLease(l));
  assert.deepEqual(d, l);
  assert.equal(d?.backendData.Port, 8285);
  assert.equal(decodeLease(leaseKey(l.subnet), JSON.stringify({ PublicIP: '1.2.3.4', BackendType: 'udp', BackendData: {} })), undefined);
});

test('link-add tun with vnetHdr renders `tuntap add ... vnet_hdr`, then the MTU', () => {
  assert.deepEqual(renderOp({ op: 'link-add', spec: { kind: 'tun', name: 'podnet.tun', vnetHdr: true, mtu: 1472 } }).lines, ['tuntap add name podnet.tun mode tun vnet_hdr', 'link set dev podnet.tun mtu 1472']);
  assert.deepEqual(renderOp({ op: 'link-add', spec: { kind: 'tun', name: 'x.tun' } }).lines, ['tuntap add name x.tun mode tun']);
});

// ---- ensureDevice against a fake kernel ----

class FakeKernel {
  applied: KernelOp[][] = [];
  links = new Map<string, Link>();
  addrs: Address[] = [];
  /** like the netlink adapter: link() without info, links() with it */
  constructor(underMtu = 1500) {
    this.links.set('eth0', { index: 2, name: 'eth0', mtu: underMtu, mac: '02:00:00:00:00:01', up: true, operState: 'UP' });
  }
  adapter(): KernelAdapter {
    const self = this;
    const notUsed = async (): Promise<never> => {
      throw new Error('not used');
    };
    return {
      async links(_ns: NetnsRef) {
        return [...self.links.values()].map((l) => ({ ...l }));
      },
      async link(_ns: NetnsRef, name: string) {
        const l = self.links.get(name);
        if (!l) return undefined;
        const { info: _info, ...rest } = l;
        return { ...rest };
      },
      async addresses(_ns: NetnsRef, dev?: string) {
        return self.addrs.filter((a) => a.ifname === dev);
      },
      async apply(_ns: NetnsRef, ops: KernelOp[]) {
        self.applied.push(ops);
        for (const o of ops) {
          if (o.op === 'link-add' && o.spec.kind === 'tun') {
            self.links.set(o.spec.name, { index: 9, name: o.spec.name, kind: 'tun', mtu: o.spec.mtu ?? 1500, mac: '', up: false, operState: 'DOWN', info: { type: 'tun', pi: false, vnet_hdr: !!o.spec.vnetHdr, multi_queue: false, persist: true } });
          } else if (o.op === 'link-set') {
            const l = self.links.get(o.name)!;
            if (o.alias !== undefined) l.alias = o.alias;
            if (o.up !== undefined) l.up = o.up;
            if (o.mtu !== undefined) l.mtu = o.mtu;
          } else if (o.op === 'link-del') {
            self.links.delete(o.name);
          } else if (o.op === 'addr-add') {
            const [address, len] = o.cidr.split('/');
            self.addrs.push({ ifname: o.dev, family: address.includes(':') ? 6 : 4, address, prefixLen: Number(len), scope: 'global' });
          } else if (o.op === 'addr-del') {
            self.addrs = self.addrs.filter((a) => !(a.ifname === o.dev && `${a.address}/${a.prefixLen}` === o.cidr));
          }
        }
      },
      routes: notUsed,
      neighbours: notUsed,
      fdb: notUsed,
      sysctlGet: notUsed,
      sysctlSet: notUsed,
      supportsLinkKind: async () => true,
      netnsId: notUsed,
    };
  }
}

const ns: NetnsRef = { kind: 'current' };

test('tun ensureDevice: creates podnet.tun (vnet_hdr, alias podnet, MTU underlay − 28, up, /32), then adopts it untouched', async () => {
  const k = new FakeKernel(1500);
  const b = backend();
  const r = await b.ensureDevice({ kernel: k.adapter(), ns, own: lease(1) });
  assert.equal(r.action, 'created');
  assert.equal(r.mtu, 1472);
  assert.deepEqual(r.backendData, { Port: 8285 });
  const l = k.links.get('podnet.tun')!;
  assert.equal(l.alias, 'podnet');
  assert.equal(l.up, true);
  assert.equal(l.mtu, 1472);
  assert.deepEqual(k.addrs.map((a) => `${a.address}/${a.prefixLen}`), ['10.244.1.0/32']);
  const r2 = await b.ensureDevice({ kernel: k.adapter(), ns, own: lease(1) });
  assert.equal(r2.action, 'none');
  assert.equal(k.applied.length, 1);
  // a changed underlay MTU and a stray address are fixed in place
  k.links.get('eth0')!.mtu = 9000;
  k.addrs.push({ ifname: 'podnet.tun', family: 4, address: '10.9.9.9', prefixLen: 32, scope: 'global' });
  const r3 = await b.ensureDevice({ kernel: k.adapter(), ns, own: dual(1) });
  assert.equal(r3.action, 'adopted');
  assert.equal(r3.mtu, 8972);
  assert.deepEqual(k.addrs.map((a) => `${a.address}/${a.prefixLen}`).sort(), ['10.244.1.0/32', 'fd00:10:244:1::/128']);
});

test('tun ensureDevice: refuses a foreign podnet.tun, naming what differs, and changes nothing', async () => {
  for (const [info, alias, re] of [
    [{ type: 'tun', pi: false, vnet_hdr: false, persist: true }, undefined, /podnet\.tun exists and is not podnet's \(vnet_hdr off, no alias "podnet"\): remove it/],
    [{ type: 'tap', pi: false, vnet_hdr: true, persist: true }, 'podnet', /mode tap, not tun/],
    [{ type: 'tun', pi: true, vnet_hdr: true, persist: true }, 'podnet', /packet information header on/],
    [{ type: 'tun', pi: false, vnet_hdr: true, persist: true }, 'mine', /alias "mine", not "podnet"/],
  ] as const) {
    const k = new FakeKernel();
    k.links.set('podnet.tun', { index: 5, name: 'podnet.tun', kind: 'tun', mtu: 1500, mac: '', up: false, operState: 'DOWN', info: { ...info }, ...(alias ? { alias } : {}) });
    await assert.rejects(backend().ensureDevice({ kernel: k.adapter(), ns, own: lease(1) }), re);
    assert.equal(k.applied.length, 0);
  }
  const k = new FakeKernel();
  k.links.set('podnet.tun', { index: 5, name: 'podnet.tun', kind: 'dummy', mtu: 1500, mac: '', up: true, operState: 'UP' });
  await assert.rejects(backend().ensureDevice({ kernel: k.adapter(), ns, own: lease(1) }), /a dummy link, not a TUN device/);
  assert.equal(k.applied.length, 0);
});

test('tun ensureDevice: underlay MTU too small for the tunnel (576, or 1280 with IPv6) is refused before anything is built', async () => {
  const k = new FakeKernel(600);
  await assert.rejects(backend().ensureDevice({ kernel: k.adapter(), ns, own: lease(1) }), /underlay MTU too small for the tunnel: eth0 has MTU 600, which leaves 572 .* at least 604/);
  assert.equal(k.applied.length, 0);
  const k6 = new FakeKernel(1300);
  await assert.rejects(backend().ensureDevice({ kernel: k6.adapter(), ns, own: dual(1) }), /underlay MTU too small .* 1280 bytes IPv6 needs/);
  await assert.rejects(backend({ clusterNetworks: ['10.244.0.0/16', 'fd00::/48'] }).ensureDevice({ kernel: k6.adapter(), ns, own: lease(1) }), /1280/);
  const ok = await backend().ensureDevice({ kernel: new FakeKernel(604).adapter(), ns, own: lease(1) });
  assert.equal(ok.mtu, 576);
  await assert.rejects(backend({ iface: 'eth9' }).ensureDevice({ kernel: k.adapter(), ns, own: lease(1) }), /underlay interface eth9 does not exist/);
});

test('tun ensureDevice: a failing apply after creating the device removes it again', async () => {
  const k = new FakeKernel();
  const a = k.adapter();
  let n = 0;
  const failing: KernelAdapter = {
    ...a,
    async apply(ns2, ops) {
      if (n++ === 0) {
        await a.apply(ns2, ops.slice(0, 1));
        throw new Error('boom');
      }
      return a.apply(ns2, ops);
    },
  };
  await assert.rejects(backend().ensureDevice({ kernel: failing, ns, own: lease(1) }), /boom/);
  assert.equal(k.links.has('podnet.tun'), false);
});

// ---- the supervisor's pure parts and files ----

test('peers file: documented format, canonical order, parse round-trip', () => {
  const t = { locals: ['fd00:10:244:1::/64', '10.244.1.0/24'], peers: [{ subnet: 'fd00:10:244:2::/64', publicIP: '10.0.0.12', port: 8285 }, { subnet: '10.244.2.0/24', publicIP: '10.0.0.12', port: 8285 }] };
  const text = renderPeers(t);
  assert.equal(text, '# podnet-tund peers v1\nlocal 10.244.1.0/24\nlocal fd00:10:244:1::/64\npeer 10.244.2.0/24 10.0.0.12 8285\npeer fd00:10:244:2::/64 10.0.0.12 8285\n');
  const back = parsePeers(text + 'future-kind x y\npeer broken\n');
  assert.deepEqual(back.locals, ['10.244.1.0/24', 'fd00:10:244:1::/64']);
  assert.equal(back.peers.length, 2);
});

test('supervisor files: writePeers writes atomically and only on change; stats read; stopTund without a daemon is false', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pntagtun-unit-'));
  try {
    const f = tundFiles(dir);
    assert.equal(f.dir, join(dir, 'tund'));
    assert.deepEqual([f.pid, f.peers, f.stats, f.log], ['pid', 'peers', 'stats.json', 'log'].map((x) => join(dir, 'tund', x)));
    const t = { locals: ['10.244.1.0/24'], peers: [] };
    assert.deepEqual(writePeers(dir, t), { changed: true, signalled: false });
    assert.deepEqual(writePeers(dir, t), { changed: false, signalled: false });
    assert.equal(readFileSync(f.peers, 'utf8'), '# podnet-tund peers v1\nlocal 10.244.1.0/24\n');
    assert.equal(readTundStats(dir), undefined);
    const { writeFileSync } = await import('node:fs');
    writeFileSync(f.stats, JSON.stringify({ pid: 1, dev: 'podnet.tun', peers: 0 }));
    assert.equal(readTundStats(dir)?.dev, 'podnet.tun');
    // a pidfile naming a process that is not podnet-tund (this one) is never signalled
    writeFileSync(f.pid, `${process.pid}\n`);
    assert.equal(await stopTund(dir, { timeoutMs: 100 }), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('supervisor: exit codes become clear errors; a running daemon is adopted only with the same flags', () => {
  const o = { dev: 'podnet.tun', listen: '10.0.0.11', port: 8285 };
  assert.match(tundExitError(3, null, 'bind 10.0.0.11:8285: Address already in use', o).message, /^Backend\.Port 8285 is taken on 10\.0\.0\.11 \(bind 10\.0\.0\.11:8285: Address already in use\)/);
  assert.match(tundExitError(4, null, 'TUNSETIFF podnet.tun: Invalid argument', o).message, /cannot attach to the TUN device podnet\.tun \(TUNSETIFF/);
  assert.match(tundExitError(1, null, undefined, o).message, /exited with code 1/);
  assert.match(tundExitError(null, 'SIGSEGV', undefined, o).message, /on SIGSEGV/);
  assert.deepEqual(tundMatches({ pid: 5, argv: [], ...o }, o), []);
  assert.deepEqual(tundMatches({ pid: 5, argv: [], ...o, port: 9000 }, o), ['--port 9000 ≠ 8285']);
});

test('supervisor: the port check names a taken port', async () => {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind({ address: '127.0.0.1', port: 0 }, () => r()));
  const port = s.address().port;
  try {
    await assert.rejects(checkUdpPort('127.0.0.1', port), new RegExp(`^Error: Backend\\.Port ${port} is taken on 127\\.0\\.0\\.1 \\(bind 127\\.0\\.0\\.1:${port}: EADDRINUSE\\)`));
  } finally {
    s.close();
  }
  await checkUdpPort('127.0.0.1', port);
});
