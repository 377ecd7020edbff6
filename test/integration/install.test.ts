// `podnet install` from a copy of the checkout (and from an `npm pack` tarball installed with
// npm) into temp directories; the copy deleted; pods wired through the installed CNI
// executable (standalone, then through the installed agent started as its unit's ExecStart
// says, in a node namespace), then a two-node lab run by the installed launcher; `podnet
// uninstall` leaves the directories exactly as before.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureBuilt, execPlugin } from '../helpers/cni.js';
import { NetnsFixture, RUN_PREFIX } from '../helpers/netns.js';
import { pingFrom } from '../../src/util/ping.js';
import { unitExecStart } from '../../src/install/plan.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const fixture = new NetnsFixture();
const tmps: string[] = [];
const agents: ChildProcess[] = [];
after(async () => {
  for (const a of agents) {
    if (a.exitCode === null && a.signalCode === null) {
      const done = new Promise((r) => a.once('exit', r));
      a.kill('SIGKILL');
      await done;
    }
  }
  fixture.cleanup();
  for (const t of tmps) rmSync(t, { recursive: true, force: true });
});

function tmp(tag: string): string {
  const t = mkdtempSync(join(tmpdir(), `${RUN_PREFIX}-${tag}-`));
  tmps.push(t);
  return t;
}

/** Every entry under dir: path, type, mode, and for files size and SHA-256. */
function listing(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    for (const e of readdirSync(d).sort()) {
      const p = join(d, e);
      const r = `${rel}/${e}`;
      const st = lstatSync(p);
      const mode = (st.mode & 0o7777).toString(8);
      if (st.isDirectory()) {
        out.push(`${r}/ ${mode}`);
        walk(p, r);
      } else out.push(`${r} ${mode} ${st.size} ${st.isFile() ? createHash('sha256').update(readFileSync(p)).digest('hex') : 'special'}`);
    }
  };
  walk(dir, '');
  return out;
}

