// normalize(): every validation rejects exactly the bad service, names it ("namespace/name") and the
// field, and leaves every other service of the same input rendered. Then the normalization itself
// (endpoints from slices, dual-stack, affinity) and its memoization (unchanged services keep their
// ServicePort objects).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { frontendOwners, normalize } from '../../src/proxy/normalize.js';
import { problemText, type ProxyModel, type ProxyNode, type RawEndpointSlice, type RawService, SERVICE_NAME_LABEL } from '../../src/proxy/model.js';

const NODE: ProxyNode = { name: 'node-a', nodeIPs: ['192.168.1.10'], clusterCIDRs: ['10.244.0.0/16'], nodePortRange: [30000, 32767] };

type Spec = NonNullable<RawService['spec']>;
function svc(name: string, spec: Partial<Spec> & Record<string, unknown> = {}, meta: Record<string, unknown> = {}): RawService {
  return { kind: 'Service', metadata: { name, namespace: 'ns', ...meta }, spec: { clusterIP: '10.96.0.10', ports: [{ port: 80, protocol: 'TCP' }], ...spec } as Spec };
}
function slice(name: string, service: string, endpoints: unknown[], ports: unknown[] | undefined = [{ port: 8080, protocol: 'TCP' }], extra: Partial<RawEndpointSlice> = {}): RawEndpointSlice {
  return { kind: 'EndpointSlice', metadata: { name, namespace: 'ns', labels: { [SERVICE_NAME_LABEL]: service } }, addressType: 'IPv4', endpoints, ports, ...extra };
}
function ep(ip: string, o: { node?: string; ready?: boolean; serving?: boolean; terminating?: boolean } = {}): unknown {
  const conditions: Record<string, boolean> = {};
  if (o.ready !== undefined) conditions.ready = o.ready;
  if (o.serving !== undefined) conditions.serving = o.serving;
  if (o.terminating !== undefined) conditions.terminating = o.terminating;
  return { addresses: [ip], nodeName: o.node, conditions };
}

/** A control service that must survive whatever else is wrong in the input. */
const good = () => svc('good', { clusterIP: '10.96.0.1', ports: [{ port: 53, protocol: 'UDP' }] });

function servicesOf(m: ProxyModel): string[] {
  return [...new Set(m.ports.map((p) => p.service))].sort();
}

/** Asserts exactly one problem, for that service and field, and that ns/good is still rendered. */
function rejects(bad: RawService, field: string, msg?: RegExp, extra: RawService[] = []): void {
  const m = normalize({ services: [good(), bad, ...extra], endpointSlices: [] }, NODE);
  const name = `ns/${bad.metadata!.name as string}`;
  const mine = m.problems.filter((p) => p.service === name);
  assert.equal(mine.length, 1, `one problem for ${name}: ${JSON.stringify(m.problems)}`);
  assert.equal(mine[0].field, field);
  if (msg) assert.match(mine[0].message, msg);
  const text = problemText(mine[0]);
  assert.ok(text.includes(name) && text.includes(field), text);
  assert.ok(!m.ports.some((p) => p.service === name), `${name} must not be rendered`);
  assert.ok(m.ports.some((p) => p.service === 'ns/good'), 'the other services still come out');
}

test('invalid IPs are rejected with the field: clusterIP, clusterIPs[i], externalIPs[i]', () => {
  rejects(svc('a', { clusterIP: '10.96.0.300' }), 'spec.clusterIP', /not a valid IP/);
  rejects(svc('b', { clusterIP: 'banana' }), 'spec.clusterIP', /banana/);
  rejects(svc('c', { clusterIP: '10.96.0.0/24' }), 'spec.clusterIP');
  rejects(svc('d', { clusterIP: '10.96.0.5', clusterIPs: ['10.96.0.5', 'fd00::zz'] }), 'spec.clusterIPs[1]', /fd00::zz/);
  rejects(svc('e', { clusterIPs: ['nope'] }), 'spec.clusterIPs[0]');
  rejects(svc('f', { externalIPs: ['203.0.113.7', '203.0.113.999'] }), 'spec.externalIPs[1]', /203\.0\.113\.999/);
  rejects(svc('g', { clusterIP: 42 }), 'spec.clusterIP');
  rejects(svc('h', { clusterIPs: ['10.96.0.5', '10.96.0.6'] }), 'spec.clusterIPs', /one address per IP family/);
});

