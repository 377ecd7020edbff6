// The Proxier sync loop, driven with a fake engine at the ProxyEngine seam (it records calls and
// can be told to fail) and a fake conntrack cleaner: full first, partial after, full after any
// failure, stale UDP flows only for real removals (also across a restart), problems in status(),
// serialized concurrent syncs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ProgrammedEndpoints, ProxyEngine, SyncResult } from '../../src/proxy/engine.js';
import type { ConntrackCleaner, StaleFlow } from '../../src/proxy/conntrack.js';
import { endpointsByFrontend } from '../../src/proxy/frontends.js';
import { SERVICE_NAME_LABEL, type ProxyModel, type ProxyNode, type RawEndpointSlice, type RawService } from '../../src/proxy/model.js';
import { Proxier } from '../../src/proxy/proxier.js';
import { planModel } from '../../src/proxy/engines/nftables/plan.js';
import { parseProgrammed } from '../../src/proxy/engines/nftables/engine.js';
import type { Logger } from '../../src/util/log.js';

const NODE: ProxyNode = { name: 'node-a', nodeIPs: ['192.168.1.10'], clusterCIDRs: ['10.244.0.0/16'], nodePortRange: [30000, 32767] };

type Call = { op: 'full'; model: ProxyModel } | { op: 'partial'; prev: ProxyModel; next: ProxyModel } | { op: 'programmed' };

class FakeEngine implements ProxyEngine {
  readonly mode = 'nftables' as const;
  calls: Call[] = [];
  /** the model the "kernel" has (last successful transaction) */
  kernel?: ProxyModel;
  failFull = 0;
  failPartial = 0;
  programmed: ProgrammedEndpoints | Error = new Map();
  inFlight = 0;
  maxInFlight = 0;
  /** when set, transactions wait for it */
  gate?: Promise<void>;
  close?: () => void;

  render(): string {
    return '';
  }
  private async enter(): Promise<void> {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    await Promise.resolve();
    if (this.gate) await this.gate;
  }
  async fullSync(model: ProxyModel, node: ProxyNode): Promise<SyncResult> {
    assert.equal(node, NODE);
    this.calls.push({ op: 'full', model });
    await this.enter();
    try {
      if (this.failFull > 0) {
        this.failFull--;
        throw new Error('nft -f: full sync failed');
      }
      this.kernel = model;
      return { kind: 'full', changes: model.ports.length };
    } finally {
      this.inFlight--;
    }
  }
  async partialSync(prev: ProxyModel, next: ProxyModel): Promise<SyncResult> {
    this.calls.push({ op: 'partial', prev, next });
    await this.enter();
    try {
      if (this.failPartial > 0) {
        this.failPartial--;
        throw new Error('netlink: partial sync failed');
      }
      this.kernel = next;
      return { kind: 'partial', changes: 1 };
    } finally {
      this.inFlight--;
    }
  }
  async programmedEndpoints(): Promise<ProgrammedEndpoints> {
    this.calls.push({ op: 'programmed' });
    if (this.programmed instanceof Error) throw this.programmed;
    return this.programmed;
  }
  async cleanup(): Promise<void> {}
  ops(): string[] {
    return this.calls.map((c) => c.op);
  }
}

class FakeConntrack implements ConntrackCleaner {
  batches: StaleFlow[][] = [];
  async delete(flows: StaleFlow[]): Promise<{ deleted: number; errors: string[] }> {
    this.batches.push(flows);
    return { deleted: flows.length, errors: [] };
  }
  all(): string[] {
    return this.batches.flat().map((f) => `${f.protocol} ${f.origDst ?? 'nodeport'}:${f.origPortDst} <- ${f.replySrc}:${f.replyPortSrc}`).sort();
  }
}

class RecLogger implements Logger {
  lines: { level: string; msg: string; fields?: Record<string, unknown> }[] = [];
  debug(msg: string, fields?: Record<string, unknown>) {
    this.lines.push({ level: 'debug', msg, fields });
  }
  info(msg: string, fields?: Record<string, unknown>) {
    this.lines.push({ level: 'info', msg, fields });
  }
  warn(msg: string, fields?: Record<string, unknown>) {
    this.lines.push({ level: 'warn', msg, fields });
  }
  error(msg: string, fields?: Record<string, unknown>) {
    this.lines.push({ level: 'error', msg, fields });
  }
  child(): Logger {
    return this;
  }
}

