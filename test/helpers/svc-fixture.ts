// A one-node service datapath for proxy engine tests: a "node" netns with a bridge (pods) and a
// routed link to a "client" netns (outside the cluster network), socat servers in the pods that
// answer with their name, and a probe that runs in any of the namespaces.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { NetnsFixture, nsExec, sh } from './netns.js';

export const CLUSTER_CIDR = '10.200.0.0/16';
export const NODE_IP = '10.201.0.1';
export const CLIENT_IP = '10.201.0.2';
export const NODE_IP6 = 'fd00:201::1';
export const CLIENT_IP6 = 'fd00:201::2';
export const CLUSTER_CIDR6 = 'fd00:200::/56';
const PROBE = fileURLToPath(new URL('./probe.mjs', import.meta.url));

export interface Pod {
  name: string;
  ns: string;
  ip: string;
  ip6: string;
}

export class SvcFixture {
  readonly nets = new NetnsFixture();
  readonly procs: ChildProcess[] = [];
  node = '';
  client = '';
  pods: Pod[] = [];

  build(podNames: string[]): void {
    this.node = this.nets.add('node');
    this.client = this.nets.add('client');
    const n = this.node;
    nsExec(n, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    // a MAC of its own, so that pods added later cannot change it (see TestCluster)
    nsExec(n, ['ip', 'link', 'add', 'name', 'br0', 'address', '02:00:00:c8:01:01', 'type', 'bridge']);
    nsExec(n, ['ip', 'addr', 'add', '10.200.1.1/24', 'dev', 'br0']);
    nsExec(n, ['sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1']);
    nsExec(n, ['ip', 'addr', 'add', 'fd00:200::1/64', 'dev', 'br0', 'nodad']);
    nsExec(n, ['ip', 'link', 'set', 'br0', 'up']);
    sh('ip', ['link', 'add', 'name', 'pnsvcc0', 'netns', n, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', this.client]);
    nsExec(n, ['ip', 'addr', 'add', `${NODE_IP}/24`, 'dev', 'pnsvcc0']);
    nsExec(n, ['ip', 'addr', 'add', `${NODE_IP6}/64`, 'dev', 'pnsvcc0', 'nodad']);
    nsExec(n, ['ip', 'link', 'set', 'pnsvcc0', 'up']);
    nsExec(this.client, ['ip', 'addr', 'add', `${CLIENT_IP}/24`, 'dev', 'eth0']);
    nsExec(this.client, ['ip', 'addr', 'add', `${CLIENT_IP6}/64`, 'dev', 'eth0', 'nodad']);
    nsExec(this.client, ['ip', 'link', 'set', 'eth0', 'up']);
    nsExec(this.client, ['ip', 'route', 'add', 'default', 'via', NODE_IP]);
    nsExec(this.client, ['ip', '-6', 'route', 'add', 'default', 'via', NODE_IP6]);
    // like any node, this one has a default route: locally originated traffic to a cluster IP must route before DNAT
    nsExec(n, ['ip', 'route', 'add', 'default', 'via', CLIENT_IP]);
    nsExec(n, ['ip', '-6', 'route', 'add', 'default', 'via', CLIENT_IP6]);
    podNames.forEach((name, i) => {
      const ns = this.nets.add(`pod${name}`);
      const ip = `10.200.1.${i + 2}`;
      const ip6 = `fd00:200::${i + 2}`;
      const host = `pnsvp${i}`;
      sh('ip', ['link', 'add', 'name', host, 'netns', n, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      nsExec(n, ['ip', 'link', 'set', host, 'master', 'br0', 'up']);
      // as podnet's bridge conflists do (hairpinMode): with br_netfilter a pod's DNAT back to itself is bridged out its own port
      nsExec(n, ['ip', 'link', 'set', host, 'type', 'bridge_slave', 'hairpin', 'on']);
      nsExec(ns, ['ip', 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
      nsExec(ns, ['ip', 'link', 'set', 'eth0', 'up']);
      nsExec(ns, ['ip', 'route', 'add', 'default', 'via', '10.200.1.1']);
      nsExec(ns, ['ip', 'addr', 'add', `${ip6}/64`, 'dev', 'eth0', 'nodad']);
      nsExec(ns, ['ip', '-6', 'route', 'add', 'default', 'via', 'fd00:200::1']);
      this.pods.push({ name, ns, ip, ip6 });
    });
  }

  /** socat servers in a pod: TCP and UDP answering with the pod's name (or, with peer, the client's address). */
  async serve(pod: Pod, o: { tcp?: number; tcp6?: number; udp?: number; peer?: boolean }): Promise<void> {
    const reply = o.peer ? 'SYSTEM:echo $SOCAT_PEERADDR' : `SYSTEM:echo ${pod.name}`;
    if (o.tcp) this.spawnIn(pod.ns, ['socat', `TCP-LISTEN:${o.tcp},fork,reuseaddr`, reply]);
    if (o.tcp6) this.spawnIn(pod.ns, ['socat', `TCP6-LISTEN:${o.tcp6},fork,reuseaddr,ipv6only=1`, reply]);
    if (o.udp) this.spawnIn(pod.ns, ['socat', `UDP-RECVFROM:${o.udp},fork,reuseaddr`, reply]);
    for (let i = 0; i < 100; i++) {
      const ss = nsExec(pod.ns, ['ss', '-Hlntu'], { allowFail: true });
      if ((!o.tcp || ss.includes(`:${o.tcp} `)) && (!o.tcp6 || ss.includes(`:${o.tcp6} `)) && (!o.udp || ss.includes(`:${o.udp} `))) return;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`servers in ${pod.name} did not start`);
  }

  private spawnIn(ns: string, argv: string[]): void {
    const c = spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: 'ignore' });
    this.procs.push(c);
  }

  cleanup(): void {
    for (const p of this.procs) if (p.exitCode === null) p.kill('SIGKILL');
    this.procs.length = 0;
    this.nets.cleanup();
  }
}

export interface ProbeResult {
  answers: Record<string, number>;
  errors: Record<string, number>;
  ms: number[];
  /** the answer (or error code) of each try, in order */
  seq: string[];
}

/** Runs the probe inside `ns` (async, so several can run at once). */
export function probe(ns: string, proto: 'tcp' | 'udp' | 'udp-fresh', host: string, port: number, count = 1, timeoutMs = 2000, srcPort?: number, intervalMs?: number): Promise<ProbeResult> {
  return new Promise((resolve, reject) => {
    const args = ['netns', 'exec', ns, process.execPath, PROBE, proto, host, String(port), String(count), String(timeoutMs), String(srcPort ?? 0), String(intervalMs ?? 0)];
    const c = spawn('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.on('data', (d) => (out += d));
    c.stderr.on('data', (d) => (err += d));
    c.on('close', (code) => {
      if (code !== 0) return reject(new Error(`probe ${args.join(' ')}: exit ${code}: ${err}`));
      resolve(JSON.parse(out) as ProbeResult);
    });
  });
}
