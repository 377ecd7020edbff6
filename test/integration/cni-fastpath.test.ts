// The CNI hot path through the agent: per-pod masquerade and hostPort elements go over nfnetlink
// in the agent, the shared rules are written once and checked cheaply. 20 concurrent first ADDs
// leave exactly one copy of each shared rule; a ruleset flushed by hand is rewritten by the next
// ADD; a DEL whose elements are already gone succeeds and leaves nothing.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CniHarness } from '../helpers/cni.js';
import { HOSTPORT_RULE_COUNTS, parseHostportTable, type HostportTable } from '../../src/cni/hostport.js';

const N = 20;
type Conf = Record<string, unknown>;

function hostports(h: CniHarness): HostportTable {
  const out = h.exec(h.nodeNs, ['nft', '-j', 'list', 'table', 'inet', 'podnet-hostport'], true);
  return out ? parseHostportTable(JSON.parse(out)) : { elements: [], hairpin: [], rules: {} };
}

/** Elements of a masquerade pods set as `ip owner` lines (nft's text: `10.1.0.2 comment "o"`). */
function masqElements(h: CniHarness, set = 'masq_pods4'): { ip: string; owner?: string }[] {
  const out = h.exec(h.nodeNs, ['nft', '-j', 'list', 'set', 'inet', 'podnet', set], true);
  if (!out) return [];
  const items = (JSON.parse(out) as { nftables: { set?: { elem?: unknown[] } }[] }).nftables;
  const elems = items.flatMap((i) => i.set?.elem ?? []);
  return elems.map((e) => (typeof e === 'string' ? { ip: e } : { ip: (e as { elem: { val: string } }).elem.val, owner: (e as { elem: { comment?: string } }).elem.comment }));
}

function masqRules(h: CniHarness): number {
  const chain = h.exec(h.nodeNs, ['nft', 'list', 'chain', 'inet', 'podnet', 'cni-masquerade'], true);
  return (chain.match(/masquerade comment "podnet ipMasq"/g) ?? []).length;
}

function assertHostportRulesOnce(t: HostportTable): void {
  for (const [chain, n] of Object.entries(HOSTPORT_RULE_COUNTS)) assert.equal(t.rules[chain], n, `chain ${chain}: ${t.rules[chain]} rules, expected ${n}`);
}

