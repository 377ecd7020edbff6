// CNI benchmark: podnet (through the agent, and standalone) against the reference bridge +
// host-local, in the same run, in the same node netns, with the same config shape.
//   100 sequential ADD then DEL; the same with 4 concurrent workers; VERSION round trips.
// Rounds alternate the order of the contenders; medians pool every round. A table on stdout.
//
//   node --import tsx bench/cni-bench.ts [--pods N] [--rounds R] [--workers W]
import { spawn, execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
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
const ROUNDS = argNum('--rounds', 3);
const WORKERS = argNum('--workers', 4);
const VERSION_RUNS = argNum('--version-runs', 50);
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const PREFIX = `pnb${process.pid.toString(36)}${randomBytes(2).toString('hex')}`;
const NODE = `${PREFIX}-node`;

interface Contender {
  name: string;
  plugin: string;
  ipam: string;
  agent: boolean;
}
const CONTENDERS: Contender[] = [
  { name: 'reference bridge+host-local', plugin: 'bridge', ipam: 'host-local', agent: false },
  { name: 'podnet (agent)', plugin: 'podnet', ipam: 'podnet-ipam', agent: true },
  { name: 'podnet (standalone)', plugin: 'podnet', ipam: 'podnet-ipam', agent: false },
];

const tmp = mkdtempSync(join(tmpdir(), `${PREFIX}-`));
const binDir = join(tmp, 'bin');
const sock = join(tmp, 'podnet.sock');
const pods: string[] = [];
let agentPid: number | undefined;

function ip(args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

let cleaned = false;
function cleanup(): void {
  if (cleaned) return;
  cleaned = true;
  if (agentPid) {
    try {
      process.kill(agentPid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  for (const n of [...pods, NODE]) {
    try {
      ip(['netns', 'del', n]);
    } catch {
      /* gone */
    }
  }
  rmSync(tmp, { recursive: true, force: true });
}
// also when something throws past main(): everything here is synchronous
process.on('exit', cleanup);
process.on('SIGINT', () => {
  cleanup();
  process.exit(130);
});
process.on('SIGTERM', () => {
  cleanup();
  process.exit(143);
});

function conf(c: Contender): string {
  return JSON.stringify({
    cniVersion: '1.0.0',
    name: `bench-${c.plugin}`,
    type: c.plugin,
    bridge: c.plugin === 'bridge' ? 'benchref0' : 'benchpn0',
    isGateway: true,
    isDefaultGateway: true,
    ipMasq: false,
    ipam: { type: c.ipam, ranges: [[{ subnet: c.plugin === 'bridge' ? '10.90.0.0/16' : '10.91.0.0/16' }]], dataDir: join(tmp, 'ipam') },
  });
}

function call(c: Contender, command: string, pod: string, i: number, useAgent: boolean): Promise<number> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: command,
    CNI_CONTAINERID: `bench${i}`,
    CNI_NETNS: `/run/netns/${pod}`,
    CNI_IFNAME: 'eth0',
    CNI_PATH: binDir,
    PODNET_CNI_LOG: join(tmp, 'cni.log'),
    PODNET_SOCKET: useAgent ? sock : join(tmp, 'no-agent.sock'),
  };
  const stdin = command === 'VERSION' ? '{"cniVersion":"1.0.0"}' : conf(c);
  return new Promise((resolveP, reject) => {
    const t0 = performance.now();
    // ADD/DEL: the node netns is entered by nsenter once per call for every contender alike;
    // VERSION touches no namespace, so it is timed as a runtime sees it: the bare exec
    const child =
      command === 'VERSION'
        ? spawn(join(binDir, c.plugin), [], { env, stdio: ['pipe', 'pipe', 'pipe'] })
        : spawn('nsenter', [`--net=/run/netns/${NODE}`, join(binDir, c.plugin)], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.on('close', (code) => {
      const ms = performance.now() - t0;
      if (code !== 0) reject(new Error(`${c.name} ${command} ${pod}: exit ${code}: ${out}`));
      else resolveP(ms);
    });
    // the podnet client answers VERSION without reading stdin, as Go's exec tolerates
    child.stdin.on('error', () => {});
    child.stdin.end(stdin);
  });
}

async function startAgent(): Promise<void> {
  const a = spawn('ip', ['netns', 'exec', NODE, process.execPath, join(REPO, 'dist/podnet.mjs'), 'agent', '--socket', sock, '--log-level', 'warn'], {
    stdio: 'ignore',
    env: { ...process.env, PODNET_CNI_LOG: join(tmp, 'agent-cni.log') },
  });
  agentPid = a.pid;
  for (let i = 0; i < 200 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 25));
  if (!existsSync(sock)) throw new Error('agent did not start');
}

type Samples = Record<string, number[]>;
const samples: Samples = {};
const wall: Record<string, number[]> = {};
function record(key: string, v: number): void {
  (samples[key] ??= []).push(v);
}

async function runOps(c: Contender, command: 'ADD' | 'DEL', workers: number, tag: string): Promise<void> {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: workers }, async () => {
      for (;;) {
        const i = next++;
        if (i >= PODS) return;
        record(`${c.name}|${command}|${tag}`, await call(c, command, pods[i], i, c.agent));
      }
    }),
  );
  (wall[`${c.name}|${command}|${tag}`] ??= []).push(PODS / ((performance.now() - t0) / 1000));
}

