// The lab's own mechanics, without agents: topology in namespaces, the state file, two labs side
// by side, pods through the node's CNI client (standalone, with a hand-written subnet file), exec,
// and `lab down` removing everything after a crash of `lab up` or with half the namespaces gone.
import { labCli } from '../helpers/lab.js';
import { netnsWithPrefix } from '../helpers/netns.js';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ensureBuilt } from '../helpers/cni.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const LAB_DIR = mkdtempSync(join(tmpdir(), 'pnlab-test-'));
process.env.PODNET_LAB_DIR = LAB_DIR;
const TAG = `t${process.pid.toString(36)}${randomBytes(2).toString('hex')}`;
const labs: string[] = [];

function labName(suffix: string): string {
  const n = `${TAG}${suffix}`;
  labs.push(n);
  return n;
}

const cli = (args: string[], opts: { input?: string } = {}) => labCli(LAB_DIR, args, { ...opts, timeoutMs: 120_000 });


function state(name: string): import('../../src/lab/state.js').LabState {
  return JSON.parse(readFileSync(join(LAB_DIR, name, 'state.json'), 'utf8'));
}

before(() => ensureBuilt());

after(async () => {
  // whatever a failed test left: every lab of this run goes, then the temp dir
  for (const l of labs) if (existsSync(join(LAB_DIR, l))) cli(['down', '--name', l]);
  for (const ns of netnsWithPrefix(`pnlab-${TAG}`)) spawnSync('ip', ['netns', 'del', ns]);
  rmSync(LAB_DIR, { recursive: true, force: true });
});

