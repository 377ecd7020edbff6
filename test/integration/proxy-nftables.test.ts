// The nftables engine in a real kernel: a node netns with pods on a bridge and a client outside
// the cluster network; services synced through the Proxier, checked by sending traffic.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CLIENT_IP, CLUSTER_CIDR, CLUSTER_CIDR6, NODE_IP, NODE_IP6, SvcFixture, probe } from '../helpers/svc-fixture.js';
import { nsExec } from '../helpers/netns.js';
import { createEngine } from '../../src/proxy/engines/index.js';
import { Proxier } from '../../src/proxy/proxier.js';
import type { ProxyNode, RawEndpointSlice, RawService, ServiceState } from '../../src/proxy/model.js';

// the UDP servers fork a socat and a shell per datagram: on a loaded 2-core machine a reply took
// over a second, was counted as lost, and then answered the next try (a test that failed only
// under load). A reply that comes is taken whenever it comes; only a lost one costs the wait.
const UDP_WAIT_MS = 5000;

const total = (r: { answers: Record<string, number> }) => Object.values(r.answers).reduce((x, y) => x + y, 0);

const NODE: ProxyNode = { name: 'node-1', nodeIPs: [NODE_IP, NODE_IP6], clusterCIDRs: [CLUSTER_CIDR, CLUSTER_CIDR6], nodePortRange: [30000, 32767] };

function service(name: string, ip: string, port: number, proto: 'TCP' | 'UDP', extra: Record<string, unknown> = {}, nodePort?: number): RawService {
  return {
    metadata: { name, namespace: 'default' },
    spec: { clusterIP: ip, ...(nodePort ? { type: 'NodePort' } : {}), ports: [{ name: 'p', port, protocol: proto, ...(nodePort ? { nodePort } : {}) }], ...extra } as RawService['spec'],
  };
}

function slice(name: string, ips: string[], target: number, proto: 'TCP' | 'UDP', nodeName = 'node-1'): RawEndpointSlice {
  return {
    metadata: { name, namespace: 'default', labels: { 'kubernetes.io/service-name': name } },
    addressType: 'IPv4',
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true }, nodeName })),
    ports: [{ name: 'p', port: target, protocol: proto }],
  };
}

