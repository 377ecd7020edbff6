import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ERR_HOSTPORT_IN_USE,
  HOSTPORT_RULE_COUNTS,
  conflictError,
  conntrackAddArgs,
  conntrackDelArgs,
  conntrackDeleteOk,
  findConflicts,
  hostportOwner,
  hostportOwnerPrefix,
  missingElements,
  ownedBy,
  parseHostportTable,
  parsePortMappings,
  planHostports,
  renderHostportAdd,
  renderHostportBase,
  renderHostportDelete,
  type HostportElement,
} from '../../src/cni/hostport.js';
import { KernelError } from '../../src/kernel/exec.js';
import { hostportAdd, hostportRemoveOwners } from '../../src/cni/hostport-apply.js';
import type { NetnsRef, NftRunner } from '../../src/kernel/types.js';

const code7 = (field: string) => (e: { code?: number; message: string }) => e.code === 7 && e.message.startsWith(field);
const pm = (...m: unknown[]) => parsePortMappings({ portMappings: m });

test('portMappings parse as the portmap plugin takes them', () => {
  assert.deepEqual(parsePortMappings({}), []);
  assert.deepEqual(parsePortMappings(undefined), []);
  assert.deepEqual(pm({ hostPort: 8080, containerPort: 80, protocol: 'tcp' }), [{ hostPort: 8080, containerPort: 80, protocol: 'tcp', index: 0 }]);
  // protocol case-insensitive, missing = tcp; 0.0.0.0 / :: restrict the family only
  assert.deepEqual(pm({ hostPort: 1, containerPort: 2, protocol: 'UDP' })[0].protocol, 'udp');
  assert.deepEqual(pm({ hostPort: 1, containerPort: 2 })[0].protocol, 'tcp');
  assert.deepEqual(pm({ hostPort: 1, containerPort: 2, hostIP: '0.0.0.0' })[0], { hostPort: 1, containerPort: 2, protocol: 'tcp', family: 4, index: 0 });
  assert.deepEqual(pm({ hostPort: 1, containerPort: 2, hostIP: '::' })[0].family, 6);
  assert.deepEqual(pm({ hostPort: 1, containerPort: 2, hostIP: 'FD00:0:0::1' })[0], { hostPort: 1, containerPort: 2, protocol: 'tcp', hostIP: 'fd00::1', family: 6, index: 0 });
  assert.deepEqual(pm({ hostPort: 1, containerPort: 2, hostIP: '' })[0].hostIP, undefined);
  // exact duplicates collapse
  assert.equal(pm({ hostPort: 8080, containerPort: 80, protocol: 'tcp' }, { hostPort: 8080, containerPort: 80, protocol: 'tcp' }).length, 1);
  // same port, different protocols or addresses: fine
  assert.equal(pm({ hostPort: 53, containerPort: 53, protocol: 'tcp' }, { hostPort: 53, containerPort: 53, protocol: 'udp' }).length, 2);
  assert.equal(pm({ hostPort: 80, containerPort: 1, hostIP: '10.0.0.1' }, { hostPort: 80, containerPort: 2, hostIP: '10.0.0.2' }).length, 2);
});

