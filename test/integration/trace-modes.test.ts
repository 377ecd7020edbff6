// `podnet trace --from-netns` on pods the CNI plugin wired in each of its modes (a node namespace
// and pods, as a runtime would make them): bridge (the node's bridge switches pod to pod), routed
// (a veth per pod and host routes: pod -> node -> pod, no bridge), macvlan (an underlay pod: pod to
// pod directly on the parent, pod to the gateway out of the node's NIC). Each path is complete, in
// the namespaces the mode puts on it, and a real ping agrees; a pod is also found by its container ID.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CniHarness } from '../helpers/cni.js';
import { ensureLabBundle, nodeTrace } from '../helpers/lab.js';
import { MODE_CASES, setupUnderlay, type Conf } from '../helpers/modes.js';

const PODNET = new URL('../../dist/podnet.mjs', import.meta.url).pathname;

const trace = nodeTrace;

const CLUSTER_IP = '10.96.7.10';
const OUTSIDE = '192.168.77.1';

function servicesDoc(endpoint: string): unknown {
  return {
    services: [{ apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'default' }, spec: { type: 'ClusterIP', clusterIP: CLUSTER_IP, ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 80 }] } }],
    endpointSlices: [
      {
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: { name: 'web-1', namespace: 'default', labels: { 'kubernetes.io/service-name': 'web' } },
        addressType: 'IPv4',
        endpoints: [{ addresses: [endpoint], conditions: { ready: true } }],
        ports: [{ name: 'http', protocol: 'TCP', port: 80 }],
      },
    ],
  };
}

