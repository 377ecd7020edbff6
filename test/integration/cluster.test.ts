// The agent's cluster side across nodes in namespaces: both backends, nodes joining and
// leaving, an agent killed and restarted under traffic, the pod MTU, and bad input.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { TestCluster, type ClusterPod } from '../helpers/cluster.js';
import { openStore } from '../../src/store/index.js';
import { leaseKey } from '../../src/agent/lease.js';

function allPairs(c: TestCluster): string[] {
  const pods = [...c.pods.values()];
  const failed: string[] = [];
  for (const a of pods) for (const b of pods) if (a !== b && !c.ping(a.ns, b.ip)) failed.push(`${a.name}→${b.name}`);
  return failed;
}

for (const backend of ['vxlan', 'host-gw'] as const) {
  describe(`cluster, ${backend}`, () => {
    let c: TestCluster;
    before(async () => {
      c = new TestCluster({ Network: '10.244.0.0/16', Backend: { Type: backend } }, undefined, backend === 'vxlan' ? '192.168.213' : '192.168.214');
      for (const n of ['n1', 'n2', 'n3']) c.addNode(n);
      await Promise.all([...c.nodes.values()].map((n) => c.startAgent(n)));
      for (const n of c.nodes.values()) {
        c.addPod(`${n.name}a`, n);
        c.addPod(`${n.name}b`, n);
      }
    });
    after(() => c.cleanup());

    test('every pod reaches every other pod across 3 nodes, unmasqueraded', () => {
      assert.deepEqual(allPairs(c), []);
      // ipMasq leaves traffic to the whole cluster network alone (the subnet file names it)
      const set = c.sh(c.nodes.get('n1')!.ns, ['nft', 'list', 'set', 'inet', 'podnet', 'masq_nets4']);
      assert.match(set, /10\.244\.0\.0\/16/);
    });

    test('a node added later is reachable from all pods within 2 s', async () => {
      const n4 = c.addNode('n4');
      await c.startAgent(n4);
      const p = c.addPod('n4a', n4);
      const t0 = Date.now();
      const others = [...c.pods.values()].filter((x) => x !== p);
      let missing = others;
      while (missing.length && Date.now() - t0 < 2000) {
        missing = missing.filter((o) => !c.ping(o.ns, p.ip, ['-W1']));
      }
      assert.deepEqual(missing.map((m) => m.name), [], `not reachable within 2 s (${Date.now() - t0} ms)`);
    });

    test('a node whose lease is deleted leaves no route, neighbour or FDB entry behind', async () => {
      const n4 = c.nodes.get('n4')!;
      const subnet = c.subnetOf(n4).replace(/\.1\//, '.0/');
      await c.stopAgent(n4, 'SIGKILL');
      const store = await openStore(c.store.url);
      try {
        assert.ok(await store.delete(leaseKey(subnet)), 'lease was not there');
      } finally {
        await store.close();
      }
      const gone = (n: string) => {
        const ns = c.nodes.get(n)!.ns;
        const routes = c.sh(ns, ['ip', 'route', 'show', 'proto', '80']);
        const neigh = backend === 'vxlan' ? c.sh(ns, ['ip', 'neigh', 'show', 'dev', 'podnet.1']) : '';
        const fdb = backend === 'vxlan' ? c.sh(ns, ['bridge', 'fdb', 'show', 'dev', 'podnet.1']) : '';
        return !routes.includes(subnet.split('/')[0]) && !neigh.includes(subnet.split('/')[0]) && !fdb.includes(n4.ip);
      };
      const t0 = Date.now();
      while (!['n1', 'n2', 'n3'].every(gone) && Date.now() - t0 < 5000) await new Promise((r) => setTimeout(r, 50));
      assert.ok(['n1', 'n2', 'n3'].every(gone), 'state of the removed node is left');
      c.pods.delete('n4a');
    });

    test('kill -9 of an agent and its restart lose no packet between pods on different nodes', async () => {
      const n1 = c.nodes.get('n1')!;
      const ifindexBefore = backend === 'vxlan' ? c.sh(n1.ns, ['cat', '/sys/class/net/podnet.1/ifindex']).trim() : '';
      const routesBefore = c.sh(n1.ns, ['ip', 'route', 'show', 'proto', '80']);
      const a = c.pods.get('n1a') as ClusterPod;
      const b = c.pods.get('n2a') as ClusterPod;
      // 10 ms interval needs root (it is); 300 packets = 3 s of traffic around the restart
      const pinger = spawn('ip', ['netns', 'exec', a.ns, 'ping', '-n', '-q', '-i', '0.01', '-c', '300', '-W', '1', b.ip], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      pinger.stdout.on('data', (d) => (out += d));
      await new Promise((r) => setTimeout(r, 500));
      await c.stopAgent(n1, 'SIGKILL');
      await c.startAgent(n1);
      await new Promise((r) => pinger.once('exit', r));
      assert.match(out, / 0% packet loss/, out);
      if (backend === 'vxlan') assert.equal(c.sh(n1.ns, ['cat', '/sys/class/net/podnet.1/ifindex']).trim(), ifindexBefore, 'the vxlan device was recreated');
      assert.equal(c.sh(n1.ns, ['ip', 'route', 'show', 'proto', '80']), routesBefore, 'routes changed across the restart');
    });

    test('packets of the full pod MTU cross nodes with DF set; one byte more is refused, not dropped', () => {
      const a = c.pods.get('n1a') as ClusterPod;
      const b = c.pods.get('n3a') as ClusterPod;
      const mtu = Number(c.sh(a.ns, ['cat', '/sys/class/net/eth0/mtu']).trim());
      assert.equal(mtu, backend === 'vxlan' ? 1450 : 1500);
      assert.ok(c.ping(a.ns, b.ip, ['-M', 'do', '-s', String(mtu - 28)]), 'full-MTU packet lost');
      const r = spawnSync('ip', ['netns', 'exec', a.ns, 'ping', '-n', '-c1', '-W2', '-M', 'do', '-s', String(mtu - 27), b.ip], { encoding: 'utf8' });
      assert.notEqual(r.status, 0);
      assert.match(r.stdout + r.stderr, /message too long|frag needed/i);
    });
  });
}

describe('cluster bad input: a clear error and nothing built', () => {
  let c: TestCluster;
  before(() => {
    c = new TestCluster({ Network: '10.0.0.0/22', SubnetLen: 24, Backend: { Type: 'vxlan' } }, undefined, '192.168.215');
  });
  after(() => c.cleanup());

  const runAgent = (node: ReturnType<TestCluster['addNode']>, conf: unknown, storeArgs?: string[]) => {
    const confPath = join(node.dir, 'bad.json');
    writeFileSync(confPath, typeof conf === 'string' ? conf : JSON.stringify(conf));
    const args = c.agentArgs(node).map((a, i, all) => (all[i - 1] === '--config' ? confPath : a));
    if (storeArgs) {
      const i = args.indexOf('--store');
      args.splice(i, 2, ...storeArgs);
    }
    return spawnSync('ip', ['netns', 'exec', node.ns, process.execPath, ...args], { encoding: 'utf8', timeout: 30_000 });
  };
  const nothingBuilt = (ns: string) => {
    assert.equal(c.sh(ns, ['ip', '-br', 'link']).includes('podnet'), false, 'a podnet device was left');
    assert.equal(c.sh(ns, ['nft', 'list', 'tables']).includes('podnet'), false, 'a podnet table was left');
  };

  for (const [what, conf, re] of [
    ['malformed cluster CIDR', { Network: '10.0.0/22', Backend: { Type: 'vxlan' } }, /Network: malformed CIDR/],
    ['cluster CIDR overlapping the node network', { Network: '192.168.0.0/16', Backend: { Type: 'vxlan' } }, /overlaps the node network/],
    ['SubnetLen that does not fit', { Network: '10.0.0.0/22', SubnetLen: 20, Backend: { Type: 'vxlan' } }, /SubnetLen: \/20 does not fit/],
    ['unknown backend', { Network: '10.0.0.0/22', Backend: { Type: 'udp' } }, /unknown backend "udp"/],
    ['config that is not JSON', '{"Network": ', /--config .*JSON/],
  ] as const) {
    test(`${what}`, () => {
      const node = c.addNode(`b${c.nodes.size}`);
      const r = runAgent(node, conf);
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, re);
      nothingBuilt(node.ns);
    });
  }

  test('an unreachable store', () => {
    const node = c.addNode(`b${c.nodes.size}`);
    const r = runAgent(node, { Network: '10.0.0.0/22', Backend: { Type: 'vxlan' } }, ['--store', 'etcd', '--etcd-endpoints', 'http://127.0.0.1:1']);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /unreachable/);
    nothingBuilt(node.ns);
  });

  test('a cluster that has run out of subnets', async () => {
    // 10.0.0.0/22 in /24s: subnets 1..3 can be leased
    for (const n of ['f1', 'f2', 'f3']) await c.startAgent(c.addNode(n));
    const node = c.addNode('f4');
    const r = runAgent(node, { Network: '10.0.0.0/22', SubnetLen: 24, Backend: { Type: 'vxlan' } });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /run out of \/24 subnets/);
    nothingBuilt(node.ns);
  });
});