test('ports: duplicate port+protocol, out of range, non-number, unknown protocol', () => {
  rejects(svc('dup', { ports: [{ name: 'a', port: 80, protocol: 'TCP' }, { name: 'b', port: 80, protocol: 'TCP' }] }), 'spec.ports[1].port', /duplicate port 80/);
  rejects(svc('dup-default-proto', { ports: [{ name: 'a', port: 80 }, { name: 'b', port: 80, protocol: 'TCP' }] }), 'spec.ports[1].port', /duplicate/);
  rejects(svc('zero', { ports: [{ port: 0 }] }), 'spec.ports[0].port', /out of range/);
  rejects(svc('big', { ports: [{ port: 70000 }] }), 'spec.ports[0].port', /70000/);
  rejects(svc('str', { ports: [{ port: '80' }] }), 'spec.ports[0].port', /"80"/);
  rejects(svc('frac', { ports: [{ port: 80.5 }] }), 'spec.ports[0].port');
  rejects(svc('icmp', { ports: [{ port: 80, protocol: 'ICMP' }] }), 'spec.ports[0].protocol', /ICMP/);
  rejects(svc('lower', { ports: [{ port: 80, protocol: 'tcp' }] }), 'spec.ports[0].protocol');
  rejects(svc('noports', { ports: [] }), 'spec.ports');
  rejects(svc('tp', { ports: [{ port: 80, targetPort: 0 }] }), 'spec.ports[0].targetPort');
  // the same port number on another protocol is fine
  const m = normalize({ services: [svc('dns', { ports: [{ name: 'u', port: 53, protocol: 'UDP' }, { name: 't', port: 53, protocol: 'TCP' }] })], endpointSlices: [] }, NODE);
  assert.deepEqual(m.problems, []);
  assert.deepEqual(m.ports.map((p) => `${p.protocol}/${p.port}`), ['udp/53', 'tcp/53']);
});

test('unnamed port in a multi-port service is rejected; a single unnamed port is fine', () => {
  rejects(svc('multi', { ports: [{ port: 80 }, { name: 'b', port: 81 }] }), 'spec.ports[0].name', /several ports/);
  rejects(svc('multi2', { ports: [{ name: 'a', port: 80 }, { port: 81 }] }), 'spec.ports[1].name');
  const m = normalize({ services: [svc('single', { ports: [{ port: 80 }] })], endpointSlices: [] }, NODE);
  assert.deepEqual(m.problems, []);
  assert.equal(m.ports[0].id, 'ns/single:80');
  assert.equal(m.ports[0].portName, '80');
});

test('NodePort outside the range, and on a ClusterIP service', () => {
  rejects(svc('np-low', { type: 'NodePort', ports: [{ port: 80, nodePort: 29999 }] }), 'spec.ports[0].nodePort', /outside the NodePort range 30000-32767/);
  rejects(svc('np-high', { type: 'NodePort', ports: [{ port: 80, nodePort: 32768 }] }), 'spec.ports[0].nodePort');
  rejects(svc('np-huge', { type: 'NodePort', ports: [{ port: 80, nodePort: 70000 }] }), 'spec.ports[0].nodePort');
  rejects(svc('np-cip', { ports: [{ port: 80, nodePort: 30001 }] }), 'spec.ports[0].nodePort', /only a NodePort service/);
  rejects(svc('np-missing', { type: 'NodePort', ports: [{ port: 80 }] }), 'spec.ports[0].nodePort');
  rejects(svc('lb', { type: 'LoadBalancer' }), 'spec.type');
  // the range is the node's
  const narrow: ProxyNode = { ...NODE, nodePortRange: [31000, 31010] };
  const m = normalize({ services: [svc('np', { type: 'NodePort', ports: [{ port: 80, nodePort: 30080 }] })], endpointSlices: [] }, narrow);
  assert.equal(m.problems.length, 1);
  assert.match(m.problems[0].message, /31000-31010/);
  const ok = normalize({ services: [svc('np', { type: 'NodePort', ports: [{ port: 80, nodePort: 31005 }] })], endpointSlices: [] }, narrow);
  assert.deepEqual(ok.problems, []);
  assert.equal(ok.ports[0].nodePort, 31005);
});

