// The agent's metrics registry and probes without a kernel: the registry renders in the text
// format (checked by a strict parser), every metric podnet owns is podnet_* with the label sets it
// documents, counters end in _total, the tracker moves counters and histograms at its seams, and
// readiness/health give their reasons. The HTTP endpoints are exercised on 127.0.0.1.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentMetrics, ipamSourceFromConfig } from '../../src/agent/metrics.js';
import { ClusterTracker, healthReasons, parseListenAddr, startHealthServer, LOOP_STALL_MS } from '../../src/agent/health.js';
import { nullLogger } from '../../src/util/log.js';
import type { NodeLease } from '../../src/agent/lease.js';
import type { ReconcileReport } from '../../src/agent/backends/reconciler.js';
import { parsePromText, sampleSum, sampleValue } from '../helpers/promtext.js';
import { LeaseWatcher } from '../../src/agent/leases.js';
import type { Store, WatchHandlers } from '../../src/store/types.js';

const lease = (subnet: string, publicIP: string): NodeLease => ({ subnet, publicIP, backendType: 'vxlan', backendData: {} });
const report = (o: Partial<ReconcileReport> = {}): ReconcileReport => ({ added: [], removed: [], errors: [], ops: [], ...o });

test('the registry renders strict Prometheus text: podnet_* names, _total counters, documented label sets, process metrics', async () => {
  const m = new AgentMetrics();
  const fams = parsePromText(await m.render());
  const own = [...fams.values()].filter((f) => !f.name.startsWith('process_') && !f.name.startsWith('nodejs_'));
  assert.ok(own.length >= 30, `${own.length} podnet families`);
  for (const f of own) {
    assert.match(f.name, /^podnet_[a-z0-9_]+$/, f.name);
    assert.ok(f.help && f.help.length > 10, `${f.name} has a HELP`);
    if (f.type === 'counter') assert.match(f.name, /_total$/, `counter ${f.name}`);
    else assert.doesNotMatch(f.name, /_total$/, `${f.type} ${f.name}`);
  }
  // the process's own metrics, under their standard names
  assert.ok(fams.get('process_cpu_user_seconds_total'), 'process_cpu_user_seconds_total');
  assert.ok(fams.get('process_resident_memory_bytes'), 'process_resident_memory_bytes');
  assert.ok(fams.get('nodejs_eventloop_lag_seconds'), 'nodejs_eventloop_lag_seconds');
  // kube-proxy's names, with kube-proxy's types
  for (const [n, t] of [
    ['podnet_sync_proxy_rules_duration_seconds', 'histogram'],
    ['podnet_sync_full_proxy_rules_duration_seconds', 'histogram'],
    ['podnet_sync_partial_proxy_rules_duration_seconds', 'histogram'],
    ['podnet_network_programming_duration_seconds', 'histogram'],
    ['podnet_sync_proxy_rules_last_timestamp_seconds', 'gauge'],
    ['podnet_cni_request_duration_seconds', 'histogram'],
    ['podnet_cni_requests_total', 'counter'],
    ['podnet_build_info', 'gauge'],
  ] as const) assert.equal(fams.get(n)?.type, t, n);
  assert.equal(sampleValue(fams, 'podnet_build_info', { version: '0.1.0', nodejs: process.version }), 1);
  // a labelled histogram with no observations has no series yet; the unlabelled one has zero counts
  assert.equal(sampleValue(fams, 'podnet_sync_proxy_rules_duration_seconds_count'), 0);
  assert.equal(sampleValue(fams, 'podnet_lease_held'), 0);
});

