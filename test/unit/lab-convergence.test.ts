import { test } from 'node:test';
import assert from 'node:assert/strict';
import { missingRoutes, type ConvergenceNode } from '../../src/lab/convergence.js';

const nodes: ConvergenceNode[] = [
  { name: 'n1', ns: 'ns1', ip: '192.168.1.1', ip6: 'fd00:1::1', subnets: ['10.244.1.0/24', 'fd00:10:244:1::/64'] },
  { name: 'n2', ns: 'ns2', ip: '192.168.2.2', ip6: 'fd00:2::2', subnets: ['10.244.2.0/24', 'fd00:10:244:2::/64'] },
];

const converged: Record<string, string[]> = {
  ns1: ['10.244.2.0/24', 'fd00:10:244:2::/64'],
  ns2: ['10.244.1.0/24', 'fd00:10:244:1::/64'],
  router: ['10.244.1.0/24 via 192.168.1.1', 'fd00:10:244:1::/64 via fd00:1::1', '10.244.2.0/24 via 192.168.2.2', 'fd00:10:244:2::/64 via fd00:2::2'],
};
const view = (t: Record<string, string[]>) => (ns: string) => new Set(t[ns] ?? []);

test('converged: nothing missing', () => {
  assert.deepEqual(missingRoutes(nodes, 'router', view(converged)), []);
});

test('a node without the other node\'s IPv6 subnet, the router without one IPv4 subnet', () => {
  const t = { ...converged, ns1: ['10.244.2.0/24'], router: converged.router.filter((r) => !r.startsWith('10.244.2.')) };
  assert.deepEqual(missingRoutes(nodes, 'router', view(t)), ['n1: fd00:10:244:2::/64', 'router: 10.244.2.0/24 via 192.168.2.2']);
});

test('the router\'s route via the wrong node counts as missing', () => {
  const t = { ...converged, router: [...converged.router.filter((r) => !r.startsWith('10.244.2.')), '10.244.2.0/24 via 192.168.1.1'] };
  assert.deepEqual(missingRoutes(nodes, 'router', view(t)), ['router: 10.244.2.0/24 via 192.168.2.2']);
});

test('a node whose agent has not written its subnets yet is not converged', () => {
  const t = { ...converged, ns1: [] };
  assert.deepEqual(missingRoutes([nodes[0], { ...nodes[1], subnets: [] }], 'router', view(t)), ['n2: no subnet lease (subnet.env)']);
});

test('no router: only the nodes are checked', () => {
  assert.deepEqual(missingRoutes(nodes, undefined, view({ ...converged, router: [] })), []);
});
