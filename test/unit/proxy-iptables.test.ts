// The iptables engine's pure parts: chain names, the rendered layout (chain structure,
// probabilities, masquerade, hairpin, affinity, reject/drop, IPv6), hook edits, full and partial
// restore texts (replayed on an in-memory iptables to check that a partial sync ends where a full
// sync of the new model does), and the iptables-save parsers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normalize } from '../../src/proxy/normalize.js';
import { type ProxyModel, type ProxyNode, type RawEndpointSlice, type RawService, SERVICE_NAME_LABEL, type ServicePort } from '../../src/proxy/model.js';
import {
  EMPTY_OBSERVED,
  HOOKS,
  MAX_CHAIN_LEN,
  type Observed,
  base32,
  cleanupText,
  extChain,
  familyChains,
  hookEdits,
  observedFromSave,
  planPartialFamily,
  programmedFromSave,
  renderAll,
  renderFamily,
  renderFamilyFull,
  sepChain,
  svcChain,
  svlChain,
  tokenize,
} from '../../src/proxy/engines/iptables/index.js';
import { IptablesEngine } from '../../src/proxy/engines/iptables/engine.js';

const NODE: ProxyNode = { name: 'node-a', nodeIPs: ['192.168.1.10', 'fd00:1::10'], clusterCIDRs: ['10.244.0.0/16', 'fd00:244::/56'], nodePortRange: [30000, 32767] };

type Spec = NonNullable<RawService['spec']>;
function svc(name: string, spec: Partial<Spec> & Record<string, unknown> = {}): RawService {
  return { kind: 'Service', metadata: { name, namespace: 'ns' }, spec: { clusterIP: '10.96.0.10', ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }], ...spec } as Spec };
}
function slice(service: string, endpoints: { ip: string; node?: string }[], o: { name?: string; ports?: unknown[]; v6?: boolean } = {}): RawEndpointSlice {
  return {
    kind: 'EndpointSlice',
    metadata: { name: o.name ?? `${service}-${o.v6 ? 'v6' : 'v4'}`, namespace: 'ns', labels: { [SERVICE_NAME_LABEL]: service } },
    addressType: o.v6 ? 'IPv6' : 'IPv4',
    endpoints: endpoints.map((e) => ({ addresses: [e.ip], nodeName: e.node ?? 'node-b' })),
    ports: o.ports ?? [{ port: 8080, protocol: 'TCP' }],
  };
}
function model(services: RawService[], slices: RawEndpointSlice[], node = NODE): ProxyModel {
  const m = normalize({ services, endpointSlices: slices }, node);
  assert.deepEqual(m.problems, []);
  return m;
}
const port = (m: ProxyModel, id: string): ServicePort => {
  const p = m.ports.find((x) => x.id === id);
  assert.ok(p, `port ${id} in ${m.ports.map((x) => x.id).join(', ')}`);
  return p;
};

// ------------------------------------------------------------------------------------------
// A tiny iptables for restore texts: tables of chains with their rule specs. It enforces what the
// kernel does (a rule may only be appended to, or jump to, a chain that exists at that point; -X
// of a missing or referenced chain and -D of a missing rule fail the table's transaction).

