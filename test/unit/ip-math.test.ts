import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  add,
  broadcast,
  canonicalIP,
  cidr,
  compare,
  contains,
  equal,
  formatCidr,
  formatIP,
  hasHostBits,
  masked,
  network,
  next,
  overlaps,
  parseCidr,
  parseIP,
  prev,
  size,
  span,
  tryParseCidr,
  tryParseIP,
} from '../../src/util/ip.js';

test('parses and formats IPv4', () => {
  const a = parseIP('10.244.1.5');
  assert.equal(a.family, 4);
  assert.equal(a.value, (10n << 24n) | (244n << 16n) | (1n << 8n) | 5n);
  assert.equal(formatIP(a), '10.244.1.5');
  assert.equal(formatIP(parseIP('0.0.0.0')), '0.0.0.0');
  assert.equal(formatIP(parseIP('255.255.255.255')), '255.255.255.255');
});

test('rejects malformed IPv4', () => {
  for (const s of ['', '10.1', '10.1.1', '256.1.1.1', '010.1.1.1', '1.2.3.4.5', ' 1.2.3.4', '1.2.3.4/24', 'a.b.c.d', '0x0a.1.1.1']) {
    assert.equal(tryParseIP(s), undefined, s);
  }
  assert.throws(() => parseIP('10.1'), /invalid IP address/);
});

test('formats IPv6 canonically (RFC 5952)', () => {
  const cases: Array<[string, string]> = [
    ['::', '::'],
    ['::1', '::1'],
    ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    ['1:0:0:1:0:0:0:0', '1:0:0:1::'],
    ['fd00:0:0:0::', 'fd00::'],
    ['::ffff:1.2.3.4', '::ffff:1.2.3.4'],
    ['0000:0000:0000:0000:0000:0000:0000:0000', '::'],
  ];
  for (const [i, o] of cases) assert.equal(canonicalIP(i), o, i);
});

test('rejects malformed IPv6 and zones', () => {
  for (const s of ['fe80::1%eth0', ':::', '1:2:3:4:5:6:7:8:9', 'g::1', '1::2::3']) assert.equal(tryParseIP(s), undefined, s);
});

test('parses CIDRs and keeps host bits', () => {
  const c = parseCidr('10.244.1.1/24');
  assert.equal(c.prefix, 24);
  assert.equal(c.family, 4);
  assert.equal(formatIP(c.addr), '10.244.1.1');
  assert.ok(hasHostBits(c));
  assert.equal(formatCidr(masked(c)), '10.244.1.0/24');
  assert.equal(formatIP(network(c)), '10.244.1.0');
  assert.equal(formatIP(broadcast(c)), '10.244.1.255');
  assert.equal(size(c), 256n);
  assert.equal(formatCidr(parseCidr('2001:DB8::/64')), '2001:db8::/64');
});

test('rejects malformed CIDRs', () => {
  for (const s of ['10.0.0.0', '10.0.0.0/33', '10.0.0.0/-1', '10.0.0.0/024', '10.0.0.0/', '/24', '10.0.0.0/24/1', '::/129', 'x/8']) {
    assert.equal(tryParseCidr(s), undefined, s);
  }
  assert.throws(() => parseCidr('10.0.0.0'), /invalid CIDR/);
  assert.throws(() => cidr(parseIP('10.0.0.0'), 33), RangeError);
});

test('network and broadcast at the edges', () => {
  assert.equal(formatIP(broadcast(parseCidr('0.0.0.0/0'))), '255.255.255.255');
  assert.equal(size(parseCidr('0.0.0.0/0')), 1n << 32n);
  assert.equal(formatIP(network(parseCidr('10.1.2.3/32'))), '10.1.2.3');
  assert.equal(formatIP(broadcast(parseCidr('10.1.2.3/32'))), '10.1.2.3');
  assert.equal(formatIP(network(parseCidr('10.1.2.3/31'))), '10.1.2.2');
  assert.equal(formatIP(broadcast(parseCidr('10.1.2.3/31'))), '10.1.2.3');
  assert.equal(formatIP(broadcast(parseCidr('2001:db8::/64'))), '2001:db8::ffff:ffff:ffff:ffff');
  assert.equal(size(parseCidr('::/0')), 1n << 128n);
  assert.equal(formatIP(broadcast(parseCidr('::/0'))), 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff');
});

test('contains and overlaps respect family', () => {
  const c = parseCidr('10.1.0.0/16');
  assert.ok(contains(c, parseIP('10.1.255.255')));
  assert.ok(!contains(c, parseIP('10.2.0.0')));
  assert.ok(!contains(parseCidr('::/0'), parseIP('10.1.0.1')));
  assert.ok(contains(parseCidr('0.0.0.0/0'), parseIP('1.2.3.4')));
  assert.ok(overlaps(parseCidr('10.1.0.0/16'), parseCidr('10.1.5.0/24')));
  assert.ok(overlaps(parseCidr('10.1.5.0/24'), parseCidr('10.1.0.0/16')));
  assert.ok(!overlaps(parseCidr('10.1.0.0/24'), parseCidr('10.1.1.0/24')));
  assert.ok(!overlaps(parseCidr('::/0'), parseCidr('0.0.0.0/0')));
});

test('next, prev and add stay within the family', () => {
  assert.equal(formatIP(next(parseIP('10.0.0.255'))!), '10.0.1.0');
  assert.equal(next(parseIP('255.255.255.255')), undefined);
  assert.equal(prev(parseIP('0.0.0.0')), undefined);
  assert.equal(formatIP(prev(parseIP('10.0.1.0'))!), '10.0.0.255');
  assert.equal(formatIP(next(parseIP('2001:db8::ffff'))!), '2001:db8::1:0');
  assert.equal(next(parseIP('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff')), undefined);
  assert.equal(formatIP(add(parseIP('10.0.0.1'), 256)), '10.0.1.1');
  assert.equal(formatIP(add(parseIP('10.0.1.1'), -256n)), '10.0.0.1');
  assert.equal(formatIP(add(parseIP('2001:db8::'), 1n << 64n)), '2001:db8:0:1::');
  assert.throws(() => add(parseIP('255.255.255.255'), 1), RangeError);
  assert.throws(() => add(parseIP('0.0.0.0'), -1), RangeError);
});

test('compare, equal and span', () => {
  assert.equal(compare(parseIP('10.0.0.1'), parseIP('10.0.0.2')), -1);
  assert.equal(compare(parseIP('10.0.0.2'), parseIP('10.0.0.1')), 1);
  assert.equal(compare(parseIP('10.0.0.1'), parseIP('10.0.0.1')), 0);
  assert.equal(compare(parseIP('255.255.255.255'), parseIP('::')), -1);
  assert.ok(equal(parseIP('2001:db8::1'), parseIP('2001:DB8:0::1')));
  assert.ok(!equal(parseIP('0.0.0.1'), parseIP('::1')));
  assert.equal(span(parseIP('10.0.0.1'), parseIP('10.0.0.254')), 254n);
  assert.equal(span(parseIP('10.0.0.5'), parseIP('10.0.0.1')), 0n);
  assert.equal(span(parseIP('10.0.0.5'), parseIP('::5')), 0n);
});
