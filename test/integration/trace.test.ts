// `podnet trace` in real labs: per backend (vxlan, tun, host-gw, bgp across racks with BIRD) the path
// between pods on one node, across nodes and from a node to a pod, hop by hop through the
// namespaces the lab built, with a real ping agreeing; then breakages made by hand, one at a time
// (a peer subnet's route deleted, a subnet withdrawn at the router, podnet-tund gone, a FAILED
// neighbour, a packet over the MTU), each named as the
// first broken hop with exit code 1 — and a ping failing there too.
import { labCli, labSuite, labTrace, ensureLabBundle, probe } from '../helpers/lab.js';
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TraceResult } from '../../src/trace/types.js';

const PODNET = new URL('../../dist/podnet.mjs', import.meta.url).pathname;
const suite = labSuite('pnlab-trace-test');
const LAB_DIR = suite.dir;

interface St {
  fabricNs: string;
  router?: { ns: string };
  nodes: Record<string, { ns: string; ip: string; subnetFile: string }>;
  pods: Record<string, { ns: string; ips: string[]; node: string }>;
}

const trace = (tag: string, args: string[]) => labTrace(LAB_DIR, tag, args);

const ping = (ns: string, ip: string) => spawnSync('ip', ['netns', 'exec', ns, 'ping', '-n', '-q', '-c1', '-W1', ip]).status === 0;

const LABS = [
  { backend: 'vxlan', args: ['--nodes', '2', '--backend', 'vxlan'], tunnel: 'vxlan' },
  { backend: 'tun', args: ['--nodes', '2', '--backend', 'tun'], tunnel: 'tun' },
  { backend: 'host-gw', args: ['--nodes', '2', '--backend', 'host-gw'], tunnel: undefined },
  { backend: 'bgp (2 racks, BIRD)', args: ['--nodes', '2', '--racks', '2', '--backend', 'bgp', '--router', 'bird'], tunnel: undefined, viaRouter: true, needs: '/usr/sbin/bird' },
];