type Tables = Map<string, Map<string, string[]>>;
const BUILTIN: Record<string, string[]> = { nat: ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'], filter: ['INPUT', 'FORWARD', 'OUTPUT'] };
const TARGETS = new Set(['ACCEPT', 'DROP', 'RETURN', 'REJECT', 'DNAT', 'SNAT', 'MASQUERADE', 'MARK']);

function emptyTables(): Tables {
  const t: Tables = new Map();
  for (const [name, chains] of Object.entries(BUILTIN)) t.set(name, new Map(chains.map((c) => [c, []])));
  return t;
}

function cloneTables(t: Tables): Tables {
  return new Map([...t].map(([k, v]) => [k, new Map([...v].map(([c, r]) => [c, [...r]]))]));
}

/** Applies one restore text (--noflush) to `state`; each table's COMMIT is all or nothing. Returns lines applied. */
function replay(state: Tables, text: string): number {
  let work: Map<string, string[]> | undefined;
  let table = '';
  let n = 0;
  for (const [i, l] of text.split('\n').entries()) {
    if (l === '' || l.startsWith('#')) continue;
    const fail = (why: string) => {
      throw new Error(`line ${i + 1} (${l}): ${why}`);
    };
    if (l.startsWith('*')) {
      table = l.slice(1);
      work = new Map([...(state.get(table) ?? new Map<string, string[]>())].map(([c, r]) => [c, [...r]]));
      continue;
    }
    if (!work) fail('outside a table');
    const w = work!;
    if (l === 'COMMIT') {
      state.set(table, w);
      work = undefined;
      continue;
    }
    n++;
    if (l.startsWith(':')) {
      w.set(l.slice(1).split(' ')[0], []);
      continue;
    }
    const t = tokenize(l);
    const [op, chain] = t;
    const jIdx = t.lastIndexOf('-j');
    const target = jIdx >= 0 ? t[jIdx + 1] : undefined;
    if (op === '-X') {
      if (!w.has(chain)) fail('no such chain');
      for (const [c, rules] of w) if (c !== chain && rules.some((r) => tokenize(r).at(tokenize(r).lastIndexOf('-j') + 1) === chain)) fail(`referenced from ${c}`);
      w.delete(chain);
      continue;
    }
    if (!w.has(chain)) fail('chain does not exist');
    if (target && !TARGETS.has(target) && !w.has(target)) fail(`jump to missing chain ${target}`);
    if (op === '-A') w.get(chain)!.push(l.slice(`-A ${chain} `.length));
    else if (op === '-I') w.get(chain)!.splice(Number(t[2]) - 1, 0, l.slice(`-I ${chain} ${t[2]} `.length));
    else if (op === '-D') {
      const spec = l.slice(`-D ${chain} `.length);
      const at = w.get(chain)!.indexOf(spec);
      if (at < 0) fail('no such rule');
      w.get(chain)!.splice(at, 1);
    } else fail(`unknown op ${op}`);
  }
  if (work) throw new Error('missing COMMIT');
  return n;
}

/** The restore texts of one family from renderAll()'s output. */
function familyText(all: string, family: 4 | 6): string {
  const [v4, v6] = all.split('# ip6tables-restore --noflush\n');
  return family === 4 ? v4.replace('# iptables-restore --noflush\n', '') : v6;
}

/** iptables-save-like text of a replayed state (podnet chains only, plus built-in chains' rules). */
function saveText(state: Tables): string {
  let out = '';
  for (const [table, chains] of state) {
    out += `*${table}\n`;
    for (const c of chains.keys()) out += BUILTIN[table].includes(c) ? `:${c} ACCEPT [0:0]\n` : `:${c} - [0:0]\n`;
    for (const [c, rules] of chains) for (const r of rules) out += `-A ${c} ${r}\n`;
    out += 'COMMIT\n';
  }
  return out;
}

function podnetChains(state: Tables): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const [table, chains] of state) for (const [c, r] of chains) if (c.startsWith('PODNET-') || r.length) m.set(`${table}/${c}`, r);
  return m;
}

// ------------------------------------------------------------------------------------------

test('chain names: kube-proxy hashing (base32 of sha256), stable, at most 28 characters', () => {
  assert.equal(base32(Buffer.from('foobar')), 'MZXW6YTBOI');
  assert.equal(base32(Buffer.from('f')), 'MY');
  const p = { id: 'ns/web:http', protocol: 'tcp' as const };
  assert.match(svcChain(p), /^PODNET-SVC-[A-Z2-7]{16}$/);
  assert.equal(svcChain(p), svcChain({ ...p }), 'stable');
  assert.notEqual(svcChain(p), svcChain({ ...p, protocol: 'udp' }));
  assert.equal(svcChain(p).slice(11), svlChain(p).slice(11));
  assert.equal(svcChain(p).slice(11), extChain(p).slice(11));
  assert.notEqual(sepChain(p, '10.0.0.1', 80), sepChain(p, '10.0.0.1', 81));
  assert.notEqual(sepChain(p, '10.0.0.1', 80), sepChain(p, '10.0.0.2', 80));
  // golden values (base32(sha256("ns/web:httptcp")), as kube-proxy hashes "ns/web:http" + "tcp"):
  // a change of the hash input would rename every chain on every node
  assert.equal(svcChain(p), 'PODNET-SVC-HMALVVKA6APKJPPY');
  assert.equal(sepChain(p, '10.1.0.5', 8080), 'PODNET-SEP-RXMPVEBGMBW6CFX4');
  const all = renderAll(
    model(
      [svc('a', { type: 'NodePort', clusterIPs: ['10.96.0.10', 'fd00:96::10'], ipFamilyPolicy: 'RequireDualStack', externalIPs: ['203.0.113.5'], externalTrafficPolicy: 'Local', ports: [{ name: 'a-very-long-port-name', port: 80, nodePort: 30080, targetPort: 8080 }] })],
      [slice('a', [{ ip: '10.1.0.5', node: 'node-a' }, { ip: '10.1.0.6' }], { ports: [{ name: 'a-very-long-port-name', port: 8080 }] }), slice('a', [{ ip: 'fd00:1::5' }], { v6: true, ports: [{ name: 'a-very-long-port-name', port: 8080 }] })],
    ),
    NODE,
  );
  const names = [...all.matchAll(/^:(\S+)/gm)].map((m) => m[1]);
  assert.ok(names.length > 10);
  for (const n of names) assert.ok(n.length <= MAX_CHAIN_LEN, `${n} is ${n.length} characters`);
  assert.equal(renderAll(model([svc('a')], [slice('a', [{ ip: '10.1.0.5' }])]), NODE), renderAll(model([svc('a')], [slice('a', [{ ip: '10.1.0.5' }])]), NODE), 'rendering is deterministic');
});

