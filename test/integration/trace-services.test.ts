// `podnet trace` through services in real labs (vxlan, 2 nodes; pods a on n1 and b on n2 serving
// port 80): the service proxy's DNAT with every endpoint and its chance, followed to one endpoint
// and delivered while a real TCP connection through the cluster IP works; a service without
// endpoints rejected with a TCP reset (and a real connection refused); a NodePort masqueraded at
// the node that DNATs it; a foreign table's forward policy drop added by hand in n1 as the broken
// hop (a real connection times out there), then removed; the same DNAT with --proxy-mode iptables.
import { ensureLabBundle, labCli, labSuite, labTrace, probe } from '../helpers/lab.js';
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Step, TraceResult } from '../../src/trace/types.js';

const suite = labSuite('pnlab-trace-svc');
const LAB_DIR = suite.dir;

interface St {
  nodes: Record<string, { ns: string; ip: string }>;
  pods: Record<string, { ns: string; ips: string[] }>;
  services: Record<string, { service: { spec: { clusterIP: string; ports: { port: number; nodePort?: number }[] } } }>;
}

const trace = (tag: string, args: string[]) => labTrace(LAB_DIR, tag, args);

async function until(what: string, ok: () => boolean, ms = 20_000): Promise<void> {
  const t0 = Date.now();
  while (!ok()) {
    if (Date.now() - t0 > ms) assert.fail(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const nfSteps = (r: TraceResult): Step[] => r.hops.flatMap((h) => h.steps).filter((s) => s.kind === 'netfilter');
const dnatStep = (r: TraceResult): Step => {
  const s = nfSteps(r).find((x) => x.object?.endpoints);
  assert.ok(s, `a DNAT step: ${JSON.stringify(nfSteps(r))}`);
  return s;
};
/**
 * Two traces compared: rule handles change when the proxy resyncs (every 60 s), and the conntrack
 * entries listed as information change with every real connection, so both are left out.
 */
const stable = (steps: Step[]) => JSON.parse(JSON.stringify(steps.filter((s) => !s.object?.conntrack)).replace(/handle \d+/g, 'handle N').replace(/"handle":\d+/g, '"handle":0'));

function labFixture(mode: 'nftables' | 'iptables') {
  const tag = `s${randomBytes(3).toString('hex')}`;
  suite.register(tag);
  const cli = (args: string[]) => {
    const r = labCli(LAB_DIR, [...args, '--name', tag]);
    assert.equal(r.code, 0, `lab ${args.join(' ')}: ${r.stderr}`);
  };
  const state = (): St => JSON.parse(readFileSync(join(LAB_DIR, tag, 'state.json'), 'utf8')) as St;
  return { tag, cli, state };
}

describe('podnet trace through services (nftables proxy)', { timeout: 120_000 }, () => {
  const { tag, cli, state } = labFixture('nftables');
  let st: St;
  const ip = (svc: string) => st.services[svc].service.spec.clusterIP;
  const owner = (addr: string) => Object.entries(st.pods).find(([, p]) => p.ips.includes(addr))?.[0];

  before(async () => {
    ensureLabBundle();
    cli(['up', '--nodes', '2', '--backend', 'vxlan']);
    cli(['pod', 'add', 'a', '--node', 'n1', '--serve', '80']);
    cli(['pod', 'add', 'b', '--node', 'n2', '--serve', '80']);
    cli(['service', 'add', 'web', '--port', '80', '--pods', 'a,b']);
    cli(['service', 'add', 'empty', '--port', '80']);
    cli(['service', 'add', 'np', '--port', '81', '--target', '80', '--pods', 'a,b', '--type', 'NodePort']);
    st = state();
    // both agents' proxies have synced once the services answer (and are refused) from both nodes' pods
    await until('web answers from pod a', () => probe(st.pods.a.ns, 'tcp', ip('web'), 80, 1000).code === 0);
    await until('empty is refused on n1', () => /ECONNREFUSED/.test(probe(st.pods.a.ns, 'tcp', ip('empty'), 80, 1000).err));
    await until('the NodePort answers on n2', () => probe(st.pods.a.ns, 'tcp', st.nodes.n2.ip, st.services.np.service.spec.ports[0].nodePort!, 1000).code === 0);
  });

  it('pod a to svc/web: DNAT at n1 with both endpoints at 50%, one followed to delivery; a real connection works', () => {
    const t = trace(tag, ['a', 'svc/web']);
    assert.equal(t.code, 0, t.out + t.err);
    const r = t.r!;
    assert.equal(r.verdict, 'complete');
    assert.deepEqual([r.query.dst, r.query.dport, r.query.proto, r.query.dstLabel], [ip('web'), 80, 'tcp', 'service web']);
    const s = dnatStep(r);
    const at = r.hops.find((h) => h.steps.includes(s))!;
    assert.equal(at.ns, st.nodes.n1.ns, 'the pod\'s node DNATs it (prerouting)');
    assert.match(s.text, new RegExp(`^prerouting: service web \\(${ip('web').replace(/\./g, '\\.')}:80/tcp\\): DNAT to `));
    const eps = (s.object!.endpoints as { ip: string; port: number; chance: number }[]).map((e) => [e.ip, e.port, e.chance]).sort();
    assert.deepEqual(eps, [[st.pods.a.ips[0], 80, 0.5], [st.pods.b.ips[0], 80, 0.5]].sort());
    assert.match(s.text, / 50%, .* 50%/);
    assert.equal(s.object!.lb, 'lb-2-int');
    const chosen = (s.object!.chosen as { dst: string }).dst;
    assert.equal(at.packet.dst, chosen, "the hop's packet is the DNAT-ed one");
    const last = r.hops.at(-1)!;
    assert.equal(last.ns, st.pods[owner(chosen)!].ns, 'delivered in the endpoint followed');
    assert.equal(last.steps.at(-1)!.kind, 'deliver');
    if (chosen === st.pods.a.ips[0]) {
      // the endpoint is the client itself: the hairpin is masqueraded at n1
      assert.ok(nfSteps(r).some((x) => /^postrouting: masqueraded: .*\(hairpin/.test(x.text)), JSON.stringify(nfSteps(r)));
    }
    const c = probe(st.pods.a.ns, 'tcp', ip('web'), 80);
    assert.equal(c.code, 0, c.err);
    assert.match(c.out, /^(a|b)/);
    // the same JSON again (rule handles aside): the schema and the decision are stable
    assert.deepEqual(stable(nfSteps(trace(tag, ['a', 'svc/web']).r!)), stable(nfSteps(r)));
  });

  it('pod a to svc/empty: rejected with a TCP reset at n1 (exit 1); a real connection is refused', () => {
    const t = trace(tag, ['a', 'svc/empty']);
    assert.equal(t.code, 1, t.out + t.err);
    const r = t.r!;
    assert.equal(r.verdict, 'broken');
    assert.equal(r.hops[r.broken!.hop].ns, st.nodes.n1.ns);
    assert.match(r.broken!.reason, /^service empty \(.*\) has no ready endpoints: rejected with a TCP reset/);
    assert.equal(r.broken!.command, `ip netns exec ${st.nodes.n1.ns} nft -a list chain inet podnet-proxy reject-no-endpoints`);
    assert.match(probe(st.pods.a.ns, 'tcp', ip('empty'), 80).err, /ECONNREFUSED/);
  });

  it("pod a to n2's NodePort: DNAT at n2, masqueraded there (always, for a NodePort), delivered", () => {
    const np = st.services.np.service.spec.ports[0].nodePort!;
    const t = trace(tag, ['a', `n2:${np}`]);
    assert.equal(t.code, 0, t.out + t.err);
    const r = t.r!;
    const s = dnatStep(r);
    assert.equal(r.hops.find((h) => h.steps.includes(s))!.ns, st.nodes.n2.ns);
    assert.match(s.text, new RegExp(`NodePort ${np} of service np`));
    assert.equal(s.object!.masquerade, 'always');
    const n2Post = r.hops.filter((h) => h.ns === st.nodes.n2.ns).flatMap((h) => h.steps).find((x) => /^postrouting: masqueraded/.test(x.text));
    assert.ok(n2Post, 'masqueraded on its way out of n2');
    assert.equal(r.hops.at(-1)!.steps.at(-1)!.kind, 'deliver');
    assert.equal(probe(st.pods.a.ns, 'tcp', st.nodes.n2.ip, np).code, 0);
  });

  it("a foreign table's forward policy drop in n1 is the broken hop (exit 1) while a real connection times out; gone again once removed", () => {
    const n1 = st.nodes.n1.ns;
    execFileSync('ip', ['netns', 'exec', n1, 'nft', 'add', 'table', 'inet', 'foreign']);
    try {
      execFileSync('ip', ['netns', 'exec', n1, 'nft', 'add', 'chain', 'inet', 'foreign', 'forward', '{ type filter hook forward priority 0; policy drop; }']);
      const t = trace(tag, ['a', 'b:80']);
      assert.equal(t.code, 1, t.out + t.err);
      const r = t.r!;
      assert.equal(r.hops[r.broken!.hop].ns, n1);
      assert.equal(r.broken!.reason, 'forward: dropped by the policy drop of foreign table inet foreign chain forward (hook forward priority 0)');
      assert.equal(r.broken!.command, `ip netns exec ${n1} nft -a list chain inet foreign forward`);
      const c = probe(st.pods.a.ns, 'tcp', st.pods.b.ips[0], 80, 1500);
      assert.notEqual(c.code, 0, 'the kernel drops it too');
      assert.match(c.err, /timeout/);
    } finally {
      execFileSync('ip', ['netns', 'exec', n1, 'nft', 'delete', 'table', 'inet', 'foreign']);
    }
    assert.equal(trace(tag, ['a', 'b:80']).code, 0);
  });

  it('bad usage: an unknown service or port exits 2 naming what there is', () => {
    const t = trace(tag, ['a', 'svc/nosuch']);
    assert.equal(t.code, 2);
    assert.match(t.err, /nosuch is no service of lab .* \(services: .*web/);
    const p = trace(tag, ['a', 'svc/web:81']);
    assert.equal(p.code, 2);
    assert.match(p.err, /service web has no port 81 \(ports: 80\/tcp\)/);
  });
});

describe('podnet trace through services (iptables proxy)', { timeout: 120_000 }, () => {
  const { tag, cli, state } = labFixture('iptables');
  let st: St;
  const ip = (svc: string) => st.services[svc].service.spec.clusterIP;

  before(async () => {
    ensureLabBundle();
    cli(['up', '--nodes', '2', '--backend', 'vxlan', '--proxy-mode', 'iptables']);
    cli(['pod', 'add', 'a', '--node', 'n1', '--serve', '80']);
    cli(['pod', 'add', 'b', '--node', 'n2', '--serve', '80']);
    cli(['service', 'add', 'web', '--port', '80', '--pods', 'a,b']);
    cli(['service', 'add', 'empty', '--port', '80']);
    st = state();
    await until('web answers from pod a', () => probe(st.pods.a.ns, 'tcp', ip('web'), 80, 1000).code === 0);
    await until('empty is refused on n1', () => /ECONNREFUSED/.test(probe(st.pods.a.ns, 'tcp', ip('empty'), 80, 1000).err));
  });

  it('pod a to svc/web: DNAT by a PODNET-SEP chain, both endpoints at 50%, delivered; a real connection works', () => {
    const t = trace(tag, ['a', 'svc/web']);
    assert.equal(t.code, 0, t.out + t.err);
    const s = dnatStep(t.r!);
    assert.match(s.text, /by iptables nat table chain PODNET-SEP-\w+ rule 2; PODNET-SERVICES -> PODNET-SVC-\w+/);
    const eps = (s.object!.endpoints as { ip: string; chance: number }[]).map((e) => [e.ip, e.chance]).sort();
    assert.deepEqual(eps, [[st.pods.a.ips[0], 0.5], [st.pods.b.ips[0], 0.5]].sort());
    assert.match(s.command!, new RegExp(`^ip netns exec ${st.nodes.n1.ns} iptables-nft -t nat -L PODNET-SEP-\\w+ -n -v --line-numbers$`));
    assert.equal(t.r!.hops.at(-1)!.steps.at(-1)!.kind, 'deliver');
    assert.equal(probe(st.pods.a.ns, 'tcp', ip('web'), 80).code, 0);
  });

  it('pod a to svc/empty: rejected with a TCP reset by filter PODNET-SERVICES at n1 (exit 1)', () => {
    const t = trace(tag, ['a', 'svc/empty']);
    assert.equal(t.code, 1, t.out + t.err);
    assert.equal(t.r!.hops[t.r!.broken!.hop].ns, st.nodes.n1.ns);
    assert.match(t.r!.broken!.reason, /has no ready endpoints: rejected with a TCP reset \(iptables filter table chain PODNET-SERVICES rule \d+\)/);
  });
});
