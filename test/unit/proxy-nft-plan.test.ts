// The nftables plan is pure: declarations + elements. The core design claim is checked here: the
// number of chains, sets and rules does not depend on the number of services, only element counts
// do. The datapath meaning of the plan is checked by a small packet evaluator over the plan data
// (test/helpers/nft-eval.ts): cluster IP from inside/outside, NodePort Cluster/Local, hairpin,
// no endpoints, affinity, IPv6, untouched traffic.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  diffElements,
  fragmentOf,
  keyText,
  lbChainName,
  planModel,
  renderFullSync,
  renderRuleset,
  sameStructure,
  TABLE,
  type NftPlan,
} from '../../src/proxy/engines/nftables/plan.js';
import type { Endpoint, ProxyModel, ProxyNode, ServicePort } from '../../src/proxy/model.js';
import { normalize } from '../../src/proxy/normalize.js';
import { evaluate, type Packet } from '../helpers/nft-eval.js';

const NODE: ProxyNode = {
  name: 'node-a',
  nodeIPs: ['192.168.1.10', '192.168.2.10', 'fd00:1::10'],
  clusterCIDRs: ['10.244.0.0/16', 'fd00:244::/56'],
  nodePortRange: [30000, 32767],
};

function e(ip: string, port = 8080, nodeName = 'node-b'): Endpoint {
  return { ip, port, nodeName, local: nodeName === NODE.name };
}

let seq = 0;
function sp(o: Partial<ServicePort> & { clusterIPs: string[] }): ServicePort {
  const n = `s${seq++}`;
  return {
    id: `ns/${n}:80`,
    service: `ns/${n}`,
    portName: '80',
    family: o.clusterIPs[0].includes(':') ? 6 : 4,
    protocol: 'tcp',
    port: 80,
    externalIPs: [],
    internalLocal: false,
    externalLocal: false,
    endpoints: [],
    ...o,
  };
}
const model = (ports: ServicePort[]): ProxyModel => ({ ports, problems: [] });

function nthIP(base: string, i: number): string {
  const [a, b] = base.split('.');
  return `${a}.${b}.${Math.floor(i / 250)}.${(i % 250) + 1}`;
}
function manyServices(n: number, eps = 2): ServicePort[] {
  return Array.from({ length: n }, (_, i) =>
    sp({ id: `ns/m${i}:80`, service: `ns/m${i}`, clusterIPs: [nthIP('10.96.0.0', i)], endpoints: Array.from({ length: eps }, (_, j) => e(nthIP(`10.${244 + j}.0.0`, i))) }),
  );
}

const elementCount = (p: NftPlan, set: string) => p.elements.get(set)?.size ?? 0;
const ruleCount = (p: NftPlan) => [...p.chains.values()].reduce((n, c) => n + c.rules.length, 0);
const keysOf = (p: NftPlan, set: string) => [...(p.elements.get(set)?.keys() ?? [])].sort();

test('core claim: chains, sets and rules do not grow with the number of services (10 vs 1,000)', () => {
  const small = planModel(model(manyServices(10)), NODE);
  const big = planModel(model(manyServices(1000)), NODE);
  assert.ok(sameStructure(small, big), 'same declarations and rules');
  assert.deepEqual([...big.sets.keys()], [...small.sets.keys()]);
  assert.deepEqual([...big.chains.keys()], [...small.chains.keys()]);
  assert.equal(ruleCount(big), ruleCount(small));
  for (const c of small.chains.values()) assert.deepEqual(big.chains.get(c.name)!.rules, c.rules);
  // only the elements grow: 1 svc element + 2 ep slots + 2 hairpin pairs per service
  for (const [set, n] of [['svc4', 1], ['ep4-0', 1], ['ep4-1', 1], ['hairpin4', 2]] as const) {
    assert.equal(elementCount(small, set), 10 * n, set);
    assert.equal(elementCount(big, set), 1000 * n, set);
  }
  assert.equal(elementCount(big, 'noep4'), 0);
  // and it stays small: no per-service chain or set
  assert.ok(big.chains.size < 20, `${big.chains.size} chains`);
  assert.ok(big.sets.size < 20, `${big.sets.size} sets`);
  // the structure grows with the largest endpoint count, not with services
  const wide = planModel(model([...manyServices(1000), sp({ clusterIPs: ['10.97.0.1'], endpoints: [1, 2, 3, 4, 5].map((i) => e(`10.250.0.${i}`)) })]), NODE);
  assert.ok(!sameStructure(big, wide));
  assert.ok(wide.sets.has('ep4-4') && !wide.sets.has('ep4-5'));
  assert.ok(wide.chains.has('pick-4') && wide.chains.has(lbChainName(5, 'int')));
});