function svc(name: string, clusterIP: string, o: { protocol?: string; port?: number; nodePort?: number } = {}): RawService {
  return {
    kind: 'Service',
    metadata: { name, namespace: 'ns' },
    spec: { type: o.nodePort ? 'NodePort' : 'ClusterIP', clusterIP, ports: [{ port: o.port ?? 53, protocol: o.protocol ?? 'UDP', nodePort: o.nodePort }] },
  };
}
function slice(name: string, service: string, ips: string[], port = 5353, protocol = 'UDP'): RawEndpointSlice {
  return {
    kind: 'EndpointSlice',
    metadata: { name, namespace: 'ns', labels: { [SERVICE_NAME_LABEL]: service } },
    addressType: 'IPv4',
    endpoints: ips.map((ip) => ({ addresses: [ip], nodeName: 'node-b' })),
    ports: [{ port, protocol }],
  };
}

function baseState() {
  return {
    services: [svc('dns', '10.96.0.10', { nodePort: 30053 }), svc('web', '10.96.0.11', { protocol: 'TCP', port: 80 })],
    endpointSlices: [slice('dns-1', 'dns', ['10.244.2.2', '10.244.2.3']), slice('web-1', 'web', ['10.244.2.4', '10.244.2.5'], 8080, 'TCP')],
  };
}

function setup(o: { engine?: FakeEngine; log?: Logger } = {}) {
  const engine = o.engine ?? new FakeEngine();
  const ct = new FakeConntrack();
  const proxier = new Proxier({ engine, node: NODE, conntrack: ct, log: o.log });
  return { engine, ct, proxier };
}

const endpointsOf = (m: ProxyModel | undefined, id: string) => m?.ports.find((p) => p.id === id)?.endpoints.map((e) => e.ip);

test('the first sync is full and consults what the kernel has; later changes are partial against the last applied model', async () => {
  const { engine, proxier } = setup();
  proxier.replaceAll(baseState());
  assert.equal(proxier.status().ready, false);
  const r1 = await proxier.sync();
  assert.equal(r1.kind, 'full');
  assert.deepEqual(engine.ops(), ['programmed', 'full']);
  assert.equal(r1.ports, 2);
  assert.equal(r1.services, 2);
  const full = engine.calls[1] as Extract<Call, { op: 'full' }>;
  assert.equal(proxier.status().ready, true);
  assert.deepEqual(proxier.status().syncs, { full: 1, partial: 0, failed: 0 });

  // nothing changed: no engine call at all
  const r0 = await proxier.sync();
  assert.equal(r0.kind, 'none');
  assert.equal(engine.calls.length, 2);

  proxier.putSlice(slice('dns-1', 'dns', ['10.244.2.2', '10.244.2.3', '10.244.2.9']));
  const r2 = await proxier.sync();
  assert.equal(r2.kind, 'partial');
  const p1 = engine.calls[2] as Extract<Call, { op: 'partial' }>;
  assert.equal(p1.op, 'partial');
  assert.equal(p1.prev, full.model, 'prev is the model the full sync applied');
  assert.deepEqual(endpointsOf(p1.next, 'ns/dns:53'), ['10.244.2.2', '10.244.2.3', '10.244.2.9']);
  // unchanged services keep their port objects between the two models (memoized normalization)
  assert.equal(p1.next.ports.find((p) => p.id === 'ns/web:80'), p1.prev.ports.find((p) => p.id === 'ns/web:80'));

  proxier.putService(svc('new', '10.96.0.12'));
  await proxier.sync();
  const p2 = engine.calls[3] as Extract<Call, { op: 'partial' }>;
  assert.equal(p2.prev, p1.next, 'prev is the last applied model');
  assert.deepEqual(proxier.status().syncs, { full: 1, partial: 2, failed: 0 });
  assert.equal(engine.ops().filter((o) => o === 'programmed').length, 1, 'the kernel is read only at start');
});

