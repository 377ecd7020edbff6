// CNI benchmark: podnet (through the agent, and standalone) against the reference plugins, in
// one run, in one node netns, with the same config shape (bridge mode, isGateway,
// isDefaultGateway, ipMasq: true).
//   plain:    podnet  vs  Debian's bridge + host-local
//   hostPort: podnet with the portMappings capability  vs  bridge + host-local, then portmap
//             chained after it (a conflist of two plugins); one unique hostPort per pod
// For each: N sequential ADD then DEL, and the same with W concurrent workers. Rounds alternate
// the order of the variants and of the contenders; medians pool every round. One table per
// variant on stdout, then the issue's targets with the measured ratios.
//
// Every plugin is exec'ed as libcni does it: stdin = the plugin's own config with the list's
// name and cniVersion, prevResult (ADD: the previous plugin's result; DEL: the cached ADD
// result) and runtimeConfig for the capabilities the plugin declares; DEL runs the list in
// reverse. A pod's ADD (DEL) is timed as the runtime sees it: the wall time of the whole chain.
// The plugins run straight in the node netns (the measuring process runs there, under
// `ip netns exec`), so no nsenter is timed for any contender.
//
// After every ADD pass the bench checks that each contender did the per-pod work it is timed
// for (every pod's IP in a masquerade rule or set; with hostPorts, its port mapped).
// After every DEL pass the bench checks that nothing is left: no veth in the node netns, no
// address reserved in either IPAM dir, nothing in nftables/iptables naming a pod of the pass
// (its container ID or its IP, or a per-pod CNI-* chain). A leak prints a WARNING line and
// fails the bench.
//
//   node --import tsx bench/cni-bench.ts [--pods N] [--rounds R] [--workers W] [--no-standalone]
import { spawn, execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, loadavg, cpus } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { installCni } from '../src/cni/install.js';
import { SUPPORTED_VERSIONS } from '../src/cni/version.js';

function argNum(flag: string, dflt: number): number {
  const i = process.argv.indexOf(flag);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}
const PODS = argNum('--pods', 100);
const ROUNDS = Math.max(1, argNum('--rounds', 3));
const WORKERS = argNum('--workers', 4);
const WORKER_COUNTS = [...new Set([1, WORKERS])];
const VERSION_RUNS = argNum('--version-runs', 50);
const STANDALONE = !process.argv.includes('--no-standalone');
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SELF = fileURLToPath(import.meta.url);
const REF_PLUGINS = ['bridge', 'host-local', 'portmap'];

// ---------------------------------------------------------------------------------------------
// Outer process: creates the node and pod netns (and removes them on exit, also on failure),
// then runs the bench itself inside the node netns.
// ---------------------------------------------------------------------------------------------
const INNER = process.env.PODNET_BENCH_INNER === '1';

function podName(prefix: string, i: number): string {
  return `${prefix}-p${i}`;
}

function ip(args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

function killAgentFrom(tmp: string): void {
  try {
    const pid = Number(readFileSync(join(tmp, 'agent.pid'), 'utf8'));
    // only the agent this bench started (the pid file is ours; the cmdline confirms the pid was not reused)
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (cmd.includes('podnet.mjs') && cmd.includes(join(tmp, 'podnet.sock'))) process.kill(pid, 'SIGKILL');
  } catch {
    /* none, or gone */
  }
}

async function outer(): Promise<number> {
  const prefix = `pnb${process.pid.toString(36)}${randomBytes(2).toString('hex')}`;
  const node = `${prefix}-node`;
  const tmp = mkdtempSync(join(tmpdir(), `${prefix}-`));
  const made: string[] = [];
  let child: ReturnType<typeof spawn> | undefined;
  let cleaned = false;
  const cleanup = (): void => {
    if (cleaned) return;
    cleaned = true;
    if (child && child.exitCode === null && child.signalCode === null) {
      try {
        child.kill('SIGKILL');
      } catch {
        /* gone */
      }
    }
    killAgentFrom(tmp);
    for (const n of made.reverse()) {
      try {
        ip(['netns', 'del', n]);
      } catch {
        /* gone */
      }
    }
    rmSync(tmp, { recursive: true, force: true });
  };
  process.on('exit', cleanup);
  for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    process.on(sig, () => {
      cleanup();
      process.exit(code);
    });
  }
  try {
    if (!existsSync(join(REPO, 'dist/podnet-cni.mjs'))) execFileSync('npm', ['run', 'build'], { cwd: REPO, stdio: 'inherit' });
    for (const p of REF_PLUGINS) {
      if (!existsSync(`/usr/lib/cni/${p}`)) throw new Error(`/usr/lib/cni/${p} missing: install containernetworking-plugins`);
    }
    for (const t of ['iptables', 'iptables-save', 'nft']) {
      if (spawnSync(t, ['--version'], { stdio: 'ignore' }).status !== 0) throw new Error(`${t} missing: install iptables and nftables`);
    }
    ip(['netns', 'add', node]);
    made.push(node);
    ip(['-n', node, 'link', 'set', 'lo', 'up']);
    for (let i = 0; i < PODS; i++) {
      ip(['netns', 'add', podName(prefix, i)]);
      made.push(podName(prefix, i));
    }
    // `ip netns exec` also gives the bench (and the plugins and agent it starts) the node's /sys
    child = spawn('ip', ['netns', 'exec', node, process.execPath, ...process.execArgv, SELF, ...process.argv.slice(2)], {
      stdio: 'inherit',
      env: { ...process.env, PODNET_BENCH_INNER: '1', PODNET_BENCH_PREFIX: prefix, PODNET_BENCH_TMP: tmp },
    });
    const c = child;
    return await new Promise<number>((res) => c.on('close', (code, sig) => res(code ?? (sig ? 1 : 0))));
  } finally {
    cleanup();
  }
}

