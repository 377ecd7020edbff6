// hostPort through the installed executable in real namespaces: a client host reaches a pod's
// TCP and UDP servers on the node's address (IPv4 and IPv6), the node and the pod itself too;
// concurrent first ADDs leave one copy of each shared rule; a taken port fails with 107 and
// leaves nothing; DEL and GC remove exactly their elements and the UDP conntrack entries.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { CniHarness, type CniOutcome } from '../helpers/cni.js';
import { HOSTPORT_RULE_COUNTS, parseHostportTable, type HostportTable } from '../../src/cni/hostport.js';

type Conf = Record<string, unknown>;
type Result = { ips: { address: string }[] };

const NODE4 = '192.168.90.1';
const NODE6 = 'fd90::1';
const CLIENT4 = '192.168.90.2';
const CLIENT6 = 'fd90::2';

const servers: ChildProcess[] = [];

/** TCP :80 and UDP :53 in the pod answering `${word}-tcp` / `${word}-udp` (socat, no shell). */
function serve(pod: string, word: string): void {
  const specs: [string, string][] = [
    ['TCP4-LISTEN:80,fork,reuseaddr', `EXEC:echo ${word}-tcp`],
    ['TCP6-LISTEN:80,fork,reuseaddr,ipv6-v6only=1', `EXEC:echo ${word}-tcp`],
    ['UDP4-RECVFROM:53,fork', `EXEC:echo ${word}-udp`],
    ['UDP6-RECVFROM:53,fork,ipv6-v6only=1', `EXEC:echo ${word}-udp`],
  ];
  for (const [listen, exec] of specs) {
    // nsenter execs socat in place; its own process group, so the forked children go with it
    servers.push(spawn('nsenter', [`--net=/run/netns/${pod}`, 'socat', listen, exec], { stdio: 'ignore', detached: true }));
  }
}

