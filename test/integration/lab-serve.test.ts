// The lab's side of services: pods that serve (`pod add --serve`: a reply server in the pod's
// namespace, answering TCP and UDP with the pod's name, stopped by its PID), and the Service and
// EndpointSlice objects `service add|del`, `endpoints set` write to the lab's store for podnet's
// proxy, as `service ls` and `status` show them; invalid services are refused naming the field,
// with nothing written. (Reaching a cluster IP through the proxy is the proxy's own test.)
import { ensureLabBundle, labCli, probe } from '../helpers/lab.js';
import { netnsWithPrefix } from '../helpers/netns.js';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStore } from '../../src/store/file-store.js';
import { isAlive } from '../../src/lab/sys.js';
import type { LabState } from '../../src/lab/state.js';
import type { ServiceView } from '../../src/lab/services.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const LAB_DIR = mkdtempSync(join(tmpdir(), 'pnlab-test-'));
const TAG = `s${process.pid.toString(36)}${randomBytes(2).toString('hex')}`;
const LAB = `${TAG}a`;
const ELAB = `${TAG}e`;

const cli = (args: string[]) => labCli(LAB_DIR, [...args, '--name', LAB], { timeoutMs: 240_000 });
const state = (): LabState => JSON.parse(readFileSync(join(LAB_DIR, LAB, 'state.json'), 'utf8'));

async function storeKvs(prefix = '/podnet/'): Promise<Record<string, string>> {
  const store = new FileStore(join(LAB_DIR, LAB, 'store'));
  try {
    const { kvs } = await store.list(prefix);
    return Object.fromEntries(kvs.map((kv) => [kv.key, kv.value]));
  } finally {
    await store.close();
  }
}

const skip = (() => {
  ensureLabBundle();
  const r = spawnSync(process.execPath, [join(ROOT, 'dist/podnet.mjs'), 'agent', '--help'], { encoding: 'utf8' });
  return /--store/.test(r.stdout) ? false : 'podnet agent has no --store (cluster side) yet';
})();

before(() => {
  if (skip) return;
  const r = cli(['up', '--nodes', '2']);
  assert.equal(r.code, 0, r.stderr);
});

after(() => {
  if (existsSync(join(LAB_DIR, LAB))) cli(['down']);
  if (existsSync(join(LAB_DIR, ELAB))) labCli(LAB_DIR, ['down', '--name', ELAB]);
  for (const ns of netnsWithPrefix(`pnlab-${TAG}`)) spawnSync('ip', ['netns', 'del', ns]);
  rmSync(LAB_DIR, { recursive: true, force: true });
});