// ---------------------------------------------------------------------------------------------
// Inner process (in the node netns)
// ---------------------------------------------------------------------------------------------
type Json = Record<string, unknown>;
type Variant = 'plain' | 'hostPort';
const VARIANTS: Variant[] = ['plain', 'hostPort'];

interface Contender {
  name: string;
  /** podnet: through the agent's socket; otherwise the client falls back to standalone */
  agent: boolean;
  variants: Variant[];
  /** the network list for a variant: libcni's conflist */
  list(v: Variant): { name: string; cniVersion: string; plugins: Json[] };
}

const PREFIX = process.env.PODNET_BENCH_PREFIX ?? '';
const tmp = process.env.PODNET_BENCH_TMP ?? '';
const binDir = join(tmp, 'bin');
const sock = join(tmp, 'podnet.sock');
const IPAM_REF = join(tmp, 'ipam-ref');
const IPAM_PODNET = join(tmp, 'ipam-podnet');
const CNI_VERSION = '1.0.0';

const gateway = { isGateway: true, isDefaultGateway: true, ipMasq: true };
const portmap: Json = { type: 'portmap', capabilities: { portMappings: true } };
const REF: Contender = {
  name: 'reference bridge+host-local',
  agent: false,
  variants: VARIANTS,
  list: (v) => ({
    name: 'bench-ref',
    cniVersion: CNI_VERSION,
    plugins: [
      { type: 'bridge', bridge: 'benchref0', ...gateway, ipam: { type: 'host-local', ranges: [[{ subnet: '10.90.0.0/16' }]], dataDir: IPAM_REF } },
      ...(v === 'hostPort' ? [portmap] : []),
    ],
  }),
};
function podnetList(v: Variant) {
  return {
    name: 'bench-podnet',
    cniVersion: CNI_VERSION,
    plugins: [
      {
        type: 'podnet',
        mode: 'bridge',
        bridge: 'benchpn0',
        ...gateway,
        ...(v === 'hostPort' ? { capabilities: { portMappings: true } } : {}),
        ipam: { type: 'podnet-ipam', ranges: [[{ subnet: '10.91.0.0/16' }]], dataDir: IPAM_PODNET },
      },
    ],
  };
}
const PODNET_AGENT: Contender = { name: 'podnet (agent)', agent: true, variants: VARIANTS, list: podnetList };
// standalone starts Node per call: slow, so only in the plain variant
const PODNET_STANDALONE: Contender = { name: 'podnet (standalone)', agent: false, variants: ['plain'], list: podnetList };
const CONTENDERS = [REF, PODNET_AGENT, ...(STANDALONE ? [PODNET_STANDALONE] : [])];
const refName = (v: Variant) => (v === 'hostPort' ? 'reference bridge+host-local → portmap' : REF.name);
const label = (c: Contender, v: Variant) => (c === REF ? refName(v) : c.name);

