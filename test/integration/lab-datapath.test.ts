// The established path in a 2-node lab (vxlan and host-gw) with a service programmed: no rule of
// podnet's tables is walked by established pod traffic (every podnet base chain in a node is a nat
// chain, except the VXLAN conntrack exemption on the tunnel's own packets), the tunnel's UDP is
// untracked in both nodes while pods talk over it, service flows are still tracked and DNAT-ed,
// and the fabric bridge does not send frames through netfilter.
import { labCli, probe } from '../helpers/lab.js';
import { netnsWithPrefix } from '../helpers/netns.js';
import { after, describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureLabBundle } from '../helpers/lab.js';

const LAB_DIR = mkdtempSync(join(tmpdir(), 'pnlab-dp-test-'));
const TAG = `d${process.pid.toString(36)}${randomBytes(2).toString('hex')}`;
const labs: string[] = [];
const cli = (args: string[]) => labCli(LAB_DIR, args, { timeoutMs: 240_000 });
const nsx = (ns: string, argv: string[]) => execFileSync('ip', ['netns', 'exec', ns, ...argv], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

after(() => {
  for (const l of labs) if (existsSync(join(LAB_DIR, l))) cli(['down', '--name', l]);
  for (const ns of netnsWithPrefix(`pnlab-${TAG}`)) spawnSync('ip', ['netns', 'del', ns]);
  rmSync(LAB_DIR, { recursive: true, force: true });
});

interface BaseChain {
  family: string;
  table: string;
  name: string;
  type: string;
  hook: string;
  prio: number;
}

/** The device of a netdev base chain (`nft -j` of nft 1.0.6 leaves it out). */
function onDevice(ns: string, c: BaseChain): string | undefined {
  return /hook ingress device "?([^"\s;]+)"?/.exec(nsx(ns, ['nft', 'list', 'chain', c.family, c.table, c.name]))?.[1];
}

function baseChains(ns: string): BaseChain[] {
  const j = JSON.parse(nsx(ns, ['nft', '-j', 'list', 'chains'])) as { nftables: { chain?: BaseChain }[] };
  return j.nftables.map((x) => x.chain).filter((c): c is BaseChain => !!c && typeof c.hook === 'string');
}

for (const backend of ['vxlan', 'host-gw'] as const) {
  describe(`the established path in a 2-node lab (${backend})`, { timeout: 300_000 }, () => {
    const l = `${TAG}${backend === 'vxlan' ? 'v' : 'h'}`;
    let st: { fabricNs: string; nodes: Record<string, { ns: string }>; pods: Record<string, { ns: string; ips: string[] }> };
    let clusterIP = '';
    before(() => {
      ensureLabBundle();
      labs.push(l);
      let r = cli(['up', '--name', l, '--nodes', '2', '--backend', backend]);
      assert.equal(r.code, 0, r.stderr);
      r = cli(['pod', 'add', 'a', '--node', 'n1', '--name', l]);
      assert.equal(r.code, 0, r.stderr);
      r = cli(['pod', 'add', 'b', '--node', 'n2', '--serve', '8080', '--name', l]);
      assert.equal(r.code, 0, r.stderr);
      r = cli(['service', 'add', 'web', '--port', '80', '--target', '8080', '--pods', 'b', '--name', l]);
      assert.equal(r.code, 0, r.stderr);
      st = JSON.parse(readFileSync(join(LAB_DIR, l, 'state.json'), 'utf8'));
      clusterIP = (st as unknown as { services: Record<string, { service: { spec: { clusterIP: string } } }> }).services.web.service.spec.clusterIP;
    });

    it('every base chain of podnet in a node is a nat chain, but for the tunnel exemption', () => {
      for (const n of Object.values(st.nodes)) {
        const ours = baseChains(n.ns).filter((c) => c.table.startsWith('podnet'));
        assert.ok(ours.some((c) => c.table === 'podnet-proxy'), `the proxy's table is there: ${JSON.stringify(ours)}`);
        for (const c of ours) {
          if (c.type === 'nat') continue;
          // what is left only ever sees the tunnel's packets or locally generated ones
          const ok = backend === 'vxlan' && c.table === 'podnet-cluster' && ((c.family === 'netdev' && c.hook === 'ingress' && onDevice(n.ns, c) === 'eth0') || (c.family === 'inet' && c.hook === 'output'));
          assert.ok(ok, `${n.ns}: ${c.family} ${c.table} ${c.name} (${c.type} hook ${c.hook}) is walked by established pod traffic`);
        }
        assert.ok(!ours.some((c) => c.hook === 'forward' || (c.hook === 'prerouting' && c.type !== 'nat')), 'nothing at forward or filter prerouting');
      }
    });

    it('pod to pod: the flow is tracked, the tunnel is not; a service is still DNAT-ed and answers', () => {
      const b = st.pods.b.ips[0];
      const ping = spawnSync('ip', ['netns', 'exec', st.pods.a.ns, 'ping', '-c', '3', '-i', '0.2', '-W', '2', b], { encoding: 'utf8' });
      assert.equal(ping.status, 0, ping.stdout + ping.stderr);
      const svc = probe(st.pods.a.ns, 'tcp', clusterIP, 80, 5000);
      assert.equal(svc.code, 0, svc.err);
      assert.match(svc.out, /\bb\b/);
      for (const n of Object.values(st.nodes)) {
        const udp = nsx(n.ns, ['conntrack', '-L', '-p', 'udp']);
        assert.doesNotMatch(udp, /dport=8472/, `${n.ns}: tunnel packets tracked:\n${udp}`);
        assert.match(nsx(n.ns, ['conntrack', '-L', '-p', 'icmp']), new RegExp(`dst=${b.replace(/\./g, '\\.')} `), `${n.ns}: the pods' flow is tracked`);
      }
      // the client's node DNAT-ed the service flow: the reply side names the endpoint
      const n1 = nsx(st.nodes.n1.ns, ['conntrack', '-L', '-p', 'tcp', '--orig-dst', clusterIP]);
      assert.match(n1, new RegExp(`src=${b.replace(/\./g, '\\.')} `), n1);
    });

    it('the fabric bridge is a switch: no netfilter for bridged frames, no multicast snooping', () => {
      for (const fam of ['iptables', 'ip6tables', 'arptables']) {
        assert.equal(nsx(st.fabricNs, ['sysctl', '-n', `net.bridge.bridge-nf-call-${fam}`]).trim(), '0', fam);
      }
      const br = JSON.parse(execFileSync('ip', ['-n', st.fabricNs, '-d', '-j', 'link', 'show', 'br0'], { encoding: 'utf8' }))[0];
      assert.equal(br.linkinfo.info_data.mcast_snooping, 0);
    });
  });
}
