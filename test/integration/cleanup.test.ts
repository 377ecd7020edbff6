// `podnet cleanup` on a node namespace after its agent was killed with SIGKILL: the namespace is
// exactly as it was before the agent started (links, addresses, routes of every table, neighbours,
// rules, the nftables ruleset), the foreign objects added first are all still there, the files
// are gone, and a second run plans nothing. vxlan (a peer lease so routes, neighbour and FDB are
// programmed, a routed CNI pod with ipMasq and a hostPort) and tun (podnet-tund, which outlives
// the agent, stopped by its PID).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { startAgentIn, TestCluster, type ClusterNode } from '../helpers/cluster.js';
import { openStore } from '../../src/store/index.js';
import { encodeLease, leaseKey, type NodeLease } from '../../src/agent/lease.js';
import { findTund, stopTund } from '../../src/agent/tund/index.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const PODNET = join(ROOT, 'dist/podnet.mjs');

/** Drops what changes without anyone changing the object (counters, lifetimes, handles). */
function normalize(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(normalize);
  if (v && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
      if (['handle', 'metainfo', 'stats', 'stats64', 'valid_life_time', 'preferred_life_time', 'used', 'confirmed', 'updated', 'probes'].includes(k)) continue;
      out[k] = normalize(x);
    }
    return out;
  }
  return v;
}

function ipj(c: TestCluster, ns: string, args: string[]): unknown {
  return normalize(JSON.parse(c.sh(ns, ['ip', '-j', ...args]) || '[]'));
}