function stats(xs: number[]): { min: number; med: number; p95: number } {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * (s.length - 1) + 0.5))];
  return { min: s[0], med: q(0.5), p95: q(0.95) };
}

function median(xs: number[]): number {
  return stats(xs).med;
}

async function main(): Promise<void> {
  if (!existsSync(join(REPO, 'dist/podnet-cni.mjs'))) execFileSync('npm', ['run', 'build'], { cwd: REPO, stdio: 'inherit' });
  for (const p of ['bridge', 'host-local']) {
    if (!existsSync(`/usr/lib/cni/${p}`)) throw new Error(`/usr/lib/cni/${p} missing: install containernetworking-plugins`);
  }
  installCni({ binDir, socket: sock }, [...SUPPORTED_VERSIONS]);
  for (const p of ['bridge', 'host-local']) copyFileSync(`/usr/lib/cni/${p}`, join(binDir, p));
  ip(['netns', 'add', NODE]);
  ip(['-n', NODE, 'link', 'set', 'lo', 'up']);
  for (let i = 0; i < PODS; i++) {
    const n = `${PREFIX}-p${i}`;
    ip(['netns', 'add', n]);
    pods.push(n);
  }
  await startAgent();
  process.stderr.write(`podnet CNI benchmark: ${PODS} pods, ${ROUNDS} rounds, ${WORKERS} concurrent workers\n`);
  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2 === 0 ? CONTENDERS : [...CONTENDERS].reverse();
    for (const c of order) {
      for (const [tag, workers] of [['seq', 1], [`x${WORKERS}`, WORKERS]] as [string, number][]) {
        process.stderr.write(`  round ${r + 1}/${ROUNDS}: ${c.name}, ${tag}\n`);
        await runOps(c, 'ADD', workers, tag);
        await runOps(c, 'DEL', workers, tag);
      }
      for (let i = 0; i < VERSION_RUNS / ROUNDS; i++) record(`${c.name}|VERSION|seq`, await call(c, 'VERSION', pods[0], 0, c.agent));
    }
  }
  const rows: string[][] = [['plugin', 'op', 'workers', 'n', 'min ms', 'median ms', 'p95 ms', 'pods/s', 'ratio (median / reference)']];
  const refName = CONTENDERS[0].name;
  for (const tag of ['seq', `x${WORKERS}`]) {
    for (const op of ['ADD', 'DEL', 'VERSION']) {
      if (op === 'VERSION' && tag !== 'seq') continue;
      const ref = samples[`${refName}|${op}|${tag}`];
      for (const c of CONTENDERS) {
        const xs = samples[`${c.name}|${op}|${tag}`];
        if (!xs) continue;
        const s = stats(xs);
        const rate = wall[`${c.name}|${op}|${tag}`];
        rows.push([c.name, op, tag === 'seq' ? '1' : String(WORKERS), String(xs.length), s.min.toFixed(1), s.med.toFixed(1), s.p95.toFixed(1), rate ? median(rate).toFixed(1) : '-', (s.med / stats(ref).med).toFixed(2)]);
      }
    }
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  for (const [i, r] of rows.entries()) {
    console.log(r.map((x, j) => (j < 3 ? x.padEnd(widths[j]) : x.padStart(widths[j]))).join('  '));
    if (i === 0) console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  }
}

try {
  await main();
} finally {
  cleanup();
}
