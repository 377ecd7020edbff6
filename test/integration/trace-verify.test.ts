// `podnet trace --verify` in a real vxlan lab: a real packet of the query's 5-tuple, traced by the
// kernel (nftrace in a short-lived table of podnet's own per namespace), checked hop by hop against
// the explanation. Across nodes (ICMP and a TCP SYN from the fixed source port, through the VXLAN
// tunnel), to a service's cluster IP (DNAT on the node) and on one node every hop agrees; a drop rule the kernel applies shows as a disagreement
// (or, where the explanation already names it, as a break the kernel agrees with); a deleted peer
// route is a break past which the destination never sees the packet. After every run, and after a
// run interrupted by SIGINT while its tables exist, no podnet-trace table is left in any of the
// lab's namespaces and no `nft monitor` runs in them.
import { labCli, labSuite, labTrace, ensureLabBundle } from '../helpers/lab.js';
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { TraceResult } from '../../src/trace/types.js';

const PODNET = new URL('../../dist/podnet.mjs', import.meta.url).pathname;
const suite = labSuite('pnlab-vfy-test');
const LAB_DIR = suite.dir;
const tag = `v${randomBytes(3).toString('hex')}`;
suite.register(tag);
const env = { ...process.env, PODNET_LAB_DIR: LAB_DIR };

interface St {
  fabricNs: string;
  nodes: Record<string, { ns: string; ip: string; subnetFile: string }>;
  pods: Record<string, { ns: string; ips: string[]; node: string }>;
}
let st: St;

const cli = (args: string[]) => {
  const r = labCli(LAB_DIR, [...args, '--name', tag]);
  assert.equal(r.code, 0, `lab ${args.join(' ')}: ${r.stderr}`);
};

const trace = (args: string[]) => labTrace(LAB_DIR, tag, args, 30_000);

const labNamespaces = () => [st.fabricNs, ...Object.values(st.nodes).map((n) => n.ns), ...Object.values(st.pods).map((p) => p.ns)];

/** What a verify may have left behind: podnet-trace tables, and `nft monitor` or sender processes in the lab's namespaces. */
function leftovers(): string[] {
  const found: string[] = [];
  const inodes = new Map<number, string>();
  for (const ns of labNamespaces()) {
    const tables = execFileSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'tables'], { encoding: 'utf8' });
    for (const t of tables.split('\n').filter((l) => l.includes('podnet-trace'))) found.push(`${ns}: ${t}`);
    inodes.set(statSync(`/run/netns/${ns}`).ino, ns);
  }
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
      // the monitors, and the packet's sender (ping, or node with the sender script, which says "podnet trace --verify")
      if (!/\bnft\b.*\bmonitor\b|^ping -n -c1 -W1 -M do |podnet trace --verify/.test(cmd)) continue;
      const ns = inodes.get(statSync(`/proc/${pid}/ns/net`).ino);
      if (ns) found.push(`PID ${pid} (${cmd.trim()}) in ${ns}`);
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

/** The verify of a complete path: one entry per hop, each seen and agreeing. */
function assertAgrees(t: ReturnType<typeof trace>): TraceResult {
  assert.equal(t.code, 0, t.out + t.err);
  const r = t.r!;
  assert.equal(r.verdict, 'complete');
  assert.ok(r.verify, 'a verify result');
  assert.deepEqual(r.verify.hops.map((h) => [h.hop, h.ns]), r.hops.map((h, i) => [i, h.ns]));
  for (const h of r.verify.hops) {
    assert.ok(h.seen && h.agrees, `hop ${h.hop + 1} (${h.ns}): ${h.detail}`);
    assert.match(h.detail, /^kernel agrees/);
  }
  assert.equal(r.verify.agrees, true);
  assert.deepEqual(leftovers(), []);
  return r;
}

