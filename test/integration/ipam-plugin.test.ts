// podnet-ipam against real files and real processes: each child runs the CNI dispatcher with
// the IPAM plugin, exactly as the podnet-ipam executable would.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { dispatch } from '../../src/cni/skel.js';
import { ipamPlugin } from '../../src/ipam/plugin.js';
import { withFileLock } from '../../src/util/lock.js';

const SRC = fileURLToPath(new URL('../../src/', import.meta.url));
const REPO = fileURLToPath(new URL('../../', import.meta.url));
let root = '';
let netns = '';
const children = new Set<ChildProcess>();

before(() => {
  root = mkdtempSync(join(tmpdir(), 'podnet-ipam-it-'));
  // IPAM never enters the netns; it only has to exist and not be our own namespace
  netns = join(root, 'netns');
  writeFileSync(netns, '');
  writeFileSync(
    join(root, 'cni.mts'),
    `import { dispatch } from ${JSON.stringify(join(SRC, 'cni/skel.ts'))};
import { ipamPlugin } from ${JSON.stringify(join(SRC, 'ipam/plugin.ts'))};
let stdin = '';
for await (const c of process.stdin) stdin += c;
const res = await dispatch(ipamPlugin, { env: process.env as Record<string, string>, stdin });
process.stdout.write(res.stdout);
process.exitCode = res.exitCode;
`,
  );
  writeFileSync(
    join(root, 'hammer.mts'),
    `import { dispatch } from ${JSON.stringify(join(SRC, 'cni/skel.ts'))};
import { ipamPlugin } from ${JSON.stringify(join(SRC, 'ipam/plugin.ts'))};
import { writeSync } from 'node:fs';
const [conf, netns, prefix] = process.argv.slice(2);
const env = (cmd: string, id: string) => ({ CNI_COMMAND: cmd, CNI_CONTAINERID: id, CNI_IFNAME: 'eth0', CNI_NETNS: netns, CNI_PATH: '/x' });
for (let n = 0; ; n++) {
  const id = prefix + 'n' + n;
  const add = await dispatch(ipamPlugin, { env: env('ADD', id), stdin: conf });
  if (add.exitCode !== 0) { writeSync(2, add.stdout); process.exit(3); }
  if (n === 0) writeSync(1, 'READY\\n');
  if (n % 2) await dispatch(ipamPlugin, { env: env('DEL', id), stdin: conf });
}
`,
  );
  writeFileSync(
    join(root, 'hold-lock.mts'),
    `import { withFileLock } from ${JSON.stringify(join(SRC, 'util/lock.ts'))};
import { writeSync } from 'node:fs';
await withFileLock(process.argv[2], async () => {
  writeSync(1, 'LOCKED\\n');
  await new Promise(() => setInterval(() => {}, 1 << 30));
});
`,
  );
  writeFileSync(
    join(root, 'mid-write.mts'),
    `import { IpamStore } from ${JSON.stringify(join(SRC, 'ipam/store.ts'))};
import { parseIP } from ${JSON.stringify(join(SRC, 'util/ip.ts'))};
import { writeSync } from 'node:fs';
const store = new IpamStore(process.argv[2], { hooks: { beforeCommit(tmp) {
  writeSync(1, 'MIDWRITE ' + tmp + '\\n');
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
} } });
await store.reserve(parseIP(process.argv[3]), 'victim', 'eth0', 0);
`,
  );
});

after(() => {
  for (const c of children) if (c.exitCode === null && c.pid) process.kill(c.pid, 'SIGKILL');
  rmSync(root, { recursive: true, force: true });
});

let nets = 0;
function newNet(ipam: Record<string, unknown>): { conf: Record<string, unknown>; dir: string } {
  const name = `it${nets++}`;
  const dataDir = join(root, 'data');
  return { conf: { cniVersion: '1.1.0', name, ipam: { type: 'podnet-ipam', dataDir, ...ipam } }, dir: join(dataDir, name) };
}

interface Out {
  code: number;
  json: Record<string, any> | undefined;
}

function envFor(cmd: string, id: string, ifname: string, extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = { CNI_COMMAND: cmd, CNI_PATH: '/opt/cni/bin' };
  if (cmd !== 'GC' && cmd !== 'STATUS') Object.assign(env, { CNI_CONTAINERID: id, CNI_IFNAME: ifname, CNI_NETNS: netns });
  return { ...env, ...extra };
}

