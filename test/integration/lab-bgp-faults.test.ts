// What the bgp backend survives, with a real router (BIRD and FRR) across 2 racks: a node added
// (its subnet at the router and reachable from every pod within 2 s) and removed (withdrawn at
// the router and on the other nodes within 2 s); an agent killed with SIGKILL and restarted
// (graceful restart keeps its routes at the router, not one of the pings every 10 ms between
// pods of different racks is lost, the session is back within 5 s); the router killed and
// restarted (sessions back, routes announced again, pings recover within 5 s of its return).
import { labCli, labSuite, ensureLabBundle } from '../helpers/lab.js';
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { formatCidr, masked, parseCidr } from '../../src/util/ip.js';

interface Router {
  kind: 'bird' | 'frr';
  /** the binary that must exist for the suite to run */
  bin: string;
  /** the protocol of the routes the daemon installs in the router namespace's kernel */
  kernelProto: string;
  /** the daemon's own view of the BGP routes (its RIB), as its CLI prints it */
  ribArgv: string[];
}
const ROUTERS: Router[] = [
  { kind: 'bird', bin: '/usr/sbin/bird', kernelProto: 'bird', ribArgv: ['birdc', 'show', 'route'] },
  { kind: 'frr', bin: '/usr/lib/frr/bgpd', kernelProto: 'bgp', ribArgv: ['vtysh', '-c', 'show ip bgp'] },
];

interface St {
  router: { ns: string };
  nodes: Record<string, { ns: string; ip: string; rack: number; subnetFile: string; socket: string }>;
  pods: Record<string, { ns: string; ips: string[]; node: string }>;
}

const PODNET = new URL('../../dist/podnet.mjs', import.meta.url).pathname;
const suite = labSuite('pnlab-bgpf-test');
const LAB_DIR = suite.dir;

function v4Subnet(file: string): string {
  const c = /PODNET_SUBNET=(\S+)/.exec(readFileSync(file, 'utf8'))?.[1];
  assert.ok(c, `no PODNET_SUBNET in ${file}`);
  return formatCidr(masked(parseCidr(c)));
}

function routeDsts(ns: string, proto: string): Set<string> {
  const routes = JSON.parse(execFileSync('ip', ['-n', ns, '-4', '-j', 'route', 'show', 'proto', proto], { encoding: 'utf8' })) as { dst: string }[];
  return new Set(routes.map((r) => r.dst));
}

function pingOnce(ns: string, ip: string): boolean {
  return spawnSync('ip', ['netns', 'exec', ns, 'ping', '-n', '-q', '-c1', '-W1', ip]).status === 0;
}

/** Polls `check` every 20 ms until it holds; the milliseconds it took, or a failure naming `what` after `ms`. */
async function within(ms: number, what: string, check: () => boolean): Promise<number> {
  const t0 = Date.now();
  for (;;) {
    if (check()) return Date.now() - t0;
    if (Date.now() - t0 > ms) assert.fail(`${what}: not within ${ms} ms`);
    await sleep(20);
  }
}

