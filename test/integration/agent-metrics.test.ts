// The agent's metrics and probes (`--metrics-addr`), scraped from inside a node's namespace with
// curl on the node's own loopback, in a 2-node vxlan cluster of namespaces (file store):
//   - /readyz is 503 "subnet lease not held yet" while the store's lock is held (the agent cannot
//     take its lease), 200 once the lease, the datapath and the proxy's first sync are there
//   - a pod added through the node's CNI client, a Service with its EndpointSlice put in the
//     store, a third node joining: the CNI, IPAM, proxy and reconcile counters move, the
//     histograms fill, everything parses with a strict text-format parser
//   - a peer route deleted by hand: /readyz 503 naming the pending change, then 200 once the
//     agent's resync repaired it (drift counted); the vxlan device deleted by hand: 503 with the
//     reason, the failing passes counted (a pass does not recreate the device), /healthz still 200
// and a lab (`podnet lab up --backend tun`): every agent the lab starts answers on 127.0.0.1:9603
// in its node's namespace, ready; pings across nodes move the tunnel counters from podnet-tund's
// stats; `lab pod add` and `lab service add` move the CNI and proxy counters.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { TestCluster, startAgentIn, type ClusterNode } from '../helpers/cluster.js';
import { parsePromText, sampleSum, sampleValue, type Family } from '../helpers/promtext.js';
import { withFileLock } from '../../src/util/lock.js';
import { openStore } from '../../src/store/index.js';
import type { Store } from '../../src/store/types.js';
import { serviceStoreKey, sliceStoreKey } from '../../src/proxy/document.js';
import { ensureLabBundle, labCli, labSuite } from '../helpers/lab.js';
import { pingFrom } from '../../src/util/ping.js';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';

const run = promisify(execFile);
const ADDR = '127.0.0.1:9603';
const RESYNC_S = 4;

/** GET a path of the node's agent from inside its namespace; code 0 when nothing answers. */
async function get(ns: string, path: string): Promise<{ code: number; body: string }> {
  try {
    const { stdout } = await run('ip', ['netns', 'exec', ns, 'curl', '-sS', '-m', '5', '-o', '-', '-w', '\n%{http_code}', `http://${ADDR}${path}`], { encoding: 'utf8' });
    const i = stdout.lastIndexOf('\n');
    return { code: Number(stdout.slice(i + 1)), body: stdout.slice(0, i) };
  } catch {
    return { code: 0, body: '' };
  }
}

async function scrape(ns: string): Promise<Map<string, Family>> {
  const r = await get(ns, '/metrics');
  assert.equal(r.code, 200, `/metrics: ${r.code} ${r.body}`);
  return parsePromText(r.body);
}