/** In this process, through the dispatcher. */
async function run(cmd: string, conf: Record<string, unknown>, id = 'c0', ifname = 'eth0', extra: Record<string, string> = {}): Promise<Out> {
  const res = await dispatch(ipamPlugin, { env: envFor(cmd, id, ifname, extra), stdin: JSON.stringify(conf) });
  return { code: res.exitCode, json: res.stdout.trim() ? JSON.parse(res.stdout) : undefined };
}

function startChild(script: string, args: string[], env: Record<string, string> = {}): ChildProcess {
  const c = spawn(process.execPath, ['--import', 'tsx', join(root, script), ...args], {
    // `--import tsx` resolves from the working directory
    cwd: REPO,
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.add(c);
  c.on('exit', () => children.delete(c));
  return c;
}

/** In a separate process, through the dispatcher. */
function runProc(cmd: string, conf: Record<string, unknown>, id: string, ifname = 'eth0'): Promise<Out> {
  const c = startChild('cni.mts', [], envFor(cmd, id, ifname));
  c.stdin!.end(JSON.stringify(conf));
  let out = '';
  let err = '';
  c.stdout!.on('data', (d) => (out += d));
  c.stderr!.on('data', (d) => (err += d));
  return new Promise((resolve, reject) => {
    c.on('error', reject);
    c.on('exit', (code) => {
      try {
        if (!out.trim() && code !== 0) return reject(new Error(`child failed without output: ${err}`));
        resolve({ code: code ?? -1, json: out.trim() ? JSON.parse(out) : undefined });
      } catch {
        reject(new Error(`child output is not JSON: ${out} ${err}`));
      }
    });
  });
}

function waitFor(c: ChildProcess, marker: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => reject(new Error(`timeout waiting for ${marker}`)), 90_000);
    c.stdout!.on('data', (d) => {
      buf += d;
      const line = buf.split('\n').find((l) => l.startsWith(marker));
      if (line) {
        clearTimeout(t);
        resolve(line);
      }
    });
    c.on('exit', () => reject(new Error(`child exited before ${marker}`)));
  });
}

function kill9(c: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (c.exitCode !== null || c.signalCode !== null) return resolve();
    c.on('exit', () => resolve());
    process.kill(c.pid!, 'SIGKILL');
  });
}

function addrs(o: Out): string[] {
  return (o.json?.ips ?? []).map((i: { address: string }) => i.address);
}

function ipFiles(dir: string): string[] {
  return readdirSync(dir).filter((f) => /^[0-9a-f.:]+$/i.test(f) && (f.includes('.') || f.includes(':')) && !f.startsWith('last_'));
}

test('ADD result shape, persistence across processes and idempotent ADD', async () => {
  const { conf, dir } = newNet({ ranges: [[{ subnet: '10.1.0.0/24' }], [{ subnet: 'fd00:1::/64' }]], routes: [{ dst: '0.0.0.0/0' }], dns: { nameservers: ['10.1.0.10'] } });
  const a = await runProc('ADD', conf, 'ctr-a');
  assert.equal(a.code, 0, JSON.stringify(a.json));
  assert.deepEqual(a.json, {
    cniVersion: '1.1.0',
    ips: [
      { address: '10.1.0.2/24', gateway: '10.1.0.1' },
      { address: 'fd00:1::2/64', gateway: 'fd00:1::1' },
    ],
    routes: [{ dst: '0.0.0.0/0' }],
    dns: { nameservers: ['10.1.0.10'] },
  });
  assert.equal(readFileSync(join(dir, '10.1.0.2'), 'utf8'), 'ctr-a\r\neth0');
  const b = await runProc('ADD', conf, 'ctr-b');
  assert.deepEqual(addrs(b), ['10.1.0.3/24', 'fd00:1::3/64']);
  const again = await runProc('ADD', conf, 'ctr-a');
  assert.deepEqual(addrs(again), ['10.1.0.2/24', 'fd00:1::2/64'], 'a repeated ADD returns the same addresses');
  const otherIf = await run('ADD', conf, 'ctr-a', 'net1');
  assert.deepEqual(addrs(otherIf), ['10.1.0.4/24', 'fd00:1::4/64']);
  assert.deepEqual(ipFiles(dir).sort(), ['10.1.0.2', '10.1.0.3', '10.1.0.4', 'fd00:1::2', 'fd00:1::3', 'fd00:1::4']);
  // an old cniVersion gets per-IP version fields
  const old = await run('ADD', { ...conf, cniVersion: '0.4.0' }, 'ctr-a');
  assert.equal(old.json?.ips[0].version, '4');
});

