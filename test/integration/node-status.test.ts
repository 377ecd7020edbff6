// `podnet status` on a node of a two-node vxlan cluster (file store): all good with the peer
// programmed; with the agent stopped (nothing repairs) and the route to the peer deleted by hand,
// exit 1 naming the peer, the missing route and the command to look; the agent restarted, 0 again.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { startAgentIn, TestCluster, type ClusterNode } from '../helpers/cluster.js';
import { openStore } from '../../src/store/index.js';
import { serviceStoreKey, sliceStoreKey } from '../../src/proxy/document.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const METRICS = '127.0.0.1:9617';

/** A ClusterIP Service and its EndpointSlice (one ready endpoint) in the store. */
async function putService(url: string, name: string, clusterIP: string, endpoint: string): Promise<void> {
  const store = await openStore(url);
  try {
    const svc = { metadata: { name, namespace: 'default' }, spec: { type: 'ClusterIP', clusterIP, clusterIPs: [clusterIP], ports: [{ name: 'http', port: 80, targetPort: 8080, protocol: 'TCP' }] } };
    const slice = { metadata: { name: `${name}-1`, namespace: 'default', labels: { 'kubernetes.io/service-name': name } }, addressType: 'IPv4', endpoints: [{ addresses: [endpoint], conditions: { ready: true } }], ports: [{ name: 'http', port: 8080, protocol: 'TCP' }] };
    assert.ok(await store.create(serviceStoreKey('default', name), JSON.stringify(svc)));
    assert.ok(await store.create(sliceStoreKey('default', `${name}-1`), JSON.stringify(slice)));
  } finally {
    await store.close();
  }
}

