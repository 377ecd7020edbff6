import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CniError, ErrCode } from '../../src/cni/errors.js';
import { allocate, freeCount, type AllocInput } from '../../src/ipam/allocator.js';
import { loadIpamConfig, type RangeSet } from '../../src/ipam/config.js';
import { formatIP, parseCidr, parseIP } from '../../src/util/ip.js';

function sets(ranges: unknown, extra: Record<string, unknown> = {}, cniArgs: Record<string, string> = {}) {
  return loadIpamConfig({ name: 'n', ipam: { ranges }, ...extra }, cniArgs);
}

/** Allocates `n` times in a row, feeding each result back as reserved and last-reserved. */
function allocSeq(rs: RangeSet[], n: number, reserved = new Set<string>()): string[][] {
  const last: (ReturnType<typeof parseIP> | undefined)[] = rs.map(() => undefined);
  const out: string[][] = [];
  for (let i = 0; i < n; i++) {
    const got = allocate({ rangeSets: rs, reserved, lastReserved: last });
    for (const a of got) {
      reserved.add(formatIP(a.ip));
      last[a.rangeSetIndex] = a.ip;
    }
    out.push(got.map((a) => formatIP(a.ip)));
  }
  return out;
}

function throwsCode(fn: () => unknown, code: number, msg: RegExp): void {
  assert.throws(fn, (e: unknown) => e instanceof CniError && e.code === code && msg.test(e.message));
}

test('first allocation is .2 (skips network and gateway), then sequential', () => {
  const { rangeSets } = sets([[{ subnet: '10.1.0.0/24' }]]);
  assert.deepEqual(allocSeq(rangeSets, 3).flat(), ['10.1.0.2', '10.1.0.3', '10.1.0.4']);
});

test('a /24 yields exactly 253 addresses, never network, broadcast or gateway; then 102', () => {
  const { rangeSets } = sets([[{ subnet: '10.1.0.0/24' }]]);
  const reserved = new Set<string>();
  const got = allocSeq(rangeSets, 253, reserved).flat();
  assert.equal(new Set(got).size, 253);
  for (const bad of ['10.1.0.0', '10.1.0.1', '10.1.0.255']) assert.ok(!got.includes(bad), bad);
  assert.equal(freeCount(rangeSets[0], reserved), 0n);
  throwsCode(() => allocate({ rangeSets, reserved }), ErrCode.IpamExhausted, /^no IP addresses available in range set 10\.1\.0\.0\/24$/);
});

test('rangeStart/rangeEnd bound the pool; gateway inside the range is skipped', () => {
  const { rangeSets } = sets([[{ subnet: '10.1.0.0/24', rangeStart: '10.1.0.10', rangeEnd: '10.1.0.13', gateway: '10.1.0.11' }]]);
  assert.equal(freeCount(rangeSets[0], new Set()), 3n);
  const reserved = new Set<string>();
  assert.deepEqual(allocSeq(rangeSets, 3, reserved).flat(), ['10.1.0.10', '10.1.0.12', '10.1.0.13']);
  throwsCode(() => allocate({ rangeSets, reserved }), ErrCode.IpamExhausted, /10\.1\.0\.0\/24 \[10\.1\.0\.10-10\.1\.0\.13\]/);
});

test('explicit range including network and broadcast never hands them out', () => {
  const { rangeSets } = sets([[{ subnet: '10.1.0.0/30', rangeStart: '10.1.0.0', rangeEnd: '10.1.0.3', gateway: '10.1.0.2' }]]);
  assert.equal(freeCount(rangeSets[0], new Set()), 1n);
  assert.deepEqual(allocSeq(rangeSets, 1).flat(), ['10.1.0.1']);
});

test('/30 has one allocatable address; /31 and /32 are rejected as host-local does', () => {
  const { rangeSets } = sets([[{ subnet: '10.1.0.0/30' }]]);
  const reserved = new Set<string>();
  assert.deepEqual(allocSeq(rangeSets, 1, reserved).flat(), ['10.1.0.2']);
  throwsCode(() => allocate({ rangeSets, reserved }), ErrCode.IpamExhausted, /10\.1\.0\.0\/30/);
  throwsCode(() => sets([[{ subnet: '10.1.0.0/31' }]]), ErrCode.InvalidConfig, /too small/);
  throwsCode(() => sets([[{ subnet: '10.1.0.0/32' }]]), ErrCode.InvalidConfig, /too small/);
});