test('the tracker moves counters and histograms at its seams; label sets are the documented ones', async () => {
  const m = new AgentMetrics({ defaultMetrics: false });
  const t = new ClusterTracker(m, 10);
  m.cniRequest('ADD', 'podnet', 'success', 0.012);
  m.cniRequest('ADD', 'podnet', 'error', 0.2);
  m.cniRequest('DEL', 'podnet-ipam', 'success', 0.003);
  t.setLease(lease('10.244.1.0/24', '192.0.2.1'), true);
  t.renewal('success');
  t.renewal('error');
  t.watchReset();
  t.changeSeen();
  const peers = [lease('10.244.2.0/24', '192.0.2.2'), lease('10.244.3.0/24', '192.0.2.3')];
  let tok = t.passStart(peers);
  t.passDone(tok, false, report({ added: ['route add 10.244.2.0/24', 'route add 10.244.3.0/24'], errors: [{ peer: '10.244.3.0/24', message: 'no VtepMAC' }] }));
  tok = t.passStart(peers);
  t.passDone(tok, true, report({ added: ['route add 10.244.2.0/24'], drift: 1 }));
  tok = t.passStart(peers);
  t.passFailed(tok, true, new Error('RTNETLINK answers: No such device'));
  t.proxySync({ kind: 'full', ms: 12, changes: 40, services: 3, ports: 4, problems: 1, staleFlowsDeleted: 2, pendingMs: 30 });
  t.proxySync({ kind: 'partial', ms: 2, changes: 3, services: 3, ports: 4, problems: 1, staleFlowsDeleted: 0 });
  t.proxySyncFailed('partial');
  const fams = parsePromText(await m.render());
  const v = (n: string, l: Record<string, string> = {}) => sampleValue(fams, n, l);
  assert.equal(v('podnet_cni_requests_total', { verb: 'ADD', plugin: 'podnet', result: 'success' }), 1);
  assert.equal(v('podnet_cni_requests_total', { verb: 'ADD', plugin: 'podnet', result: 'error' }), 1);
  assert.equal(v('podnet_cni_request_duration_seconds_count', { verb: 'ADD', plugin: 'podnet' }), 2);
  assert.equal(v('podnet_cni_request_duration_seconds_bucket', { verb: 'ADD', plugin: 'podnet', le: '0.025' }), 1);
  assert.deepEqual(Object.keys(fams.get('podnet_cni_requests_total')!.samples[0].labels).sort(), ['plugin', 'result', 'verb']);
  assert.equal(v('podnet_lease_held'), 1);
  assert.equal(v('podnet_lease_acquisitions_total'), 1);
  assert.equal(v('podnet_lease_renewals_total', { result: 'success' }), 1);
  assert.equal(v('podnet_lease_renewals_total', { result: 'error' }), 1);
  assert.equal(v('podnet_store_errors_total', { op: 'keepalive' }), 1);
  assert.equal(v('podnet_lease_watch_resets_total'), 1);
  assert.equal(v('podnet_reconcile_passes_total', { kind: 'incremental', result: 'success' }), 1);
  assert.equal(v('podnet_reconcile_passes_total', { kind: 'full', result: 'success' }), 1);
  assert.equal(v('podnet_reconcile_passes_total', { kind: 'full', result: 'error' }), 1);
  assert.equal(v('podnet_reconcile_duration_seconds_count', { kind: 'full' }), 2);
  assert.equal(v('podnet_reconcile_objects_changed_total', { op: 'added' }), 3);
  assert.equal(v('podnet_reconcile_drift_repaired_total'), 1);
  assert.equal(v('podnet_peers_known'), 2);
  // the last successful pass refused none
  assert.equal(v('podnet_peers_programmed'), 2);
  assert.equal(v('podnet_network_programming_duration_seconds_count', { component: 'datapath' }), 1);
  assert.equal(v('podnet_network_programming_duration_seconds_count', { component: 'proxy' }), 1);
  assert.equal(v('podnet_sync_proxy_rules_duration_seconds_count'), 2);
  assert.equal(v('podnet_sync_full_proxy_rules_duration_seconds_count'), 1);
  assert.equal(v('podnet_sync_partial_proxy_rules_duration_seconds_count'), 1);
  assert.equal(v('podnet_sync_proxy_rules_total', { kind: 'partial', result: 'error' }), 1);
  assert.equal(sampleSum(fams, 'podnet_sync_proxy_rules_changes_total'), 43);
  assert.equal(v('podnet_proxy_conntrack_entries_deleted_total'), 2);
  assert.equal(v('podnet_proxy_service_ports_programmed'), 4);
  assert.ok(v('podnet_sync_proxy_rules_last_timestamp_seconds')! > Date.now() / 1000 - 60);
});

