// FRR as the lab's router, its pure parts: the bgpd config a plan renders to (policy, timers,
// graceful restart, both address families), the vtysh commands a reload sends (only what changed),
// the argv `lab exec router -- vtysh` gets, and the session states read from vtysh's JSON.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { frr, parseFrrNeighborAs, parseFrrSessions, reloadCommands, renderFrrConfig } from '../../src/lab/router/frr.js';
import type { RouterPlan } from '../../src/lab/router/types.js';

function plan(extra: Partial<RouterPlan> = {}): RouterPlan {
  return {
    asn: 65000,
    routerId: '192.168.101.253',
    legs: [
      { ifname: 'rack1', v4: '192.168.101.253/24', v6: 'fd00:101::253/64' },
      { ifname: 'rack2', v4: '192.168.102.253/24', v6: 'fd00:102::253/64' },
    ],
    neighbors: [
      { name: 'n1', address: '192.168.101.1', asn: 4200000001 },
      { name: 'n2', address: '192.168.102.2', asn: 4200000002 },
    ],
    clusterNetworks: ['10.244.0.0/16', 'fd00:10:244::/56'],
    restartTime: 120,
    holdTime: 9,
    ...extra,
  };
}

/** The lines of a config, trimmed, without comments and blank ones. */
function lines(conf: string): string[] {
  return conf
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('!'));
}

/** The lines between `start` and the next `end` (exclusive). */
function section(conf: string, start: string, end: string): string[] {
  const ls = lines(conf);
  const i = ls.indexOf(start);
  assert.ok(i >= 0, `no "${start}" in:\n${conf}`);
  const j = ls.indexOf(end, i + 1);
  assert.ok(j > i, `no "${end}" after "${start}"`);
  return ls.slice(i + 1, j);
}