test('hand-built /31 and /32 ranges (bypassing config) exhaust cleanly instead of looping', () => {
  const a = parseIP('10.1.0.0');
  const b = parseIP('10.1.0.1');
  const r31: RangeSet = { family: 4, ranges: [{ subnet: parseCidr('10.1.0.0/31'), rangeStart: a, rangeEnd: b, gateway: b }] };
  assert.equal(freeCount(r31, new Set()), 0n);
  throwsCode(() => allocate({ rangeSets: [r31], reserved: new Set() }), ErrCode.IpamExhausted, /10\.1\.0\.0\/31/);
  const r32: RangeSet = { family: 4, ranges: [{ subnet: parseCidr('10.1.0.1/32'), rangeStart: b, rangeEnd: b, gateway: parseIP('10.1.0.254') }] };
  assert.equal(freeCount(r32, new Set()), 0n);
  throwsCode(() => allocate({ rangeSets: [r32], reserved: new Set() }), ErrCode.IpamExhausted, /available/);
});

test('round robin continues after last_reserved_ip and wraps to the start', () => {
  const { rangeSets } = sets([[{ subnet: '10.1.0.0/29' }]]); // usable .2-.6
  const reserved = new Set(['10.1.0.3']);
  const pick = (last: string | undefined) => formatIP(allocate({ rangeSets, reserved, lastReserved: [last ? parseIP(last) : undefined] })[0].ip);
  assert.equal(pick('10.1.0.4'), '10.1.0.5');
  assert.equal(pick('10.1.0.6'), '10.1.0.2'); // wraps past the end
  assert.equal(pick('10.1.0.2'), '10.1.0.4'); // skips the reserved .3
  assert.equal(pick('10.9.9.9'), '10.1.0.2'); // last outside the set: start over
  assert.equal(pick(undefined), '10.1.0.2');
  // a just-released address is not reused immediately
  const r2 = new Set(['10.1.0.2', '10.1.0.3', '10.1.0.4', '10.1.0.5', '10.1.0.6']);
  r2.delete('10.1.0.4');
  assert.equal(formatIP(allocate({ rangeSets, reserved: r2, lastReserved: [parseIP('10.1.0.6')] })[0].ip), '10.1.0.4');
});

test('round robin walks across several ranges of one set, wrapping', () => {
  const { rangeSets } = sets([
    [
      { subnet: '10.1.0.0/24', rangeStart: '10.1.0.10', rangeEnd: '10.1.0.11' },
      { subnet: '10.2.0.0/24', rangeStart: '10.2.0.10', rangeEnd: '10.2.0.11' },
    ],
  ]);
  assert.deepEqual(allocSeq(rangeSets, 4).flat(), ['10.1.0.10', '10.1.0.11', '10.2.0.10', '10.2.0.11']);
  const reserved = new Set(['10.1.0.11']);
  assert.equal(formatIP(allocate({ rangeSets, reserved, lastReserved: [parseIP('10.2.0.11')] })[0].ip), '10.1.0.10');
});

test('dual stack: one address per range set, in set order', () => {
  const { rangeSets } = sets([[{ subnet: '10.1.0.0/24' }], [{ subnet: 'fd00::/64' }]]);
  const got = allocSeq(rangeSets, 2);
  assert.deepEqual(got, [
    ['10.1.0.2', 'fd00::2'],
    ['10.1.0.3', 'fd00::3'],
  ]);
});

test('one full set fails the whole allocation with the set named', () => {
  const { rangeSets } = sets([[{ subnet: '10.1.0.0/30' }], [{ subnet: 'fd00::/64' }]]);
  throwsCode(() => allocate({ rangeSets, reserved: new Set(['10.1.0.2']) }), ErrCode.IpamExhausted, /range set 10\.1\.0\.0\/30$/);
});

