// The agent's BGP speaker under faults, in namespaces (prefix from test/helpers/netns.ts): a node
// running `podnet agent` with the bgp backend (file store) and a peer namespace on the same
// bridge segment, where nothing listens on 179 and a fake BGP peer (test/helpers/bgp-fake-peer.mjs)
// plays scripted byte sequences at the agent. A peer that does not answer (retried with growing
// backoff, `podnet bgp status` says so and exits 3), a peer with the wrong AS (NOTIFICATION 2/2,
// logged with both ASes), invalid ASN/peer config (exit 2, the node namespace untouched, no lease),
// and malformed messages (the right NOTIFICATION each, the agent keeps running and serving CNI, and
// a good peer gets a session and its route installed afterwards).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestCluster, agentCommand, type ClusterNode } from '../helpers/cluster.js';
import { ensureLabBundle } from '../helpers/lab.js';
import { askAgent } from '../../src/agent/control-client.js';
import type { SpeakerStatus } from '../../src/agent/bgp/speaker.js';
import type { PeerStatus } from '../../src/agent/bgp/session.js';
import { decodeResponse, encodeRequest } from '../../src/agent/protocol.js';
import { openStore } from '../../src/store/index.js';
import { decodeLease, SUBNETS_PREFIX } from '../../src/agent/lease.js';

const ROOT = new URL('../../', import.meta.url).pathname;
const FAKE_PEER = join(ROOT, 'test/helpers/bgp-fake-peer.mjs');
const NODE_AS = 65001;
const PEER_AS = 65000;
const SEG = '192.168.213';
const PEER_IP = `${SEG}.200`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, ms: number, detail: () => string = () => ''): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - t0 > ms) assert.fail(`${what}: not within ${ms} ms\n${detail()}`);
    await sleep(50);
  }
}

// ---- BGP bytes, built here by hand (not with the codec under test) ------------------------------

const hex2 = (n: number, bytes: number) => n.toString(16).padStart(bytes * 2, '0');
const ipHex = (ip: string) => ip.split('.').map((o) => hex2(Number(o), 1)).join('');
/** A message: 16 octets of marker (or `marker`), length (or `length`), type, body. */
function msg(type: number, body = '', o: { marker?: string; length?: number } = {}): string {
  return (o.marker ?? 'ff'.repeat(16)) + hex2(o.length ?? 19 + body.length / 2, 2) + hex2(type, 1) + body;
}
/** OPEN: version, 2-octet AS (AS_TRANS above 65535), hold time, BGP ID, capabilities MP IPv4 unicast and 4-octet AS. */
function open(asn: number, o: { version?: number; hold?: number; id?: string } = {}): string {
  const caps = '010400010001' + '4104' + hex2(asn, 4);
  const params = '02' + hex2(caps.length / 2, 1) + caps;
  return msg(1, hex2(o.version ?? 4, 1) + hex2(asn > 65535 ? 23456 : asn, 2) + hex2(o.hold ?? 30, 2) + ipHex(o.id ?? PEER_IP) + hex2(params.length / 2, 1) + params);
}
const KEEPALIVE = msg(4);
/** UPDATE from its parts (hex): withdrawn routes, path attributes, NLRI. */
function update(attrs: string, nlri = '', withdrawn = ''): string {
  return msg(2, hex2(withdrawn.length / 2, 2) + withdrawn + hex2(attrs.length / 2, 2) + attrs + nlri);
}
const ORIGIN_IGP = '40010100';
const AS_PATH_PEER = '40020602' + '01' + hex2(PEER_AS, 4); // AS_SEQUENCE [65000], 4-octet
const nextHop = (ip: string) => '400304' + ipHex(ip);
const nlri24 = (prefix: string) => '18' + ipHex(prefix).slice(0, 6);
const END_OF_RIB = update('');

