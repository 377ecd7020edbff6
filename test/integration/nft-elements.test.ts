// The nfnetlink set-element writer against the real kernel, in a network namespace of its own
// (never the root one): adds, deletes, destroys and value replacements land exactly as asked
// (checked with `nft -j list`), a failing batch names its op and changes nothing, a batch of
// 30,000 elements goes through, and a one-service change costs little next to a full map.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync, rmSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { delNetns, netnsWithPrefix, sh } from '../helpers/netns.js';
import { NftElementWriter, NftNetlinkError, renderElementOp, type ElemPart, type ElementOp } from '../../src/kernel/netlink/nft-elements.js';

const PREFIX = `pnt-nfe-${randomBytes(3).toString('hex')}`;
const NS = `${PREFIX}-0`;
const NS_PATH = `/run/netns/${NS}`;

const RULESET = `
table inet pnx {
  map svc4 { typeof ip daddr . meta l4proto . th dport : verdict; }
  map dnat4 { typeof ip daddr . meta l4proto . th dport : ip daddr . th dport; }
  map svc6 { typeof ip6 daddr . meta l4proto . th dport : verdict; }
  map dnat6 { typeof ip6 daddr . meta l4proto . th dport : ip6 daddr . th dport; }
  set affinity4 { type ipv4_addr; flags dynamic,timeout; }
  set plain4 { type ipv4_addr; }
  map marks { type mark : verdict; }
  chain svc-a { }
  chain svc-b { }
  chain pre {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr . meta l4proto . th dport vmap @svc4
    ip6 daddr . meta l4proto . th dport vmap @svc6
    dnat ip to ip daddr . meta l4proto . th dport map @dnat4
    dnat ip6 to ip6 daddr . meta l4proto . th dport map @dnat6
    meta mark vmap @marks
  }
}
`;

