// The cluster on etcd (3 members on the underlay): pods reach each other; the leader's kill -9
// is survived (a node joins right after); with every member stopped the datapath keeps
// working, and the agents catch up once etcd is back.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { agentLogTail, TestCluster } from '../helpers/cluster.js';
import { startCluster, findLeader, type EtcdCluster } from '../helpers/etcd.js';

function allPairs(c: TestCluster): string[] {
  const pods = [...c.pods.values()];
  const failed: string[] = [];
  for (const a of pods) for (const b of pods) if (a !== b && !c.ping(a.ns, b.ip)) failed.push(`${a.name}→${b.name}`);
  return failed;
}

describe('cluster on a 3-member etcd', () => {
  let c: TestCluster;
  let etcd: EtcdCluster;
  const hosts = ['192.168.216.251', '192.168.216.252', '192.168.216.253'];
  before(async () => {
    const endpoints = hosts.map((h) => `http://${h}:2379`);
    c = new TestCluster({ Network: '10.246.0.0/16', Backend: { Type: 'vxlan' } }, { url: 'etcd', endpoints }, '192.168.216');
    for (const h of hosts) c.sh(c.fabric, ['ip', 'addr', 'add', `${h}/24`, 'dev', 'br0']);
    etcd = await startCluster({ hosts, netns: hosts.map(() => c.fabric) });
    for (const n of ['n1', 'n2', 'n3']) c.addNode(n);
    await Promise.all([...c.nodes.values()].map((n) => c.startAgent(n)));
    for (const n of c.nodes.values()) c.addPod(`${n.name}a`, n);
  });
  after(async () => {
    await etcd?.destroy();
    await c?.cleanup();
  });

  test('every pod reaches every other pod', () => {
    assert.deepEqual(allPairs(c), []);
  });

  test("the leader's kill -9 is survived: a node joins and is reachable", async () => {
    const leader = await findLeader(etcd.endpoints, { netns: c.fabric });
    const m = etcd.members.find((x) => x.spec.clientUrl === leader)!;
    await m.stop('SIGKILL');
    const n4 = c.addNode('n4');
    await c.startAgent(n4, 30_000);
    const p = c.addPod('n4a', n4);
    const t0 = Date.now();
    let missing = [...c.pods.values()].filter((x) => x !== p);
    while (missing.length && Date.now() - t0 < 10_000) missing = missing.filter((o) => !c.ping(o.ns, p.ip, ['-W1']));
    // on failure, what the agents of the pods left out and the new node said
    const logs = () => [...new Set([...missing.map((x) => x.node), n4])].map((n) => `--- ${n.name}\n${agentLogTail(n.dir, 25)}`).join('\n');
    assert.deepEqual(missing.map((x) => x.name), [], missing.length ? `the new node was not reached after the leader's kill:\n${logs()}` : '');
    await etcd.restart(m.spec.name);
  });

  test('with etcd down the datapath keeps working; the agents catch up when it returns', async () => {
    for (const m of etcd.members) await m.stop('SIGKILL');
    assert.deepEqual(allPairs(c), [], 'datapath broke during the store outage');
    for (const m of [...etcd.members]) await etcd.restart(m.spec.name);
    const n5 = c.addNode('n5');
    await c.startAgent(n5, 30_000);
    const p = c.addPod('n5a', n5);
    const t0 = Date.now();
    let missing = [...c.pods.values()].filter((x) => x !== p);
    while (missing.length && Date.now() - t0 < 10_000) missing = missing.filter((o) => !c.ping(o.ns, p.ip, ['-W1']));
    // on failure, what the agents of the pods left out and the new node said
    const logs = () => [...new Set([...missing.map((x) => x.node), n5])].map((n) => `--- ${n.name}\n${agentLogTail(n.dir, 25)}`).join('\n');
    assert.deepEqual(missing.map((x) => x.name), [], missing.length ? `agents did not catch up after the outage:\n${logs()}` : '');
  });
});
