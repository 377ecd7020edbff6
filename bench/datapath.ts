// Datapath throughput: iperf3 TCP pod-to-pod across two nodes of a podnet lab (vxlan and
// host-gw), beside shared/bench/datapath-limits.sh (the same paths built by hand with iproute2)
// in the same run. Rounds alternate; medians. A table on stdout with the ratio.
//
//   node --import tsx bench/datapath.ts [--rounds R] [--seconds T]
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

function argNum(flag: string, dflt: number): number {
  const i = process.argv.indexOf(flag);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}
const ROUNDS = argNum('--rounds', 3);
const SECONDS = argNum('--seconds', 5);
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const LIMITS = resolve(REPO, '..', 'shared', 'bench', 'datapath-limits.sh');
const labDir = mkdtempSync(join(tmpdir(), 'podnet-bench-lab-'));
const env = { ...process.env, PODNET_LAB_DIR: labDir };

function lab(args: string[]): string {
  const r = spawnSync(process.execPath, [join(REPO, 'dist/podnet.mjs'), 'lab', ...args], { env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`podnet lab ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

function handBuilt(): Record<string, number> {
  const r = spawnSync('bash', [LIMITS], { env: { ...process.env, T: String(SECONDS) }, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`datapath-limits.sh failed: ${r.stderr}`);
  const get = (label: string) => Number(new RegExp(`${label} Gbit/s: ([0-9.]+)`).exec(r.stdout)?.[1]);
  return { 'host-gw': get('cross-node host-gw'), vxlan: get('cross-node vxlan'), underlay: get('underlay node-node') };
}

function podnet(backend: 'vxlan' | 'host-gw'): number {
  const name = `bench${backend === 'vxlan' ? 'vx' : 'gw'}`;
  lab(['up', '--name', name, '--nodes', '2', '--backend', backend]);
  try {
    lab(['pod', 'add', 'a', '--node', 'n1', '--name', name]);
    lab(['pod', 'add', 'b', '--node', 'n2', '--name', name]);
    const st = JSON.parse(readFileSync(join(labDir, name, 'state.json'), 'utf8')) as { pods: Record<string, { ips: string[] }> };
    const server = st.pods.b.ips[0];
    lab(['exec', 'b', '--name', name, '--', 'iperf3', '-s', '-1', '-D', '-B', server]);
    spawnSync('sleep', ['0.3']);
    const out = lab(['exec', 'a', '--name', name, '--', 'iperf3', '-c', server, '-t', String(SECONDS), '-J']);
    return JSON.parse(out).end.sum_received.bits_per_second / 1e9;
  } finally {
    lab(['down', '--name', name]);
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

try {
  if (!existsSync(LIMITS)) {
    console.log(`skipped: ${LIMITS} is missing (the hand-built reference lives in ../shared)`);
    process.exit(0);
  }
  if (!existsSync(join(REPO, 'dist/podnet.mjs'))) spawnSync('npm', ['run', 'build'], { cwd: REPO, stdio: 'inherit' });
  const ref: Record<string, number[]> = { vxlan: [], 'host-gw': [], underlay: [] };
  const ours: Record<string, number[]> = { vxlan: [], 'host-gw': [] };
  for (let r = 0; r < ROUNDS; r++) {
    const steps: (() => void)[] = [
      () => {
        const h = handBuilt();
        for (const k of Object.keys(ref)) ref[k].push(h[k]);
      },
      () => ours.vxlan.push(podnet('vxlan')),
      () => ours['host-gw'].push(podnet('host-gw')),
    ];
    if (r % 2) steps.reverse();
    for (const s of steps) {
      process.stderr.write(`  round ${r + 1}/${ROUNDS}\n`);
      s();
    }
  }
  const rows = [['path', `hand-built Gbit/s (median of ${ROUNDS})`, 'podnet lab Gbit/s', 'ratio', 'target']];
  for (const k of ['vxlan', 'host-gw'] as const) {
    rows.push([`cross-node ${k}`, median(ref[k]).toFixed(2), median(ours[k]).toFixed(2), (median(ours[k]) / median(ref[k])).toFixed(3), '>= 0.95']);
  }
  rows.push(['underlay node-node (for scale)', median(ref.underlay).toFixed(2), '-', '-', '-']);
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  for (const [i, r] of rows.entries()) {
    console.log(r.map((x, j) => x.padEnd(w[j])).join('  '));
    if (i === 0) console.log(w.map((n) => '-'.repeat(n)).join('  '));
  }
} finally {
  rmSync(labDir, { recursive: true, force: true });
}