describe('renderFrrConfig', () => {
  it('router bgp with the router id, no policy required, explicit activation, graceful restart', () => {
    const c = renderFrrConfig(plan());
    const ls = lines(c);
    assert.ok(ls.includes('router bgp 65000'));
    const bgp = section(c, 'router bgp 65000', 'exit');
    for (const l of [
      'bgp router-id 192.168.101.253',
      'no bgp ebgp-requires-policy',
      'no bgp default ipv4-unicast',
      'bgp graceful-restart',
      'bgp graceful-restart restart-time 120',
      'bgp graceful-restart preserve-fw-state',
      'coalesce-time 0',
    ])
      assert.ok(bgp.includes(l), `${l} in router bgp:\n${c}`);
    // the restart time is the plan's
    assert.ok(lines(renderFrrConfig(plan({ restartTime: 30 }))).includes('bgp graceful-restart restart-time 30'));
  });

  it('each neighbour: remote AS, description, keepalive hold/3, connect 1 s, no advertisement interval', () => {
    const bgp = section(renderFrrConfig(plan()), 'router bgp 65000', 'exit');
    for (const [a, as, name] of [['192.168.101.1', 4200000001, 'n1'], ['192.168.102.2', 4200000002, 'n2']] as const) {
      for (const l of [`neighbor ${a} remote-as ${as}`, `neighbor ${a} description ${name}`, `neighbor ${a} timers 3 9`, `neighbor ${a} timers connect 1`, `neighbor ${a} advertisement-interval 0`])
        assert.ok(bgp.includes(l), l);
    }
    // keepalive = max(1, floor(hold / 3))
    const short = lines(renderFrrConfig(plan({ holdTime: 3, neighbors: [{ name: 'n1', address: '10.0.0.1', asn: 1 }] })));
    assert.ok(short.includes('neighbor 10.0.0.1 timers 1 3'));
    const odd = lines(renderFrrConfig(plan({ holdTime: 10, neighbors: [{ name: 'n1', address: '10.0.0.1', asn: 1 }] })));
    assert.ok(odd.includes('neighbor 10.0.0.1 timers 3 10'));
  });

  it('every neighbour activated in ipv4 and ipv6 unicast with the inbound pod filter', () => {
    const c = renderFrrConfig(plan());
    const v4 = section(c, 'address-family ipv4 unicast', 'exit-address-family');
    const v6 = section(c, 'address-family ipv6 unicast', 'exit-address-family');
    assert.deepEqual(v4, [
      'neighbor 192.168.101.1 activate',
      'neighbor 192.168.101.1 route-map pods4-in in',
      'neighbor 192.168.102.2 activate',
      'neighbor 192.168.102.2 route-map pods4-in in',
    ]);
    assert.deepEqual(v6, [
      'neighbor 192.168.101.1 activate',
      'neighbor 192.168.101.1 route-map pods6-in in',
      'neighbor 192.168.102.2 activate',
      'neighbor 192.168.102.2 route-map pods6-in in',
    ]);
    // no outbound policy: what a node sends goes on to the others
    assert.doesNotMatch(c, /route-map \S+ out/);
  });

  it('prefix lists accept only prefixes inside the cluster networks, written from masked CIDRs', () => {
    const c = renderFrrConfig(plan({ clusterNetworks: ['10.244.1.7/16', 'fd00:10:244::1/56', '172.20.0.0/24'] }));
    const ls = lines(c);
    assert.deepEqual(ls.filter((l) => l.startsWith('ip prefix-list ')), [
      'ip prefix-list pods4 seq 5 permit 10.244.0.0/16 le 32',
      'ip prefix-list pods4 seq 10 permit 172.20.0.0/24 le 32',
    ]);
    assert.deepEqual(ls.filter((l) => l.startsWith('ipv6 prefix-list ')), ['ipv6 prefix-list pods6 seq 5 permit fd00:10:244::/56 le 128']);
    assert.deepEqual(section(c, 'route-map pods4-in permit 10', 'exit'), ['match ip address prefix-list pods4']);
    assert.deepEqual(section(c, 'route-map pods6-in permit 10', 'exit'), ['match ipv6 address prefix-list pods6']);
  });

  it('a family without a cluster network: its list denies everything; a host-length network has no le', () => {
    const ls = lines(renderFrrConfig(plan({ clusterNetworks: ['10.244.0.0/16'] })));
    assert.deepEqual(ls.filter((l) => l.startsWith('ipv6 prefix-list ')), ['ipv6 prefix-list pods6 seq 5 deny any']);
    const host = lines(renderFrrConfig(plan({ clusterNetworks: ['10.1.2.3/32'] })));
    assert.ok(host.includes('ip prefix-list pods4 seq 5 permit 10.1.2.3/32'));
  });

  it('no neighbours: still a valid router bgp with empty address families', () => {
    const c = renderFrrConfig(plan({ neighbors: [] }));
    assert.deepEqual(section(c, 'address-family ipv4 unicast', 'exit-address-family'), []);
    assert.doesNotMatch(c, /neighbor/);
  });
});

describe('reloadCommands', () => {
  const current = { '192.168.101.1': 4200000001, '192.168.102.2': 4200000002 };

  it('nothing changed: no commands (the sessions are left alone)', () => {
    assert.deepEqual(reloadCommands(plan(), current), []);
  });

  it('a node added: only its neighbour lines, in both address families', () => {
    const p = plan({ neighbors: [...plan().neighbors, { name: 'n3', address: '192.168.101.3', asn: 4200000003 }] });
    assert.deepEqual(reloadCommands(p, current), [
      'configure terminal',
      'router bgp 65000',
      'neighbor 192.168.101.3 remote-as 4200000003',
      'neighbor 192.168.101.3 description n3',
      'neighbor 192.168.101.3 timers 3 9',
      'neighbor 192.168.101.3 timers connect 1',
      'neighbor 192.168.101.3 advertisement-interval 0',
      'address-family ipv4 unicast',
      'neighbor 192.168.101.3 activate',
      'neighbor 192.168.101.3 route-map pods4-in in',
      'exit-address-family',
      'address-family ipv6 unicast',
      'neighbor 192.168.101.3 activate',
      'neighbor 192.168.101.3 route-map pods6-in in',
      'exit-address-family',
      'end',
    ]);
  });

  it('a node removed: no neighbor X, nothing else', () => {
    const p = plan({ neighbors: [plan().neighbors[0]] });
    assert.deepEqual(reloadCommands(p, current), ['configure terminal', 'router bgp 65000', 'no neighbor 192.168.102.2', 'end']);
  });

  it('a neighbour whose AS changed is removed and configured again', () => {
    const p = plan({ neighbors: [plan().neighbors[0], { name: 'n2', address: '192.168.102.2', asn: 4200000009 }] });
    const cmds = reloadCommands(p, current);
    assert.ok(cmds.indexOf('no neighbor 192.168.102.2') < cmds.indexOf('neighbor 192.168.102.2 remote-as 4200000009'));
    assert.ok(cmds.includes('neighbor 192.168.102.2 activate'));
    assert.ok(!cmds.some((c) => c.includes('192.168.101.1')), 'the other neighbour is not touched');
  });
});