test('a NodePort taken by another service: the older keeps it, the newcomer is rejected naming the holder', () => {
  const older = svc('zzz-old', { type: 'NodePort', clusterIP: '10.96.0.20', ports: [{ port: 80, nodePort: 30080 }] }, { creationTimestamp: '2024-01-01T00:00:00Z' });
  const newer = svc('aaa-new', { type: 'NodePort', clusterIP: '10.96.0.21', ports: [{ port: 8080, nodePort: 30080 }] }, { creationTimestamp: '2024-06-01T00:00:00Z' });
  for (const order of [[older, newer], [newer, older]]) {
    const m = normalize({ services: [good(), ...order], endpointSlices: [] }, NODE);
    assert.deepEqual(servicesOf(m), ['ns/good', 'ns/zzz-old']);
    assert.equal(m.problems.length, 1);
    assert.equal(m.problems[0].service, 'ns/aaa-new');
    assert.equal(m.problems[0].field, 'spec.ports[0].nodePort');
    assert.match(m.problems[0].message, /NodePort 30080\/TCP is already taken by service ns\/zzz-old/);
  }
  // same nodePort on another protocol does not clash
  const udp = svc('udp', { type: 'NodePort', clusterIP: '10.96.0.22', ports: [{ port: 80, protocol: 'UDP', nodePort: 30080 }] });
  assert.deepEqual(normalize({ services: [older, udp], endpointSlices: [] }, NODE).problems, []);
  // without timestamps: first by name
  const a = svc('a', { type: 'NodePort', clusterIP: '10.96.0.30', ports: [{ port: 80, nodePort: 30090 }] });
  const b = svc('b', { type: 'NodePort', clusterIP: '10.96.0.31', ports: [{ port: 80, nodePort: 30090 }] });
  const m = normalize({ services: [b, a], endpointSlices: [] }, NODE);
  assert.deepEqual(servicesOf(m), ['ns/a']);
  assert.equal(m.problems[0].service, 'ns/b');
});

test('priorOwners: the holder keeps its NodePort even if the newcomer sorts first by creationTimestamp and name', () => {
  const holder = svc('zzz', { type: 'NodePort', clusterIP: '10.96.0.20', ports: [{ port: 80, nodePort: 30080 }] }, { creationTimestamp: '2025-01-01T00:00:00Z' });
  const newcomer = svc('aaa', { type: 'NodePort', clusterIP: '10.96.0.21', ports: [{ port: 80, nodePort: 30080 }] }, { creationTimestamp: '2020-01-01T00:00:00Z' });
  // without history the newcomer (older timestamp, first by name) would win
  const fresh = normalize({ services: [newcomer, holder], endpointSlices: [] }, NODE);
  assert.deepEqual(servicesOf(fresh), ['ns/aaa']);
  // with the holder in priorOwners it keeps the port
  const before = normalize({ services: [holder], endpointSlices: [] }, NODE);
  const prior = frontendOwners(before);
  assert.equal(prior.get('nodeport/tcp/30080'), 'ns/zzz');
  const m = normalize({ services: [newcomer, holder], endpointSlices: [] }, NODE, { priorOwners: prior });
  assert.deepEqual(servicesOf(m), ['ns/zzz']);
  assert.equal(m.problems.length, 1);
  assert.equal(m.problems[0].service, 'ns/aaa');
  assert.equal(m.problems[0].field, 'spec.ports[0].nodePort');
  assert.match(m.problems[0].message, /ns\/zzz/);
});