test('DEL releases, is idempotent, and needs neither netns nor data dir', async () => {
  const { conf, dir } = newNet({ ranges: [[{ subnet: '10.2.0.0/24' }]] });
  assert.deepEqual(addrs(await run('ADD', conf, 'd1')), ['10.2.0.2/24']);
  assert.deepEqual(addrs(await run('ADD', conf, 'd2')), ['10.2.0.3/24']);
  assert.equal((await runProc('DEL', conf, 'd1')).code, 0);
  assert.ok(!existsSync(join(dir, '10.2.0.2')));
  assert.ok(existsSync(join(dir, '10.2.0.3')));
  assert.equal((await run('DEL', conf, 'd1')).code, 0);
  assert.equal((await run('DEL', conf, 'd2', 'eth0', { CNI_NETNS: '' })).code, 0);
  assert.deepEqual(ipFiles(dir), []);
  const fresh = newNet({ ranges: [[{ subnet: '10.3.0.0/24' }]] });
  assert.equal((await run('DEL', fresh.conf, 'x')).code, 0);
  assert.ok(!existsSync(fresh.dir));
  // DEL works while the subnet lease is missing, since it needs no ranges
  const leaseless = newNet({ subnetFile: join(root, 'no-such-subnet.env') });
  assert.equal((await run('DEL', leaseless.conf, 'x')).code, 0);
});

test('CHECK: ok when reserved and matching, 106 otherwise', async () => {
  const { conf } = newNet({ ranges: [[{ subnet: '10.4.0.0/24' }]] });
  const add = await run('ADD', conf, 'k1');
  assert.equal((await run('CHECK', { ...conf, prevResult: add.json })).code, 1, 'k1 is not c0');
  const ok = await run('CHECK', { ...conf, prevResult: add.json }, 'k1');
  assert.equal(ok.code, 0, JSON.stringify(ok.json));
  const wrong = await run('CHECK', { ...conf, prevResult: { ...add.json, ips: [{ address: '10.4.0.99/24' }] } }, 'k1');
  assert.equal(wrong.json?.code, 106);
  assert.match(wrong.json?.msg, /10\.4\.0\.99 but it is not reserved.*10\.4\.0\.2 is reserved for it but missing/);
  await run('DEL', conf, 'k1');
  const gone = await run('CHECK', { ...conf, prevResult: add.json }, 'k1');
  assert.equal(gone.json?.code, 106);
  assert.match(gone.json?.msg, /no address is reserved for container k1 interface eth0/);
});

test('20 concurrent ADDs from 20 processes get 20 distinct addresses', async () => {
  const { conf, dir } = newNet({ ranges: [[{ subnet: '10.5.0.0/24' }], [{ subnet: 'fd00:5::/120' }]] });
  const outs = await Promise.all(Array.from({ length: 20 }, (_, i) => runProc('ADD', conf, `p${i}`)));
  for (const o of outs) assert.equal(o.code, 0, JSON.stringify(o.json));
  const v4 = outs.map((o) => addrs(o)[0]);
  const v6 = outs.map((o) => addrs(o)[1]);
  assert.equal(new Set(v4).size, 20);
  assert.equal(new Set(v6).size, 20);
  assert.equal(ipFiles(dir).length, 40);
  for (let i = 0; i < 20; i++) {
    const ip = v4[i].split('/')[0];
    assert.equal(readFileSync(join(dir, ip), 'utf8'), `p${i}\r\neth0`);
  }
  assert.deepEqual(v4.map((a) => a.split('/')[0]).sort((x, y) => Number(x.split('.')[3]) - Number(y.split('.')[3])), Array.from({ length: 20 }, (_, i) => `10.5.0.${i + 2}`));
});

test('a process killed while holding the lock does not block anyone', async () => {
  const { conf, dir } = newNet({ ranges: [[{ subnet: '10.6.0.0/24' }]] });
  assert.equal((await run('ADD', conf, 'first')).code, 0);
  const holder = startChild('hold-lock.mts', [join(dir, 'lock')]);
  await waitFor(holder, 'LOCKED');
  // while it is held, the lock really excludes us
  await assert.rejects(withFileLock(join(dir, 'lock'), () => 1, { timeoutMs: 150 }), /timed out/);
  await kill9(holder);
  const started = Date.now();
  const after = await run('ADD', conf, 'second');
  assert.deepEqual(addrs(after), ['10.6.0.3/24']);
  assert.ok(Date.now() - started < 2000, 'the kernel released the dead holder lock');
});