for (const lab of LABS) {
  const skip = lab.needs && !existsSync(lab.needs) ? `${lab.needs} is not installed` : false;
  describe(`podnet trace: ${lab.backend}`, { skip, timeout: 180_000 }, () => {
    const tag = `t${randomBytes(3).toString('hex')}`;
    suite.register(tag);
    let st: St;
    const cli = (args: string[]) => {
      const r = labCli(LAB_DIR, [...args, '--name', tag]);
      assert.equal(r.code, 0, `lab ${args.join(' ')}: ${r.stderr}`);
    };
    before(() => {
      ensureLabBundle();
      cli(['up', ...lab.args]);
      cli(['pod', 'add', 'a', '--node', 'n1']);
      cli(['pod', 'add', 'c', '--node', 'n1']);
      cli(['pod', 'add', 'b', '--node', 'n2', '--serve', '80']);
      cli(['service', 'add', 'web', '--port', '80', '--pods', 'b']);
      st = JSON.parse(readFileSync(join(LAB_DIR, tag, 'state.json'), 'utf8')) as St;
    });

    it('across nodes: pod, its node, the underlay, the other node, the pod; a real ping agrees', () => {
      const t = trace(tag, ['a', 'b:8080']);
      assert.equal(t.code, 0, t.out + t.err);
      const r = t.r!;
      assert.equal(r.verdict, 'complete');
      assert.deepEqual([r.query.src, r.query.dst, r.query.proto, r.query.dport], [st.pods.a.ips[0], st.pods.b.ips[0], 'tcp', 8080]);
      const path = r.hops.map((h) => h.ns);
      assert.equal(path[0], st.pods.a.ns);
      assert.equal(path[path.length - 1], st.pods.b.ns);
      assert.ok(path.includes(st.nodes.n1.ns) && path.includes(st.nodes.n2.ns), path.join(' '));
      if (st.router) assert.ok(path.includes(st.router.ns), `across racks the path passes the router: ${path.join(' ')}`);
      const encap = r.hops.flatMap((h) => h.steps).filter((s) => s.kind === 'encap');
      if (lab.tunnel === 'vxlan') {
        assert.equal(encap.length, 1, 'one VXLAN encapsulation');
        assert.match(encap[0].text, new RegExp(`VTEP ${st.nodes.n2.ip.replace(/\./g, '\\.')}`));
        assert.ok(r.hops.some((h) => h.packet.outer?.dst === st.nodes.n2.ip && h.packet.outer.vni !== undefined));
      } else if (lab.tunnel === 'tun') {
        assert.equal(encap.length, 1, 'one podnet-tund encapsulation');
        assert.match(encap[0].text, new RegExp(`podnet-tund \\(PID \\d+\\) on podnet\\.tun: .* -> node ${st.nodes.n2.ip.replace(/\./g, '\\.')}`));
        assert.ok(r.hops.some((h) => h.packet.outer?.dst === st.nodes.n2.ip && h.packet.outer.dport === 8285));
        assert.ok(r.hops.flatMap((h) => h.steps).some((x) => x.kind === 'decap' && /podnet-tund .* takes it/.test(x.text)));
      } else assert.equal(encap.length, 0, 'routed: no encapsulation');
      assert.equal(r.hops[r.hops.length - 1].steps.at(-1)!.kind, 'deliver');
      assert.ok(ping(st.pods.a.ns, st.pods.b.ips[0]));
    });

    it('same node: pod, the node\'s bridge, the other pod — no underlay', () => {
      const t = trace(tag, ['a', 'c']);
      assert.equal(t.code, 0, t.out + t.err);
      assert.deepEqual(t.r!.hops.map((h) => h.ns), [st.pods.a.ns, st.nodes.n1.ns, st.pods.c.ns]);
      assert.ok(t.r!.hops[1].steps.some((s) => s.kind === 'bridge' && /FDB .* -> port/.test(s.text)), 'switched by the node\'s bridge');
      assert.equal(t.r!.query.proto, 'icmp');
    });

    it('node to pod on another node', () => {
      const t = trace(tag, ['n1', 'b']);
      assert.equal(t.code, 0, t.out + t.err);
      assert.equal(t.r!.hops[0].ns, st.nodes.n1.ns);
      assert.equal(t.r!.hops.at(-1)!.ns, st.pods.b.ns);
    });

    it('pod to outside the cluster (the node\'s default gateway): masqueraded on the node, delivered there; --verify and a ping agree', () => {
      const gw = (JSON.parse(execFileSync('ip', ['-n', st.nodes.n1.ns, '-j', 'route', 'show', 'default'], { encoding: 'utf8' })) as { gateway: string }[])[0].gateway;
      const t = trace(tag, ['a', gw, '--verify']);
      assert.equal(t.code, 0, t.out + t.err);
      const r = t.r!;
      assert.equal(r.verify?.agrees, true, JSON.stringify(r.verify, null, 1));
      const n1 = r.hops.find((h) => h.ns === st.nodes.n1.ns)!;
      assert.ok(n1.steps.some((x) => x.kind === 'netfilter' && /masquerade/i.test(x.text)), JSON.stringify(n1.steps.map((x) => x.text)));
      assert.equal(r.hops.at(-1)!.packet.src, st.nodes.n1.ip, 'the source is the node\'s address past the masquerade');
      assert.equal(r.hops.at(-1)!.steps.at(-1)!.kind, 'deliver');
      assert.ok(ping(st.pods.a.ns, gw));
    });

    it('--verify across nodes: a real packet, and the kernel agrees on every hop', () => {
      const t = trace(tag, ['a', 'b', '--verify']);
      assert.equal(t.code, 0, t.out + t.err);
      const v = t.r!.verify!;
      assert.equal(v.agrees, true, JSON.stringify(v, null, 1));
      assert.equal(v.hops.length, t.r!.hops.length);
      assert.ok(v.hops.every((h) => h.seen && h.agrees));
    });

    // (with bgp a stopped agent withdraws its subnet at once: the router test above)
    if (!lab.viaRouter) it("the destination node's agent not running: named on its hop, while the packet still passes on what it left in the kernel", () => {
      cli(['agent', 'stop', 'n2']);
      try {
        const t = trace(tag, ['a', 'b']);
        assert.equal(t.code, 0, t.out + t.err);
        const steps = t.r!.hops.filter((h) => h.ns === st.nodes.n2.ns).flatMap((h) => h.steps);
        const agent = steps.filter((x) => x.kind === 'agent');
        assert.equal(agent.length, 1, JSON.stringify(steps.map((x) => x.text)));
        assert.match(agent[0].text, /the agent of node n2 is not running/);
        assert.ok(!t.r!.hops.some((h) => h.ns !== st.nodes.n2.ns && h.steps.some((x) => x.kind === 'agent')), 'only n2 is named');
        assert.ok(ping(st.pods.a.ns, st.pods.b.ips[0]), 'the kernel still delivers');
      } finally {
        cli(['agent', 'start', 'n2']);
      }
    });

    it('the JSON is stable: the same path twice gives the same document', () => {
      const one = trace(tag, ['a', 'b:8080']);
      const two = trace(tag, ['a', 'b:8080']);
      assert.equal(one.code, 0, one.out);
      // neighbour entries age between two runs (REACHABLE, STALE, resolved or not): all else is equal
      const strip = (r: TraceResult) => JSON.stringify(r, (_k, v: unknown) => (v && typeof v === 'object' && (v as { kind?: string }).kind === 'neighbour' ? { kind: 'neighbour', ok: (v as { ok: boolean }).ok } : v));
      assert.equal(strip(two.r!), strip(one.r!));
      assert.deepEqual(Object.keys(one.r!).sort(), ['hops', 'query', 'verdict']);
      for (const h of one.r!.hops) for (const k of Object.keys(h)) assert.ok(['ns', 'role', 'in', 'out', 'packet', 'steps'].includes(k), k);
    });

    it('pod to a service IP: DNAT on the node to its endpoint, delivered; the kernel agrees and a TCP connection works', () => {
      const t = trace(tag, ['a', 'svc/web', '--verify', '--sport', '40123']);
      assert.equal(t.code, 0, t.out + t.err);
      const r = t.r!;
      const nat = r.hops.flatMap((h) => h.steps).filter((x) => x.kind === 'netfilter' && /DNAT|dnat/.test(x.text));
      assert.ok(nat.length >= 1, JSON.stringify(r.hops.map((h) => h.steps.map((x) => x.text))));
      assert.equal(r.hops.at(-1)!.ns, st.pods.b.ns);
      assert.equal(r.verify?.agrees, true, JSON.stringify(r.verify, null, 1));
      const svcIp = r.query.dst;
      const p = probe(st.pods.a.ns, 'tcp', svcIp, 80);
      assert.equal(p.code, 0, p.err);
      assert.match(p.out, /^b\b/);
    });

    it('--verify on one node and from a node: the kernel agrees', () => {
      for (const args of [['a', 'c'], ['n1', 'b']]) {
        const t = trace(tag, [...args, '--verify']);
        assert.equal(t.code, 0, `${args.join(' ')}: ${t.out}${t.err}`);
        assert.equal(t.r!.verify?.agrees, true, JSON.stringify(t.r!.verify, null, 1));
      }
    });

    it('the text output and the JSON say the same', () => {
      const text = spawnSync(process.execPath, [PODNET, 'trace', 'a', 'b', '--name', tag], { encoding: 'utf8', env: { ...process.env, PODNET_LAB_DIR: LAB_DIR } });
      assert.equal(text.status, 0, text.stderr);
      const r = trace(tag, ['a', 'b']).r!;
      assert.match(text.stdout, new RegExp(`complete: ${r.hops.length} hops`));
      for (const h of r.hops) assert.ok(text.stdout.includes(h.ns), h.ns);
    });

    // tun: the route for the whole cluster network into podnet.tun still carries the packet to
    // podnet-tund, whose peer table knows the subnet (its own breakage is tested below)
    if (!lab.viaRouter && lab.tunnel !== 'tun') {
      it("broken: n1's route to n2's pod subnet deleted — named at n1, exit 1, and a ping fails", async () => {
        const subnet = /PODNET_SUBNET=(\S+)/.exec(readFileSync(st.nodes.n2.subnetFile, 'utf8'))![1].replace(/\.\d+\//, '.0/');
        // the agent restores its routes within a resync (10 s): stop it so the breakage stays
        cli(['agent', 'stop', 'n1']);
        try {
          execFileSync('ip', ['-n', st.nodes.n1.ns, 'route', 'del', subnet]);
          const t = trace(tag, ['a', 'b']);
          assert.equal(t.code, 1, t.out + t.err);
          const r = t.r!;
          assert.equal(r.verdict, 'broken');
          assert.equal(r.hops[r.broken!.hop].ns, st.nodes.n1.ns);
          assert.match(r.broken!.reason, new RegExp(`no route for node n2's pod subnet ${subnet.replace(/\./g, '\\.')}`));
          assert.equal(r.broken!.command, `ip -n ${st.nodes.n1.ns} route show ${subnet}`);
          assert.equal(ping(st.pods.a.ns, st.pods.b.ips[0]), false, 'the kernel drops it too');
        } finally {
          cli(['agent', 'start', 'n1']);
        }
      });
    } else if (lab.viaRouter) {
      it("broken: n1's agent stopped, so the router forgot n1's pod subnet — named at the router, exit 1, and a ping fails", async () => {
        const subnet = /PODNET_SUBNET=(\S+)/.exec(readFileSync(st.nodes.n1.subnetFile, 'utf8'))![1].replace(/\.\d+\//, '.0/');
        cli(['agent', 'stop', 'n1']);
        try {
          const t0 = Date.now();
          while (JSON.parse(execFileSync('ip', ['-n', st.router!.ns, '-j', 'route', 'show', subnet], { encoding: 'utf8' })).length > 0) {
            assert.ok(Date.now() - t0 < 5000, `the router still routes ${subnet} 5 s after n1's agent stopped`);
            await new Promise((r) => setTimeout(r, 50));
          }
          const t = trace(tag, ['b', 'a']);
          assert.equal(t.code, 1, t.out + t.err);
          const r = t.r!;
          assert.equal(r.hops[r.broken!.hop].ns, st.router!.ns, t.out);
          assert.match(r.broken!.reason, new RegExp(`node n1's pod subnet ${subnet.replace(/\./g, '\\.')}, which the router learns over BGP from n1: n1's agent is not running`));
          assert.equal(ping(st.pods.b.ns, st.pods.a.ips[0]), false, 'the kernel drops it too');
        } finally {
          cli(['agent', 'start', 'n1']);
        }
      });
    }

    if (lab.tunnel === 'tun') {
      it("broken: a node's underlay address as the inner source — podnet-tund on the peer drops it (named), and so does the kernel path", () => {
        const t = trace(tag, [st.nodes.n1.ip, 'b']);
        assert.equal(t.code, 1, t.out + t.err);
        assert.equal(t.r!.hops[t.r!.broken!.hop].ns, st.nodes.n2.ns);
        assert.match(t.r!.broken!.reason, /inner source .* is outside the sender's subnets .*drop_inner_source/);
        assert.equal(spawnSync('ip', ['netns', 'exec', st.nodes.n1.ns, 'ping', '-n', '-q', '-c1', '-W1', '-I', st.nodes.n1.ip, st.pods.b.ips[0]]).status === 0, false);
        // named by the node, the source is the one the kernel picks (its podnet.tun address): complete
        assert.equal(trace(tag, ['n1', 'b']).code, 0);
      });

      it("broken: n2's podnet-tund gone (its agent stopped, the daemon killed) — named at n2's decapsulation, exit 1, and a ping fails", async () => {
        cli(['agent', 'stop', 'n2']);
        try {
          const pidFile = join(LAB_DIR, tag, 'nodes', 'n2', 'agent', 'tund', 'pid');
          const pid = Number(readFileSync(pidFile, 'utf8').trim());
          process.kill(pid, 'SIGTERM');
          const t0 = Date.now();
          while (existsSync(`/proc/${pid}`)) {
            assert.ok(Date.now() - t0 < 5000, `podnet-tund ${pid} still running 5 s after SIGTERM`);
            await new Promise((r) => setTimeout(r, 20));
          }
          const t = trace(tag, ['a', 'b']);
          assert.equal(t.code, 1, t.out + t.err);
          const r = t.r!;
          assert.equal(r.hops[r.broken!.hop].ns, st.nodes.n2.ns);
          assert.match(r.broken!.reason, /no podnet-tund listens on UDP 8285/);
          assert.equal(ping(st.pods.a.ns, st.pods.b.ips[0]), false, 'the kernel drops it too');
        } finally {
          cli(['agent', 'start', 'n2']);
        }
      });
    }

    it('broken: a route via a neighbour in FAILED', () => {
      // a next hop nobody owns: no ARP traffic refreshes its FAILED entry while the trace runs
      const gw = (JSON.parse(execFileSync('ip', ['-n', st.pods.a.ns, '-j', 'route', 'get', st.pods.b.ips[0]], { encoding: 'utf8' })) as { gateway: string }[])[0].gateway;
      const dead = gw.replace(/\.\d+$/, '.250');
      const b = `${st.pods.b.ips[0]}/32`;
      execFileSync('ip', ['-n', st.pods.a.ns, 'neigh', 'add', dead, 'dev', 'eth0', 'nud', 'failed']);
      execFileSync('ip', ['-n', st.pods.a.ns, 'route', 'add', b, 'via', dead, 'dev', 'eth0']);
      try {
        const t = trace(tag, ['a', 'b']);
        assert.equal(t.code, 1, t.out);
        assert.equal(t.r!.broken!.hop, 0);
        assert.match(t.r!.broken!.reason, new RegExp(`neighbour ${dead.replace(/\./g, '\\.')} on eth0 is FAILED`));
        assert.equal(t.r!.broken!.command, `ip -n ${st.pods.a.ns} neigh show ${dead} dev eth0`);
        assert.equal(ping(st.pods.a.ns, st.pods.b.ips[0]), false);
      } finally {
        spawnSync('ip', ['-n', st.pods.a.ns, 'route', 'del', b]);
        spawnSync('ip', ['-n', st.pods.a.ns, 'neigh', 'del', dead, 'dev', 'eth0']);
      }
    });

    it("broken: a packet larger than the pod's MTU (DF)", () => {
      const mtu = (JSON.parse(execFileSync('ip', ['-n', st.pods.a.ns, '-j', 'link', 'show', 'eth0'], { encoding: 'utf8' })) as { mtu: number }[])[0].mtu;
      const t = trace(tag, ['a', 'b', '--size', String(mtu + 1)]);
      assert.equal(t.code, 1, t.out);
      assert.match(t.r!.broken!.reason, new RegExp(`${mtu + 1}-byte packet does not fit eth0's MTU ${mtu}`));
      assert.equal(spawnSync('ip', ['netns', 'exec', st.pods.a.ns, 'ping', '-n', '-q', '-c1', '-W1', '-M', 'do', '-s', String(mtu + 1 - 28), st.pods.b.ips[0]]).status === 0, false);
    });

    it('bad usage exits 2 with one line', () => {
      const t = trace(tag, ['a', 'nosuchpod']);
      assert.equal(t.code, 2);
      assert.match(t.err, /nosuchpod is no pod or node/);
      assert.equal(trace(tag, ['a', 'b', '--port', '99999']).code, 2);
    });
  });
}