test('portMappings errors are code 7 and name the field', () => {
  assert.throws(() => parsePortMappings({ portMappings: { hostPort: 1 } }), code7('runtimeConfig.portMappings:'));
  assert.throws(() => pm('8080:80'), code7('runtimeConfig.portMappings[0]:'));
  assert.throws(() => pm({ hostPort: 0, containerPort: 80 }), code7('runtimeConfig.portMappings[0].hostPort'));
  assert.throws(() => pm({ hostPort: 8080, containerPort: 80 }, { hostPort: 65536, containerPort: 80 }), code7('runtimeConfig.portMappings[1].hostPort'));
  assert.throws(() => pm({ hostPort: '8080', containerPort: 80 }), code7('runtimeConfig.portMappings[0].hostPort'));
  assert.throws(() => pm({ hostPort: 8080, containerPort: 1.5 }), code7('runtimeConfig.portMappings[0].containerPort'));
  assert.throws(() => pm({ hostPort: 8080, containerPort: 80, protocol: 'icmp' }), code7('runtimeConfig.portMappings[0].protocol'));
  assert.throws(() => pm({ hostPort: 8080, containerPort: 80, protocol: 6 }), code7('runtimeConfig.portMappings[0].protocol'));
  assert.throws(() => pm({ hostPort: 8080, containerPort: 80, hostIP: '10.0.0' }), code7('runtimeConfig.portMappings[0].hostIP'));
  assert.throws(() => pm({ hostPort: 8080, containerPort: 80, hostIP: '127.0.0.1' }), (e: Error & { code?: number }) => e.code === 7 && /loopback/.test(e.message));
  assert.throws(() => pm({ hostPort: 8080, containerPort: 80, hostIP: '::1' }), code7('runtimeConfig.portMappings[0].hostIP'));
  // one hostPort to two container ports; a v4 wildcard overlaps 0.0.0.0 for IPv4
  assert.throws(() => pm({ hostPort: 8080, containerPort: 80 }, { hostPort: 8080, containerPort: 81 }), code7('runtimeConfig.portMappings[1].hostPort'));
  assert.throws(() => pm({ hostPort: 8080, containerPort: 80 }, { hostPort: 8080, containerPort: 81, hostIP: '0.0.0.0' }), code7('runtimeConfig.portMappings[1].hostPort'));
});