test('requestFullSync: the next sync is full and compares against the applied model, not the kernel', async () => {
  const { engine, ct, proxier } = setup();
  proxier.replaceAll(baseState());
  await proxier.sync();
  proxier.requestFullSync();
  proxier.putSlice(slice('dns-1', 'dns', ['10.244.2.3']));
  const r = await proxier.sync();
  assert.equal(r.kind, 'full');
  assert.deepEqual(engine.ops(), ['programmed', 'full', 'full']);
  assert.deepEqual(ct.all(), ['udp 10.96.0.10:53 <- 10.244.2.2:5353', 'udp nodeport:30053 <- 10.244.2.2:5353']);
});

test('a partial sync that throws is followed by a full sync in the same sync() and counted as failed', async () => {
  const log = new RecLogger();
  const { engine, ct, proxier } = setup({ log });
  proxier.replaceAll(baseState());
  await proxier.sync();
  engine.failPartial = 1;
  proxier.putSlice(slice('dns-1', 'dns', ['10.244.2.3']));
  const r = await proxier.sync();
  assert.equal(r.kind, 'full');
  assert.deepEqual(engine.ops(), ['programmed', 'full', 'partial', 'full']);
  const partial = engine.calls[2] as Extract<Call, { op: 'partial' }>;
  const fallback = engine.calls[3] as Extract<Call, { op: 'full' }>;
  assert.equal(fallback.model, partial.next, 'the full sync applies the same desired model');
  assert.deepEqual(proxier.status().syncs, { full: 2, partial: 0, failed: 1 });
  assert.match(proxier.status().lastError!.message, /partial sync failed/);
  assert.ok(log.lines.some((l) => l.level === 'warn' && /partial sync failed/.test(l.msg)));
  // the removal still flushes its flows
  assert.deepEqual(ct.all(), ['udp 10.96.0.10:53 <- 10.244.2.2:5353', 'udp nodeport:30053 <- 10.244.2.2:5353']);
  // and the next change is partial again, against the fallback's model
  proxier.putSlice(slice('dns-1', 'dns', ['10.244.2.3', '10.244.2.4']));
  assert.equal((await proxier.sync()).kind, 'partial');
  assert.equal((engine.calls[4] as Extract<Call, { op: 'partial' }>).prev, fallback.model);
});

test('a full sync that throws: sync() rejects, the previous model stays applied, the next sync is full again', async () => {
  const log = new RecLogger();
  const { engine, ct, proxier } = setup({ log });
  proxier.replaceAll(baseState());
  await proxier.sync();
  const first = (engine.calls[1] as Extract<Call, { op: 'full' }>).model;

  // the change: an endpoint of the UDP service removed; both the partial and its fallback fail
  engine.failPartial = 1;
  engine.failFull = 1;
  proxier.putSlice(slice('dns-1', 'dns', ['10.244.2.3']));
  await assert.rejects(proxier.sync(), /full sync failed/);
  assert.deepEqual(engine.ops(), ['programmed', 'full', 'partial', 'full']);
  assert.ok(proxier.status().syncs.failed >= 1);
  assert.match(proxier.status().lastError!.message, /full sync failed/);
  assert.deepEqual(ct.batches, [], 'nothing applied: no flows flushed');
  assert.equal(engine.kernel, first);
  assert.ok(log.lines.some((l) => l.level === 'error'));

  // without any new change the next sync is a full one; it compares against the model still applied
  const r = await proxier.sync();
  assert.equal(r.kind, 'full');
  assert.deepEqual(engine.ops().slice(4), ['full'], 'no partial, and the kernel is not re-read');
  assert.deepEqual(ct.all(), ['udp 10.96.0.10:53 <- 10.244.2.2:5353', 'udp nodeport:30053 <- 10.244.2.2:5353']);
  assert.equal(proxier.status().ready, true);
});

test('a first full sync that throws: the next one is full and reads the kernel again', async () => {
  const engine = new FakeEngine();
  engine.failFull = 1;
  const { proxier } = setup({ engine });
  proxier.replaceAll(baseState());
  await assert.rejects(proxier.sync());
  assert.equal(proxier.status().ready, false);
  assert.deepEqual(proxier.status().syncs, { full: 0, partial: 0, failed: 1 });
  const r = await proxier.sync();
  assert.equal(r.kind, 'full');
  assert.deepEqual(engine.ops(), ['programmed', 'full', 'programmed', 'full']);
});