test('ClusterIP service: SVC chain with masquerade of off-cluster sources, 1/(n-i) probabilities, SEP chains with hairpin and DNAT', () => {
  const m = model([svc('web')], [slice('web', [{ ip: '10.1.0.5' }, { ip: '10.1.0.6' }, { ip: '10.1.0.7' }])]);
  const p = port(m, 'ns/web:80');
  const { nat, filter } = familyChains(renderFamily(m, NODE, 4));
  const svcName = svcChain(p);
  const services = nat.get('PODNET-SERVICES')!;
  assert.deepEqual(services, [
    `-A PODNET-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "podnet ns/web:80 cluster IP" -m tcp --dport 80 -j ${svcName}`,
    '-A PODNET-SERVICES -m comment --comment "podnet service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j PODNET-NODEPORTS',
  ]);
  const seps = p.endpoints.map((e) => sepChain(p, e.ip, e.port));
  assert.deepEqual(nat.get(svcName), [
    `-A ${svcName} ! -s 10.244.0.0/16 -d 10.96.0.10/32 -p tcp -m comment --comment "podnet ns/web:80 cluster IP" -m tcp --dport 80 -j PODNET-MARK-MASQ`,
    `-A ${svcName} -m comment --comment "podnet ns/web:80 -> 10.1.0.5:8080" -m statistic --mode random --probability 0.3333333333 -j ${seps[0]}`,
    `-A ${svcName} -m comment --comment "podnet ns/web:80 -> 10.1.0.6:8080" -m statistic --mode random --probability 0.5000000000 -j ${seps[1]}`,
    `-A ${svcName} -m comment --comment "podnet ns/web:80 -> 10.1.0.7:8080" -j ${seps[2]}`,
  ]);
  assert.deepEqual(nat.get(seps[1]), [
    `-A ${seps[1]} -s 10.1.0.6/32 -m comment --comment "podnet ns/web:80 hairpin" -j PODNET-MARK-MASQ`,
    `-A ${seps[1]} -p tcp -m comment --comment "podnet ns/web:80" -j DNAT --to-destination 10.1.0.6:8080`,
  ]);
  assert.deepEqual(nat.get('PODNET-MARK-MASQ'), ['-A PODNET-MARK-MASQ -j MARK --or-mark 0x4000']);
  assert.deepEqual(nat.get('PODNET-POSTROUTING'), [
    '-A PODNET-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN',
    '-A PODNET-POSTROUTING -j MARK --xor-mark 0x4000',
    '-A PODNET-POSTROUTING -m comment --comment "podnet service traffic requiring SNAT" -j MASQUERADE --random-fully',
  ]);
  assert.deepEqual(filter.get('PODNET-SERVICES'), []);
  assert.equal(nat.has(svlChain(p)), false);
  assert.equal(nat.has(extChain(p)), false);
  // every rule of a service port's chains names the port in its comment
  for (const [c, rules] of nat) if (c.startsWith('PODNET-S') && c !== 'PODNET-SERVICES') for (const r of rules) assert.match(r, /--comment "podnet ns\/web:80[ "]/);
});

test('masquerade source match: none without cluster CIDRs (mark all), PODNET-MASQ-NONPOD with several', () => {
  const m = model([svc('web')], [slice('web', [{ ip: '10.1.0.5' }])]);
  const p = port(m, 'ns/web:80');
  const none = familyChains(renderFamily(m, { ...NODE, clusterCIDRs: [] }, 4)).nat;
  assert.match(none.get(svcChain(p))![0], /^-A \S+ -d 10\.96\.0\.10\/32 -p tcp .* -j PODNET-MARK-MASQ$/);
  const two = familyChains(renderFamily(m, { ...NODE, clusterCIDRs: ['10.244.0.0/16', '10.250.0.0/16', 'fd00::/64'] }, 4)).nat;
  assert.match(two.get(svcChain(p))![0], /^-A \S+ -d 10\.96\.0\.10\/32 .* -j PODNET-MASQ-NONPOD$/);
  assert.deepEqual(two.get('PODNET-MASQ-NONPOD'), [
    '-A PODNET-MASQ-NONPOD -s 10.244.0.0/16 -m comment --comment "podnet from a pod" -j RETURN',
    '-A PODNET-MASQ-NONPOD -s 10.250.0.0/16 -m comment --comment "podnet from a pod" -j RETURN',
    '-A PODNET-MASQ-NONPOD -j PODNET-MARK-MASQ',
  ]);
});

