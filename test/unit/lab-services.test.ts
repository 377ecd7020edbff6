// The pure part of the lab's services: option parsing, the Service and EndpointSlice it writes
// (accepted by the proxy's own normalize()), cluster IP and NodePort allocation, validation that
// names the field, and the view `service ls` / `status` show.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normalize } from '../../src/proxy/normalize.js';
import type { RawEndpointSlice, RawService } from '../../src/proxy/model.js';
import {
  allocateClusterIP,
  allocateNodePort,
  buildService,
  buildSlice,
  checkClusterIP,
  parsePodList,
  parsePortSpec,
  parseServePorts,
  parseServiceCidr,
  problemLine,
  renderServices,
  servicePorts,
  serviceViews,
  storeKeys,
  usedClusterIPs,
  usedNodePorts,
  validateService,
  validationNode,
  type ServiceSpec,
} from '../../src/lab/services.js';

const CLUSTER = ['10.244.0.0/16'];
const T0 = '2026-01-01T00:00:00.000Z';
const T1 = '2026-01-01T00:00:01.000Z';

function spec(over: Partial<ServiceSpec> = {}): ServiceSpec {
  return { name: 'web', type: 'ClusterIP', clusterIP: '10.96.0.2', ports: servicePorts(['80'], ['8080'], []), createdAt: T0, ...over };
}

const pods = [
  { name: 'b', ip: '10.244.2.2', node: 'n2' },
  { name: 'a', ip: '10.244.1.2', node: 'n1' },
];

test('port specs: PORT, PORT/tcp, PORT/udp (any case); syntax only, the range is the proxy\'s to judge', () => {
  assert.deepEqual(parsePortSpec('80', '--port'), { port: 80, protocol: 'TCP' });
  assert.deepEqual(parsePortSpec('80/tcp', '--port'), { port: 80, protocol: 'TCP' });
  assert.deepEqual(parsePortSpec('53/UDP', '--port'), { port: 53, protocol: 'UDP' });
  assert.deepEqual(parsePortSpec('70000', '--port'), { port: 70000, protocol: 'TCP' });
  for (const bad of ['', 'http', '80/sctp', '80/', '/tcp', '-1', '8 0', '1e3']) assert.throws(() => parsePortSpec(bad, '--port'), /--port .*expected PORT/, bad);
});

test('--serve ports: tcp and udp lists, ranges checked, no port twice per protocol', () => {
  assert.deepEqual(parseServePorts(['8080', '5353/udp', '53/tcp', '53/udp']), { tcp: [8080, 53], udp: [5353, 53], ports: ['8080/tcp', '53/tcp', '5353/udp', '53/udp'] });
  assert.throws(() => parseServePorts(['0']), /out of range/);
  assert.throws(() => parseServePorts(['65536/udp']), /out of range/);
  assert.throws(() => parseServePorts(['8080', '8080/tcp']), /8080\/tcp is given twice/);
  assert.throws(() => parseServePorts(['x']), /--serve "x"/);
});

test('pod lists: comma-separated, blanks dropped, empty is scale-to-zero, duplicates refused', () => {
  assert.deepEqual(parsePodList('a,b,c'), ['a', 'b', 'c']);
  assert.deepEqual(parsePodList(' a , b '), ['a', 'b']);
  assert.deepEqual(parsePodList(''), []);
  assert.deepEqual(parsePodList(','), []);
  assert.throws(() => parsePodList('a,b,a'), /names a twice/);
});

test('service ports from --port/--target/--node-port: target once or per port, names when several', () => {
  assert.deepEqual(servicePorts(['80'], [], []), [{ name: '', protocol: 'TCP', port: 80, targetPort: 80 }]);
  assert.deepEqual(servicePorts(['80'], ['8080'], ['30080']), [{ name: '', protocol: 'TCP', port: 80, targetPort: 8080, nodePort: 30080 }]);
  assert.deepEqual(servicePorts(['53/udp', '53/tcp'], ['5353'], []), [
    { name: 'udp-53', protocol: 'UDP', port: 53, targetPort: 5353 },
    { name: 'tcp-53', protocol: 'TCP', port: 53, targetPort: 5353 },
  ]);
  assert.deepEqual(
    servicePorts(['80', '443'], ['8080', '8443'], ['30001']).map((p) => [p.targetPort, p.nodePort]),
    [
      [8080, 30001],
      [8443, undefined],
    ],
  );
  assert.throws(() => servicePorts([], [], []), /--port is required/);
  assert.throws(() => servicePorts(['80', '80/tcp'], [], []), /80\/tcp is given twice/);
  assert.throws(() => servicePorts(['80', '81', '82'], ['1', '2'], []), /--target is given 2 times for 3 ports/);
  assert.throws(() => servicePorts(['80'], [], ['30001', '30002']), /--node-port is given 2 times for 1 ports/);
  assert.throws(() => servicePorts(['80'], ['http'], []), /--target "http": expected a whole number/);
});