test('stale flows: removing an endpoint of a UDP service flushes exactly its flows; TCP and additions flush nothing', async () => {
  const { ct, proxier } = setup();
  proxier.replaceAll(baseState());
  const r1 = await proxier.sync();
  assert.equal(r1.staleFlowsDeleted, 0);
  assert.equal(ct.batches.length, 0, 'the kernel had nothing: nothing to flush');

  proxier.putSlice(slice('dns-1', 'dns', ['10.244.2.3']));
  const r2 = await proxier.sync();
  assert.deepEqual(ct.all(), ['udp 10.96.0.10:53 <- 10.244.2.2:5353', 'udp nodeport:30053 <- 10.244.2.2:5353']);
  assert.equal(r2.staleFlowsDeleted, 2);
  assert.deepEqual(ct.batches[0].map((f) => f.origDst).sort(), ['10.96.0.10', undefined]);

  ct.batches = [];
  proxier.putSlice(slice('web-1', 'web', ['10.244.2.4'], 8080, 'TCP'));
  proxier.putSlice(slice('dns-1', 'dns', ['10.244.2.3', '10.244.2.7']));
  await proxier.sync();
  assert.deepEqual(ct.batches, [], 'TCP removals and UDP additions flush nothing');
});

test('stale flows: scale to zero, deleteSlice and deleteService', async () => {
  const { engine, ct, proxier } = setup();
  proxier.replaceAll({ ...baseState(), services: [...baseState().services, svc('dns2', '10.96.0.20')], endpointSlices: [...baseState().endpointSlices, slice('dns2-1', 'dns2', ['10.244.2.20'])] });
  await proxier.sync();

  proxier.putSlice(slice('dns-1', 'dns', []));
  await proxier.sync();
  assert.deepEqual(ct.all(), [
    'udp 10.96.0.10:53 <- 10.244.2.2:5353',
    'udp 10.96.0.10:53 <- 10.244.2.3:5353',
    'udp nodeport:30053 <- 10.244.2.2:5353',
    'udp nodeport:30053 <- 10.244.2.3:5353',
  ]);

  ct.batches = [];
  proxier.deleteSlice('ns', 'dns2-1');
  const r = await proxier.sync();
  assert.equal(r.kind, 'partial');
  assert.deepEqual(endpointsOf(engine.kernel, 'ns/dns2:53'), []);
  assert.deepEqual(ct.all(), ['udp 10.96.0.20:53 <- 10.244.2.20:5353']);

  // back, then the service deleted
  proxier.putSlice(slice('dns2-1', 'dns2', ['10.244.2.21']));
  await proxier.sync();
  ct.batches = [];
  proxier.deleteService('ns', 'dns2');
  await proxier.sync();
  assert.ok(!engine.kernel!.ports.some((p) => p.service === 'ns/dns2'));
  assert.deepEqual(ct.all(), ['udp 10.96.0.20:53 <- 10.244.2.21:5353']);

  // deleting what does not exist is not a change
  const calls = engine.calls.length;
  proxier.deleteService('ns', 'nope');
  proxier.deleteSlice('ns', 'nope');
  assert.equal((await proxier.sync()).kind, 'none');
  assert.equal(engine.calls.length, calls);
});

test('restart: a new Proxier over the same kernel flushes nothing for unchanged services', async () => {
  const old = setup();
  old.proxier.replaceAll(baseState());
  await old.proxier.sync();
  old.proxier.putSlice(slice('dns-1', 'dns', ['10.244.2.2', '10.244.2.3', '10.244.2.6']));
  await old.proxier.sync();
  const applied = old.engine.kernel!;

  // the new process reads the kernel (what the old one applied) and gets the same state from the store (new objects)
  const engine = new FakeEngine();
  engine.programmed = endpointsByFrontend(applied, NODE);
  const fresh = setup({ engine });
  fresh.proxier.replaceAll({
    services: baseState().services,
    endpointSlices: [slice('dns-1', 'dns', ['10.244.2.2', '10.244.2.3', '10.244.2.6']), baseState().endpointSlices[1]],
  });
  const r = await fresh.proxier.sync();
  assert.equal(r.kind, 'full');
  assert.deepEqual(engine.ops(), ['programmed', 'full']);
  assert.deepEqual(fresh.ct.batches, [], 'nothing changed while it was down: nothing flushed');

  // an endpoint removed while the proxy was down is flushed at start, and only that one
  const engine2 = new FakeEngine();
  engine2.programmed = endpointsByFrontend(applied, NODE);
  const again = setup({ engine: engine2 });
  again.proxier.replaceAll({ services: baseState().services, endpointSlices: [slice('dns-1', 'dns', ['10.244.2.2', '10.244.2.3']), baseState().endpointSlices[1]] });
  await again.proxier.sync();
  assert.deepEqual(again.ct.all(), ['udp 10.96.0.10:53 <- 10.244.2.6:5353', 'udp nodeport:30053 <- 10.244.2.6:5353']);

  // the kernel cannot be read: nothing is flushed (rather than everything)
  const engine3 = new FakeEngine();
  engine3.programmed = new Error('nft: permission denied');
  const blind = setup({ engine: engine3 });
  blind.proxier.replaceAll(baseState());
  assert.equal((await blind.proxier.sync()).kind, 'full');
  assert.deepEqual(blind.ct.batches, []);
});