test('pod add --serve: TCP and UDP answered with the pod\'s name, from a pod on the same and on another node', { skip, timeout: 120_000 }, () => {
  for (const [pod, node] of [['a', 'n1'], ['b', 'n2']]) {
    const r = cli(['pod', 'add', pod, '--node', node, '--serve', '8080', '--serve', '5353/udp', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout) as { ips: string[]; serve: { ports: string[]; pid: number; log: string } };
    assert.deepEqual(j.serve.ports, ['8080/tcp', '5353/udp']);
    assert.ok(j.serve.log.startsWith(join(LAB_DIR, LAB)), 'the server logs into the lab dir');
    // the recorded PID is the server itself, running in the pod's namespace
    const st = state();
    assert.equal(st.pods[pod].serve?.proc?.pid, j.serve.pid);
    const cmd = readFileSync(`/proc/${j.serve.pid}/cmdline`, 'utf8').split('\0');
    assert.ok(cmd.includes('serve') && cmd[cmd.indexOf('--reply') + 1] === pod, cmd.join(' '));
    const podNet = spawnSync('stat', ['-L', '-c', '%i', `/run/netns/${st.pods[pod].ns}`], { encoding: 'utf8' }).stdout.trim();
    assert.equal(spawnSync('stat', ['-L', '-c', '%i', `/proc/${j.serve.pid}/ns/net`], { encoding: 'utf8' }).stdout.trim(), podNet);
  }
  let r = cli(['pod', 'add', 'c', '--node', 'n2']);
  assert.equal(r.code, 0, r.stderr);
  const st = state();
  const client = st.pods.c.ns;
  for (const pod of ['a', 'b']) {
    const ip = st.pods[pod].ips[0];
    // twice each: every connection and every datagram is answered
    for (let i = 0; i < 2; i++) {
      const t = probe(client, 'tcp', ip, 8080);
      assert.equal(t.code, 0, `tcp ${pod}: ${t.err}`);
      assert.equal(t.out, `${pod}\n`);
      const u = probe(client, 'udp', ip, 5353);
      assert.equal(u.code, 0, `udp ${pod}: ${u.err}`);
      assert.equal(u.out, `${pod}\n`);
    }
  }
  // a port it does not serve is refused, not answered
  assert.notEqual(probe(client, 'tcp', st.pods.a.ips[0], 8081).code, 0);
  // status shows the servers
  r = cli(['status', '-o', 'json']);
  const status = JSON.parse(r.stdout) as { pods: { name: string; serve?: { ports: string[]; alive: boolean } }[] };
  assert.deepEqual(
    status.pods.map((p) => [p.name, p.serve?.alive ?? null]),
    [
      ['a', true],
      ['b', true],
      ['c', null],
    ],
  );
  // a bad --serve is refused before anything is created
  r = cli(['pod', 'add', 'd', '--node', 'n1', '--serve', '70000']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^podnet lab: --serve "70000": port out of range \(1-65535\)\n$/);
  assert.equal(state().pods.d, undefined);
  assert.deepEqual(netnsWithPrefix(`pnlab-${LAB}-p-d`), []);
});

test('service add writes a Service and an EndpointSlice that service ls and status show; endpoints set; service del', { skip, timeout: 120_000 }, async () => {
  const st = state();
  let r = cli(['service', 'add', 'web', '--port', '80', '--target', '8080', '--pods', 'a,b', '-o', 'json']);
  assert.equal(r.code, 0, r.stderr);
  const web = JSON.parse(r.stdout) as ServiceView;
  assert.equal(web.clusterIP, '10.96.0.2', 'the first free address of the default service CIDR (.1 is reserved)');
  assert.deepEqual(web.endpoints, ['a', 'b']);
  r = cli(['service', 'add', 'dns', '--port', '53/udp', '--target', '5353', '--pods', 'b', '--type', 'NodePort', '--affinity', 'ClientIP', '--affinity-timeout', '60', '--internal-traffic-policy', 'Local', '-o', 'json']);
  assert.equal(r.code, 0, r.stderr);
  const dns = JSON.parse(r.stdout) as ServiceView;
  assert.equal(dns.clusterIP, '10.96.0.3');
  assert.equal(dns.nodePort, 30000, 'the lowest free NodePort');

  // the objects in the store, one per key, as the proxy reads them
  const kvs = await storeKvs();
  const svc = JSON.parse(kvs['/podnet/services/default/web']);
  const slice = JSON.parse(kvs['/podnet/endpointslices/default/web']);
  assert.equal(svc.kind, 'Service');
  assert.deepEqual(svc.metadata.name, 'web');
  assert.equal(svc.spec.type, 'ClusterIP');
  assert.equal(svc.spec.clusterIP, '10.96.0.2');
  assert.deepEqual(svc.spec.ports, [{ name: '', protocol: 'TCP', port: 80, targetPort: 8080 }]);
  assert.equal(slice.kind, 'EndpointSlice');
  assert.equal(slice.metadata.labels['kubernetes.io/service-name'], 'web');
  assert.equal(slice.addressType, 'IPv4');
  assert.deepEqual(slice.ports, [{ name: '', port: 8080, protocol: 'TCP' }]);
  // nodeName is the name each agent runs with (--node-name), so the proxy knows which are local
  assert.deepEqual(
    slice.endpoints.map((e: { addresses: string[]; nodeName: string; conditions: { ready: boolean } }) => [e.addresses, e.nodeName, e.conditions.ready]),
    [
      [[st.pods.a.ips[0]], 'n1', true],
      [[st.pods.b.ips[0]], 'n2', true],
    ],
  );
  const agentArgs = readFileSync(`/proc/${st.nodes.n1.agent!.pid}/cmdline`, 'utf8').split('\0');
  assert.equal(agentArgs[agentArgs.indexOf('--node-name') + 1], 'n1');
  const dnsSvc = JSON.parse(kvs['/podnet/services/default/dns']);
  assert.deepEqual(dnsSvc.spec.ports, [{ name: '', protocol: 'UDP', port: 53, targetPort: 5353, nodePort: 30000 }]);
  assert.equal(dnsSvc.spec.sessionAffinity, 'ClientIP');
  assert.deepEqual(dnsSvc.spec.sessionAffinityConfig, { clientIP: { timeoutSeconds: 60 } });
  assert.equal(dnsSvc.spec.internalTrafficPolicy, 'Local');

  const brief = (l: ServiceView[]) => l.map((v) => [v.name, v.type, v.clusterIP, v.ports.map((p) => `${p.port}/${p.protocol}>${p.targetPort}`).join(), v.nodePort ?? null, v.endpoints, v.affinity]);
  const expected = [
    ['dns', 'NodePort', '10.96.0.3', '53/UDP>5353', 30000, ['b'], 'ClientIP'],
    ['web', 'ClusterIP', '10.96.0.2', '80/TCP>8080', null, ['a', 'b'], 'None'],
  ];
  r = cli(['service', 'ls', '-o', 'json']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(brief(JSON.parse(r.stdout)), expected);
  r = cli(['status', '-o', 'json']);
  const status = JSON.parse(r.stdout) as { services: ServiceView[]; servicesFrom: string; serviceCidr: string; proxyMode: string };
  assert.equal(status.servicesFrom, 'store');
  assert.equal(status.serviceCidr, '10.96.0.0/16');
  assert.equal(status.proxyMode, 'nftables');
  assert.deepEqual(brief(status.services), expected);
  r = cli(['status']);
  assert.match(r.stdout, /web\s+ClusterIP\s+10\.96\.0\.2\s+80\/TCP→8080\s+-\s+a, b\s+None/);
  assert.match(r.stdout, /dns\s+NodePort\s+10\.96\.0\.3\s+53:30000\/UDP→5353\s+30000\s+b\s+ClientIP 60s/);

  // scale to zero and back
  r = cli(['endpoints', 'set', 'web', '--pods', '']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse((await storeKvs())['/podnet/endpointslices/default/web']).endpoints, []);
  r = cli(['service', 'ls', '-o', 'json']);
  assert.deepEqual((JSON.parse(r.stdout) as ServiceView[]).find((v) => v.name === 'web')?.endpoints, []);
  r = cli(['endpoints', 'set', 'web', '--pods', 'b', '-o', 'json']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual((JSON.parse(r.stdout) as ServiceView).endpoints, ['b']);
  r = cli(['endpoints', 'set', 'web', '--pods', 'nosuch']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /has no pod nosuch/);

  // a second service gets the next address; the address of a deleted one is free again
  r = cli(['service', 'del', 'web']);
  assert.equal(r.code, 0, r.stderr);
  const after = await storeKvs('/podnet/');
  assert.equal(after['/podnet/services/default/web'], undefined);
  assert.equal(after['/podnet/endpointslices/default/web'], undefined);
  assert.ok(after['/podnet/services/default/dns'], 'the other service stays');
  r = cli(['service', 'ls', '-o', 'json']);
  assert.deepEqual((JSON.parse(r.stdout) as ServiceView[]).map((v) => v.name), ['dns']);
  r = cli(['service', 'del', 'web']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /has no service web/);
  r = cli(['service', 'add', 'web2', '--port', '80', '--pods', 'a', '-o', 'json']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((JSON.parse(r.stdout) as ServiceView).clusterIP, '10.96.0.2');
});

test('an invalid service is refused naming the service and the field, and nothing is written', { skip, timeout: 120_000 }, async () => {
  const before = await storeKvs();
  const servicesBefore = Object.keys(state().services).sort();
  const cases: [string[], RegExp][] = [
    [['service', 'add', 'bad', '--port', '70000', '--target', '8080', '--pods', 'a'], /^podnet lab: service default\/bad: spec\.ports\[0\]\.port: port 70000 is out of range \(1-65535\) \(--port\)\n$/],
    [['service', 'add', 'bad', '--port', '80', '--type', 'NodePort', '--node-port', '20000', '--pods', 'a'], /^podnet lab: service default\/bad: spec\.ports\[0\]\.nodePort: 20000 is outside the NodePort range 30000-32767 \(--node-port\)\n$/],
    // the NodePort dns holds
    [['service', 'add', 'bad', '--port', '53/udp', '--type', 'NodePort', '--node-port', '30000'], /^podnet lab: service default\/bad: spec\.ports\[0\]\.nodePort: NodePort 30000\/UDP is already taken by service default\/dns \(--node-port\)\n$/],
    [['service', 'add', 'bad', '--port', '80', '--affinity', 'ClientIP', '--affinity-timeout', '0'], /spec\.sessionAffinityConfig\.clientIP\.timeoutSeconds: expected 1-86400, got 0 \(--affinity-timeout\)\n$/],
    [['service', 'add', 'dns', '--port', '80'], /^podnet lab: lab \S+ has a service dns already/],
    [['service', 'add', 'bad', '--port', '80', '--pods', 'a,nosuch'], /^podnet lab: --pods: lab \S+ has no pod nosuch/],
    [['service', 'add', 'bad', '--port', '80', '--cluster-ip', '10.96.0.3'], /^podnet lab: --cluster-ip 10\.96\.0\.3 is in use by another service\n$/],
    [['service', 'add', 'bad', '--port', '80', '--external-traffic-policy', 'Local'], /needs --type NodePort/],
    [['service', 'add', 'bad', '--port', 'http'], /^podnet lab: --port "http": expected PORT, PORT\/tcp or PORT\/udp\n$/],
  ];
  for (const [args, want] of cases) {
    const r = cli(args);
    assert.equal(r.code, 1, `${args.join(' ')}: ${r.stdout}`);
    assert.match(r.stderr, want, args.join(' '));
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
  }
  assert.deepEqual(await storeKvs(), before, 'the store is unchanged');
  assert.deepEqual(Object.keys(state().services).sort(), servicesBefore);
});

test('pod del stops its server by PID and removes the pod from every service\'s endpoints; lab down stops the rest', { skip, timeout: 120_000 }, async () => {
  let st = state();
  const a = st.pods.a.serve!.proc!;
  const b = st.pods.b.serve!.proc!;
  assert.ok(isAlive(a) && isAlive(b));
  let r = cli(['pod', 'del', 'b']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /its server stopped/);
  assert.ok(!isAlive(b), `server PID ${b.pid} is gone`);
  assert.ok(isAlive(a), 'the other pod\'s server runs on');
  // dns had b as its only endpoint
  r = cli(['service', 'ls', '-o', 'json']);
  assert.deepEqual((JSON.parse(r.stdout) as ServiceView[]).find((v) => v.name === 'dns')?.endpoints, []);
  assert.deepEqual(JSON.parse((await storeKvs())['/podnet/endpointslices/default/dns']).endpoints, []);
  st = state();
  assert.equal(st.pods.b, undefined);
  r = cli(['down']);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(!isAlive(a), `server PID ${a.pid} is gone after lab down`);
  assert.deepEqual(netnsWithPrefix(`pnlab-${LAB}-`), []);
});

test('on the etcd store: service add, ls, endpoints set, del through etcd; status falls back to the lab\'s record while etcd is down', { skip, timeout: 180_000 }, () => {
  const ecli = (args: string[]) => labCli(LAB_DIR, [...args, '--name', ELAB], { timeoutMs: 120_000 });
  let r = ecli(['up', '--nodes', '1', '--store', 'etcd', '--service-cidr', '10.100.0.0/24', '--proxy-mode', 'off']);
  assert.equal(r.code, 0, r.stderr);
  try {
    r = ecli(['pod', 'add', 'x', '--node', 'n1', '--serve', '80']);
    assert.equal(r.code, 0, r.stderr);
    r = ecli(['service', 'add', 'web', '--port', '80', '--pods', 'x', '--type', 'NodePort', '--node-port', '31000', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    const v = JSON.parse(r.stdout) as ServiceView;
    assert.equal(v.clusterIP, '10.100.0.2', 'from the lab\'s --service-cidr');
    assert.equal(v.nodePort, 31000);
    const brief = () => (JSON.parse(ecli(['service', 'ls', '-o', 'json']).stdout) as ServiceView[]).map((x) => [x.name, x.clusterIP, x.endpoints]);
    assert.deepEqual(brief(), [['web', '10.100.0.2', ['x']]]);
    r = ecli(['endpoints', 'set', 'web', '--pods', '']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(brief(), [['web', '10.100.0.2', []]]);
    // the agent got the lab's proxy mode
    const st = JSON.parse(readFileSync(join(LAB_DIR, ELAB, 'state.json'), 'utf8')) as LabState;
    const argv = readFileSync(`/proc/${st.nodes.n1.agent!.pid}/cmdline`, 'utf8').split('\0');
    if (argv.includes('--proxy-mode')) assert.equal(argv[argv.indexOf('--proxy-mode') + 1], 'off');
    // etcd down: status still answers, from what the lab wrote
    r = ecli(['etcd', 'stop', 'e1']);
    assert.equal(r.code, 0, r.stderr);
    r = ecli(['status', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    const status = JSON.parse(r.stdout) as { services: ServiceView[]; servicesFrom: string; servicesError?: string };
    assert.equal(status.servicesFrom, 'state');
    assert.ok(status.servicesError);
    assert.deepEqual(status.services.map((x) => [x.name, x.clusterIP, x.endpoints]), [['web', '10.100.0.2', []]]);
    r = ecli(['service', 'ls']);
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    r = ecli(['etcd', 'start', 'e1']);
    assert.equal(r.code, 0, r.stderr);
    // etcd needs a moment to answer again
    for (let i = 0; i < 30; i++) {
      r = ecli(['service', 'del', 'web']);
      if (r.code === 0) break;
      spawnSync('sleep', ['0.5']);
    }
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(brief(), []);
  } finally {
    r = ecli(['down']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(netnsWithPrefix(`pnlab-${ELAB}-`), []);
  }
});