test('tun stats and BGP sessions are read when scraped', async () => {
  const m = new AgentMetrics({ defaultMetrics: false });
  let stats: Record<string, unknown> = { tun_reads: 10, tun_read_bytes: 1000, tun_writes: 7, tun_write_bytes: 700, drop_unknown_source: 2, drop_malformed: 1 };
  m.setSources({
    tundStats: () => stats as never,
    bgpStatus: () => ({ asn: 65001, routerId: '192.0.2.1', listenPort: 179, restarting: false, converged: true, announced: ['10.244.1.0/24'] as never, peers: [{ address: '192.0.2.254', asn: 65000, state: 'Established', prefixes: { received: 3, accepted: 2, announced: 1, stale: 0 }, connectRetries: 0, passive: false }], best: [] }),
  });
  let fams = parsePromText(await m.render());
  assert.equal(sampleValue(fams, 'podnet_tunnel_packets_total', { direction: 'tx' }), 10);
  assert.equal(sampleValue(fams, 'podnet_tunnel_bytes_total', { direction: 'rx' }), 700);
  assert.equal(sampleValue(fams, 'podnet_tunnel_drops_total', { reason: 'unknown_source' }), 2);
  assert.equal(sampleValue(fams, 'podnet_bgp_sessions', { state: 'Established' }), 1);
  assert.equal(sampleValue(fams, 'podnet_bgp_sessions', { state: 'Idle' }), 0);
  assert.equal(sampleValue(fams, 'podnet_bgp_prefixes', { peer: '192.0.2.254', kind: 'accepted' }), 2);
  assert.equal(sampleValue(fams, 'podnet_bgp_announced_prefixes'), 1);
  stats = { ...stats, tun_reads: 25 };
  fams = parsePromText(await m.render());
  assert.equal(sampleValue(fams, 'podnet_tunnel_packets_total', { direction: 'tx' }), 25, 'the daemon\'s counter as it is now');
});

