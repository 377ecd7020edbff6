import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CniError, ErrCode } from '../../src/cni/errors.js';
import { loadIpamConfig, loadStoreConfig, describeRangeSet } from '../../src/ipam/config.js';
import { parseEnvFile } from '../../src/ipam/subnetfile.js';
import { parseResolvConf } from '../../src/ipam/resolv.js';
import { formatCidr, formatIP } from '../../src/util/ip.js';

const conf = (ipam: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({ cniVersion: '1.1.0', name: 'net1', ipam: { type: 'podnet-ipam', ...ipam }, ...extra });

function rejects(fn: () => unknown, code: number, msg: string | RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof CniError, `expected CniError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (typeof msg === 'string') assert.equal(e.message, msg);
    else assert.match(e.message, msg);
    return true;
  });
}

test('ranges: defaults for gateway, rangeStart and rangeEnd (v4 and v6)', () => {
  const c = loadIpamConfig(conf({ ranges: [[{ subnet: '10.1.0.0/24' }], [{ subnet: '2001:db8::/64' }]] }));
  assert.equal(c.rangeSets.length, 2);
  const [v4] = c.rangeSets[0].ranges;
  assert.equal(c.rangeSets[0].family, 4);
  assert.equal(formatCidr(v4.subnet), '10.1.0.0/24');
  assert.equal(formatIP(v4.gateway), '10.1.0.1');
  assert.equal(formatIP(v4.rangeStart), '10.1.0.1');
  assert.equal(formatIP(v4.rangeEnd), '10.1.0.254');
  const [v6] = c.rangeSets[1].ranges;
  assert.equal(c.rangeSets[1].family, 6);
  assert.equal(formatIP(v6.gateway), '2001:db8::1');
  assert.equal(formatIP(v6.rangeEnd), '2001:db8::ffff:ffff:ffff:ffff');
  assert.equal(c.storeDir, '/var/lib/cni/networks/net1');
  assert.deepEqual(c.routes, []);
  assert.deepEqual(c.requested, []);
});

test('explicit range bounds, gateway, dataDir, routes and dns', () => {
  const c = loadIpamConfig(
    conf({
      ranges: [[{ subnet: '10.1.0.0/16', rangeStart: '10.1.5.10', rangeEnd: '10.1.5.20', gateway: '10.1.0.254' }]],
      dataDir: '/tmp/x',
      routes: [{ dst: '0.0.0.0/0' }, { dst: '192.168.0.0/16', gw: '10.1.0.254', priority: 10 }],
      dns: { nameservers: ['10.1.0.10'], search: ['svc.local'] },
    }),
  );
  const r = c.rangeSets[0].ranges[0];
  assert.equal(formatIP(r.rangeStart), '10.1.5.10');
  assert.equal(formatIP(r.rangeEnd), '10.1.5.20');
  assert.equal(formatIP(r.gateway), '10.1.0.254');
  assert.equal(describeRangeSet(c.rangeSets[0]), '10.1.0.0/16 [10.1.5.10-10.1.5.20]');
  assert.equal(c.storeDir, '/tmp/x/net1');
  assert.deepEqual(c.routes, [{ dst: '0.0.0.0/0' }, { dst: '192.168.0.0/16', gw: '10.1.0.254', priority: 10 }]);
  assert.deepEqual(c.dns, { nameservers: ['10.1.0.10'], search: ['svc.local'] });
});

test('legacy top-level subnet becomes the first range set', () => {
  const c = loadIpamConfig(conf({ subnet: '10.2.0.0/24', rangeStart: '10.2.0.100', gateway: '10.2.0.254', ranges: [[{ subnet: 'fd00::/120' }]] }));
  assert.equal(c.rangeSets.length, 2);
  assert.equal(formatIP(c.rangeSets[0].ranges[0].rangeStart), '10.2.0.100');
  assert.equal(formatIP(c.rangeSets[0].ranges[0].gateway), '10.2.0.254');
  assert.equal(c.rangeSets[1].family, 6);
});

test('runtimeConfig.ipRanges replaces the configured ranges', () => {
  const c = loadIpamConfig(conf({ ranges: [[{ subnet: '10.1.0.0/24' }]] }, { runtimeConfig: { ipRanges: [[{ subnet: '10.9.0.0/24' }]] } }));
  assert.equal(c.rangeSets.length, 1);
  assert.equal(formatCidr(c.rangeSets[0].ranges[0].subnet), '10.9.0.0/24');
});

test('requested IPs from CNI_ARGS, args.cni.ips and runtimeConfig.ips', () => {
  const c = loadIpamConfig(
    conf({ ranges: [[{ subnet: '10.1.0.0/24' }], [{ subnet: 'fd00::/64' }]] }, { args: { cni: { ips: ['fd00::5/64'] } }, runtimeConfig: { ips: ['10.1.0.7/24'] } }),
    { IP: '10.1.0.7' },
  );
  assert.deepEqual(
    c.requested.map((r) => [formatIP(r.ip), r.field]),
    [
      ['10.1.0.7', 'CNI_ARGS IP'],
      ['fd00::5', 'args.cni.ips[0]'],
    ],
  );
});

test('every validation error names its field (code 7)', () => {
  const I = ErrCode.InvalidConfig;
  const cases: Array<[Record<string, unknown>, string | RegExp]> = [
    [{ ranges: [[{ subnet: '10.1.0.0/24', rangeStart: '10.9.0.5' }]] }, 'ipam.ranges[0][0].rangeStart: 10.9.0.5 is outside subnet 10.1.0.0/24'],
    [{ ranges: [[{ subnet: '10.1.0.0/24', rangeEnd: '10.9.0.5' }]] }, 'ipam.ranges[0][0].rangeEnd: 10.9.0.5 is outside subnet 10.1.0.0/24'],
    [{ ranges: [[{ subnet: '10.1.0.0/24', rangeStart: '10.1.0.50', rangeEnd: '10.1.0.40' }]] }, /^ipam\.ranges\[0\]\[0\]\.rangeEnd: 10\.1\.0\.40 is before rangeStart/],
    [{ ranges: [[{ subnet: '10.1.0.0/24', rangeStart: 'nope' }]] }, 'ipam.ranges[0][0].rangeStart: invalid IP address "nope"'],
    [{ ranges: [[{ subnet: '10.1.0.0/24', gateway: 'fd00::1' }]] }, /^ipam\.ranges\[0\]\[0\]\.gateway: fd00::1 is IPv6/],
    [{ ranges: [[{ subnet: '10.1.0.5/24' }]] }, /^ipam\.ranges\[0\]\[0\]\.subnet: 10\.1\.0\.5\/24 has host bits set; the network address for \/24 is 10\.1\.0\.0/],
    [{ ranges: [[{ subnet: '10.1.0.0/31' }]] }, /^ipam\.ranges\[0\]\[0\]\.subnet: network 10\.1\.0\.0\/31 is too small/],
    [{ ranges: [[{ subnet: '10.1.0.1/32' }]] }, /^ipam\.ranges\[0\]\[0\]\.subnet: network 10\.1\.0\.1\/32 is too small/],
    [{ ranges: [[{ subnet: 'fd00::/127' }]] }, /^ipam\.ranges\[0\]\[0\]\.subnet: network fd00::\/127 is too small/],
    [{ ranges: [[{ subnet: 'bogus' }]] }, 'ipam.ranges[0][0].subnet: invalid CIDR "bogus"'],
    [{ ranges: [[{}]] }, 'ipam.ranges[0][0].subnet: missing'],
    [{ ranges: [['x']] }, /^ipam\.ranges\[0\]\[0\]: expected an object/],
    [{ ranges: [[]] }, 'ipam.ranges[0]: empty range set'],
    [{ ranges: [{ subnet: '10.1.0.0/24' }] }, /^ipam\.ranges\[0\]: expected a list of ranges/],
    [{ ranges: 'x' }, /^ipam\.ranges: expected a list of range sets/],
    [{ ranges: [[{ subnet: '10.1.0.0/24' }, { subnet: 'fd00::/64' }]] }, /^ipam\.ranges\[0\]\[1\]\.subnet: fd00::\/64 is IPv6, but ipam\.ranges\[0\] is IPv4/],
    [{ ranges: [[{ subnet: '10.1.0.0/24' }, { subnet: '10.1.0.0/25' }]] }, /^ipam\.ranges\[0\]\[1\]: 10\.1\.0\.0\/25 overlaps ipam\.ranges\[0\]\[0\]/],
    [{ ranges: [[{ subnet: '10.1.0.0/24' }], [{ subnet: '10.1.0.0/16' }]] }, /^ipam\.ranges\[1\]: 10\.1\.0\.0\/16 overlaps ipam\.ranges\[0\]/],
    [{ subnet: '10.1.0.0/24', ranges: [[{ subnet: '10.1.0.0/24' }]] }, /^ipam\.ranges\[0\]: 10\.1\.0\.0\/24 overlaps ipam\.subnet/],
    [{ subnet: '10.1.0.0/24', rangeStart: '10.2.0.1' }, 'ipam.rangeStart: 10.2.0.1 is outside subnet 10.1.0.0/24'],
    [{ rangeStart: '10.2.0.1' }, /^ipam\.rangeStart: set without ipam\.subnet/],
    [{}, /^ipam: no IP ranges specified/],
    [{ ranges: [[{ subnet: '10.1.0.0/24' }]], routes: [{ gw: '10.1.0.1' }] }, 'ipam.routes[0].dst: missing'],
    [{ ranges: [[{ subnet: '10.1.0.0/24' }]], routes: [{ dst: '10.0.0.0' }] }, 'ipam.routes[0].dst: invalid CIDR "10.0.0.0"'],
    [{ ranges: [[{ subnet: '10.1.0.0/24' }]], routes: [{ dst: '::/0', gw: '10.1.0.1' }] }, /^ipam\.routes\[0\]\.gw: 10\.1\.0\.1 is IPv4, but dst ::\/0 is IPv6/],
    [{ ranges: [[{ subnet: '10.1.0.0/24' }]], routes: [{ dst: '::/0', mtu: -1 }] }, /^ipam\.routes\[0\]\.mtu: expected a non-negative integer/],
    [{ ranges: [[{ subnet: '10.1.0.0/24' }]], routes: {} }, /^ipam\.routes: expected a list/],
    [{ ranges: [[{ subnet: '10.1.0.0/24' }]], dns: { nameservers: ['x'] } }, 'ipam.dns.nameservers[0]: invalid IP address "x"'],
    [{ ranges: [[{ subnet: '10.1.0.0/24' }]], dns: { search: 'a' } }, 'ipam.dns.search: expected a list of strings'],
    [{ ranges: [[{ subnet: '10.1.0.0/24' }]], dataDir: 'rel/dir' }, /^ipam\.dataDir: must be an absolute path/],
    [{ ranges: [[{ subnet: '10.1.0.0/24' }]], dataDir: 5 }, /^ipam\.dataDir: expected a string/],
    [{ subnetFile: 'subnet.env' }, /^ipam\.subnetFile: must be an absolute path/],
    [{ subnetFile: '/run/x.env', ranges: [[{ subnet: '10.1.0.0/24' }]] }, /^ipam\.ranges: cannot be combined with ipam\.subnetFile/],
    [{ subnetFile: '/run/x.env', subnet: '10.1.0.0/24' }, /^ipam\.subnet: cannot be combined with ipam\.subnetFile/],
  ];
  for (const [ipam, msg] of cases) rejects(() => loadIpamConfig(conf(ipam)), I, msg);
  rejects(() => loadIpamConfig({ name: 'n' }), I, 'ipam: missing');
  rejects(() => loadIpamConfig({ name: 'n', ipam: [] }), I, 'ipam: expected an object');
  rejects(() => loadIpamConfig({ ipam: {} }), I, /^name: invalid network name/);
  rejects(() => loadIpamConfig(conf({ ranges: [[{ subnet: '10.1.0.0/24' }]] }, { runtimeConfig: { ipRanges: [[{ subnet: '10.1.0.0/33' }]] } })), I, 'runtimeConfig.ipRanges[0][0].subnet: invalid CIDR "10.1.0.0/33"');
  rejects(() => loadIpamConfig(conf({ ranges: [[{ subnet: '10.1.0.0/24' }]] }, { args: { cni: { ips: ['x'] } } })), I, 'args.cni.ips[0]: invalid IP address "x"');
  rejects(() => loadIpamConfig(conf({ ranges: [[{ subnet: '10.1.0.0/24' }]] }, { args: { cni: { ips: 'x' } } })), I, /^args\.cni\.ips: expected a list/);
  rejects(() => loadIpamConfig(conf({ ranges: [[{ subnet: '10.1.0.0/24' }]] }, { runtimeConfig: { ips: ['1.2.3'] } })), I, 'runtimeConfig.ips[0]: invalid IP address "1.2.3"');
  rejects(() => loadIpamConfig(conf({ ranges: [[{ subnet: '10.1.0.0/24' }]] }), { IP: '10.1.0.999' }), ErrCode.InvalidEnv, 'CNI_ARGS IP: invalid IP address "10.1.0.999"');
});

test('store config needs only name and dataDir', () => {
  assert.deepEqual(loadStoreConfig(conf({ subnetFile: '/nonexistent/subnet.env' })), { network: 'net1', storeDir: '/var/lib/cni/networks/net1' });
  assert.deepEqual(loadStoreConfig(conf({ dataDir: '/d' })), { network: 'net1', storeDir: '/d/net1' });
});

test('subnetFile: ranges, gateway and routes from the agent lease', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'podnet-ipam-cfg-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const f = join(dir, 'subnet.env');
  writeFileSync(f, 'PODNET_NETWORK=10.244.0.0/16\nPODNET_SUBNET=10.244.1.1/24\nPODNET_MTU=1450\nPODNET_IPMASQ=true\nPODNET_IPV6_NETWORK=fd00:10:244::/56\nPODNET_IPV6_SUBNET=fd00:10:244:1::1/64\n');
  const c = loadIpamConfig(conf({ subnetFile: f }));
  assert.equal(c.rangeSets.length, 2);
  const r = c.rangeSets[0].ranges[0];
  assert.equal(formatCidr(r.subnet), '10.244.1.0/24');
  assert.equal(formatIP(r.gateway), '10.244.1.1');
  assert.equal(formatIP(r.rangeStart), '10.244.1.1');
  assert.equal(formatCidr(c.rangeSets[1].ranges[0].subnet), 'fd00:10:244:1::/64');
  assert.equal(formatIP(c.rangeSets[1].ranges[0].gateway), 'fd00:10:244:1::1');
  assert.deepEqual(c.routes, [{ dst: '10.244.0.0/16' }, { dst: 'fd00:10:244::/56' }]);
  // configured routes win over the lease's
  assert.deepEqual(loadIpamConfig(conf({ subnetFile: f, routes: [{ dst: '0.0.0.0/0' }] })).routes, [{ dst: '0.0.0.0/0' }]);
  // runtime ipRanges still override
  assert.equal(formatCidr(loadIpamConfig(conf({ subnetFile: f }, { runtimeConfig: { ipRanges: [[{ subnet: '10.5.0.0/24' }]] } })).rangeSets[0].ranges[0].subnet), '10.5.0.0/24');

  rejects(() => loadIpamConfig(conf({ subnetFile: join(dir, 'missing.env') })), ErrCode.TryAgainLater, /podnet agent has not written its subnet lease yet/);
  writeFileSync(f, 'PODNET_NETWORK=10.244.0.0/16\n');
  rejects(() => loadIpamConfig(conf({ subnetFile: f })), ErrCode.InvalidConfig, /neither PODNET_SUBNET nor PODNET_IPV6_SUBNET/);
  writeFileSync(f, 'PODNET_SUBNET=10.244.1.1\n');
  rejects(() => loadIpamConfig(conf({ subnetFile: f })), ErrCode.InvalidConfig, /PODNET_SUBNET: invalid CIDR/);
});

test('env file and resolv.conf parsing', () => {
  assert.deepEqual(parseEnvFile('# c\nA=1\n\nB="x y"\r\nbad\n C = 3 \n'), { A: '1', B: 'x y', C: '3' });
  assert.deepEqual(parseResolvConf('# x\nnameserver 10.0.0.1\nnameserver fd00::1\nsearch a.b c.d\ndomain a.b\noptions ndots:5 edns0\n; y\n'), {
    nameservers: ['10.0.0.1', 'fd00::1'],
    search: ['a.b', 'c.d'],
    domain: 'a.b',
    options: ['ndots:5', 'edns0'],
  });
});