test('the 1,000-service plan still sends each service to its own endpoints', () => {
  const ports = manyServices(1000);
  const plan = planModel(model(ports), NODE);
  for (const i of [0, 1, 537, 999]) {
    const r = evaluate(plan, { src: '10.244.200.1', proto: 'tcp', dst: ports[i].clusterIPs[0], dport: 80 });
    assert.equal(r.verdict, 'dnat');
    assert.deepEqual(r.endpoints, ports[i].endpoints.map((x) => `${x.ip}/8080`).sort());
    assert.equal(r.masquerade, false);
  }
});

test('fragmentOf: 1 svc element + one element per endpoint slot, hairpin pair per endpoint IP', () => {
  for (const n of [1, 2, 5]) {
    const p = sp({ clusterIPs: ['10.96.9.1'], endpoints: Array.from({ length: n }, (_, i) => e(`10.244.1.${i + 2}`)) });
    const f = fragmentOf(p, NODE);
    assert.equal(f.elements.length, 1 + n);
    assert.deepEqual(f.elements.map((x) => x.set), ['svc4', ...Array.from({ length: n }, (_, i) => `ep4-${i}`)]);
    assert.ok(f.elements.every((x) => x.k === '10.96.9.1 . tcp . 80' && x.k === keyText(x.el.key)));
    assert.equal(f.elements[0].el.data?.kind === 'verdict' && f.elements[0].el.data.chain, lbChainName(n, 'int'));
    f.elements.slice(1).forEach((x, i) => assert.deepEqual(x.el.data, { kind: 'value', parts: [{ kind: 'ipv4', value: `10.244.1.${i + 2}` }, { kind: 'port', value: 8080 }] }));
    assert.equal(f.hairpin.length, n);
    assert.equal(f.slots, n);
  }
  // two ports of one endpoint IP share one hairpin pair
  const two = sp({ clusterIPs: ['10.96.9.2'], endpoints: [e('10.244.1.2', 8080), e('10.244.1.2', 8081)] });
  assert.equal(fragmentOf(two, NODE).hairpin.length, 1);
});

test('NodePort frontends on each node IP of the right family, never on loopback', () => {
  const p = sp({ clusterIPs: ['10.96.9.3'], nodePort: 30080, endpoints: [e('10.244.1.2')] });
  const plan = planModel(model([p]), NODE);
  assert.deepEqual(keysOf(plan, 'svc4'), ['10.96.9.3 . tcp . 80', '192.168.1.10 . tcp . 30080', '192.168.2.10 . tcp . 30080'].sort());
  assert.deepEqual(keysOf(plan, 'ep4-0'), keysOf(plan, 'svc4'));
  assert.deepEqual(keysOf(plan, 'svc6'), [], 'no IPv4 NodePort on the IPv6 node address');
  const all = [...plan.elements.values()].flatMap((m) => [...m.keys()]);
  assert.ok(!all.some((k) => k.startsWith('127.') || k.startsWith('::1 ')), 'no loopback frontend');
  const r = evaluate(plan, { src: '198.51.100.1', proto: 'tcp', dst: '127.0.0.1', dport: 30080, local: true });
  assert.equal(r.verdict, 'none');
  // the IPv6 port of the service gets the IPv6 node address only
  const p6 = sp({ clusterIPs: ['fd00:96::3'], nodePort: 30080, endpoints: [e('fd00:244::2')] });
  const plan6 = planModel(model([p6]), NODE);
  assert.deepEqual(keysOf(plan6, 'svc6'), ['fd00:1::10 . tcp . 30080', 'fd00:96::3 . tcp . 80']);
  assert.deepEqual(keysOf(plan6, 'svc4'), []);
});

test('externalTrafficPolicy Local: lb chain with masq none and only local endpoints; drop when none is local', () => {
  const p = sp({ clusterIPs: ['10.96.9.4'], nodePort: 30081, externalIPs: ['203.0.113.4'], externalLocal: true, endpoints: [e('10.244.1.2', 8080, 'node-a'), e('10.244.2.3', 8080, 'node-b')] });
  const plan = planModel(model([p]), NODE);
  const svc4 = plan.elements.get('svc4')!;
  const chainOf = (k: string) => {
    const d = svc4.get(k)?.data;
    return d?.kind === 'verdict' ? d.chain : undefined;
  };
  assert.equal(chainOf('10.96.9.4 . tcp . 80'), 'lb-2-int', 'the cluster IP keeps the Cluster policy');
  assert.equal(chainOf('192.168.1.10 . tcp . 30081'), 'lb-1-none');
  assert.equal(chainOf('203.0.113.4 . tcp . 80'), 'lb-1-none');
  assert.deepEqual(plan.chains.get('lb-1-none')!.rules, ['goto pick-0'], 'no masquerade rule');
  assert.equal(plan.elements.get('ep4-0')!.get('192.168.1.10 . tcp . 30081')!.data!.kind, 'value');
  assert.deepEqual(plan.elements.get('ep4-0')!.get('192.168.1.10 . tcp . 30081')!.data, { kind: 'value', parts: [{ kind: 'ipv4', value: '10.244.1.2' }, { kind: 'port', value: 8080 }] });
  assert.ok(!plan.elements.get('ep4-1')!.has('192.168.1.10 . tcp . 30081'));

  const remote = sp({ clusterIPs: ['10.96.9.5'], nodePort: 30082, externalLocal: true, endpoints: [e('10.244.2.3', 8080, 'node-b')] });
  const plan2 = planModel(model([remote]), NODE);
  assert.deepEqual(plan2.elements.get('noep4')!.get('192.168.1.10 . tcp . 30082')!.data, { kind: 'verdict', verdict: 'drop' });
  assert.ok(!plan2.elements.get('svc4')!.has('192.168.1.10 . tcp . 30082'));
  assert.ok(plan2.elements.get('svc4')!.has('10.96.9.5 . tcp . 80'), 'the cluster IP still reaches the remote endpoint');
});