let agentPid: number | undefined;
function innerCleanup(): void {
  if (agentPid) {
    try {
      process.kill(agentPid, 'SIGKILL');
    } catch {
      /* gone */
    }
    agentPid = undefined;
  }
}

function baseEnv(c: Contender, command: string, cid: string, netns: string): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: command,
    CNI_CONTAINERID: cid,
    CNI_NETNS: netns,
    CNI_IFNAME: 'eth0',
    CNI_PATH: binDir,
    PODNET_CNI_LOG: join(tmp, 'cni.log'),
    PODNET_SOCKET: c.agent ? sock : join(tmp, 'no-agent.sock'),
  };
}

function exec(type: string, env: Record<string, string>, stdin: string): Promise<string> {
  return new Promise((resolveP, reject) => {
    const child = spawn(join(binDir, type), [], { env, stdio: ['pipe', 'pipe', 'pipe'], timeout: 120_000 });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.on('error', reject);
    child.on('close', (code, sig) => {
      const text = Buffer.concat(out).toString();
      if (code !== 0) reject(new Error(`${type} ${env.CNI_COMMAND} ${env.CNI_CONTAINERID.slice(0, 12)}: exit ${code ?? sig}: ${text}${Buffer.concat(err).toString()}`));
      else resolveP(text);
    });
    // the podnet client answers VERSION without reading stdin, as Go's exec tolerates
    child.stdin.on('error', () => {});
    child.stdin.end(stdin);
  });
}

/** libcni's buildOneConfig: the plugin's config, the list's name and version, prevResult, runtimeConfig for its declared capabilities. */
function pluginStdin(list: { name: string; cniVersion: string }, plugin: Json, prevResult: unknown, rt: Json): string {
  const conf: Json = { ...plugin, name: list.name, cniVersion: list.cniVersion };
  if (prevResult !== undefined) conf.prevResult = prevResult;
  const caps = (plugin.capabilities ?? {}) as Record<string, boolean>;
  const runtimeConfig: Json = {};
  for (const [k, on] of Object.entries(caps)) if (on && rt[k] !== undefined) runtimeConfig[k] = rt[k];
  if (Object.keys(runtimeConfig).length) conf.runtimeConfig = runtimeConfig;
  return JSON.stringify(conf);
}

interface Pod {
  cid: string;
  netns: string;
  index: number;
  result?: Json;
}

function runtimeCaps(v: Variant, p: Pod): Json {
  return v === 'hostPort' ? { portMappings: [{ hostPort: 20000 + p.index, containerPort: 80, protocol: 'tcp' }] } : {};
}

/** One pod's ADD or DEL through the whole list, as libcni runs it; returns the wall time in ms. */
async function chain(c: Contender, v: Variant, command: 'ADD' | 'DEL', p: Pod): Promise<number> {
  const list = c.list(v);
  const rt = runtimeCaps(v, p);
  const env = baseEnv(c, command, p.cid, p.netns);
  const t0 = performance.now();
  if (command === 'ADD') {
    let prev: unknown;
    for (const plugin of list.plugins) prev = JSON.parse(await exec(String(plugin.type), env, pluginStdin(list, plugin, prev, rt)));
    const ms = performance.now() - t0;
    p.result = prev as Json;
    return ms;
  }
  for (const plugin of [...list.plugins].reverse()) await exec(String(plugin.type), env, pluginStdin(list, plugin, p.result, rt));
  return performance.now() - t0;
}

async function startAgent(): Promise<void> {
  const a = spawn(process.execPath, [join(REPO, 'dist/podnet.mjs'), 'agent', '--socket', sock, '--log-level', 'warn'], {
    stdio: 'ignore',
    env: { ...process.env, PODNET_CNI_LOG: join(tmp, 'agent-cni.log') },
  });
  agentPid = a.pid;
  writeFileSync(join(tmp, 'agent.pid'), String(a.pid));
  for (let i = 0; i < 400 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 25));
  if (!existsSync(sock)) throw new Error('agent did not start');
}

const samples: Record<string, number[]> = {};
const rates: Record<string, number[]> = {};
const key = (v: Variant, c: Contender, op: string, workers: number) => `${v}|${c.name}|${op}|${workers}`;
let round = 0;