interface Msg {
  type: number;
  body: Buffer;
}
function messages(hexStr: string): Msg[] {
  const b = Buffer.from(hexStr, 'hex');
  const out: Msg[] = [];
  for (let off = 0; b.length - off >= 19; ) {
    const len = b.readUInt16BE(off + 16);
    if (len < 19 || b.length - off < len) break;
    out.push({ type: b[off + 18], body: b.subarray(off + 19, off + len) });
    off += len;
  }
  return out;
}
function notificationOf(r: FakeResult): { code: number; subcode: number; data: string } | undefined {
  const n = messages(r.received).find((m) => m.type === 3);
  return n && { code: n.body[0], subcode: n.body[1], data: n.body.subarray(2).toString('hex') };
}
/** The classic IPv4 NLRI and NEXT_HOP of the UPDATEs the agent sent. */
function announced(r: FakeResult): { prefix: string; nextHop?: string }[] {
  const out: { prefix: string; nextHop?: string }[] = [];
  for (const m of messages(r.received).filter((x) => x.type === 2)) {
    const b = m.body;
    const aStart = 2 + b.readUInt16BE(0) + 2;
    const aEnd = aStart + b.readUInt16BE(aStart - 2);
    let nh: string | undefined;
    for (let p = aStart; p < aEnd; ) {
      const ext = b[p] & 0x10;
      const len = ext ? b.readUInt16BE(p + 2) : b[p + 2];
      const v = p + (ext ? 4 : 3);
      if (b[p + 1] === 3) nh = [...b.subarray(v, v + 4)].join('.');
      p = v + len;
    }
    for (let p = aEnd; p < b.length; ) {
      const len = b[p];
      const o = [...b.subarray(p + 1, p + 1 + ((len + 7) >> 3))];
      while (o.length < 4) o.push(0);
      out.push({ prefix: `${o.join('.')}/${len}`, ...(nh ? { nextHop: nh } : {}) });
      p += 1 + ((len + 7) >> 3);
    }
  }
  return out;
}

interface FakeResult {
  received: string;
  closedByAgent: boolean;
  error?: string;
}