test('zero endpoints: a noep element that goes to reject-no-endpoints, no svc element', () => {
  const p = sp({ clusterIPs: ['10.96.9.6'], protocol: 'udp', port: 53, nodePort: 30053, endpoints: [] });
  const plan = planModel(model([p]), NODE);
  assert.deepEqual(keysOf(plan, 'svc4'), []);
  assert.deepEqual(keysOf(plan, 'noep4'), ['10.96.9.6 . udp . 53', '192.168.1.10 . udp . 30053', '192.168.2.10 . udp . 30053']);
  for (const el of plan.elements.get('noep4')!.values()) assert.deepEqual(el.data, { kind: 'verdict', verdict: 'goto', chain: 'reject-no-endpoints' });
  assert.ok(plan.chains.has('reject-no-endpoints'));
  assert.equal(plan.sets.has('ep4-0'), false, 'no slot maps without endpoints');
});

test('internalTrafficPolicy Local: cluster IP to local endpoints only, external IP and NodePort to all', () => {
  const p = sp({ clusterIPs: ['10.96.9.7'], externalIPs: ['203.0.113.7'], nodePort: 30087, internalLocal: true, endpoints: [e('10.244.1.2', 8080, 'node-a'), e('10.244.2.3', 8080, 'node-b')] });
  const plan = planModel(model([p]), NODE);
  const d = (k: string) => plan.elements.get('svc4')!.get(k)?.data;
  assert.deepEqual(d('10.96.9.7 . tcp . 80'), { kind: 'verdict', verdict: 'goto', chain: 'lb-1-int' });
  assert.deepEqual(d('203.0.113.7 . tcp . 80'), { kind: 'verdict', verdict: 'goto', chain: 'lb-2-all' });
  assert.deepEqual(d('192.168.1.10 . tcp . 30087'), { kind: 'verdict', verdict: 'goto', chain: 'lb-2-all' });
  const none = sp({ clusterIPs: ['10.96.9.8'], internalLocal: true, endpoints: [e('10.244.2.3')] });
  assert.deepEqual(planModel(model([none]), NODE).elements.get('noep4')!.get('10.96.9.8 . tcp . 80')!.data, { kind: 'verdict', verdict: 'drop' });
});

test('affinity: lb chain with affinity set lookups and pin chains carrying the timeout', () => {
  const p = sp({ clusterIPs: ['10.96.9.9'], affinitySeconds: 60, endpoints: [e('10.244.1.2'), e('10.244.1.3')] });
  const plan = planModel(model([p]), NODE);
  const lb = plan.chains.get('lb-2-int-aff60');
  assert.ok(lb, [...plan.chains.keys()].join(' '));
  assert.ok(lb.rules.some((r) => r.includes('@aff4-0') && r.endsWith('goto pin-0-60')));
  assert.ok(lb.rules.some((r) => r.includes('@aff4-1') && r.endsWith('goto pin-1-60')));
  assert.ok(lb.rules.some((r) => r.includes('@aff6-1')));
  assert.equal(lb.rules.at(-1), 'numgen random mod 2 vmap { 0 : goto pin-0-60, 1 : goto pin-1-60 }');
  for (const i of [0, 1]) {
    const pin = plan.chains.get(`pin-${i}-60`)!;
    assert.ok(pin.rules.some((r) => r.startsWith(`update @aff4-${i} `) && r.includes('timeout 60s')));
    assert.equal(pin.rules.at(-1), `goto pick-${i}`);
    assert.equal(plan.sets.get(`aff4-${i}`)!.managed, false);
    assert.equal(plan.elements.has(`aff4-${i}`), false, 'the datapath fills affinity sets; the plan has no elements for them');
  }
  // another timeout: its own lb and pin chains, shared affinity sets
  const q = sp({ clusterIPs: ['10.96.9.10'], affinitySeconds: 10800, endpoints: [e('10.244.1.4')] });
  const plan2 = planModel(model([p, q]), NODE);
  assert.ok(plan2.chains.has('lb-1-int-aff10800') && plan2.chains.has('pin-0-10800') && !plan2.chains.has('pin-1-10800'));
  assert.deepEqual([...plan2.sets.keys()].filter((s) => s.startsWith('aff')).sort(), ['aff4-0', 'aff4-1', 'aff6-0', 'aff6-1']);
  // without affinity: no aff sets or pin chains at all
  const plain = planModel(model([sp({ clusterIPs: ['10.96.9.11'], endpoints: [e('10.244.1.2')] })]), NODE);
  assert.ok(![...plain.sets.keys()].some((s) => s.startsWith('aff')));
  assert.ok(![...plain.chains.keys()].some((c) => c.startsWith('pin-')));
});