/** A ping every 10 ms running in the background; stop() ends it with SIGINT and reads its summary. */
function continuousPing(ns: string, ip: string): { stop(): Promise<{ sent: number; received: number; out: string }> } {
  const p: ChildProcess = spawn('ip', ['netns', 'exec', ns, 'ping', '-n', '-q', '-i', '0.01', '-w', '120', ip], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout!.on('data', (d) => (out += d));
  p.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<void>((res) => p.once('exit', () => res()));
  return {
    async stop() {
      p.kill('SIGINT');
      await exited;
      const m = /(\d+) packets transmitted, (\d+) received/.exec(out);
      assert.ok(m, `no ping summary: ${out}`);
      return { sent: Number(m[1]), received: Number(m[2]), out };
    },
  };
}

for (const router of ROUTERS) {
  const skip = existsSync(router.bin) ? false : `${router.kind} is not installed (${router.bin})`;
  describe(`bgp faults across 2 racks with ${router.kind}`, { skip, timeout: 300_000 }, () => {
    const tag = `f${router.kind[0]}${process.pid.toString(36)}${randomBytes(2).toString('hex')}`;
    suite.register(tag);
    const cli = (args: string[]) => {
      const r = labCli(LAB_DIR, [...args, '--name', tag], { timeoutMs: 240_000 });
      assert.equal(r.code, 0, `lab ${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    };
    const state = (): St => JSON.parse(readFileSync(join(LAB_DIR, tag, 'state.json'), 'utf8'));
    const sessions = (): Record<string, string> => {
      const r = labCli(LAB_DIR, ['router', 'sessions', '--name', tag, '-o', 'json']);
      if (r.code !== 0 && r.code !== 3) return {};
      return Object.fromEntries((JSON.parse(r.stdout) as { node: string; state: string }[]).map((x) => [x.node, x.state]));
    };
    const rib = (): string => labCli(LAB_DIR, ['exec', 'router', '--name', tag, '--', ...router.ribArgv]).stdout;
    let st: St;

    before(async () => {
      ensureLabBundle();
      cli(['up', '--nodes', '4', '--racks', '2', '--backend', 'bgp', '--router', router.kind]);
      for (let i = 1; i <= 4; i++) cli(['pod', 'add', `a${i}`, '--node', `n${i}`]);
      st = state();
      await within(10_000, 'every session Established after lab up', () => Object.values(sessions()).filter((s) => s === 'Established').length === 4);
    });

    it('a node added: its subnet at the router and on every node when node add returns, reachable from every pod within 2 s; removed: withdrawn everywhere within 2 s', async () => {
      const before = new Set(Object.keys(state().nodes));
      const t0 = Date.now();
      cli(['node', 'add']);
      const took = Date.now() - t0;
      const now = state();
      const name = Object.keys(now.nodes).find((n) => !before.has(n))!;
      const node = now.nodes[name];
      const subnet = v4Subnet(node.subnetFile);
      // node add returns once the routes have converged (src/lab/convergence.ts): nothing to wait for
      assert.ok(routeDsts(now.router.ns, router.kernelProto).has(subnet), `${name}'s ${subnet} in the router's kernel table when node add returns`);
      for (const [other, n] of Object.entries(st.nodes)) assert.ok(routeDsts(n.ns, '80').has(subnet), `${name}'s ${subnet} on ${other} when node add returns`);
      cli(['pod', 'add', 'a5', '--node', name]);
      const pod = state().pods.a5;
      const others = Object.values(now.pods);
      const reached = await within(2000, `${pod.ips[0]} (pod a5 on ${name}) from every pod`, () => others.every((o) => pingOnce(o.ns, pod.ips[0])));
      console.log(`node ${name} (rack ${node.rack}): node add took ${took} ms (agent start, lease, routes at the router and every node), a5 reached from every pod after ${reached} ms`);

      cli(['node', 'del', name]);
      const gone = await within(2000, `${subnet} withdrawn at the router and on every other node`, () =>
        !routeDsts(now.router.ns, router.kernelProto).has(subnet) && Object.values(now.nodes).filter((n) => n !== node).every((n) => !routeDsts(n.ns, '80').has(subnet)),
      );
      console.log(`node ${name} removed: ${subnet} withdrawn everywhere after ${gone} ms`);
      assert.equal(sessions()[name], undefined, 'the router has no neighbour for the removed node');
    });

    it('agent kill -9 and restart: its routes stay at the router, no ping between racks is lost, the session is back within 5 s', async () => {
      const [src, dst] = [st.pods.a1, st.pods.a2];
      assert.notEqual(st.nodes[src.node].rack, st.nodes[dst.node].rack, 'the pods are on different racks');
      const subnet = v4Subnet(st.nodes.n2.subnetFile);
      const ping = continuousPing(src.ns, dst.ips[0]);
      await sleep(300);
      cli(['agent', 'stop', '--kill', 'n2']);
      // the router noticed (the kernel closed the agent's socket) and keeps the routes as stale
      await within(5000, "the router's session with n2 down", () => sessions().n2 !== 'Established');
      assert.ok(routeDsts(st.router.ns, router.kernelProto).has(subnet), `${subnet} kept at the router while n2's agent is down (graceful restart)`);
      await sleep(500);
      cli(['agent', 'start', 'n2']);
      const back = await within(5000, "n2's session Established again (router's and agent's view)", () =>
        sessions().n2 === 'Established' &&
        spawnSync('ip', ['netns', 'exec', st.nodes.n2.ns, process.execPath, PODNET, 'bgp', 'status', '--socket', st.nodes.n2.socket]).status === 0,
      );
      await sleep(500);
      const r = await ping.stop();
      console.log(`agent of n2 killed and restarted: session back after ${back} ms; pings every 10 ms a1 -> a2: ${r.received}/${r.sent}`);
      assert.ok(r.sent > 100, r.out);
      assert.equal(r.sent - r.received, 0, `lost pings: ${r.out}`);
      assert.ok(routeDsts(st.router.ns, router.kernelProto).has(subnet));
    });

    it('router kill -9 and restart: sessions come back, routes are announced again, pings recover within 5 s', async () => {
      const [src, dst] = [st.pods.a1, st.pods.a2];
      const ping = continuousPing(src.ns, dst.ips[0]);
      await sleep(300);
      cli(['router', 'stop', '--kill']);
      await sleep(1000);
      cli(['router', 'start']);
      const recovered = await within(5000, 'a1 -> a2 after the router is back', () => pingOnce(src.ns, dst.ips[0]));
      const up = await within(10_000, 'every session Established after the router restart', () => Object.values(sessions()).filter((s) => s === 'Established').length === 4);
      const subnets = Object.values(st.nodes).map((n) => v4Subnet(n.subnetFile));
      const announced = await within(5000, "every node's subnet in the router's RIB again", () => {
        const t = rib();
        return subnets.every((s) => t.includes(s));
      });
      assert.deepEqual([...routeDsts(st.router.ns, router.kernelProto)].sort(), [...subnets].sort());
      const r = await ping.stop();
      console.log(`router killed and restarted: pings recovered after ${recovered} ms, sessions after ${up} ms, routes in its RIB after ${announced} ms more; pings every 10 ms a1 -> a2 through it all: ${r.received}/${r.sent}`);
      for (const o of Object.values(st.pods)) for (const p of Object.values(st.pods)) if (o !== p) assert.ok(pingOnce(o.ns, p.ips[0]), `${o.node} -> ${p.ips[0]}`);
    });
  });
}
