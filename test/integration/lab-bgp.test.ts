// The bgp backend across racks with a real router: 4 nodes in 2 racks, BIRD or FRR in the router
// namespace with every node as an eBGP neighbour. Every pod reaches every pod (v4 and v6), the
// router holds exactly each node's pod subnets via that node, nodes of one rack route to each
// other directly, and pod packets cross the router unencapsulated. The same suite runs for each
// router daemon that is installed.
import { labCli, ensureLabBundle } from '../helpers/lab.js';
import { netnsWithPrefix } from '../helpers/netns.js';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatCidr, masked, parseCidr } from '../../src/util/ip.js';

const LAB_DIR = mkdtempSync(join(tmpdir(), 'pnlab-bgp-test-'));
const PODNET = new URL('../../dist/podnet.mjs', import.meta.url).pathname;
const cli = (args: string[]) => labCli(LAB_DIR, args, { timeoutMs: 240_000 });

interface Router {
  kind: 'bird' | 'frr';
  /** the daemon's binaries: the suite is skipped when one is missing */
  bins: string[];
  /** the Debian package that has them */
  pkg: string;
  /** the protocol of the routes the daemon installs in the router namespace's kernel */
  kernelProto: string;
  /** each node's session state as the daemon's own CLI shows it (through `lab exec router`), by node name */
  sessions(st: St): Record<string, string>;
}

const ROUTERS: Router[] = [
  {
    kind: 'bird',
    bins: ['/usr/sbin/bird', '/usr/sbin/birdc'],
    pkg: 'bird2',
    kernelProto: 'bird',
    sessions(st) {
      const r = cli(['exec', 'router', '--name', tag(this), '--', 'birdc', 'show', 'protocols']);
      assert.equal(r.code, 0, r.stderr);
      const res: Record<string, string> = {};
      for (const n of Object.keys(st.nodes)) res[n] = new RegExp(`node_${n}\\s+BGP.*Established`).test(r.stdout) ? 'Established' : r.stdout;
      return res;
    },
  },
  {
    kind: 'frr',
    bins: ['/usr/lib/frr/zebra', '/usr/lib/frr/bgpd', '/usr/bin/vtysh'],
    pkg: 'frr',
    kernelProto: 'bgp',
    sessions(st) {
      const r = cli(['exec', 'router', '--name', tag(this), '--', 'vtysh', '-c', 'show bgp summary json']);
      assert.equal(r.code, 0, r.stderr);
      const sum = JSON.parse(r.stdout) as Record<string, { peers: Record<string, { state: string }> }>;
      const res: Record<string, string> = {};
      for (const [n, node] of Object.entries(st.nodes)) {
        // the session carries both families: Established in each
        const states = ['ipv4Unicast', 'ipv6Unicast'].map((af) => sum[af]?.peers?.[node.ip]?.state ?? `no ${af} peer`);
        res[n] = states.every((x) => x === 'Established') ? 'Established' : states.join('/');
      }
      return res;
    },
  },
];

const TAGS = new Map<string, string>(ROUTERS.map((r) => [r.kind, `b${r.kind[0]}${process.pid.toString(36)}${randomBytes(2).toString('hex')}`]));
function tag(r: Pick<Router, 'kind'>): string {
  return TAGS.get(r.kind)!;
}

interface St {
  dir: string;
  router: { ns: string };
  nodes: Record<string, { ns: string; ip: string; ip6?: string; rack: number; subnetFile: string; dir: string; socket: string }>;
  pods: Record<string, { ns: string; ips: string[]; node: string }>;
}

after(() => {
  rmSync(LAB_DIR, { recursive: true, force: true });
});

function subnets(file: string): string[] {
  const env = readFileSync(file, 'utf8');
  return [/PODNET_SUBNET=(\S+)/, /PODNET_IPV6_SUBNET=(\S+)/].map((re) => re.exec(env)?.[1]).filter((x): x is string => !!x)
    .map((c) => formatCidr(masked(parseCidr(c))));
}