test('a cluster IP + port already taken is rejected; same IP on another port or protocol is not', () => {
  const first = svc('first', { clusterIP: '10.96.0.50', ports: [{ port: 80 }] }, { creationTimestamp: '2024-01-01T00:00:00Z' });
  const second = svc('second', { clusterIP: '10.96.0.50', ports: [{ port: 80 }] }, { creationTimestamp: '2024-02-01T00:00:00Z' });
  rejects(second, 'spec.clusterIP', /10\.96\.0\.50 port 80\/TCP is already taken by service ns\/first/, [first]);
  const otherPort = svc('other', { clusterIP: '10.96.0.50', ports: [{ port: 81 }] });
  const otherProto = svc('otherp', { clusterIP: '10.96.0.50', ports: [{ port: 80, protocol: 'UDP' }] });
  assert.deepEqual(normalize({ services: [first, otherPort, otherProto], endpointSlices: [] }, NODE).problems, []);
  // an external IP that is another service's cluster IP + port clashes too
  const ext = svc('ext', { clusterIP: '10.96.0.51', externalIPs: ['10.96.0.50'], ports: [{ port: 80 }] }, { creationTimestamp: '2024-03-01T00:00:00Z' });
  rejects(ext, 'spec.externalIPs[0]', /already taken by service ns\/first/, [first]);
  // the same address written differently is the same address
  const v6a = svc('v6a', { clusterIP: 'fd00::a', ports: [{ port: 80 }] }, { creationTimestamp: '2024-01-01T00:00:00Z' });
  const v6b = svc('v6b', { clusterIP: 'fd00:0:0:0:0:0:0:000a', ports: [{ port: 80 }] }, { creationTimestamp: '2024-02-01T00:00:00Z' });
  rejects(v6b, 'spec.clusterIP', /already taken/, [v6a]);
});

test('a rejected clasher does not hold its other frontends: a third service sharing only those is accepted', () => {
  const a = svc('a', { clusterIP: '10.96.1.1', type: 'NodePort', ports: [{ port: 80, nodePort: 30001 }] }, { creationTimestamp: '2024-01-01T00:00:00Z' });
  const b = svc('b', { clusterIP: '10.96.1.1', type: 'NodePort', ports: [{ port: 80, nodePort: 30002 }] }, { creationTimestamp: '2024-02-01T00:00:00Z' });
  const c = svc('c', { clusterIP: '10.96.1.3', type: 'NodePort', ports: [{ port: 80, nodePort: 30002 }] }, { creationTimestamp: '2024-03-01T00:00:00Z' });
  const m = normalize({ services: [a, b, c], endpointSlices: [] }, NODE);
  assert.deepEqual(servicesOf(m), ['ns/a', 'ns/c']);
  assert.deepEqual(m.problems.map((p) => p.service), ['ns/b']);
});

test('sessionAffinity and its timeout are validated; ClientIP defaults to 10800 s', () => {
  rejects(svc('aff', { sessionAffinity: 'Cookie' }), 'spec.sessionAffinity', /Cookie/);
  const t = (v: unknown) => svc(`t${String(v).replace(/[^a-z0-9]/gi, '')}x`, { sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: v } } });
  rejects(t(0), 'spec.sessionAffinityConfig.clientIP.timeoutSeconds');
  rejects(t(86401), 'spec.sessionAffinityConfig.clientIP.timeoutSeconds', /86401/);
  rejects(t('60'), 'spec.sessionAffinityConfig.clientIP.timeoutSeconds');
  rejects(t(1.5), 'spec.sessionAffinityConfig.clientIP.timeoutSeconds');
  rejects(svc('itp', { internalTrafficPolicy: 'Nearest' }), 'spec.internalTrafficPolicy');
  rejects(svc('etp', { externalTrafficPolicy: 'local' }), 'spec.externalTrafficPolicy');
  const m = normalize(
    {
      services: [
        svc('dflt', { clusterIP: '10.96.0.2', sessionAffinity: 'ClientIP' }),
        svc('set', { clusterIP: '10.96.0.3', sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } } }),
        svc('none', { clusterIP: '10.96.0.4', sessionAffinity: 'None', sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } } }),
      ],
      endpointSlices: [],
    },
    NODE,
  );
  assert.deepEqual(m.problems, []);
  assert.deepEqual(m.ports.map((p) => [p.service, p.affinitySeconds]), [['ns/dflt', 10800], ['ns/set', 60], ['ns/none', undefined]]);
});

test('headless (clusterIP None) and ExternalName services are skipped without a problem', () => {
  const m = normalize(
    {
      services: [
        good(),
        svc('headless', { clusterIP: 'None', ports: [{ port: 80 }] }),
        svc('headless2', { clusterIP: 'None', clusterIPs: ['None'], ports: [{ port: 80 }, { port: 81 }] }),
        svc('extname', { type: 'ExternalName', clusterIP: undefined, externalName: 'example.com', ports: [{ port: 80 }] }),
      ],
      endpointSlices: [slice('headless-1', 'headless', [ep('10.244.1.5')])],
    },
    NODE,
  );
  assert.deepEqual(m.problems, []);
  assert.deepEqual(servicesOf(m), ['ns/good']);
});