test('IPv6 ports go to svc6 and ep6-* with IPv6 element parts', () => {
  const p = sp({ clusterIPs: ['fd00:96::9'], externalIPs: ['2001:db8::9'], endpoints: [e('fd00:244::2'), e('fd00:244::3')] });
  const plan = planModel(model([p]), NODE);
  assert.deepEqual(keysOf(plan, 'svc6'), ['2001:db8::9 . tcp . 80', 'fd00:96::9 . tcp . 80']);
  assert.deepEqual(keysOf(plan, 'svc4'), []);
  assert.equal(elementCount(plan, 'ep6-0'), 2);
  assert.equal(elementCount(plan, 'ep6-1'), 2);
  assert.equal(elementCount(plan, 'ep4-0'), 0);
  const el = plan.elements.get('ep6-1')!.get('fd00:96::9 . tcp . 80')!;
  assert.equal(el.key[0].kind, 'ipv6');
  assert.deepEqual(el.data, { kind: 'value', parts: [{ kind: 'ipv6', value: 'fd00:244::3' }, { kind: 'port', value: 8080 }] });
  assert.deepEqual(keysOf(plan, 'hairpin6'), ['fd00:244::2 . fd00:244::2', 'fd00:244::3 . fd00:244::3']);
  assert.match(plan.sets.get('ep6-0')!.body, /ipv6_addr/);
});

test('renderRuleset: one table, every set and chain once, elements inline', () => {
  const plan = planModel(model([sp({ clusterIPs: ['10.96.9.12'], nodePort: 30012, endpoints: [e('10.244.1.2')] }), sp({ clusterIPs: ['10.96.9.13'], endpoints: [] })]), NODE);
  const text = renderRuleset(plan);
  assert.equal(text.match(/^table inet /gm)?.length, 1);
  assert.ok(text.startsWith(`table inet ${TABLE} {\n`));
  for (const s of plan.sets.keys()) assert.equal(text.match(new RegExp(`^  (set|map) ${s} \\{$`, 'gm'))?.length, 1, s);
  for (const c of plan.chains.keys()) assert.equal(text.match(new RegExp(`^  chain ${c} \\{$`, 'gm'))?.length, 1, c);
  assert.match(text, /10\.96\.9\.12 \. tcp \. 80 : goto lb-1-int/);
  assert.match(text, /10\.96\.9\.12 \. tcp \. 80 : 10\.244\.1\.2 \. 8080/);
  assert.match(text, /10\.96\.9\.13 \. tcp \. 80 : goto reject-no-endpoints/);
  assert.match(text, /type nat hook prerouting priority dstnat; policy accept;/);
  const open = (text.match(/\{/g) ?? []).length;
  const close = (text.match(/\}/g) ?? []).length;
  assert.equal(open, close, 'balanced braces');
});