for (const router of ROUTERS) {
  const missing = router.bins.find((b) => !existsSync(b));
  const skip = missing ? `${router.kind} is not installed (${missing}; apt-get install ${router.pkg})` : false;
  if (skip) console.log(`# skipping the ${router.kind} suite: ${skip}`);
  const TAG = tag(router);
  describe(`bgp across 2 racks with ${router.kind}`, { skip, timeout: 300_000 }, () => {
    let st: St;
    before(() => {
      ensureLabBundle();
      const r = cli(['up', '--name', TAG, '--nodes', '4', '--racks', '2', '--backend', 'bgp', '--router', router.kind, '--ipv6-network', 'fd00:10:244::/56']);
      assert.equal(r.code, 0, r.stderr);
      for (let i = 1; i <= 4; i++) {
        const p = cli(['pod', 'add', `a${i}`, '--node', `n${i}`, '--name', TAG]);
        assert.equal(p.code, 0, p.stderr);
      }
      st = JSON.parse(readFileSync(join(LAB_DIR, TAG, 'state.json'), 'utf8'));
      // lab up returns once the routes have converged (src/lab/convergence.ts): every node has a
      // route (proto 80) for every other node's subnets of both families, with nothing to wait for
      const missing: string[] = [];
      for (const n of Object.values(st.nodes)) {
        const have = new Set<string>();
        for (const fam of ['-4', '-6']) for (const r of JSON.parse(execFileSync('ip', ['-n', n.ns, fam, '-j', 'route', 'show', 'proto', '80'], { encoding: 'utf8' })) as { dst: string }[]) have.add(r.dst);
        for (const m of Object.values(st.nodes)) if (m !== n) for (const c of subnets(m.subnetFile)) if (!have.has(c)) missing.push(`${n.ns}: ${c}`);
      }
      assert.deepEqual(missing, [], 'every route in place when lab up returned');
    });

    after(() => {
      if (existsSync(join(LAB_DIR, TAG))) cli(['down', '--name', TAG]);
      for (const ns of netnsWithPrefix(`pnlab-${TAG}-`)) spawnSync('ip', ['netns', 'del', ns]);
    });

    it('the nodes are spread over the racks and every session with the router is Established', async () => {
      assert.deepEqual(Object.values(st.nodes).map((n) => n.rack).sort(), [1, 1, 2, 2]);
      // the agents connect within a second of lab up; the router's view may lag a little
      let got: Record<string, string> = {};
      for (let i = 0; i < 50; i++) {
        got = router.sessions(st);
        if (Object.values(got).every((x) => x === 'Established')) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.deepEqual(got, Object.fromEntries(Object.keys(st.nodes).map((n) => [n, 'Established'])));
    });

    it('every pod reaches every pod, v4 and v6', () => {
      const failed: string[] = [];
      for (const a of Object.values(st.pods)) {
        for (const b of Object.values(st.pods)) {
          if (a === b) continue;
          for (const ip of b.ips) {
            const p = spawnSync('ip', ['netns', 'exec', a.ns, 'ping', '-n', '-q', '-c1', '-W2', ip]);
            if (p.status !== 0) failed.push(`${a.node} -> ${ip}`);
          }
        }
      }
      assert.deepEqual(failed, []);
      assert.equal(Object.values(st.pods).every((p) => p.ips.length === 2), true, 'dual-stack pods');
    });

    it("the router's table holds each node's pod subnets via that node, and nothing else from BGP", () => {
      const want = new Set<string>();
      for (const n of Object.values(st.nodes)) {
        const [v4, v6] = subnets(n.subnetFile);
        want.add(`${v4} via ${n.ip}`);
        if (v6) want.add(`${v6} via ${n.ip6}`);
      }
      const got = new Set<string>();
      for (const fam of ['-4', '-6']) {
        const routes = JSON.parse(execFileSync('ip', ['-n', st.router.ns, fam, '-j', 'route', 'show', 'proto', router.kernelProto], { encoding: 'utf8' })) as { dst: string; gateway: string }[];
        for (const r of routes) got.add(`${r.dst} via ${r.gateway}`);
      }
      assert.deepEqual([...got].sort(), [...want].sort());
    });

    it('nodes of one rack route to each other directly; the other rack via the router', () => {
      const n1 = st.nodes.n1;
      const routes = JSON.parse(execFileSync('ip', ['-n', n1.ns, '-j', 'route', 'show', 'proto', '80'], { encoding: 'utf8' })) as { dst: string; gateway: string }[];
      const via = new Map(routes.map((r) => [r.dst, r.gateway]));
      assert.equal(via.get(subnets(st.nodes.n3.subnetFile)[0]), st.nodes.n3.ip, JSON.stringify(routes));
      const rackRouter = (JSON.parse(execFileSync('ip', ['-n', n1.ns, '-j', 'route', 'show', 'default'], { encoding: 'utf8' })) as { gateway: string }[])[0].gateway;
      assert.equal(via.get(subnets(st.nodes.n2.subnetFile)[0]), rackRouter);
    });

    it("podnet status on a node: the router's session and every other node's routes; a route deleted by hand is named, exit 1", () => {
      const n1 = st.nodes.n1;
      const status = () => {
        const r = spawnSync('ip', ['netns', 'exec', n1.ns, process.execPath, PODNET, 'status', '-o', 'json', '--config', join(st.dir, 'net-conf.json'), '--store', `file:${join(st.dir, 'store')}`,
          '--iface', 'eth0', '--public-ip', n1.ip, '--node-name', 'n1', '--subnet-file', n1.subnetFile, '--socket', n1.socket, '--data-dir', join(n1.dir, 'agent'), '--ipam-data-dir', join(n1.dir, 'ipam')], { encoding: 'utf8', timeout: 30_000 });
        return { code: r.status, st: JSON.parse(r.stdout || '{}') as { bgp?: { peers: { address: string; state: string }[] }; peers: { nodeName?: string; state: string; objects: { what: string; state: string }[] }[]; problems: { section: string; message: string }[] }, raw: r.stdout + r.stderr };
      };
      const ok = status();
      assert.equal(ok.code, 0, ok.raw);
      assert.deepEqual(ok.st.bgp?.peers.map((p) => p.state), ['Established']);
      assert.deepEqual(ok.st.peers.map((p) => [p.nodeName, p.state]), [['n2', 'programmed'], ['n3', 'programmed'], ['n4', 'programmed']]);
      // the agent's resync may put the route back between the deletion and status (a 10 s timer): then delete it again
      const n2v4 = subnets(st.nodes.n2.subnetFile)[0];
      const present = () => execFileSync('ip', ['-n', n1.ns, 'route', 'show', n2v4, 'proto', '80'], { encoding: 'utf8' }).trim() !== '';
      let broken: ReturnType<typeof status> | undefined;
      for (let attempt = 0; attempt < 3 && !broken; attempt++) {
        execFileSync('ip', ['-n', n1.ns, 'route', 'del', n2v4]);
        const r = status();
        if (!present()) broken = r;
      }
      assert.ok(broken, 'the route stayed deleted while status ran');
      assert.equal(broken.code, 1, broken.raw);
      assert.deepEqual(broken.st.peers.find((p) => p.nodeName === 'n2')?.state, 'not-programmed');
      assert.ok(broken.st.problems.some((p) => p.section === 'peers' && p.message.includes(n2v4) && /missing/.test(p.message)), JSON.stringify(broken.st.problems));
    });

    it('pod packets cross the router unencapsulated', async () => {
      const dst = st.pods.a2.ips[0];
      const td = spawn('ip', ['netns', 'exec', st.router.ns, 'timeout', '8', 'tcpdump', '-l', '-n', '-i', 'any', '-c', '4', 'ip', 'and', 'host', dst], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      td.stdout.on('data', (d) => (out += d));
      td.stderr.on('data', (d) => (err += d));
      const listening = new Promise<void>((res) => td.stderr.on('data', () => /listening on/.test(err) && res()));
      await Promise.race([listening, new Promise((r) => setTimeout(r, 5000))]);
      spawnSync('ip', ['netns', 'exec', st.pods.a1.ns, 'ping', '-n', '-q', '-c3', '-i', '0.2', '-W2', dst]);
      await new Promise((r) => td.once('exit', r));
      assert.match(out, new RegExp(`${st.pods.a1.ips[0].replace(/\./g, '\\.')} > ${dst.replace(/\./g, '\\.')}: ICMP echo request`), out + err);
      assert.doesNotMatch(out, /UDP|VXLAN|ipip/i, out);
    });
  });
}