test('restart, with the kernel read through the nftables engine\'s parser of `nft -j` output', async () => {
  const old = setup();
  old.proxier.replaceAll(baseState());
  await old.proxier.sync();
  const plan = planModel(old.engine.kernel!, NODE);
  // what `nft -j list table` prints for the endpoint maps
  const json = {
    nftables: [...plan.sets.keys()]
      .filter((s) => /^ep[46]-\d+$/.test(s))
      .map((name) => ({
        map: {
          name,
          elem: [...(plan.elements.get(name)?.values() ?? [])].map((el) => [{ concat: el.key.map((p) => p.value) }, { concat: el.data!.kind === 'value' ? el.data!.parts.map((p) => p.value) : [] }]),
        },
      })),
  };
  const programmed = parseProgrammed(json, NODE);
  assert.deepEqual(
    [...programmed].map(([k, v]) => [k, [...v].sort()]).sort(),
    [...endpointsByFrontend(old.engine.kernel!, NODE)].filter(([, v]) => v.size > 0).map(([k, v]) => [k, [...v].sort()]).sort(),
  );
  const engine = new FakeEngine();
  engine.programmed = programmed;
  const fresh = setup({ engine });
  fresh.proxier.replaceAll(baseState());
  await fresh.proxier.sync();
  assert.deepEqual(fresh.ct.batches, []);
});

test('problems are reported in status() and logged once; fixing the service clears them', async () => {
  const log = new RecLogger();
  const { engine, proxier } = setup({ log });
  const state = baseState();
  proxier.replaceAll({ ...state, services: [...state.services, svc('bad', 'not-an-ip')] });
  const r = await proxier.sync();
  assert.equal(r.problems, 1);
  const st = proxier.status();
  assert.equal(st.problems.length, 1);
  assert.match(st.problems[0], /service ns\/bad: spec\.clusterIP: .*not-an-ip/);
  assert.equal(engine.kernel!.ports.length, 2, 'the good services are applied');
  proxier.putSlice(slice('dns-1', 'dns', ['10.244.2.2']));
  await proxier.sync();
  assert.equal(proxier.status().problems.length, 1);
  assert.equal(log.lines.filter((l) => l.msg === 'service rejected').length, 1, 'a standing problem is logged once');
  proxier.putService(svc('bad', '10.96.0.99'));
  await proxier.sync();
  assert.deepEqual(proxier.status().problems, []);
  assert.ok(engine.kernel!.ports.some((p) => p.service === 'ns/bad'));
  // status() is a copy
  const s = proxier.status();
  s.syncs.full = 99;
  s.problems.push('x');
  assert.notEqual(proxier.status().syncs.full, 99);
  assert.deepEqual(proxier.status().problems, []);
});

test('a frontend taken by another service stays with its holder across syncs (priorOwners from the applied model)', async () => {
  const { engine, proxier } = setup();
  const holder: RawService = { metadata: { name: 'zzz', namespace: 'ns', creationTimestamp: '2025-01-01T00:00:00Z' }, spec: { clusterIP: '10.96.0.50', ports: [{ port: 80 }] } };
  proxier.replaceAll({ services: [holder], endpointSlices: [] });
  await proxier.sync();
  proxier.putService({ metadata: { name: 'aaa', namespace: 'ns', creationTimestamp: '2020-01-01T00:00:00Z' }, spec: { clusterIP: '10.96.0.50', ports: [{ port: 80 }] } });
  await proxier.sync();
  assert.deepEqual(engine.kernel!.ports.map((p) => p.service), ['ns/zzz']);
  assert.match(proxier.status().problems.join('\n'), /service ns\/aaa: spec\.clusterIP: .*already taken by service ns\/zzz/);
});

