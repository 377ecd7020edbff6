import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renderClusterFirewall } from '../../src/agent/firewall.js';

test('the VXLAN port is exempted from conntrack in both directions, and only when asked', () => {
  const s = renderClusterFirewall({ clusterCidrs: ['10.244.0.0/16'], tunnelUdpPort: 8472 });
  assert.match(s, /hook prerouting priority raw;[^}]*udp dport 8472 notrack/);
  assert.match(s, /hook output priority raw;[^}]*udp dport 8472 notrack/);
  assert.doesNotMatch(renderClusterFirewall({ clusterCidrs: ['10.244.0.0/16'] }), /notrack/);
  assert.throws(() => renderClusterFirewall({ clusterCidrs: ['10.244.0.0/16'], tunnelUdpPort: 70000 }));
});

test('with the underlay device known, incoming tunnel packets are exempted at its ingress hook, not at prerouting', () => {
  const s = renderClusterFirewall({ clusterCidrs: ['10.244.0.0/16'], tunnelUdpPort: 8472, tunnelDevice: 'eth0' });
  assert.match(s, /table netdev podnet-cluster \{\n  chain tunnel-ingress \{\n    type filter hook ingress device "eth0" priority -300; policy accept;\n    udp dport 8472 notrack\n/);
  assert.doesNotMatch(s, /hook prerouting/, 'no chain every packet walks at prerouting');
  assert.match(s, /hook output priority raw;[^}]*udp dport 8472 notrack/);
  // both tables are replaced in the same transaction
  assert.match(s, /^add table inet podnet-cluster\ndelete table inet podnet-cluster\nadd table netdev podnet-cluster\ndelete table netdev podnet-cluster\n/);
  assert.throws(() => renderClusterFirewall({ clusterCidrs: ['10.244.0.0/16'], tunnelUdpPort: 8472, tunnelDevice: 'eth0"; flush ruleset' }), /not a device name/);
});

test('no base chain at forward: established pod traffic walks no rule of the cluster table', () => {
  for (const spec of [{ clusterCidrs: ['10.244.0.0/16', 'fd00:10:244::/56'] }, { clusterCidrs: ['10.244.0.0/16'], tunnelUdpPort: 8472, tunnelDevice: 'eth0' }]) {
    const s = renderClusterFirewall(spec);
    assert.doesNotMatch(s, /hook forward/);
    // the only inet base chains: nat (first packet of a connection) and output (locally generated)
    const hooks = [...s.matchAll(/type (\w+) hook (\w+)/g)].map((m) => `${m[1]} ${m[2]}`);
    assert.ok(hooks.every((h) => h === 'nat postrouting' || h === 'filter output' || h === 'filter ingress'), hooks.join(', '));
  }
});