test('the Service: v1 shape, one cluster IP, affinity and traffic policies as Kubernetes writes them', () => {
  const s = buildService(spec());
  assert.equal(s.kind, 'Service');
  assert.equal(s.apiVersion, 'v1');
  assert.deepEqual(s.metadata, { name: 'web', namespace: 'default', creationTimestamp: T0 });
  assert.equal(s.spec?.type, 'ClusterIP');
  assert.equal(s.spec?.clusterIP, '10.96.0.2');
  assert.deepEqual(s.spec?.clusterIPs, ['10.96.0.2']);
  assert.deepEqual(s.spec?.ports, [{ name: '', protocol: 'TCP', port: 80, targetPort: 8080 }]);
  assert.equal(s.spec?.sessionAffinity, 'None');
  assert.equal(s.spec?.sessionAffinityConfig, undefined);
  assert.equal(s.spec?.internalTrafficPolicy, 'Cluster');
  assert.equal(s.spec?.externalTrafficPolicy, undefined, 'a ClusterIP service has no external policy');

  const np = buildService(spec({ type: 'NodePort', ports: servicePorts(['53/udp'], ['5353'], ['30053']), affinity: {}, externalTrafficPolicy: 'Local', internalTrafficPolicy: 'Local' }));
  assert.equal(np.spec?.type, 'NodePort');
  assert.deepEqual(np.spec?.ports, [{ name: '', protocol: 'UDP', port: 53, targetPort: 5353, nodePort: 30053 }]);
  assert.equal(np.spec?.sessionAffinity, 'ClientIP');
  assert.deepEqual(np.spec?.sessionAffinityConfig, { clientIP: { timeoutSeconds: 10800 } });
  assert.equal(np.spec?.externalTrafficPolicy, 'Local');
  assert.equal(np.spec?.internalTrafficPolicy, 'Local');
  assert.deepEqual(buildService(spec({ affinity: { timeoutSeconds: 60 } })).spec?.sessionAffinityConfig, { clientIP: { timeoutSeconds: 60 } });
});

test('the EndpointSlice: service-name label, IPv4, ready endpoints with the node name the agent runs with, ports at the target', () => {
  const sl = buildSlice({ name: 'web', ports: servicePorts(['80'], ['8080'], []) }, pods);
  assert.equal(sl.kind, 'EndpointSlice');
  assert.equal(sl.apiVersion, 'discovery.k8s.io/v1');
  assert.equal(sl.metadata?.labels?.['kubernetes.io/service-name'], 'web');
  assert.equal(sl.addressType, 'IPv4');
  assert.deepEqual(sl.ports, [{ name: '', port: 8080, protocol: 'TCP' }]);
  assert.deepEqual(sl.endpoints, [
    { addresses: ['10.244.1.2'], conditions: { ready: true, serving: true, terminating: false }, nodeName: 'n1', targetRef: { kind: 'Pod', namespace: 'default', name: 'a' } },
    { addresses: ['10.244.2.2'], conditions: { ready: true, serving: true, terminating: false }, nodeName: 'n2', targetRef: { kind: 'Pod', namespace: 'default', name: 'b' } },
  ]);
  assert.deepEqual(buildSlice({ name: 'web', ports: servicePorts(['80'], [], []) }, []).endpoints, []);
  assert.deepEqual(storeKeys('web'), { serviceKey: '/podnet/services/default/web', sliceKey: '/podnet/endpointslices/default/web' });
});

test('what the lab writes is what the proxy renders: every port, the endpoints at the target port, local ones marked', () => {
  const sp = spec({ type: 'NodePort', ports: servicePorts(['80', '53/udp'], ['8080', '5353'], ['30080', '30053']), affinity: { timeoutSeconds: 30 } });
  const model = normalize({ services: [buildService(sp)], endpointSlices: [buildSlice(sp, pods)] }, { name: 'n1', nodeIPs: ['192.168.100.1'], clusterCIDRs: CLUSTER, nodePortRange: [30000, 32767] });
  assert.deepEqual(model.problems, []);
  assert.deepEqual(
    model.ports.map((p) => [p.id, p.protocol, p.port, p.nodePort, p.affinitySeconds, p.endpoints.map((e) => `${e.ip}:${e.port}${e.local ? ' local' : ''}`)]),
    [
      ['default/web:tcp-80', 'tcp', 80, 30080, 30, ['10.244.1.2:8080 local', '10.244.2.2:8080']],
      ['default/web:udp-53', 'udp', 53, 30053, 30, ['10.244.1.2:5353 local', '10.244.2.2:5353']],
    ],
  );
});

