// The tun backend's datapath against the others (issue 11's Benchmark), in one run, across two
// nodes of a lab (pod a on n1, pod b on n2), iperf3 TCP pod to pod, one stream and 4 (-P 4):
//   - tun: `podnet lab up --backend tun`, podnet-tund in each node (started by the agents);
//   - vxlan: a second lab, `--backend vxlan` (kernel VXLAN, podnet's wiring);
//   - kernel (hand-built): ../shared/bench/datapath-limits.sh as it is (its cross-node vxlan and
//     host-gw lines; the script measures one stream only, so no -P 4 for it);
//   - naive: bench/naive-tun-forwarder.c (one read + one sendto per packet, one recvfrom + one
//     write per packet), compiled here with cc into a temp dir, run in place of podnet-tund on the
//     tun lab's nodes: the agents are stopped (SIGTERM: podnet-tund survives it), each node's
//     podnet-tund is stopped by PID (the supervisor's stopTund), naive attaches to the same
//     podnet.tun and reads the same peers file; afterwards naive is stopped and the agents are
//     started again, which start a podnet-tund each since none runs.
// Rounds interleave the paths (order reversed every other round); medians per path. CPU seconds
// per GB moved for tun and naive: utime+stime of the forwarder processes (/proc/PID/stat, all
// threads) on both nodes, before and after each single-stream run, over the bytes iperf3 moved.
// The agent-restart loss: ping -i 0.01 from a to b across a `kill -9` of n2's agent and its
// restart (`lab agent restart n2 --kill`), % lost. Ratios tun/naive (target ≥ 3) and tun/vxlan
// (target ≥ 0.40, goal 0.70), single stream, as MET or MISSED.
//
//   node --import tsx bench/tun.ts [--rounds R (default 3)] [--seconds T (default 5)]
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { findTund, stopTund, tundBinary } from '../src/agent/tund/index.js';
import { argNum, handBuilt, iperf, lab as runLab, median, REPO, waitPing } from './lab-bench.js';

const ROUNDS = argNum('--rounds', 3);
const SECONDS = argNum('--seconds', 5);
const labDir = mkdtempSync(join(tmpdir(), 'podnet-bench-tun-'));
const binDir = mkdtempSync(join(tmpdir(), 'podnet-bench-naive-'));
process.env.PODNET_LAB_DIR = labDir;
const env = { ...process.env };
const TAG = randomBytes(2).toString('hex');
const LABS = { tun: `bt${TAG}`, vxlan: `bv${TAG}` } as const;
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface LabNodeSt {
  name: string;
  ns: string;
  ip: string;
  dir: string;
}
interface LabSt {
  nodes: Record<string, LabNodeSt>;
  pods: Record<string, { ns: string; ips: string[] }>;
}

const lab = (args: string[]) => runLab(args, env);
const labState = (name: string): LabSt => JSON.parse(readFileSync(join(labDir, name, 'state.json'), 'utf8')) as LabSt;
const agentDir = (n: LabNodeSt) => join(n.dir, 'agent');