/** What a node's install dirs hold before podnet: another plugin, another network's conflist, an empty unit dir; no /opt. */
function seedRoot(root: string): void {
  mkdirSync(join(root, 'bin'), { recursive: true });
  if (existsSync('/usr/lib/cni/loopback')) copyFileSync('/usr/lib/cni/loopback', join(root, 'bin/loopback'));
  else writeFileSync(join(root, 'bin/loopback'), '#!/bin/sh\n', { mode: 0o755 });
  mkdirSync(join(root, 'net.d'));
  writeFileSync(join(root, 'net.d/99-other.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'other', plugins: [{ type: 'loopback' }] }) + '\n');
  mkdirSync(join(root, 'systemd'));
}

function installArgs(root: string, state: string): string[] {
  return ['install', '--prefix', join(root, 'opt/podnet'), '--cni-bin-dir', join(root, 'bin'), '--cni-conf-dir', join(root, 'net.d'), '--systemd-dir', join(root, 'systemd'), '--socket', join(state, 'podnet.sock'), '-o', 'json'];
}

interface Outcome {
  code: number;
  stdout: string;
  json?: Record<string, unknown>;
}

/** The installed executable exec'd in the node namespace as a runtime does. */
async function cni(nodeNs: string, binDir: string, logFile: string, command: string, conf: unknown, extra: Record<string, string> = {}): Promise<Outcome> {
  // PODNET_KERNEL=netlink: a plugin that cannot load koffi (from the prefix) fails instead of falling back to iproute2
  const env = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', CNI_COMMAND: command, CNI_PATH: binDir, CNI_IFNAME: 'eth0', PODNET_CNI_LOG: logFile, PODNET_KERNEL: 'netlink', ...extra };
  const r = await execPlugin(nodeNs, join(binDir, 'podnet'), env, JSON.stringify(conf)).done;
  return { code: r.code, stdout: r.stdout + r.stderr, json: r.json };
}

function lastLog(logFile: string, cmd: string): Record<string, unknown> {
  const lines = readFileSync(logFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  const l = lines.reverse().find((x) => x.cmd === cmd);
  assert.ok(l, `a ${cmd} line in ${logFile}`);
  return l;
}

/** The installed conflist as the runtime turns it into the plugin's config, with its IPAM state in the test's dir. */
function podConf(root: string, state: string, subnet: string): Record<string, unknown> {
  const list = JSON.parse(readFileSync(join(root, 'net.d/10-podnet.conflist'), 'utf8'));
  const plugin = { ...list.plugins[0], ipam: { type: 'podnet-ipam', ranges: [[{ subnet }]], dataDir: join(state, 'ipam') } };
  return { cniVersion: list.cniVersion, name: list.name, ...plugin };
}

/** ADD, CHECK, DEL of one pod through the installed plugin; returns the ADD's log line. */
async function podRoundTrip(nodeNs: string, root: string, state: string, subnet: string, id: string): Promise<Record<string, unknown>> {
  const pod = fixture.add('ipod');
  const conf = podConf(root, state, subnet);
  const env = { CNI_CONTAINERID: id, CNI_NETNS: `/run/netns/${pod}` };
  const bin = join(root, 'bin');
  const log = join(state, 'cni.log');
  const add = await cni(nodeNs, bin, log, 'ADD', conf, env);
  assert.equal(add.code, 0, add.stdout);
  const ip = String((add.json!.ips as { address: string }[])[0].address).split('/')[0];
  const addrs = JSON.parse(execFileSync('ip', ['-n', pod, '-j', 'addr', 'show', 'eth0'], { encoding: 'utf8' }));
  assert.ok(addrs[0].addr_info.some((a: { local: string }) => a.local === ip), `eth0 in the pod has ${ip}`);
  assert.ok(pingFrom(nodeNs, ip), `the node reaches the pod at ${ip}`);
  const addLine = lastLog(log, 'ADD');
  const check = await cni(nodeNs, bin, log, 'CHECK', { ...conf, prevResult: add.json }, env);
  assert.equal(check.code, 0, check.stdout);
  const del = await cni(nodeNs, bin, log, 'DEL', conf, env);
  assert.equal(del.code, 0, del.stdout);
  assert.equal(execFileSync('ip', ['-n', pod, '-j', 'link', 'show'], { encoding: 'utf8' }).includes('"eth0"'), false, 'eth0 gone after DEL');
  return addLine;
}

/** Installed text files must not name where the install came from (it is deleted). */
function assertNoSourcePaths(root: string, source: string): void {
  for (const p of ['opt/podnet/bin/podnet', 'bin/.podnet-client.conf', 'net.d/10-podnet.conflist', 'systemd/podnet-agent.service']) {
    assert.ok(!readFileSync(join(root, p), 'utf8').includes(source), `${p} names ${source}`);
  }
}

function uninstallAndCompare(podnet: string[], root: string, before: string[]): void {
  const afterInstall = listing(root);
  // a file changed since install: refused, nothing removed
  const conflist = join(root, 'net.d/10-podnet.conflist');
  writeFileSync(conflist, readFileSync(conflist, 'utf8').replace('"podnet"', '"edited"'));
  const refused = spawnSync(podnet[0], [...podnet.slice(1), 'uninstall', '--prefix', join(root, 'opt/podnet')], { encoding: 'utf8' });
  assert.equal(refused.status, 1, refused.stdout + refused.stderr);
  assert.match(refused.stderr, /changed since install.*\n.*10-podnet\.conflist/);
  const edited = listing(root);
  assert.deepEqual(edited.filter((l) => !l.startsWith('/net.d/10-podnet.conflist ')), afterInstall.filter((l) => !l.startsWith('/net.d/10-podnet.conflist ')), 'nothing removed');
  const u = spawnSync(podnet[0], [...podnet.slice(1), 'uninstall', '--prefix', join(root, 'opt/podnet'), '--force', '-o', 'json'], { encoding: 'utf8' });
  assert.equal(u.status, 0, u.stdout + u.stderr);
  assert.deepEqual(JSON.parse(u.stdout).forced, [conflist]);
  assert.deepEqual(listing(root), before, 'the directories are as they were');
  assert.ok(!existsSync(podnet[0]), 'the launcher went with the rest');
  // the checkout's CLI: there is no installed one any more
  const again = spawnSync(process.execPath, [join(ROOT, 'dist/podnet.mjs'), 'uninstall', '--prefix', join(root, 'opt/podnet')], { encoding: 'utf8' });
  assert.equal(again.status, 2, again.stdout + again.stderr);
  assert.match(again.stderr, /nothing installed at/);
}

test('podnet install from a copy of the checkout: the copy deleted, pods through the installed plugin and agent; uninstall restores the directories', async () => {
  ensureBuilt();
  const t = tmp('inst');
  const copy = join(t, 'copy');
  mkdirSync(copy);
  execFileSync('cp', ['-a', join(ROOT, 'package.json'), join(ROOT, 'dist'), join(ROOT, 'node_modules'), copy]);
  const root = join(t, 'root');
  const state = join(t, 'state');
  mkdirSync(state);
  seedRoot(root);
  const before = listing(root);

  const r = spawnSync(process.execPath, [join(copy, 'dist/podnet.mjs'), ...installArgs(root, state)], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.source.root, copy);
  assert.deepEqual(out.warnings, []);
  assert.ok(out.natives.some((p: string) => p.startsWith(join(root, 'opt/podnet/lib/node_modules/@koromix/')) && p.endsWith('.node')), "koffi's binary in the prefix");
  assert.ok(out.natives.includes(join(root, 'opt/podnet/lib/dist/podnet-cni-client')));
  assert.ok(out.natives.includes(join(root, 'opt/podnet/lib/dist/podnet-tund')));
  assert.equal(out.unit, join(root, 'systemd/podnet-agent.service'));
  // a second install over the first: its own unchanged files, replaced in place
  const r2 = spawnSync(process.execPath, [join(copy, 'dist/podnet.mjs'), ...installArgs(root, state)], { encoding: 'utf8' });
  assert.equal(r2.status, 0, r2.stdout + r2.stderr);
  assert.deepEqual(JSON.parse(r2.stdout).dirsCreated, []);

  rmSync(copy, { recursive: true, force: true });
  assertNoSourcePaths(root, copy);
  const launcher = join(root, 'opt/podnet/bin/podnet');
  assert.equal(execFileSync(launcher, ['--version'], { encoding: 'utf8' }).trim(), '0.1.0');

  const nodeNs = fixture.add('inode');
  // no agent: the client runs the installed bundle standalone (koffi loaded from the prefix)
  const standalone = await podRoundTrip(nodeNs, root, state, '10.83.0.0/24', 'inst-standalone');
  assert.equal((standalone.steps as Record<string, number>)['socket-read'], undefined, 'served standalone');

  // the agent as its unit starts it
  const argv = unitExecStart(readFileSync(join(root, 'systemd/podnet-agent.service'), 'utf8'));
  assert.deepEqual(argv, [launcher, 'agent', '--socket', join(state, 'podnet.sock')]);
  const agent = spawn('ip', ['netns', 'exec', nodeNs, ...argv, '--log-level', 'warn'], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, PODNET_CNI_LOG: join(state, 'cni.log'), PODNET_DATA_DIR: join(state, 'agent'), PODNET_KERNEL: 'netlink' },
  });
  agents.push(agent);
  let agentErr = '';
  agent.stderr!.on('data', (d) => (agentErr += d));
  const sock = join(state, 'podnet.sock');
  for (let i = 0; i < 200 && !existsSync(sock) && agent.exitCode === null; i++) await new Promise((res) => setTimeout(res, 25));
  assert.ok(existsSync(sock), `the installed agent serves ${sock}: ${agentErr}`);
  const served = await podRoundTrip(nodeNs, root, state, '10.83.0.0/24', 'inst-agent');
  assert.equal(typeof (served.steps as Record<string, number>)['socket-read'], 'number', 'served by the agent');
  const exited = new Promise<number | null>((res) => agent.once('exit', (code) => res(code)));
  agent.kill('SIGTERM');
  assert.equal(await exited, 0, agentErr);

  labThroughInstall(launcher, join(root, 'opt/podnet/lib'), t);

  uninstallAndCompare([launcher], root, before);

  // the CLI around it: --help, --dry-run writes nothing, a foreign file in the way refuses (exit 1) before anything is written
  const cli = (args: string[]) => spawnSync(process.execPath, [join(ROOT, 'dist/podnet.mjs'), ...args], { encoding: 'utf8' });
  const help = cli(['install', '--help']);
  for (const f of ['--prefix', '--cni-bin-dir', '--cni-conf-dir', '--systemd-dir', '--force', 'Exit codes']) assert.ok(help.stdout.includes(f), f);
  const dry = cli([...installArgs(root, state), '--dry-run']);
  assert.equal(dry.status, 0, dry.stderr);
  assert.ok(JSON.parse(dry.stdout).files.some((f: { path: string; mode: string }) => f.path === join(root, 'bin/podnet') && f.mode === '0755'));
  assert.deepEqual(listing(root), before, '--dry-run wrote nothing');
  writeFileSync(join(root, 'bin/podnet'), '#!/bin/sh\n# an older podnet cni install\n', { mode: 0o755 });
  const refused = cli(installArgs(root, state));
  assert.equal(refused.status, 1, refused.stdout + refused.stderr);
  assert.match(refused.stderr, /bin\/podnet \(not written by podnet install\)/);
  assert.ok(!existsSync(join(root, 'opt')), 'nothing written');
  rmSync(join(root, 'bin/podnet'));
  assert.deepEqual(listing(root), before);
});

/**
 * The lab run by the installed launcher (the checkout copy is gone): its agents run the prefix's
 * bundle, each node's CNI executables exec the prefix's plugin, and pods on two nodes reach
 * each other through them. `lab down` leaves no namespace.
 */
function labThroughInstall(launcher: string, lib: string, t: string): void {
  const name = `in${process.pid.toString(36)}${randomBytes(2).toString('hex')}`.slice(0, 16);
  const env = { ...process.env, PODNET_LAB_DIR: join(t, 'labs') };
  const lab = (args: string[]) => spawnSync(launcher, ['lab', ...args, '--name', name], { encoding: 'utf8', env, timeout: 120_000 });
  try {
    const up = lab(['up', '--nodes', '2', '--backend', 'vxlan']);
    assert.equal(up.status, 0, up.stdout + up.stderr);
    for (const [pod, node] of [['p1', 'n1'], ['p2', 'n2']]) {
      const r = lab(['pod', 'add', pod, '--node', node]);
      assert.equal(r.status, 0, r.stdout + r.stderr);
    }
    const st = JSON.parse(readFileSync(join(t, 'labs', name, 'state.json'), 'utf8')) as {
      nodes: Record<string, { agent: { pid: number }; binDir: string }>;
      pods: Record<string, { ns: string; ips: string[] }>;
    };
    for (const [n, node] of Object.entries(st.nodes)) {
      const argv = readFileSync(`/proc/${node.agent.pid}/cmdline`, 'utf8').split('\0');
      assert.equal(argv[1], join(lib, 'dist/podnet.mjs'), `${n}'s agent runs the installed bundle: ${argv.join(' ')}`);
      // the compiled client reads the bundle to run from .podnet-client.conf beside itself
      const conf = readFileSync(join(node.binDir, '.podnet-client.conf'), 'utf8');
      assert.match(conf, new RegExp(`^bundle=${join(lib, 'dist/podnet-cni.mjs')}$`, 'm'), `${n}'s CNI client execs the installed plugin: ${conf}`);
      assert.deepEqual(readFileSync(join(node.binDir, 'podnet')), readFileSync(join(lib, 'dist/podnet-cni-client')), `${n}'s CNI executable is the installed client`);
    }
    assert.ok(pingFrom(st.pods.p1.ns, st.pods.p2.ips[0]), 'p1 on n1 reaches p2 on n2');
    assert.ok(pingFrom(st.pods.p2.ns, st.pods.p1.ips[0]), 'p2 on n2 reaches p1 on n1');
    const down = lab(['down']);
    assert.equal(down.status, 0, down.stdout + down.stderr);
  } finally {
    if (existsSync(join(t, 'labs', name))) lab(['down']);
  }
  assert.deepEqual(execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').filter((l) => l.startsWith(`pnlab-${name}-`)), [], 'lab down left no namespace');
}

function registryReachable(): boolean {
  return spawnSync('npm', ['ping'], { encoding: 'utf8', timeout: 15000 }).status === 0;
}

test('npm pack, npm install of the tarball, podnet install from it: the package deleted, a pod through the installed plugin; uninstall restores', { skip: registryReachable() ? false : 'the npm registry is not reachable (npm ping)' }, async () => {
  ensureBuilt();
  const t = tmp('pack');
  const pack = spawnSync('npm', ['pack', '--json', '--pack-destination', t], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(pack.status, 0, pack.stderr);
  const info = JSON.parse(pack.stdout)[0] as { filename: string; files: { path: string }[] };
  const files = info.files.map((f) => f.path).sort();
  for (const f of ['dist/podnet-cni-client', 'dist/podnet-cni.mjs', 'dist/podnet-tund', 'dist/podnet.mjs', 'package.json']) assert.ok(files.includes(f), `${f} in the tarball`);
  assert.ok(!files.some((f) => f.startsWith('src/') || f.startsWith('test/') || f.startsWith('node_modules/')), files.join(' '));
  const pkg = join(t, 'pkg');
  // npm install --prefix needs the directory to exist (npm 11 fails with ENOENT on a fresh machine)
  mkdirSync(pkg);
  // koffi's install script is denied (conventions.md): its binary is the optional dependency npm installs
  const inst = spawnSync('npm', ['install', '--prefix', pkg, '--ignore-scripts', '--no-audit', '--no-fund', join(t, info.filename)], { encoding: 'utf8', timeout: 120000 });
  assert.equal(inst.status, 0, inst.stdout + inst.stderr);
  const root = join(t, 'root');
  const state = join(t, 'state');
  mkdirSync(state);
  seedRoot(root);
  const before = listing(root);
  const r = spawnSync(join(pkg, 'node_modules/.bin/podnet'), installArgs(root, state), { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.source.root, join(pkg, 'node_modules/podnet'));
  assert.deepEqual(out.warnings, []);
  assert.ok(out.natives.some((p: string) => p.endsWith('.node')), "koffi's binary in the prefix");
  rmSync(pkg, { recursive: true, force: true });
  rmSync(join(t, info.filename));
  assertNoSourcePaths(root, pkg);
  const nodeNs = fixture.add('pnode');
  await podRoundTrip(nodeNs, root, state, '10.84.0.0/24', 'pack-standalone');
  uninstallAndCompare([join(root, 'opt/podnet/bin/podnet')], root, before);
});