describe('CNI fast path through the agent: nftables over nfnetlink', () => {
  let h: CniHarness;
  let conf: Conf;
  let dataDir: string;
  const withPort = (c: Conf, hostPort: number): Conf => ({ ...c, runtimeConfig: { portMappings: [{ hostPort, containerPort: 80, protocol: 'tcp' }] } });
  const add = (p: string, id: string, hostPort: number) => h.invoke({ command: 'ADD', containerId: id, netns: h.podPath(p), ifname: 'eth0', conf: withPort(conf, hostPort) });
  const del = (p: string, id: string, hostPort: number, prevResult?: unknown) =>
    h.invoke({ command: 'DEL', containerId: id, netns: h.podPath(p), ifname: 'eth0', conf: { ...withPort(conf, hostPort), ...(prevResult ? { prevResult } : {}) } });

  let nftLog: string;
  /** the nft commands the agent ran so far */
  const nftRuns = (): string[] => (existsSync(nftLog) ? readFileSync(nftLog, 'utf8').split('\n').filter(Boolean) : []);

  before(async () => {
    h = new CniHarness();
    // an `nft` first in the agent's PATH that logs each run, then runs the real one
    const wrapDir = join(h.tmp, 'nft-wrap');
    nftLog = join(h.tmp, 'nft-runs.log');
    mkdirSync(wrapDir);
    const realNft = ['/usr/sbin/nft', '/sbin/nft', '/usr/bin/nft'].find((p) => existsSync(p));
    assert.ok(realNft, 'nft is installed');
    writeFileSync(join(wrapDir, 'nft'), `#!/bin/sh\necho "$*" >> '${nftLog}'\nexec ${realNft} "$@"\n`);
    chmodSync(join(wrapDir, 'nft'), 0o755);
    dataDir = join(h.tmp, 'ipam');
    conf = {
      cniVersion: '1.0.0',
      name: 'tfast',
      type: 'podnet',
      bridge: 'pnfast0',
      isGateway: true,
      isDefaultGateway: true,
      ipMasq: true,
      capabilities: { portMappings: true },
      ipam: { type: 'podnet-ipam', ranges: [[{ subnet: '10.78.0.0/24' }]], dataDir },
    };
    await h.startAgent({ env: { PATH: `${wrapDir}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}` } });
  });
  after(() => h.cleanup());

  test(`${N} concurrent first ADDs: the masquerade and hostPort rules exist exactly once, every pod has its elements; ${N} concurrent DELs remove them`, async () => {
    const pods = Array.from({ length: N }, (_, i) => h.pod(`f${i}`));
    const res = await Promise.all(pods.map((p, i) => add(p, `fast${i}`, 21000 + i)));
    for (const r of res) assert.equal(r.code, 0, r.stdout + r.stderr);
    // no nft process per pod: the two shared structures, each written once for all 20 ADDs
    // (plus whatever the agent's own start-up ran)
    const perPod = nftRuns().filter((l) => l === '-f -');
    assert.equal(perPod.length, 2, `nft runs of the agent: ${nftRuns().join(' | ')}`);
    assert.equal(masqRules(h), 2);
    const t = hostports(h);
    assertHostportRulesOnce(t);
    const ips = res.map((r) => (r.json as { ips: { address: string }[] }).ips[0].address.split('/')[0]);
    const masq = masqElements(h);
    assert.deepEqual(masq.map((m) => m.ip).sort(), [...ips].sort());
    assert.equal(new Set(masq.map((m) => m.owner)).size, N, 'each element carries its own owner');
    assert.deepEqual(t.elements.map((e) => `${e.hostPort}>${e.podIP}`).sort(), ips.map((ip, i) => `${21000 + i}>${ip}`).sort());
    // half of the DELs with prevResult (elements found by key), half without (found by owner)
    const dels = await Promise.all(pods.map((p, i) => del(p, `fast${i}`, 21000 + i, i % 2 ? res[i].json : undefined)));
    for (const d of dels) assert.equal(d.code, 0, d.stdout + d.stderr);
    assert.equal(nftRuns().filter((l) => l === '-f -').length, 2, 'DEL spawns no nft');
    assert.deepEqual(masqElements(h), []);
    const after = hostports(h);
    assert.deepEqual([after.elements, after.hairpin], [[], []]);
    assertHostportRulesOnce(after);
    assert.deepEqual(h.reservations(dataDir, 'tfast'), []);
  });

  test('after `nft flush ruleset` by hand, the next ADD rewrites what it needs and works', async () => {
    const a = h.pod('fa');
    const b = h.pod('fb');
    const ra = await add(a, 'flushA', 22000);
    assert.equal(ra.code, 0, ra.stdout);
    h.exec(h.nodeNs, ['nft', 'flush', 'ruleset']);
    assert.equal(masqRules(h), 0);
    const rb = await add(b, 'flushB', 22001);
    assert.equal(rb.code, 0, rb.stdout + rb.stderr);
    assert.equal(masqRules(h), 2);
    const ipB = (rb.json as { ips: { address: string }[] }).ips[0].address.split('/')[0];
    assert.ok(masqElements(h).some((m) => m.ip === ipB), 'the new pod is masqueraded');
    const t = hostports(h);
    assertHostportRulesOnce(t);
    assert.ok(t.elements.some((e) => e.hostPort === 22001 && e.podIP === ipB));
    // the nets set came back with the structure: traffic to the pod network is not masqueraded
    const nets = h.exec(h.nodeNs, ['nft', 'list', 'set', 'inet', 'podnet', 'masq_nets4']);
    assert.match(nets, /10\.78\.0\.0\/24/);
    assert.ok(h.ping(b, '10.78.0.1'), 'the pod reaches its gateway');
    for (const [p, id, port, r] of [[a, 'flushA', 22000, ra], [b, 'flushB', 22001, rb]] as const) {
      const d = await del(p, id, port, r.json);
      assert.equal(d.code, 0, d.stdout);
    }
    assert.deepEqual(masqElements(h), []);
    assert.deepEqual(hostports(h).elements, []);
  });

  test('DEL of a pod whose elements are already gone succeeds and leaves nothing', async () => {
    const p = h.pod('fg');
    const r = await add(p, 'gone', 23000);
    assert.equal(r.code, 0, r.stdout);
    const ip = (r.json as { ips: { address: string }[] }).ips[0].address.split('/')[0];
    h.exec(h.nodeNs, ['nft', 'delete', 'element', 'inet', 'podnet', 'masq_pods4', `{ ${ip} }`]);
    h.exec(h.nodeNs, ['nft', 'delete', 'element', 'inet', 'podnet-hostport', 'hostports4', '{ tcp . 23000 }']);
    h.exec(h.nodeNs, ['nft', 'delete', 'element', 'inet', 'podnet-hostport', 'hairpin4', `{ ${ip} . ${ip} }`]);
    for (const prev of [r.json, undefined]) {
      const d = await del(p, 'gone', 23000, prev);
      assert.equal(d.code, 0, d.stdout + d.stderr);
    }
    assert.deepEqual(masqElements(h), []);
    assert.deepEqual(hostports(h).elements, []);
    assert.deepEqual(h.reservations(dataDir, 'tfast'), []);
    assert.deepEqual(h.nodeLinks().filter((l) => l.ifname.startsWith('veth')), []);
  });

  test('a DEL leaves another pod\'s element alone even when its prevResult names that address', async () => {
    const a = h.pod('fo');
    const r = await add(a, 'owner', 23100);
    assert.equal(r.code, 0, r.stdout);
    // a stale DEL of another container that claims the same address
    const d = await h.invoke({ command: 'DEL', containerId: 'stale', netns: h.podPath(h.pod('fs')), ifname: 'eth0', conf: { ...conf, prevResult: r.json } });
    assert.equal(d.code, 0, d.stdout);
    const ip = (r.json as { ips: { address: string }[] }).ips[0].address.split('/')[0];
    assert.ok(masqElements(h).some((m) => m.ip === ip), 'the owner\'s masquerade element survives');
    assert.ok(hostports(h).elements.some((e) => e.hostPort === 23100));
    const d2 = await del(a, 'owner', 23100, r.json);
    assert.equal(d2.code, 0, d2.stdout);
    assert.deepEqual(masqElements(h), []);
  });
});