test('renderFullSync: declares, rewrites chains and managed sets, deletes what is no longer planned, never flushes aff sets', () => {
  const plan = planModel(model([sp({ clusterIPs: ['10.96.9.14'], affinitySeconds: 30, endpoints: [e('10.244.1.2')] })]), NODE);
  const existing = {
    sets: new Set(['svc4', 'ep4-0', 'ep4-3', 'aff4-0', 'aff4-2', 'ep6-3']),
    chains: new Set(['services', 'pick-0', 'pick-3', 'lb-4-int', 'pin-2-30']),
  };
  const script = renderFullSync(plan, existing);
  const lines = script.trimEnd().split('\n');
  const idx = (l: string) => lines.indexOf(l);
  // obsolete objects go, flushed before deleted, chains before sets
  for (const c of ['pick-3', 'lb-4-int', 'pin-2-30']) {
    assert.ok(idx(`flush chain inet ${TABLE} ${c}`) >= 0 && idx(`delete chain inet ${TABLE} ${c}`) > idx(`flush chain inet ${TABLE} ${c}`), c);
  }
  for (const s of ['ep4-3', 'aff4-2', 'ep6-3']) assert.ok(idx(`delete set inet ${TABLE} ${s}`) > idx(`delete chain inet ${TABLE} lb-4-int`), s);
  // planned objects are not deleted
  for (const s of plan.sets.keys()) assert.ok(!lines.includes(`delete set inet ${TABLE} ${s}`), s);
  for (const c of plan.chains.keys()) assert.ok(!lines.includes(`delete chain inet ${TABLE} ${c}`), c);
  // affinity sets keep their contents: never flushed
  assert.ok(plan.sets.has('aff4-0'));
  assert.ok(!lines.some((l) => /^flush (set|map) .* aff[46]-/.test(l)), 'no flush of an affinity set');
  // every managed set is flushed and every planned chain rewritten
  for (const s of plan.sets.values()) if (s.managed) assert.ok(lines.some((l) => l.endsWith(` ${TABLE} ${s.name}`) && l.startsWith('flush ')), s.name);
  for (const c of plan.chains.values()) {
    const f = idx(`flush chain inet ${TABLE} ${c.name}`);
    assert.ok(f >= 0, c.name);
    c.rules.forEach((r, i) => assert.equal(lines[f + 1 + i], `add rule inet ${TABLE} ${c.name} ${r}`));
  }
  // elements are added after the chains they name exist (rules first), and map vs set keywords match
  const firstElem = lines.findIndex((l) => l.startsWith('add element'));
  const lastRule = lines.map((l, i) => (l.startsWith('add rule') ? i : -1)).reduce((a, b) => Math.max(a, b));
  assert.ok(firstElem > lastRule);
  assert.ok(lines.includes(`flush map inet ${TABLE} svc4`) && lines.includes(`flush set inet ${TABLE} hairpin4`));
  // nothing existing: no deletes at all
  assert.ok(!/^delete /m.test(renderFullSync(plan, { sets: new Set(), chains: new Set() })));
});

test('diffElements: plans differing in one endpoint give exactly one delete and one add', () => {
  const base = manyServices(20);
  const a = planModel(model(base), NODE);
  // port change of one endpoint (same IP: hairpin unchanged)
  const changed = base.map((p, i) => (i === 7 ? { ...p, endpoints: [p.endpoints[0], { ...p.endpoints[1], port: 9090 }] } : p));
  const b = planModel(model(changed), NODE);
  const d = diffElements(a.elements, b.elements);
  assert.equal(d.deletes.length, 1);
  assert.equal(d.adds.length, 1);
  assert.equal(d.deletes[0].set, 'ep4-1');
  assert.equal(d.adds[0].set, 'ep4-1');
  assert.equal(keyText(d.adds[0].el.key), `${base[7].clusterIPs[0]} . tcp . 80`);
  assert.deepEqual(d.adds[0].el.data, { kind: 'value', parts: [{ kind: 'ipv4', value: base[7].endpoints[1].ip }, { kind: 'port', value: 9090 }] });
  assert.ok(sameStructure(a, b));
  // an endpoint IP change in the same slot also swaps its hairpin pair
  const moved = base.map((p, i) => (i === 3 ? { ...p, endpoints: [p.endpoints[0], e('10.245.200.200')] } : p));
  const d2 = diffElements(a.elements, planModel(model(moved), NODE).elements);
  assert.deepEqual(d2.deletes.map((x) => x.set).sort(), ['ep4-1', 'hairpin4']);
  assert.deepEqual(d2.adds.map((x) => x.set).sort(), ['ep4-1', 'hairpin4']);
  // identical plans: nothing
  const same = diffElements(a.elements, planModel(model(manyServices(20)), NODE).elements);
  assert.deepEqual(same, { deletes: [], adds: [] });
  // scale to zero of one service: svc + 2 slots + 2 hairpin go, a noep comes
  const zero = base.map((p, i) => (i === 0 ? { ...p, endpoints: [] } : p));
  const d3 = diffElements(a.elements, planModel(model(zero), NODE).elements);
  assert.deepEqual(d3.deletes.map((x) => x.set).sort(), ['ep4-0', 'ep4-1', 'hairpin4', 'hairpin4', 'svc4']);
  assert.deepEqual(d3.adds.map((x) => x.set), ['noep4']);
});

test('sameStructure: false when a rule, chain or set differs', () => {
  const a = planModel(model(manyServices(3)), NODE);
  assert.ok(sameStructure(a, planModel(model(manyServices(3)), NODE)));
  assert.ok(!sameStructure(a, planModel(model(manyServices(3, 3)), NODE)));
  assert.ok(!sameStructure(a, planModel(model([...manyServices(3), sp({ clusterIPs: ['10.97.0.2'], affinitySeconds: 5, endpoints: [e('10.244.9.9')] })]), NODE)));
  assert.ok(sameStructure(a, planModel(model(manyServices(3)), { ...NODE, clusterCIDRs: [] })), 'cluster networks are elements, not structure');
});