describe('parseFrrSessions', () => {
  it('show bgp neighbors json: the state of each neighbour by address', () => {
    const json = JSON.stringify({
      '192.168.101.1': { remoteAs: 4200000001, localAs: 65000, bgpState: 'Established', bgpTimerUpMsec: 1000, addressFamilyInfo: {} },
      '192.168.102.2': { remoteAs: 4200000002, localAs: 65000, bgpState: 'Active', lastResetDueTo: 'Waiting for peer OPEN' },
      '192.168.102.4': { remoteAs: 4200000004, bgpState: 'Connect' },
    });
    assert.deepEqual(parseFrrSessions(json), { '192.168.101.1': 'Established', '192.168.102.2': 'Active', '192.168.102.4': 'Connect' });
    assert.deepEqual(parseFrrNeighborAs(json), { '192.168.101.1': 4200000001, '192.168.102.2': 4200000002, '192.168.102.4': 4200000004 });
  });

  it('show bgp summary json: peers per family, a session as its worst family says', () => {
    const json = JSON.stringify({
      ipv4Unicast: { routerId: '192.168.101.253', as: 65000, peers: { '192.168.101.1': { remoteAs: 4200000001, state: 'Established', pfxRcd: 1 }, '192.168.102.2': { remoteAs: 4200000002, state: 'Established' } } },
      ipv6Unicast: { routerId: '192.168.101.253', as: 65000, peers: { '192.168.101.1': { state: 'Established' }, '192.168.102.2': { state: 'Idle' } } },
    });
    assert.deepEqual(parseFrrSessions(json), { '192.168.101.1': 'Established', '192.168.102.2': 'Idle' });
  });

  it('no neighbours: empty; not JSON: an error quoting the answer', () => {
    assert.deepEqual(parseFrrSessions('{}'), {});
    assert.deepEqual(parseFrrSessions(JSON.stringify({ ipv4Unicast: { peers: {} } })), {});
    assert.throws(() => parseFrrSessions('% Unknown command: show bgp neighbors json'), /did not answer with JSON: % Unknown command/);
  });
});

describe('execArgv', () => {
  const files = { dir: '/tmp/lab/x/router', log: '/tmp/lab/x/router/frr.log' };
  it('vtysh gets the lab router dir for its sockets and config', () => {
    assert.deepEqual(frr.execArgv(['vtysh', '-c', 'show ip bgp'], files), ['vtysh', '--vty_socket', files.dir, '--config_dir', files.dir, '-c', 'show ip bgp']);
    assert.deepEqual(frr.execArgv(['/usr/bin/vtysh'], files), ['/usr/bin/vtysh', '--vty_socket', files.dir, '--config_dir', files.dir]);
  });
  it('other commands, and a vtysh given its own socket, are unchanged', () => {
    assert.deepEqual(frr.execArgv(['ip', 'route'], files), ['ip', 'route']);
    assert.deepEqual(frr.execArgv(['vtysh', '--vty_socket', '/x', '-c', 'show version'], files), ['vtysh', '--vty_socket', '/x', '-c', 'show version']);
  });
});