test('no endpoints: REJECT in filter at once (tcp-reset / icmp port unreachable / icmp6), no nat rule', () => {
  const m = model(
    [
      svc('t', { type: 'NodePort', externalIPs: ['203.0.113.5'], ports: [{ port: 80, nodePort: 30080 }] }),
      svc('u', { clusterIP: '10.96.0.11', ports: [{ port: 53, protocol: 'UDP' }] }),
      svc('six', { clusterIP: 'fd00:96::11', ports: [{ port: 53, protocol: 'UDP' }] }),
    ],
    [],
  );
  const v4 = familyChains(renderFamily(m, NODE, 4));
  assert.deepEqual(v4.filter.get('PODNET-SERVICES'), [
    '-A PODNET-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "podnet ns/t:80 cluster IP has no endpoints" -m tcp --dport 80 -j REJECT --reject-with tcp-reset',
    '-A PODNET-SERVICES -d 203.0.113.5/32 -p tcp -m comment --comment "podnet ns/t:80 external IP has no endpoints" -m tcp --dport 80 -j REJECT --reject-with tcp-reset',
    '-A PODNET-SERVICES -d 192.168.1.10/32 -p tcp -m comment --comment "podnet ns/t:80 nodePort has no endpoints" -m tcp --dport 30080 -j REJECT --reject-with tcp-reset',
    '-A PODNET-SERVICES -d 10.96.0.11/32 -p udp -m comment --comment "podnet ns/u:53 cluster IP has no endpoints" -m udp --dport 53 -j REJECT --reject-with icmp-port-unreachable',
  ]);
  assert.equal(v4.nat.get('PODNET-SERVICES')!.length, 1, 'only the nodeports jump');
  assert.deepEqual(v4.nat.get('PODNET-NODEPORTS'), []);
  assert.equal([...v4.nat.keys()].filter((c) => /SVC|SEP|EXT|SVL/.test(c)).length, 0);
  const v6 = familyChains(renderFamily(m, NODE, 6));
  assert.deepEqual(v6.filter.get('PODNET-SERVICES'), [
    '-A PODNET-SERVICES -d fd00:96::11/128 -p udp -m comment --comment "podnet ns/six:53 cluster IP has no endpoints" -m udp --dport 53 -j REJECT --reject-with icmp6-port-unreachable',
  ]);
  // hooked from INPUT, FORWARD and OUTPUT of filter
  const text = renderAll(m, NODE);
  for (const c of ['INPUT', 'FORWARD', 'OUTPUT']) assert.ok(text.includes(`-I ${c} 1 -m conntrack --ctstate NEW -m comment --comment "podnet service portals" -j PODNET-SERVICES`), c);
});

test('externalTrafficPolicy Cluster: external IP and NodePort (node IPs only) through PODNET-EXT (always mark), cluster IP straight to SVC', () => {
  const m = model([svc('np', { type: 'NodePort', externalIPs: ['203.0.113.5'], ports: [{ port: 80, nodePort: 30080, targetPort: 8080 }] })], [slice('np', [{ ip: '10.1.0.5', node: 'node-a' }, { ip: '10.1.0.6' }])]);
  const p = port(m, 'ns/np:80');
  const { nat } = familyChains(renderFamily(m, { ...NODE, nodeIPs: ['192.168.1.10', '192.168.2.10', 'fd00:1::10'] }, 4));
  const ext = extChain(p);
  assert.deepEqual(nat.get(ext), [
    `-A ${ext} -m comment --comment "podnet ns/np:80 external traffic: masquerade" -j PODNET-MARK-MASQ`,
    `-A ${ext} -m comment --comment "podnet ns/np:80 external traffic" -j ${svcChain(p)}`,
  ]);
  assert.ok(nat.get('PODNET-SERVICES')!.includes(`-A PODNET-SERVICES -d 203.0.113.5/32 -p tcp -m comment --comment "podnet ns/np:80 external IP" -m tcp --dport 80 -j ${ext}`));
  assert.ok(nat.get('PODNET-SERVICES')!.includes(`-A PODNET-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "podnet ns/np:80 cluster IP" -m tcp --dport 80 -j ${svcChain(p)}`));
  assert.deepEqual(nat.get('PODNET-NODEPORTS'), [
    `-A PODNET-NODEPORTS -d 192.168.1.10/32 -p tcp -m comment --comment "podnet ns/np:80 nodePort" -m tcp --dport 30080 -j ${ext}`,
    `-A PODNET-NODEPORTS -d 192.168.2.10/32 -p tcp -m comment --comment "podnet ns/np:80 nodePort" -m tcp --dport 30080 -j ${ext}`,
  ]);
  assert.ok(!JSON.stringify([...nat]).includes('127.0.0.1'), 'no localhost NodePorts');
  const last = nat.get('PODNET-SERVICES')!.at(-1)!;
  assert.match(last, /-m addrtype --dst-type LOCAL -j PODNET-NODEPORTS$/);
  // the cluster IP masquerade rule matches the cluster IP only: external traffic is marked by EXT
  assert.match(nat.get(svcChain(p))![0], /! -s 10\.244\.0\.0\/16 -d 10\.96\.0\.10\/32/);
});