// ---- the datapath, evaluated over the plan ----

function mixedModel(): ProxyModel {
  const ns = 'ns';
  const L = (name: string) => ({ [`kubernetes.io/service-name`]: name });
  const svc = (name: string, spec: Record<string, unknown>) => ({ metadata: { name, namespace: ns }, spec });
  const slice = (name: string, service: string, eps: [string, string][], port = 8080, addressType = 'IPv4') => ({
    metadata: { name, namespace: ns, labels: L(service) },
    addressType,
    endpoints: eps.map(([ip, node]) => ({ addresses: [ip], nodeName: node })),
    ports: [{ port, protocol: service === 'dns' || service === 'dead' ? 'UDP' : 'TCP' }],
  });
  const m = normalize(
    {
      services: [
        svc('web', { type: 'NodePort', clusterIP: '10.96.0.10', ports: [{ port: 80, nodePort: 30080 }] }),
        svc('local', { type: 'NodePort', clusterIP: '10.96.0.11', externalTrafficPolicy: 'Local', ports: [{ port: 80, nodePort: 30081 }] }),
        svc('remote', { type: 'NodePort', clusterIP: '10.96.0.12', externalTrafficPolicy: 'Local', ports: [{ port: 80, nodePort: 30082 }] }),
        svc('dead', { clusterIP: '10.96.0.13', ports: [{ port: 53, protocol: 'UDP' }] }),
        svc('deadtcp', { clusterIP: '10.96.0.16', ports: [{ port: 80 }] }),
        svc('sticky', { clusterIP: '10.96.0.14', sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } }, ports: [{ port: 80 }] }),
        svc('itp', { clusterIP: '10.96.0.15', internalTrafficPolicy: 'Local', externalIPs: ['203.0.113.15'], ports: [{ port: 80 }] }),
        svc('dns', { clusterIP: '10.96.0.20', ports: [{ port: 53, protocol: 'UDP' }] }),
        svc('v6', { type: 'NodePort', clusterIP: 'fd00:96::10', ports: [{ port: 80, nodePort: 30086 }] }),
      ],
      endpointSlices: [
        slice('web-1', 'web', [['10.244.1.2', 'node-a'], ['10.244.2.3', 'node-b']]),
        slice('local-1', 'local', [['10.244.1.4', 'node-a'], ['10.244.2.5', 'node-b']]),
        slice('remote-1', 'remote', [['10.244.2.6', 'node-b']]),
        slice('sticky-1', 'sticky', [['10.244.1.7', 'node-a'], ['10.244.2.8', 'node-b'], ['10.244.2.9', 'node-b']]),
        slice('itp-1', 'itp', [['10.244.1.10', 'node-a'], ['10.244.2.11', 'node-b']]),
        slice('dns-1', 'dns', [['10.244.2.12', 'node-b']], 5353),
        slice('v6-1', 'v6', [['fd00:244::2', 'node-a'], ['fd00:244::3', 'node-b']], 8080, 'IPv6'),
      ],
    },
    NODE,
  );
  assert.deepEqual(m.problems, []);
  return m;
}

const POD = '10.244.1.99';
const OUTSIDE = '198.51.100.7';
const tcp = (src: string, dst: string, dport: number, local = false): Packet => ({ src, proto: 'tcp', dst, dport, local });

test('datapath: cluster IP from inside the cluster network is not masqueraded, from outside it is', () => {
  const plan = planModel(mixedModel(), NODE);
  const inside = evaluate(plan, tcp(POD, '10.96.0.10', 80));
  assert.equal(inside.verdict, 'dnat');
  assert.deepEqual(inside.endpoints, ['10.244.1.2/8080', '10.244.2.3/8080']);
  assert.equal(inside.masquerade, false);
  const outside = evaluate(plan, tcp(OUTSIDE, '10.96.0.10', 80));
  assert.deepEqual(outside.endpoints, ['10.244.1.2/8080', '10.244.2.3/8080']);
  assert.equal(outside.masquerade, true);
  // the node itself (output hook, node address as source) counts as outside
  const fromNode = evaluate(plan, tcp('192.168.1.10', '10.96.0.10', 80, true));
  assert.equal(fromNode.verdict, 'dnat');
  assert.equal(fromNode.masquerade, true);
  // UDP with a targetPort from the slice
  const dns = evaluate(plan, { src: POD, proto: 'udp', dst: '10.96.0.20', dport: 53 });
  assert.deepEqual(dns.endpoints, ['10.244.2.12/5353']);
  assert.equal(dns.masquerade, false);
});