test('IPAM addresses allocated and free per range, from the reservation directory', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'pnt-metrics-'));
  try {
    const m = new AgentMetrics({ defaultMetrics: false });
    const src = ipamSourceFromConfig({ cniVersion: '1.0.0', name: 'mnet', type: 'podnet', ipam: { type: 'podnet-ipam', ranges: [[{ subnet: '10.99.0.0/28' }]], dataDir: dir } });
    assert.ok(src);
    assert.equal(ipamSourceFromConfig({ name: 'x', ipam: { type: 'dhcp' } }), undefined);
    m.addIpamSource(src);
    mkdirSync(join(dir, 'mnet'));
    for (const ip of ['10.99.0.2', '10.99.0.3']) writeFileSync(join(dir, 'mnet', ip), 'c1\r\neth0');
    writeFileSync(join(dir, 'mnet', 'last_reserved_ip.0'), '10.99.0.3');
    writeFileSync(join(dir, 'mnet', 'lock'), '');
    const fams = parsePromText(await m.render());
    const range = fams.get('podnet_ipam_addresses_allocated')!.samples[0].labels.range;
    assert.match(range, /10\.99\.0\.0\/28/);
    assert.equal(sampleValue(fams, 'podnet_ipam_addresses_allocated', { network: 'mnet' }), 2);
    // a /28: 14 hosts, minus the gateway .1, minus two reserved
    assert.equal(sampleValue(fams, 'podnet_ipam_addresses_free', { network: 'mnet' }), 11);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('readiness reasons: lease, subnet.env, a failed pass, drift, the proxy\'s first sync', async () => {
  const t = new ClusterTracker(undefined, 10);
  assert.deepEqual(await t.readiness(), ['subnet lease not held yet', 'datapath not programmed yet: no reconcile pass has finished']);
  t.setLease(lease('10.244.1.0/24', '192.0.2.1'), true);
  let subnetFile = false;
  let drift: string[] = [];
  let proxyReady = false;
  t.probes = { subnetFile: () => subnetFile, datapath: async () => drift, proxy: () => ({ ready: proxyReady, lastError: proxyReady ? undefined : { message: 'nft: table busy' } }) };
  let tok = t.passStart([]);
  t.passFailed(tok, true, new Error('Cannot find device "podnet.1"'));
  assert.deepEqual(await t.readiness(), ['subnet.env not written', 'datapath not programmed: the last reconcile pass failed: Cannot find device "podnet.1"', "service proxy's first sync not done (last error: nft: table busy)"]);
  subnetFile = true;
  proxyReady = true;
  tok = t.passStart([]);
  t.passDone(tok, true, report());
  assert.deepEqual(await t.readiness(), []);
  drift = ['datapath not programmed: 1 change(s) pending'];
  assert.deepEqual(await t.readiness(), drift);
  drift = [];
  t.probes.datapath = async () => {
    throw new Error('Cannot find device "podnet.1"');
  };
  assert.deepEqual(await t.readiness(), ['datapath not programmed: cannot read it: Cannot find device "podnet.1"']);
  t.renewal('expired');
  assert.match((await t.readiness())[0], /subnet lease 10\.244\.1\.0\/24 lost/);
});

test('health: a stalled event loop, a stuck or stale reconcile loop', () => {
  const now = 1_000_000;
  assert.deepEqual(healthReasons({ nowMs: now, loopLagMs: 3 }), []);
  assert.match(healthReasons({ nowMs: now, loopLagMs: LOOP_STALL_MS + 1 })[0], /event loop stalled/);
  const r = { startedMs: now - 5000, resyncSeconds: 10 };
  assert.deepEqual(healthReasons({ nowMs: now, loopLagMs: 0, reconcile: { ...r, lastEndMs: now - 1000 } }), []);
  assert.match(healthReasons({ nowMs: now, loopLagMs: 0, reconcile: { ...r, lastEndMs: now - 31_000 } })[0], /last reconcile pass ended 31 s ago/);
  assert.match(healthReasons({ nowMs: now, loopLagMs: 0, reconcile: { startedMs: now - 40_000, resyncSeconds: 10 } })[0], /no reconcile pass has finished/);
  assert.match(healthReasons({ nowMs: now, loopLagMs: 0, reconcile: { ...r, lastEndMs: now - 1000, runningSinceMs: now - 45_000 } })[0], /running for 45 s/);
  // a long resync period stretches the limit
  assert.deepEqual(healthReasons({ nowMs: now, loopLagMs: 0, reconcile: { ...r, resyncSeconds: 60, lastEndMs: now - 100_000 } }), []);
});

test('--metrics-addr parsing: empty is off, HOST:PORT and [v6]:PORT, anything else refused', () => {
  assert.equal(parseListenAddr(''), undefined);
  assert.equal(parseListenAddr(undefined), undefined);
  assert.deepEqual(parseListenAddr('127.0.0.1:9603'), { host: '127.0.0.1', port: 9603 });
  assert.deepEqual(parseListenAddr('[::1]:9603'), { host: '::1', port: 9603 });
  assert.deepEqual(parseListenAddr('localhost:0'), { host: 'localhost', port: 0 });
  for (const bad of ['9603', '127.0.0.1', '127.0.0.1:99999', ':9603', '::1:9603']) assert.throws(() => parseListenAddr(bad), /--metrics-addr/, bad);
});

test('the HTTP endpoints on 127.0.0.1: /metrics, /healthz, /readyz with reasons, /debug/state, 404 and 405', async () => {
  const metrics = new AgentMetrics({ defaultMetrics: false });
  let tracker: ClusterTracker | undefined;
  const srv = await startHealthServer({ host: '127.0.0.1', port: 0, metrics, log: nullLogger, cluster: () => ({ wanted: true, tracker }), extraState: () => ({ cni: { requests: 3 } }) });
  const base = `http://127.0.0.1:${srv.address.port}`;
  try {
    const get = async (p: string, method = 'GET') => {
      const r = await fetch(base + p, { method });
      return { code: r.status, type: r.headers.get('content-type') ?? '', body: await r.text() };
    };
    let r = await get('/readyz');
    assert.equal(r.code, 503);
    assert.equal(r.body, 'subnet lease not held yet (the cluster side is starting)\n');
    assert.equal((await get('/healthz')).code, 200);
    tracker = new ClusterTracker(metrics, 10);
    tracker.setLease(lease('10.244.1.0/24', '192.0.2.1'), true);
    r = await get('/readyz');
    assert.equal(r.code, 503);
    assert.equal(r.body, 'datapath not programmed yet: no reconcile pass has finished\n');
    tracker.passDone(tracker.passStart([lease('10.244.2.0/24', '192.0.2.2')]), true, report({ added: ['route 10.244.2.0/24'] }));
    r = await get('/readyz');
    assert.deepEqual([r.code, r.body], [200, 'ok\n']);
    r = await get('/metrics');
    assert.equal(r.code, 200);
    assert.match(r.type, /^text\/plain; version=0\.0\.4/);
    assert.equal(sampleValue(parsePromText(r.body), 'podnet_lease_held'), 1);
    r = await get('/debug/state');
    const st = JSON.parse(r.body);
    assert.equal(st.ready, true);
    assert.equal(st.lease.subnet, '10.244.1.0/24');
    assert.deepEqual(st.lastPass.added, ['route 10.244.2.0/24']);
    assert.equal(st.peers[0].subnet, '10.244.2.0/24');
    assert.equal(st.cni.requests, 3);
    assert.equal((await get('/nope')).code, 404);
    assert.equal((await get('/metrics', 'POST')).code, 405);
  } finally {
    await srv.close();
  }
});

test('the test parser is strict: it refuses what the text format does not allow', () => {
  const ok = '# HELP a_total A.\n# TYPE a_total counter\na_total{x="1"} 2\n# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 3\nh_count 2\n';
  assert.equal(sampleValue(parsePromText(ok), 'h_count'), 2);
  for (const [bad, why] of [
    ['a 1', /line feed/],
    ['a{x="1} 1\n', /unterminated/],
    ['a{x="\\t"} 1\n', /bad escape/],
    ['a one\n', /bad sample value/],
    ['a 1\na 2\n', /twice/],
    ['# TYPE a counter\n# TYPE a gauge\n', /twice/],
    ['# TYPE a wat\n', /bad type/],
    ['# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n', /not cumulative/],
    ['# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n', /no \+Inf/],
    ['# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 1\n', /!= _count/],
    ['a 1\nb 1\na{y="2"} 1\n', /not contiguous/],
  ] as const) assert.throws(() => parsePromText(bad), why, bad);
});

test('a lease watch reset and a watch error reach the metrics through the LeaseWatcher hooks', async () => {
  const m = new AgentMetrics({ defaultMetrics: false });
  const t = new ClusterTracker(m, 10);
  let handlers: WatchHandlers | undefined;
  let lists = 0;
  const store = {
    describe: 'scripted',
    list: async () => (lists++, { kvs: [], revision: lists }),
    watch: (_p: string, _r: number, h: WatchHandlers) => {
      handlers = h;
      return { close() {} };
    },
  } as unknown as Store;
  const w = new LeaseWatcher(store, () => undefined, nullLogger, undefined, { onReset: () => t.watchReset(), onError: () => t.storeError('watch') });
  await w.start();
  handlers!.onError!(new Error('connection refused'));
  handlers!.onReset!('compacted');
  // the reset lists again
  for (let i = 0; i < 50 && lists < 2; i++) await new Promise((r) => setImmediate(r));
  w.close();
  const fams = parsePromText(await m.render());
  assert.equal(sampleValue(fams, 'podnet_lease_watch_resets_total'), 1);
  assert.equal(sampleValue(fams, 'podnet_store_errors_total', { op: 'watch' }), 1);
  assert.equal(lists, 2, 'listed again after the reset');
});

test('the proxier\'s sync hook: programming latency only for syncs that carry a Service or EndpointSlice change', async () => {
  const { Proxier } = await import('../../src/proxy/proxier.js');
  const engine = {
    mode: 'nftables' as const,
    render: () => '',
    fullSync: async () => ({ kind: 'full' as const, changes: 5 }),
    partialSync: async () => ({ kind: 'partial' as const, changes: 2 }),
    programmedEndpoints: async () => new Map(),
    cleanup: async () => {},
  };
  const seen: { kind: string; pendingMs?: number }[] = [];
  const p = new Proxier({ engine, node: { name: 'n1', nodeIPs: ['192.0.2.1'], clusterCIDRs: ['10.244.0.0/16'], nodePortRange: [30000, 32767] }, conntrack: false, onSync: (r) => seen.push({ kind: r.kind, pendingMs: r.pendingMs }) });
  p.replaceAll({ services: [], endpointSlices: [] });
  await p.sync();
  p.requestFullSync();
  await p.sync();
  p.putService({ kind: 'Service', metadata: { name: 'web', namespace: 'ns' }, spec: { clusterIP: '10.96.0.5', ports: [{ port: 80, protocol: 'TCP' }] } });
  await p.sync();
  await p.stop();
  assert.deepEqual(seen.map((s) => [s.kind, s.pendingMs !== undefined]), [['full', true], ['full', false], ['partial', true]]);
});