/** nft inside the test netns (listings of 30,000 elements pass execFileSync's default 1 MiB maxBuffer) */
function nft(args: string[], input?: string): string {
  try {
    return execFileSync('nsenter', [`--net=${NS_PATH}`, 'nft', ...args], { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'], maxBuffer: 512 << 20 });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`nft ${args.join(' ')}: ${err.stderr || err.message}`);
  }
}

/** An nft JSON value (key, map data, verdict) as text: "10.96.0.1 . tcp . 80", "goto svc-a". */
function fmt(v: unknown): string {
  if (typeof v === 'string' || typeof v === 'number') return String(v);
  const o = v as Record<string, unknown>;
  if (Array.isArray(o.concat)) return o.concat.map(fmt).join(' . ');
  for (const k of ['goto', 'jump']) if (o[k]) return `${k} ${(o[k] as { target: string }).target}`;
  for (const k of ['accept', 'drop', 'return', 'continue']) if (k in o) return k;
  if (o.elem) {
    const e = o.elem as { val: unknown; timeout?: number; comment?: string };
    let s = fmt(e.val);
    if (e.timeout !== undefined) s += ` timeout ${e.timeout}s`;
    if (e.comment !== undefined) s += ` comment "${e.comment}"`;
    return s;
  }
  return JSON.stringify(v);
}

/** The elements of a set or map, as sorted text lines ("KEY [timeout Ns] [comment "C"] [: DATA]"). */
function elements(kind: 'set' | 'map', name: string): string[] {
  const j = JSON.parse(nft(['-j', 'list', kind, 'inet', 'pnx', name])) as { nftables: Record<string, { elem?: unknown[] }>[] };
  const obj = j.nftables.find((x) => x[kind])![kind];
  return (obj.elem ?? []).map((e) => (Array.isArray(e) ? `${fmt(e[0])} : ${fmt(e[1])}` : fmt(e))).sort();
}

const v4 = (value: string): ElemPart => ({ kind: 'ipv4', value });
const v6 = (value: string): ElemPart => ({ kind: 'ipv6', value });
const tcp: ElemPart = { kind: 'proto', value: 'tcp' };
const udp: ElemPart = { kind: 'proto', value: 'udp' };
const port = (value: number): ElemPart => ({ kind: 'port', value });
const base = { family: 'inet', table: 'pnx' } as const;
const svc4 = (op: ElementOp['op'], ip: string, p: number, chain = 'svc-a', comment?: string): ElementOp => ({
  ...base,
  op,
  set: 'svc4',
  key: [v4(ip), tcp, port(p)],
  data: { kind: 'verdict', verdict: 'goto', chain },
  comment,
});
const dnat4 = (op: ElementOp['op'], ip: string, p: number, to: string, toPort: number): ElementOp => ({
  ...base,
  op,
  set: 'dnat4',
  key: [v4(ip), tcp, port(p)],
  data: { kind: 'value', parts: [v4(to), port(toPort)] },
});

let w: NftElementWriter;

before(() => {
  sh('ip', ['netns', 'add', NS]);
  sh('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
  nft(['-f', '-'], RULESET);
  w = new NftElementWriter({ netnsPath: NS_PATH });
});

after(() => {
  w?.close();
  delNetns(NS);
  assert.deepEqual(netnsWithPrefix(PREFIX), []);
});

/** Empties every set and map (between tests), with nft: not the code under test. */
function flushAll(): void {
  const maps = ['svc4', 'dnat4', 'svc6', 'dnat6', 'marks'].map((m) => `flush map inet pnx ${m}\n`);
  const sets = ['affinity4', 'plain4'].map((s) => `flush set inet pnx ${s}\n`);
  nft(['-f', '-'], [...maps, ...sets].join(''));
}

describe('NftElementWriter (nfnetlink, in a netns)', () => {
  it('adds elements of every kind: verdict and value maps (IPv4, IPv6), comments, timeouts, plain sets, marks', () => {
    flushAll();
    w.apply([
      svc4('add', '10.96.0.1', 80, 'svc-a', 'default/web:http'),
      svc4('add', '10.96.0.1', 443, 'svc-b'),
      dnat4('add', '10.96.0.1', 80, '10.244.1.5', 8080),
      { ...base, op: 'add', set: 'svc6', key: [v6('fd00:96::1'), udp, port(53)], data: { kind: 'verdict', verdict: 'jump', chain: 'svc-b' }, comment: 'kube-system/dns' },
      { ...base, op: 'add', set: 'dnat6', key: [v6('fd00:96::1'), udp, port(53)], data: { kind: 'value', parts: [v6('fd00:244:1::5'), port(5353)] } },
      { ...base, op: 'add', set: 'affinity4', key: [v4('10.244.1.7')], timeoutMs: 3_600_000, comment: 'client' },
      { ...base, op: 'add', set: 'affinity4', key: [v4('10.244.1.8')], timeoutMs: 600_000 },
      { ...base, op: 'add', set: 'plain4', key: [v4('192.0.2.1')] },
      { ...base, op: 'add', set: 'plain4', key: [v4('192.0.2.2')] },
      { ...base, op: 'add', set: 'marks', key: [{ kind: 'u32', value: 0x4000 }], data: { kind: 'verdict', verdict: 'drop' } },
      { ...base, op: 'add', set: 'marks', key: [{ kind: 'u32', value: 7 }], data: { kind: 'verdict', verdict: 'accept' } },
    ]);
    assert.deepEqual(elements('map', 'svc4'), ['10.96.0.1 . tcp . 443 : goto svc-b', '10.96.0.1 . tcp . 80 comment "default/web:http" : goto svc-a']);
    assert.deepEqual(elements('map', 'dnat4'), ['10.96.0.1 . tcp . 80 : 10.244.1.5 . 8080']);
    assert.deepEqual(elements('map', 'svc6'), ['fd00:96::1 . udp . 53 comment "kube-system/dns" : jump svc-b']);
    assert.deepEqual(elements('map', 'dnat6'), ['fd00:96::1 . udp . 53 : fd00:244:1::5 . 5353']);
    assert.deepEqual(elements('set', 'affinity4'), ['10.244.1.7 timeout 3600s comment "client"', '10.244.1.8 timeout 600s']);
    assert.deepEqual(elements('set', 'plain4'), ['192.0.2.1', '192.0.2.2']);
    assert.deepEqual(elements('map', 'marks'), ['16384 : drop', '7 : accept']);
    // the text form shows the same, as nft prints it
    assert.match(nft(['list', 'map', 'inet', 'pnx', 'marks']), /0x00004000 : drop/);
    assert.match(nft(['list', 'set', 'inet', 'pnx', 'affinity4']), /10\.244\.1\.7 timeout 1h expires \S+ comment "client"/);
  });

  it('adding an identical element again is not an error (nft `add` semantics); a different value is', () => {
    flushAll();
    w.apply([dnat4('add', '10.96.0.1', 80, '10.244.1.5', 8080)]);
    w.apply([dnat4('add', '10.96.0.1', 80, '10.244.1.5', 8080)]);
    assert.throws(
      () => w.apply([dnat4('add', '10.96.0.1', 80, '10.244.1.6', 8080)]),
      (e: unknown) => e instanceof NftNetlinkError && e.errno === 17 && e.message === 'add element inet pnx dnat4 { 10.96.0.1 . tcp . 80 : 10.244.1.6 . 8080 }: File exists',
    );
    assert.deepEqual(elements('map', 'dnat4'), ['10.96.0.1 . tcp . 80 : 10.244.1.5 . 8080']);
  });

  it('replaces values with delete + add in one batch (order kept), deletes and destroys', () => {
    flushAll();
    w.apply([
      svc4('add', '10.96.0.1', 80),
      svc4('add', '10.96.0.2', 80),
      svc4('add', '10.96.0.3', 80),
      dnat4('add', '10.96.0.1', 80, '10.244.1.5', 8080),
      dnat4('add', '10.96.0.2', 80, '10.244.1.6', 8080),
    ]);
    w.apply([
      svc4('delete', '10.96.0.1', 80),
      svc4('add', '10.96.0.1', 80, 'svc-b', 'moved'),
      dnat4('delete', '10.96.0.1', 80, '', 0),
      dnat4('add', '10.96.0.1', 80, '10.244.2.9', 9090),
      svc4('delete', '10.96.0.2', 80),
      svc4('destroy', '10.96.0.3', 80),
      svc4('destroy', '10.96.0.99', 80), // missing: tolerated
      dnat4('destroy', '10.96.0.2', 80, '', 0),
    ]);
    assert.deepEqual(elements('map', 'svc4'), ['10.96.0.1 . tcp . 80 comment "moved" : goto svc-b']);
    assert.deepEqual(elements('map', 'dnat4'), ['10.96.0.1 . tcp . 80 : 10.244.2.9 . 9090']);
  });

  it('a failing op throws naming it, and nothing of its batch is applied (atomic)', () => {
    flushAll();
    w.apply([{ ...base, op: 'add', set: 'plain4', key: [v4('192.0.2.1')] }]);
    const batch: ElementOp[] = [
      svc4('add', '10.96.0.1', 80),
      { ...base, op: 'add', set: 'plain4', key: [v4('192.0.2.2')] },
      { ...base, op: 'delete', set: 'plain4', key: [v4('192.0.2.1')] },
      { ...base, op: 'delete', set: 'plain4', key: [v4('192.0.2.99')] }, // missing
      dnat4('add', '10.96.0.1', 80, '10.244.1.5', 8080),
    ];
    let err: unknown;
    try {
      w.apply(batch);
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof NftNetlinkError, String(err));
    assert.equal(err.message, 'delete element inet pnx plain4 { 192.0.2.99 }: No such file or directory');
    assert.equal(err.errno, 2);
    assert.equal(err.opIndex, 3, 'the exact element, found through the ack offset (the message carried two deletes)');
    assert.equal(err.op, batch[3]);
    assert.deepEqual(elements('map', 'svc4'), []);
    assert.deepEqual(elements('map', 'dnat4'), []);
    assert.deepEqual(elements('set', 'plain4'), ['192.0.2.1'], 'neither the add nor the delete before the failure took effect');
    // the writer goes on working after a failed batch
    w.apply(batch.filter((_, i) => i !== 3));
    assert.deepEqual(elements('set', 'plain4'), ['192.0.2.2']);
    assert.deepEqual(elements('map', 'svc4'), ['10.96.0.1 . tcp . 80 : goto svc-a']);
  });

  it('errors name the op: a missing set, a missing chain, a key of the wrong size, bad input before sending', () => {
    flushAll();
    const missingSet: ElementOp = { ...base, op: 'add', set: 'nosuch', key: [v4('192.0.2.1')] };
    assert.throws(() => w.apply([missingSet]), { message: 'add element inet pnx nosuch { 192.0.2.1 }: No such file or directory' });
    assert.throws(() => w.apply([svc4('add', '10.96.0.1', 80, 'no-chain')]), (e: unknown) => e instanceof NftNetlinkError && e.message.startsWith('add element inet pnx svc4 { 10.96.0.1 . tcp . 80 : goto no-chain }: No such file or directory'));
    assert.throws(() => w.apply([{ ...base, op: 'add', set: 'plain4', key: [v6('fd00::1')] }]), (e: unknown) => e instanceof NftNetlinkError && e.opIndex === 0 && e.message.startsWith('add element inet pnx plain4 { fd00::1 }: '));
    assert.throws(() => w.apply([{ ...base, op: 'add', set: 'plain4', key: [v4('192.0.2.1')], timeoutMs: 1000 }]), (e: unknown) => e instanceof NftNetlinkError && e.message.startsWith('add element inet pnx plain4 { 192.0.2.1 timeout 1s }: '));
    assert.throws(() => w.apply([svc4('add', '10.96.0.1', 80), { ...base, op: 'add', set: 'plain4', key: [v4('192.0.2.300')] }]), {
      message: 'add element inet pnx plain4 { 192.0.2.300 }: Invalid argument (bad IPv4 address: 192.0.2.300)',
    });
    assert.deepEqual(elements('map', 'svc4'), []);
    assert.deepEqual(elements('set', 'plain4'), []);
  });

  it('keeps order and atomicity across many messages in one batch (tiny message size)', () => {
    flushAll();
    const saved = NftElementWriter.maxElementsBytes;
    NftElementWriter.maxElementsBytes = 200; // ~3 elements per message
    try {
      const ops: ElementOp[] = [];
      for (let i = 1; i <= 30; i++) ops.push(svc4('add', `10.96.1.${i}`, 80));
      for (let i = 1; i <= 30; i++) ops.push(svc4('delete', `10.96.1.${i}`, 80), svc4('add', `10.96.1.${i}`, 80, 'svc-b'));
      w.apply(ops);
      const got = elements('map', 'svc4');
      assert.equal(got.length, 30);
      assert.ok(got.every((l) => l.endsWith(': goto svc-b')), got.join('\n'));
      // a failure in a late message undoes the earlier messages too, and names the right element
      const bad = [...Array.from({ length: 20 }, (_, i) => svc4('add', `10.96.2.${i}`, 80)), svc4('delete', '10.96.1.1', 80), svc4('delete', '10.96.9.9', 80), svc4('delete', '10.96.1.2', 80)];
      assert.throws(() => w.apply(bad), (e: unknown) => e instanceof NftNetlinkError && e.opIndex === 21 && e.message === 'delete element inet pnx svc4 { 10.96.9.9 . tcp . 80 }: No such file or directory');
      assert.equal(elements('map', 'svc4').length, 30);
    } finally {
      NftElementWriter.maxElementsBytes = saved;
    }
  });

  it('opens its socket in the current netns without netnsPath', () => {
    // run inside the test netns (nsenter), so the root netns is never written to
    const dir = mkdtempSync(join(tmpdir(), 'pnt-nfe-'));
    try {
      const mod = fileURLToPath(new URL('../../src/kernel/netlink/nft-elements.ts', import.meta.url));
      const script = join(dir, 'cur.ts');
      writeFileSync(
        script,
        `import { NftElementWriter } from ${JSON.stringify(mod)};
const w = new NftElementWriter();
w.apply([{ op: 'add', family: 'inet', table: 'pnx', set: 'plain4', key: [{ kind: 'ipv4', value: '198.51.100.7' }] }]);
w.close();
`,
      );
      flushAll();
      const tsx = fileURLToPath(new URL('../../node_modules/tsx/dist/loader.mjs', import.meta.url));
      sh('nsenter', [`--net=${NS_PATH}`, process.execPath, '--import', pathToFileURL(tsx).href, script]);
      assert.deepEqual(elements('set', 'plain4'), ['198.51.100.7']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('applies 30,000 elements in one batch; a one-service change next to them stays cheap', () => {
    flushAll();
    const N = 30000;
    const ip = (i: number): string => `10.${96 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
    const big: ElementOp[] = [];
    for (let i = 0; i < N; i++) big.push(svc4('add', ip(i), 80, i % 2 ? 'svc-a' : 'svc-b', `default/svc-${i}:http`));
    let t = performance.now();
    w.apply(big);
    const bigMs = performance.now() - t;
    const got = elements('map', 'svc4');
    assert.equal(got.length, N);
    assert.ok(got.includes(`${ip(12345)} . tcp . 80 comment "default/svc-12345:http" : goto svc-a`));
    // the matching DNAT map too, so both maps hold 30,000
    const dn: ElementOp[] = [];
    for (let i = 0; i < N; i++) dn.push(dnat4('add', ip(i), 80, `10.244.${(i >> 8) & 255}.${i & 255}`, 8080));
    w.apply(dn);
    console.log(`# 30,000-element batch: ${bigMs.toFixed(1)} ms (encode + kernel + acks)`);

    // one service changes its endpoint: delete + add in the verdict map and the DNAT map
    const times: number[] = [];
    for (let r = 0; r < 30; r++) {
      const i = 777 + r;
      const ops = [
        svc4('delete', ip(i), 80),
        svc4('add', ip(i), 80, 'svc-b', `default/svc-${i}:http`),
        dnat4('delete', ip(i), 80, '', 0),
        dnat4('add', ip(i), 80, '10.244.200.1', 9000 + r),
      ];
      t = performance.now();
      w.apply(ops);
      times.push(performance.now() - t);
    }
    const stats = (xs: number[]): string => {
      const v = [...xs].sort((a, b) => a - b);
      const q = (p: number): string => v[Math.min(v.length - 1, Math.floor(p * v.length))].toFixed(2);
      return `min ${q(0)} ms, median ${q(0.5)} ms, p90 ${q(0.9)} ms, max ${q(1)} ms`;
    };
    console.log(`# one-service change (4 ops: vmap goto + dnat, delete+add each) with 2 x 30,000 elements: ${stats(times)}`);
    // an endpoint change alone (the value map): no goto element, so no table re-validation in the kernel
    const dnatTimes: number[] = [];
    for (let r = 0; r < 30; r++) {
      const i = 2000 + r;
      const ops = [dnat4('delete', ip(i), 80, '', 0), dnat4('add', ip(i), 80, '10.244.201.1', 9000 + r)];
      t = performance.now();
      w.apply(ops);
      dnatTimes.push(performance.now() - t);
    }
    console.log(`# endpoint change (2 ops, dnat map only) with 2 x 30,000 elements: ${stats(dnatTimes)}`);
    // the same change through the nft CLI, for comparison
    const i = 900;
    const text = [
      renderElementOp(svc4('delete', ip(i), 80)),
      renderElementOp(svc4('add', ip(i), 80, 'svc-b')),
      renderElementOp(dnat4('delete', ip(i), 80, '', 0)),
      renderElementOp(dnat4('add', ip(i), 80, '10.244.200.2', 9999)),
    ].join('\n');
    t = performance.now();
    nft(['-f', '-'], text + '\n');
    console.log(`# the same change with \`nft -f -\`: ${(performance.now() - t).toFixed(1)} ms`);
    const d = elements('map', 'dnat4');
    assert.equal(d.length, N);
    assert.ok(d.includes(`${ip(777)} . tcp . 80 : 10.244.200.1 . 9000`));
    assert.ok(d.includes(`${ip(900)} . tcp . 80 : 10.244.200.2 . 9999`), 'renderElementOp output is valid nft input');
  });
});