test('concurrent sync() calls are serialized: one engine transaction at a time, every change applied', async () => {
  const { engine, proxier } = setup();
  proxier.replaceAll(baseState());
  let open!: () => void;
  engine.gate = new Promise((r) => (open = r));
  const a = proxier.sync();
  const b = proxier.sync();
  proxier.putSlice(slice('dns-1', 'dns', ['10.244.2.3']));
  const c = proxier.sync();
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(engine.inFlight, 1);
  assert.deepEqual(engine.ops(), ['programmed', 'full'], 'the others wait');
  engine.gate = undefined;
  open();
  const [ra, rb, rc] = await Promise.all([a, b, c]);
  assert.equal(engine.maxInFlight, 1);
  assert.equal(ra.kind, 'full');
  // the change made during the first sync is applied by a later one, as a partial sync
  assert.deepEqual(engine.ops(), ['programmed', 'full', 'partial']);
  assert.deepEqual([rb.kind, rc.kind].sort(), ['none', 'partial']);
  assert.deepEqual(endpointsOf(engine.kernel, 'ns/dns:53'), ['10.244.2.3']);

  // many at once, with changes in between
  const all: Promise<unknown>[] = [];
  for (let i = 0; i < 10; i++) {
    proxier.putSlice(slice('dns-1', 'dns', [`10.244.3.${i + 1}`]));
    all.push(proxier.sync());
  }
  await Promise.all(all);
  assert.equal(engine.maxInFlight, 1);
  assert.deepEqual(endpointsOf(engine.kernel, 'ns/dns:53'), ['10.244.3.10']);
  // each partial starts from what the previous one applied
  const partials = engine.calls.filter((x): x is Extract<Call, { op: 'partial' }> => x.op === 'partial');
  for (let i = 1; i < partials.length; i++) assert.equal(partials[i].prev, partials[i - 1].next);
});

test('start/stop: background syncs on changes; stop waits and closes the engine', async () => {
  const engine = new FakeEngine();
  let closed = 0;
  engine.close = () => void closed++;
  const ct = new FakeConntrack();
  const proxier = new Proxier({ engine, node: NODE, conntrack: ct, resyncIntervalMs: 0 });
  proxier.replaceAll(baseState());
  proxier.start();
  const until = async (f: () => boolean) => {
    for (let i = 0; i < 200 && !f(); i++) await new Promise((r) => setTimeout(r, 5));
    assert.ok(f());
  };
  await until(() => proxier.status().ready);
  assert.deepEqual(engine.ops(), ['programmed', 'full']);
  proxier.putSlice(slice('dns-1', 'dns', ['10.244.2.3']));
  await until(() => engine.calls.length === 3);
  assert.equal(engine.calls[2].op, 'partial');
  await proxier.stop();
  assert.equal(closed, 1);
  proxier.putSlice(slice('dns-1', 'dns', []));
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(engine.calls.length, 3, 'no sync after stop');
});

test('stop() closes the engine only after every queued sync is done, and no sync runs after stop', async () => {
  const events: string[] = [];
  const engine = new FakeEngine();
  let open!: () => void;
  engine.gate = new Promise((r) => (open = r));
  const origFull = engine.fullSync.bind(engine);
  const origPartial = engine.partialSync.bind(engine);
  engine.fullSync = async (m, n) => {
    events.push('full');
    const r = await origFull(m, n);
    events.push('full-done');
    return r;
  };
  engine.partialSync = async (p, n) => {
    events.push('partial');
    const r = await origPartial(p, n);
    await new Promise((res) => setTimeout(res, 5));
    events.push('partial-done');
    return r;
  };
  engine.close = () => void events.push('close');
  const { proxier } = setup({ engine });
  proxier.replaceAll(baseState());
  const a = proxier.sync();
  proxier.putSlice(slice('dns-1', 'dns', ['10.244.2.3']));
  const b = proxier.sync();
  const stopped = proxier.stop();
  engine.gate = undefined;
  open();
  await Promise.allSettled([a, b, stopped]);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(events.at(-1), 'close', `engine used after close: ${events.join(' ')}`);
  const n = engine.calls.length;
  proxier.putSlice(slice('dns-1', 'dns', []));
  await proxier.sync().catch(() => undefined);
  assert.equal(engine.calls.length, n, 'no engine call after stop()');
});