test('datapath: NodePort Cluster masquerades to all endpoints; Local keeps the client address and local endpoints', () => {
  const plan = planModel(mixedModel(), NODE);
  for (const nodeIP of ['192.168.1.10', '192.168.2.10']) {
    const c = evaluate(plan, tcp(OUTSIDE, nodeIP, 30080));
    assert.equal(c.verdict, 'dnat');
    assert.deepEqual(c.endpoints, ['10.244.1.2/8080', '10.244.2.3/8080']);
    assert.equal(c.masquerade, true);
    const l = evaluate(plan, tcp(OUTSIDE, nodeIP, 30081));
    assert.equal(l.verdict, 'dnat');
    assert.deepEqual(l.endpoints, ['10.244.1.4/8080']);
    assert.equal(l.masquerade, false);
  }
  // even from a pod, a NodePort (Cluster) masquerades
  assert.equal(evaluate(plan, tcp(POD, '192.168.1.10', 30080)).masquerade, true);
  // Local with no local endpoint: dropped on the NodePort, the cluster IP still works
  assert.equal(evaluate(plan, tcp(OUTSIDE, '192.168.1.10', 30082)).verdict, 'drop');
  const cip = evaluate(plan, tcp(POD, '10.96.0.12', 80));
  assert.equal(cip.verdict, 'dnat');
  assert.deepEqual(cip.endpoints, ['10.244.2.6/8080']);
  // the cluster IP of a Local service reaches every endpoint
  assert.deepEqual(evaluate(plan, tcp(POD, '10.96.0.11', 80)).endpoints, ['10.244.1.4/8080', '10.244.2.5/8080']);
  // a NodePort on a node address of the other family is not a service
  assert.equal(evaluate(plan, tcp('2001:db8::1', 'fd00:1::10', 30080)).verdict, 'none');
});

test('datapath: hairpin — a pod reaching itself through its service is masqueraded', () => {
  const plan = planModel(mixedModel(), NODE);
  const r = evaluate(plan, tcp('10.244.1.2', '10.96.0.10', 80));
  assert.equal(r.verdict, 'dnat');
  assert.equal(r.masquerade, 'mixed');
  assert.equal(r.masqByEndpoint.get('10.244.1.2/8080'), true, 'to itself: masqueraded');
  assert.equal(r.masqByEndpoint.get('10.244.2.3/8080'), false, 'to the other pod: not');
  // through a Local NodePort too (masq none otherwise)
  const l = evaluate(plan, tcp('10.244.1.4', '192.168.1.10', 30081));
  assert.equal(l.masqByEndpoint.get('10.244.1.4/8080'), true);
});

test('datapath: no endpoints are rejected before the service lookup; non-service traffic is untouched', () => {
  const plan = planModel(mixedModel(), NODE);
  const udp = evaluate(plan, { src: POD, proto: 'udp', dst: '10.96.0.13', dport: 53 });
  assert.equal(udp.verdict, 'reject');
  assert.deepEqual(udp.endpoints, []);
  assert.ok(udp.paths[0].trace.includes('reject-no-endpoints'));
  assert.ok(!udp.paths[0].trace.includes('services'), 'rejected before the service lookup');
  const t = evaluate(plan, tcp(OUTSIDE, '10.96.0.16', 80));
  assert.equal(t.verdict, 'reject');
  for (const p of [
    tcp(POD, '10.96.0.99', 80), // no such service
    tcp(POD, '10.96.0.10', 81), // service IP, other port
    { src: POD, proto: 'udp', dst: '10.96.0.10', dport: 80 } as Packet, // other protocol
    tcp(OUTSIDE, '192.168.1.10', 22), // the node's own ssh
    tcp(OUTSIDE, '10.244.1.2', 8080), // straight to a pod
  ]) {
    const r = evaluate(plan, p);
    assert.equal(r.verdict, 'none', JSON.stringify(p));
    assert.equal(r.masquerade, false, JSON.stringify(p));
    assert.deepEqual(r.endpoints, []);
  }
});

test('datapath: internalTrafficPolicy Local and external IPs', () => {
  const plan = planModel(mixedModel(), NODE);
  const cip = evaluate(plan, tcp(POD, '10.96.0.15', 80));
  assert.deepEqual(cip.endpoints, ['10.244.1.10/8080']);
  const ext = evaluate(plan, tcp(OUTSIDE, '203.0.113.15', 80));
  assert.deepEqual(ext.endpoints, ['10.244.1.10/8080', '10.244.2.11/8080']);
  assert.equal(ext.masquerade, true);
  assert.equal(evaluate(plan, tcp(POD, '203.0.113.15', 80)).masquerade, true, 'external IPs masquerade always');
});