async function pass(c: Contender, v: Variant, command: 'ADD' | 'DEL', workers: number, pods: Pod[], record: boolean): Promise<void> {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(workers, pods.length) }, async () => {
      for (;;) {
        const i = next++;
        if (i >= pods.length) return;
        const ms = await chain(c, v, command, pods[i]);
        if (record) {
          (samples[key(v, c, command, workers)] ??= []).push(ms);
          (samples[`${key(v, c, command, workers)}#${round}`] ??= []).push(ms);
        }
      }
    }),
  );
  if (record) (rates[key(v, c, command, workers)] ??= []).push(pods.length / ((performance.now() - t0) / 1000));
}

function podIPs(pods: Pod[]): string[] {
  const out: string[] = [];
  for (const p of pods) for (const x of (p.result?.ips ?? []) as { address: string }[]) out.push(x.address.split('/')[0]);
  return out;
}

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return `${r.stdout ?? ''}${r.status === 0 ? '' : `\n[${cmd} ${args.join(' ')}: exit ${r.status}: ${r.stderr}]`}`;
}

/** Whatever a pass's pods left behind after their DEL: [] when nothing. */
function leftovers(pods: Pod[]): string[] {
  const found: string[] = [];
  const veths = sh('ip', ['-o', 'link', 'show', 'type', 'veth']).trim();
  if (veths) found.push(`veths in the node netns: ${veths.split('\n').map((l) => l.split(':')[1]?.trim().split('@')[0]).join(', ')}`);
  for (const dir of [IPAM_REF, IPAM_PODNET]) {
    if (!existsSync(dir)) continue;
    for (const net of readdirSync(dir)) {
      const held = readdirSync(join(dir, net)).filter((f) => f !== 'lock' && !f.startsWith('last_reserved_ip.'));
      if (held.length) found.push(`IPAM ${join(dir, net)}: ${held.join(', ')}`);
    }
  }
  const rules = `${sh('nft', ['list', 'ruleset'])}\n${sh('iptables-save', [])}`;
  const cids = pods.map((p) => p.cid).filter((cid) => rules.includes(cid));
  if (cids.length) found.push(`nftables/iptables name ${cids.length} deleted container IDs (${cids[0].slice(0, 12)}…)`);
  const ipsLeft = podIPs(pods).filter((a) => ipRe(a).test(rules));
  if (ipsLeft.length) found.push(`nftables/iptables hold deleted pods' IPs: ${ipsLeft.slice(0, 8).join(', ')}${ipsLeft.length > 8 ? ` (+${ipsLeft.length - 8})` : ''}`);
  const chains = [...new Set(rules.match(/\bCNI-(?:DN-|SN-)?[0-9a-f]{12,}\b/g) ?? [])];
  if (chains.length) found.push(`per-pod iptables chains: ${chains.slice(0, 6).join(', ')}${chains.length > 6 ? ` (+${chains.length - 6})` : ''}`);
  if (/\[(nft|iptables-save)/.test(rules)) found.push(`cannot read the ruleset: ${rules.match(/\[(nft|iptables-save)[^\]]*\]/)?.[0]}`);
  return found;
}

const ipRe = (a: string) => new RegExp(`(?<![0-9.])${a.replace(/\./g, '\\.')}(?![0-9])`);

/** Each contender really did the per-pod work that is timed: every pod's IP is in a masquerade
 *  rule or set, and (hostPort) its host port is mapped. [] when all are there. */
function notProgrammed(pods: Pod[], v: Variant): string[] {
  const rules = `${sh('nft', ['list', 'ruleset'])}\n${sh('iptables-save', [])}`;
  const out: string[] = [];
  for (const p of pods) {
    for (const a of podIPs([p])) if (!ipRe(a).test(rules)) out.push(`masquerade of ${a}`);
    if (v === 'hostPort' && !new RegExp(`(?<![0-9])${20000 + p.index}(?![0-9])`).test(rules)) out.push(`hostPort ${20000 + p.index}`);
  }
  return out;
}

function newPods(n: number): Pod[] {
  // unique 64-hex container IDs per pass, as a runtime makes them
  return Array.from({ length: n }, (_, i) => ({ cid: randomBytes(32).toString('hex'), netns: `/run/netns/${podName(PREFIX, i)}`, index: i }));
}

async function addDel(c: Contender, v: Variant, workers: number, what: string, n = PODS, record = true): Promise<void> {
  const pods = newPods(n);
  await pass(c, v, 'ADD', workers, pods, record);
  for (const p of pods) if (!p.result || !((p.result.ips as unknown[]) ?? []).length) throw new Error(`${label(c, v)} ADD gave no IP: ${JSON.stringify(p.result)}`);
  const missing = notProgrammed(pods, v);
  if (missing.length) throw new Error(`after ${label(c, v)} ADD (${what}), not in nftables/iptables: ${missing.slice(0, 8).join(', ')}${missing.length > 8 ? ` (+${missing.length - 8})` : ''}`);
  await pass(c, v, 'DEL', workers, pods, record);
  const left = leftovers(pods);
  if (left.length) {
    for (const l of left) console.log(`WARNING: leak after ${label(c, v)} DEL (${what}): ${l}`);
    throw new Error(`state leaked after ${label(c, v)} DEL (${what}): see the WARNING lines`);
  }
}

function stats(xs: number[]): { min: number; med: number; p95: number } {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * (s.length - 1) + 0.5))];
  const mid = s.length >> 1;
  return { min: s[0], med: s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2, p95: q(0.95) };
}
const median = (xs: number[]) => stats(xs).med;