test('many bad services at once: each rejected with its own problem, the good ones all come out', () => {
  const m = normalize(
    {
      services: [
        svc('ok1', { clusterIP: '10.96.2.1' }),
        svc('bad1', { clusterIP: 'x' }),
        svc('ok2', { clusterIP: '10.96.2.2' }),
        svc('bad2', { clusterIP: '10.96.2.3', ports: [{ port: 0 }] }),
        svc('bad3', { clusterIP: '10.96.2.4', ports: [{ port: 1, protocol: 'ICMP' }] }),
        svc('ok3', { clusterIP: '10.96.2.5' }),
        { kind: 'Service', metadata: { name: 'Bad_Name', namespace: 'ns' }, spec: { clusterIP: '10.96.2.6', ports: [{ port: 1 }] } },
        { kind: 'Service', metadata: { name: 'nospec', namespace: 'ns' } },
      ],
      endpointSlices: [],
    },
    NODE,
  );
  assert.deepEqual(servicesOf(m), ['ns/ok1', 'ns/ok2', 'ns/ok3']);
  assert.deepEqual(
    m.problems.map((p) => `${p.service} ${p.field}`).sort(),
    ['ns/Bad_Name metadata.name', 'ns/bad1 spec.clusterIP', 'ns/bad2 spec.ports[0].port', 'ns/bad3 spec.ports[0].protocol', 'ns/nospec spec'].sort(),
  );
});

test('endpoints: matched by port name and protocol, targetPort fallback when the slice has no ports', () => {
  const s = svc('web', { ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 }, { name: 'dns', port: 53, protocol: 'UDP', targetPort: 5353 }] });
  const sl = slice('web-1', 'web', [ep('10.244.1.2'), ep('10.244.1.3')], [
    { name: 'http', port: 9080, protocol: 'TCP' },
    { name: 'dns', port: 9053, protocol: 'TCP' }, // wrong protocol: no match for the UDP port
  ]);
  const m = normalize({ services: [s], endpointSlices: [sl] }, NODE);
  assert.deepEqual(m.problems, []);
  const http = m.ports.find((p) => p.portName === 'http')!;
  const dns = m.ports.find((p) => p.portName === 'dns')!;
  assert.deepEqual(http.endpoints.map((e) => `${e.ip}/${e.port}`), ['10.244.1.2/9080', '10.244.1.3/9080']);
  assert.deepEqual(dns.endpoints, [], 'a slice port of another protocol does not match');

  const noPorts = slice('web-2', 'web', [ep('10.244.1.4')], []);
  const m2 = normalize({ services: [s], endpointSlices: [noPorts] }, NODE);
  assert.deepEqual(m2.ports.map((p) => p.endpoints.map((e) => `${e.ip}/${e.port}`)), [['10.244.1.4/8080'], ['10.244.1.4/5353']]);
  // a named targetPort cannot be resolved without slice ports
  const named = svc('named', { ports: [{ port: 80, targetPort: 'http' }] });
  const m3 = normalize({ services: [named], endpointSlices: [slice('named-1', 'named', [ep('10.244.1.4')], [])] }, NODE);
  assert.deepEqual(m3.ports[0].endpoints, []);
  // slices of other services and namespaces do not leak in
  const other = slice('other-1', 'other', [ep('10.244.9.9')]);
  const otherNs: RawEndpointSlice = { ...slice('web-x', 'web', [ep('10.244.9.8')]), metadata: { name: 'web-x', namespace: 'elsewhere', labels: { [SERVICE_NAME_LABEL]: 'web' } } };
  const m4 = normalize({ services: [s], endpointSlices: [sl, other, otherNs] }, NODE);
  assert.deepEqual(m4.ports.find((p) => p.portName === 'http')!.endpoints.map((e) => e.ip), ['10.244.1.2', '10.244.1.3']);
});

