import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applyToActual } from '../../src/agent/backends/reconciler.js';
import { createBackend } from '../../src/agent/backends/index.js';
import type { ActualState } from '../../src/agent/backends/types.js';
import type { NodeLease } from '../../src/agent/lease.js';

const peer = (i: number, type: 'vxlan' | 'host-gw', mac = `02:42:00:00:${i.toString(16).padStart(2, '0')}:01`): NodeLease => ({
  subnet: `10.244.${i}.0/24`,
  publicIP: `192.168.1.${i}`,
  backendType: type,
  backendData: type === 'vxlan' ? { VtepMAC: mac, VNI: 1 } : {},
});
const empty: ActualState = { routes: [], neighbours: [], fdb: [], ifaceAddresses: [{ ifname: 'eth0', family: 4, address: '192.168.1.100', prefixLen: 24, scope: 'global' }] };

for (const type of ['vxlan', 'host-gw'] as const) {
  test(`${type}: the state a plan leaves needs no further plan; removals and MAC changes too`, () => {
    const b = createBackend({ type, iface: 'eth0' });
    const own: NodeLease = { ...peer(100, type), backendData: type === 'vxlan' ? { VtepMAC: '02:42:00:00:ff:01', VNI: 1 } : {} };
    const peers = [1, 2, 3].map((i) => peer(i, type));
    let state = empty;
    for (const set of [peers, peers.slice(1), [peers[1], peer(3, type, '02:42:00:00:33:33')], []]) {
      const plan = b.planPeers(own, set, state);
      assert.deepEqual(plan.errors, []);
      state = applyToActual(state, plan.ops);
      assert.deepEqual(b.planPeers(own, set, state).ops, [], `not converged for ${set.length} peers`);
    }
    assert.equal(state.routes.length, 0);
    assert.equal(state.neighbours.length, 0);
    assert.equal(state.fdb.length, 0);
  });
}
