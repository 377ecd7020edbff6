// The agent with the tun backend across nodes in namespaces (prefix pntagtun): real agents
// (`podnet agent`, file store) on a bridge underlay, pods wired through each node's CNI client,
// podnet-tund started and adopted by the agents. Pod-to-pod across nodes, a node joining and its
// lease deleted (routes and the daemon's peer table follow), the agent killed and restarted (the
// same daemon and device are adopted; pods keep talking while it is away), and bad input: each a
// clear error with nothing built (no device, no daemon, no routes, no lease).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureBuilt } from '../helpers/cni.js';
import { agentCommand, agentLogTail, startAgentIn, stopAgentOf } from '../helpers/cluster.js';
import { installCni } from '../../src/cni/install.js';
import { SUPPORTED_VERSIONS } from '../../src/cni/version.js';
import { pingFrom } from '../../src/util/ping.js';
import { openStore } from '../../src/store/index.js';
import { decodeLease, leaseKey, SUBNETS_PREFIX } from '../../src/agent/lease.js';
import { findTund, readPeers, readTundStats, stopTund, tundBinary } from '../../src/agent/tund/index.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const PREFIX = `pntagtun${process.pid.toString(36)}`;

interface Node {
  name: string;
  ns: string;
  ip: string;
  dir: string;
  data: string;
  agent?: ChildProcess;
}
interface Pod {
  name: string;
  ns: string;
  node: Node;
  ip: string;
  ip6?: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(what: string, fn: () => boolean, ms = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!fn()) {
    if (Date.now() - t0 > ms) assert.fail(`${what}: not within ${ms} ms`);
    await sleep(50);
  }
}

function ensureTundBuilt(): void {
  ensureBuilt();
  // the agent runs from the bundle: rebuild when it predates the tun backend, or the daemon is missing
  const bundle = readFileSync(join(ROOT, 'dist/podnet.mjs'), 'utf8');
  if (!bundle.includes('podnet-tund') || !existsSync(tundBinary())) execFileSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'inherit' });
  assert.ok(existsSync(tundBinary()), `${tundBinary()} is missing after npm run build`);
}

/** Nodes on a bridge underlay, each with an agent, all in namespaces named pntagtun…; removed whole. */
class TunCluster {
  readonly tmp = mkdtempSync(join(tmpdir(), `${PREFIX}-`));
  readonly names: string[] = [];
  readonly nodes = new Map<string, Node>();
  readonly pods = new Map<string, Pod>();
  readonly extra: ChildProcess[] = [];
  readonly fabric: string;
  readonly store: string;
  private nextIp = 11;
  private seq = 0;

  constructor(readonly netConf: Record<string, unknown>, readonly prefix: string) {
    this.fabric = this.netns('fab');
    this.sh(this.fabric, ['ip', 'link', 'add', 'name', 'br0', 'address', '02:00:00:fa:b0:01', 'type', 'bridge']);
    this.sh(this.fabric, ['ip', 'addr', 'add', `${prefix}.254/24`, 'dev', 'br0']);
    this.sh(this.fabric, ['ip', 'link', 'set', 'br0', 'up']);
    this.store = `file:${join(this.tmp, 'store')}`;
  }

  netns(tag: string): string {
    const n = `${PREFIX}-${tag}${this.seq++}`;
    execFileSync('ip', ['netns', 'add', n]);
    this.names.push(n);
    this.sh(n, ['ip', 'link', 'set', 'lo', 'up']);
    return n;
  }

