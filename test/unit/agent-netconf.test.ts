import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseNetConf, NetConfError } from '../../src/agent/netconf.js';
import { chooseSubnet, SubnetsExhaustedError } from '../../src/agent/leases.js';
import { renderSubnetEnv, gatewayCidr } from '../../src/agent/subnet-env.js';
import { parseCidr } from '../../src/util/ip.js';
import type { NodeLease } from '../../src/agent/lease.js';
import { decodeLease, encodeLease, leaseKey, subnetFromKey } from '../../src/agent/lease.js';

const base = { Network: '10.244.0.0/16', Backend: { Type: 'vxlan' } };
const field = (f: string) => (e: unknown) => e instanceof NetConfError && e.field === f;

test('net-conf defaults as flannel: /24 subnets, VNI 1, port 8472, the first subnet reserved', () => {
  const c = parseNetConf(base);
  assert.equal(c.subnetLen, 24);
  assert.deepEqual(c.backend, { type: 'vxlan', vni: 1, port: 8472, mtu: undefined });
  assert.equal(c.subnetMin, 1);
  assert.equal(c.subnetMax, 255);
});

test('bad net-conf: each error names its field', () => {
  assert.throws(() => parseNetConf({ ...base, Network: '10.244.0.0/33' }), field('Network'));
  assert.throws(() => parseNetConf({ ...base, Network: 'ten' }), field('Network'));
  assert.throws(() => parseNetConf({ ...base, Network: '10.244.1.0/16' }), field('Network'));
  assert.throws(() => parseNetConf({ ...base, SubnetLen: 16 }), field('SubnetLen'));
  assert.throws(() => parseNetConf({ ...base, SubnetLen: 31 }), field('SubnetLen'));
  assert.throws(() => parseNetConf({ ...base, Backend: { Type: 'wireguard' } }), field('Backend.Type'));
  assert.throws(() => parseNetConf({ Network: '10.244.0.0/16' }), field('Backend'));
  assert.throws(() => parseNetConf(base, [{ what: 'the node network', net: parseCidr('10.244.7.0/24') }]), (e: unknown) => e instanceof NetConfError && /overlaps the node network/.test((e as Error).message));
  assert.throws(() => parseNetConf({ ...base, IPv6Network: '10.0.0.0/8' }), field('IPv6Network'));
});

const lease = (subnet: string, ip: string): NodeLease => ({ subnet, publicIP: ip, backendType: 'vxlan', backendData: {} });

test('a node takes back its own subnet, else its remembered one, else a free one', () => {
  const c = parseNetConf({ ...base, Network: '10.10.0.0/22' }); // subnets 1..3 usable
  assert.equal(chooseSubnet(c, [lease('10.10.2.0/24', '192.168.0.5')], { publicIP: '192.168.0.5' }).subnet, '10.10.2.0/24');
  assert.equal(chooseSubnet(c, [], { publicIP: '192.168.0.5', remembered: '10.10.3.0/24' }).subnet, '10.10.3.0/24');
  const taken = [lease('10.10.1.0/24', 'a'), lease('10.10.2.0/24', 'b')];
  assert.equal(chooseSubnet(c, taken, { publicIP: 'c' }, 0).subnet, '10.10.3.0/24');
  assert.throws(() => chooseSubnet(c, [...taken, lease('10.10.3.0/24', 'c')], { publicIP: 'd' }), SubnetsExhaustedError);
});

test('dual stack pairs the IPv6 subnet with the IPv4 one', () => {
  const c = parseNetConf({ ...base, IPv6Network: 'fd00:244::/56' });
  const p = chooseSubnet(c, [], { publicIP: 'x' }, 4);
  const idx = Number(p.subnet.split('.')[2]);
  assert.equal(p.ipv6Subnet, `fd00:244:0:${idx.toString(16)}::/64`);
});

