// The three ways a pod reaches its node, as test configurations: each with its IPAM ranges,
// the gateways its pods must reach, and what the node needs beforehand.
import type { CniHarness } from './cni.js';

export type Conf = Record<string, unknown>;

export interface ModeCase {
  mode: 'bridge' | 'routed' | 'macvlan';
  /** a config whose IPAM section is `ipam` */
  conf: (name: string, ipam: Conf) => Conf;
  /** podnet-ipam ranges: full size (dual stack) and a small v4 one of exactly `smallSize` addresses */
  ranges: unknown;
  smallRanges: unknown;
  smallSize: number;
  gateways: string[];
  setupNode?: (h: CniHarness) => void;
  hostLinkPrefix?: string;
}

/** The node's "NIC" for underlay pods: eth0, a veth to a router namespace holding the gateway. */
export function setupUnderlay(h: CniHarness): void {
  const fabric = h.fixture.add('fab');
  h.exec(h.nodeNs, ['ip', 'link', 'add', 'name', 'eth0', 'type', 'veth', 'peer', 'name', 'uplink', 'netns', `/run/netns/${fabric}`]);
  h.exec(h.nodeNs, ['ip', 'addr', 'add', '192.168.77.2/24', 'dev', 'eth0']);
  h.exec(h.nodeNs, ['ip', 'addr', 'add', 'fd77:77::2/64', 'dev', 'eth0', 'nodad']);
  h.exec(h.nodeNs, ['ip', 'link', 'set', 'eth0', 'up']);
  h.exec(h.nodeNs, ['ip', 'route', 'add', 'default', 'via', '192.168.77.1']);
  h.exec(fabric, ['ip', 'addr', 'add', '192.168.77.1/24', 'dev', 'uplink']);
  h.exec(fabric, ['ip', 'addr', 'add', 'fd77:77::1/64', 'dev', 'uplink', 'nodad']);
  h.exec(fabric, ['ip', 'link', 'set', 'uplink', 'up']);
}

export const MODE_CASES: ModeCase[] = [
  {
    mode: 'bridge',
    conf: (name, ipam) => ({ cniVersion: '1.0.0', name, type: 'podnet', bridge: 'pnbr0', isGateway: true, isDefaultGateway: true, ipMasq: true, hairpinMode: true, ipam }),
    ranges: [[{ subnet: '10.77.1.0/24' }], [{ subnet: 'fd77:1::/64' }]],
    // a /27 has 29 usable addresses besides the gateway
    smallRanges: [[{ subnet: '10.79.1.0/27' }]],
    smallSize: 29,
    gateways: ['10.77.1.1', 'fd77:1::1'],
    hostLinkPrefix: 'veth',
  },
  {
    mode: 'routed',
    conf: (name, ipam) => ({ cniVersion: '1.1.0', name, type: 'podnet', mode: 'routed', ipMasq: true, ipam }),
    ranges: [[{ subnet: '10.77.2.0/24' }], [{ subnet: 'fd77:2::/64' }]],
    smallRanges: [[{ subnet: '10.79.2.0/27' }]],
    smallSize: 29,
    gateways: ['10.77.2.1', 'fd77:2::1'],
    hostLinkPrefix: 'veth',
  },
  {
    mode: 'macvlan',
    conf: (name, ipam) => ({ cniVersion: '0.4.0', name, type: 'podnet', mode: 'macvlan', hostReachable: true, ipam }),
    ranges: [
      [{ subnet: '192.168.77.0/24', rangeStart: '192.168.77.100', rangeEnd: '192.168.77.200', gateway: '192.168.77.1' }],
      [{ subnet: 'fd77:77::/64', rangeStart: 'fd77:77::100', rangeEnd: 'fd77:77::1ff', gateway: 'fd77:77::1' }],
    ],
    smallRanges: [[{ subnet: '192.168.77.0/24', rangeStart: '192.168.77.100', rangeEnd: '192.168.77.128', gateway: '192.168.77.1' }]],
    smallSize: 29,
    gateways: ['192.168.77.1', 'fd77:77::1'],
    setupNode: setupUnderlay,
  },
];