test('endpoints: ready ones; serving+terminating only when none is ready; never not-serving', () => {
  const s = svc('web');
  const mk = (eps: unknown[]) => normalize({ services: [s], endpointSlices: [slice('web-1', 'web', eps, [{ port: 8080 }])] }, NODE).ports[0].endpoints.map((e) => e.ip);
  assert.deepEqual(
    mk([ep('10.244.1.2'), ep('10.244.1.3', { ready: false, serving: true, terminating: true }), ep('10.244.1.4', { ready: false })]),
    ['10.244.1.2'],
  );
  assert.deepEqual(
    mk([ep('10.244.1.3', { ready: false, serving: true, terminating: true }), ep('10.244.1.4', { ready: false }), ep('10.244.1.5', { ready: false, serving: false, terminating: true })]),
    ['10.244.1.3'],
  );
  assert.deepEqual(mk([ep('10.244.1.4', { ready: false }), ep('10.244.1.6', { ready: false, serving: true })]), [], 'serving but not terminating (not ready) is not used');
});

test('endpoints: deduplicated across slices, sorted, local by nodeName', () => {
  const s = svc('web');
  const m = normalize(
    {
      services: [s],
      endpointSlices: [
        slice('web-1', 'web', [ep('10.244.2.9', { node: 'node-b' }), ep('10.244.1.2', { node: 'node-a' })], [{ port: 8080 }]),
        slice('web-2', 'web', [ep('10.244.1.2', { node: 'node-a' }), ep('10.244.1.10')], [{ port: 8080 }]),
      ],
    },
    NODE,
  );
  assert.deepEqual(
    m.ports[0].endpoints.map((e) => [e.ip, e.port, e.local]),
    [
      ['10.244.1.10', 8080, false],
      ['10.244.1.2', 8080, true],
      ['10.244.2.9', 8080, false],
    ],
  );
});

test('dual-stack: one ServicePort per family with /v4 and /v6 ids, endpoints by slice addressType', () => {
  const s = svc('ds', { clusterIP: '10.96.0.77', clusterIPs: ['10.96.0.77', 'fd00:96::77'], externalIPs: ['203.0.113.1', '2001:db8::1'], ports: [{ port: 80 }] });
  const v4 = slice('ds-4', 'ds', [ep('10.244.1.2')], [{ port: 8080 }]);
  const v6 = slice('ds-6', 'ds', [ep('fd00:244::2'), ep('FD00:244:0::3')], [{ port: 8080 }], { addressType: 'IPv6' });
  const m = normalize({ services: [s], endpointSlices: [v4, v6] }, NODE);
  assert.deepEqual(m.problems, []);
  assert.deepEqual(m.ports.map((p) => p.id), ['ns/ds:80/v4', 'ns/ds:80/v6']);
  const [p4, p6] = m.ports;
  assert.equal(p4.family, 4);
  assert.equal(p6.family, 6);
  assert.deepEqual(p4.clusterIPs, ['10.96.0.77']);
  assert.deepEqual(p6.clusterIPs, ['fd00:96::77']);
  assert.deepEqual(p4.externalIPs, ['203.0.113.1']);
  assert.deepEqual(p6.externalIPs, ['2001:db8::1']);
  assert.deepEqual(p4.endpoints.map((e) => e.ip), ['10.244.1.2']);
  assert.deepEqual(p6.endpoints.map((e) => e.ip), ['fd00:244::2', 'fd00:244::3'], 'canonical IPv6 text');
  // an IPv4 address in an IPv6 slice is a problem of that slice, the rest is used
  const mixed = slice('ds-6', 'ds', [ep('fd00:244::2'), ep('10.244.1.9')], [{ port: 8080 }], { addressType: 'IPv6' });
  const m2 = normalize({ services: [s], endpointSlices: [v4, mixed] }, NODE);
  assert.equal(m2.problems.length, 1);
  assert.match(m2.problems[0].service, /ns\/ds \(EndpointSlice ds-6\)/);
  assert.deepEqual(m2.ports[1].endpoints.map((e) => e.ip), ['fd00:244::2']);
  // single-stack: no family suffix
  assert.deepEqual(normalize({ services: [svc('ss')], endpointSlices: [] }, NODE).ports.map((p) => p.id), ['ns/ss:80']);
});

