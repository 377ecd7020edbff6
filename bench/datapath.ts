// Datapath throughput: iperf3 TCP pod-to-pod across two nodes built by podnet (vxlan and
// host-gw), beside shared/bench/datapath-limits.sh (the same paths built by hand with iproute2)
// in the same run: once on the script's own underlay (a direct veth), once in the lab (whose
// underlay is a bridge). Rounds alternate; medians. A table on stdout with the ratios.
//
//   node --import tsx bench/datapath.ts [--rounds R] [--seconds T]
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { installCni } from '../src/cni/install.js';
import { SUPPORTED_VERSIONS } from '../src/cni/version.js';
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

/**
 * podnet on exactly the hand-built script's underlay (a direct veth between two nodes, no
 * fabric bridge): agents, file store, pods through the installed CNI client. This is the
 * like-for-like comparison; the lab adds an underlay bridge hop.
 */
function podnetDirect(backend: 'vxlan' | 'host-gw'): number {
  const P = `pnbd${process.pid.toString(36)}`;
  const dir = mkdtempSync(join(tmpdir(), `${P}-`));
  const nss = ['n1', 'n2', 'a', 'b'].map((x) => `${P}-${x}`);
  const agents: ChildProcess[] = [];
  const sh = (args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  try {
    for (const n of nss) {
      sh(['netns', 'add', n]);
      sh(['-n', n, 'link', 'set', 'lo', 'up']);
    }
    sh(['-n', nss[0], 'link', 'add', 'name', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', nss[1]]);
    writeFileSync(join(dir, 'net.json'), JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: backend } }));
    for (const [i, n] of [nss[0], nss[1]].entries()) {
      sh(['-n', n, 'addr', 'add', `10.200.0.${i + 1}/24`, 'dev', 'eth0']);
      sh(['-n', n, 'link', 'set', 'eth0', 'up']);
      execFileSync('ip', ['netns', 'exec', n, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
      const nd = join(dir, `n${i + 1}`);
      installCni({ binDir: join(nd, 'bin'), socket: join(nd, 'sock') }, [...SUPPORTED_VERSIONS]);
      agents.push(
        spawn('ip', ['netns', 'exec', n, process.execPath, join(REPO, 'dist/podnet.mjs'), 'agent', '--config', join(dir, 'net.json'), '--store', `file:${join(dir, 'store')}`, '--iface', 'eth0', '--socket', join(nd, 'sock'), '--subnet-file', join(nd, 'subnet.env'), '--data-dir', join(nd, 'data'), '--log-level', 'warn'], { stdio: 'ignore' }),
      );
    }
    const t0 = Date.now();
    while (![1, 2].every((i) => existsSync(join(dir, `n${i}`, 'subnet.env')))) {
      if (Date.now() - t0 > 20_000) throw new Error('agents did not write their subnet files');
      spawnSync('sleep', ['0.05']);
    }
    const ips: string[] = [];
    for (const [i, pod] of [nss[2], nss[3]].entries()) {
      const nd = join(dir, `n${i + 1}`);
      const conf = { cniVersion: '1.0.0', name: 'bench', type: 'podnet', bridge: 'cni0', isGateway: true, isDefaultGateway: true, ipMasq: true, ipam: { type: 'podnet-ipam', subnetFile: join(nd, 'subnet.env'), dataDir: join(nd, 'ipam') } };
      const out = execFileSync('ip', ['netns', 'exec', nss[i], join(nd, 'bin', 'podnet')], {
        env: { PATH: process.env.PATH, CNI_COMMAND: 'ADD', CNI_CONTAINERID: `bench${i}`, CNI_NETNS: `/run/netns/${pod}`, CNI_IFNAME: 'eth0', CNI_PATH: join(nd, 'bin'), PODNET_CNI_LOG: join(nd, 'cni.log') },
        input: JSON.stringify(conf),
        encoding: 'utf8',
      });
      ips.push(JSON.parse(out).ips[0].address.split('/')[0]);
    }
    // the peers' routes follow the leases within a moment
    for (let i = 0; i < 100 && spawnSync('ip', ['netns', 'exec', nss[2], 'ping', '-c1', '-W1', ips[1]]).status !== 0; i++);
    execFileSync('ip', ['netns', 'exec', nss[3], 'iperf3', '-s', '-1', '-D', '-B', ips[1]]);
    spawnSync('sleep', ['0.3']);
    const out = execFileSync('ip', ['netns', 'exec', nss[2], 'iperf3', '-c', ips[1], '-t', String(SECONDS), '-J'], { encoding: 'utf8' });
    return JSON.parse(out).end.sum_received.bits_per_second / 1e9;
  } finally {
    for (const a of agents) a.kill('SIGKILL');
    for (const n of nss) spawnSync('ip', ['netns', 'del', n]);
    rmSync(dir, { recursive: true, force: true });
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
  const direct: Record<string, number[]> = { vxlan: [], 'host-gw': [] };
  for (let r = 0; r < ROUNDS; r++) {
    const steps: (() => void)[] = [
      () => {
        const h = handBuilt();
        for (const k of Object.keys(ref)) ref[k].push(h[k]);
      },
      () => ours.vxlan.push(podnet('vxlan')),
      () => ours['host-gw'].push(podnet('host-gw')),
      () => direct.vxlan.push(podnetDirect('vxlan')),
      () => direct['host-gw'].push(podnetDirect('host-gw')),
    ];
    if (r % 2) steps.reverse();
    for (const s of steps) {
      process.stderr.write(`  round ${r + 1}/${ROUNDS}\n`);
      s();
    }
  }
  const rows = [['path', `hand-built Gbit/s (median of ${ROUNDS})`, 'podnet, same underlay', 'ratio', 'podnet lab (bridged underlay)', 'ratio', 'target']];
  for (const k of ['vxlan', 'host-gw'] as const) {
    const r = median(ref[k]);
    rows.push([`cross-node ${k}`, r.toFixed(2), median(direct[k]).toFixed(2), (median(direct[k]) / r).toFixed(3), median(ours[k]).toFixed(2), (median(ours[k]) / r).toFixed(3), '>= 0.95']);
  }
  rows.push(['underlay node-node (for scale)', median(ref.underlay).toFixed(2), '-', '-', '-', '-', '-']);
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  for (const [i, r] of rows.entries()) {
    console.log(r.map((x, j) => x.padEnd(w[j])).join('  '));
    if (i === 0) console.log(w.map((n) => '-'.repeat(n)).join('  '));
  }
} finally {
  rmSync(labDir, { recursive: true, force: true });
}
