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