test('kill -9 mid-write leaves no torn state; GC with no valid attachments frees the whole range', async () => {
  const { conf, dir } = newNet({ ranges: [[{ subnet: '10.7.0.0/29' }]] }); // .2-.6 usable
  for (const id of ['g1', 'g2']) assert.equal((await run('ADD', conf, id)).code, 0);
  const victim = startChild('mid-write.mts', [dir, '10.7.0.6']);
  const line = await waitFor(victim, 'MIDWRITE');
  const tmpPath = line.split(' ')[1];
  assert.ok(existsSync(tmpPath), 'temp file is written and durable');
  await kill9(victim);
  assert.ok(!existsSync(join(dir, '10.7.0.6')), 'no reservation without its final file');
  assert.equal(ipFiles(dir).length, 2);
  const gc = await runProc('GC', { ...conf, 'cni.dev/valid-attachments': [] }, '');
  assert.equal(gc.code, 0, JSON.stringify(gc.json));
  assert.deepEqual(ipFiles(dir), []);
  assert.ok(!readdirSync(dir).some((f) => f.startsWith('.podnet-tmp')), 'temp files are cleaned');
  const all: string[] = [];
  for (let i = 0; i < 5; i++) all.push(...addrs(await run('ADD', conf, `n${i}`)));
  assert.deepEqual(all.sort(), ['10.7.0.2/29', '10.7.0.3/29', '10.7.0.4/29', '10.7.0.5/29', '10.7.0.6/29']);
  assert.equal((await run('ADD', conf, 'n5')).json?.code, 102);
});

test('random kill -9 of processes busy with ADD and DEL never leaves a torn reservation', async (t) => {
  const { conf, dir } = newNet({ ranges: [[{ subnet: '10.8.0.0/20' }]] });
  const exits: Array<number | null> = [];
  // each child costs a Node + tsx start-up, so keep the crowd modest
  for (let round = 0; round < 2; round++) {
    const procs = Array.from({ length: 5 }, (_, i) => startChild('hammer.mts', [JSON.stringify(conf), netns, `r${round}x${i}`]));
    await Promise.all(
      procs.map(async (c) => {
        await waitFor(c, 'READY');
        await new Promise((r) => setTimeout(r, Math.random() * 150));
        await kill9(c);
        exits.push(c.exitCode);
      }),
    );
  }
  assert.deepEqual(exits.filter((e) => e !== null), [], 'every process was still busy when killed');
  const files = ipFiles(dir);
  t.diagnostic(`${files.length} reservations, ${readdirSync(dir).filter((f) => f.startsWith('.podnet-tmp')).length} temp files left by killed writers`);
  assert.ok(files.length >= 10, `each process reserved at least once (${files.length})`);
  for (const f of files) assert.match(readFileSync(join(dir, f), 'utf8'), /^r\dx\dn\d+\r\neth0$/, f);
  const gc = await run('GC', { ...conf, 'cni.dev/valid-attachments': [] }, '');
  assert.equal(gc.code, 0);
  assert.deepEqual(ipFiles(dir), []);
  assert.ok(!readdirSync(dir).some((f) => f.startsWith('.podnet-tmp')));
  assert.equal((await run('STATUS', conf, '')).code, 0);
});

test('STATUS: 50 when exhausted or when the subnet lease is missing', async () => {
  const { conf } = newNet({ ranges: [[{ subnet: '10.9.0.0/30' }]] }); // one usable address
  assert.equal((await run('STATUS', conf, '')).code, 0);
  assert.equal((await run('ADD', conf, 's1')).code, 0);
  const full = await run('STATUS', conf, '');
  assert.equal(full.json?.code, 50);
  assert.equal(full.json?.msg, 'no IP addresses available in range set 10.9.0.0/30');
  const ex = await run('ADD', conf, 's2');
  assert.equal(ex.json?.code, 102);
  assert.equal(ex.json?.msg, 'no IP addresses available in range set 10.9.0.0/30');
  await run('DEL', conf, 's1');
  assert.equal((await run('STATUS', conf, '')).code, 0);

  const leaseFile = join(root, 'subnet-status.env');
  const leased = newNet({ subnetFile: leaseFile });
  const st = await run('STATUS', leased.conf, '');
  assert.equal(st.json?.code, 50);
  assert.match(st.json?.msg, /has not written its subnet lease yet/);
  const add = await run('ADD', leased.conf, 'l1');
  assert.equal(add.json?.code, 11);
  writeFileSync(leaseFile, 'PODNET_NETWORK=10.244.0.0/16\nPODNET_SUBNET=10.244.3.1/24\n');
  assert.equal((await run('STATUS', leased.conf, '')).code, 0);
  const ok = await run('ADD', leased.conf, 'l1');
  assert.deepEqual(ok.json?.ips, [{ address: '10.244.3.2/24', gateway: '10.244.3.1' }]);
  assert.deepEqual(ok.json?.routes, [{ dst: '10.244.0.0/16' }]);
});