test('datapath: ClientIP affinity pins the chosen slot with its timeout, and a pinned client keeps its endpoint', () => {
  const plan = planModel(mixedModel(), NODE);
  const r = evaluate(plan, tcp(POD, '10.96.0.14', 80));
  assert.deepEqual(r.endpoints, ['10.244.1.7/8080', '10.244.2.8/8080', '10.244.2.9/8080']);
  for (const p of r.paths) {
    assert.equal(p.pins.length, 1);
    assert.equal(p.pins[0].timeout, 60);
    const slot = Number(/aff4-(\d)/.exec(p.pins[0].set)![1]);
    assert.equal(p.endpoint, r.endpoints[slot], 'slot i pins endpoint i');
  }
  const pinned = evaluate(plan, tcp(POD, '10.96.0.14', 80), { affinity: new Map([['aff4-2', new Set([`${POD} . 10.96.0.14 . tcp . 80`])]]) });
  assert.deepEqual(pinned.endpoints, ['10.244.2.9/8080']);
  // another client is not pinned
  const other = evaluate(plan, tcp('10.244.1.98', '10.96.0.14', 80), { affinity: new Map([['aff4-2', new Set([`${POD} . 10.96.0.14 . tcp . 80`])]]) });
  assert.equal(other.endpoints.length, 3);
});

test('datapath: IPv6 service, NodePort on the IPv6 node address, masquerade by the IPv6 cluster network', () => {
  const plan = planModel(mixedModel(), NODE);
  const inside = evaluate(plan, tcp('fd00:244::99', 'fd00:96::10', 80));
  assert.equal(inside.verdict, 'dnat');
  assert.deepEqual(inside.endpoints, ['fd00:244::2/8080', 'fd00:244::3/8080']);
  assert.equal(inside.masquerade, false);
  assert.equal(evaluate(plan, tcp('2001:db8::7', 'fd00:96::10', 80)).masquerade, true);
  const np = evaluate(plan, tcp('2001:db8::7', 'fd00:1::10', 30086));
  assert.deepEqual(np.endpoints, ['fd00:244::2/8080', 'fd00:244::3/8080']);
  assert.equal(np.masquerade, true);
  assert.equal(evaluate(plan, tcp(OUTSIDE, '192.168.1.10', 30086)).verdict, 'none', 'IPv6-only service: no IPv4 NodePort');
  const hp = evaluate(plan, tcp('fd00:244::2', 'fd00:96::10', 80));
  assert.equal(hp.masqByEndpoint.get('fd00:244::2/8080'), true);
});

test('datapath: a node without cluster networks masquerades every cluster IP flow', () => {
  const node = { ...NODE, clusterCIDRs: [] };
  const plan = planModel(model([sp({ clusterIPs: ['10.96.9.20'], endpoints: [e('10.244.1.2')] })]), node);
  assert.equal(evaluate(plan, tcp(POD, '10.96.9.20', 80)).masquerade, true);
});

// the plan pins clients to a slot; the ServiceIndex keeps every endpoint in its slot (keepSlots),
// so a new endpoint that sorts first does not move pinned clients
test('datapath: a client pinned by ClientIP affinity keeps its endpoint when another endpoint is added', async () => {
  const { keepSlots } = await import('../../src/proxy/service-index.js');
  const eps = [e('10.244.1.7'), e('10.244.2.8'), e('10.244.2.9')];
  const oldPorts = [sp({ id: 'ns/aff:80', service: 'ns/aff', clusterIPs: ['10.96.8.1'], affinitySeconds: 60, endpoints: eps })];
  const before = planModel(model(oldPorts), NODE);
  // the client's first connection picked slot 1 and was pinned there
  const first = evaluate(before, tcp(POD, '10.96.8.1', 80)).paths.find((p) => p.endpoint === '10.244.2.8/8080')!;
  const pinned = new Map([[first.pins[0].set, new Set([`${POD} . 10.96.8.1 . tcp . 80`])]]);
  assert.deepEqual(evaluate(before, tcp(POD, '10.96.8.1', 80), { affinity: pinned }).endpoints, ['10.244.2.8/8080']);
  // a new endpoint that sorts first (10.244.1.1 < 10.244.1.7); the affinity sets keep their contents
  const after = planModel(model(keepSlots(oldPorts, [sp({ id: 'ns/aff:80', service: 'ns/aff', clusterIPs: ['10.96.8.1'], affinitySeconds: 60, endpoints: [e('10.244.1.1'), ...eps] })])), NODE);
  assert.deepEqual(evaluate(after, tcp(POD, '10.96.8.1', 80), { affinity: pinned }).endpoints, ['10.244.2.8/8080'], 'still the same pod');
});

test('datapath: every base chain is a nat chain, so established packets walk no rule of the table', () => {
  const plan = planModel(mixedModel(), NODE);
  const hooks = [...plan.chains.values()].filter((c) => c.hook).map((c) => c.hook!);
  assert.ok(hooks.length >= 3);
  for (const h of hooks) assert.match(h, /^type nat hook (prerouting|output|postrouting) /);
  // the no-endpoints lookup comes before the service lookup in both dstnat chains
  for (const c of ['nat-prerouting', 'nat-output']) assert.deepEqual(plan.chains.get(c)!.rules, ['jump no-endpoints', 'jump services']);
});