describe('nftables proxy engine, real kernel', { timeout: 180_000 }, () => {
  const f = new SvcFixture();
  let proxier: Proxier;
  let state: ServiceState;
  let a: string, b: string, c: string;

  before(async () => {
    f.build(['a', 'b', 'c']);
    [a, b, c] = f.pods.map((p) => p.ip);
    for (const p of f.pods) await f.serve(p, { tcp: 8080, tcp6: 8086, udp: 5353 });
    await f.serve(f.pods[2], { tcp: 9090, peer: true });
    const engine = await createEngine('nftables', { netns: `/run/netns/${f.node}` });
    proxier = new Proxier({ engine, node: NODE, netns: `/run/netns/${f.node}` });
    state = {
      services: [
        service('web', '10.96.0.10', 80, 'TCP'),
        service('dns', '10.96.0.11', 53, 'UDP'),
        service('np', '10.96.0.12', 80, 'TCP', {}, 30080),
        service('empty', '10.96.0.13', 80, 'TCP'),
        service('sticky', '10.96.0.14', 80, 'TCP', { sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } } }),
        service('local', '10.96.0.15', 90, 'TCP', { externalTrafficPolicy: 'Local' }, 30090),
        service('bad', '10.96.0.300', 80, 'TCP'),
        { metadata: { name: 'web6', namespace: 'default' }, spec: { type: 'NodePort', clusterIPs: ['fd00:96::10'], ports: [{ name: 'p', port: 80, protocol: 'TCP', nodePort: 30086 }] } },
      ],
      endpointSlices: [slice('web', [a, b, c], 8080, 'TCP'), slice('dns', [a, b, c], 5353, 'UDP'), slice('np', [a, b], 8080, 'TCP'), slice('sticky', [a, b, c], 8080, 'TCP'), slice('local', [c], 9090, 'TCP'), { ...slice('web6', [], 8086, 'TCP'), addressType: 'IPv6', endpoints: f.pods.map((p) => ({ addresses: [p.ip6], conditions: { ready: true }, nodeName: 'node-1' })) }],
    };
    proxier.replaceAll(state);
    const r = await proxier.sync();
    assert.equal(r.kind, 'full');
  });
  after(async () => {
    await proxier?.stop();
    f.cleanup();
  });

  it('rejects the bad service by name and field and renders the others', () => {
    assert.deepEqual(proxier.status().problems, ['service default/bad: spec.clusterIP: "10.96.0.300" is not a valid IP address']);
  });

  it('reaches all three endpoints of a TCP cluster IP from outside the cluster and from the node', async () => {
    const fromClient = await probe(f.client, 'tcp', '10.96.0.10', 80, 100);
    assert.deepEqual(Object.keys(fromClient.answers).sort(), ['a', 'b', 'c'], JSON.stringify(fromClient));
    const fromNode = await probe(f.node, 'tcp', '10.96.0.10', 80, 100);
    assert.deepEqual(Object.keys(fromNode.answers).sort(), ['a', 'b', 'c'], JSON.stringify(fromNode));
    const fromPod = await probe(f.pods[0].ns, 'tcp', '10.96.0.10', 80, 100);
    assert.deepEqual(Object.keys(fromPod.answers).sort(), ['a', 'b', 'c'], 'includes hairpin to itself: ' + JSON.stringify(fromPod));
  });

  it('IPv6: a cluster IP and a NodePort reach all three endpoints', async () => {
    const r = await probe(f.client, 'tcp', 'fd00:96::10', 80, 60);
    assert.deepEqual(Object.keys(r.answers).sort(), ['a', 'b', 'c'], JSON.stringify(r));
    const np = await probe(f.client, 'tcp', NODE_IP6, 30086, 60);
    assert.deepEqual(Object.keys(np.answers).sort(), ['a', 'b', 'c'], JSON.stringify(np));
    const hair = await probe(f.pods[1].ns, 'tcp', 'fd00:96::10', 80, 30);
    assert.deepEqual(Object.keys(hair.answers).sort(), ['a', 'b', 'c'], 'hairpin over IPv6: ' + JSON.stringify(hair));
  });

  it('reaches all three endpoints of a UDP cluster IP', async () => {
    const answers: Record<string, number> = {};
    // each probe run is a new source port, so a new conntrack entry and a new endpoint choice
    for (let i = 0; i < 30 && Object.keys(answers).length < 3; i++) {
      const r = await probe(f.client, 'udp', '10.96.0.11', 53, 1);
      for (const k of Object.keys(r.answers)) answers[k] = (answers[k] ?? 0) + 1;
    }
    assert.deepEqual(Object.keys(answers).sort(), ['a', 'b', 'c']);
  });

  it('serves a NodePort on the node IP but not on localhost', async () => {
    const r = await probe(f.client, 'tcp', NODE_IP, 30080, 40);
    assert.deepEqual(Object.keys(r.answers).sort(), ['a', 'b'], JSON.stringify(r));
    const lo = await probe(f.node, 'tcp', '127.0.0.1', 30080, 1, 1000);
    assert.equal(Object.keys(lo.answers).length, 0);
  });

  it('refuses a service with no endpoints at once', async () => {
    const t0 = Date.now();
    const r = await probe(f.client, 'tcp', '10.96.0.13', 80, 1, 3000);
    assert.equal(r.errors.ECONNREFUSED, 1, JSON.stringify(r));
    assert.ok(Date.now() - t0 < 2500);
  });

  it('keeps a client on one endpoint with ClientIP affinity', async () => {
    const r = await probe(f.client, 'tcp', '10.96.0.14', 80, 30);
    assert.equal(Object.keys(r.answers).length, 1, JSON.stringify(r));
  });

  it('keeps the client source address with externalTrafficPolicy Local, masquerades with Cluster', async () => {
    const local = await probe(f.client, 'tcp', NODE_IP, 30090, 3);
    assert.deepEqual(Object.keys(local.answers), [CLIENT_IP], JSON.stringify(local));
  });

  it('stops sending new connections to a removed endpoint (partial sync) and back', async () => {
    proxier.putSlice(slice('web', [a, c], 8080, 'TCP'));
    const r = await proxier.sync();
    assert.equal(r.kind, 'partial');
    const got = await probe(f.client, 'tcp', '10.96.0.10', 80, 60);
    assert.deepEqual(Object.keys(got.answers).sort(), ['a', 'c'], JSON.stringify(got));
    proxier.putSlice(slice('web', [], 8080, 'TCP'));
    await proxier.sync();
    const zero = await probe(f.client, 'tcp', '10.96.0.10', 80, 1, 3000);
    assert.equal(zero.errors.ECONNREFUSED, 1, 'scaled to zero: refused at once ' + JSON.stringify(zero));
    proxier.putSlice(slice('web', [b], 8080, 'TCP'));
    await proxier.sync();
    const one = await probe(f.client, 'tcp', '10.96.0.10', 80, 5);
    assert.deepEqual(one.answers, { b: 5 });
  });

  it('deletes stale UDP conntrack entries when an endpoint goes, so a steady client moves on', async () => {
    // a client with a fixed source port keeps one conntrack entry, so it sticks to one endpoint
    const first = await probe(f.client, 'udp', '10.96.0.11', 53, 3, UDP_WAIT_MS, 40000);
    const stuck = Object.keys(first.answers);
    assert.equal(stuck.length, 1, JSON.stringify(first));
    const others = [a, b, c].filter((_, i) => ['a', 'b', 'c'][i] !== stuck[0]);
    proxier.putSlice(slice('dns', others, 5353, 'UDP'));
    const r = await proxier.sync();
    assert.ok(r.staleFlowsDeleted >= 1, JSON.stringify(r));
    const afterRemoval = await probe(f.client, 'udp', '10.96.0.11', 53, 5, UDP_WAIT_MS, 40000);
    assert.ok(!(stuck[0] in afterRemoval.answers), JSON.stringify(afterRemoval));
    assert.equal(Object.values(afterRemoval.answers).reduce((x, y) => x + y, 0), 5);
  });

  it('a restarted proxy flushes no conntrack entry of a service that did not change', async () => {
    const before = await probe(f.client, 'udp', '10.96.0.11', 53, 2, UDP_WAIT_MS, 40100);
    assert.equal(total(before), 2);
    const count = () => nsExec(f.node, ['conntrack', '-L', '-p', 'udp', '--orig-port-src', '40100'], { allowFail: true }).split('\n').filter((l) => l.includes('dport=53')).length;
    assert.equal(count(), 1);
    // a new process: reads what the kernel has programmed, full-syncs the same state
    const engine = await createEngine('nftables', { netns: `/run/netns/${f.node}` });
    const restarted = new Proxier({ engine, node: NODE, netns: `/run/netns/${f.node}` });
    restarted.replaceAll(state);
    const r = await restarted.sync();
    await restarted.stop();
    assert.equal(r.kind, 'full');
    assert.equal(r.staleFlowsDeleted, 0);
    assert.equal(count(), 1, 'the flow survives the restart');
  });

  it('repairs drift with a full sync and removes everything on cleanup', async () => {
    nsExec(f.node, ['nft', 'flush', 'map', 'inet', 'podnet-proxy', 'svc4']);
    proxier.requestFullSync();
    const r = await proxier.sync();
    assert.equal(r.kind, 'full');
    const ok = await probe(f.client, 'tcp', '10.96.0.12', 80, 5);
    assert.equal(Object.values(ok.answers).reduce((x, y) => x + y, 0), 5);
    const engine = await createEngine('nftables', { netns: `/run/netns/${f.node}` });
    await engine.cleanup();
    await engine.cleanup();
    assert.equal(nsExec(f.node, ['nft', 'list', 'tables']).includes('podnet-proxy'), false);
  });
});