test('an edit that claims a frontend another service holds rejects the edited service, not the holder', async () => {
  const { engine, proxier } = setup();
  const a = (ext: string[]): RawService => ({ metadata: { name: 'a', namespace: 'ns', creationTimestamp: '2020-01-01T00:00:00Z' }, spec: { clusterIP: '10.96.0.51', externalIPs: ext, ports: [{ port: 80 }] } });
  const b: RawService = { metadata: { name: 'b', namespace: 'ns', creationTimestamp: '2025-01-01T00:00:00Z' }, spec: { clusterIP: '10.96.0.52', externalIPs: ['203.0.113.2'], ports: [{ port: 80 }] } };
  proxier.replaceAll({ services: [a(['203.0.113.1']), b], endpointSlices: [] });
  await proxier.sync();
  assert.deepEqual(engine.kernel!.ports.map((p) => p.service).sort(), ['ns/a', 'ns/b']);
  proxier.putService(a(['203.0.113.1', '203.0.113.2']));
  await proxier.sync();
  assert.ok(engine.kernel!.ports.some((p) => p.service === 'ns/b'), 'b keeps its external IP');
  assert.match(proxier.status().problems.join('\n'), /service ns\/a: spec\.externalIPs\[1\]: .*already taken by service ns\/b/);
});

test('a service given twice in replaceAll is reported, like normalize() does', async () => {
  const { engine, proxier } = setup();
  proxier.replaceAll({ services: [svc('x', '10.96.0.61'), svc('x', '10.96.0.62')], endpointSlices: [] });
  await proxier.sync();
  assert.deepEqual(engine.kernel!.ports.map((p) => p.clusterIPs[0]), ['10.96.0.61']);
  assert.match(proxier.status().problems.join('\n'), /ns\/x: metadata\.name: .*given twice/);
});