test('owner comments: network:containerID/ifname, hashed when it cannot be', () => {
  assert.equal(hostportOwner('podnet', 'c1', 'eth0'), 'podnet:c1/eth0');
  const long = hostportOwner('podnet', 'a'.repeat(64), 'eth0');
  assert.equal(long, `podnet:${'a'.repeat(64)}/eth0`);
  const odd = hostportOwner('podnet', 'c1', 'e"th');
  assert.match(odd, /^podnet:#[0-9a-f]{24}$/);
  assert.equal(odd, hostportOwner('podnet', 'c1', 'e"th'), 'deterministic');
  const longNet = 'n'.repeat(60);
  assert.match(hostportOwnerPrefix(longNet), /^#[0-9a-f]{16}:$/);
  assert.ok(hostportOwner(longNet, 'b'.repeat(120), 'eth0').length <= 127);
  assert.ok(hostportOwner(longNet, 'c1', 'eth0').startsWith(hostportOwnerPrefix(longNet)));
});

const MAPPINGS = pm(
  { hostPort: 8080, containerPort: 80, protocol: 'tcp' },
  { hostPort: 8053, containerPort: 53, protocol: 'udp' },
  { hostPort: 9000, containerPort: 90, protocol: 'sctp', hostIP: '192.168.90.1' },
  { hostPort: 9001, containerPort: 91, protocol: 'tcp', hostIP: 'fd90::1' },
);

test('plan: each mapping for each pod family; hostIP restricts the family', () => {
  const plan = planHostports(MAPPINGS, ['10.77.1.5/24', 'fd77:1::5/64'], 'n:c1/eth0');
  assert.deepEqual(
    plan.elements.map((e) => `${e.map} ${e.hostIP ?? '*'} ${e.protocol} ${e.hostPort} ${e.podIP} ${e.containerPort} ${e.owner}`),
    [
      'hostports4 * tcp 8080 10.77.1.5 80 n:c1/eth0',
      'hostports6 * tcp 8080 fd77:1::5 80 n:c1/eth0',
      'hostports4 * udp 8053 10.77.1.5 53 n:c1/eth0',
      'hostports6 * udp 8053 fd77:1::5 53 n:c1/eth0',
      'hostipports4 192.168.90.1 sctp 9000 10.77.1.5 90 n:c1/eth0',
      'hostipports6 fd90::1 tcp 9001 fd77:1::5 91 n:c1/eth0',
    ],
  );
  assert.deepEqual(plan.hairpin, [
    { set: 'hairpin4', podIP: '10.77.1.5', owner: 'n:c1/eth0' },
    { set: 'hairpin6', podIP: 'fd77:1::5', owner: 'n:c1/eth0' },
  ]);
  // v4-only pod: wildcards only in v4; a v6 hostIP is a config error naming the field
  const v4 = planHostports(MAPPINGS.slice(0, 3), ['10.77.1.5/24'], 'o');
  assert.deepEqual(v4.elements.map((e) => e.map), ['hostports4', 'hostports4', 'hostipports4']);
  assert.throws(() => planHostports(MAPPINGS, ['10.77.1.5/24'], 'o'), code7('runtimeConfig.portMappings[3].hostIP'));
  assert.throws(() => planHostports(pm({ hostPort: 1, containerPort: 1, hostIP: '::' }), ['10.0.0.1'], 'o'), code7('runtimeConfig.portMappings[0].hostIP'));
});

test('render: shared layout flushed and rewritten whole, one add/delete/add per element with the owner', () => {
  const plan = planHostports(MAPPINGS, ['10.77.1.5/24', 'fd77:1::5/64'], 'n:c1/eth0');
  const s = renderHostportAdd(plan);
  assert.ok(s.endsWith('\n'));
  for (const l of renderHostportBase()) assert.ok(s.includes(l));
  assert.ok(!/table (ip|ip6|inet (?!podnet-hostport\b))/.test(s), 'touches only inet podnet-hostport');
  for (const chain of Object.keys(HOSTPORT_RULE_COUNTS)) {
    assert.ok(s.includes(`flush chain inet podnet-hostport ${chain}\n`), `flushes ${chain}`);
    assert.equal(s.split('\n').filter((l) => l.startsWith(`add rule inet podnet-hostport ${chain} `)).length, HOSTPORT_RULE_COUNTS[chain], chain);
  }
  // the lookups: one map per family and scope, keyed as specified
  assert.match(s, /dnat ip to meta l4proto \. th dport map @hostports4/);
  assert.match(s, /dnat ip6 to ip6 daddr \. meta l4proto \. th dport map @hostipports6/);
  assert.match(s, /prerouting fib daddr type local jump hostports/);
  assert.match(s, /output ip daddr 127\.0\.0\.0\/8 return/);
  assert.match(s, /ct status dnat ip saddr \. ip daddr @hairpin4 masquerade/);
  const el = s.split('\n').filter((l) => / element /.test(l));
  assert.deepEqual(el.slice(0, 3), [
    'add element inet podnet-hostport hostports4 { tcp . 8080 : 10.77.1.5 . 80 }',
    'delete element inet podnet-hostport hostports4 { tcp . 8080 }',
    'add element inet podnet-hostport hostports4 { tcp . 8080 comment "n:c1/eth0" : 10.77.1.5 . 80 }',
  ]);
  assert.ok(el.includes('add element inet podnet-hostport hostipports4 { 192.168.90.1 . sctp . 9000 comment "n:c1/eth0" : 10.77.1.5 . 90 }'));
  assert.ok(el.includes('add element inet podnet-hostport hostipports6 { fd90::1 . tcp . 9001 comment "n:c1/eth0" : fd77:1::5 . 91 }'));
  assert.ok(el.includes('add element inet podnet-hostport hostports6 { udp . 8053 comment "n:c1/eth0" : fd77:1::5 . 53 }'));
  assert.ok(el.includes('add element inet podnet-hostport hairpin6 { fd77:1::5 . fd77:1::5 comment "n:c1/eth0" }'));
  assert.equal(el.length, 3 * (plan.elements.length + plan.hairpin.length));
  assert.throws(() => renderHostportAdd({ ...plan, owner: 'x" ; flush ruleset' }), /refusing/);
  assert.equal(renderHostportDelete([], []), '');
  assert.equal(
    renderHostportDelete(plan.elements.slice(4, 5), plan.hairpin.slice(0, 1)),
    'delete element inet podnet-hostport hostipports4 { 192.168.90.1 . sctp . 9000 }\ndelete element inet podnet-hostport hairpin4 { 10.77.1.5 . 10.77.1.5 }\n',
  );
});

// what nft 1.0.6 prints for `nft -j list table inet podnet-hostport` (trimmed)
const LISTED = {
  nftables: [
    { metainfo: { version: '1.0.6', json_schema_version: 1 } },
    { table: { family: 'inet', name: 'podnet-hostport', handle: 1 } },
    {
      map: {
        family: 'inet', name: 'hostports4', table: 'podnet-hostport', type: ['inet_proto', 'inet_service'], handle: 5, map: 'ipv4_addr . inet_service',
        elem: [
          [{ elem: { val: { concat: ['udp', 8053] }, comment: 'n:c1/eth0' } }, { concat: ['10.1.0.5', 53] }],
          [{ elem: { val: { concat: ['tcp', 8080] }, comment: 'n:c1/eth0' } }, { concat: ['10.1.0.5', 80] }],
          [{ concat: ['tcp', 81] }, { concat: ['10.1.0.9', 81] }],
        ],
      },
    },
    {
      map: {
        family: 'inet', name: 'hostipports6', table: 'podnet-hostport', type: ['ipv6_addr', 'inet_proto', 'inet_service'], handle: 8, map: 'ipv6_addr . inet_service',
        elem: [[{ elem: { val: { concat: ['fd00::1', 'tcp', 9001] }, comment: 'n:c2/eth0' } }, { concat: ['fd01::5', 91] }]],
      },
    },
    { set: { family: 'inet', name: 'hairpin4', table: 'podnet-hostport', type: ['ipv4_addr', 'ipv4_addr'], handle: 9, elem: [{ elem: { val: { concat: ['10.1.0.5', '10.1.0.5'] }, comment: 'n:c1/eth0' } }] } },
    { chain: { family: 'inet', table: 'podnet-hostport', name: 'hostports', handle: 10 } },
    { chain: { family: 'inet', table: 'podnet-hostport', name: 'prerouting', handle: 11, type: 'nat', hook: 'prerouting', prio: -100, policy: 'accept' } },
    { rule: { family: 'inet', table: 'podnet-hostport', chain: 'hostports', handle: 20, expr: [] } },
    { rule: { family: 'inet', table: 'podnet-hostport', chain: 'hostports', handle: 21, expr: [] } },
    { rule: { family: 'inet', table: 'podnet-hostport', chain: 'prerouting', handle: 22, expr: [] } },
  ],
};

test('parse the listed table: elements with owners, hairpin entries, rules per chain', () => {
  const t = parseHostportTable(LISTED);
  assert.deepEqual(t.elements, [
    { map: 'hostports4', protocol: 'udp', hostPort: 8053, podIP: '10.1.0.5', containerPort: 53, owner: 'n:c1/eth0' },
    { map: 'hostports4', protocol: 'tcp', hostPort: 8080, podIP: '10.1.0.5', containerPort: 80, owner: 'n:c1/eth0' },
    { map: 'hostports4', protocol: 'tcp', hostPort: 81, podIP: '10.1.0.9', containerPort: 81 },
    { map: 'hostipports6', hostIP: 'fd00::1', protocol: 'tcp', hostPort: 9001, podIP: 'fd01::5', containerPort: 91, owner: 'n:c2/eth0' },
  ]);
  assert.deepEqual(t.hairpin, [{ set: 'hairpin4', podIP: '10.1.0.5', owner: 'n:c1/eth0' }]);
  assert.deepEqual(t.rules, { hostports: 2, prerouting: 1 });
  assert.deepEqual(parseHostportTable(undefined), { elements: [], hairpin: [], rules: {} });
  const mine = ownedBy(t, (o) => o === 'n:c1/eth0');
  assert.equal(mine.elements.length, 2);
  assert.equal(mine.hairpin.length, 1);
  assert.equal(ownedBy(t, (o) => o.startsWith('n:')).elements.length, 3, 'elements without owner are never anyone\'s');
});

test('conflicts: same key, or wildcard against hostIP in one family; never our own', () => {
  const present = parseHostportTable(LISTED).elements;
  const mk = (e: Partial<HostportElement>): HostportElement => ({ map: 'hostports4', protocol: 'tcp', hostPort: 8080, podIP: '10.1.0.7', containerPort: 80, owner: 'n:c3/eth0', index: 0, ...e });
  assert.equal(findConflicts([mk({})], present, 'n:c3/eth0').length, 1);
  assert.equal(findConflicts([mk({})], present, 'n:c1/eth0').length, 0, 'our own element');
  assert.equal(findConflicts([mk({ protocol: 'udp' })], present, 'n:c3/eth0').length, 0);
  assert.equal(findConflicts([mk({ map: 'hostports6', podIP: 'fd01::7' })], present, 'n:c3/eth0').length, 0, 'other family');
  assert.equal(findConflicts([mk({ map: 'hostipports4', hostIP: '192.168.90.1' })], present, 'n:c3/eth0').length, 1, 'hostIP against a wildcard');
  assert.equal(findConflicts([mk({ map: 'hostports6', hostPort: 9001, podIP: 'fd01::7' })], present, 'n:c3/eth0').length, 1, 'wildcard against a hostIP');
  assert.equal(findConflicts([mk({ map: 'hostipports6', hostIP: 'fd00::2', hostPort: 9001 })], present, 'n:c3/eth0').length, 0, 'two different hostIPs');
  const err = conflictError(findConflicts([mk({})], present, 'n:c3/eth0')[0]);
  assert.equal(err.code, ERR_HOSTPORT_IN_USE);
  assert.equal(err.message, 'runtimeConfig.portMappings[0]: hostPort 0.0.0.0:8080/tcp is already in use by attachment n:c1/eth0 (→ 10.1.0.5:80)');
});

test('CHECK: what is missing, elements, hairpin and shared rules', () => {
  const t = parseHostportTable(LISTED);
  const plan = planHostports(pm({ hostPort: 8080, containerPort: 80, protocol: 'tcp' }, { hostPort: 8053, containerPort: 53, protocol: 'udp' }), ['10.1.0.5/24'], 'n:c1/eth0');
  assert.deepEqual(missingElements(plan, t), ['chain hostports (2 of 4 rules)', 'chain output (0 of 3 rules)', 'chain postrouting (0 of 2 rules)']);
  const full = { ...t, rules: { ...HOSTPORT_RULE_COUNTS } };
  assert.deepEqual(missingElements(plan, full), []);
  const other = planHostports(pm({ hostPort: 8080, containerPort: 80 }), ['10.1.0.5/24'], 'n:c9/eth0');
  assert.deepEqual(missingElements(other, full), ['0.0.0.0:8080/tcp → 10.1.0.5:80', 'hairpin 10.1.0.5']);
});

test('conntrack: ADD flushes flows to the hostPort, DEL those whose reply comes from the pod', () => {
  const plan = planHostports(MAPPINGS, ['10.77.1.5/24', 'fd77:1::5/64'], 'o');
  assert.deepEqual(conntrackAddArgs(plan.elements), [
    ['conntrack', '-D', '-f', 'ipv4', '-p', 'udp', '--orig-port-dst', '8053'],
    ['conntrack', '-D', '-f', 'ipv6', '-p', 'udp', '--orig-port-dst', '8053'],
  ]);
  const hip = planHostports(pm({ hostPort: 5353, containerPort: 53, protocol: 'udp', hostIP: '192.168.90.1' }), ['10.77.1.5'], 'o');
  assert.deepEqual(conntrackAddArgs(hip.elements), [['conntrack', '-D', '-f', 'ipv4', '-p', 'udp', '--orig-dst', '192.168.90.1', '--orig-port-dst', '5353']]);
  assert.deepEqual(conntrackDelArgs([...plan.elements, ...plan.elements]), [
    ['conntrack', '-D', '-f', 'ipv4', '-p', 'udp', '--reply-src', '10.77.1.5', '--reply-port-src', '53'],
    ['conntrack', '-D', '-f', 'ipv6', '-p', 'udp', '--reply-src', 'fd77:1::5', '--reply-port-src', '53'],
  ]);
  assert.equal(conntrackDeleteOk(0, 'conntrack v1.4.7 (conntrack-tools): 2 flow entries have been deleted.'), true);
  assert.equal(conntrackDeleteOk(1, 'conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.'), true);
  assert.equal(conntrackDeleteOk(1, 'conntrack v1.4.7 (conntrack-tools): Operation failed: Operation not permitted'), false);
  assert.equal(conntrackDeleteOk(2, ''), false);
});

// hostportAdd's decisions against a scripted nft: what it runs, what it answers

class FakeNft implements NftRunner {
  scripts: string[] = [];
  constructor(
    private readonly fail: (script: string, n: number) => string | undefined,
    public listed: unknown,
  ) {}
  async run(_ns: NetnsRef, script: string): Promise<void> {
    this.scripts.push(script);
    const err = this.fail(script, this.scripts.length);
    if (err) throw new KernelError({ argv: ['nft', '-f', '-'], exitCode: 1, stderr: `Error: Could not process rule: ${err}`, op: 'nft script' });
  }
  async listJson(): Promise<unknown> {
    return this.listed;
  }
}

const HOST: NetnsRef = { kind: 'current' };

test('hostportAdd: one transaction when free; 107 naming the holder when taken, nothing registered', async () => {
  const plan = planHostports(pm({ hostPort: 8080, containerPort: 80 }), ['10.1.0.7'], 'n:c3/eth0');
  const free = new FakeNft(() => undefined, undefined);
  let applied = 0;
  await hostportAdd(free, HOST, plan, () => applied++);
  assert.equal(free.scripts.length, 1);
  assert.equal(applied, 1);

  const taken = new FakeNft(() => 'File exists', LISTED);
  applied = 0;
  await assert.rejects(hostportAdd(taken, HOST, plan, () => applied++), (e: Error & { code?: number }) => e.code === ERR_HOSTPORT_IN_USE && /in use by attachment n:c1\/eth0/.test(e.message));
  assert.equal(applied, 0, 'nothing to undo: the transaction did not commit');
  assert.equal(taken.scripts.length, 1);
});

test('hostportAdd: a hostIP mapping committed against another wildcard is refused after the read-back', async () => {
  const plan = planHostports(pm({ hostPort: 8080, containerPort: 80, hostIP: '192.168.90.1' }), ['10.1.0.7'], 'n:c3/eth0');
  const nft = new FakeNft(() => undefined, LISTED);
  let applied = 0;
  await assert.rejects(hostportAdd(nft, HOST, plan, () => applied++), (e: Error & { code?: number }) => e.code === ERR_HOSTPORT_IN_USE);
  assert.equal(applied, 1, 'the caller registered the removal before the refusal');
});

test('hostportAdd: its own stale elements with another target are dropped and the transaction retried once', async () => {
  // n:c1/eth0 already holds tcp 8080 → 10.1.0.5:80 and now asks for → 10.1.0.5:81
  const plan = planHostports(pm({ hostPort: 8080, containerPort: 81 }), ['10.1.0.5'], 'n:c1/eth0');
  const nft = new FakeNft((s, n) => (n === 1 && s.startsWith('table') ? 'File exists' : undefined), LISTED);
  await hostportAdd(nft, HOST, plan, () => {});
  assert.equal(nft.scripts.length, 3);
  assert.match(nft.scripts[1], /^delete element inet podnet-hostport hostports4 \{ udp \. 8053 \}\ndelete element inet podnet-hostport hostports4 \{ tcp \. 8080 \}\ndelete element inet podnet-hostport hairpin4/);
  assert.equal(nft.scripts[2], nft.scripts[0]);
});

test('hostportRemoveOwners: deletes exactly the owner\'s elements, nothing when there are none', async () => {
  const nft = new FakeNft(() => undefined, LISTED);
  const r = await hostportRemoveOwners(nft, HOST, (o) => o === 'n:c2/eth0');
  assert.deepEqual(nft.scripts, ['delete element inet podnet-hostport hostipports6 { fd00::1 . tcp . 9001 }\n']);
  assert.equal(r.elements.length, 1);
  const none = new FakeNft(() => undefined, undefined);
  assert.deepEqual(await hostportRemoveOwners(none, HOST, () => true), { elements: [], hairpin: [] });
  assert.deepEqual(none.scripts, []);
});