describe('podnet trace --verify: vxlan, 2 nodes', { timeout: 120_000 }, () => {
  before(() => {
    ensureLabBundle();
    cli(['up', '--nodes', '2', '--backend', 'vxlan']);
    cli(['pod', 'add', 'a', '--node', 'n1', '--serve', '80']);
    cli(['pod', 'add', 'c', '--node', 'n1', '--serve', '80']);
    cli(['pod', 'add', 'b', '--node', 'n2', '--serve', '80']);
    st = JSON.parse(readFileSync(join(LAB_DIR, tag, 'state.json'), 'utf8')) as St;
  });

  it('across nodes (ICMP): every hop agrees, through the tunnel and the fabric', () => {
    const r = assertAgrees(trace(['a', 'b', '--verify']));
    const tunnel = r.hops.map((h, i) => ({ h, v: r.verify!.hops[i] })).filter(({ h }) => h.packet.outer);
    assert.ok(tunnel.length >= 2, 'hops with the outer packet');
    // the fabric only switches the outer packet: the bridge ports it came in and left on
    const fab = r.verify!.hops.find((h) => h.ns === st.fabricNs)!;
    assert.match(fab.detail, /in on v-n1, out v-n2/);
    const last = r.verify!.hops.at(-1)!;
    assert.equal(last.ns, st.pods.b.ns);
    assert.match(last.detail, /delivered locally/);
  });

  it('across nodes (TCP SYN to b:80 from source port 40000): every hop agrees', () => {
    const r = assertAgrees(trace(['a', 'b:80', '--proto', 'tcp', '--verify']));
    assert.deepEqual([r.query.proto, r.query.sport, r.query.dport], ['tcp', 40000, 80]);
    // the same again: the fixed source port is free again (the connection was reset, no TIME_WAIT)
    assertAgrees(trace(['a', 'b:80', '--proto', 'tcp', '--verify']));
  });

  it('same node: pod, the bridge, the other pod agree', () => {
    const r = assertAgrees(trace(['a', 'c', '--verify']));
    assert.deepEqual(r.hops.map((h) => h.ns), [st.pods.a.ns, st.nodes.n1.ns, st.pods.c.ns]);
  });

  it('to a service (DNAT on n1): the packet is followed under its translated address, every hop agrees', async () => {
    cli(['service', 'add', 'web', '--port', '80', '--pods', 'b']);
    const status = labCli(LAB_DIR, ['status', '--name', tag, '-o', 'json']);
    assert.equal(status.code, 0, status.stderr);
    const vip = (JSON.parse(status.stdout) as { services: { name: string; clusterIP: string }[] }).services.find((x) => x.name === 'web')!.clusterIP;
    // the agents' proxies program the service asynchronously: until n1's ruleset has the cluster IP
    const t0 = Date.now();
    while (!execFileSync('ip', ['netns', 'exec', st.nodes.n1.ns, 'nft', 'list', 'table', 'inet', 'podnet-proxy'], { encoding: 'utf8' }).includes(vip)) {
      assert.ok(Date.now() - t0 < 10_000, `n1's proxy did not program ${vip} within 10 s`);
      await new Promise((res) => setTimeout(res, 50));
    }
    // a source port of its own: a:40000 -> b:80 of the tests before is still in conntrack (CLOSE), and a
    // DNAT onto that tuple makes n1 move the source port (a clash --verify names as translated)
    const r = assertAgrees(trace(['a', `${vip}:80`, '--sport', '40080', '--verify']));
    assert.equal(r.hops.at(-1)!.ns, st.pods.b.ns);
    assert.ok(r.hops.some((h) => h.packet.dst === st.pods.b.ips[0]), 'the translated destination on the way');
  });

  it('the text output says it per hop, and the verdict', () => {
    const p = spawnSync(process.execPath, [PODNET, 'trace', 'a', 'c', '--verify', '--name', tag], { encoding: 'utf8', env });
    assert.equal(p.status, 0, p.stderr);
    assert.equal(p.stdout.match(/✓ verify {4}kernel agrees/g)?.length, 3, p.stdout);
    assert.match(p.stdout, /verify: the kernel agrees on every hop/);
    assert.deepEqual(leftovers(), []);
  });

  it('a drop rule on n2: the kernel drops the SYN there — a disagreement (or the break the explanation names), the pod never sees it; SIGINT midway leaves nothing', async () => {
    const drop = `pnvfy-drop-${randomBytes(3).toString('hex')}`;
    const n2 = st.nodes.n2.ns;
    const rules = `table inet ${drop} {\n  chain fw {\n    type filter hook forward priority 0; policy accept;\n    ip daddr ${st.pods.b.ips[0]} tcp dport 80 drop\n  }\n}\n`;
    execFileSync('ip', ['netns', 'exec', n2, 'nft', '-f', '-'], { input: rules });
    try {
      const t = trace(['a', 'b:80', '--proto', 'tcp', '--verify']);
      assert.equal(t.code, 1, t.out + t.err);
      const r = t.r!;
      const v = r.verify!;
      assert.equal(v.agrees, r.verdict === 'broken', JSON.stringify(v));
      const inner = r.hops.findIndex((h) => h.ns === n2 && !h.packet.outer);
      if (r.verdict === 'complete') {
        // the explanation passes n2: the kernel disagrees there, naming the rule, and b never sees it
        assert.ok(inner > 0);
        assert.equal(v.hops[inner].seen, true);
        assert.equal(v.hops[inner].agrees, false);
        assert.match(v.hops[inner].detail, new RegExp(`dropped by inet ${drop} chain fw`));
        assert.deepEqual(v.hops.at(-1), { hop: r.hops.length - 1, ns: st.pods.b.ns, seen: false, agrees: false, detail: 'kernel did not see the packet here' });
      } else {
        // the explanation already breaks at n2: the kernel agrees, and the destination saw nothing
        assert.equal(r.hops[r.broken!.hop].ns, n2);
        assert.ok(v.hops.every((h) => h.agrees), JSON.stringify(v));
        assert.deepEqual(v.beyond?.map((b) => [b.ns, b.seen]), [[st.pods.b.ns, false]]);
      }
      assert.deepEqual(leftovers(), []);

      // interrupted: the dropped SYN never arrives, so the verify waits (window 20 s) with its tables in place
      const p = spawn(process.execPath, [PODNET, 'trace', 'a', 'b:80', '--proto', 'tcp', '--verify', '--verify-window', '20000', '--name', tag], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let err = '';
      p.stderr.on('data', (b: Buffer) => (err += b.toString()));
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => p.on('exit', (code, signal) => res({ code, signal })));
      try {
        const t0 = Date.now();
        const tableIn = (ns: string) => execFileSync('ip', ['netns', 'exec', ns, 'nft', 'list', 'tables'], { encoding: 'utf8' }).includes('podnet-trace');
        while (!tableIn(st.pods.a.ns) || !tableIn(st.pods.b.ns)) {
          assert.ok(Date.now() - t0 < 10_000, `no podnet-trace table within 10 s: ${err}`);
          assert.equal(p.exitCode, null, `podnet trace exited before its tables existed: ${err}`);
          await new Promise((res) => setTimeout(res, 20));
        }
        const armed = leftovers();
        assert.ok(armed.some((x) => x.includes('nft monitor')), `monitors run while armed: ${armed.join('; ')}`);
        p.kill('SIGINT');
        const end = await Promise.race([exited, new Promise<'late'>((res) => setTimeout(() => res('late'), 10_000))]);
        assert.notEqual(end, 'late', 'podnet trace did not exit within 10 s of SIGINT');
        assert.deepEqual(end, { code: 130, signal: null }, err);
        assert.match(err, /SIGINT: --verify stopped/);
        assert.deepEqual(leftovers(), []);
      } finally {
        if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
      }
    } finally {
      spawnSync('ip', ['netns', 'exec', n2, 'nft', 'delete', 'table', 'inet', drop]);
    }
  });

  it("a tc filter on n2's eth0 takes the VXLAN packets away before netfilter: the explanation passes, the kernel disagrees from n2 on", () => {
    const n2 = st.nodes.n2.ns;
    // u32 + mirred (flower and gact may be missing): VXLAN in on eth0 is redirected out of a veth whose peer is down, where it ends
    execFileSync('ip', ['-n', n2, 'link', 'add', 'pnvfy0', 'type', 'veth', 'peer', 'name', 'pnvfy1']);
    try {
      execFileSync('ip', ['-n', n2, 'link', 'set', 'pnvfy0', 'up']);
      execFileSync('tc', ['-n', n2, 'qdisc', 'add', 'dev', 'eth0', 'clsact']);
      execFileSync('tc', ['-n', n2, 'filter', 'add', 'dev', 'eth0', 'ingress', 'protocol', 'ip', 'u32', 'match', 'ip', 'protocol', '17', '0xff', 'match', 'ip', 'dport', '8472', '0xffff', 'action', 'mirred', 'egress', 'redirect', 'dev', 'pnvfy0']);
      const t = trace(['a', 'b', '--verify']);
      assert.equal(t.code, 1, t.out + t.err);
      const r = t.r!;
      const v = r.verify!;
      assert.equal(v.agrees, false);
      if (r.verdict === 'complete') {
        // up to the fabric the kernel agrees; from n2's eth0 on nothing sees the packet
        const first = r.hops.findIndex((h) => h.ns === n2);
        assert.ok(first > 0, r.hops.map((h) => h.ns).join(' '));
        assert.deepEqual(v.hops.map((h) => h.agrees), r.hops.map((_, i) => i < first), JSON.stringify(v));
        assert.deepEqual(v.hops.map((h) => h.seen), r.hops.map((_, i) => i < first));
        assert.equal(v.hops[first].detail, `kernel did not see the packet here (last seen at hop ${first}, ${st.fabricNs})`);
        const text = spawnSync(process.execPath, [PODNET, 'trace', 'a', 'b', '--verify', '--name', tag], { encoding: 'utf8', env });
        assert.equal(text.status, 1);
        assert.match(text.stdout, new RegExp(`verify: the kernel DISAGREES at hop ${first + 1} \\(${n2}\\): kernel did not see the packet here`));
      } else assert.equal(r.hops[r.broken!.hop].ns, n2, 'an explanation that knows tc breaks at n2');
      assert.deepEqual(leftovers(), []);
    } finally {
      spawnSync('tc', ['-n', n2, 'qdisc', 'del', 'dev', 'eth0', 'clsact']);
      spawnSync('ip', ['-n', n2, 'link', 'del', 'pnvfy0']);
    }
  });

  it("broken: a packet over the pod's MTU (DF) — the kernel refuses to send it, as explained", () => {
    const mtu = (JSON.parse(execFileSync('ip', ['-n', st.pods.a.ns, '-j', 'link', 'show', 'eth0'], { encoding: 'utf8' })) as { mtu: number }[])[0].mtu;
    const t = trace(['a', 'b', '--size', String(mtu + 1), '--verify']);
    assert.equal(t.code, 1, t.out + t.err);
    const r = t.r!;
    assert.equal(r.broken!.hop, 0);
    assert.deepEqual(r.verify!.hops.map((h) => [h.ns, h.seen, h.agrees]), [[st.pods.a.ns, false, true]]);
    assert.match(r.verify!.hops[0].detail, /^kernel agrees: it refused to send the packet \(.*message too long/);
    assert.deepEqual(r.verify!.beyond?.map((b) => [b.ns, b.seen]), [[st.pods.b.ns, false]]);
    assert.deepEqual(leftovers(), []);
  });

  it("broken: n1's route to n2's pod subnet deleted — the kernel agrees it breaks at n1, b never sees the packet", () => {
    const subnet = /PODNET_SUBNET=(\S+)/.exec(readFileSync(st.nodes.n2.subnetFile, 'utf8'))![1].replace(/\.\d+\//, '.0/');
    cli(['agent', 'stop', 'n1']);
    try {
      execFileSync('ip', ['-n', st.nodes.n1.ns, 'route', 'del', subnet]);
      const t = trace(['a', 'b', '--verify']);
      assert.equal(t.code, 1, t.out + t.err);
      const r = t.r!;
      assert.equal(r.verdict, 'broken');
      assert.equal(r.hops[r.broken!.hop].ns, st.nodes.n1.ns);
      const v = r.verify!;
      assert.deepEqual(v.hops.map((h) => [h.ns, h.seen, h.agrees]), r.hops.map((h) => [h.ns, true, true]), JSON.stringify(v));
      // the kernel sent it on by the default route (out eth0), not into the tunnel
      assert.match(v.hops[r.broken!.hop].detail, /out eth0; not delivered beyond/);
      assert.deepEqual(v.beyond, [{ ns: st.pods.b.ns, seen: false, detail: 'kernel did not see the packet here (the destination)' }]);
      assert.equal(v.agrees, true);
      assert.deepEqual(leftovers(), []);
    } finally {
      cli(['agent', 'start', 'n1']);
    }
  });
});
