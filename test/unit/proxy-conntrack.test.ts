// Stale UDP/SCTP flows: which conntrack entries to delete after a change (pure), and the exact
// `conntrack -D` argv for each.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { conntrackArgv, staleFlows, type StaleFlow } from '../../src/proxy/conntrack.js';
import type { ProgrammedEndpoints } from '../../src/proxy/engine.js';
import { endpointsByFrontend } from '../../src/proxy/frontends.js';
import type { ProxyNode, ServicePort } from '../../src/proxy/model.js';

const pe = (o: Record<string, string[]>): ProgrammedEndpoints => new Map(Object.entries(o).map(([k, v]) => [k, new Set(v)]));
const sortFlows = (f: StaleFlow[]) => [...f].sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));

test('a removed endpoint of a UDP frontend is a stale flow; the kept one is not', () => {
  const before = pe({ 'udp/10.96.0.10/53': ['10.244.1.2/5353', '10.244.1.3/5353'] });
  const after = pe({ 'udp/10.96.0.10/53': ['10.244.1.3/5353'] });
  assert.deepEqual(staleFlows(before, after), [{ protocol: 'udp', origDst: '10.96.0.10', origPortDst: 53, replySrc: '10.244.1.2', replyPortSrc: 5353 }]);
});

test('an endpoint whose port changed is stale at its old port', () => {
  const before = pe({ 'udp/10.96.0.10/53': ['10.244.1.2/5353'] });
  const after = pe({ 'udp/10.96.0.10/53': ['10.244.1.2/5354'] });
  assert.deepEqual(staleFlows(before, after), [{ protocol: 'udp', origDst: '10.96.0.10', origPortDst: 53, replySrc: '10.244.1.2', replyPortSrc: 5353 }]);
});

test('scale to zero: every endpoint is stale (empty set or frontend without endpoints)', () => {
  const before = pe({ 'udp/10.96.0.10/53': ['10.244.1.2/5353', '10.244.1.3/5353'] });
  const expect = [
    { protocol: 'udp', origDst: '10.96.0.10', origPortDst: 53, replySrc: '10.244.1.2', replyPortSrc: 5353 },
    { protocol: 'udp', origDst: '10.96.0.10', origPortDst: 53, replySrc: '10.244.1.3', replyPortSrc: 5353 },
  ];
  assert.deepEqual(sortFlows(staleFlows(before, pe({ 'udp/10.96.0.10/53': [] }))), expect);
  // as endpointsByFrontend reports a service with no endpoints: the frontend with an empty set
  const node: ProxyNode = { name: 'n', nodeIPs: [], clusterCIDRs: [], nodePortRange: [30000, 32767] };
  const port: ServicePort = { id: 'ns/dns:53', service: 'ns/dns', portName: '53', family: 4, protocol: 'udp', port: 53, clusterIPs: ['10.96.0.10'], externalIPs: [], internalLocal: false, externalLocal: false, endpoints: [] };
  const after = endpointsByFrontend({ ports: [port], problems: [] }, node);
  assert.deepEqual(sortFlows(staleFlows(before, after)), expect);
});

test('a deleted service: all its endpoints on every frontend are stale', () => {
  const before = pe({
    'udp/10.96.0.10/53': ['10.244.1.2/5353'],
    'udp/203.0.113.10/53': ['10.244.1.2/5353'],
    'udp/nodeport/30053': ['10.244.1.2/5353'],
    'udp/10.96.0.11/53': ['10.244.1.9/53'],
  });
  const after = pe({ 'udp/10.96.0.11/53': ['10.244.1.9/53'] });
  assert.deepEqual(sortFlows(staleFlows(before, after)), sortFlows([
    { protocol: 'udp', origDst: '10.96.0.10', origPortDst: 53, replySrc: '10.244.1.2', replyPortSrc: 5353 },
    { protocol: 'udp', origDst: '203.0.113.10', origPortDst: 53, replySrc: '10.244.1.2', replyPortSrc: 5353 },
    { protocol: 'udp', origDst: undefined, origPortDst: 30053, replySrc: '10.244.1.2', replyPortSrc: 5353 },
  ]));
});

test('NodePort frontends have no --orig-dst (any node address)', () => {
  const flows = staleFlows(pe({ 'udp/nodeport/30053': ['10.244.1.2/5353'] }), pe({}));
  assert.equal(flows.length, 1);
  assert.equal(flows[0].origDst, undefined);
  assert.equal(flows[0].origPortDst, 30053);
  const argv = conntrackArgv(flows[0]);
  assert.ok(!argv.includes('--orig-dst'));
  assert.deepEqual(argv, ['conntrack', '-D', '-f', 'ipv4', '-p', 'udp', '--orig-port-dst', '30053', '--reply-src', '10.244.1.2', '--reply-port-src', '5353']);
});