test('IPv6: the last address of the subnet is usable, large subnets stay fast', () => {
  const { rangeSets } = sets([[{ subnet: 'fd00::/120', rangeStart: 'fd00::fe' }]]);
  assert.deepEqual(allocSeq(rangeSets, 2).flat(), ['fd00::fe', 'fd00::ff']);
  const big = sets([[{ subnet: 'fd00::/64' }]]).rangeSets;
  assert.equal(freeCount(big[0], new Set()), (1n << 64n) - 2n);
  const last = parseIP('fd00::ffff:ffff:ffff:ffff');
  assert.equal(formatIP(allocate({ rangeSets: big, reserved: new Set(), lastReserved: [last] })[0].ip), 'fd00::2');
});

test('requested IPs: honoured, validated and checked for conflicts', () => {
  const base = [[{ subnet: '10.1.0.0/24' }], [{ subnet: 'fd00::/64' }]];
  const req = (extra: Record<string, unknown>, args: Record<string, string> = {}): AllocInput => {
    const c = sets(base, extra, args);
    return { rangeSets: c.rangeSets, reserved: new Set(['10.1.0.9']), requested: c.requested };
  };
  const got = allocate(req({ runtimeConfig: { ips: ['10.1.0.50/24'] } }));
  assert.deepEqual(
    got.map((a) => [formatIP(a.ip), a.isNew]),
    [
      ['10.1.0.50', true],
      ['fd00::2', true],
    ],
  );
  assert.deepEqual(
    allocate(req({}, { IP: '10.1.0.60,fd00::60' })).map((a) => formatIP(a.ip)),
    ['10.1.0.60', 'fd00::60'],
  );
  throwsCode(() => allocate(req({}, { IP: '10.1.0.9' })), ErrCode.IpamExhausted, /^CNI_ARGS IP: requested IP 10\.1\.0\.9 is already reserved in range set 10\.1\.0\.0\/24$/);
  throwsCode(() => allocate(req({ args: { cni: { ips: ['10.7.0.1'] } } })), ErrCode.InvalidConfig, /^args\.cni\.ips\[0\]: requested IP 10\.7\.0\.1 is not in any configured range/);
  throwsCode(() => allocate(req({ args: { cni: { ips: ['10.1.0.1'] } } })), ErrCode.InvalidConfig, /is a gateway of 10\.1\.0\.0\/24/);
  throwsCode(() => allocate(req({ args: { cni: { ips: ['10.1.0.5', '10.1.0.6'] } } })), ErrCode.InvalidConfig, /^args\.cni\.ips\[1\]: requested IP 10\.1\.0\.6 and 10\.1\.0\.5 .* one address per range set/);
  throwsCode(() => allocate(req({ args: { cni: { ips: ['10.1.0.255'] } } })), ErrCode.InvalidConfig, /not in any configured range/);
  // a requested address the caller already holds is not an error
  const c = sets(base, {}, { IP: '10.1.0.9' });
  const mine = allocate({ rangeSets: c.rangeSets, reserved: new Set(['10.1.0.9']), requested: c.requested, owned: [parseIP('10.1.0.9')] });
  assert.deepEqual([formatIP(mine[0].ip), mine[0].isNew], ['10.1.0.9', false]);
});

test('owned addresses are reused per set; sets without one get a new address', () => {
  const { rangeSets } = sets([[{ subnet: '10.1.0.0/24' }], [{ subnet: 'fd00::/64' }]]);
  const got = allocate({ rangeSets, reserved: new Set(['10.1.0.77']), owned: [parseIP('10.1.0.77'), parseIP('10.200.0.1')] });
  assert.deepEqual(
    got.map((a) => [formatIP(a.ip), a.isNew]),
    [
      ['10.1.0.77', false],
      ['fd00::2', true],
    ],
  );
});

test('a gateway of another set inside this set is never allocated', () => {
  const { rangeSets } = sets([
    [{ subnet: '10.1.0.0/24', rangeStart: '10.1.0.2', rangeEnd: '10.1.0.3' }],
    [{ subnet: '10.2.0.0/24', gateway: '10.1.0.2' }],
  ]);
  // 10.2.0.1 is free here: that set's gateway is elsewhere
  assert.deepEqual(allocSeq(rangeSets, 1).flat(), ['10.1.0.3', '10.2.0.1']);
});