test('subnet.env and lease encoding', () => {
  const c = parseNetConf(base);
  assert.equal(gatewayCidr('10.244.3.0/24'), '10.244.3.1/24');
  assert.equal(renderSubnetEnv(c, lease('10.244.3.0/24', '1.2.3.4'), 1450, true), 'PODNET_NETWORK=10.244.0.0/16\nPODNET_SUBNET=10.244.3.1/24\nPODNET_MTU=1450\nPODNET_IPMASQ=true\n');
  const l: NodeLease = { subnet: '10.244.3.0/24', publicIP: '192.168.1.2', backendType: 'vxlan', backendData: { VtepMAC: '02:00:00:00:00:01', VNI: 1 }, nodeName: 'n1' };
  const key = leaseKey(l.subnet);
  assert.equal(key, '/podnet/network/subnets/10.244.3.0-24');
  assert.equal(subnetFromKey(key), '10.244.3.0/24');
  assert.deepEqual(decodeLease(key, encodeLease(l)), l);
  assert.equal(decodeLease(key, '{"PublicIP":1}'), undefined);
});

test('net-conf Backend tun: Port defaults to 8285 (vxlan keeps 8472), MTU passes through, Port range names Backend.Port', () => {
  const tun = { Network: '10.244.0.0/16', Backend: { Type: 'tun' } };
  assert.deepEqual(parseNetConf(tun).backend, { type: 'tun', vni: 1, port: 8285, mtu: undefined });
  assert.deepEqual(parseNetConf({ ...tun, Backend: { Type: 'tun', Port: 9000, MTU: 1400 } }).backend, { type: 'tun', vni: 1, port: 9000, mtu: 1400 });
  assert.equal(parseNetConf(base).backend.port, 8472);
  for (const Port of [0, 65536, -1, 1.5, '8285']) {
    assert.throws(() => parseNetConf({ ...tun, Backend: { Type: 'tun', Port } }), (e: unknown) => e instanceof NetConfError && e.field === 'Backend.Port' && /net-conf Backend\.Port: expected an integer from 1 to 65535/.test(e.message));
  }
  assert.throws(() => parseNetConf({ ...tun, Backend: { Type: 'udp' } }), (e: unknown) => e instanceof NetConfError && e.field === 'Backend.Type' && /"vxlan", "host-gw", "tun" or "bgp"/.test(e.message));
});

test('net-conf Backend bgp: ASN, Peers, GracefulRestart parsed; bad values name the field', () => {
  const base = { Network: '10.244.0.0/16' };
  const b = parseNetConf({ ...base, Backend: { Type: 'bgp', ASN: 4200000001, Peers: [{ Address: '192.168.1.254', ASN: 65000, HoldTime: 9 }], GracefulRestart: { RestartTime: 30 } } }).backend.bgp!;
  assert.equal(b.asn, 4200000001);
  assert.deepEqual(b.peers[0], { address: '192.168.1.254', asn: 65000, holdTime: 9, passive: false, port: 179 });
  assert.equal(b.gracefulRestart.restartTime, 30);
  assert.equal(parseNetConf({ ...base, Backend: { Type: 'bgp' } }).backend.bgp!.asn, 64512);
  for (const [Backend, field] of [
    [{ Type: 'bgp', ASN: 0 }, 'Backend.ASN'],
    [{ Type: 'bgp', ASN: 23456 }, 'Backend.ASN'],
    [{ Type: 'bgp', ASN: 4294967295 }, 'Backend.ASN'],
    [{ Type: 'bgp', Peers: [{ Address: '300.1.1.1', ASN: 65000 }] }, 'Backend.Peers[0].Address'],
    [{ Type: 'bgp', Peers: [{ Address: '10.0.0.1', ASN: 65000, HoldTime: 2 }] }, 'Backend.Peers[0].HoldTime'],
    [{ Type: 'bgp', RouterID: '0.0.0.0' }, 'Backend.RouterID'],
  ] as const) {
    assert.throws(() => parseNetConf({ ...base, Backend }), (e: unknown) => e instanceof NetConfError && e.field === field, JSON.stringify(Backend));
  }
});
