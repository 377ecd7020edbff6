// iproute2 JSON samples (captured from iproute2 6.1 on kernel 6.18) → typed objects.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseAddresses, parseFdb, parseLinks, parseNeighbours, parseRoutes, tableNumber } from '../../src/kernel/parse.js';

describe('parseLinks', () => {
  it('reads a bridge port veth with hairpin, and a vxlan with info_data', () => {
    const port = `[{"ifindex":8,"link":"h1","ifname":"h0","flags":["NO-CARRIER","BROADCAST","MULTICAST","UP","M-DOWN"],"mtu":1500,"qdisc":"noqueue","master":"br0","operstate":"LOWERLAYERDOWN","address":"72:52:5b:c3:68:26","promiscuity":1,"ifalias":"podnet x",
      "linkinfo":{"info_kind":"veth","info_slave_kind":"bridge","info_slave_data":{"state":"disabled","hairpin":true,"learning":true}}}]`;
    const [l] = parseLinks(port);
    assert.deepEqual(l, { index: 8, name: 'h0', mtu: 1500, mac: '72:52:5b:c3:68:26', up: true, operState: 'LOWERLAYERDOWN', kind: 'veth', master: 'br0', link: 'h1', alias: 'podnet x', promisc: false, hairpin: true });
    const vx = `[{"ifindex":11,"ifname":"vx0","flags":["BROADCAST","MULTICAST"],"mtu":1400,"operstate":"DOWN","address":"aa:bb:cc:dd:ee:ff","linkinfo":{"info_kind":"vxlan","info_data":{"id":42,"local":"10.0.0.1","link":"br0","port":4789,"learning":false}}}]`;
    const [v] = parseLinks(vx);
    assert.equal(v.kind, 'vxlan');
    assert.equal(v.up, false);
    assert.deepEqual(v.info, { id: 42, local: '10.0.0.1', link: 'br0', port: 4789, learning: false });
    assert.equal(v.hairpin, undefined);
  });

  it('reads a peer in another netns by index and netnsid; loopback has no kind', () => {
    const [p, lo] = parseLinks(`[{"ifindex":5,"link_index":2,"ifname":"mv0","flags":["BROADCAST","MULTICAST","PROMISC","UP","LOWER_UP"],"mtu":1300,"operstate":"UP","address":"2a:b0:de:92:6d:b2","link_netnsid":0,"linkinfo":{"info_kind":"macvlan","info_data":{"mode":"bridge"}}},
      {"ifindex":1,"ifname":"lo","flags":["LOOPBACK"],"mtu":65536,"operstate":"UNKNOWN","address":"00:00:00:00:00:00"}]`);
    assert.equal(p.linkIndex, 2);
    assert.equal(p.linkNetnsId, 0);
    assert.equal(p.link, undefined);
    assert.equal(p.promisc, true);
    assert.equal(p.info?.mode, 'bridge');
    assert.equal(lo.kind, undefined);
    assert.deepEqual(parseLinks(''), []);
    assert.throws(() => parseLinks('{not json'), /cannot parse link JSON/);
  });
});

describe('parseAddresses', () => {
  it('flattens addr_info of each link', () => {
    const a = parseAddresses(`[{"ifindex":3,"ifname":"br0","addr_info":[
      {"family":"inet","local":"10.0.0.1","prefixlen":24,"scope":"global","label":"br0"},
      {"family":"inet6","local":"fd00::1","prefixlen":64,"scope":"global","nodad":true},
      {"family":"inet6","local":"fe80::1","prefixlen":64,"scope":"link"}]},{"ifindex":1,"ifname":"lo","addr_info":[]}]`);
    assert.deepEqual(a, [
      { ifname: 'br0', family: 4, address: '10.0.0.1', prefixLen: 24, scope: 'global' },
      { ifname: 'br0', family: 6, address: 'fd00::1', prefixLen: 64, scope: 'global' },
      { ifname: 'br0', family: 6, address: 'fe80::1', prefixLen: 64, scope: 'link' },
    ]);
  });
});

describe('parseRoutes', () => {
  const sample = `[
    {"type":"unicast","dst":"default","gateway":"169.254.1.1","dev":"br0","table":"main","flags":["onlink","linkdown"]},
    {"type":"unicast","dst":"10.9.0.5","dev":"br0","table":"main","protocol":"static","scope":"link","prefsrc":"10.0.0.1","metric":20,"flags":[],"metrics":[{"mtu":1400,"advmss":1360}]},
    {"type":"local","dst":"10.0.0.1","dev":"br0","table":"local","protocol":"kernel","scope":"host","prefsrc":"10.0.0.1","flags":[]},
    {"type":"unicast","dst":"default","dev":"br0","table":"main","metric":1024,"flags":[],"pref":"medium"},
    {"type":"unicast","dst":"10.77.0.0/16","table":"100","scope":"link","flags":[]}]`;

  it('normalises host routes, families, tables and metrics', () => {
    const r = parseRoutes(sample, { dev: 'br0' });
    assert.deepEqual(r[0], { family: 4, dst: 'default', gateway: '169.254.1.1', dev: 'br0', table: 254, onlink: true, type: 'unicast' });
    assert.deepEqual(r[1], { family: 4, dst: '10.9.0.5/32', dev: 'br0', protocol: 'static', scope: 'link', table: 254, metric: 20, src: '10.0.0.1', type: 'unicast', mtu: 1400 });
    assert.equal(r[2].table, 255);
    assert.equal(r[2].type, 'local');
    assert.equal(r[3].family, 6, 'RTA_PREF marks a gateway-less IPv6 default');
    assert.equal(r[4].table, 100);
    assert.equal(r[4].dev, 'br0', 'dev omitted under "show dev" comes from the query');
  });

  it('takes family and table from the query when iproute2 omits them', () => {
    const [r] = parseRoutes('[{"dst":"fd00::5","dev":"e","flags":[]}]', { family: 6, table: 254 });
    assert.equal(r.dst, 'fd00::5/128');
    assert.equal(r.table, 254);
    assert.equal(tableNumber('default'), 253);
    assert.equal(tableNumber('42'), 42);
    assert.equal(tableNumber('custom'), undefined);
  });
});

describe('parseNeighbours / parseFdb', () => {
  it('fills dev from the query when iproute2 leaves it out', () => {
    assert.deepEqual(parseNeighbours('[{"dst":"10.0.0.7","lladdr":"02:00:00:00:00:07","state":["PERMANENT"]}]', 'br0'), [
      { dst: '10.0.0.7', dev: 'br0', lladdr: '02:00:00:00:00:07', state: ['PERMANENT'] },
    ]);
    assert.deepEqual(parseNeighbours('[{"dst":"10.0.0.8","dev":"e","state":["FAILED"]}]'), [{ dst: '10.0.0.8', dev: 'e', state: ['FAILED'] }]);
    assert.deepEqual(parseFdb('[{"mac":"00:00:00:00:00:00","dst":"10.0.0.2","flags":["self"],"state":"permanent"}]', 'vx0'), [
      { mac: '00:00:00:00:00:00', dev: 'vx0', dst: '10.0.0.2', flags: ['self'], state: 'permanent' },
    ]);
    assert.deepEqual(parseFdb('[{"mac":"aa:bb:cc:dd:ee:ff","ifname":"h0","vlan":1,"master":"br0","flags":[],"state":""}]'), [
      { mac: 'aa:bb:cc:dd:ee:ff', dev: 'h0', master: 'br0', vlan: 1, flags: [] },
    ]);
  });
});