test('TCP is ignored (its connections end on their own); SCTP is not', () => {
  const before = pe({ 'tcp/10.96.0.10/80': ['10.244.1.2/8080'], 'sctp/10.96.0.12/9': ['10.244.1.4/9'] });
  assert.deepEqual(staleFlows(before, pe({})), [{ protocol: 'sctp', origDst: '10.96.0.12', origPortDst: 9, replySrc: '10.244.1.4', replyPortSrc: 9 }]);
});

test('unchanged or only grown: nothing to delete', () => {
  const before = pe({ 'udp/10.96.0.10/53': ['10.244.1.2/5353'], 'udp/nodeport/30053': ['10.244.1.2/5353'] });
  assert.deepEqual(staleFlows(before, pe({ 'udp/10.96.0.10/53': ['10.244.1.2/5353'], 'udp/nodeport/30053': ['10.244.1.2/5353'] })), []);
  assert.deepEqual(staleFlows(before, pe({ 'udp/10.96.0.10/53': ['10.244.1.2/5353', '10.244.1.3/5353'], 'udp/nodeport/30053': ['10.244.1.2/5353', '10.244.1.3/5353'] })), []);
  assert.deepEqual(staleFlows(pe({}), pe({ 'udp/10.96.0.10/53': ['10.244.1.2/5353'] })), [], 'a new service flushes nothing');
  assert.deepEqual(staleFlows(pe({}), pe({})), []);
});

test('IPv6 frontends and endpoints', () => {
  const before = pe({ 'udp/fd00:96::10/53': ['fd00:244::2/5353', 'fd00:244::3/5353'], 'udp/nodeport/30053': ['fd00:244::2/5353'] });
  const after = pe({ 'udp/fd00:96::10/53': ['fd00:244::3/5353'] });
  const flows = sortFlows(staleFlows(before, after));
  assert.deepEqual(flows, sortFlows([
    { protocol: 'udp', origDst: 'fd00:96::10', origPortDst: 53, replySrc: 'fd00:244::2', replyPortSrc: 5353 },
    { protocol: 'udp', origDst: undefined, origPortDst: 30053, replySrc: 'fd00:244::2', replyPortSrc: 5353 },
  ]));
});

test('conntrackArgv: exact argv for IPv4 and IPv6', () => {
  assert.deepEqual(conntrackArgv({ protocol: 'udp', origDst: '10.96.0.10', origPortDst: 53, replySrc: '10.244.1.2', replyPortSrc: 5353 }), [
    'conntrack', '-D', '-f', 'ipv4', '-p', 'udp', '--orig-dst', '10.96.0.10', '--orig-port-dst', '53', '--reply-src', '10.244.1.2', '--reply-port-src', '5353',
  ]);
  assert.deepEqual(conntrackArgv({ protocol: 'sctp', origDst: 'fd00:96::10', origPortDst: 9, replySrc: 'fd00:244::2', replyPortSrc: 99 }), [
    'conntrack', '-D', '-f', 'ipv6', '-p', 'sctp', '--orig-dst', 'fd00:96::10', '--orig-port-dst', '9', '--reply-src', 'fd00:244::2', '--reply-port-src', '99',
  ]);
  assert.deepEqual(conntrackArgv({ protocol: 'udp', origPortDst: 30053, replySrc: 'fd00:244::2', replyPortSrc: 5353 }), [
    'conntrack', '-D', '-f', 'ipv6', '-p', 'udp', '--orig-port-dst', '30053', '--reply-src', 'fd00:244::2', '--reply-port-src', '5353',
  ]);
});

test('endpointsByFrontend + staleFlows: an endpoint removed from a Local NodePort only is stale there only', () => {
  const node: ProxyNode = { name: 'node-a', nodeIPs: ['192.168.1.10', '192.168.2.10'], clusterCIDRs: [], nodePortRange: [30000, 32767] };
  const mk = (eps: ServicePort['endpoints']): ServicePort => ({ id: 'ns/d:53', service: 'ns/d', portName: '53', family: 4, protocol: 'udp', port: 53, clusterIPs: ['10.96.0.10'], externalIPs: [], nodePort: 30053, internalLocal: false, externalLocal: true, endpoints: eps });
  const a = { ip: '10.244.1.2', port: 53, nodeName: 'node-a', local: true };
  const b = { ip: '10.244.2.2', port: 53, nodeName: 'node-b', local: false };
  const before = endpointsByFrontend({ ports: [mk([a, b])], problems: [] }, node);
  assert.deepEqual([...before.get('udp/nodeport/30053')!], ['10.244.1.2/53'], 'one key for the NodePort on all node addresses, local endpoints only');
  const flows = staleFlows(before, endpointsByFrontend({ ports: [mk([a])], problems: [] }, node));
  assert.deepEqual(flows, [{ protocol: 'udp', origDst: '10.96.0.10', origPortDst: 53, replySrc: '10.244.2.2', replyPortSrc: 53 }]);
});
