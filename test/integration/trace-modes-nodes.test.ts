// `podnet trace --from-netns` across two nodes for the CNI modes the lab does not build (routed and
// macvlan; the lab's pods are bridge mode): two node namespaces on one underlay bridge (a fabric
// namespace), a pod on each wired by the CNI plugin. Routed: pod -> its node (host route to the
// veth) -> the peer node by a static route -> the other pod. Macvlan: straight over the underlay,
// the frame leaving by the node's NIC and taken by the other node's macvlan child. Each is complete,
// --verify agrees, and a real ping goes through.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { CniHarness } from '../helpers/cni.js';
import { ensureLabBundle, nodeTrace } from '../helpers/lab.js';
import type { Conf } from '../helpers/modes.js';

const NODE_IPS = ['192.168.78.11', '192.168.78.12'];
const GW = '192.168.78.1';

interface ModeCase {
  mode: 'routed' | 'macvlan';
  /** node i's CNI config */
  conf: (i: number, dataDir: string) => Conf;
  /** node i's route to the other node's pods (routed: what a backend would install) */
  peerRoute?: (i: number) => string[];
}

const CASES: ModeCase[] = [
  {
    mode: 'routed',
    conf: (i, dataDir) => ({ cniVersion: '1.1.0', name: `trn${i}`, type: 'podnet', mode: 'routed', ipMasq: false, ipam: { type: 'podnet-ipam', ranges: [[{ subnet: `10.78.${i + 1}.0/24` }]], dataDir } }),
    peerRoute: (i) => [`10.78.${2 - i}.0/24`, 'via', NODE_IPS[1 - i]],
  },
  {
    mode: 'macvlan',
    conf: (i, dataDir) => ({
      cniVersion: '1.0.0',
      name: `tmn${i}`,
      type: 'podnet',
      mode: 'macvlan',
      hostReachable: true,
      ipam: { type: 'podnet-ipam', ranges: [[{ subnet: '192.168.78.0/24', rangeStart: `192.168.78.${100 + 50 * i}`, rangeEnd: `192.168.78.${149 + 50 * i}`, gateway: GW }]], dataDir },
    }),
  },
];

const trace = nodeTrace;

for (const c of CASES) {
  describe(`podnet trace across two nodes: ${c.mode} mode pods`, () => {
    const nodes: CniHarness[] = [];
    const pods: { ns: string; ip: string }[] = [];
    let fabric = '';
    before(async () => {
      ensureLabBundle();
      for (let i = 0; i < 2; i++) nodes.push(new CniHarness());
      // the underlay: a bridge in a fabric namespace, each node's eth0 a port of it
      fabric = nodes[0].fixture.add('fab');
      const fx = (argv: string[]) => nodes[0].exec(fabric, argv);
      fx(['ip', 'link', 'add', 'br0', 'address', '02:00:00:fa:b0:01', 'type', 'bridge']);
      fx(['ip', 'addr', 'add', `${GW}/24`, 'dev', 'br0']);
      fx(['ip', 'link', 'set', 'br0', 'up']);
      for (const [i, h] of nodes.entries()) {
        h.exec(h.nodeNs, ['ip', 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', `n${i}`, 'netns', `/run/netns/${fabric}`]);
        fx(['ip', 'link', 'set', `n${i}`, 'master', 'br0', 'up']);
        h.exec(h.nodeNs, ['ip', 'addr', 'add', `${NODE_IPS[i]}/24`, 'dev', 'eth0']);
        h.exec(h.nodeNs, ['ip', 'link', 'set', 'eth0', 'up']);
        h.exec(h.nodeNs, ['ip', 'route', 'add', 'default', 'via', GW]);
        h.exec(h.nodeNs, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
        if (c.peerRoute) h.exec(h.nodeNs, ['ip', 'route', 'add', ...c.peerRoute(i)]);
        const ns = h.pod(`p${i}`);
        const r = await h.invoke({ command: 'ADD', containerId: `c${i}`, netns: h.podPath(ns), ifname: 'eth0', conf: c.conf(i, join(h.tmp, 'ipam')) });
        assert.equal(r.code, 0, `ADD on node ${i}: ${r.stdout} ${r.stderr}`);
        pods.push({ ns, ip: (r.json as { ips: { address: string }[] }).ips[0].address.split('/')[0] });
      }
    });
    after(async () => {
      for (const h of nodes) await h.cleanup();
    });

    test('pod on node 1 to pod on node 2: complete through both nodes (or straight over the underlay), --verify agrees, a ping goes through', () => {
      const [a, b] = pods;
      const t = trace(a.ns, a.ip, b.ip, ['--verify']);
      assert.equal(t.code, 0, t.out);
      const path = t.r.hops.map((h) => h.ns);
      assert.equal(path[0], a.ns);
      assert.equal(path.at(-1), b.ns);
      assert.ok(path.includes(fabric), `over the underlay: ${path.join(' ')}`);
      if (c.mode === 'routed') {
        assert.ok(path.includes(nodes[0].nodeNs) && path.includes(nodes[1].nodeNs), path.join(' '));
        const n1 = t.r.hops.find((h) => h.ns === nodes[0].nodeNs)!;
        assert.match(n1.steps.find((s) => s.kind === 'route')!.text, /route 10\.78\.2\.0\/24 via 192\.168\.78\.12/);
      } else {
        // the macvlan frames pass both nodes' NICs below their IP layers
        assert.ok(t.r.hops.flatMap((h) => h.steps).filter((s) => s.kind === 'macvlan').length >= 2, t.out);
      }
      assert.equal(t.r.verify?.agrees, true, JSON.stringify(t.r.verify, null, 1));
      assert.ok(nodes[0].ping(a.ns, b.ip));
    });
  });
}