test('cluster IPs: the lowest free address after .1, never one in use, never network/.1/broadcast', () => {
  assert.equal(allocateClusterIP('10.96.0.0/16', []), '10.96.0.2');
  assert.equal(allocateClusterIP('10.96.0.0/16', ['10.96.0.2', '10.96.0.3', '10.96.0.5']), '10.96.0.4');
  assert.equal(allocateClusterIP('10.96.0.0/16', ['10.96.0.2', '10.96.0.3', '10.96.0.4']), '10.96.0.5');
  // .255 of a /16 is an ordinary address; the broadcast address is not
  const used = Array.from({ length: 253 }, (_, i) => `10.96.0.${i + 2}`);
  assert.equal(allocateClusterIP('10.96.0.0/16', used), '10.96.0.255');
  assert.equal(allocateClusterIP('10.100.0.0/29', ['10.100.0.2', '10.100.0.3', '10.100.0.4', '10.100.0.5']), '10.100.0.6');
  assert.throws(() => allocateClusterIP('10.100.0.0/29', ['10.100.0.2', '10.100.0.3', '10.100.0.4', '10.100.0.5', '10.100.0.6']), /no free cluster IP left in 10\.100\.0\.0\/29/);

  assert.equal(checkClusterIP('10.96.0.0/16', '10.96.1.7', ['10.96.0.2']), '10.96.1.7');
  assert.throws(() => checkClusterIP('10.96.0.0/16', '10.96.0.2', ['10.96.0.2']), /in use/);
  assert.throws(() => checkClusterIP('10.96.0.0/16', '10.96.0.1', []), /reserved/);
  assert.throws(() => checkClusterIP('10.96.0.0/16', '10.96.0.0', []), /reserved/);
  assert.throws(() => checkClusterIP('10.96.0.0/16', '10.96.255.255', []), /reserved/);
  assert.throws(() => checkClusterIP('10.96.0.0/16', '10.97.0.2', []), /outside the lab's service CIDR/);
  assert.throws(() => checkClusterIP('10.96.0.0/16', 'fd00::2', []), /not an IPv4 address/);

  assert.equal(parseServiceCidr('10.96.5.0/16'), '10.96.0.0/16');
  assert.throws(() => parseServiceCidr('fd00::/108'), /IPv4 CIDR/);
  assert.throws(() => parseServiceCidr('10.96.0.0/30'), /too small/);
  assert.throws(() => parseServiceCidr('10.96.0.0'), /IPv4 CIDR/);
});

test('NodePorts: the lowest free one of 30000-32767; in-use ports and cluster IPs are read from stored services', () => {
  assert.equal(allocateNodePort([]), 30000);
  assert.equal(allocateNodePort([30000, 30001, 30003]), 30002);
  assert.equal(allocateNodePort([1, 2], [1, 3]), 3);
  assert.throws(() => allocateNodePort([1, 2, 3], [1, 3]), /no free NodePort left in 1-3/);
  const stored: RawService[] = [
    buildService(spec({ type: 'NodePort', clusterIP: '10.96.0.9', ports: servicePorts(['80', '81'], [], ['30000', '30005']) })),
    { metadata: { name: 'x' }, spec: { clusterIP: 'None', ports: [{ port: 1 }] } },
    { metadata: { name: 'y' }, spec: { clusterIPs: ['10.96.0.7', 'fd00::7'] } },
    {} as RawService,
  ];
  assert.deepEqual(usedNodePorts(stored), [30000, 30005]);
  assert.deepEqual(usedClusterIPs(stored), ['10.96.0.9', '10.96.0.7', 'fd00::7']);
});

test('validation names the service and the field (and the option), and judges next to the services already stored', () => {
  const check = (sp: ServiceSpec, existing: RawService[] = []) => validateService(buildService(sp), buildSlice(sp, pods), existing, CLUSTER).map(problemLine);
  assert.deepEqual(check(spec()), []);
  assert.deepEqual(check(spec({ ports: servicePorts(['70000'], ['8080'], []) })), ['service default/web: spec.ports[0].port: port 70000 is out of range (1-65535) (--port)']);
  assert.deepEqual(check(spec({ ports: servicePorts(['80'], ['0'], []) })), [
    'service default/web: spec.ports[0].targetPort: port 0 is out of range (1-65535) (--target)',
    'service default/web (EndpointSlice web): ports[0].port: port 0 is out of range (1-65535) (--target)',
  ]);
  assert.deepEqual(check(spec({ type: 'NodePort', ports: servicePorts(['80'], [], ['20000']) })), ['service default/web: spec.ports[0].nodePort: 20000 is outside the NodePort range 30000-32767 (--node-port)']);
  assert.deepEqual(check(spec({ ports: servicePorts(['80'], [], ['30001']) })), ['service default/web: spec.ports[0].nodePort: only a NodePort service may set nodePort (--node-port)']);
  assert.deepEqual(check(spec({ affinity: { timeoutSeconds: 0 } })), ['service default/web: spec.sessionAffinityConfig.clientIP.timeoutSeconds: expected 1-86400, got 0 (--affinity-timeout)']);
  assert.match(check(spec({ name: 'Web_1' }))[0], /^service default\/Web_1: metadata\.name: .* is not a DNS label \(NAME\)$/);

  // an existing service keeps its frontend, even if it is younger or carries no timestamp
  const old = buildService(spec({ name: 'old', type: 'NodePort', clusterIP: '10.96.0.3', ports: servicePorts(['80'], [], ['30001']), createdAt: T1 }));
  assert.deepEqual(check(spec({ type: 'NodePort', ports: servicePorts(['80'], [], ['30001']) }), [old]), ['service default/web: spec.ports[0].nodePort: NodePort 30001/TCP is already taken by service default/old (--node-port)']);
  const foreign: RawService = { metadata: { name: 'foreign' }, spec: { clusterIP: '10.96.0.2', ports: [{ port: 80 }] } };
  assert.deepEqual(check(spec(), [foreign]), ['service default/web: spec.clusterIP: 10.96.0.2 port 80/TCP is already taken by service default/foreign (--cluster-ip)']);
  // a broken service already in the store is not this service's problem
  const broken: RawService = { metadata: { name: 'broken' }, spec: { clusterIP: 'nope', ports: [{ port: 80 }] } };
  assert.deepEqual(check(spec(), [broken]), []);
  // replacing a service with the same name judges the new one alone
  assert.deepEqual(check(spec(), [buildService(spec({ createdAt: T1 }))]), []);
});

test('the view: type, cluster IP, ports, NodePort, endpoints by pod name, affinity; problems of foreign objects shown', () => {
  const web = spec({ type: 'NodePort', ports: servicePorts(['80'], ['8080'], ['30080']), affinity: { timeoutSeconds: 60 } });
  const dns = spec({ name: 'dns', clusterIP: '10.96.0.3', ports: servicePorts(['53/udp'], ['5353'], []), internalTrafficPolicy: 'Local' });
  // a service written by someone else: no targetRef (the pod is found by its IP), and broken
  const other: RawService = { metadata: { name: 'other', namespace: 'ns1' }, spec: { clusterIP: '10.96.0.4', ports: [{ port: 70000 }] } };
  const otherSlice: RawEndpointSlice = { metadata: { name: 'other-x', namespace: 'ns1', labels: { 'kubernetes.io/service-name': 'other' } }, endpoints: [{ addresses: ['10.244.2.2'], conditions: { ready: false } }, { addresses: ['10.244.9.9'] }] };
  const views = serviceViews(
    [buildService(web), buildService(dns), other],
    [buildSlice(web, pods), buildSlice(dns, []), otherSlice],
    new Map([['10.244.2.2', 'b']]),
    CLUSTER,
  );
  assert.deepEqual(
    views.map((v) => [v.name, v.type, v.clusterIP, v.nodePort, v.endpoints, v.affinity, v.affinityTimeoutSeconds, v.internalTrafficPolicy, v.lab, v.problems.length]),
    [
      ['dns', 'ClusterIP', '10.96.0.3', undefined, [], 'None', undefined, 'Local', true, 0],
      ['web', 'NodePort', '10.96.0.2', 30080, ['a', 'b'], 'ClientIP', 60, 'Cluster', true, 0],
      ['ns1/other', 'ClusterIP', '10.96.0.4', undefined, ['10.244.9.9'], 'None', undefined, 'Cluster', false, 1],
    ],
  );
  assert.deepEqual(views[2].addresses, [
    { ip: '10.244.2.2', pod: 'b', node: undefined, ready: false },
    { ip: '10.244.9.9', pod: undefined, node: undefined, ready: true },
  ]);
  assert.match(views[2].problems[0], /spec\.ports\[0\]\.port/);
  assert.deepEqual(views[1].ports, [{ name: '', protocol: 'TCP', port: 80, targetPort: 8080, nodePort: 30080 }]);
  const text = renderServices(views);
  assert.match(text, /web\s+NodePort\s+10\.96\.0\.2\s+80:30080\/TCP→8080\s+30080\s+a, b\s+ClientIP 60s/);
  assert.match(text, /dns\s+ClusterIP\s+10\.96\.0\.3\s+53\/UDP→5353\s+-\s+\(none\)\s+None\s+internal Local/);
  assert.match(text, /! service ns1\/other: spec\.ports\[0\]\.port/);
  assert.equal(renderServices([]), '  (none)');
  // the node used for judging services on their own takes the lab's cluster network
  assert.deepEqual(validationNode(CLUSTER).nodePortRange, [30000, 32767]);
});