test('externalTrafficPolicy Local: external frontends to the local endpoints (SVL), never marked; none local: DROP in filter', () => {
  const spec = { type: 'NodePort', externalIPs: ['203.0.113.5'], externalTrafficPolicy: 'Local', ports: [{ port: 80, nodePort: 30080, targetPort: 8080 }] };
  const m = model([svc('loc', spec)], [slice('loc', [{ ip: '10.1.0.5', node: 'node-a' }, { ip: '10.1.0.6' }])]);
  const p = port(m, 'ns/loc:80');
  const { nat, filter } = familyChains(renderFamily(m, NODE, 4));
  const svl = svlChain(p);
  assert.equal(nat.has(extChain(p)), false);
  const local = sepChain(p, '10.1.0.5', 8080);
  assert.deepEqual(nat.get(svl), [`-A ${svl} -m comment --comment "podnet ns/loc:80 -> 10.1.0.5:8080" -j ${local}`], 'only the local endpoint, no masquerade mark');
  assert.ok(nat.get('PODNET-SERVICES')!.some((r) => r.includes('-d 203.0.113.5/32') && r.endsWith(`-j ${svl}`)));
  assert.ok(nat.get('PODNET-NODEPORTS')!.every((r) => r.endsWith(`-j ${svl}`)));
  assert.ok(nat.get('PODNET-SERVICES')!.some((r) => r.includes('-d 10.96.0.10/32') && r.endsWith(`-j ${svcChain(p)}`)), 'cluster IP: all endpoints');
  assert.equal(nat.get(svcChain(p))!.filter((r) => r.includes('-j PODNET-SEP-')).length, 2);
  assert.deepEqual(filter.get('PODNET-SERVICES'), []);

  const none = model([svc('loc', spec)], [slice('loc', [{ ip: '10.1.0.6' }])]);
  const f2 = familyChains(renderFamily(none, NODE, 4));
  assert.deepEqual(f2.filter.get('PODNET-SERVICES'), [
    '-A PODNET-SERVICES -d 203.0.113.5/32 -p tcp -m comment --comment "podnet ns/loc:80 external IP has no local endpoints" -m tcp --dport 80 -j DROP',
    '-A PODNET-SERVICES -d 192.168.1.10/32 -p tcp -m comment --comment "podnet ns/loc:80 nodePort has no local endpoints" -m tcp --dport 30080 -j DROP',
  ]);
  assert.equal(f2.nat.has(svlChain(p)), false);
  assert.ok(f2.nat.has(svcChain(p)), 'the cluster IP still reaches the remote endpoint');
});

test('internalTrafficPolicy Local: the cluster IP goes to SVL (with the masquerade rule); none local: DROP', () => {
  const m = model([svc('il', { internalTrafficPolicy: 'Local' })], [slice('il', [{ ip: '10.1.0.5', node: 'node-a' }, { ip: '10.1.0.6' }])]);
  const p = port(m, 'ns/il:80');
  const { nat } = familyChains(renderFamily(m, NODE, 4));
  assert.equal(nat.has(svcChain(p)), false);
  assert.equal(nat.get(svlChain(p))!.length, 2);
  assert.match(nat.get(svlChain(p))![0], /! -s 10\.244\.0\.0\/16 -d 10\.96\.0\.10\/32 .* -j PODNET-MARK-MASQ$/);
  const none = model([svc('il', { internalTrafficPolicy: 'Local' })], [slice('il', [{ ip: '10.1.0.6' }])]);
  assert.deepEqual(familyChains(renderFamily(none, NODE, 4)).filter.get('PODNET-SERVICES'), [
    '-A PODNET-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "podnet ns/il:80 cluster IP has no local endpoints" -m tcp --dport 80 -j DROP',
  ]);
});

test('ClientIP affinity: recent --rcheck per endpoint before the statistic rules, recent --set in the SEP chain', () => {
  const m = model([svc('aff', { sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 600 } } })], [slice('aff', [{ ip: '10.1.0.5' }, { ip: '10.1.0.6' }])]);
  const p = port(m, 'ns/aff:80');
  const { nat } = familyChains(renderFamily(m, NODE, 4));
  const [a, b] = p.endpoints.map((e) => sepChain(p, e.ip, e.port));
  const rules = nat.get(svcChain(p))!;
  assert.equal(rules.length, 5);
  assert.match(rules[1], new RegExp(`-m recent --rcheck --seconds 600 --reap --name ${a} -j ${a}$`));
  assert.match(rules[2], new RegExp(`-m recent --rcheck --seconds 600 --reap --name ${b} -j ${b}$`));
  assert.match(rules[3], /--probability 0\.5000000000 -j /);
  assert.match(nat.get(a)![1], new RegExp(`-m recent --set --name ${a} -j DNAT --to-destination 10\\.1\\.0\\.5:8080$`));
});

test('IPv6 and dual-stack: ip6tables section with /128, [ip]:port and the v6 cluster CIDR', () => {
  const m = model(
    [svc('ds', { clusterIPs: ['10.96.0.10', 'fd00:96::10'], ipFamilyPolicy: 'RequireDualStack', type: 'NodePort', ports: [{ port: 80, nodePort: 30080, targetPort: 8080 }] })],
    [slice('ds', [{ ip: '10.1.0.5' }]), slice('ds', [{ ip: 'fd00:1::5' }], { v6: true })],
  );
  const all = renderAll(m, NODE);
  const v4 = familyText(all, 4);
  const v6 = familyText(all, 6);
  assert.ok(!v4.includes('fd00:'));
  const p6 = port(m, 'ns/ds:80/v6');
  assert.ok(v6.includes(`-A PODNET-SERVICES -d fd00:96::10/128 -p tcp -m comment --comment "podnet ns/ds:80/v6 cluster IP" -m tcp --dport 80 -j ${svcChain(p6)}`));
  assert.ok(v6.includes(`! -s fd00:244::/56 -d fd00:96::10/128`));
  assert.ok(v6.includes('-s fd00:1::5/128 -m comment --comment "podnet ns/ds:80/v6 hairpin" -j PODNET-MARK-MASQ'));
  assert.ok(v6.includes('-j DNAT --to-destination [fd00:1::5]:8080'));
  assert.ok(v6.includes(`-A PODNET-NODEPORTS -d fd00:1::10/128 -p tcp -m comment --comment "podnet ns/ds:80/v6 nodePort" -m tcp --dport 30080 -j ${extChain(p6)}`));
  assert.ok(!v6.includes('192.168.1.10'));
  assert.ok(all.startsWith('# iptables-restore --noflush\n*nat\n'));
  assert.ok(all.includes('# ip6tables-restore --noflush\n*nat\n'));
});