describe('agent, bgp backend: faults', { timeout: 120_000 }, () => {
  let c: TestCluster;
  let node: ClusterNode;
  let peerNs: string;
  let tcpdump: ChildProcess | undefined;
  let agentPid: number;
  const children = new Set<ChildProcess>();
  const sock = () => join(node.dir, 'sock');

  /** Runs the fake peer in the peer netns; `child` to end it early. */
  function fakePeer(steps: ({ send: string } | { waitFor: number })[], timeoutMs = 5000): { child: ChildProcess; done: Promise<FakeResult> } {
    const arg = JSON.stringify({ host: node.ip, port: 179, localAddress: PEER_IP, timeoutMs, steps });
    const child = spawn('ip', ['netns', 'exec', peerNs, process.execPath, FAKE_PEER, arg], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let out = '';
    let err = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
    const done = new Promise<FakeResult>((resolve, reject) => {
      child.on('close', (code, sig) => {
        children.delete(child);
        try {
          resolve(JSON.parse(out) as FakeResult);
        } catch {
          reject(new Error(`fake peer ended (${code ?? sig}) without a result: ${out}${err}`));
        }
      });
    });
    return { child, done };
  }

  function cli(args: string[]): { code: number | null; stdout: string; stderr: string } {
    const r = spawnSync(process.execPath, [join(ROOT, 'dist/podnet.mjs'), 'bgp', 'status', '--socket', sock(), ...args], { encoding: 'utf8', timeout: 10_000 });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  }
  const peerStatus = async (): Promise<PeerStatus> => ((await askAgent(sock(), 'bgp-status')) as SpeakerStatus).peers[0];
  const log = () => readFileSync(join(node.dir, 'agent.log'), 'utf8');
  const logRecords = () =>
    log()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);

  before(async () => {
    ensureLabBundle();
    c = new TestCluster({ Network: '10.244.0.0/16', Backend: { Type: 'bgp', ASN: NODE_AS, Peers: [{ Address: PEER_IP, ASN: PEER_AS, HoldTime: 30 }], GracefulRestart: { RestartTime: 120 } } }, undefined, SEG);
    node = c.addNode('n');
    // the peer: on the segment, nothing listening on 179
    peerNs = c.fixture.add('peer');
    c.sh(peerNs, ['ip', 'link', 'add', 'name', 'eth0', 'type', 'veth', 'peer', 'name', 'vpeer', 'netns', `/run/netns/${c.fabric}`]);
    c.sh(c.fabric, ['ip', 'link', 'set', 'vpeer', 'master', 'br0', 'up']);
    c.sh(peerNs, ['ip', 'addr', 'add', `${PEER_IP}/24`, 'dev', 'eth0']);
    c.sh(peerNs, ['ip', 'link', 'set', 'eth0', 'up']);
    // the agent's connection attempts as they reach the peer: SYNs to port 179
    tcpdump = spawn('ip', ['netns', 'exec', peerNs, 'tcpdump', '-l', '-n', '-tt', '-i', 'eth0', `tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack == 0 and dst host ${PEER_IP} and dst port 179`], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(tcpdump);
    let tdErr = '';
    tcpdump.stderr!.setEncoding('utf8').on('data', (d: string) => (tdErr += d));
    await until('tcpdump listening in the peer netns', () => tdErr.includes('listening on'), 10_000, () => tdErr);
    await c.startAgent(node);
    agentPid = node.agent!.pid!;
  });

  after(async () => {
    for (const ch of children) if (ch.exitCode === null && ch.pid) process.kill(ch.pid, 'SIGKILL');
    await c?.cleanup();
  });

  test('a peer that does not answer: retried with growing backoff, status shows the failures and exits 3', async () => {
    let syns: number[] = [];
    let out = '';
    tcpdump!.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    // three attempts on the wire (the first at start), so two gaps to compare
    await until('three connection attempts to the peer', () => (syns = out.split('\n').filter((l) => /^\d+\.\d+ IP /.test(l)).map((l) => Number(l.split(' ')[0]) * 1000)).length >= 3, 20_000, () => `${out}\n${c.agentLog(node)}`);
    assert.ok(syns.slice(0, 3).every((_, i, a) => i === 0 || a[i] > a[i - 1]));
    const [g1, g2] = [syns[1] - syns[0], syns[2] - syns[1]];
    assert.ok(g1 >= 250, `the first retry came after ${g1} ms: no backoff`);
    assert.ok(g2 > g1, `backoff did not grow: ${g1} ms, then ${g2} ms`);
    await until('the third failure counted', async () => (await peerStatus()).connectRetries >= 3, 2000);
    const st = cli(['-o', 'json']);
    assert.equal(st.code, 3, `exit code ${st.code}: ${st.stdout}${st.stderr}`);
    const p = (JSON.parse(st.stdout) as SpeakerStatus).peers[0];
    assert.equal(p.address, PEER_IP);
    assert.ok(p.state === 'Active' || p.state === 'Connect', p.state);
    assert.ok(p.connectRetries >= 3, `connectRetries ${p.connectRetries}`);
    assert.match(p.lastError ?? '', new RegExp(`ECONNREFUSED ${PEER_IP.replace(/\./g, '\\.')}:179`));
    const table = cli([]);
    assert.equal(table.code, 3);
    const row = table.stdout.split('\n').find((l) => l.startsWith(PEER_IP)) ?? '';
    assert.match(row, new RegExp(`^${PEER_IP.replace(/\./g, '\\.')}\\s+${PEER_AS}\\s+(Active|Connect)`));
    assert.match(row, /\d+ failed/);
    assert.match(row, /ECONNREFUSED/);
    // logged once when it starts failing, not per attempt
    assert.equal(logRecords().filter((r) => r.msg === 'BGP peer not reachable (retrying with backoff)').length, 1, log());
  });

  test('a peer with the wrong AS: NOTIFICATION 2/2 (bad peer AS), logged with both ASes, status keeps it', async () => {
    const r = await fakePeer([{ send: open(65099) }]).done;
    assert.equal(r.error, undefined, r.error);
    assert.ok(r.closedByAgent, 'the agent did not close the connection');
    assert.equal(messages(r.received)[0]?.type, 1, `the agent sent no OPEN first: ${r.received}`);
    // Data: the AS the OPEN carried
    assert.deepEqual(notificationOf(r), { code: 2, subcode: 2, data: hex2(65099, 2) }, r.received);
    assert.equal(messages(r.received).at(-1)?.type, 3, 'the NOTIFICATION is the last message');
    const rec = logRecords().find((x) => x.level === 'error' && /wrong AS/.test(String(x.msg)));
    assert.ok(rec, `no log line about the wrong AS:\n${log()}`);
    assert.match(String(rec.msg), /bad peer AS/);
    assert.equal(rec.peer, PEER_IP);
    assert.equal(rec.announced, 65099);
    assert.equal(rec.configured, PEER_AS);
    const st = cli(['-o', 'json']);
    assert.equal(st.code, 3);
    const p = (JSON.parse(st.stdout) as SpeakerStatus).peers[0];
    assert.notEqual(p.state, 'Established');
    assert.match(p.lastNotification ?? '', /NOTIFICATION 2\/2 \(bad peer AS\)/);
    assert.match(p.lastNotification ?? '', /AS 65099.*AS 65000/);
  });

  test('invalid ASN or peer: exit 2 with one clear line, before anything in the node netns is touched, no lease', async () => {
    const bad = c.addNode('bad');
    // a netns at rest: no address still tentative
    await until('no tentative address in the bad node', () => !c.sh(bad.ns, ['ip', '-j', 'addr']).includes('tentative'), 5000);
    const snapshot = () => {
      const j = (argv: string[]) => JSON.stringify(JSON.parse(c.sh(bad.ns, argv) || '[]'), (k, v) => (k === 'valid_life_time' || k === 'preferred_life_time' ? undefined : v));
      return {
        link: j(['ip', '-j', 'link']),
        addr: j(['ip', '-j', 'addr']),
        route4: j(['ip', '-4', '-j', 'route', 'show', 'table', 'all']),
        route6: j(['ip', '-6', '-j', 'route', 'show', 'table', 'all']),
        rule: j(['ip', '-j', 'rule']),
        nft: c.sh(bad.ns, ['nft', 'list', 'ruleset']),
      };
    };
    const goodConf = JSON.parse(readFileSync(c.netConfPath, 'utf8')) as { Backend: Record<string, unknown> };
    const cases: { what: string; flags?: string[]; backend?: Record<string, unknown>; err: RegExp }[] = [
      { what: '--bgp-asn 0', flags: ['--bgp-asn', '0'], err: /--bgp-asn: expected an AS number from 1 to 4294967294 .*got "0"/ },
      { what: '--bgp-asn 4294967296', flags: ['--bgp-asn', '4294967296'], err: /--bgp-asn: expected an AS number .*got "4294967296"/ },
      { what: '--bgp-asn abc', flags: ['--bgp-asn', 'abc'], err: /--bgp-asn: expected an AS number .*got "abc"/ },
      { what: '--bgp-peer 999.1.1.1', flags: ['--bgp-peer', '999.1.1.1'], err: /--bgp-peer 999\.1\.1\.1: expected an IP address, got "999\.1\.1\.1"/ },
      { what: '--bgp-peer 10.0.0.1:notanumber', flags: ['--bgp-peer', '10.0.0.1:notanumber'], err: /--bgp-peer 10\.0\.0\.1:notanumber: expected an AS number .*got "notanumber"/ },
      { what: 'net-conf Backend.ASN 0', backend: { ASN: 0 }, err: /net-conf Backend\.ASN: expected an AS number .*got 0/ },
      { what: 'net-conf Backend.ASN "65000x"', backend: { ASN: '65000x' }, err: /net-conf Backend\.ASN: expected an AS number .*got "65000x"/ },
      { what: 'net-conf Backend.Peers[1].Address', backend: { Peers: [{ Address: PEER_IP, ASN: PEER_AS }, { Address: '10.0.0.300', ASN: 65002 }] }, err: /net-conf Backend\.Peers\[1\]\.Address: expected an IP address, got "10\.0\.0\.300"/ },
      { what: 'net-conf Backend.Peers[0].ASN missing', backend: { Peers: [{ Address: PEER_IP }] }, err: /net-conf Backend\.Peers\[0\]\.ASN: missing: an AS number from 1 to 4294967294 is required$/ },
      { what: 'net-conf Backend.Peers[0] not an object', backend: { Peers: ['192.168.213.200'] }, err: /net-conf Backend\.Peers\[0\]: expected an object like/ },
    ];
    for (const k of cases) {
      const confPath = join(bad.dir, 'conf.json');
      writeFileSync(confPath, JSON.stringify({ ...goodConf, Backend: { ...goodConf.Backend, ...(k.backend ?? {}) } }));
      // the service proxy on (nftables): an agent that got that far would leave rules
      const argv = agentCommand({ config: confPath, store: c.store.url, dir: bad.dir, dataDir: join(bad.dir, 'data'), name: bad.name }, k.flags ?? []);
      const beforeRun = snapshot();
      const r = await runToExit(['ip', 'netns', 'exec', bad.ns, process.execPath, ...argv], 15_000);
      assert.equal(r.status, 2, `${k.what}: exit ${r.status ?? r.signal}\n${r.stderr}`);
      // the agent's own log records (JSON) aside, one line: the error, naming field and value
      const lines = r.stderr.split('\n').filter((l) => l && !l.startsWith('{"ts"'));
      assert.equal(lines.length, 1, `${k.what}: stderr:\n${r.stderr}`);
      assert.match(lines[0], /^podnet agent: /);
      assert.match(lines[0], k.err, k.what);
      const logged = r.stderr.split('\n').filter((l) => l.startsWith('{"ts"')).map((l) => JSON.parse(l) as { level: string; msg: string });
      assert.deepEqual(logged.filter((x) => x.level === 'warn' || x.level === 'error'), [], `${k.what}: warnings or errors logged before the refusal`);
      assert.deepEqual(snapshot(), beforeRun, `${k.what}: the node netns changed`);
    }
    const store = await openStore(c.store.url);
    try {
      const leases = (await store.list(SUBNETS_PREFIX)).kvs.map((kv) => decodeLease(kv.key, kv.value));
      assert.ok(leases.some((l) => l?.nodeName === node.name), 'the good node has a lease (the check can see one)');
      assert.deepEqual(leases.filter((l) => l?.nodeName === bad.name), [], 'a refused agent took a lease');
    } finally {
      await store.close();
    }
  });

  test('malformed messages: the right NOTIFICATION each, the agent keeps running and serving CNI, a good peer comes back', async () => {
    const toEstablished = [{ send: open(PEER_AS) }, { waitFor: 4 }, { send: KEEPALIVE }, { waitFor: 2 }];
    const cases: { what: string; steps: ({ send: string } | { waitFor: number })[]; code: number; subcode: number; data?: string }[] = [
      { what: 'a marker that is not all ones', steps: [{ send: msg(4, '', { marker: '00'.repeat(16) }) }], code: 1, subcode: 1, data: '' },
      // Data: the offending Length field (RFC 4271 6.1)
      { what: 'a KEEPALIVE of 20 octets', steps: [{ send: msg(4, '00') }], code: 1, subcode: 2, data: '0014' },
      { what: 'a length below the header', steps: [{ send: msg(4, '', { length: 18 }) }], code: 1, subcode: 2, data: '0012' },
      // Data: the offending Type field
      { what: 'message type 9', steps: [{ send: msg(9) }], code: 1, subcode: 3, data: '09' },
      // Data: the largest version supported below the one bid (RFC 4271 6.2)
      { what: 'an OPEN of version 5', steps: [{ send: open(PEER_AS, { version: 5 }) }], code: 2, subcode: 1, data: '0004' },
      // RFC 4271 4.2: zero or at least three seconds
      { what: 'an OPEN with hold time 1', steps: [{ send: open(PEER_AS, { hold: 1 }) }], code: 2, subcode: 6 },
      // RFC 6608: unexpected message in OpenSent
      { what: 'a KEEPALIVE before the OPEN', steps: [{ send: KEEPALIVE }], code: 5, subcode: 1 },
      { what: 'an UPDATE whose attribute length runs past the message', steps: [...toEstablished, { send: msg(2, '0000' + '00ff' + ORIGIN_IGP) }], code: 3, subcode: 1 },
      // Data: the type code of the missing attribute (RFC 4271 6.3)
      { what: 'an UPDATE without NEXT_HOP', steps: [...toEstablished, { send: update(ORIGIN_IGP + AS_PATH_PEER, nlri24('10.244.77.0')) }], code: 3, subcode: 3, data: '03' },
      // Data: the incorrect attribute, type, length and value
      { what: 'an UPDATE with NEXT_HOP 0.0.0.0', steps: [...toEstablished, { send: update(ORIGIN_IGP + AS_PATH_PEER + nextHop('0.0.0.0'), nlri24('10.244.77.0')) }], code: 3, subcode: 8, data: nextHop('0.0.0.0') },
      { what: 'an OPEN in Established', steps: [...toEstablished, { send: open(PEER_AS) }], code: 5, subcode: 3 },
      { what: 'an UPDATE with a /33 in its NLRI', steps: [...toEstablished, { send: update(ORIGIN_IGP + AS_PATH_PEER + nextHop(PEER_IP), '210a f44d 0000 00'.replace(/ /g, '')) }], code: 3, subcode: 10 },
    ];
    for (const k of cases) {
      const r = await fakePeer(k.steps).done;
      assert.equal(r.error, undefined, `${k.what}: ${r.error}`);
      assert.ok(r.closedByAgent, `${k.what}: the agent did not close the connection`);
      const n = notificationOf(r);
      assert.ok(n, `${k.what}: no NOTIFICATION in ${r.received}`);
      assert.deepEqual([n.code, n.subcode], [k.code, k.subcode], `${k.what}: NOTIFICATION ${n.code}/${n.subcode}`);
      if (k.data !== undefined) assert.equal(n.data, k.data, `${k.what}: NOTIFICATION data`);
      assert.equal(messages(r.received).at(-1)?.type, 3, `${k.what}: the NOTIFICATION is the last message`);
      const p = await peerStatus();
      assert.notEqual(p.state, 'Established', k.what);
      assert.match(p.lastNotification ?? '', new RegExp(`^sent NOTIFICATION ${k.code}/${k.subcode} `), k.what);
      assert.equal(node.agent?.exitCode, null, `${k.what}: the agent exited:\n${c.agentLog(node)}`);
    }
    // every one logged, naming the peer and the error
    const logged = logRecords().filter((x) => x.level === 'error' && x.peer === PEER_IP && x.code !== undefined).map((x) => `${x.code}/${x.subcode}`);
    for (const k of cases) assert.ok(logged.includes(`${k.code}/${k.subcode}`), `NOTIFICATION ${k.code}/${k.subcode} not logged: ${logged.join(' ')}`);

    // the same process, still serving CNI through its socket
    assert.equal(node.agent?.exitCode, null);
    assert.equal(node.agent?.pid, agentPid);
    assert.match(readFileSync(`/proc/${agentPid}/cmdline`, 'utf8'), /podnet\.mjs\0agent\0/);
    const pod = c.fixture.add('pod');
    const conf = JSON.stringify({
      cniVersion: '1.0.0', name: 'cluster', type: 'podnet', bridge: 'cni0', isGateway: true,
      ipam: { type: 'podnet-ipam', subnetFile: join(node.dir, 'subnet.env'), dataDir: join(node.dir, 'ipam') },
    });
    const env = { CNI_CONTAINERID: 'bgp-faults', CNI_NETNS: `/run/netns/${pod}`, CNI_IFNAME: 'eth0', CNI_PATH: join(node.dir, 'bin') };
    const add = decodeResponse(await raw(sock(), encodeRequest({ env: { ...env, CNI_COMMAND: 'ADD' }, stdin: conf })));
    assert.equal(add.exitCode, 0, add.stdout);
    const ip = (JSON.parse(add.stdout) as { ips: { address: string }[] }).ips[0].address;
    const subnet = c.subnetOf(node);
    assert.equal(ip.split('.').slice(0, 3).join('.'), subnet.split('.').slice(0, 3).join('.'), `${ip} is not in the node's subnet ${subnet}`);
    assert.match(c.sh(pod, ['ip', '-br', 'addr', 'show', 'eth0']), new RegExp(ip.replace(/\./g, '\\.')));
    const del = decodeResponse(await raw(sock(), encodeRequest({ env: { ...env, CNI_COMMAND: 'DEL' }, stdin: conf })));
    assert.equal(del.exitCode, 0, del.stdout);
    assert.equal(c.sh(pod, ['ip', 'link', 'show', 'eth0'], true), '', 'the pod interface is still there after DEL');

    // a good peer: Established, its route installed, the node's subnet announced to it
    const own = c.subnetOf(node).replace(/\.\d+\/24$/, '.0');
    const theirs = own === '10.244.250.0' ? '10.244.251.0' : '10.244.250.0';
    // the fake peer ends the session itself when its time is up
    const good = fakePeer([...toEstablished, { send: update(ORIGIN_IGP + AS_PATH_PEER + nextHop(PEER_IP), nlri24(theirs)) }, { send: END_OF_RIB }], 8000);
    let checked = false;
    try {
      await until('the session Established', async () => (await peerStatus()).state === 'Established', 5000, c.agentLog.bind(c, node));
      await until('the peer\'s route installed', () => c.sh(node.ns, ['ip', 'route', 'show', 'proto', '80']).split('\n').some((l) => l.startsWith(`${theirs}/24 via ${PEER_IP} dev eth0`)), 5000, () => c.sh(node.ns, ['ip', 'route']));
      const st = cli(['-o', 'json']);
      assert.equal(st.code, 0, st.stdout + st.stderr);
      const p = (JSON.parse(st.stdout) as SpeakerStatus).peers[0];
      assert.equal(p.state, 'Established');
      assert.equal(p.lastNotification, undefined, 'lastNotification outlived Established');
      assert.deepEqual(p.prefixes, { received: 1, accepted: 1, announced: 1, stale: 0 });
      checked = true;
    } finally {
      if (!checked) good.child.kill('SIGKILL');
    }
    const r = await good.done;
    assert.match(r.error ?? '', /timed out/, 'the session ended before the fake peer ended it');
    assert.equal(r.closedByAgent, false);
    assert.deepEqual(announced(r), [{ prefix: `${own}/24`, nextHop: node.ip }], 'what the agent announced');
    await until('the route withdrawn when the peer goes', () => !c.sh(node.ns, ['ip', 'route', 'show', 'proto', '80']).includes(theirs), 10_000, () => c.sh(node.ns, ['ip', 'route']));
    assert.notEqual((await peerStatus()).state, 'Established');
    assert.equal(node.agent?.pid, agentPid);
    assert.equal(node.agent?.exitCode, null);
  });
});

/** Runs argv to its end; one still running after `ms` is killed (SIGKILL: a graceful stop writes to stderr, which is gone by then). */
function runToExit(argv: string[], ms: number): Promise<{ status: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const t = setTimeout(() => child.kill('SIGKILL'), ms);
    child.on('close', (status, signal) => {
      clearTimeout(t);
      resolve({ status, signal, stderr });
    });
  });
}

function raw(sock: string, payload: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = connect(sock);
    const chunks: Buffer[] = [];
    s.on('data', (d) => chunks.push(d));
    s.on('end', () => resolve(Buffer.concat(chunks)));
    s.on('error', reject);
    s.end(payload);
  });
}