test('ServicePort fields: policies, nodePort, protocol lowercased, namespace defaults to "default"', () => {
  const s: RawService = { metadata: { name: 'x' }, spec: { type: 'NodePort', clusterIP: '10.96.0.9', ports: [{ name: 'p', port: 81, protocol: 'SCTP', nodePort: 30009 }], internalTrafficPolicy: 'Local', externalTrafficPolicy: 'Local' } };
  const m = normalize({ services: [s], endpointSlices: [] }, NODE);
  assert.deepEqual(m.problems, []);
  assert.deepEqual(m.ports[0], {
    id: 'default/x:p',
    service: 'default/x',
    portName: 'p',
    family: 4,
    protocol: 'sctp',
    port: 81,
    clusterIPs: ['10.96.0.9'],
    externalIPs: [],
    nodePort: 30009,
    affinitySeconds: undefined,
    internalLocal: true,
    externalLocal: true,
    endpoints: [],
  });
});

test('memoization: unchanged services keep their ServicePort objects; a changed slice renews only its service', () => {
  const a = svc('a', { clusterIP: '10.96.3.1', ports: [{ name: 'x', port: 80 }, { name: 'y', port: 81 }] });
  const b = svc('b', { clusterIP: '10.96.3.2' });
  const c = svc('c', { clusterIP: '10.96.3.3' });
  const sa = slice('a-1', 'a', [ep('10.244.1.2')], [{ name: 'x', port: 8080 }, { name: 'y', port: 8081 }]);
  const sb = slice('b-1', 'b', [ep('10.244.1.3')]);
  const sc = slice('c-1', 'c', [ep('10.244.1.4')]);
  const state = { services: [a, b, c], endpointSlices: [sa, sb, sc] };
  const m1 = normalize(state, NODE);
  const m2 = normalize({ services: [a, b, c], endpointSlices: [sa, sb, sc] }, NODE);
  assert.equal(m1.ports.length, 4);
  m1.ports.forEach((p, i) => assert.equal(m2.ports[i], p, `${p.id} is the same object`));

  const sb2 = slice('b-1', 'b', [ep('10.244.1.3'), ep('10.244.1.30')]);
  const m3 = normalize({ services: [a, b, c], endpointSlices: [sa, sb2, sc] }, NODE);
  const by = (m: ProxyModel) => new Map(m.ports.map((p) => [p.id, p]));
  const before = by(m1);
  const after = by(m3);
  assert.equal(after.get('ns/a:x'), before.get('ns/a:x'));
  assert.equal(after.get('ns/a:y'), before.get('ns/a:y'));
  assert.equal(after.get('ns/c:80'), before.get('ns/c:80'));
  assert.notEqual(after.get('ns/b:80'), before.get('ns/b:80'));
  assert.deepEqual(after.get('ns/b:80')!.endpoints.map((e) => e.ip), ['10.244.1.3', '10.244.1.30']);

  // a new service object (even if equal in content) renews that service only
  const c2 = svc('c', { clusterIP: '10.96.3.3', ports: [{ port: 90 }] });
  const m4 = normalize({ services: [a, b, c2], endpointSlices: [sa, sb2, sc] }, NODE);
  const after4 = by(m4);
  assert.equal(after4.get('ns/a:x'), before.get('ns/a:x'));
  assert.equal(after4.get('ns/b:80'), after.get('ns/b:80'));
  assert.ok(after4.has('ns/c:90') && !after4.has('ns/c:80'));

  // a removed slice renews its service (endpoints gone)
  const m5 = normalize({ services: [a, b, c], endpointSlices: [sa, sc] }, NODE);
  assert.deepEqual(by(m5).get('ns/b:80')!.endpoints, []);
  assert.equal(by(m5).get('ns/c:80'), before.get('ns/c:80'));

  // another node object: local flags may differ, so nothing is reused
  const other: ProxyNode = { ...NODE, name: 'node-b' };
  const m6 = normalize(state, other);
  assert.notEqual(m6.ports[0], m1.ports[0]);
});