test('the full restore text loads in order (chains exist before use) and equals the chain model; NODEPORTS jump stays last', () => {
  const m = model(
    [
      svc('a', { sessionAffinity: 'ClientIP' }),
      svc('b', { clusterIP: '10.96.0.11', type: 'NodePort', externalIPs: ['203.0.113.5'], ports: [{ port: 80, nodePort: 30080, targetPort: 8080 }] }),
      svc('c', { clusterIP: '10.96.0.12', externalTrafficPolicy: 'Local', type: 'NodePort', ports: [{ port: 80, nodePort: 30081, targetPort: 8080 }] }),
      svc('d', { clusterIP: '10.96.0.13' }),
    ],
    [
      slice('a', [{ ip: '10.1.0.5' }, { ip: '10.1.0.6' }, { ip: '10.1.0.7' }]),
      slice('b', [{ ip: '10.1.1.5', node: 'node-a' }, { ip: '10.1.1.6' }]),
      slice('c', [{ ip: '10.1.2.5', node: 'node-a' }, { ip: '10.1.2.6' }]),
    ],
  );
  const state = emptyTables();
  replay(state, familyText(renderAll(m, NODE), 4));
  const want = familyChains(renderFamily(m, NODE, 4));
  for (const [c, rules] of want.nat) assert.deepEqual(state.get('nat')!.get(c), rules.map((r) => r.slice(`-A ${c} `.length)), c);
  for (const [c, rules] of want.filter) assert.deepEqual(state.get('filter')!.get(c), rules.map((r) => r.slice(`-A ${c} `.length)), c);
  assert.deepEqual(state.get('nat')!.get('PREROUTING'), [HOOKS[0].spec]);
  assert.deepEqual(state.get('filter')!.get('FORWARD'), [HOOKS[4].spec]);
});

test('hook edits: nothing when each jump is there once; duplicates and stale variants are replaced in one count-checked edit', () => {
  const ok: Observed = {
    nat: { chains: new Set(), jumps: HOOKS.filter((h) => h.table === 'nat').map((h) => ({ chain: h.chain, spec: h.spec })) },
    filter: { chains: new Set(), jumps: HOOKS.filter((h) => h.table === 'filter').map((h) => ({ chain: h.chain, spec: h.spec })) },
  };
  assert.deepEqual(hookEdits('nat', ok.nat), []);
  assert.deepEqual(hookEdits('filter', ok.filter), []);
  const dup = { chains: new Set<string>(), jumps: [...ok.nat.jumps, { chain: 'PREROUTING', spec: HOOKS[0].spec }] };
  assert.deepEqual(hookEdits('nat', dup), [`-D PREROUTING ${HOOKS[0].spec}`, `-D PREROUTING ${HOOKS[0].spec}`, `-I PREROUTING 1 ${HOOKS[0].spec}`]);
  const old = { chains: new Set<string>(), jumps: [...ok.nat.jumps.filter((j) => j.chain !== 'OUTPUT'), { chain: 'OUTPUT', spec: '-j PODNET-SERVICES' }, { chain: 'INPUT', spec: '-j PODNET-OLD' }] };
  assert.deepEqual(hookEdits('nat', old), ['-D INPUT -j PODNET-OLD', '-D OUTPUT -j PODNET-SERVICES', `-I OUTPUT 1 ${HOOKS[1].spec}`]);
  assert.deepEqual(hookEdits('nat', ok.nat, false), HOOKS.filter((h) => h.table === 'nat').map((h) => `-D ${h.chain} ${h.spec}`));

  // racing syncs: both saw no hook and both inserted one; each then edits from what it reads. The
  // second edit was built on the same read and fails whole: one jump stays, never zero.
  const state = emptyTables();
  const first = renderFamilyFull(renderFamily(model([], []), NODE, 4), EMPTY_OBSERVED).text;
  replay(state, first);
  replay(state, first);
  assert.equal(state.get('nat')!.get('PREROUTING')!.length, 2);
  const seen = observedFromSave(saveText(state));
  const fix = ['nat', 'filter'].map((t) => `*${t}\n${hookEdits(t as 'nat', seen[t as 'nat']).join('\n')}\nCOMMIT\n`).join('');
  replay(state, fix);
  assert.throws(() => replay(state, fix), /no such rule/);
  for (const [t, c] of [['nat', 'PREROUTING'], ['nat', 'OUTPUT'], ['nat', 'POSTROUTING'], ['filter', 'INPUT'], ['filter', 'FORWARD'], ['filter', 'OUTPUT']]) assert.equal(state.get(t)!.get(c)!.length, 1, `${t} ${c}`);
  assert.deepEqual(hookEdits('nat', observedFromSave(saveText(state)).nat), []);
});

