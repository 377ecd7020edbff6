// The group commit under kill -9: a child process doing batched reservations and releases
// (concurrent ADDs and DELs in one process, as in the agent) is killed at random moments, and
// by a hook at fixed points of a batch: between the data flush and the links, and after the
// directory fsync before any member is answered. After each kill every final-named file is
// complete, every answered ADD still holds its addresses, no address was handed out twice, and
// GC with no valid attachment empties the store so the whole range is allocatable again.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { dispatch } from '../../src/cni/skel.js';
import { loadIpamConfig } from '../../src/ipam/config.js';
import { ipamPlugin, reserveFor } from '../../src/ipam/plugin.js';
import { IpamStore } from '../../src/ipam/store.js';
import { formatIP } from '../../src/util/ip.js';

const SRC = fileURLToPath(new URL('../../src/', import.meta.url));
const REPO = fileURLToPath(new URL('../../', import.meta.url));
const RANGES = [[{ subnet: '10.30.0.0/22' }], [{ subnet: 'fd00:30::/118' }]];
const V4_USABLE = 1021; // a /22 less network, broadcast and gateway
let root = '';
const children = new Set<ChildProcess>();

before(() => {
  root = mkdtempSync(join(tmpdir(), 'podnet-ipam-crash-'));
  writeFileSync(
    join(root, 'batcher.mts'),
    `import { writeSync } from 'node:fs';
import { loadIpamConfig } from ${JSON.stringify(join(SRC, 'ipam/config.ts'))};
import { reserveFor } from ${JSON.stringify(join(SRC, 'ipam/plugin.ts'))};
import { IpamStore } from ${JSON.stringify(join(SRC, 'ipam/store.ts'))};
const [dir, prefix, mode, killAtArg] = process.argv.slice(2);
const killAt = Number(killAtArg);
const cfg = { ...loadIpamConfig({ name: 'crash', ipam: { ranges: ${JSON.stringify(RANGES)} } }), storeDir: dir };
const die = () => process.kill(process.pid, 'SIGKILL');
let links = 0;
let dirFlushes = 0;
const hooks = {
  beforeCommit() { if (mode === 'link' && ++links === killAt) die(); },
  onFlush(kind: string) { if (mode === 'dir' && kind === 'dir' && ++dirFlushes === killAt) die(); },
};
const store = new IpamStore(dir, { hooks });
const say = (s: string) => writeSync(1, s + '\\n');
for (let n = 0; ; n++) {
  const ids = Array.from({ length: 6 }, (_, i) => prefix + 'b' + n + 'm' + i);
  // answers are written as each one arrives, so the parent knows exactly what was acknowledged
  await Promise.allSettled(ids.map((id) => reserveFor(store, cfg, id, 'eth0').then((a) => say('ADD ' + id + ' ' + a.map((x) => x.ip.family + ':' + x.ip.value).join(',')))));
  if (n === 0) say('READY');
  // five of six go again, in one concurrent group, so the store keeps moving without filling up
  await Promise.allSettled(ids.slice(1).map((id) => (say('DELSTART ' + id), store.releaseByID(id, 'eth0').then((r) => r.length && say('DEL ' + id)))));
}
`,
  );
});

after(() => {
  for (const c of children) if (c.exitCode === null && c.pid) process.kill(c.pid, 'SIGKILL');
  rmSync(root, { recursive: true, force: true });
});

interface Round {
  out: string;
  signal: NodeJS.Signals | null;
}