/** Waits (polling) until no IPv6 address is tentative: DAD changes addresses and routes on its own. */
async function settled(c: TestCluster, ns: string): Promise<void> {
  const t0 = Date.now();
  while (c.sh(ns, ['ip', '-6', 'addr', 'show', 'tentative']).trim() !== '') {
    if (Date.now() - t0 > 10_000) throw new Error(`IPv6 DAD in ${ns} not done in 10 s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The node's network state, comparable across time. */
function snapshot(c: TestCluster, ns: string): Record<string, unknown> {
  return {
    links: ipj(c, ns, ['link', 'show']),
    addrs: ipj(c, ns, ['addr', 'show']),
    routes4: ipj(c, ns, ['-4', 'route', 'show', 'table', 'all']),
    routes6: ipj(c, ns, ['-6', 'route', 'show', 'table', 'all']),
    // the kernel's own resolution entries come and go with traffic; what someone configured stays
    neigh: (ipj(c, ns, ['neigh', 'show']) as { state?: string[] }[]).filter((n) => n.state?.includes('PERMANENT') || n.state?.includes('NOARP')),
    rules4: ipj(c, ns, ['-4', 'rule', 'show']),
    rules6: ipj(c, ns, ['-6', 'rule', 'show']),
    nft: normalize(JSON.parse(c.sh(ns, ['nft', '-j', 'list', 'ruleset']))),
  };
}

/** Objects that are not podnet's, some of them looking like podnet's (must all survive). */
function addForeign(c: TestCluster, ns: string): void {
  const sh = (...a: string[]) => c.sh(ns, a);
  sh('ip', 'link', 'add', 'fdummy0', 'type', 'veth', 'peer', 'name', 'fdummy1');
  sh('ip', 'link', 'set', 'fdummy1', 'up');
  sh('ip', 'link', 'set', 'fdummy0', 'alias', 'podnet-ish but not podnet', 'up');
  sh('ip', 'addr', 'add', '10.99.0.1/24', 'dev', 'fdummy0');
  sh('ip', 'route', 'add', '10.98.0.0/24', 'via', '10.99.0.2', 'proto', 'static');
  // proto 80 outside the main table is not the backends'
  sh('ip', 'route', 'add', '10.97.0.0/24', 'via', '10.99.0.2', 'table', '100', 'proto', '80');
  sh('ip', 'rule', 'add', 'from', '10.99.0.0/24', 'table', '100', 'priority', '1000');
  sh('ip', 'neigh', 'add', '10.99.0.3', 'lladdr', '02:00:00:00:99:03', 'dev', 'fdummy0', 'nud', 'permanent');
  // a vxlan device that is not named podnet.<VNI>
  sh('ip', 'link', 'add', 'vxforeign', 'type', 'vxlan', 'id', '42', 'dstport', '4789', 'dev', 'eth0', 'nolearning');
  sh('bridge', 'fdb', 'append', '00:00:00:00:00:00', 'dev', 'vxforeign', 'dst', '192.168.217.77');
  execFileSync('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], {
    input: 'table inet foreign {\n  chain input {\n    type filter hook input priority 0; policy accept;\n    tcp dport 22 accept\n  }\n}\ntable inet podnetx {\n}\n',
    stdio: ['pipe', 'ignore', 'pipe'],
  });
}

function cleanupCmd(node: ClusterNode, extra: string[]): { code: number | null; stdout: string; stderr: string; ms: number } {
  const t0 = Date.now();
  const r = spawnSync('ip', ['netns', 'exec', node.ns, process.execPath, PODNET, 'cleanup', '--data-dir', join(node.dir, 'data'), '--socket', join(node.dir, 'sock'), '--subnet-file', join(node.dir, 'subnet.env'), '--ipam-dir', join(node.dir, 'ipam'), ...extra], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - t0 };
}

async function putPeer(c: TestCluster, lease: NodeLease): Promise<void> {
  const store = await openStore(c.store.url, {});
  try {
    assert.ok(await store.create(leaseKey(lease.subnet), encodeLease(lease)));
  } finally {
    await store.close();
  }
}

async function until(what: string, fn: () => boolean, node: ClusterNode, c: TestCluster, ms = 15_000): Promise<void> {
  const t0 = Date.now();
  while (!fn()) {
    if (Date.now() - t0 > ms) throw new Error(`${what} not within ${ms} ms; agent log:\n${c.agentLog(node)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

type Plan = { dryRun: boolean; plan: { kind: string; what: string; why: string }[]; steps: { what: string; ok: boolean; error?: string }[] };

describe('podnet cleanup after kill -9, vxlan backend', () => {
  let c: TestCluster;
  let n1: ClusterNode;
  before(() => {
    c = new TestCluster({ Network: '10.244.0.0/16', SubnetLen: 24, Backend: { Type: 'vxlan', VNI: 7 } }, undefined, '192.168.217');
    n1 = c.addNode('n1');
  });
  after(() => c.cleanup());

  test('the node namespace is as it was before the agent; foreign objects stay; a second run plans nothing', async () => {
    addForeign(c, n1.ns);
    await settled(c, n1.ns);
    const before = snapshot(c, n1.ns);
    await putPeer(c, { subnet: '10.244.77.0/24', publicIP: '192.168.217.99', backendType: 'vxlan', backendData: { VtepMAC: '02:aa:bb:cc:dd:ee', VNI: 7 }, nodeName: 'ghost' });
    await c.startAgent(n1);
    await until('the peer route, neighbour and FDB entry', () => {
      const r = c.sh(n1.ns, ['ip', 'route', 'show', 'proto', '80']);
      const fdb = c.sh(n1.ns, ['bridge', 'fdb', 'show', 'dev', 'podnet.7']);
      const nb = c.sh(n1.ns, ['ip', 'neigh', 'show', 'dev', 'podnet.7', 'nud', 'permanent']);
      return r.includes('10.244.77.0/24') && fdb.includes('192.168.217.99') && nb.includes('02:aa:bb:cc:dd:ee');
    }, n1, c);
    // a routed pod with ipMasq and a hostPort through the agent (CNI client → socket)
    const podNs = c.fixture.add('pod');
    const conf = {
      cniVersion: '1.0.0', name: 'cleannet', type: 'podnet', mode: 'routed', ipMasq: true,
      runtimeConfig: { portMappings: [{ hostPort: 18080, containerPort: 80, protocol: 'tcp' }] },
      ipam: { type: 'podnet-ipam', subnetFile: join(n1.dir, 'subnet.env'), dataDir: join(n1.dir, 'ipam') },
    };
    execFileSync('ip', ['netns', 'exec', n1.ns, join(n1.dir, 'bin', 'podnet')], {
      env: { PATH: process.env.PATH, CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'cleanpod1', CNI_NETNS: `/run/netns/${podNs}`, CNI_IFNAME: 'eth0', CNI_PATH: join(n1.dir, 'bin'), PODNET_CNI_LOG: join(n1.dir, 'cni.log') },
      input: JSON.stringify(conf),
      encoding: 'utf8',
    });
    // and a bridge-mode pod: the bridge the CNI creates for it goes with cleanup too
    const brPod = c.fixture.add('brpod');
    execFileSync('ip', ['netns', 'exec', n1.ns, join(n1.dir, 'bin', 'podnet')], {
      env: { PATH: process.env.PATH, CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'cleanpod2', CNI_NETNS: `/run/netns/${brPod}`, CNI_IFNAME: 'eth0', CNI_PATH: join(n1.dir, 'bin'), PODNET_CNI_LOG: join(n1.dir, 'cni.log') },
      input: JSON.stringify({ cniVersion: '1.0.0', name: 'cleanbr', type: 'podnet', mode: 'bridge', bridge: 'pnclbr0', isGateway: true, ipMasq: true, ipam: { type: 'podnet-ipam', ranges: [[{ subnet: '10.91.7.0/24' }]], dataDir: join(n1.dir, 'ipam') } }),
      encoding: 'utf8',
    });
    assert.match(c.sh(n1.ns, ['ip', '-d', 'link', 'show', 'pnclbr0']), /alias podnet-bridge/);
    const tables = c.sh(n1.ns, ['nft', 'list', 'tables']);
    for (const t of ['inet podnet-cluster', 'netdev podnet-cluster', 'inet podnet-proxy', 'inet podnet', 'inet podnet-hostport']) assert.ok(tables.includes(`table ${t}\n`), `${t} missing:\n${tables}`);
    assert.ok(existsSync(join(n1.dir, 'ipam', 'cleannet')));

    // refused while the agent answers on its socket, and nothing is touched
    const refused = cleanupCmd(n1, ['--all']);
    assert.equal(refused.code, 2, refused.stdout + refused.stderr);
    assert.match(refused.stderr, /a podnet agent is running here \(it answers on .*sock\).*--force/);
    assert.ok(c.sh(n1.ns, ['ip', 'route', 'show', 'proto', '80']).includes('10.244.77.0/24'));

    await c.stopAgent(n1, 'SIGKILL');
    // the dry run lists what goes and changes nothing
    const dry = cleanupCmd(n1, ['--all', '--dry-run', '-o', 'json']);
    assert.equal(dry.code, 0, dry.stderr);
    const dryPlan = JSON.parse(dry.stdout) as Plan;
    assert.equal(dryPlan.steps.length, 0);
    const whats = dryPlan.plan.map((p) => p.what);
    for (const want of [/^link podnet\.7 \(vxlan\)$/, /^link veth[0-9a-f]{11} \(veth\)$/, /^link pnclbr0 \(bridge\)$/, /^route 10\.244\.77\.0\/24 via 10\.244\.77\.0 dev podnet\.7 proto 80$/, /^neighbour 10\.244\.77\.0 lladdr 02:aa:bb:cc:dd:ee dev podnet\.7$/, /^fdb 02:aa:bb:cc:dd:ee dev podnet\.7 dst 192\.168\.217\.99$/, /^nftables table inet podnet-proxy$/, /^socket /, /subnet\.env$/, /ipam\/cleannet$/]) {
      assert.ok(whats.some((w) => want.test(w)), `${want} not in the plan:\n${whats.join('\n')}`);
    }
    for (const p of dryPlan.plan) assert.ok(!/fdummy0|vxforeign|foreign|podnetx|10\.9[78]\./.test(p.what), `foreign object planned: ${p.what}`);
    assert.ok(c.sh(n1.ns, ['ip', 'link', 'show']).includes('podnet.7'));

    const run = cleanupCmd(n1, ['--all', '-o', 'json']);
    assert.equal(run.code, 0, run.stdout + run.stderr);
    const res = JSON.parse(run.stdout) as Plan;
    assert.deepEqual(res.steps.filter((s) => !s.ok), []);
    assert.deepEqual(res.plan.map((p) => p.what).sort(), [...whats].sort(), 'the applied plan is the dry run\'s');
    await settled(c, n1.ns);
    assert.deepEqual(snapshot(c, n1.ns), before);
    for (const f of ['sock', 'subnet.env', join('ipam', 'cleannet'), 'data']) assert.ok(!existsSync(join(n1.dir, f)), `${f} left`);

    const again = cleanupCmd(n1, ['--all', '-o', 'json']);
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual((JSON.parse(again.stdout) as Plan).plan, []);
    console.log(`cleanup: ${run.ms} ms (${res.plan.length} items), second run ${again.ms} ms`);
  });
});

describe('podnet cleanup after kill -9, tun backend (podnet-tund outlives the agent)', () => {
  let c: TestCluster;
  let n1: ClusterNode;
  before(() => {
    c = new TestCluster({ Network: '10.245.0.0/16', SubnetLen: 24, Backend: { Type: 'tun', Port: 8285 } }, undefined, '192.168.218');
    n1 = c.addNode('t1');
  });
  after(async () => {
    // a failed test must not leave the daemon running in a deleted namespace
    await stopTund(join(n1.dir, 'data')).catch(() => false);
    await c.cleanup();
  });

  test('podnet-tund is stopped by its PID, podnet.tun and its routes go, the proxy\'s iptables chains too; the namespace is as before', async () => {
    addForeign(c, n1.ns);
    // iptables in use on this node before podnet: its tables with their built-in chains (iptables-nft
    // creates a built-in chain only when something is written to it; such a chain is iptables',
    // not marked as podnet's, and cleanup leaves it), and foreign rules in the chains the proxy uses
    for (const tool of ['iptables-nft-restore', 'ip6tables-nft-restore']) {
      execFileSync('ip', ['netns', 'exec', n1.ns, tool, '-w', '--noflush'], { input: '*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n' });
    }
    c.sh(n1.ns, ['iptables', '-w', '-t', 'nat', '-A', 'POSTROUTING', '-s', '10.99.0.0/24', '-m', 'comment', '--comment', 'foreign nat', '-j', 'RETURN']);
    c.sh(n1.ns, ['iptables', '-w', '-t', 'filter', '-A', 'FORWARD', '-s', '10.99.0.0/24', '-m', 'comment', '--comment', 'PODNET-lookalike', '-j', 'ACCEPT']);
    c.sh(n1.ns, ['ip6tables', '-w', '-t', 'nat', '-A', 'POSTROUTING', '-s', 'fd99::/64', '-j', 'RETURN']);
    c.sh(n1.ns, ['ip6tables', '-w', '-t', 'filter', '-A', 'INPUT', '-p', 'tcp', '--dport', '22', '-j', 'ACCEPT']);
    await settled(c, n1.ns);
    const before = snapshot(c, n1.ns);
    await putPeer(c, { subnet: '10.245.77.0/24', publicIP: '192.168.218.99', backendType: 'tun', backendData: { Port: 8285 }, nodeName: 'ghost' });
    await startAgentIn(n1, c.agentArgs(n1, ['--proxy-mode', 'iptables']), 20_000);
    await until('the peer route and the proxy\'s iptables chains', () => c.sh(n1.ns, ['ip', 'route', 'show', 'proto', '80']).includes('10.245.77.0/24 dev podnet.tun') && c.sh(n1.ns, ['iptables-save', '-t', 'nat']).includes('-j PODNET-SERVICES'), n1, c);
    await c.stopAgent(n1, 'SIGKILL');
    const tund = findTund(join(n1.dir, 'data'));
    assert.ok(tund, 'podnet-tund runs on after the agent is killed');

    const run = cleanupCmd(n1, ['-o', 'json']);
    assert.equal(run.code, 0, run.stdout + run.stderr);
    const res = JSON.parse(run.stdout) as Plan;
    assert.deepEqual(res.steps.filter((s) => !s.ok), []);
    const whats = res.plan.map((p) => p.what);
    assert.ok(whats.includes(`podnet-tund pid ${tund.pid}`), whats.join('\n'));
    assert.ok(whats.includes('link podnet.tun (tun)'), whats.join('\n'));
    assert.ok(whats.some((w) => w.startsWith('route 10.245.0.0/16 dev podnet.tun')), whats.join('\n'));
    for (const want of [/^iptables-nft -t nat chain PODNET-SERVICES$/, /^iptables-nft -t nat -A PREROUTING .*-j PODNET-SERVICES$/, /^iptables-nft -t filter -A INPUT .*-j PODNET-SERVICES$/]) {
      assert.ok(whats.some((w) => want.test(w)), `${want} not in the plan:\n${whats.join('\n')}`);
    }
    for (const w of whats) assert.ok(!/foreign|lookalike|10\.99|fd99|dport 22/.test(w), `foreign object planned: ${w}`);
    assert.equal(findTund(join(n1.dir, 'data')), undefined);
    assert.ok(!existsSync(`/proc/${tund.pid}/cmdline`) || !execFileSync('cat', [`/proc/${tund.pid}/cmdline`], { encoding: 'utf8' }).includes('podnet-tund'), 'podnet-tund still running');
    await settled(c, n1.ns);
    assert.deepEqual(snapshot(c, n1.ns), before);
    assert.ok(!existsSync(join(n1.dir, 'data', 'tund')));
    // without --all the remembered subnet stays (a new agent takes the same one back)
    assert.ok(existsSync(join(n1.dir, 'data', 'subnet')));

    const again = cleanupCmd(n1, ['-o', 'json']);
    assert.deepEqual((JSON.parse(again.stdout) as Plan).plan, []);
    console.log(`cleanup (tun): ${run.ms} ms (${res.plan.length} items), second run ${again.ms} ms`);
  });
});