for (const c of MODE_CASES) {
  describe(`podnet trace: ${c.mode} mode pods`, () => {
    let h: CniHarness;
    let conf: Conf;
    const pods: { ns: string; ip: string; id: string }[] = [];
    before(async () => {
      ensureLabBundle();
      h = new CniHarness();
      conf = c.conf(`tr${c.mode}`, { type: 'podnet-ipam', ranges: c.ranges, dataDir: join(h.tmp, 'ipam') });
      // every node gets an uplink (eth0 to a router namespace at 192.168.77.1): "outside the cluster"
      (c.setupNode ?? setupUnderlay)(h);
      for (const tag of ['a', 'b']) {
        const ns = h.pod(tag);
        // container IDs as runtimes make them: 64 hex digits
        const id = randomBytes(32).toString('hex');
        const r = await h.invoke({ command: 'ADD', containerId: id, netns: h.podPath(ns), ifname: 'eth0', conf });
        assert.equal(r.code, 0, `ADD: ${r.stdout} ${r.stderr}`);
        pods.push({ ns, ip: (r.json as { ips: { address: string }[] }).ips[0].address.split('/')[0], id });
      }
      // a service with pod b as its endpoint, programmed by podnet's proxy in the node (one sync)
      const svcFile = join(h.tmp, 'services.json');
      writeFileSync(svcFile, JSON.stringify(servicesDoc(pods[1].ip)));
      const cidr = pods[0].ip.replace(/\.\d+$/, '.0/24');
      const sync = spawnSync('ip', ['netns', 'exec', h.nodeNs, process.execPath, PODNET, 'proxy', 'sync', '--once', '--strict', '--services', svcFile, '--cluster-cidr', cidr], { encoding: 'utf8' });
      assert.equal(sync.status, 0, sync.stderr);
    });
    after(async () => {
      await h.cleanup();
    });

    test('pod to pod: complete through the namespaces of the mode, and a ping agrees', () => {
      const [a, b] = pods;
      const t = trace(a.ns, a.ip, b.ip);
      assert.equal(t.code, 0, t.out);
      const path = t.r.hops.map((x) => x.ns);
      const kinds = t.r.hops.flatMap((x) => x.steps.map((s) => s.kind));
      if (c.mode === 'macvlan') {
        // bridge-mode siblings on the node's NIC: straight from one pod to the other
        assert.deepEqual(path, [a.ns, b.ns], t.out);
        assert.ok(kinds.includes('macvlan'), t.out);
      } else {
        assert.deepEqual(path, [a.ns, h.nodeNs, b.ns], t.out);
        if (c.mode === 'bridge') assert.ok(t.r.hops[1].steps.some((s) => s.kind === 'bridge'), t.out);
        else {
          // routed: the node routes by a host route to the pod's veth; no bridge anywhere
          assert.ok(!kinds.includes('bridge'), t.out);
          assert.match(t.r.hops[1].steps.find((s) => s.kind === 'route')!.text, new RegExp(`route ${b.ip.replace(/\./g, '\\.')}/32`), t.out);
        }
      }
      assert.equal(t.r.hops.at(-1)!.steps.at(-1)!.kind, 'deliver');
      assert.ok(h.ping(a.ns, b.ip));
      const v = trace(a.ns, a.ip, b.ip, ['--verify']);
      assert.equal(v.code, 0, v.out);
      assert.equal(v.r.verify?.agrees, true, `the kernel disagrees: ${JSON.stringify(v.r.verify, null, 1)}`);
    });

    test('pod to its gateway', () => {
      const [a] = pods;
      const gw = c.gateways[0];
      const t = trace(a.ns, a.ip, gw, ['--verify']);
      assert.equal(t.code, 0, t.out);
      assert.equal(t.r.verify?.agrees, true, JSON.stringify(t.r.verify, null, 1));
      const last = t.r.hops.at(-1)!;
      if (c.mode === 'macvlan') {
        // the gateway is the underlay's router: out of the pod's macvlan, its parent eth0, the uplink
        assert.notEqual(last.ns, h.nodeNs, t.out);
        assert.ok(t.r.hops.some((x) => x.ns === h.nodeNs), `the frame leaves by the node's NIC: ${t.out}`);
      } else assert.equal(last.ns, h.nodeNs, t.out);
      assert.ok(h.ping(a.ns, gw));
    });

    test("from a pod by its container ID (the CNI's host link alias, or its IPAM reservation)", () => {
      const [a, b] = pods;
      const t = trace(undefined, a.id.slice(0, 12), b.ip, ['--ipam-dir', join(h.tmp, 'ipam')]);
      assert.equal(t.code, 0, t.out);
      assert.equal(t.r.hops[0].ns, a.ns);
      assert.equal(t.r.query.src, a.ip);
      assert.equal(t.r.hops.at(-1)!.ns, b.ns);
      const none = spawnSync(process.execPath, [PODNET, 'trace', '--host', '--ipam-dir', join(h.tmp, 'ipam'), 'abcdef0123', b.ip], { encoding: 'utf8' });
      assert.equal(none.status, 2, none.stderr);
      assert.match(none.stderr, /no pod of container abcdef0123 here/);
    });

    test('pod to a service IP: through the node\'s DNAT (bridge, routed); a macvlan pod bypasses the node, so it breaks where the kernel drops it', () => {
      const [a, b] = pods;
      const t = trace(a.ns, a.ip, `${CLUSTER_IP}:80`, ['--verify', '--sport', '40321']);
      if (c.mode === 'macvlan') {
        // the macvlan pod's default route is the underlay router, which knows no service
        assert.equal(t.code, 1, t.out);
        assert.equal(t.r.verdict, 'broken');
        assert.notEqual(t.r.hops[t.r.broken!.hop].ns, h.nodeNs, t.out);
        assert.equal(t.r.verify?.agrees, true, `the kernel drops it there too: ${JSON.stringify(t.r.verify, null, 1)}`);
        return;
      }
      assert.equal(t.code, 0, t.out);
      const node = t.r.hops.find((x) => x.ns === h.nodeNs)!;
      assert.ok(node.steps.some((x) => x.kind === 'netfilter' && new RegExp(b.ip.replace(/\./g, '\\.')).test(x.text)), JSON.stringify(node.steps.map((x) => x.text)));
      assert.equal(t.r.hops.at(-1)!.ns, b.ns);
      assert.equal(t.r.verify?.agrees, true, JSON.stringify(t.r.verify, null, 1));
    });

    test('pod to outside the cluster (the uplink router): delivered there, and the kernel agrees', () => {
      const [a] = pods;
      const t = trace(a.ns, a.ip, OUTSIDE, ['--verify']);
      assert.equal(t.code, 0, t.out);
      assert.notEqual(t.r.hops.at(-1)!.ns, h.nodeNs);
      if (c.mode !== 'macvlan') assert.equal(t.r.hops.at(-1)!.packet.src, '192.168.77.2', 'masqueraded to the node\'s address');
      assert.equal(t.r.verify?.agrees, true, JSON.stringify(t.r.verify, null, 1));
      assert.ok(h.ping(a.ns, OUTSIDE));
    });

    test('node to pod', () => {
      const [a] = pods;
      const t = trace(h.nodeNs, '-', a.ip, ['--verify']);
      assert.equal(t.code, 0, t.out);
      assert.equal(t.r.verify?.agrees, true, JSON.stringify(t.r.verify, null, 1));
      assert.equal(t.r.hops.at(-1)!.ns, a.ns);
    });
  });
}
