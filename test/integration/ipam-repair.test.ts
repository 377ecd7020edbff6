// `podnet ipam check|gc` on a node the CNI wired (bridge mode), against podnet-ipam's files and
// host-local's: a kill -9 of the plugin after its IPAM (the podnet-ipam executable, host-local)
// reserved and before the interface existed, and a pod's namespace deleted without DEL, are
// exactly the leaks found (exit 1), the
// live pods are not; `gc --dry-run` lists them and changes nothing, `gc` releases them (the file
// is gone, a new ADD takes the address), `check` is clean again; a reservation file removed by
// hand is reported as an address in use without a reservation.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, readdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CniHarness } from '../helpers/cni.js';
import { delNetns } from '../helpers/netns.js';

const REPO = new URL('../../', import.meta.url).pathname;
// subnets of this run only: other suites' pods elsewhere on this machine must not carry them
const B = 100 + (process.pid % 100);
const C = Math.floor(Math.random() * 256);
const NET = 'trep'; // podnet-ipam
const HL = 'trephl'; // host-local
const CRASH_ID = 'crashme0';

let h: CniHarness;
let dataDir = '';
const stopped: number[] = [];

// ipamType: podnet-ipam in the plugin's process, or pn-stop (the podnet-ipam executable through a wrapper that can stop after reserving)
const podnetConf = (ipamType = 'podnet-ipam') => ({
  cniVersion: '1.0.0',
  name: NET,
  type: 'podnet',
  bridge: 'pnrep0',
  isGateway: true,
  ipam: { type: ipamType, dataDir, ranges: [[{ subnet: `10.${B}.${C}.0/25` }]] },
});
// two addresses only: .130 and .131
const hlConf = () => ({
  cniVersion: '1.0.0',
  name: HL,
  type: 'podnet',
  bridge: 'pnrep1',
  isGateway: true,
  ipam: { type: 'hl-stop', dataDir, ranges: [[{ subnet: `10.${B}.${C}.128/25`, rangeStart: `10.${B}.${C}.130`, rangeEnd: `10.${B}.${C}.131` }]] },
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** The CLI, in the node's namespace (where the host links are), as an operator runs it there. */
function ipam(...args: string[]): Run {
  const r = spawnSync('ip', ['netns', 'exec', h.nodeNs, process.execPath, '--import', 'tsx', join(REPO, 'src/cli/main.ts'), 'ipam', ...args], { cwd: REPO, encoding: 'utf8', timeout: 60_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

interface CheckJson {
  allocations: { network: string; ip: string; containerID: string; ifname: string | null; state: string; reason: string; carrier: { netns: string; ifname: string } | null }[];
  unreserved: { network: string; ip: string; netns: string; ifname: string; containerId: string }[];
}

function checkJson(...extra: string[]): { code: number; j: CheckJson; run: Run } {
  const run = ipam('check', '--data-dir', dataDir, '-o', 'json', ...extra);
  assert.ok(run.code === 0 || run.code === 1, `check failed: ${run.code} ${run.stderr}`);
  return { code: run.code, j: JSON.parse(run.stdout) as CheckJson, run };
}

function snapshotFiles(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const net of [NET, HL]) for (const f of readdirSync(join(dataDir, net)).sort()) if (f !== 'lock') out[`${net}/${f}`] = readFileSync(join(dataDir, net, f), 'utf8');
  return out;
}

const ipOf = (r: { json?: Record<string, unknown> }) => ((r.json as { ips: { address: string }[] }).ips[0].address).split('/')[0];

/** An IPAM plugin NAME that is TARGET; for CRASH_ID's ADD it stops after TARGET reserved, before answering the plugin (the test kills both there). */
function stopper(name: string, target: string): void {
  const marker = join(h.tmp, `${name}.stopped`);
  const wrapper = join(h.binDir, name);
  writeFileSync(
    wrapper,
    `#!/bin/sh
if [ "$CNI_COMMAND" != ADD ] || [ "$CNI_CONTAINERID" != ${CRASH_ID} ]; then exec ${join(h.binDir, target)}; fi
out=$(${join(h.binDir, target)}) || { printf '%s' "$out"; exit 1; }
echo $$ > ${marker}.tmp && mv ${marker}.tmp ${marker}
exec sleep 600
`,
  );
  chmodSync(wrapper, 0o755);
}

/** CRASH_ID's ADD, killed with SIGKILL once its IPAM reserved: returns the address it leaves reserved. */
async function killMidAdd(pod: string, conf: { name: string; ipam: { type: string } }): Promise<string> {
  const marker = join(h.tmp, `${conf.ipam.type}.stopped`);
  const crash = h.start({ command: 'ADD', containerId: CRASH_ID, netns: h.podPath(pod), ifname: 'eth0', conf });
  for (let i = 0; i < 400 && !existsSync(marker); i++) await new Promise((r) => setTimeout(r, 25));
  assert.ok(existsSync(marker), `${conf.ipam.type} reserved and stopped`);
  const sleeper = Number(readFileSync(marker, 'utf8'));
  stopped.push(sleeper);
  crash.child.kill('SIGKILL');
  const killed = await crash.done;
  process.kill(sleeper, 'SIGKILL');
  assert.equal(killed.code, -1, 'the plugin died by the signal');
  const dir = join(dataDir, conf.name);
  const file = readdirSync(dir).find((f) => /^\d/.test(f) && readFileSync(join(dir, f), 'utf8').startsWith(CRASH_ID));
  assert.ok(file, `${conf.ipam.type} left the reservation`);
  assert.equal(h.exec(pod, ['ip', '-j', 'addr', 'show']).includes(`"${file}"`), false, 'no interface carries it');
  assert.equal(h.nodeLinks().some((l) => l.ifalias?.includes(CRASH_ID)), false, 'no host link either');
  return file;
}

before(() => {
  h = new CniHarness();
  dataDir = join(h.tmp, 'ipam');
  stopper('hl-stop', 'host-local');
  stopper('pn-stop', 'podnet-ipam');
});

after(async () => {
  for (const pid of stopped) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  await h?.cleanup();
});

test('ipam check finds the leaks a kill -9 in the middle of an ADD and a netns deleted without DEL leave, and gc fixes them', async (t) => {
  assert.ok(existsSync(join(h.binDir, 'host-local')), 'the reference host-local is installed (containernetworking-plugins)');
  const [pa, pb, pc, pd, pg] = ['a', 'b', 'c', 'd', 'g'].map((x) => h.pod(x));
  const add = (ns: string, id: string, conf: unknown, args?: string) => h.invoke({ command: 'ADD', containerId: id, netns: h.podPath(ns), ifname: 'eth0', conf, args });
  const ra = await add(pa, 'pod-a', podnetConf());
  const rb = await add(pb, 'pod-b', podnetConf());
  const rc = await add(pc, 'pod-c', hlConf());
  for (const r of [ra, rb, rc]) assert.equal(r.code, 0, r.stdout + r.stderr);
  const [ipA, ipB, ipC] = [ra, rb, rc].map(ipOf);

  // a clean node: every reservation live, nothing to report
  let t0 = Date.now();
  const clean = checkJson('--grace', '0');
  t.diagnostic(`check on a clean node: ${Date.now() - t0} ms`);
  assert.equal(clean.code, 0, clean.run.stdout);
  assert.deepEqual(
    clean.j.allocations.map((a) => [a.network, a.ip, a.containerID, a.state]),
    [
      [NET, ipA, 'pod-a', 'live'],
      [NET, ipB, 'pod-b', 'live'],
      [HL, ipC, 'pod-c', 'live'],
    ].sort((x, y) => x[0].localeCompare(y[0])),
  );
  assert.deepEqual(clean.j.allocations.find((a) => a.ip === ipA)!.carrier, { netns: pa, ifname: 'eth0' });

  // kill -9 of the plugin after its IPAM reserved the address, before the interface exists: host-local, podnet-ipam
  const ipD = await killMidAdd(pd, hlConf());
  const ipG = await killMidAdd(pg, podnetConf('pn-stop'));

  // pod b's namespace deleted without DEL
  delNetns(pb);

  // young reservations with no interface are pending (an ADD may be in flight): not leaks yet, not released
  const young = checkJson('--grace', '600');
  assert.equal(young.code, 0, young.run.stdout);
  assert.deepEqual(young.j.allocations.filter((a) => a.state !== 'live').map((a) => [a.ip, a.state]).sort(), [[ipB, 'pending'], [ipD, 'pending'], [ipG, 'pending']].sort());
  const files0 = snapshotFiles();
  const gcYoung = ipam('gc', '--data-dir', dataDir, '--grace', '600');
  assert.equal(gcYoung.code, 0, gcYoung.stderr);
  assert.match(gcYoung.stdout, /no leaks/);
  assert.deepEqual(snapshotFiles(), files0);

  // exactly the two leaks, with their reasons; the live pods are not
  t0 = Date.now();
  const found = checkJson('--grace', '0');
  t.diagnostic(`check with three leaks: ${Date.now() - t0} ms`);
  assert.equal(found.code, 1, found.run.stdout);
  assert.deepEqual(
    found.j.allocations.map((a) => [a.ip, a.containerID, a.state]).sort(),
    [
      [ipA, 'pod-a', 'live'],
      [ipB, 'pod-b', 'leaked'],
      [ipC, 'pod-c', 'live'],
      [ipD, CRASH_ID, 'leaked'],
      [ipG, CRASH_ID, 'leaked'],
    ].sort(),
  );
  for (const ip of [ipD, ipG]) assert.match(found.j.allocations.find((a) => a.ip === ip)!.reason, new RegExp(`no namespace has eth0 with ${ip.replace(/\./g, '\\.')}, and no host link names container ${CRASH_ID}`));
  assert.match(found.j.allocations.find((a) => a.ip === ipB)!.reason, /no namespace has eth0 with/);
  assert.deepEqual(found.j.unreserved, []);
  const text = ipam('check', '--data-dir', dataDir, '--grace', '0');
  assert.equal(text.code, 1);
  assert.match(text.stdout, /5 reservations in 2 networks .*: 2 live, 3 leaked/);
  assert.match(text.stdout, new RegExp(`^leaked +${HL} ${ipD.replace(/\./g, '\\.')} ${CRASH_ID}/eth0: `, 'm'));
  assert.match(text.stdout, new RegExp(`^leaked +${NET} ${ipB.replace(/\./g, '\\.')} pod-b/eth0: `, 'm'));
  assert.match(text.stdout, new RegExp(`^leaked +${NET} ${ipG.replace(/\./g, '\\.')} ${CRASH_ID}/eth0: `, 'm'));

  // before gc the addresses are taken: host-local's two-address range is full, pod b's address refused
  const pe = h.pod('e');
  const pf = h.pod('f');
  const fullHl = await add(pe, 'pod-e', hlConf());
  assert.notEqual(fullHl.code, 0, 'host-local has no address left');
  const takenB = await add(pf, 'pod-f', podnetConf(), `IP=${ipB}`);
  assert.notEqual(takenB.code, 0, `${ipB} is still reserved`);
  const ph = h.pod('h');
  const takenG = await add(ph, 'pod-h', podnetConf(), `IP=${ipG}`);
  assert.notEqual(takenG.code, 0, `${ipG} is still reserved`);

  // --dry-run lists them and changes nothing
  const files1 = snapshotFiles();
  const dry = ipam('gc', '--data-dir', dataDir, '--grace', '0', '--dry-run');
  assert.equal(dry.code, 0, dry.stderr);
  assert.deepEqual(dry.stdout.match(/^would release \S+ \S+/gm)?.sort(), [`would release ${HL} ${ipD}`, `would release ${NET} ${ipB}`, `would release ${NET} ${ipG}`].sort());
  assert.deepEqual(snapshotFiles(), files1);

  // gc releases them and nothing else
  t0 = Date.now();
  const gc = ipam('gc', '--data-dir', dataDir, '--grace', '0', '-o', 'json');
  t.diagnostic(`gc: ${Date.now() - t0} ms`);
  assert.equal(gc.code, 0, gc.stderr);
  const gj = JSON.parse(gc.stdout) as { released: { ip: string }[]; kept: unknown[] };
  assert.deepEqual(gj.released.map((r) => r.ip).sort(), [ipB, ipD, ipG].sort());
  assert.deepEqual(gj.kept, []);
  assert.equal(existsSync(join(dataDir, NET, ipB)), false);
  assert.equal(existsSync(join(dataDir, HL, ipD)), false);
  assert.equal(existsSync(join(dataDir, NET, ipG)), false);
  assert.ok(existsSync(join(dataDir, NET, ipA)) && existsSync(join(dataDir, HL, ipC)), 'the live reservations stay');

  // the addresses can be taken again
  const reHl = await add(pe, 'pod-e', hlConf());
  assert.equal(reHl.code, 0, reHl.stdout + reHl.stderr);
  assert.equal(ipOf(reHl), ipD);
  const reB = await add(pf, 'pod-f', podnetConf(), `IP=${ipB}`);
  assert.equal(reB.code, 0, reB.stdout + reB.stderr);
  assert.equal(ipOf(reB), ipB);
  const reG = await add(ph, 'pod-h', podnetConf(), `IP=${ipG}`);
  assert.equal(reG.code, 0, reG.stdout + reG.stderr);
  assert.equal(ipOf(reG), ipG);

  const after = checkJson('--grace', '0');
  assert.equal(after.code, 0, after.run.stdout);
  assert.ok(after.j.allocations.every((a) => a.state === 'live'), after.run.stdout);
  assert.equal(after.j.allocations.length, 5);

  // pod a's reservation removed by hand: its address is in use with no reservation
  unlinkSync(join(dataDir, NET, ipA));
  const un = checkJson('--grace', '0');
  assert.equal(un.code, 1, un.run.stdout);
  assert.deepEqual(un.j.unreserved.map((u) => [u.network, u.ip, u.netns, u.ifname, u.containerId]), [[NET, ipA, pa, 'eth0', 'pod-a']]);
  assert.ok(un.j.allocations.every((a) => a.state === 'live'));
  const unText = ipam('check', '--data-dir', dataDir, '--grace', '0');
  assert.equal(unText.code, 1);
  assert.match(unText.stdout, new RegExp(`^unreserved ${NET} ${ipA.replace(/\./g, '\\.')}: .* on eth0 in ${pa} \\(container pod-a, host link veth[0-9a-f]{11}\\)`, 'm'));
  // gc leaves it (and everything else) as it is
  const files2 = snapshotFiles();
  const gc2 = ipam('gc', '--data-dir', dataDir, '--grace', '0');
  assert.equal(gc2.code, 0, gc2.stderr);
  assert.match(gc2.stdout, /unreserved \(left as is\)/);
  assert.deepEqual(snapshotFiles(), files2);

  // ls: every allocation with its container and interface, from the files
  const ls = ipam('ls', '--data-dir', dataDir, '-o', 'json');
  assert.equal(ls.code, 0, ls.stderr);
  assert.deepEqual(
    (JSON.parse(ls.stdout) as { allocations: { network: string; ip: string; containerID: string; ifname: string }[] }).allocations.map((a) => [a.network, a.ip, a.containerID, a.ifname]).sort(),
    [
      [NET, ipB, 'pod-f', 'eth0'],
      [NET, ipG, 'pod-h', 'eth0'],
      [HL, ipC, 'pod-c', 'eth0'],
      [HL, ipD, 'pod-e', 'eth0'],
    ].sort(),
  );
});

test('ipam check and gc refuse a data dir that does not exist (exit 2)', () => {
  for (const cmd of ['ls', 'check', 'gc']) {
    const r = ipam(cmd, '--data-dir', join(dataDir, 'nope'));
    assert.equal(r.code, 2, `${cmd}: ${r.stdout}${r.stderr}`);
    assert.match(r.stderr, /no such directory/);
  }
});