test('full sync against what is there: wanted chains are flushed and rewritten, stale PODNET chains flushed and deleted, hooks left alone', () => {
  const m1 = model([svc('a'), svc('b', { clusterIP: '10.96.0.11' })], [slice('a', [{ ip: '10.1.0.5' }]), slice('b', [{ ip: '10.1.0.6' }, { ip: '10.1.0.7' }])]);
  const m2 = model([svc('a')], [slice('a', [{ ip: '10.1.0.5' }, { ip: '10.1.0.9' }])]);
  const state = emptyTables();
  replay(state, familyText(renderAll(m1, NODE), 4));
  state.get('nat')!.get('PREROUTING')!.unshift('-j ACCEPT'); // someone else's rule
  const seen = observedFromSave(saveText(state));
  assert.ok(seen.nat.chains.has(svcChain(port(m1, 'ns/b:80'))));
  const { text } = renderFamilyFull(renderFamily(m2, NODE, 4), seen);
  assert.ok(!/^-I /m.test(text), 'hooks already in place');
  assert.ok(text.includes(`-X ${svcChain(port(m1, 'ns/b:80'))}`));
  replay(state, text);
  const fresh = emptyTables();
  replay(fresh, familyText(renderAll(m2, NODE), 4));
  fresh.get('nat')!.get('PREROUTING')!.unshift('-j ACCEPT');
  assert.deepEqual(podnetChains(state), podnetChains(fresh));
  // cleanup: only podnet's chains and jumps go
  replay(state, cleanupText(observedFromSave(saveText(state))));
  assert.deepEqual(podnetChains(state), new Map([['nat/PREROUTING', ['-j ACCEPT']]]));
  assert.equal(cleanupText(observedFromSave(saveText(state))), '', 'cleanup is idempotent');
});

test('partial sync: only changed service ports; shared chains only when their lines change; ends where a full sync would', () => {
  const base = [svc('a'), svc('b', { clusterIP: '10.96.0.11', type: 'NodePort', ports: [{ port: 80, nodePort: 30080, targetPort: 8080 }] }), svc('c', { clusterIP: '10.96.0.12' })];
  const slices = [slice('a', [{ ip: '10.1.0.5' }, { ip: '10.1.0.6' }]), slice('b', [{ ip: '10.1.1.5' }]), slice('c', [{ ip: '10.1.2.5' }])];
  const m0 = model(base, slices);
  const steps: { what: string; services: RawService[]; slices: RawEndpointSlice[]; expect: (p: ReturnType<typeof planPartialFamily>) => void }[] = [
    {
      what: 'an endpoint of a removed',
      services: base,
      slices: [slice('a', [{ ip: '10.1.0.5' }]), slices[1], slices[2]],
      expect: (p) => {
        assert.deepEqual(p.changed, ['ns/a:80']);
        assert.deepEqual(p.rewroteShared, { services: false, nodeports: false, filter: false });
        assert.ok(p.text.includes(`-X ${sepChain({ id: 'ns/a:80', protocol: 'tcp' }, '10.1.0.6', 8080)}`));
        assert.ok(!p.text.includes('*filter'));
        // SVC (declared + 2 rules) + SEP kept (declared + 2 rules) + SEP removed (flush + -X)
        assert.equal(p.changes, 3 + 3 + 2);
      },
    },
    {
      what: 'c loses its endpoints',
      services: base,
      slices: [slice('a', [{ ip: '10.1.0.5' }]), slices[1]],
      expect: (p) => {
        assert.deepEqual(p.changed, ['ns/c:80']);
        assert.deepEqual(p.rewroteShared, { services: true, nodeports: false, filter: true });
        assert.match(p.text, /-A PODNET-SERVICES -d 10\.96\.0\.12\/32 .* -j REJECT --reject-with tcp-reset/);
      },
    },
    {
      what: 'a new NodePort service d',
      services: [...base, svc('d', { clusterIP: '10.96.0.13', type: 'NodePort', ports: [{ port: 80, nodePort: 30081, targetPort: 8080 }] })],
      slices: [slice('a', [{ ip: '10.1.0.5' }]), slices[1], slice('d', [{ ip: '10.1.3.5' }])],
      expect: (p) => {
        assert.deepEqual(p.changed, ['ns/d:80']);
        assert.deepEqual(p.rewroteShared, { services: true, nodeports: true, filter: false });
      },
    },
    {
      what: 'b removed, c back',
      services: [base[0], base[2], svc('d', { clusterIP: '10.96.0.13', type: 'NodePort', ports: [{ port: 80, nodePort: 30081, targetPort: 8080 }] })],
      slices: [slice('a', [{ ip: '10.1.0.5' }]), slice('c', [{ ip: '10.1.2.7' }]), slice('d', [{ ip: '10.1.3.5' }])],
      expect: (p) => {
        assert.deepEqual(p.changed, ['ns/b:80', 'ns/c:80']);
        assert.ok(p.text.includes(`-X ${extChain({ id: 'ns/b:80', protocol: 'tcp' })}`));
      },
    },
  ];
  const state = emptyTables();
  replay(state, familyText(renderAll(m0, NODE), 4));
  let prev = m0;
  for (const s of steps) {
    const next = model(s.services, s.slices);
    const plan = planPartialFamily(prev, next, NODE, 4);
    s.expect(plan);
    assert.equal(replay(state, plan.text), plan.changes, `${s.what}: changes = lines applied`);
    const fresh = emptyTables();
    replay(fresh, familyText(renderAll(next, NODE), 4));
    assert.deepEqual(podnetChains(state), podnetChains(fresh), `${s.what}: partial ends where full would`);
    assert.equal(planPartialFamily(next, next, NODE, 4).text, '', 'no change, no restore');
    assert.equal(planPartialFamily(prev, next, NODE, 6).text, '', 'the other family is untouched');
    prev = next;
  }
  const always = planPartialFamily(m0, model(base, [slice('a', [{ ip: '10.1.0.5' }]), slices[1], slices[2]]), NODE, 4, { alwaysRewriteShared: true });
  assert.deepEqual(always.rewroteShared, { services: true, nodeports: true, filter: true });
});