describe('podnet status, vxlan, file store', () => {
  let c: TestCluster;
  let n1: ClusterNode;
  let n2: ClusterNode;
  let n2Subnet: string;
  let podIP: string;

  const status = (node: ClusterNode, extra: string[] = []) => {
    const r = spawnSync('ip', ['netns', 'exec', node.ns, process.execPath, '--import', 'tsx', join(ROOT, 'src/cli/main.ts'), 'status',
      '--config', c.netConfPath, '--store', c.store.url, '--node-name', node.name,
      '--subnet-file', join(node.dir, 'subnet.env'), '--socket', join(node.dir, 'sock'), '--data-dir', join(node.dir, 'data'), '--ipam-data-dir', join(node.dir, 'ipam'), ...extra], { cwd: ROOT, encoding: 'utf8', timeout: 20_000 });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  const json = (node: ClusterNode) => {
    const r = status(node, ['-o', 'json', '--metrics-addr', METRICS]);
    return { code: r.code, st: JSON.parse(r.stdout) as { peers: { nodeName?: string; state: string; objects: { kind: string; state: string }[] }[]; problems: { message: string; look?: string }[]; lease?: { subnet: string; expiresInSeconds?: number }; backend: { device: { name: string; exists: boolean; mtu: number; wantMtu: number } }; socket: { answers: boolean }; ipam: { networks: { network: string; allocated: number; range?: string; size?: number }[] }; proxy: { table?: { exists: boolean }; services: { service: string; state: string; details: string[] }[]; lastSync?: string } }, raw: r };
  };
  /** the route n1's agent programs to n2's subnet, as `ip route show` prints it */
  const routeToN2 = () => c.sh(n1.ns, ['ip', 'route', 'show', n2Subnet, 'proto', '80']).trim();
  const waitFor = async (what: string, ok: () => boolean, ms = 10_000) => {
    const t0 = Date.now();
    while (!ok()) {
      if (Date.now() - t0 > ms) throw new Error(`${what} not within ${ms} ms: ${c.agentLog(n1)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  before(async () => {
    c = new TestCluster({ Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } }, undefined, '192.168.215');
    n1 = c.addNode('n1');
    n2 = c.addNode('n2');
    // n1's agent serves /metrics in its namespace: status reads the proxy's last sync there
    await Promise.all([startAgentIn(n1, c.agentArgs(n1, ['--metrics-addr', METRICS]), 20_000), c.startAgent(n2)]);
    n2Subnet = c.subnetOf(n2).replace(/\.1\//, '.0/');
    podIP = c.addPod('a', n1).ip;
    await putService(c.store.url, 'web', '10.96.0.42', podIP);
    await waitFor('n1 routes to n2', () => routeToN2() !== '');
    await waitFor("n1's proxy programs web", () => /10\.96\.0\.42/.test(c.sh(n1.ns, ['nft', 'list', 'table', 'inet', 'podnet-proxy'], true)));
  });
  after(() => c.cleanup());

  test('all good: exit 0, the peer programmed (route, neighbour, FDB entry), lease, device, socket, IPAM', () => {
    const { code, st, raw } = json(n1);
    assert.equal(code, 0, raw.stdout + raw.stderr);
    assert.deepEqual(st.problems, []);
    assert.deepEqual(st.peers.map((p) => [p.nodeName, p.state]), [['n2', 'programmed']]);
    assert.deepEqual(st.peers[0].objects.map((o) => o.kind).sort(), ['fdb', 'neighbour', 'route']);
    assert.equal(st.lease?.subnet, c.subnetOf(n1).replace(/\.1\//, '.0/'));
    assert.ok(st.lease!.expiresInSeconds! > 0 && st.lease!.expiresInSeconds! <= 10, `expiry ${st.lease!.expiresInSeconds}`);
    assert.deepEqual([st.backend.device.name, st.backend.device.exists, st.backend.device.mtu], ['podnet.1', true, 1450]);
    assert.equal(st.socket.answers, true);
    assert.equal(st.proxy.table?.exists, true);
    assert.deepEqual(st.proxy.services.map((x) => [x.service, x.state]), [['default/web', 'programmed']]);
    assert.ok(st.proxy.lastSync && Date.parse(st.proxy.lastSync) <= Date.now(), `last sync ${st.proxy.lastSync}`);
    assert.deepEqual(st.ipam.networks.map((n) => [n.network, n.allocated, n.range, n.size]), [['cluster', 1, c.subnetOf(n1).replace(/\.1\//, '.0/'), 256]]);
    const text = status(n1);
    assert.equal(text.code, 0, text.stdout + text.stderr);
    assert.match(text.stdout, /n2\s+\S+\s+\S+\s+programmed/);
    assert.match(text.stdout, /all good/);
  });

  test("the agent stopped and n1's route to n2 deleted by hand: exit 1 naming peer n2, the missing route and its command", async () => {
    await c.stopAgent(n1, 'SIGTERM');
    c.sh(n1.ns, ['ip', 'route', 'del', n2Subnet]);
    assert.equal(routeToN2(), '');
    const text = status(n1);
    assert.equal(text.code, 1, text.stdout + text.stderr);
    const line = text.stdout.split('\n').find((l) => l.includes(`route ${n2Subnet}`));
    assert.ok(line, text.stdout);
    assert.match(line, /peer n2 .*: route \S+ via \S+ dev podnet\.1 onlink proto 80 missing/);
    assert.match(text.stdout, new RegExp(`look: ip route show ${n2Subnet.replace(/\./g, '\\.')}`));
    assert.match(text.stdout, /n2\s+\S+\s+\S+\s+not-programmed\s+route missing/);
    const { code, st } = json(n1);
    assert.equal(code, 1);
    assert.deepEqual(st.peers[0].objects.filter((o) => o.state !== 'present').map((o) => [o.kind, o.state]), [['route', 'missing']]);
    // the neighbour and FDB entry are still there; the stopped agent's socket does not answer
    assert.equal(st.peers[0].objects.filter((o) => o.state === 'present').length, 2);
    assert.equal(st.socket.answers, false);
    assert.ok(st.problems.some((p) => /CNI socket/.test(p.message)), JSON.stringify(st.problems));
    // a service added while nothing programs it: the store wants it, the table lacks it
    await putService(c.store.url, 'api', '10.96.0.43', podIP);
    const after = json(n1);
    assert.equal(after.code, 1);
    assert.deepEqual(after.st.proxy.services.map((x) => [x.service, x.state]), [['default/api', 'not-programmed'], ['default/web', 'programmed']]);
    assert.deepEqual(after.st.proxy.services[0].details, [`tcp/10.96.0.43/80: missing endpoints ${podIP}/8080`]);
  });

  test('the agent restarted: it puts the route back, exit 0 again', async () => {
    await startAgentIn(n1, c.agentArgs(n1, ['--metrics-addr', METRICS]), 20_000);
    await waitFor('the restarted agent restores the route', () => routeToN2() !== '');
    await waitFor("the restarted agent's proxy programs api", () => /10\.96\.0\.43/.test(c.sh(n1.ns, ['nft', 'list', 'table', 'inet', 'podnet-proxy'], true)));
    const { code, st, raw } = json(n1);
    assert.equal(code, 0, raw.stdout + raw.stderr);
    assert.deepEqual(st.peers.map((p) => [p.nodeName, p.state]), [['n2', 'programmed']]);
    assert.deepEqual(st.proxy.services.map((x) => [x.service, x.state]), [['default/api', 'programmed'], ['default/web', 'programmed']]);
  });

  test('bad usage and an unreachable store exit 2', () => {
    assert.equal(status(n1, ['--store', `file:${join(c.tmp, 'nowhere')}`]).code, 2);
    const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli/main.ts'), 'status', '--store', c.store.url], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, PODNET_NET_CONFIG_PATH: '' } });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /--config is required/);
  });
});
