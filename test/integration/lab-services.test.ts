// Services end to end in a 3-node lab, once per rule engine: the proxy inside every node agent
// watches the lab's store; traffic from pods and nodes is checked against the pods that answer.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureLabBundle, labCli } from '../helpers/lab.js';
import { netnsWithPrefix } from '../helpers/netns.js';
import { probe, type ProbeResult } from '../helpers/svc-fixture.js';
import { FileStore } from '../../src/store/file-store.js';
import { serviceStoreKey, sliceStoreKey } from '../../src/proxy/document.js';
import { createEngine } from '../../src/proxy/engines/index.js';
import type { LabState } from '../../src/lab/state.js';

const LAB_DIR = mkdtempSync(join(tmpdir(), 'pnlab-svc-'));
const TAG = `v${process.pid.toString(36)}${randomBytes(2).toString('hex')}`;

const total = (r: ProbeResult) => Object.values(r.answers).reduce((a, b) => a + b, 0);
const names = (r: ProbeResult) => Object.keys(r.answers).sort();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, fn: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 15_000): Promise<T> {
  const t0 = Date.now();
  let v = await fn();
  while (!ok(v)) {
    if (Date.now() - t0 > timeoutMs) assert.fail(`${what}: not within ${timeoutMs} ms; last: ${JSON.stringify(v)}`);
    await sleep(200);
    v = await fn();
  }
  return v;
}

async function engineAvailable(mode: 'nftables' | 'iptables'): Promise<string | false> {
  try {
    await createEngine(mode);
    return false;
  } catch (e) {
    return `the ${mode} engine is not available: ${(e as Error).message}`;
  }
}

after(() => {
  for (const ns of netnsWithPrefix(`pnlab-${TAG}`)) spawnSync('ip', ['netns', 'del', ns]);
  rmSync(LAB_DIR, { recursive: true, force: true });
});