  sh(ns: string, argv: string[], allowFail = false): string {
    try {
      return execFileSync('ip', ['netns', 'exec', ns, ...argv], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 });
    } catch (e) {
      if (allowFail) return '';
      throw new Error(`${argv.join(' ')} in ${ns}: ${(e as { stderr?: string }).stderr ?? (e as Error).message}`);
    }
  }

  addNode(name: string, opts: { mtu?: number } = {}): Node {
    const ns = this.netns(name);
    const ip = `${this.prefix}.${this.nextIp++}`;
    const veth = `v${name}`.slice(0, 15);
    this.sh(ns, ['ip', 'link', 'add', 'name', 'eth0', 'type', 'veth', 'peer', 'name', veth, 'netns', `/run/netns/${this.fabric}`]);
    this.sh(this.fabric, ['ip', 'link', 'set', veth, 'master', 'br0', 'up']);
    if (opts.mtu) {
      this.sh(ns, ['ip', 'link', 'set', 'eth0', 'mtu', String(opts.mtu)]);
      this.sh(this.fabric, ['ip', 'link', 'set', veth, 'mtu', String(opts.mtu)]);
    }
    this.sh(ns, ['ip', 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    this.sh(ns, ['ip', 'link', 'set', 'eth0', 'up']);
    this.sh(ns, ['ip', 'route', 'add', 'default', 'via', `${this.prefix}.254`]);
    this.sh(ns, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    const dir = join(this.tmp, name);
    mkdirSync(dir, { recursive: true });
    installCni({ binDir: join(dir, 'bin'), socket: join(dir, 'sock') }, [...SUPPORTED_VERSIONS]);
    const node: Node = { name, ns, ip, dir, data: join(dir, 'data') };
    this.nodes.set(name, node);
    return node;
  }

  agentArgs(node: Node, confPath = join(this.tmp, 'net-conf.json')): string[] {
    if (!existsSync(join(this.tmp, 'net-conf.json'))) writeFileSync(join(this.tmp, 'net-conf.json'), JSON.stringify(this.netConf));
    return agentCommand({ config: confPath, store: this.store, dir: node.dir, dataDir: node.data, name: node.name });
  }

  startAgent(node: Node, timeoutMs = 30_000): Promise<void> {
    // a restarted agent must write it again
    rmSync(join(node.dir, 'subnet.env'), { force: true });
    return startAgentIn(node, this.agentArgs(node), timeoutMs);
  }

  /** Runs an agent to completion with this config (bad input: it must exit). */
  runAgent(node: Node, conf: unknown, env: NodeJS.ProcessEnv = {}): { status: number | null; stderr: string } {
    const confPath = join(node.dir, 'conf.json');
    writeFileSync(confPath, JSON.stringify(conf));
    const r = spawnSync('ip', ['netns', 'exec', node.ns, process.execPath, ...this.agentArgs(node, confPath)], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, ...env } });
    return { status: r.status, stderr: r.stderr };
  }

  agentLog(node: Node): string {
    return agentLogTail(node.dir);
  }

  stopAgent(node: Node, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    return stopAgentOf(node, signal);
  }

  subnetOf(node: Node): string {
    const env = readFileSync(join(node.dir, 'subnet.env'), 'utf8');
    return /PODNET_SUBNET=(\S+)/.exec(env)![1].replace(/\.1\//, '.0/');
  }

  addPod(name: string, node: Node): Pod {
    const ns = this.netns(`p${name}`);
    const conf = {
      cniVersion: '1.0.0', name: 'cluster', type: 'podnet', bridge: 'cni0', isGateway: true, isDefaultGateway: true, ipMasq: true,
      ipam: { type: 'podnet-ipam', subnetFile: join(node.dir, 'subnet.env'), dataDir: join(node.dir, 'ipam') },
    };
    const out = execFileSync('ip', ['netns', 'exec', node.ns, join(node.dir, 'bin', 'podnet')], {
      env: { PATH: process.env.PATH, CNI_COMMAND: 'ADD', CNI_CONTAINERID: `pod-${name}`, CNI_NETNS: `/run/netns/${ns}`, CNI_IFNAME: 'eth0', CNI_PATH: join(node.dir, 'bin'), PODNET_CNI_LOG: join(node.dir, 'cni.log') },
      input: JSON.stringify(conf),
      encoding: 'utf8',
      timeout: 30_000,
    });
    const res = JSON.parse(out) as { ips: { address: string }[] };
    const v6 = res.ips.find((x) => x.address.includes(':'));
    const pod: Pod = { name, ns, node, ip: res.ips[0].address.split('/')[0], ...(v6 ? { ip6: v6.address.split('/')[0] } : {}) };
    this.pods.set(name, pod);
    return pod;
  }

  /** podnet-tund processes started for this cluster's data dirs (their --pidfile is under tmp). */
  daemons(): number[] {
    const out: number[] = [];
    for (const d of readdirSync('/proc')) {
      if (!/^\d+$/.test(d)) continue;
      try {
        const argv = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
        const i = argv.indexOf('--pidfile');
        if (argv[0].endsWith('podnet-tund') && i > 0 && argv[i + 1]?.startsWith(this.tmp + '/')) out.push(Number(d));
      } catch {
        /* gone */
      }
    }
    return out;
  }

  async leases(): Promise<{ key: string; node?: string }[]> {
    const store = await openStore(this.store);
    try {
      return (await store.list(SUBNETS_PREFIX)).kvs.map((kv) => ({ key: kv.key, node: decodeLease(kv.key, kv.value)?.nodeName }));
    } finally {
      await store.close();
    }
  }

  async cleanup(): Promise<void> {
    for (const n of this.nodes.values()) await this.stopAgent(n, 'SIGKILL').catch(() => {});
    for (const n of this.nodes.values()) await stopTund(n.data, { timeoutMs: 2000 }).catch(() => false);
    for (const pid of this.daemons()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    for (const p of this.extra) if (p.exitCode === null) p.kill('SIGKILL');
    for (const n of this.names.reverse()) spawnSync('ip', ['netns', 'del', n]);
    rmSync(this.tmp, { recursive: true, force: true });
  }
}

describe('agent, tun backend: two nodes', { timeout: 300_000 }, () => {
  let c: TunCluster;
  before(async () => {
    ensureTundBuilt();
    c = new TunCluster({ Network: '10.244.0.0/16', Backend: { Type: 'tun' } }, '192.168.216');
    const [n1, n2] = [c.addNode('n1'), c.addNode('n2')];
    await Promise.all([c.startAgent(n1), c.startAgent(n2)]);
    c.addPod('n1a', n1);
    c.addPod('n2a', n2);
  });
  after(() => c.cleanup());

  test('pods on different nodes reach each other through podnet.tun and podnet-tund', async () => {
    const n1 = c.nodes.get('n1')!;
    const n2 = c.nodes.get('n2')!;
    const [a, b] = [c.pods.get('n1a')!, c.pods.get('n2a')!];
    // the device as designed
    const link = JSON.parse(c.sh(n1.ns, ['ip', '-d', '-j', 'link', 'show', 'podnet.tun']))[0];
    assert.equal(link.ifalias, 'podnet');
    assert.equal(link.linkinfo.info_data.vnet_hdr, true);
    assert.equal(link.linkinfo.info_data.pi, false);
    assert.equal(link.mtu, 1500 - 28);
    assert.match(readFileSync(join(n1.dir, 'subnet.env'), 'utf8'), /PODNET_MTU=1472/);
    assert.match(c.sh(n1.ns, ['ip', '-br', 'addr', 'show', 'podnet.tun']), new RegExp(`${c.subnetOf(n1).split('/')[0]}/32`));
    // the routes: the cluster network and the peer's subnet into the device
    await until('peer route on n1', () => c.sh(n1.ns, ['ip', 'route', 'show', 'proto', '80']).includes(`${c.subnetOf(n2)} dev podnet.tun`));
    const routes = c.sh(n1.ns, ['ip', 'route', 'show', 'proto', '80']);
    assert.match(routes, /^10\.244\.0\.0\/16 dev podnet\.tun /m);
    // the daemon's peer table
    await until('peer table on n1', () => (readPeers(n1.data)?.peers ?? []).some((p) => p.subnet === c.subnetOf(n2)));
    assert.deepEqual(readPeers(n1.data), { locals: [c.subnetOf(n1)], peers: [{ subnet: c.subnetOf(n2), publicIP: n2.ip, port: 8285 }] });
    const leases = await c.leases();
    assert.equal(leases.length, 2);
    assert.ok(findTund(n1.data) && findTund(n2.data), 'a daemon per node');
    assert.ok(pingFrom(a.ns, b.ip), `${a.name} → ${b.name}`);
    assert.ok(pingFrom(b.ns, a.ip), `${b.name} → ${a.name}`);
    // full pod MTU with DF set
    assert.ok(pingFrom(a.ns, b.ip, ['-M', 'do', '-s', String(1472 - 28)]), 'full-MTU packet lost');
    await until('the daemon counts datagrams', () => (readTundStats(n1.data)?.udp_sent_datagrams ?? 0) > 0, 5000);
    assert.equal(readTundStats(n1.data)?.pid, findTund(n1.data)?.pid);
  });

  test('a TCP stream crosses the tunnel byte for byte (offloads on the device the agent made)', async () => {
    const [a, b] = [c.pods.get('n1a')!, c.pods.get('n2a')!];
    const src = join(c.tmp, 'stream.in');
    const dst = join(c.tmp, 'stream.out');
    writeFileSync(src, execFileSync('head', ['-c', String(16 << 20), '/dev/urandom'], { maxBuffer: 32 << 20 }));
    const server = spawn('ip', ['netns', 'exec', b.ns, 'socat', '-u', 'TCP-LISTEN:5001,reuseaddr', `OPEN:${dst},creat,trunc`], { stdio: 'ignore' });
    c.extra.push(server);
    const exited = new Promise((r) => server.once('exit', r));
    await until('the server listens', () => c.sh(b.ns, ['ss', '-Htln', 'sport = :5001']).includes('5001'), 5000);
    execFileSync('ip', ['netns', 'exec', a.ns, 'socat', '-u', `FILE:${src}`, `TCP:${b.ip}:5001`], { timeout: 60_000 });
    await exited;
    const sum = (f: string) => execFileSync('sha256sum', [f], { encoding: 'utf8' }).split(' ')[0];
    assert.equal(sum(dst), sum(src), 'the stream arrived changed');
  });

  test('a joining node gets routes and a table entry on the others; its deleted lease takes both away', async () => {
    const n1 = c.nodes.get('n1')!;
    const n3 = c.addNode('n3');
    await c.startAgent(n3);
    const s3 = c.subnetOf(n3);
    const p3 = c.addPod('n3a', n3);
    await until('route to n3 on n1', () => c.sh(n1.ns, ['ip', 'route', 'show', 'proto', '80']).includes(`${s3} dev podnet.tun`));
    await until('n3 in n1 peer table', () => (readPeers(n1.data)?.peers ?? []).some((p) => p.subnet === s3 && p.publicIP === n3.ip));
    await until('n1a reaches n3a', () => pingFrom(c.pods.get('n1a')!.ns, p3.ip, ['-W1']), 10_000);

    await c.stopAgent(n3, 'SIGKILL');
    const store = await openStore(c.store);
    try {
      assert.ok(await store.delete(leaseKey(s3)), 'the lease of n3 was not there');
    } finally {
      await store.close();
    }
    for (const n of [n1, c.nodes.get('n2')!]) {
      await until(`route to n3 gone on ${n.name}`, () => !c.sh(n.ns, ['ip', 'route', 'show', 'proto', '80']).includes(s3.split('/')[0]));
      await until(`n3 gone from ${n.name}'s peer table`, () => !(readPeers(n.data)?.peers ?? []).some((p) => p.subnet === s3));
    }
    await until('the daemon re-read the table', () => readTundStats(n1.data)?.peers === 1, 5000);
    assert.match(c.sh(n1.ns, ['ip', 'route', 'show', 'proto', '80']), /^10\.244\.0\.0\/16 dev podnet\.tun /m, 'the cluster route stays');
    assert.ok(await stopTund(n3.data), 'n3 daemon stopped');
    c.pods.delete('n3a');
  });

  test('the datapath outlives the agent: kill -9 and SIGTERM leave podnet-tund; a restarted agent adopts it and the device', async () => {
    const n1 = c.nodes.get('n1')!;
    const [a, b] = [c.pods.get('n1a')!, c.pods.get('n2a')!];
    const pid = findTund(n1.data)?.pid;
    assert.ok(pid, 'no daemon on n1');
    const ifindex = c.sh(n1.ns, ['cat', '/sys/class/net/podnet.tun/ifindex']).trim();
    const routes = c.sh(n1.ns, ['ip', 'route', 'show', 'proto', '80']);
    await c.stopAgent(n1, 'SIGKILL');
    assert.equal(findTund(n1.data)?.pid, pid, 'the daemon died with the agent');
    assert.ok(pingFrom(a.ns, b.ip), 'pods cannot talk while the agent is away');
    await c.startAgent(n1);
    await sleep(300);
    assert.equal(findTund(n1.data)?.pid, pid, 'a new daemon was started');
    assert.equal(c.sh(n1.ns, ['cat', '/sys/class/net/podnet.tun/ifindex']).trim(), ifindex, 'the device was recreated');
    assert.equal(c.sh(n1.ns, ['ip', 'route', 'show', 'proto', '80']), routes, 'routes changed across the restart');
    assert.match(readFileSync(join(n1.dir, 'agent.log'), 'utf8'), /podnet-tund adopted/);
    await c.stopAgent(n1, 'SIGTERM');
    assert.equal(findTund(n1.data)?.pid, pid, 'SIGTERM of the agent stopped the daemon');
    assert.ok(pingFrom(b.ns, a.ip));
    await c.startAgent(n1);
    assert.equal(findTund(n1.data)?.pid, pid);
    assert.ok(pingFrom(a.ns, b.ip));
  });

  test('a daemon that died under a running agent is started again by the next pass', async () => {
    const n2 = c.nodes.get('n2')!;
    const old = findTund(n2.data)?.pid;
    assert.ok(old);
    process.kill(old, 'SIGKILL');
    // the next pass (the resync is 2 s here) starts it again
    await until('a new daemon on n2', () => (findTund(n2.data)?.pid ?? old) !== old, 15_000);
    assert.ok(n2.agent && n2.agent.exitCode === null, 'the agent stays up');
    assert.match(readFileSync(join(n2.dir, 'agent.log'), 'utf8'), /podnet-tund is not running: starting it again/);
    await until('pods talk again', () => pingFrom(c.pods.get('n1a')!.ns, c.pods.get('n2a')!.ip, ['-W1']), 10_000);
  });
});

describe('agent, tun backend: dual-stack pods', { timeout: 300_000 }, () => {
  let c: TunCluster;
  before(async () => {
    ensureTundBuilt();
    c = new TunCluster({ Network: '10.244.0.0/16', IPv6Network: 'fd00:10:244::/56', Backend: { Type: 'tun' } }, '192.168.218');
    const [n1, n2] = [c.addNode('d1'), c.addNode('d2')];
    await Promise.all([c.startAgent(n1), c.startAgent(n2)]);
    c.addPod('d1a', n1);
    c.addPod('d2a', n2);
  });
  after(() => c.cleanup());

  test('IPv6 pod subnets are routed and in the peer table; pods reach each other over both families', async () => {
    const [n1, n2] = [c.nodes.get('d1')!, c.nodes.get('d2')!];
    const [a, b] = [c.pods.get('d1a')!, c.pods.get('d2a')!];
    assert.ok(a.ip6 && b.ip6, 'pods have no IPv6 address');
    const env2 = readFileSync(join(n2.dir, 'subnet.env'), 'utf8');
    const v6sub2 = /PODNET_IPV6_SUBNET=(\S+)/.exec(env2)![1].replace(/::1\//, '::/');
    await until('v6 peer route on d1', () => c.sh(n1.ns, ['ip', '-6', 'route', 'show', 'proto', '80']).includes(`${v6sub2} dev podnet.tun`));
    assert.match(c.sh(n1.ns, ['ip', '-6', 'route', 'show', 'proto', '80']), /^fd00:10:244::\/56 dev podnet\.tun /m);
    await until('v6 peer in d1 table', () => (readPeers(n1.data)?.peers ?? []).some((p) => p.subnet === v6sub2 && p.publicIP === n2.ip));
    assert.equal(readPeers(n1.data)?.locals.length, 2);
    assert.ok(pingFrom(a.ns, b.ip), 'IPv4 pod to pod');
    assert.ok(pingFrom(a.ns, b.ip6!), 'IPv6 pod to pod');
    assert.ok(pingFrom(b.ns, a.ip6!), 'IPv6 pod to pod, back');
  });
});

describe('agent, tun backend: bad input is a clear error and nothing is built', { timeout: 300_000 }, () => {
  let c: TunCluster;
  before(() => {
    ensureTundBuilt();
    c = new TunCluster({ Network: '10.244.0.0/16', Backend: { Type: 'tun' } }, '192.168.217');
  });
  after(() => c.cleanup());

  const nothingBuilt = async (n: Node, opts: { foreignTun?: boolean } = {}) => {
    const links = c.sh(n.ns, ['ip', '-br', 'link']);
    if (!opts.foreignTun) assert.equal(links.includes('podnet'), false, `a podnet device was left:\n${links}`);
    assert.equal(findTund(n.data), undefined, 'a podnet-tund runs');
    assert.deepEqual(c.daemons(), [], 'a podnet-tund process runs');
    assert.equal(c.sh(n.ns, ['ip', 'route', 'show', 'proto', '80']), '', 'podnet routes were left');
    assert.equal(c.sh(n.ns, ['nft', 'list', 'tables']).includes('podnet'), false, 'a podnet nft table was left');
    assert.deepEqual((await c.leases()).filter((l) => l.node === n.name), [], 'a lease was taken');
  };

  test('Backend.Port taken on the node address', async () => {
    const n = c.addNode('bport');
    const binder = spawn('ip', ['netns', 'exec', n.ns, process.execPath, '-e', `const s=require('node:dgram').createSocket('udp4');s.bind(8285,'${n.ip}',()=>console.log('bound'));setTimeout(()=>{},600000)`], { stdio: ['ignore', 'pipe', 'inherit'] });
    c.extra.push(binder);
    await new Promise<void>((res, rej) => {
      binder.stdout!.once('data', () => res());
      binder.once('exit', (code) => rej(new Error(`binder exited ${code}`)));
    });
    const r = c.runAgent(n, { Network: '10.244.0.0/16', Backend: { Type: 'tun' } });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`Backend\\.Port 8285 is taken on ${n.ip.replace(/\./g, '\\.')} \\(`));
    await nothingBuilt(n);
    binder.kill('SIGKILL');
  });

  test('Backend.Port out of range', async () => {
    const n = c.addNode('brange');
    const r = c.runAgent(n, { Network: '10.244.0.0/16', Backend: { Type: 'tun', Port: 70000 } });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /net-conf Backend\.Port: expected an integer from 1 to 65535, got 70000/);
    await nothingBuilt(n);
  });

  test('underlay MTU too small for the tunnel', async () => {
    const n = c.addNode('bmtu', { mtu: 600 });
    const r = c.runAgent(n, { Network: '10.244.0.0/16', Backend: { Type: 'tun' } });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /underlay MTU too small for the tunnel: eth0 has MTU 600/);
    await nothingBuilt(n);
  });

  test('a foreign podnet.tun (no alias, no vnet_hdr) is refused and left as it was', async () => {
    const n = c.addNode('bforeign');
    c.sh(n.ns, ['ip', 'tuntap', 'add', 'name', 'podnet.tun', 'mode', 'tun']);
    const before = c.sh(n.ns, ['ip', '-d', '-j', 'link', 'show', 'podnet.tun']);
    const r = c.runAgent(n, { Network: '10.244.0.0/16', Backend: { Type: 'tun' } });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /podnet\.tun exists and is not podnet's \(vnet_hdr off, no alias "podnet"\): remove it/);
    assert.equal(c.sh(n.ns, ['ip', '-d', '-j', 'link', 'show', 'podnet.tun']), before, 'the foreign device was changed');
    await nothingBuilt(n, { foreignTun: true });
  });

  test('a datapath that cannot start after the device was made: the device and the lease go again', async () => {
    const n = c.addNode('battach');
    const bin = join(c.tmp, 'failing', 'podnet-tund');
    mkdirSync(join(c.tmp, 'failing'), { recursive: true });
    writeFileSync(bin, '#!/bin/sh\necho "TUNSETIFF podnet.tun: Device or resource busy" >&2\nexit 4\n', { mode: 0o755 });
    const r = c.runAgent(n, { Network: '10.244.0.0/16', Backend: { Type: 'tun' } }, { PODNET_TUND: bin });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /podnet-tund cannot attach to the TUN device podnet\.tun \(TUNSETIFF podnet\.tun: Device or resource busy\)/);
    await nothingBuilt(n);
  });

  test('a missing podnet-tund binary', async () => {
    const n = c.addNode('bbin');
    const r = c.runAgent(n, { Network: '10.244.0.0/16', Backend: { Type: 'tun' } }, { PODNET_TUND: join(c.tmp, 'no-such-podnet-tund') });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /datapath binary .*no-such-podnet-tund is missing: run `npm run build`/);
    await nothingBuilt(n);
  });
});