/** Polls until check() returns a value (not undefined) or the deadline passes. */
async function until<T>(what: string, ms: number, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('agent metrics and probes (--metrics-addr)', () => {
  let cluster: TestCluster;
  let n1: ClusterNode;
  let n2: ClusterNode;
  let store: Store | undefined;
  const v = (f: Map<string, Family>, n: string, l: Record<string, string> = {}) => sampleValue(f, n, l) ?? 0;

  before(async () => {
    cluster = new TestCluster({ Network: '10.247.0.0/16', SubnetLen: 24, Backend: { Type: 'vxlan' } }, undefined, '192.168.214');
    n1 = cluster.addNode('mt1');
    n2 = cluster.addNode('mt2');
    await cluster.startAgent(n2);
  });
  after(async () => {
    await store?.close().catch(() => {});
    await cluster?.cleanup();
  });

  test('/readyz: 503 before the lease (the store locked), 200 once lease, datapath and proxy are there', async () => {
    const storeDir = cluster.store.url.replace(/^file:/, '');
    let unlock!: () => void;
    let locked!: () => void;
    const gotLock = new Promise<void>((r) => (locked = r));
    const holder = withFileLock(join(storeDir, 'lock'), async () => {
      locked();
      await new Promise<void>((r) => (unlock = r));
    });
    await gotLock;
    const started = startAgentIn(n1, cluster.agentArgs(n1, ['--metrics-addr', ADDR, '--resync', String(RESYNC_S)]), 30_000);
    started.catch(() => undefined);
    try {
      const r = await until('the metrics server', 15_000, async () => {
        const x = await get(n1.ns, '/readyz');
        return x.code ? x : undefined;
      });
      assert.equal(r.code, 503, r.body);
      assert.match(r.body, /^subnet lease not held yet/);
      assert.equal(existsSync(join(n1.dir, 'subnet.env')), false, 'no lease yet');
      assert.equal((await get(n1.ns, '/healthz')).code, 200, 'alive while it waits');
      const m = await scrape(n1.ns);
      assert.equal(v(m, 'podnet_lease_held'), 0);
    } finally {
      unlock?.();
      await holder;
    }
    await started;
    const seen = new Set<string>();
    await until('/readyz 200', 15_000, async () => {
      const x = await get(n1.ns, '/readyz');
      if (x.code === 503) seen.add(x.body.trim());
      return x.code === 200 && x.body === 'ok\n' ? true : undefined;
    });
    for (const reason of seen) assert.match(reason, /lease not held|datapath not programmed|proxy's first sync not done|subnet\.env/, reason);
    const m = await scrape(n1.ns);
    assert.equal(v(m, 'podnet_lease_held'), 1);
    assert.equal(v(m, 'podnet_lease_acquisitions_total'), 1);
    assert.equal(v(m, 'podnet_peers_known'), 1);
    assert.equal(v(m, 'podnet_peers_programmed'), 1);
    assert.equal(v(m, 'podnet_build_info', { backend: 'vxlan' }), 1);
    assert.ok(v(m, 'podnet_reconcile_passes_total', { kind: 'full', result: 'success' }) >= 1);
    assert.ok(v(m, 'podnet_reconcile_objects_changed_total', { op: 'added' }) >= 3, 'route, neighbour, FDB entry of the peer');
    assert.ok(v(m, 'podnet_sync_proxy_rules_total', { kind: 'full', result: 'success' }) >= 1);
    assert.ok(v(m, 'podnet_sync_full_proxy_rules_duration_seconds_count') >= 1);
    assert.ok(v(m, 'podnet_sync_proxy_rules_last_timestamp_seconds') > Date.now() / 1000 - 60);
    assert.ok(v(m, 'process_resident_memory_bytes') > 0);
  });

  test('a pod, a service and a node move the counters; histograms fill', async () => {
    const m0 = await scrape(n1.ns);
    const pod = cluster.addPod('a', n1);
    const m1 = await scrape(n1.ns);
    const add = { verb: 'ADD', plugin: 'podnet', result: 'success' };
    assert.equal(v(m1, 'podnet_cni_requests_total', add), v(m0, 'podnet_cni_requests_total', add) + 1);
    assert.ok(v(m1, 'podnet_cni_request_duration_seconds_count', { verb: 'ADD', plugin: 'podnet' }) >= 1);
    assert.ok(v(m1, 'podnet_cni_request_duration_seconds_sum', { verb: 'ADD', plugin: 'podnet' }) > 0);
    assert.equal(v(m1, 'podnet_ipam_addresses_allocated', { network: 'cluster' }), 1);
    // the node's /24: .1-.254 without the gateway, one taken
    assert.equal(v(m1, 'podnet_ipam_addresses_free', { network: 'cluster' }), 252);

    // a Service and its EndpointSlice in the store: a partial sync programs it
    store = await openStore(cluster.store.url, { endpoints: [] });
    const svc = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'default' }, spec: { type: 'ClusterIP', clusterIP: '10.96.0.42', clusterIPs: ['10.96.0.42'], ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] } };
    const slice = { apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: 'web-1', namespace: 'default', labels: { 'kubernetes.io/service-name': 'web' } }, addressType: 'IPv4', endpoints: [{ addresses: [pod.ip], conditions: { ready: true }, nodeName: 'mt1' }], ports: [{ name: 'http', port: 8080, protocol: 'TCP' }] };
    assert.ok(await store.create(serviceStoreKey('default', 'web'), JSON.stringify(svc)));
    assert.ok(await store.create(sliceStoreKey('default', 'web-1'), JSON.stringify(slice)));
    const m2 = await until('the service programmed', 10_000, async () => {
      const m = await scrape(n1.ns);
      return v(m, 'podnet_proxy_service_ports_programmed') === 1 && v(m, 'podnet_proxy_services') === 1 ? m : undefined;
    });
    assert.ok(sampleSum(m2, 'podnet_sync_proxy_rules_total', { result: 'success' }) > sampleSum(m1, 'podnet_sync_proxy_rules_total', { result: 'success' }));
    assert.ok(v(m2, 'podnet_sync_proxy_rules_duration_seconds_count') > v(m1, 'podnet_sync_proxy_rules_duration_seconds_count'));
    assert.ok(sampleSum(m2, 'podnet_sync_proxy_rules_changes_total') > sampleSum(m1, 'podnet_sync_proxy_rules_changes_total'));
    assert.ok(v(m2, 'podnet_network_programming_duration_seconds_count', { component: 'proxy' }) > v(m1, 'podnet_network_programming_duration_seconds_count', { component: 'proxy' }));
    assert.match(cluster.sh(n1.ns, ['nft', 'list', 'table', 'inet', 'podnet-proxy']), /10\.96\.0\.42/);
    const st = JSON.parse((await get(n1.ns, '/debug/state')).body);
    assert.equal(st.ready, true, JSON.stringify(st.notReady));
    assert.deepEqual(st.proxy.ports.map((p: { clusterIPs: string[] }) => p.clusterIPs), [['10.96.0.42']]);
    assert.equal(st.peers.length, 1);
    assert.ok(st.programmed.routes.some((r: { dst: string; protocol?: string }) => r.dst === cluster.subnetOf(n2).replace(/\.1\//, '.0/')), JSON.stringify(st.programmed.routes));

    // a third node: a lease event, one more peer programmed
    const n3 = cluster.addNode('mt3');
    await cluster.startAgent(n3);
    const m3 = await until('the third node programmed', 10_000, async () => {
      const m = await scrape(n1.ns);
      return v(m, 'podnet_peers_programmed') === 2 ? m : undefined;
    });
    assert.equal(v(m3, 'podnet_peers_known'), 2);
    assert.ok(v(m3, 'podnet_reconcile_objects_changed_total', { op: 'added' }) >= v(m2, 'podnet_reconcile_objects_changed_total', { op: 'added' }) + 3);
    assert.ok(v(m3, 'podnet_network_programming_duration_seconds_count', { component: 'datapath' }) > v(m2, 'podnet_network_programming_duration_seconds_count', { component: 'datapath' }));
    assert.ok(sampleSum(m3, 'podnet_reconcile_duration_seconds_count') > sampleSum(m2, 'podnet_reconcile_duration_seconds_count'));
  });

  test('a peer route deleted by hand: /readyz 503 naming it, 200 again after the resync repairs it', async () => {
    const peer = cluster.subnetOf(n2).replace(/\.1\//, '.0/');
    const routePresent = () => cluster.sh(n1.ns, ['ip', 'route', 'show', peer, 'proto', '80']).trim() !== '';
    const m0 = await scrape(n1.ns);
    assert.ok(routePresent(), 'the peer route is programmed');
    // the resync may repair the route between the deletion and the probe (a race with a 4 s
    // timer): then the datapath was not broken while probed, and the deletion is made again
    let r: { code: number; body: string } | undefined;
    for (let attempt = 0; attempt < 3 && !r; attempt++) {
      cluster.sh(n1.ns, ['ip', 'route', 'del', peer]);
      const probe = await get(n1.ns, '/readyz');
      if (!routePresent()) r = probe;
    }
    assert.ok(r, 'the route stayed deleted while /readyz was asked');
    assert.equal(r.code, 503, r.body);
    assert.match(r.body, /^datapath not programmed: 1 change\(s\) pending \(drift not repaired yet\): .*10\.247\.\d+\.0\/24/m);
    const t0 = Date.now();
    await until('/readyz 200 after the repair', (RESYNC_S + 5) * 1000, async () => ((await get(n1.ns, '/readyz')).code === 200 ? true : undefined));
    assert.ok(Date.now() - t0 <= (RESYNC_S + 5) * 1000);
    assert.ok(routePresent(), 'the agent put the route back');
    const m1 = await scrape(n1.ns);
    assert.ok(v(m1, 'podnet_reconcile_drift_repaired_total') >= v(m0, 'podnet_reconcile_drift_repaired_total') + 1);
    assert.ok(v(m1, 'podnet_reconcile_passes_total', { kind: 'full', result: 'success' }) > v(m0, 'podnet_reconcile_passes_total', { kind: 'full', result: 'success' }));
    // the lease is kept alive all along (TTL 10 s: a renewal every 3.3 s)
    assert.ok(v(m1, 'podnet_lease_renewals_total', { result: 'success' }) >= 1);
    assert.equal((await get(n1.ns, '/healthz')).code, 200);
  });

  test('the vxlan device deleted by hand: /readyz 503 with the reason, /healthz still 200; the next full pass sets it up again and /readyz is 200', async () => {
    const m0 = await scrape(n1.ns);
    const peer = cluster.subnetOf(n2).replace(/\.1\//, '.0/');
    cluster.sh(n1.ns, ['ip', 'link', 'del', 'podnet.1']);
    const r = await get(n1.ns, '/readyz');
    assert.equal(r.code, 503, r.body);
    assert.match(r.body, /^datapath not programmed: .*podnet\.1/m);
    assert.equal((await get(n1.ns, '/healthz')).code, 200, 'alive: its loop runs');
    await until('/readyz 200 after the device is set up again', (RESYNC_S + 5) * 1000, async () => ((await get(n1.ns, '/readyz')).code === 200 ? true : undefined));
    const link = JSON.parse(cluster.sh(n1.ns, ['ip', '-j', '-d', 'link', 'show', 'podnet.1'])) as { linkinfo: { info_kind: string } }[];
    assert.equal(link[0].linkinfo.info_kind, 'vxlan');
    assert.notEqual(cluster.sh(n1.ns, ['ip', 'route', 'show', peer, 'proto', '80']).trim(), '', 'the peer route through the new device is back');
    // the new device has a new MAC: n2 learns it from n1's lease and the tunnel carries again
    const n2Vtep = peer.split('/')[0];
    await until(`n1 reaches n2's VTEP ${n2Vtep} through the new device`, 10_000, async () => (pingFrom(n1.ns, n2Vtep, ['-W', '1'], 1) ? true : undefined));
    const m1 = await scrape(n1.ns);
    assert.equal(v(m1, 'podnet_backend_device_repairs_total', { action: 'created' }), v(m0, 'podnet_backend_device_repairs_total', { action: 'created' }) + 1);
    assert.ok(v(m1, 'podnet_reconcile_passes_total', { kind: 'full', result: 'success' }) > v(m0, 'podnet_reconcile_passes_total', { kind: 'full', result: 'success' }));
    const st = JSON.parse((await get(n1.ns, '/debug/state')).body);
    assert.equal(st.ready, true);
    assert.equal(st.lastPass.ok, true);
  });
});

describe('the lab\'s agents are scraped (tun backend)', () => {
  const suite = labSuite('pnt-metrics-lab');
  const lab = `m${process.pid.toString(36)}${randomBytes(2).toString('hex')}`;
  const cli = (args: string[]) => labCli(suite.dir, [...args, '--name', lab], { timeoutMs: 120_000 });
  interface St { nodes: Record<string, { ns: string }>; pods: Record<string, { ns: string; ips: string[] }> }
  const state = (): St => JSON.parse(readFileSync(join(suite.dir, lab, 'state.json'), 'utf8')) as St;
  const v = (f: Map<string, Family>, n: string, l: Record<string, string> = {}) => sampleValue(f, n, l) ?? 0;

  before(() => {
    ensureLabBundle();
    suite.register(lab);
    const up = cli(['up', '--nodes', '2', '--backend', 'tun']);
    assert.equal(up.code, 0, up.stderr);
  });

  test('ready on every node; pods, pings and a service move CNI, tunnel and proxy counters', async () => {
    const st = state();
    const [n1, n2] = [st.nodes.n1.ns, st.nodes.n2.ns];
    for (const ns of [n1, n2]) {
      const r = await until(`/readyz of ${ns}`, 15_000, async () => {
        const x = await get(ns, '/readyz');
        return x.code === 200 ? x : undefined;
      });
      assert.equal(r.body, 'ok\n');
    }
    const m0 = await scrape(n1);
    assert.equal(v(m0, 'podnet_build_info', { backend: 'tun' }), 1);
    for (const [pod, node] of [['a', 'n1'], ['b', 'n2']]) {
      const r = cli(['pod', 'add', pod, '--node', node, '--serve', '8080']);
      assert.equal(r.code, 0, r.stderr);
    }
    const pods = state().pods;
    const bIp = pods.b.ips.find((x) => !x.includes(':'))!;
    assert.ok(pingFrom(pods.a.ns, bIp, ['-c', '5', '-i', '0.05']), 'a pings b across the tunnel');
    const svc = cli(['service', 'add', 'web', '--port', '80', '--target', '8080', '--pods', 'a,b']);
    assert.equal(svc.code, 0, svc.stderr);
    const m1 = await until('the service and the tunnel counted', 10_000, async () => {
      const m = await scrape(n1);
      return v(m, 'podnet_proxy_services') === 1 && v(m, 'podnet_tunnel_packets_total', { direction: 'tx' }) >= 5 ? m : undefined;
    });
    const add = { verb: 'ADD', plugin: 'podnet', result: 'success' };
    assert.equal(v(m1, 'podnet_cni_requests_total', add), v(m0, 'podnet_cni_requests_total', add) + 1, 'one pod added on n1');
    assert.ok(v(m1, 'podnet_tunnel_packets_total', { direction: 'rx' }) >= 5, 'the replies came back through podnet-tund');
    assert.ok(v(m1, 'podnet_tunnel_bytes_total', { direction: 'tx' }) >= 5 * 84);
    assert.ok(fams(m1).includes('podnet_tunnel_drops_total'));
    assert.ok(v(m1, 'podnet_sync_proxy_rules_duration_seconds_count') > v(m0, 'podnet_sync_proxy_rules_duration_seconds_count'));
    assert.equal(v(m1, 'podnet_peers_programmed'), 1);
    const st2 = JSON.parse((await get(n2, '/debug/state')).body);
    assert.equal(st2.backend, 'tun');
    assert.ok(st2.tund && st2.tund.peers === 1, JSON.stringify(st2.tund));
  });
});

describe('a bgp lab\'s agents are scraped (BIRD router)', { skip: existsSync('/usr/sbin/bird') ? false : 'BIRD 2 is not installed (/usr/sbin/bird; apt-get install bird2)' }, () => {
  const suite = labSuite('pnt-metrics-bgp');
  const lab = `g${process.pid.toString(36)}${randomBytes(2).toString('hex')}`;
  const cli = (args: string[]) => labCli(suite.dir, [...args, '--name', lab], { timeoutMs: 120_000 });
  const v = (f: Map<string, Family>, n: string, l: Record<string, string> = {}) => sampleValue(f, n, l) ?? 0;

  before(() => {
    ensureLabBundle();
    suite.register(lab);
    const up = cli(['up', '--nodes', '2', '--backend', 'bgp', '--router', 'bird']);
    assert.equal(up.code, 0, up.stderr);
  });

  test('BGP sessions by state and prefixes per peer, ready once Established and programmed', async () => {
    const st = JSON.parse(readFileSync(join(suite.dir, lab, 'state.json'), 'utf8')) as { nodes: Record<string, { ns: string }> };
    const ns = st.nodes.n1.ns;
    await until('/readyz 200 on n1', 20_000, async () => ((await get(ns, '/readyz')).code === 200 ? true : undefined));
    const m = await until('the session Established and the peer\'s prefix accepted', 20_000, async () => {
      const x = await scrape(ns);
      return v(x, 'podnet_bgp_sessions', { state: 'Established' }) === 1 && sampleSum(x, 'podnet_bgp_prefixes', { kind: 'accepted' }) >= 1 ? x : undefined;
    });
    assert.equal(v(m, 'podnet_build_info', { backend: 'bgp' }), 1);
    assert.equal(v(m, 'podnet_bgp_sessions', { state: 'Idle' }), 0);
    assert.equal(v(m, 'podnet_bgp_announced_prefixes'), 1, 'its own pod subnet');
    assert.ok(sampleSum(m, 'podnet_bgp_prefixes', { kind: 'announced' }) >= 1);
  });
});

const fams = (m: Map<string, Family>) => [...m.keys()];