test('iptables-save parsing: podnet chains and hook jumps; programmed endpoints per frontend key', () => {
  const m = model(
    [
      svc('web', { type: 'NodePort', externalIPs: ['203.0.113.5'], sessionAffinity: 'ClientIP', ports: [{ port: 80, nodePort: 30080, targetPort: 8080 }] }),
      svc('loc', { clusterIP: '10.96.0.12', type: 'NodePort', externalTrafficPolicy: 'Local', ports: [{ port: 80, nodePort: 30081, targetPort: 8080 }] }),
      svc('none', { clusterIP: '10.96.0.13' }),
      svc('ds', { clusterIPs: ['10.96.0.14', 'fd00:96::14'], ipFamilyPolicy: 'RequireDualStack', ports: [{ port: 53, protocol: 'UDP' }] }),
    ],
    [
      slice('web', [{ ip: '10.1.0.5', node: 'node-a' }, { ip: '10.1.0.6' }]),
      slice('loc', [{ ip: '10.1.2.5', node: 'node-a' }, { ip: '10.1.2.6' }]),
      slice('ds', [{ ip: '10.1.3.5' }], { ports: [{ port: 5353, protocol: 'UDP' }] }),
      slice('ds', [{ ip: 'fd00:1::5' }], { v6: true, ports: [{ port: 5353, protocol: 'UDP' }] }),
    ],
    { ...NODE, nodeIPs: ['192.168.1.10', '192.168.2.10'] },
  );
  const node = { ...NODE, nodeIPs: ['192.168.1.10', '192.168.2.10'] };
  const v4 = emptyTables();
  replay(v4, familyText(renderAll(m, node), 4));
  const v6 = emptyTables();
  replay(v6, familyText(renderAll(m, node), 6));
  // what iptables-save prints differs in details (options it adds, quoting); use that form for one chain
  const save4 = saveText(v4).replace(/-m recent --rcheck --seconds (\d+) --reap --name (\S+)/g, '-m recent --rcheck --seconds $1 --reap --name $2 --mask 255.255.255.255 --rsource');
  const seen = observedFromSave('# Generated by iptables-nft-save v1.8.9\n' + save4 + '*mangle\n:PODNET-NOT-MINE - [0:0]\nCOMMIT\n');
  assert.equal(seen.nat.jumps.length, 3);
  assert.equal(seen.filter.jumps.length, 3);
  assert.ok(!seen.nat.chains.has('PODNET-NOT-MINE'));
  const got = programmedFromSave(saveText(v6), programmedFromSave(save4));
  const want = new Map<string, string[]>([
    ['tcp/10.96.0.10/80', ['10.1.0.5/8080', '10.1.0.6/8080']],
    ['tcp/203.0.113.5/80', ['10.1.0.5/8080', '10.1.0.6/8080']],
    ['tcp/nodeport/30080', ['10.1.0.5/8080', '10.1.0.6/8080']],
    ['tcp/10.96.0.12/80', ['10.1.2.5/8080', '10.1.2.6/8080']],
    ['tcp/nodeport/30081', ['10.1.2.5/8080']],
    ['udp/10.96.0.14/53', ['10.1.3.5/5353']],
    ['udp/fd00:96::14/53', ['fd00:1::5/5353']],
  ]);
  assert.deepEqual(new Map([...got].map(([k, v]) => [k, [...v].sort()])), want);
  assert.equal(got.has('tcp/10.96.0.13/80'), false, 'rejected frontends have no endpoints programmed');
  assert.deepEqual(tokenize('-m comment --comment "a \\"b\\" c" -j X'), ['-m', 'comment', '--comment', 'a "b" c', '-j', 'X']);
});

test('engine: the binaries per backend and family', () => {
  assert.equal(new IptablesEngine().tool(4, 'restore'), 'iptables-nft-restore');
  assert.equal(new IptablesEngine({ iptablesBackend: 'legacy' }).tool(6, 'save'), 'ip6tables-legacy-save');
  assert.equal(new IptablesEngine({ iptablesBackend: 'nft' }).tool(6, 'restore'), 'ip6tables-nft-restore');
  assert.equal(new IptablesEngine().mode, 'iptables');
});