test('memoization does not hide a changed nodePortRange or lose problems on repeat', () => {
  const s = svc('np', { type: 'NodePort', ports: [{ port: 80, nodePort: 30500 }] });
  const bad = svc('bad', { clusterIP: 'x' });
  const ok = normalize({ services: [s, bad], endpointSlices: [] }, NODE);
  assert.equal(ok.ports.length, 1);
  assert.equal(ok.problems.length, 1);
  const again = normalize({ services: [s, bad], endpointSlices: [] }, NODE);
  assert.equal(again.problems.length, 1, 'a cached rejection is still reported');
  const narrow = normalize({ services: [s, bad], endpointSlices: [] }, { ...NODE, nodePortRange: [31000, 32000] });
  assert.equal(narrow.ports.length, 0);
  assert.equal(narrow.problems.length, 2);
});

test('slice problems: missing service label, unknown addressType; FQDN slices ignored', () => {
  const s = svc('web');
  const nolabel: RawEndpointSlice = { metadata: { name: 'orphan', namespace: 'ns' }, addressType: 'IPv4', endpoints: [ep('10.244.1.2')], ports: [{ port: 8080 }] };
  const badType = slice('web-9', 'web', [ep('10.244.1.2')], [{ port: 8080 }], { addressType: 'IPX' });
  const fqdn = slice('web-8', 'web', [{ addresses: ['example.com'] }], [{ port: 8080 }], { addressType: 'FQDN' });
  const good1 = slice('web-1', 'web', [ep('10.244.1.3')], [{ port: 8080 }]);
  const m = normalize({ services: [s], endpointSlices: [nolabel, badType, fqdn, good1] }, NODE);
  assert.equal(m.problems.length, 2);
  assert.ok(m.problems.some((p) => p.field.includes(SERVICE_NAME_LABEL)));
  assert.ok(m.problems.some((p) => p.field === 'addressType'));
  assert.deepEqual(m.ports[0].endpoints.map((e) => e.ip), ['10.244.1.3']);
});

test('a service given twice is reported and the first one kept', () => {
  const m = normalize({ services: [svc('x', { clusterIP: '10.96.4.1' }), svc('x', { clusterIP: '10.96.4.2' })], endpointSlices: [] }, NODE);
  assert.equal(m.ports.length, 1);
  assert.deepEqual(m.ports[0].clusterIPs, ['10.96.4.1']);
  assert.equal(m.problems.length, 1);
  assert.equal(m.problems[0].service, 'ns/x');
});

test('priorOwners is per frontend: an edit that claims another service\'s frontend rejects the editor, not the holder', () => {
  const a = (ext: string[]) => svc('a', { clusterIP: '10.96.5.1', externalIPs: ext, ports: [{ port: 80 }] }, { creationTimestamp: '2020-01-01T00:00:00Z' });
  const b = svc('b', { clusterIP: '10.96.5.2', externalIPs: ['203.0.113.2'], ports: [{ port: 80 }] }, { creationTimestamp: '2025-01-01T00:00:00Z' });
  const before = normalize({ services: [a(['203.0.113.1']), b], endpointSlices: [] }, NODE);
  assert.deepEqual(servicesOf(before), ['ns/a', 'ns/b']);
  // a is edited to also claim b's external IP + port, which b has been serving
  const m = normalize({ services: [a(['203.0.113.1', '203.0.113.2']), b], endpointSlices: [] }, NODE, { priorOwners: frontendOwners(before) });
  assert.deepEqual(servicesOf(m), ['ns/b'], 'b keeps serving what it held');
  assert.equal(m.problems.length, 1);
  assert.equal(m.problems[0].service, 'ns/a');
  assert.equal(m.problems[0].field, 'spec.externalIPs[1]');
  assert.match(m.problems[0].message, /already taken by service ns\/b/);
});

test('an endpoint listed in two slices, ready in one and not in the other, is used whatever the slice order', () => {
  const s = svc('web');
  const stale = slice('web-old', 'web', [ep('10.244.1.2', { ready: false }), ep('10.244.1.3')], [{ port: 8080 }]);
  const fresh = slice('web-new', 'web', [ep('10.244.1.2')], [{ port: 8080 }]);
  const a = normalize({ services: [s], endpointSlices: [fresh, stale] }, NODE).ports[0].endpoints.map((x) => x.ip);
  const b = normalize({ services: [s], endpointSlices: [stale, fresh] }, NODE).ports[0].endpoints.map((x) => x.ip);
  assert.deepEqual(a, ['10.244.1.2', '10.244.1.3']);
  assert.deepEqual(b, a, 'slice order does not matter');
});
