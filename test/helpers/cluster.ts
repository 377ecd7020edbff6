// A small cluster in namespaces for the agent's tests: an underlay bridge in a fabric netns,
// nodes with eth0 on it, an agent per node (podnet agent --config --store), and pods wired
// through each node's installed CNI client, exactly as a runtime calls it.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetnsFixture, RUN_PREFIX } from './netns.js';
import { pingFrom } from '../../src/util/ping.js';
import { ensureBuilt } from './cni.js';
import { installCni } from '../../src/cni/install.js';
import { SUPPORTED_VERSIONS } from '../../src/cni/version.js';

const ROOT = new URL('../../', import.meta.url).pathname;

/** The last lines of the agent log in a node's dir. */
export function agentLogTail(dir: string, lines = 15): string {
  try {
    return readFileSync(join(dir, 'agent.log'), 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** `podnet agent` for a test node: its files under `dir`, quick lease TTL and resync. */
export function agentCommand(o: { config: string; store: string; endpoints?: string[]; dir: string; dataDir: string; name: string }, extra: string[] = []): string[] {
  return [
    join(ROOT, 'dist/podnet.mjs'), 'agent',
    '--config', o.config,
    '--store', o.store,
    ...(o.endpoints ? ['--etcd-endpoints', o.endpoints.join(',')] : []),
    '--socket', join(o.dir, 'sock'),
    '--subnet-file', join(o.dir, 'subnet.env'),
    '--data-dir', o.dataDir,
    '--node-name', o.name,
    '--lease-ttl', '10',
    // every resync also re-lists the leases: after a store outage a node catches up within
    // it even while its watch is still in reconnect backoff (the tests wait up to 10 s)
    '--resync', '2',
    '--log-level', 'info',
    ...extra,
  ];
}

/** Runs `argv` (an agentCommand) in the node's netns, logging to its dir; resolves once its subnet file exists. */
export async function startAgentIn(node: { name: string; ns: string; dir: string; agent?: ChildProcess }, argv: string[], timeoutMs: number): Promise<void> {
  const out = openSync(join(node.dir, 'agent.log'), 'a');
  const agent = spawn('ip', ['netns', 'exec', node.ns, process.execPath, ...argv], { stdio: ['ignore', out, out] });
  closeSync(out);
  node.agent = agent;
  const subnetFile = join(node.dir, 'subnet.env');
  const t0 = Date.now();
  while (!existsSync(subnetFile)) {
    if (agent.exitCode !== null) throw new Error(`agent of ${node.name} exited (${agent.exitCode}): ${agentLogTail(node.dir)}`);
    if (Date.now() - t0 > timeoutMs) throw new Error(`agent of ${node.name} wrote no subnet file in ${timeoutMs} ms: ${agentLogTail(node.dir)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Signals a node's running agent and waits until it has exited. */
export async function stopAgentOf(node: { agent?: ChildProcess }, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  const a = node.agent;
  if (!a || a.exitCode !== null) return;
  const done = new Promise((r) => a.once('exit', r));
  a.kill(signal);
  await done;
  node.agent = undefined;
}

export interface ClusterNode {
  name: string;
  ns: string;
  ip: string;
  dir: string;
  agent?: ChildProcess;
}

export interface ClusterPod {
  name: string;
  ns: string;
  node: ClusterNode;
  ip: string;
}

export class TestCluster {
  readonly fixture = new NetnsFixture();
  readonly tmp = mkdtempSync(join(tmpdir(), `${RUN_PREFIX}-cl-`));
  readonly fabric: string;
  readonly nodes = new Map<string, ClusterNode>();
  readonly pods = new Map<string, ClusterPod>();
  private nextIp = 11;
  netConfPath: string;

  constructor(
    netConf: Record<string, unknown>,
    readonly store: { url: string; endpoints?: string[] } = { url: '' },
    readonly subnetPrefix = '192.168.213',
  ) {
    ensureBuilt();
    this.fabric = this.fixture.add('fab');
    this.sh(this.fabric, ['ip', 'link', 'add', 'name', 'br0', 'type', 'bridge']);
    // br0's MAC is pinned (set explicitly, to the one it has): a bridge whose MAC the kernel chose
    // takes the lowest MAC of its ports, so a node added later (n4, n5 of cluster-etcd: about one
    // time in four) changed it, and the nodes already up kept the old MAC in their ARP cache for
    // br0's addresses (.254, the etcd members): the bridge drops what they send there (no longer
    // its address) until each entry happens to be refreshed, for some past their lease's TTL
    this.sh(this.fabric, ['ip', 'link', 'set', 'br0', 'address', this.sh(this.fabric, ['cat', '/sys/class/net/br0/address']).trim()]);
    this.sh(this.fabric, ['ip', 'addr', 'add', `${subnetPrefix}.254/24`, 'dev', 'br0']);
    this.sh(this.fabric, ['ip', 'link', 'set', 'br0', 'up']);
    this.netConfPath = join(this.tmp, 'net-conf.json');
    writeFileSync(this.netConfPath, JSON.stringify(netConf));
    if (!this.store.url) this.store = { url: `file:${join(this.tmp, 'store')}` };
  }

  sh(ns: string, argv: string[], allowFail = false): string {
    try {
      return execFileSync('ip', ['netns', 'exec', ns, ...argv], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      if (allowFail) return '';
      throw new Error(`${argv.join(' ')} in ${ns}: ${(e as { stderr?: string }).stderr ?? (e as Error).message}`);
    }
  }

  /** A node netns on the underlay, without its agent. */
  addNode(name: string, opts: { mtu?: number } = {}): ClusterNode {
    const ns = this.fixture.add(name);
    const ip = `${this.subnetPrefix}.${this.nextIp++}`;
    const veth = `v${name}`.slice(0, 15);
    this.sh(ns, ['ip', 'link', 'add', 'name', 'eth0', 'type', 'veth', 'peer', 'name', veth, 'netns', `/run/netns/${this.fabric}`]);
    this.sh(this.fabric, ['ip', 'link', 'set', veth, 'master', 'br0', 'up']);
    if (opts.mtu) {
      this.sh(ns, ['ip', 'link', 'set', 'eth0', 'mtu', String(opts.mtu)]);
      this.sh(this.fabric, ['ip', 'link', 'set', veth, 'mtu', String(opts.mtu)]);
    }
    this.sh(ns, ['ip', 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    this.sh(ns, ['ip', 'link', 'set', 'eth0', 'up']);
    this.sh(ns, ['ip', 'route', 'add', 'default', 'via', `${this.subnetPrefix}.254`]);
    this.sh(ns, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    const dir = join(this.tmp, name);
    mkdirSync(dir, { recursive: true });
    installCni({ binDir: join(dir, 'bin'), socket: join(dir, 'sock') }, [...SUPPORTED_VERSIONS]);
    const node: ClusterNode = { name, ns, ip, dir };
    this.nodes.set(name, node);
    return node;
  }

  agentArgs(node: ClusterNode, extra: string[] = []): string[] {
    return agentCommand({ config: this.netConfPath, store: this.store.url, endpoints: this.store.endpoints, dir: node.dir, dataDir: join(node.dir, 'data'), name: node.name }, extra);
  }

  /** Starts the node's agent; resolves once its subnet file exists. */
  startAgent(node: ClusterNode, timeoutMs = 20_000): Promise<void> {
    return startAgentIn(node, this.agentArgs(node), timeoutMs);
  }

  agentLog(node: ClusterNode): string {
    return agentLogTail(node.dir);
  }

  stopAgent(node: ClusterNode, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    return stopAgentOf(node, signal);
  }

  subnetOf(node: ClusterNode): string {
    const env = readFileSync(join(node.dir, 'subnet.env'), 'utf8');
    return /PODNET_SUBNET=(\S+)/.exec(env)![1];
  }

  /** A pod netns wired through the node's CNI client (bridge mode, addresses from the subnet file). */
  addPod(name: string, node: ClusterNode): ClusterPod {
    const ns = this.fixture.add(`p${name}`);
    const conf = {
      cniVersion: '1.0.0', name: 'cluster', type: 'podnet', bridge: 'cni0', isGateway: true, isDefaultGateway: true, ipMasq: true,
      ipam: { type: 'podnet-ipam', subnetFile: join(node.dir, 'subnet.env'), dataDir: join(node.dir, 'ipam') },
    };
    const out = execFileSync('ip', ['netns', 'exec', node.ns, join(node.dir, 'bin', 'podnet')], {
      env: { PATH: process.env.PATH, CNI_COMMAND: 'ADD', CNI_CONTAINERID: `pod-${name}`, CNI_NETNS: `/run/netns/${ns}`, CNI_IFNAME: 'eth0', CNI_PATH: join(node.dir, 'bin'), PODNET_CNI_LOG: join(node.dir, 'cni.log') },
      input: JSON.stringify(conf),
      encoding: 'utf8',
    });
    const res = JSON.parse(out) as { ips: { address: string }[] };
    const pod: ClusterPod = { name, ns, node, ip: res.ips[0].address.split('/')[0] };
    this.pods.set(name, pod);
    return pod;
  }

  ping(ns: string, dst: string, extra: string[] = []): boolean {
    return pingFrom(ns, dst, extra);
  }

  async cleanup(): Promise<void> {
    for (const n of this.nodes.values()) await this.stopAgent(n, 'SIGKILL').catch(() => {});
    this.fixture.cleanup();
    rmSync(this.tmp, { recursive: true, force: true });
  }
}