function table(rows: string[][], left: number): void {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  for (const [i, r] of rows.entries()) {
    console.log(r.map((x, j) => (j < left ? x.padEnd(widths[j]) : x.padStart(widths[j]))).join('  '));
    if (i === 0) console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  }
}

async function inner(): Promise<void> {
  process.on('exit', innerCleanup);
  for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    process.on(sig, () => {
      innerCleanup();
      process.exit(code);
    });
  }
  installCni({ binDir, socket: sock }, [...SUPPORTED_VERSIONS]);
  for (const p of REF_PLUGINS) copyFileSync(`/usr/lib/cni/${p}`, join(binDir, p));
  copyFileSync('/bin/true', join(binDir, 'bench-true'));
  await startAgent();
  const iptVersion = sh('iptables', ['--version']).trim();
  const load0 = loadavg()[0];
  process.stderr.write(`podnet CNI benchmark: ${PODS} pods, ${ROUNDS} rounds, 1 and ${WORKERS} workers, variants ${VARIANTS.join(', ')}\n`);
  // one untimed pod per contender and variant: bridges, shared tables and chains, page cache
  for (const v of VARIANTS) for (const c of CONTENDERS) if (c.variants.includes(v)) await addDel(c, v, 1, 'warm-up', 1, false);
  const versions: Record<string, number[]> = {};
  for (let r = 0; r < ROUNDS; r++) {
    round = r;
    const variants = r % 2 === 0 ? VARIANTS : [...VARIANTS].reverse();
    for (const [vi, v] of variants.entries()) {
      const contenders = CONTENDERS.filter((c) => c.variants.includes(v));
      const order = (r + vi) % 2 === 0 ? contenders : [...contenders].reverse();
      for (const c of order) {
        for (const workers of WORKER_COUNTS) {
          process.stderr.write(`  round ${r + 1}/${ROUNDS}: ${v}, ${label(c, v)}, ${workers} worker${workers > 1 ? 's' : ''}\n`);
          await addDel(c, v, workers, `${v}, ${workers} worker${workers > 1 ? 's' : ''}, round ${r + 1}`);
        }
        if (v === 'plain') {
          for (let i = 0; i < Math.ceil(VERSION_RUNS / ROUNDS); i++) {
            const env = baseEnv(c, 'VERSION', 'version', '');
            const t0 = performance.now();
            await exec(String(c.list(v).plugins[0].type), env, `{"cniVersion":"${CNI_VERSION}"}`);
            (versions[c.name] ??= []).push(performance.now() - t0);
          }
        }
      }
    }
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now();
      await exec('bench-true', baseEnv(REF, 'VERSION', 'version', ''), '');
      (versions['exec'] ??= []).push(performance.now() - t0);
    }
  }
  const load1 = loadavg()[0];

  console.log(`podnet CNI benchmark: ${PODS} pods per pass, ${ROUNDS} rounds (interleaved, order alternating), medians pool all rounds`);
  console.log(`config: bridge mode, isGateway, isDefaultGateway, ipMasq: true, cniVersion ${CNI_VERSION}; reference = Debian's /usr/lib/cni plugins; ${iptVersion}`);
  const client = readFileSync(join(binDir, 'podnet')).subarray(0, 4).toString('latin1') === '\x7fELF' ? 'the compiled client (dist/podnet-cni-client)' : 'the shell client (sh + socat; no compiled client in dist/)';
  console.log(`podnet's executable: ${client}; agent: dist/podnet.mjs`);
  console.log(`machine: ${cpus().length} CPUs, 1-min load ${load0.toFixed(2)} at start, ${load1.toFixed(2)} at end`);
  const e = stats(versions['exec']);
  console.log(`harness: one exec of an empty program (/bin/true) costs min ${e.min.toFixed(1)} / median ${e.med.toFixed(1)} ms here; every plugin execution includes it (twice per pod for bridge → portmap)`);
  for (const v of VARIANTS) {
    console.log(`\n### ${v === 'plain' ? 'plain (no hostPorts)' : `hostPort (portMappings capability: one hostPort per pod; reference = bridge then portmap, timed as the whole chain)`}\n`);
    const rows: string[][] = [['plugin', 'op', 'workers', 'n', 'min ms', 'median ms', 'p95 ms', 'pods/s', 'median / ref', 'pods/s / ref']];
    for (const workers of WORKER_COUNTS) {
      for (const op of ['ADD', 'DEL']) {
        const ref = samples[key(v, REF, op, workers)];
        const refRate = median(rates[key(v, REF, op, workers)]);
        for (const c of CONTENDERS) {
          const xs = samples[key(v, c, op, workers)];
          if (!xs) continue;
          const s = stats(xs);
          const rate = median(rates[key(v, c, op, workers)]);
          rows.push([label(c, v), op, String(workers), String(xs.length), s.min.toFixed(1), s.med.toFixed(1), s.p95.toFixed(1), rate.toFixed(1), (s.med / stats(ref).med).toFixed(2), (rate / refRate).toFixed(2)]);
        }
      }
    }
    if (v === 'plain') {
      for (const c of CONTENDERS) {
        const xs = versions[c.name];
        if (!xs) continue;
        const s = stats(xs);
        rows.push([label(c, v), 'VERSION', '1', String(xs.length), s.min.toFixed(1), s.med.toFixed(1), s.p95.toFixed(1), '-', (s.med / stats(versions[REF.name]).med).toFixed(2), '-']);
      }
    }
    table(rows, 3);
  }

  console.log(`\n### targets (issue 10): podnet (agent) against the reference\n`);
  const rows: string[][] = [['target', 'measured', 'verdict', 'per round']];
  const perRound = (f: (r: number) => number) => Array.from({ length: ROUNDS }, (_, r) => f(r).toFixed(2)).join(' ');
  let missed = 0;
  for (const v of VARIANTS) {
    const what = v === 'plain' ? 'without hostPorts' : 'with hostPorts';
    for (const op of ['ADD', 'DEL']) {
      for (const workers of WORKER_COUNTS) {
        const ratio = median(samples[key(v, PODNET_AGENT, op, workers)]) / median(samples[key(v, REF, op, workers)]);
        const ok = ratio <= 0.5;
        if (!ok) missed++;
        const rr = perRound((r) => median(samples[`${key(v, PODNET_AGENT, op, workers)}#${r}`]) / median(samples[`${key(v, REF, op, workers)}#${r}`]));
        rows.push([`${op} median ≤ 0.5× reference, ${workers} worker${workers > 1 ? 's' : ''}, ${what}`, ratio.toFixed(2), ok ? 'MET' : 'MISSED', rr]);
      }
    }
    for (const op of ['ADD', 'DEL']) {
      const ratio = median(rates[key(v, PODNET_AGENT, op, WORKERS)]) / median(rates[key(v, REF, op, WORKERS)]);
      const ok = ratio >= 2;
      if (!ok) missed++;
      const rr = perRound((r) => rates[key(v, PODNET_AGENT, op, WORKERS)][r] / rates[key(v, REF, op, WORKERS)][r]);
      rows.push([`${op} pods/s with ${WORKERS} workers ≥ 2× reference, ${what}`, ratio.toFixed(2), ok ? 'MET' : 'MISSED', rr]);
    }
  }
  table(rows, 1);
  console.log(`\n${rows.length - 1 - missed} of ${rows.length - 1} targets met`);
}

if (INNER) {
  try {
    await inner();
  } catch (e) {
    console.log(`BENCH FAILED: ${(e as Error).message}`);
    process.exitCode = 1;
  } finally {
    innerCleanup();
  }
} else {
  process.exitCode = await outer();
}