test('random event sequences (with clashes): every applied model equals normalize() of the state with the previous owners, problems agree, flushed flows equal the full diff, failures change nothing', async () => {
  const { normalize, frontendOwners } = await import('../../src/proxy/normalize.js');
  const { staleFlows } = await import('../../src/proxy/conntrack.js');
  let seed = 12345;
  const rnd = (n: number) => {
    // mulberry32
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
  };
  const { engine, ct, proxier } = setup();
  const services = new Map<string, RawService>();
  const slices = new Map<string, RawEndpointSlice>();
  const names = ['s0', 's1', 's2', 's3', 's4'];
  const mkSvc = (i: number): RawService => {
    const proto = rnd(2) ? 'UDP' : 'TCP';
    const kind = rnd(6);
    const ports = rnd(3) === 0 ? [{ name: 'a', port: 53, protocol: proto, targetPort: 5353 }, { name: 'b', port: 54, protocol: 'UDP' }] : [{ port: 53 + rnd(2), protocol: proto, targetPort: 5353 }];
    const spec: Record<string, unknown> = { clusterIP: kind === 0 ? 'bogus' : `10.96.1.${rnd(3) + 1}`, ports };
    if (rnd(2)) {
      spec.type = 'NodePort';
      ports.forEach((p, j) => Object.assign(p, { nodePort: 30000 + rnd(3) + j }));
      if (rnd(2)) spec.externalTrafficPolicy = 'Local';
    }
    return { metadata: { name: names[i], namespace: 'ns', ...(rnd(2) ? { creationTimestamp: `2024-0${rnd(3) + 1}-01T00:00:00Z` } : {}) }, spec: spec as NonNullable<RawService['spec']> };
  };
  const mkSlice = (i: number, j: number): RawEndpointSlice => {
    const target = rnd(4) === 0 ? names[rnd(names.length)] : names[i];
    // an address's node and conditions are facts about that pod, the same in every slice listing it
    const eps = Array.from({ length: rnd(4) }, () => {
      const ip = `10.244.${rnd(2) + 1}.${rnd(6) + 2}`;
      const conditions = ip.endsWith('.7') ? { ready: false } : ip.endsWith('.6') ? { ready: false, serving: true, terminating: true } : { ready: true };
      return { addresses: [ip], nodeName: ip.startsWith('10.244.1.') ? 'node-a' : 'node-b', conditions };
    });
    const ports = rnd(3) === 0 ? [] : [{ name: rnd(2) ? '' : 'a', port: 5353, protocol: rnd(4) ? 'UDP' : 'TCP' }];
    return { metadata: { name: `${names[i]}-${j}`, namespace: 'ns', labels: { [SERVICE_NAME_LABEL]: target } }, addressType: 'IPv4', endpoints: eps, ports };
  };
  // endpoints compare as sets: the index keeps each endpoint in the slot it had (keepSlots), normalize() sorts them
  const key = (m: ProxyModel) =>
    JSON.stringify([...m.ports].sort((x, y) => (x.id < y.id ? -1 : 1)).map((p) => ({ ...p, endpoints: [...p.endpoints].sort((a, b) => (a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : a.port - b.port)) })));
  const flowText = (fs: StaleFlow[]) => fs.map((f) => `${f.protocol} ${f.origDst ?? 'nodeport'}:${f.origPortDst} <- ${f.replySrc}:${f.replyPortSrc}`).sort();
  let prevBuilt: ProxyModel | undefined;
  let prevApplied: ProxyModel | undefined;
  let clashes = 0;
  let failures = 0;
  for (let step = 0; step < 300; step++) {
    const i = rnd(names.length);
    const op = rnd(10);
    if (op < 3) {
      const s = mkSvc(i);
      services.set(names[i], s);
      proxier.putService(s);
    } else if (op < 4) {
      services.delete(names[i]);
      proxier.deleteService('ns', names[i]);
    } else if (op < 8) {
      const s = mkSlice(i, rnd(2));
      slices.set(s.metadata!.name as string, s);
      proxier.putSlice(s);
    } else {
      const n = `${names[i]}-${rnd(2)}`;
      slices.delete(n);
      proxier.deleteSlice('ns', n);
    }
    ct.batches = [];
    // now and then the engine fails: a partial (then the fallback full works), or both
    if (rnd(5) === 0) {
      engine.failPartial = 1;
      engine.failFull = rnd(2);
    }
    let failed = false;
    const kernelBefore = engine.kernel;
    await proxier.sync().catch(() => {
      failed = true;
    });
    engine.failPartial = 0;
    engine.failFull = 0;
    // Frontend ownership follows the desired state as built (so a transient engine failure does not
    // change who wins a clash): the previous owners are those of the last model built, applied or not.
    const expected = normalize({ services: [...services.values()], endpointSlices: [...slices.values()] }, NODE, { priorOwners: prevBuilt ? frontendOwners(prevBuilt) : undefined });
    prevBuilt = expected;
    // a service clashing with two holders may name either (both are true), so clashes compare by service
    const problemKey = (t: string) => (/already taken by service/.test(t) ? `${/^service (\S+):/.exec(t)![1]}: clash` : t);
    assert.deepEqual(
      proxier.status().problems.map(problemKey).sort(),
      expected.problems.map((p) => problemKey(`service ${p.service}: ${p.field}: ${p.message}`)).sort(),
      `step ${step}: problems`,
    );
    if (failed) {
      failures++;
      assert.equal(ct.batches.length, 0, `step ${step}: nothing flushed by a failed sync`);
      assert.equal(engine.kernel, kernelBefore, `step ${step}: the kernel keeps the last applied model`);
      continue; // the next sync compares against the last applied model
    }
    assert.equal(key(engine.kernel!), key(expected), `step ${step}: applied model`);
    if (prevApplied) {
      const want = flowText(staleFlows(endpointsByFrontend(prevApplied, NODE), endpointsByFrontend(expected, NODE)));
      assert.deepEqual(flowText(ct.batches.flat()), want, `step ${step}: stale flows`);
    }
    if (expected.problems.some((p) => /already taken/.test(p.message))) clashes++;
    prevApplied = expected;
  }
  assert.ok(clashes > 50, `the sequence exercised clashes (${clashes} steps)`);
  assert.ok(failures > 5, `the sequence exercised failed syncs (${failures})`);
});