/** utime+stime of a process (all its threads), in seconds. */
function cpuSeconds(pid: number): number {
  const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = st.slice(st.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3; utime is field 14, stime 15
  return (Number(rest[11]) + Number(rest[12])) / CLK_TCK;
}


function setUp(name: string, backend: 'tun' | 'vxlan'): LabSt {
  lab(['up', '--name', name, '--nodes', '2', '--backend', backend, '--proxy-mode', 'off']);
  lab(['pod', 'add', 'a', '--node', 'n1', '--name', name]);
  lab(['pod', 'add', 'b', '--node', 'n2', '--name', name]);
  return labState(name);
}

const naiveProcs: ChildProcess[] = [];

/** Replaces podnet-tund with the naive forwarder on both nodes; returns the naive PIDs. */
async function startNaive(st: LabSt, bin: string): Promise<number[]> {
  for (const n of Object.values(st.nodes)) lab(['agent', 'stop', n.name, '--name', LABS.tun]);
  for (const n of Object.values(st.nodes)) await stopTund(agentDir(n));
  const pids: number[] = [];
  for (const n of Object.values(st.nodes)) {
    const c = spawn('ip', ['netns', 'exec', n.ns, bin, '--dev', 'podnet.tun', '--listen', n.ip, '--port', '8285', '--peers', join(agentDir(n), 'tund', 'peers')], { stdio: ['ignore', 'ignore', 'inherit'] });
    naiveProcs.push(c);
    pids.push(c.pid!);
  }
  await waitPing(st.pods.a.ns, st.pods.b.ips[0], 'naive forwarder');
  return pids;
}

/** Stops the naive forwarders (by PID) and starts the agents again, which start podnet-tund. */
async function stopNaive(st: LabSt): Promise<void> {
  for (const c of naiveProcs.splice(0)) {
    if (c.exitCode !== null || c.signalCode !== null) continue;
    c.kill('SIGTERM');
    await new Promise((r) => c.once('exit', r));
  }
  for (const n of Object.values(st.nodes)) lab(['agent', 'start', n.name, '--name', LABS.tun]);
  const t0 = Date.now();
  while (!Object.values(st.nodes).every((n) => findTund(agentDir(n)))) {
    if (Date.now() - t0 > 20_000) throw new Error('the agents did not start podnet-tund again within 20 s');
    await sleep(100);
  }
  await waitPing(st.pods.a.ns, st.pods.b.ips[0], 'podnet-tund after naive');
}

function tundPids(st: LabSt): number[] {
  return Object.values(st.nodes).map((n) => {
    const p = findTund(agentDir(n));
    if (!p) throw new Error(`no podnet-tund on ${n.name}`);
    return p.pid;
  });
}

/** One single-stream run with the CPU of the given forwarder processes; then -P 4. */
function measureWithCpu(st: LabSt, pids: number[]): { p1: number; p4: number; cpuPerGB: number } {
  const c0 = pids.reduce((s, p) => s + cpuSeconds(p), 0);
  const r1 = iperf(st.pods.a.ns, st.pods.b.ns, st.pods.b.ips[0], SECONDS, 1);
  const c1 = pids.reduce((s, p) => s + cpuSeconds(p), 0);
  const r4 = iperf(st.pods.a.ns, st.pods.b.ns, st.pods.b.ips[0], SECONDS, 4);
  return { p1: r1.gbps, p4: r4.gbps, cpuPerGB: (c1 - c0) / (r1.bytes / 1e9) };
}

async function restartLoss(st: LabSt): Promise<{ sent: number; received: number; lossPct: number }> {
  const pinger = spawn('ip', ['netns', 'exec', st.pods.a.ns, 'ping', '-n', '-q', '-i', '0.01', '-w', '8', st.pods.b.ips[0]], { stdio: ['ignore', 'pipe', 'ignore'] });
  let out = '';
  pinger.stdout.on('data', (d) => (out += d));
  const done = new Promise((r) => pinger.once('close', r));
  await sleep(2000);
  lab(['agent', 'restart', 'n2', '--kill', '--name', LABS.tun]);
  await done;
  const m = /(\d+) packets transmitted, (\d+) received/.exec(out);
  if (!m) throw new Error(`ping: ${out}`);
  const sent = Number(m[1]);
  const received = Number(m[2]);
  return { sent, received, lossPct: (1 - received / sent) * 100 };
}

const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : '-');