function runChild(dir: string, prefix: string, mode: string, killAt: number, killAfterReadyMs?: number): Promise<Round> {
  const c = spawn(process.execPath, ['--import', 'tsx', join(root, 'batcher.mts'), dir, prefix, mode, String(killAt)], {
    cwd: REPO,
    env: { PATH: process.env.PATH ?? '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(c);
  let out = '';
  let err = '';
  let timer: NodeJS.Timeout | undefined;
  c.stdout!.on('data', (d) => {
    out += d;
    if (killAfterReadyMs !== undefined && !timer && out.includes('READY\n')) {
      timer = setTimeout(() => c.kill('SIGKILL'), killAfterReadyMs);
    }
  });
  c.stderr!.on('data', (d) => (err += d));
  const watchdog = setTimeout(() => c.kill('SIGKILL'), 60_000);
  return new Promise((resolve, reject) => {
    c.on('error', reject);
    c.on('exit', (code, signal) => {
      clearTimeout(watchdog);
      children.delete(c);
      if (signal !== 'SIGKILL') return reject(new Error(`child ended with ${code ?? signal}, not by SIGKILL: ${err}`));
      resolve({ out, signal });
    });
  });
}

function fromWire(s: string): string {
  const [fam, value] = s.split(':');
  return formatIP({ family: Number(fam) as 4 | 6, value: BigInt(value) });
}

function ipFiles(dir: string): string[] {
  return readdirSync(dir).filter((f) => /^[0-9a-f.:]+$/i.test(f) && (f.includes('.') || f.includes(':')));
}

test('kill -9 of a process in the middle of batched ADDs and DELs never loses an answer nor hands an address out twice', async (t) => {
  const dir = join(root, 'data', 'crash');
  /** every answered ADD not answered DEL since: container → its addresses */
  const live = new Map<string, string[]>();
  const plan: Array<{ mode: string; killAt: number; delay?: number }> = [
    ...Array.from({ length: 6 }, () => ({ mode: 'random', killAt: 0, delay: Math.floor(Math.random() * 200) })),
    // between the data flush and a link: the first link of a batch, and one in the middle of one
    { mode: 'link', killAt: 1 },
    { mode: 'link', killAt: 20 + Math.floor(Math.random() * 40) },
    { mode: 'link', killAt: 4 },
    // after the directory fsync, before any member of that batch is answered
    { mode: 'dir', killAt: 1 },
    { mode: 'dir', killAt: 3 + Math.floor(Math.random() * 10) },
  ];
  let answered = 0;
  for (const [round, p] of plan.entries()) {
    const prefix = `r${round}`;
    const res = await runChild(dir, prefix, p.mode, p.killAt, p.delay);
    /** DELs sent but not answered when the child died: done, half done or not done */
    const pendingDel = new Set<string>();
    if (p.mode === 'random') assert.match(res.out, /^READY$/m, 'killed from outside after its first batch');
    for (const line of res.out.split('\n')) {
      const [verb, id, ips] = line.split(' ');
      if (verb === 'ADD') {
        answered++;
        const addrs = ips.split(',').map(fromWire);
        for (const [other, held] of live) {
          for (const a of addrs) assert.ok(!held.includes(a), `${a} answered to ${id} while ${other} holds it`);
        }
        live.set(id, addrs);
      } else if (verb === 'DELSTART') {
        pendingDel.add(id);
      } else if (verb === 'DEL') {
        pendingDel.delete(id);
        assert.ok(live.delete(id), `DEL answered for ${id}, which held nothing`);
      }
    }
    // the disk after the kill: complete files only, every answered ADD's addresses held by it
    const owners = new Map<string, string>();
    for (const f of ipFiles(dir)) {
      const content = readFileSync(join(dir, f), 'utf8');
      assert.match(content, /^r\d+b\d+m\d\r\neth0$/, `${f} is complete and parseable`);
      owners.set(f, content.split('\r\n')[0]);
    }
    for (const id of pendingDel) {
      const still = (live.get(id) ?? []).filter((a) => owners.get(a) === id);
      if (still.length) live.set(id, still);
      else live.delete(id);
    }
    for (const [id, addrs] of live) for (const a of addrs) assert.equal(owners.get(a), id, `${a} answered to ${id} (round ${round}, ${p.mode})`);
    t.diagnostic(`round ${round} (${p.mode} ${p.killAt || p.delay}): ${ipFiles(dir).length} files, ${live.size} answered and held, ${readdirSync(dir).filter((f) => f.startsWith('.podnet-tmp')).length} temp files`);
  }
  assert.ok(answered >= 6 * 6, `the children killed from outside answered their first batch at least (${answered})`);

  // the runtime's GC after the node restarts: nothing is valid any more
  const gc = await dispatch(ipamPlugin, {
    env: { CNI_COMMAND: 'GC', CNI_PATH: '/x' },
    stdin: JSON.stringify({ cniVersion: '1.1.0', name: 'crash', ipam: { type: 'podnet-ipam', dataDir: join(root, 'data'), ranges: RANGES }, 'cni.dev/valid-attachments': [] }),
  });
  assert.equal(gc.exitCode, 0, gc.stdout);
  assert.deepEqual(ipFiles(dir), []);

  // the whole range is allocatable again, in batches of this process
  const cfg = { ...loadIpamConfig({ name: 'crash', ipam: { ranges: RANGES } }), storeDir: dir };
  const store = new IpamStore(dir);
  const got: string[] = [];
  for (let i = 0; i < V4_USABLE; i += 64) {
    const batch = await Promise.all(Array.from({ length: Math.min(64, V4_USABLE - i) }, (_, j) => reserveFor(store, cfg, `again${i + j}`, 'eth0')));
    got.push(...batch.map((a) => formatIP(a[0].ip)));
  }
  assert.equal(new Set(got).size, V4_USABLE);
  await assert.rejects(reserveFor(store, cfg, 'one-too-many', 'eth0'), /no IP addresses available in range set 10\.30\.0\.0\/22/);
  assert.ok(!readdirSync(dir).some((f) => f.startsWith('.podnet-tmp')), 'temp files of killed writers are gone');
});