for (const mode of ['nftables', 'iptables'] as const) {
  describe(`services in a 3-node lab (${mode})`, { timeout: 600_000 }, async () => {
    const skip = await engineAvailable(mode);
    const lab = `${TAG}${mode[0]}`;
    const cli = (args: string[]) => {
      const r = labCli(LAB_DIR, [...args, '--name', lab], { timeoutMs: 240_000 });
      assert.equal(r.code, 0, `lab ${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    };
    const state = (): LabState => JSON.parse(readFileSync(join(LAB_DIR, lab, 'state.json'), 'utf8'));
    const procs: ChildProcess[] = [];
    let st: LabState;
    let web = { ip: '', nodePort: 0 };
    let dns = { ip: '', nodePort: 0 };
    const podNs = (p: string) => st.pods[p].ns;
    const nodeNs = (n: string) => st.nodes[n].ns;
    const nodeIP = (n: string) => st.nodes[n].ip;
    const podIP = (p: string) => st.pods[p].ips[0];
    const svc = (name: string) => {
      const j = JSON.parse(cli(['service', 'ls', '-o', 'json'])) as { name: string; clusterIP: string; ports: { nodePort?: number }[] }[];
      const s = j.find((x) => x.name === name)!;
      return { ip: s.clusterIP, nodePort: s.ports[0]?.nodePort ?? 0 };
    };

    before(async () => {
      if (skip) return;
      ensureLabBundle();
      cli(['up', '--nodes', '3', '--proxy-mode', mode]);
      cli(['pod', 'add', 'a', '--node', 'n1', '--serve', '8080', '--serve', '5353/udp']);
      cli(['pod', 'add', 'b', '--node', 'n2', '--serve', '8080', '--serve', '5353/udp']);
      cli(['pod', 'add', 'c', '--node', 'n3', '--serve', '8080', '--serve', '5353/udp']);
      for (const n of ['1', '2', '3']) cli(['pod', 'add', `cl${n}`, '--node', `n${n}`]);
      cli(['service', 'add', 'web', '--port', '80', '--target', '8080', '--pods', 'a,b,c', '--type', 'NodePort']);
      cli(['service', 'add', 'dns', '--port', '53/udp', '--target', '5353', '--pods', 'a,b,c', '--type', 'NodePort']);
      st = state();
      web = svc('web');
      dns = svc('dns');
      // every agent has synced once the cluster IP answers from every node
      for (const n of ['n1', 'n2', 'n3']) await until(`web from ${n}`, () => probe(nodeNs(n), 'tcp', web.ip, 80, 1, 1000), (r) => total(r) === 1, 30_000);
    });
    after(() => {
      for (const p of procs) if (p.exitCode === null) p.kill('SIGKILL');
      if (!skip && existsSync(join(LAB_DIR, lab))) labCli(LAB_DIR, ['down', '--name', lab]);
    });

    it('reaches all 3 endpoints of a TCP and a UDP service by cluster IP from every pod and every node', { skip }, async () => {
      for (const from of [...['cl1', 'cl2', 'cl3'].map(podNs), ...['n1', 'n2', 'n3'].map(nodeNs)]) {
        const t = await probe(from, 'tcp', web.ip, 80, 100);
        assert.deepEqual(names(t), ['a', 'b', 'c'], `tcp from ${from}: ${JSON.stringify(t.answers)} ${JSON.stringify(t.errors)}`);
        const u = await probe(from, 'udp-fresh', dns.ip, 53, 100, 1000);
        assert.deepEqual(names(u), ['a', 'b', 'c'], `udp from ${from}: ${JSON.stringify(u.answers)} ${JSON.stringify(u.errors)}`);
      }
    });

    it('serves the NodePort at every node\'s IP', { skip }, async () => {
      for (const n of ['n1', 'n2', 'n3']) {
        const t = await probe(podNs('cl1'), 'tcp', nodeIP(n), web.nodePort, 60);
        assert.deepEqual(names(t), ['a', 'b', 'c'], `tcp ${n}: ${JSON.stringify(t)}`);
        const u = await probe(podNs('cl2'), 'udp-fresh', nodeIP(n), dns.nodePort, 60, 1000);
        assert.deepEqual(names(u), ['a', 'b', 'c'], `udp ${n}: ${JSON.stringify(u)}`);
      }
    });

    it('serves a hostPort at its node\'s IP', { skip }, async () => {
      cli(['pod', 'add', 'h', '--node', 'n2', '--serve', '8080', '--serve', '5353/udp', '--host-port', '8081:8080', '--host-port', '8053:5353/udp']);
      st = state();
      const t = await probe(podNs('cl1'), 'tcp', nodeIP('n2'), 8081, 3);
      assert.deepEqual(t.answers, { h: 3 }, JSON.stringify(t));
      const u = await probe(podNs('cl3'), 'udp-fresh', nodeIP('n2'), 8053, 3, 1000);
      assert.deepEqual(u.answers, { h: 3 }, JSON.stringify(u));
      const other = await probe(podNs('cl1'), 'tcp', nodeIP('n1'), 8081, 1, 1000);
      assert.equal(total(other), 0, 'only on its own node');
    });

    it('hairpin: a pod reaches itself through its service', { skip }, async () => {
      cli(['service', 'add', 'self', '--port', '82', '--target', '8080', '--pods', 'a']);
      const self = svc('self');
      const r = await until('self', () => probe(podNs('a'), 'tcp', self.ip, 82, 5, 1000), (x) => total(x) === 5);
      assert.deepEqual(r.answers, { a: 5 });
    });

    it('ClientIP affinity keeps one client on one endpoint', { skip }, async () => {
      cli(['service', 'add', 'sticky', '--port', '81', '--target', '8080', '--pods', 'a,b,c', '--affinity', 'ClientIP']);
      const s = svc('sticky');
      await until('sticky', () => probe(podNs('cl2'), 'tcp', s.ip, 81, 1, 1000), (x) => total(x) === 1);
      for (const from of ['cl1', 'cl3']) {
        const r = await probe(podNs(from), 'tcp', s.ip, 81, 30);
        assert.equal(names(r).length, 1, `${from}: ${JSON.stringify(r.answers)}`);
        assert.equal(total(r), 30);
      }
    });

    it('externalTrafficPolicy Local keeps the client source address (Cluster masquerades it)', { skip }, async () => {
      // a server in pod a that answers with the address it sees
      procs.push(spawn('ip', ['netns', 'exec', podNs('a'), 'socat', 'TCP-LISTEN:9090,fork,reuseaddr', 'SYSTEM:echo $SOCAT_PEERADDR'], { stdio: 'ignore' }));
      cli(['service', 'add', 'peer-local', '--port', '90', '--target', '9090', '--pods', 'a', '--type', 'NodePort', '--external-traffic-policy', 'Local']);
      cli(['service', 'add', 'peer-cluster', '--port', '91', '--target', '9090', '--pods', 'a', '--type', 'NodePort']);
      const local = svc('peer-local');
      const cluster = svc('peer-cluster');
      // from node n2's own address to node n1's NodePort; pod a runs on n1
      const l = await until('local', () => probe(nodeNs('n2'), 'tcp', nodeIP('n1'), local.nodePort, 1, 1000), (x) => total(x) === 1);
      assert.deepEqual(names(l), [nodeIP('n2')]);
      const c = await until('cluster', () => probe(nodeNs('n2'), 'tcp', nodeIP('n1'), cluster.nodePort, 1, 1000), (x) => total(x) === 1);
      assert.notDeepEqual(names(c), [nodeIP('n2')], 'Cluster policy masquerades');
    });

    it('an endpoint removed gets no new connection, and a UDP client sending through the change moves to live endpoints', { skip }, async () => {
      // a UDP client on a fixed source port stays on one endpoint (its conntrack entry): learn which
      const pin = await probe(podNs('cl1'), 'udp', dns.ip, 53, 3, 1000, 41000);
      const stuck = names(pin);
      assert.equal(stuck.length, 1, JSON.stringify(pin));
      // keep sending from that port, 10 datagrams a second, while its endpoint is removed
      const steady = probe(podNs('cl1'), 'udp', dns.ip, 53, 60, 300, 41000, 100);
      await sleep(1500);
      const live = ['a', 'b', 'c'].filter((p) => p !== stuck[0]);
      cli(['endpoints', 'set', 'dns', '--pods', live.join(',')]);
      cli(['endpoints', 'set', 'web', '--pods', 'a,b']);
      const s = await steady;
      const tail = s.seq.slice(-15);
      assert.ok(tail.every((x) => live.includes(x)), `after the change only ${live} answer; last 15: ${tail}`);
      const t = await until('web without c', () => probe(podNs('cl2'), 'tcp', web.ip, 80, 60), (x) => !('c' in x.answers) && total(x) === 60);
      assert.deepEqual(names(t), ['a', 'b']);
      cli(['endpoints', 'set', 'dns', '--pods', 'a,b,c']);
      cli(['endpoints', 'set', 'web', '--pods', 'a,b,c']);
    });

    it('scaled to zero: refused at once; back to one: served again', { skip }, async () => {
      cli(['endpoints', 'set', 'web', '--pods', '']);
      const r = await until('refused', () => probe(podNs('cl3'), 'tcp', web.ip, 80, 1, 3000), (x) => x.errors.ECONNREFUSED === 1);
      assert.ok(r.ms[0] < 1000, `refused in ${r.ms[0]} ms`);
      cli(['endpoints', 'set', 'web', '--pods', 'b']);
      const back = await until('served', () => probe(podNs('cl3'), 'tcp', web.ip, 80, 3, 1000), (x) => x.answers.b === 3);
      assert.deepEqual(back.answers, { b: 3 });
      cli(['endpoints', 'set', 'web', '--pods', 'a,b,c']);
    });

    it('rejects bad services naming the service and field, and every other service keeps working', { skip }, async () => {
      const store = new FileStore(join(LAB_DIR, lab, 'store'));
      const put = async (name: string, spec: Record<string, unknown>) => {
        const ok = await store.compareAndSet(serviceStoreKey('default', name), JSON.stringify({ metadata: { name, namespace: 'default' }, spec }), 0);
        assert.ok(ok);
        await store.compareAndSet(sliceStoreKey('default', name), JSON.stringify({ metadata: { name, namespace: 'default', labels: { 'kubernetes.io/service-name': name } }, addressType: 'IPv4', endpoints: [{ addresses: [podIP('a')], conditions: { ready: true } }], ports: [{ port: 8080 }] }), 0);
      };
      try {
        await put('bad-ip', { clusterIP: '10.96.7.300', ports: [{ port: 80 }] });
        await put('bad-dup', { clusterIP: '10.96.7.2', ports: [{ name: 'x', port: 80 }, { name: 'y', port: 80 }] });
        await put('bad-range', { clusterIP: '10.96.7.3', ports: [{ port: 70000 }] });
        await put('bad-proto', { clusterIP: '10.96.7.4', ports: [{ port: 80, protocol: 'ICMP' }] });
        await put('bad-np-range', { type: 'NodePort', clusterIP: '10.96.7.5', ports: [{ port: 80, nodePort: 20000 }] });
        await put('bad-np-taken', { type: 'NodePort', clusterIP: '10.96.7.6', ports: [{ port: 80, nodePort: web.nodePort }] });
      } finally {
        await store.close();
      }
      const expect = [
        ['default/bad-ip', 'spec.clusterIP'],
        ['default/bad-dup', 'spec.ports[1].port'],
        ['default/bad-range', 'spec.ports[0].port'],
        ['default/bad-proto', 'spec.ports[0].protocol'],
        ['default/bad-np-range', 'spec.ports[0].nodePort'],
        ['default/bad-np-taken', 'spec.ports[0].nodePort'],
      ];
      const log = () => readFileSync(st.nodes.n2.log, 'utf8');
      await until('rejections logged', async () => log(), (l) => expect.every(([s, f]) => l.includes(`service ${s}: ${f}`)));
      assert.match(log(), /NodePort \d+\/TCP is already taken by service default\/web/);
      const t = await probe(podNs('cl2'), 'tcp', web.ip, 80, 30);
      assert.deepEqual(names(t), ['a', 'b', 'c']);
      const np = await probe(podNs('cl2'), 'tcp', nodeIP('n3'), web.nodePort, 30);
      assert.deepEqual(names(np), ['a', 'b', 'c']);
    });
  });
}