function killServers(): void {
  for (const s of servers.splice(0)) {
    if (s.pid === undefined || s.exitCode !== null) continue;
    try {
      process.kill(-s.pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
}

/** One exchange from `ns`; the answer, or '' when none came. */
function ask(ns: string, proto: 'TCP4' | 'TCP6' | 'UDP4' | 'UDP6', host: string, port: number, sourcePort?: number): string {
  const target = `${proto}:${host.includes(':') ? `[${host}]` : host}:${port}${sourcePort ? `,sourceport=${sourcePort},reuseaddr` : ''}`;
  const udp = proto.startsWith('UDP');
  const r = spawnSync('ip', ['netns', 'exec', ns, 'socat', '-t', udp ? '0.7' : '2', '-T', '3', '-', target], { input: udp ? 'x\n' : '', encoding: 'utf8', timeout: 8000 });
  return (r.stdout ?? '').trim();
}

/** The answer, retrying while a freshly started server is not listening yet. */
async function askUntil(ns: string, proto: 'TCP4' | 'TCP6' | 'UDP4' | 'UDP6', host: string, port: number, want: string, sourcePort?: number): Promise<string> {
  let got = '';
  for (let i = 0; i < 15 && got !== want; i++) {
    got = ask(ns, proto, host, port, sourcePort);
    if (got !== want) await new Promise((r) => setTimeout(r, 150));
  }
  return got;
}

function table(h: CniHarness): HostportTable {
  const out = h.exec(h.nodeNs, ['nft', '-j', 'list', 'table', 'inet', 'podnet-hostport'], true);
  return out ? parseHostportTable(JSON.parse(out)) : { elements: [], hairpin: [], rules: {} };
}

function conntrackUdp(h: CniHarness, family: 'ipv4' | 'ipv6'): string {
  return h.exec(h.nodeNs, ['conntrack', '-L', '-f', family, '-p', 'udp'], true);
}

/** The node's eth0 on a link to a client host (its own netns), addresses of both families. */
function setupClient(h: CniHarness): string {
  const client = h.fixture.add('cli');
  h.exec(h.nodeNs, ['ip', 'link', 'add', 'name', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', `/run/netns/${client}`]);
  for (const [ns, a4, a6] of [
    [h.nodeNs, NODE4, NODE6],
    [client, CLIENT4, CLIENT6],
  ]) {
    h.exec(ns, ['ip', 'addr', 'add', `${a4}/24`, 'dev', 'eth0']);
    h.exec(ns, ['ip', 'addr', 'add', `${a6}/64`, 'dev', 'eth0', 'nodad']);
    h.exec(ns, ['ip', 'link', 'set', 'eth0', 'up']);
  }
  return client;
}

function bridgeConf(name: string, dataDir: string, subnet: number): Conf {
  return {
    cniVersion: '1.1.0',
    name,
    type: 'podnet',
    bridge: 'hpbr0',
    isGateway: true,
    isDefaultGateway: true,
    ipMasq: true,
    hairpinMode: true,
    ipam: { type: 'podnet-ipam', ranges: [[{ subnet: `10.88.${subnet}.0/24` }], [{ subnet: `fd88:${subnet}::/64` }]], dataDir },
  };
}

const withPorts = (conf: Conf, portMappings: unknown[]): Conf => ({ ...conf, runtimeConfig: { portMappings } });
const cniCode = (r: CniOutcome) => (r.json as { code?: number } | undefined)?.code;

describe('hostPort', () => {
  let h: CniHarness;
  let client: string;
  let dataDir: string;
  let base: Conf;
  const NET = 'thostport';
  const MAPPINGS = [
    { hostPort: 8080, containerPort: 80, protocol: 'tcp' },
    { hostPort: 8053, containerPort: 53, protocol: 'udp' },
  ];
  /** live attachments: containerID → [pod netns, ADD result] */
  const live = new Map<string, { pod: string; res: Result; conf: Conf }>();

  before(() => {
    h = new CniHarness();
    dataDir = join(h.tmp, 'ipam');
    base = bridgeConf(NET, dataDir, 1);
    client = setupClient(h);
  });
  after(async () => {
    killServers();
    await h.cleanup();
  });

  const add = async (id: string, conf: Conf, pod = h.pod(id)) => {
    const r = await h.invoke({ command: 'ADD', containerId: id, netns: h.podPath(pod), ifname: 'eth0', conf });
    if (r.code === 0) live.set(id, { pod, res: r.json as Result, conf });
    return { r, pod };
  };

  test('the pod answers on the node address: TCP and UDP, IPv4 and IPv6, from a client, the node and the pod itself; CHECK passes', async () => {
    const conf = withPorts(base, MAPPINGS);
    const { r, pod } = await add('hp-a', conf);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const res = r.json as Result & { interfaces: unknown[] };
    // the result is portmap's: unchanged by portMappings (no portMappings or anything else added)
    assert.deepEqual(Object.keys(res).filter((k) => !['cniVersion', 'interfaces', 'ips', 'routes', 'dns'].includes(k)), []);
    serve(pod, 'alpha');
    assert.equal(await askUntil(client, 'TCP4', NODE4, 8080, 'alpha-tcp'), 'alpha-tcp');
    assert.equal(await askUntil(client, 'TCP6', NODE6, 8080, 'alpha-tcp'), 'alpha-tcp');
    assert.equal(await askUntil(client, 'UDP4', NODE4, 8053, 'alpha-udp'), 'alpha-udp');
    assert.equal(await askUntil(client, 'UDP6', NODE6, 8053, 'alpha-udp'), 'alpha-udp');
    // locally originated (output hook), and the pod reaching its own hostPort (hairpin masquerade)
    assert.equal(await askUntil(h.nodeNs, 'TCP4', NODE4, 8080, 'alpha-tcp'), 'alpha-tcp');
    assert.equal(await askUntil(h.nodeNs, 'TCP6', NODE6, 8080, 'alpha-tcp'), 'alpha-tcp');
    assert.equal(await askUntil(pod, 'TCP4', NODE4, 8080, 'alpha-tcp'), 'alpha-tcp');
    assert.equal(await askUntil(pod, 'UDP6', NODE6, 8053, 'alpha-udp'), 'alpha-udp');
    // loopback is not translated (documented): nothing listens on the node's own 127.0.0.1:8080
    assert.equal(ask(h.nodeNs, 'TCP4', '127.0.0.1', 8080), '');
    const t = table(h);
    assert.deepEqual(t.rules, HOSTPORT_RULE_COUNTS);
    assert.equal(t.elements.filter((e) => e.owner === `${NET}:hp-a/eth0`).length, 4);
    assert.equal(t.hairpin.filter((e) => e.owner === `${NET}:hp-a/eth0`).length, 2);
    const chk = await h.invoke({ command: 'CHECK', containerId: 'hp-a', netns: h.podPath(pod), ifname: 'eth0', conf: { ...conf, prevResult: r.json } });
    assert.equal(chk.code, 0, chk.stdout);
  });

  test('ADD flushes UDP conntrack entries to the new hostPort (a client that sent before the pod existed)', async () => {
    // before the pod: an untranslated flow to the node's port 8054 (ICMP port unreachable)
    ask(client, 'UDP4', NODE4, 8054, 40054);
    assert.match(conntrackUdp(h, 'ipv4'), /dport=8054 .*sport=40054|sport=40054 dport=8054/, 'the stale flow exists');
    const { r, pod } = await add(
      'hp-d',
      withPorts(base, [
        { hostPort: 8054, containerPort: 53, protocol: 'udp' },
        { hostPort: 8055, containerPort: 80, protocol: 'tcp', hostIP: NODE4 },
        { hostPort: 8056, containerPort: 80, protocol: 'tcp', hostIP: NODE6 },
      ]),
    );
    assert.equal(r.code, 0, r.stdout);
    serve(pod, 'delta');
    // the same 5-tuple is translated now: the stale entry is gone
    assert.equal(await askUntil(client, 'UDP4', NODE4, 8054, 'delta-udp', 40054), 'delta-udp');
    // hostIP mappings: that address (and family) only
    assert.equal(await askUntil(client, 'TCP4', NODE4, 8055, 'delta-tcp'), 'delta-tcp');
    assert.equal(await askUntil(client, 'TCP6', NODE6, 8056, 'delta-tcp'), 'delta-tcp');
    assert.equal(ask(client, 'TCP6', NODE6, 8055), '');
    assert.equal(ask(client, 'TCP4', NODE4, 8056), '');
  });

  test('a hostPort another pod holds: ADD fails with 107 and leaves nothing behind', async () => {
    // the masquerade table's set elements (its rules are rewritten by every ADD: new handles)
    const masq = () => h.exec(h.nodeNs, ['nft', '-j', 'list', 'table', 'inet', 'podnet']).replace(/"handle": \d+/g, '');
    const before = { t: table(h), ipam: h.reservations(dataDir, NET).sort(), links: h.nodeLinks().map((l) => l.ifname).sort(), masq: masq() };
    for (const [i, pm] of [
      [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }], // the same key
      [{ hostPort: 9999, containerPort: 1, protocol: 'tcp' }, { hostPort: 8053, containerPort: 53, protocol: 'udp' }], // second mapping clashes
      [{ hostPort: 8080, containerPort: 80, protocol: 'tcp', hostIP: NODE4 }], // hostIP against a wildcard
    ].entries()) {
      const pod = h.pod(`b${i}`);
      const r = await h.invoke({ command: 'ADD', containerId: `hp-b${i}`, netns: h.podPath(pod), ifname: 'eth0', conf: withPorts(base, pm) });
      assert.notEqual(r.code, 0);
      assert.equal(cniCode(r), 107, r.stdout);
      assert.match(String((r.json as { msg: string }).msg), new RegExp(`hostPort .*:(8080|8053)/(tcp|udp) is already in use by attachment ${NET}:hp-a/eth0`));
      const after = { t: table(h), ipam: h.reservations(dataDir, NET).sort(), links: h.nodeLinks().map((l) => l.ifname).sort(), masq: masq() };
      assert.deepEqual(after, before, 'the failed ADD left something behind');
      assert.equal(h.exec(pod, ['ip', '-j', 'link', 'show']).includes('"eth0"'), false, 'pod interface left');
    }
    // a different protocol on the same port is free
    const { r } = await add('hp-c', withPorts(base, [{ hostPort: 8080, containerPort: 80, protocol: 'udp' }]));
    assert.equal(r.code, 0, r.stdout);
    // invalid mappings are refused before anything is touched, naming the field
    const bad = await h.invoke({ command: 'ADD', containerId: 'hp-bad', netns: h.podPath(h.pod('bad')), ifname: 'eth0', conf: withPorts(base, [{ hostPort: 70000, containerPort: 80, protocol: 'tcp' }]) });
    assert.equal(cniCode(bad), 7);
    assert.match(String((bad.json as { msg: string }).msg), /^runtimeConfig\.portMappings\[0\]\.hostPort/);
  });

  test('DEL removes its elements and the UDP conntrack entries translated to the pod', async () => {
    const a = live.get('hp-a')!;
    const [v4, v6] = a.res.ips.map((i) => i.address.split('/')[0]);
    assert.equal(await askUntil(client, 'UDP4', NODE4, 8053, 'alpha-udp'), 'alpha-udp');
    assert.equal(await askUntil(client, 'UDP6', NODE6, 8053, 'alpha-udp'), 'alpha-udp');
    assert.match(conntrackUdp(h, 'ipv4'), new RegExp(`src=${v4.replace(/\./g, '\\.')} dst=${CLIENT4.replace(/\./g, '\\.')} sport=53`));
    assert.match(conntrackUdp(h, 'ipv6'), new RegExp(`src=${v6} dst=${CLIENT6} sport=53`));
    const others = table(h).elements.filter((e) => e.owner !== `${NET}:hp-a/eth0`);
    const d = await h.invoke({ command: 'DEL', containerId: 'hp-a', netns: h.podPath(a.pod), ifname: 'eth0', conf: { ...a.conf, prevResult: a.res } });
    assert.equal(d.code, 0, d.stdout);
    live.delete('hp-a');
    const t = table(h);
    assert.deepEqual(t.elements.filter((e) => e.owner === `${NET}:hp-a/eth0`), []);
    assert.deepEqual(t.hairpin.filter((e) => e.owner === `${NET}:hp-a/eth0`), []);
    assert.deepEqual(t.elements, others, 'other pods\' elements untouched');
    assert.deepEqual(t.rules, HOSTPORT_RULE_COUNTS, 'shared rules stay');
    assert.doesNotMatch(conntrackUdp(h, 'ipv4'), new RegExp(`src=${v4.replace(/\./g, '\\.')} dst=${CLIENT4.replace(/\./g, '\\.')} sport=53 `));
    assert.doesNotMatch(conntrackUdp(h, 'ipv6'), new RegExp(`src=${v6} dst=${CLIENT6} sport=53 `));
    assert.equal(ask(client, 'TCP4', NODE4, 8080), '', 'the hostPort is gone');
    // containerd's second DEL, without netns or runtimeConfig
    const d2 = await h.invoke({ command: 'DEL', containerId: 'hp-a', netns: '', ifname: 'eth0', conf: base });
    assert.equal(d2.code, 0, d2.stdout);
    // the port is free again
    const { r } = await add('hp-a2', withPorts(base, [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }]));
    assert.equal(r.code, 0, r.stdout);
  });

  test('CHECK notices a removed element (106); GC removes an orphan\'s elements and nothing else', async () => {
    const conf = withPorts(base, [
      { hostPort: 8090, containerPort: 80, protocol: 'tcp' },
      { hostPort: 8091, containerPort: 53, protocol: 'udp', hostIP: NODE4 },
    ]);
    const { r, pod } = await add('hp-gc', conf);
    assert.equal(r.code, 0, r.stdout);
    const owner = `${NET}:hp-gc/eth0`;
    assert.equal(table(h).elements.filter((e) => e.owner === owner).length, 3);
    h.exec(h.nodeNs, ['nft', 'delete', 'element', 'inet', 'podnet-hostport', 'hostports6', '{', 'tcp', '.', '8090', '}']);
    const chk = await h.invoke({ command: 'CHECK', containerId: 'hp-gc', netns: h.podPath(pod), ifname: 'eth0', conf: { ...conf, prevResult: r.json } });
    assert.equal(cniCode(chk), 106, chk.stdout);
    assert.match(String((chk.json as { msg: string }).msg), /\[::\]:8090\/tcp/);
    live.delete('hp-gc');
    const keep = table(h).elements.filter((e) => e.owner !== owner);
    assert.ok(keep.length > 0);
    const valid = [...live.keys()].map((id) => ({ containerID: id, ifname: 'eth0' }));
    const gc = await h.invoke({ command: 'GC', conf: { ...base, 'cni.dev/valid-attachments': valid } });
    assert.equal(gc.code, 0, gc.stdout);
    const t = table(h);
    assert.deepEqual(t.elements.filter((e) => e.owner === owner), []);
    assert.deepEqual(t.hairpin.filter((e) => e.owner === owner), []);
    assert.deepEqual(t.elements, keep);
  });

  test('DEL of the rest leaves an empty table with one copy of the rules', async () => {
    for (const [id, a] of live) {
      const d = await h.invoke({ command: 'DEL', containerId: id, netns: h.podPath(a.pod), ifname: 'eth0', conf: { ...a.conf, prevResult: a.res } });
      assert.equal(d.code, 0, d.stdout);
      live.delete(id);
    }
    const t = table(h);
    assert.deepEqual(t.elements, []);
    assert.deepEqual(t.hairpin, []);
    assert.deepEqual(t.rules, HOSTPORT_RULE_COUNTS);
    assert.deepEqual(h.reservations(dataDir, NET), []);
  });
});

for (const agent of [false, true]) describe(`hostPort: concurrent first ADDs on a fresh node (${agent ? 'agent' : 'standalone'})`, () => {
  let h: CniHarness;
  let client: string;
  let base: Conf;
  const N = 8;
  before(async () => {
    h = new CniHarness();
    base = bridgeConf('thpconc', join(h.tmp, 'ipam'), 2);
    client = setupClient(h);
    if (agent) await h.startAgent();
  });
  after(async () => {
    killServers();
    await h.cleanup();
  });

  test(`${N} concurrent ADDs: one nftables copy of each shared rule, every hostPort answers; ${N} concurrent DELs empty the maps`, async () => {
    const pods = Array.from({ length: N }, (_, i) => h.pod(`q${i}`));
    const confs = pods.map((_, i) => withPorts(base, [{ hostPort: 9100 + i, containerPort: 80, protocol: 'tcp' }, { hostPort: 9200 + i, containerPort: 53, protocol: 'udp' }]));
    const rs = await Promise.all(pods.map((p, i) => h.invoke({ command: 'ADD', containerId: `q${i}`, netns: h.podPath(p), ifname: 'eth0', conf: confs[i] })));
    for (const r of rs) assert.equal(r.code, 0, r.stdout + r.stderr);

    const text = h.exec(h.nodeNs, ['nft', 'list', 'table', 'inet', 'podnet-hostport']);
    // each rule line, prefixed with its chain
    let chain = '';
    const ruleLines: string[] = [];
    for (const l of text.split('\n').map((x) => x.trim())) {
      const m = /^chain (\S+) \{$/.exec(l);
      if (m) chain = m[1];
      else if (/\b(dnat|jump|return|masquerade)\b/.test(l)) ruleLines.push(`${chain}: ${l}`);
    }
    assert.equal(ruleLines.length, Object.values(HOSTPORT_RULE_COUNTS).reduce((a, b) => a + b), text);
    assert.equal(new Set(ruleLines).size, ruleLines.length, `duplicated rules:\n${text}`);
    const t = table(h);
    assert.deepEqual(t.rules, HOSTPORT_RULE_COUNTS);
    assert.equal(t.elements.length, N * 2 * 2, 'tcp and udp, IPv4 and IPv6, per pod');
    assert.equal(t.hairpin.length, N * 2);
    const masq = h.exec(h.nodeNs, ['nft', 'list', 'chain', 'inet', 'podnet', 'cni-masquerade']);
    assert.equal((masq.match(/masquerade comment/g) ?? []).length, 2, masq);

    for (const [i, p] of pods.entries()) serve(p, `q${i}`);
    for (const i of [0, N - 1]) {
      assert.equal(await askUntil(client, 'TCP4', NODE4, 9100 + i, `q${i}-tcp`), `q${i}-tcp`);
      assert.equal(await askUntil(client, 'UDP6', NODE6, 9200 + i, `q${i}-udp`), `q${i}-udp`);
    }

    const ds = await Promise.all(pods.map((p, i) => h.invoke({ command: 'DEL', containerId: `q${i}`, netns: h.podPath(p), ifname: 'eth0', conf: { ...confs[i], prevResult: rs[i].json } })));
    for (const d of ds) assert.equal(d.code, 0, d.stdout);
    const after = table(h);
    assert.deepEqual(after.elements, []);
    assert.deepEqual(after.hairpin, []);
    assert.deepEqual(after.rules, HOSTPORT_RULE_COUNTS);
  });
});