test('GC keeps exactly the valid attachments; legacy key; missing key refused', async () => {
  const { conf, dir } = newNet({ ranges: [[{ subnet: '10.10.0.0/24' }]] });
  for (const [id, ifn] of [['a', 'eth0'], ['a', 'net1'], ['b', 'eth0'], ['c', 'eth0']]) assert.equal((await run('ADD', conf, id, ifn)).code, 0);
  const owners = () => ipFiles(dir).map((f) => readFileSync(join(dir, f), 'utf8').replace('\r\n', '/')).sort();
  const keep = [{ containerID: 'a', ifname: 'net1' }, { containerID: 'c', ifname: 'eth0' }];
  const none = await run('GC', conf, '');
  assert.equal(none.json?.code, 7, 'no attachment list: refuse instead of wiping');
  assert.equal(owners().length, 4);
  // both keys: valid-attachments wins
  const gc = await run('GC', { ...conf, 'cni.dev/valid-attachments': keep, 'cni.dev/attachments': [] }, '');
  assert.equal(gc.code, 0);
  assert.deepEqual(owners(), ['a/net1', 'c/eth0']);
  const legacy = await run('GC', { ...conf, 'cni.dev/attachments': [{ containerID: 'c', ifname: 'eth0' }] }, '');
  assert.equal(legacy.code, 0);
  assert.deepEqual(owners(), ['c/eth0']);
  const bad = await run('GC', { ...conf, 'cni.dev/valid-attachments': [{ containerID: 'x' }] }, '');
  assert.equal(bad.json?.code, 7);
  assert.match(bad.json?.msg, /cni\.dev\/valid-attachments\[0\]/);
});

test('state written by host-local is honoured', async () => {
  const { conf, dir } = newNet({ ranges: [[{ subnet: '10.11.0.0/24' }]] });
  await run('STATUS', conf, '');
  assert.equal((await run('DEL', conf, 'nobody')).code, 0);
  // DEL did not create it; host-local would have
  rmSync(dir, { recursive: true, force: true });
  const { mkdirSync } = await import('node:fs');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, '10.11.0.2'), 'hl-old'); // pre-ifname format
  writeFileSync(join(dir, '10.11.0.3'), 'hl-new\r\neth0');
  writeFileSync(join(dir, 'last_reserved_ip.0'), '10.11.0.3');
  writeFileSync(join(dir, 'lock'), '');
  assert.deepEqual(addrs(await run('ADD', conf, 'hl-old')), ['10.11.0.2/24'], 'the old format counts as ours');
  assert.deepEqual(addrs(await run('ADD', conf, 'fresh')), ['10.11.0.4/24'], 'continues after last_reserved_ip');
  assert.equal((await run('DEL', conf, 'hl-old')).code, 0);
  assert.ok(!existsSync(join(dir, '10.11.0.2')));
});

test('requested IPs through CNI_ARGS and runtimeConfig', async () => {
  const { conf } = newNet({ ranges: [[{ subnet: '10.12.0.0/24' }]] });
  const a = await run('ADD', { ...conf, runtimeConfig: { ips: ['10.12.0.50/24'] } }, 'q1');
  assert.deepEqual(addrs(a), ['10.12.0.50/24']);
  const b = await run('ADD', conf, 'q2', 'eth0', { CNI_ARGS: 'IgnoreUnknown=1;IP=10.12.0.50' });
  assert.equal(b.json?.code, 102);
  const c = await run('ADD', conf, 'q3', 'eth0', { CNI_ARGS: 'IP=10.99.0.1' });
  assert.equal(c.json?.code, 7);
});