async function main(): Promise<void> {
  if (!existsSync(join(REPO, 'dist/podnet.mjs')) || !existsSync(tundBinary())) execFileSync('npm', ['run', 'build'], { cwd: REPO, stdio: 'inherit' });
  const naiveBin = join(binDir, 'naive-tun-forwarder');
  execFileSync('cc', ['-O2', '-pthread', '-o', naiveBin, join(REPO, 'bench', 'naive-tun-forwarder.c')], { stdio: 'inherit' });
  process.stderr.write(`labs ${LABS.tun} (tun) and ${LABS.vxlan} (vxlan), ${ROUNDS} rounds of ${SECONDS} s runs\n`);
  const tun = setUp(LABS.tun, 'tun');
  const vx = setUp(LABS.vxlan, 'vxlan');
  await waitPing(tun.pods.a.ns, tun.pods.b.ips[0], 'tun');
  await waitPing(vx.pods.a.ns, vx.pods.b.ips[0], 'vxlan');

  const res = {
    tun: { p1: [] as number[], p4: [] as number[], cpu: [] as number[] },
    naive: { p1: [] as number[], p4: [] as number[], cpu: [] as number[] },
    vxlan: { p1: [] as number[], p4: [] as number[] },
    kernel: { vxlan: [] as number[], hostgw: [] as number[] },
  };
  const steps: Record<string, () => Promise<void>> = {
    tun: async () => {
      const m = measureWithCpu(tun, tundPids(tun));
      res.tun.p1.push(m.p1);
      res.tun.p4.push(m.p4);
      res.tun.cpu.push(m.cpuPerGB);
    },
    vxlan: async () => {
      res.vxlan.p1.push(iperf(vx.pods.a.ns, vx.pods.b.ns, vx.pods.b.ips[0], SECONDS, 1).gbps);
      res.vxlan.p4.push(iperf(vx.pods.a.ns, vx.pods.b.ns, vx.pods.b.ips[0], SECONDS, 4).gbps);
    },
    kernel: async () => {
      const h = handBuilt(SECONDS);
      res.kernel.vxlan.push(h.vxlan);
      res.kernel.hostgw.push(h['host-gw']);
    },
    naive: async () => {
      const pids = await startNaive(tun, naiveBin);
      try {
        const m = measureWithCpu(tun, pids);
        res.naive.p1.push(m.p1);
        res.naive.p4.push(m.p4);
        res.naive.cpu.push(m.cpuPerGB);
      } finally {
        await stopNaive(tun);
      }
    },
  };
  const order = ['tun', 'vxlan', 'kernel', 'naive'];
  for (let r = 0; r < ROUNDS; r++) {
    const o = r % 2 === 0 ? order : [...order].reverse();
    for (const k of o) {
      process.stderr.write(`  round ${r + 1}: ${k}\n`);
      await steps[k]();
    }
  }
  process.stderr.write('  agent restart loss\n');
  const loss = await restartLoss(tun);

  const T1 = median(res.tun.p1);
  const N1 = median(res.naive.p1);
  const V1 = median(res.vxlan.p1);
  const rows: string[][] = [
    ['path', '1 stream Gbit/s', '4 streams Gbit/s', 'CPU s/GB (forwarders, both nodes)', 'per round (1 stream)'],
    ['tun (podnet-tund)', f2(T1), f2(median(res.tun.p4)), f2(median(res.tun.cpu)), res.tun.p1.map(f2).join(' ')],
    ['vxlan (podnet lab)', f2(V1), f2(median(res.vxlan.p4)), '-', res.vxlan.p1.map(f2).join(' ')],
    ['kernel vxlan (hand-built)', f2(median(res.kernel.vxlan)), '-', '-', res.kernel.vxlan.map(f2).join(' ')],
    ['kernel host-gw (hand-built)', f2(median(res.kernel.hostgw)), '-', '-', res.kernel.hostgw.map(f2).join(' ')],
    ['naive forwarder', f2(N1), f2(median(res.naive.p4)), f2(median(res.naive.cpu)), res.naive.p1.map(f2).join(' ')],
  ];
  const w = rows[0].map((_, i) => Math.max(...rows.map((x) => x[i].length)));
  console.log(`iperf3 TCP pod to pod across two lab nodes, ${SECONDS} s per run, medians of ${ROUNDS} interleaved rounds\n`);
  for (const row of rows) console.log('  ' + row.map((c, i) => c.padEnd(w[i] + 2)).join('').trimEnd());
  const tn = T1 / N1;
  const tv = T1 / V1;
  const paired = (a: number[], b: number[]) => median(a.map((x, i) => x / b[i]));
  console.log('');
  console.log(`  tun / naive (1 stream): ${f2(tn)} (paired per round: ${f2(paired(res.tun.p1, res.naive.p1))}); target ≥ 3: ${tn >= 3 ? 'MET' : 'MISSED'}`);
  console.log(`  tun / vxlan (1 stream): ${f2(tv)} (paired per round: ${f2(paired(res.tun.p1, res.vxlan.p1))}); target ≥ 0.40: ${tv >= 0.4 ? 'MET' : 'MISSED'}; goal ≥ 0.70: ${tv >= 0.7 ? 'MET' : 'MISSED'}`);
  console.log(`  tun / vxlan (4 streams): ${f2(median(res.tun.p4) / median(res.vxlan.p4))}; tun / naive (4 streams): ${f2(median(res.tun.p4) / median(res.naive.p4))}`);
  console.log(`  CPU per GB: naive / tun = ${f2(median(res.naive.cpu) / median(res.tun.cpu))}`);
  console.log(`  agent restart (kill -9 + restart of n2's agent, ping -i 0.01 for 8 s): ${loss.sent} sent, ${loss.received} received, ${loss.lossPct.toFixed(2)}% lost; target ≤ 1%: ${loss.lossPct <= 1 ? 'MET' : 'MISSED'}`);
}

async function cleanup(): Promise<void> {
  for (const c of naiveProcs) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const l of Object.values(LABS)) if (existsSync(join(labDir, l))) spawnSync(process.execPath, [join(REPO, 'dist/podnet.mjs'), 'lab', 'down', '--name', l], { env, stdio: 'ignore' });
  rmSync(labDir, { recursive: true, force: true });
  rmSync(binDir, { recursive: true, force: true });
}

process.once('SIGINT', () => void cleanup().finally(() => process.exit(130)));
main()
  .then(cleanup, async (e) => {
    console.error(`bench/tun.ts: ${(e as Error).message}`);
    await cleanup();
    process.exitCode = 1;
  });