test('lab up --no-agents: fabric and nodes on the underlay, state recorded; a second lab coexists; down removes all', { timeout: 120_000 }, () => {
  const a = labName('a');
  const b = labName('b');
  let r = cli(['up', '--name', a, '--nodes', '2', '--no-agents', '-o', 'json']);
  assert.equal(r.code, 0, r.stderr);
  r = cli(['up', '--name', b, '--nodes', '1', '--backend', 'host-gw', '--no-agents']);
  assert.equal(r.code, 0, r.stderr);
  const sa = state(a);
  const sb = state(b);
  assert.notEqual(sa.underlayK, sb.underlayK, 'two labs get different underlays');
  assert.deepEqual(Object.keys(sa.nodes), ['n1', 'n2']);
  assert.deepEqual(netnsWithPrefix(`pnlab-${a}-`).sort(), [`pnlab-${a}-fabric`, `pnlab-${a}-n1`, `pnlab-${a}-n2`]);
  // node to node and node to fabric over the underlay; forwarding on in the node
  r = cli(['exec', 'n1', '--name', a, '--', 'ping', '-c1', '-W2', sa.nodes.n2.ip]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  r = cli(['exec', 'n2', '--name', a, '--', 'sysctl', '-n', 'net.ipv4.ip_forward']);
  assert.equal(r.stdout.trim(), '1');
  r = cli(['exec', 'n1', '--name', a, '--', 'ip', '-j', 'route', 'show', 'default']);
  assert.equal(JSON.parse(r.stdout)[0].gateway, sa.fabricIp);
  // exit codes pass through
  r = cli(['exec', 'n1', '--name', a, '--', 'sh', '-c', 'exit 7']);
  assert.equal(r.code, 7);
  // creating a lab that exists is refused and leaves it alone
  r = cli(['up', '--name', a, '--nodes', '1', '--no-agents']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /exists already/);
  assert.equal(netnsWithPrefix(`pnlab-${a}-`).length, 3);
  r = cli(['ls', '-o', 'json']);
  const ls = JSON.parse(r.stdout) as { name: string }[];
  assert.deepEqual(ls.map((x) => x.name).filter((n) => n === a || n === b).sort(), [a, b].sort());

  r = cli(['down', '--name', a]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(netnsWithPrefix(`pnlab-${a}-`), []);
  assert.ok(!existsSync(join(LAB_DIR, a)));
  // the other lab is untouched
  assert.equal(netnsWithPrefix(`pnlab-${b}-`).length, 2);
  r = cli(['down', '--name', b]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(netnsWithPrefix(`pnlab-${b}-`), []);
});

test('lab pod add/del through the node\'s CNI client (standalone, hand-written subnet file), status, exec in a pod', { timeout: 120_000 }, () => {
  const l = labName('p');
  let r = cli(['up', '--name', l, '--nodes', '1', '--no-agents']);
  assert.equal(r.code, 0, r.stderr);
  const s = state(l);
  // no lease yet: the plugin says why (code 11), and the lab leaves no pod behind
  r = cli(['pod', 'add', 'x', '--node', 'n1', '--name', l]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /code 11/);
  assert.deepEqual(Object.keys(state(l).pods), []);
  assert.deepEqual(netnsWithPrefix(`pnlab-${l}-p-`), []);
  // what the agent would write
  writeFileSync(s.nodes.n1.subnetFile, 'PODNET_NETWORK=10.244.0.0/16\nPODNET_SUBNET=10.244.7.1/24\nPODNET_MTU=1450\nPODNET_IPMASQ=true\n');
  for (const p of ['x', 'y']) {
    r = cli(['pod', 'add', p, '--node', 'n1', '--name', l, '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(JSON.parse(r.stdout).ips[0], /^10\.244\.7\.\d+$/);
  }
  const st = state(l);
  r = cli(['exec', 'x', '--name', l, '--', 'ping', '-c1', '-W2', st.pods.y.ips[0]]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  r = cli(['status', '--name', l, '-o', 'json']);
  const status = JSON.parse(r.stdout) as { nodes: { name: string; subnet?: string }[]; pods: { name: string; ips: string[] }[] };
  assert.equal(status.nodes[0].subnet, '10.244.7.0/24');
  assert.deepEqual(status.pods.map((p) => p.name), ['x', 'y']);
  r = cli(['pod', 'del', 'y', '--name', l]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(!existsSync(`/run/netns/pnlab-${l}-p-y`));
  assert.deepEqual(Object.keys(state(l).pods), ['x']);
  // the address went back to IPAM: the next pod may reuse it, and no host veth is left for y
  r = cli(['exec', 'n1', '--name', l, '--', 'ip', '-o', 'link', 'show', 'master', 'podnet0']);
  assert.equal(r.stdout.trim().split('\n').length, 1, r.stdout);
  r = cli(['down', '--name', l]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(netnsWithPrefix(`pnlab-${l}-`), []);
});

test('lab down after the lab process is killed mid-up removes every namespace and the dir', { timeout: 120_000 }, async () => {
  const l = labName('k');
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/lab/standalone.ts'), 'lab', 'up', '--name', l, '--nodes', '8', '--no-agents'], {
    cwd: ROOT,
    env: { ...process.env, PODNET_LAB_DIR: LAB_DIR },
    stdio: 'ignore',
  });
  const exited = new Promise((res) => child.on('exit', res));
  // kill -9 once some nodes are recorded, while others are still to come
  const until = Date.now() + 60_000;
  for (;;) {
    const p = join(LAB_DIR, l, 'state.json');
    if (existsSync(p)) {
      try {
        if (Object.keys(state(l).nodes).length >= 2) break;
      } catch {
        /* being renamed: read again */
      }
    }
    assert.ok(Date.now() < until, 'lab up did not get to its second node');
    await sleep(20);
  }
  child.kill('SIGKILL');
  await exited;
  const st = state(l);
  assert.equal(st.phase, 'building');
  assert.ok(netnsWithPrefix(`pnlab-${l}-`).length >= 2);
  const r = cli(['down', '--name', l]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(netnsWithPrefix(`pnlab-${l}-`), []);
  assert.ok(!existsSync(join(LAB_DIR, l)));
});

test('lab down with half the namespaces gone, a recorded process alive and a recycled PID in the state', { timeout: 120_000 }, async () => {
  const { startDetached, isAlive } = await import('../../src/lab/sys.js');
  const { updateState } = await import('../../src/lab/state.js');
  const l = labName('h');
  let r = cli(['up', '--name', l, '--nodes', '4', '--no-agents']);
  assert.equal(r.code, 0, r.stderr);
  let s = state(l);
  // a stand-in for an agent: a process inside node n1's namespace, recorded as its agent
  const agent = startDetached(['ip', 'netns', 'exec', s.nodes.n1.ns, 'sleep', '300'], join(LAB_DIR, `${l}-sleep.log`));
  // a PID that was recycled: alive, but its start time is not what the state says
  const bystander = spawn('sleep', ['300'], { stdio: 'ignore', detached: true });
  // a process the lab started but never recorded (crash between spawn and the state write)
  const stray = startDetached(['ip', 'netns', 'exec', s.nodes.n2.ns, 'sleep', '300'], join(LAB_DIR, `${l}-stray.log`));
  try {
    s = await updateState(l, (st) => {
      st.nodes.n1.agent = agent;
      st.nodes.n2.agent = { pid: bystander.pid!, startTime: '1' };
    });
    // half the namespaces vanish behind the lab's back
    spawnSync('ip', ['netns', 'del', s.nodes.n3.ns]);
    spawnSync('ip', ['netns', 'del', s.nodes.n4.ns]);
    r = cli(['status', '--name', l, '-o', 'json']);
    const st = JSON.parse(r.stdout) as { nodes: { name: string; agentAlive: boolean; nsExists: boolean }[] };
    assert.deepEqual(st.nodes.map((n) => [n.name, n.agentAlive, n.nsExists]), [['n1', true, true], ['n2', false, true], ['n3', false, false], ['n4', false, false]]);
    r = cli(['down', '--name', l]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(netnsWithPrefix(`pnlab-${l}-`), []);
    assert.ok(!isAlive(agent), 'the recorded process was stopped');
    assert.ok(!isAlive(stray), 'an unrecorded process inside a lab namespace was stopped');
    assert.equal(bystander.exitCode, null, 'a process whose start time does not match is not signalled');
    assert.ok(!existsSync(join(LAB_DIR, l)));
  } finally {
    bystander.kill('SIGKILL');
    for (const p of [agent, stray]) {
      try {
        if (isAlive(p)) process.kill(p.pid, 'SIGKILL');
      } catch {
        /* stopped by down */
      }
    }
  }
});
