// `podnet demo`: pods in throw-away namespaces, wired through the real CNI path (the installed
// thin client, the agent, the kernel), a reachability matrix, what was built, then teardown.
// Everything lives in namespaces named pndemo-*; the root namespace is never touched.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { installCni, packageRoot } from '../cni/install.js';
import { SUPPORTED_VERSIONS } from '../cni/version.js';
import { Progress } from '../util/progress.js';
import { pingFrom } from '../util/ping.js';

const STATE = '/run/podnet-demo.json';

interface DemoPod {
  name: string;
  ns: string;
  mode: string;
  conf: Record<string, unknown>;
  ips: string[];
  mac?: string;
}

function ip(args: string[], allowFail = false): string {
  try {
    return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    if (allowFail) return '';
    throw new Error(`ip ${args.join(' ')}: ${(e as { stderr?: string }).stderr ?? (e as Error).message}`);
  }
}

function netConf(name: string, mode: string, plugin: Record<string, unknown>, ranges: unknown, dataDir: string): Record<string, unknown> {
  return { cniVersion: '1.1.0', name, type: 'podnet', mode, ...plugin, ipam: { type: 'podnet-ipam', ranges, dataDir } };
}

function cni(binDir: string, nodeNs: string, command: string, pod: DemoPod, sock: string): { code: number; out: string } {
  const env = {
    PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: command,
    CNI_CONTAINERID: `demo-${pod.name}`,
    CNI_NETNS: `/run/netns/${pod.ns}`,
    CNI_IFNAME: 'eth0',
    CNI_PATH: binDir,
    PODNET_SOCKET: sock,
    PODNET_CNI_LOG: join(binDir, '..', 'cni.log'),
  };
  try {
    const out = execFileSync('ip', ['netns', 'exec', nodeNs, join(binDir, 'podnet')], { env, input: JSON.stringify(pod.conf), encoding: 'utf8' });
    return { code: 0, out };
  } catch (e) {
    const err = e as { status?: number; stdout?: string };
    return { code: err.status ?? 1, out: err.stdout ?? '' };
  }
}

const ping = (ns: string, dst: string): boolean => pingFrom(ns, dst);

function cleanupFrom(state: { prefix: string; tmp: string; agentPid?: number }): void {
  if (state.agentPid) {
    try {
      process.kill(state.agentPid, 'SIGTERM');
    } catch {
      /* gone */
    }
  }
  for (const line of ip(['netns', 'list'], true).split('\n')) {
    const n = line.split(' ')[0];
    if (n && n.startsWith(state.prefix)) ip(['netns', 'del', n], true);
  }
  rmSync(state.tmp, { recursive: true, force: true });
}

export async function runDemo(o: { keep?: boolean; cleanup?: boolean; standalone?: boolean; output: string }): Promise<number> {
  if (o.cleanup) {
    if (!existsSync(STATE)) {
      console.log('no kept demo to remove');
      return 0;
    }
    cleanupFrom(JSON.parse(readFileSync(STATE, 'utf8')));
    rmSync(STATE, { force: true });
    console.log('removed the kept demo');
    return 0;
  }
  const json = o.output === 'json';
  const progress = new Progress(json ? null : process.stderr);
  const prefix = `pndemo-${process.pid.toString(36)}`;
  const tmp = mkdtempSync(join(tmpdir(), 'podnet-demo-'));
  const binDir = join(tmp, 'bin');
  const sock = join(tmp, 'podnet.sock');
  const nodeNs = `${prefix}-node`;
  const fabricNs = `${prefix}-fabric`;
  let agent: ChildProcess | undefined;
  const state = { prefix, tmp, agentPid: undefined as number | undefined };
  const onSignal = () => {
    cleanupFrom(state);
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const pods: DemoPod[] = [];
  try {
    progress.step('creating node and underlay namespaces');
    for (const n of [nodeNs, fabricNs]) {
      ip(['netns', 'add', n]);
      ip(['-n', n, 'link', 'set', 'lo', 'up']);
    }
    ip(['-n', nodeNs, 'link', 'add', 'name', 'eth0', 'type', 'veth', 'peer', 'name', 'uplink', 'netns', fabricNs]);
    ip(['-n', nodeNs, 'addr', 'add', '192.168.250.2/24', 'dev', 'eth0']);
    ip(['-n', nodeNs, 'link', 'set', 'eth0', 'up']);
    ip(['-n', nodeNs, 'route', 'add', 'default', 'via', '192.168.250.1']);
    ip(['-n', fabricNs, 'addr', 'add', '192.168.250.1/24', 'dev', 'uplink']);
    ip(['-n', fabricNs, 'link', 'set', 'uplink', 'up']);
    // the underlay router knows where the node's pod networks are, and routes
    ip(['-n', fabricNs, 'route', 'add', '10.250.0.0/16', 'via', '192.168.250.2']);
    execFileSync('ip', ['netns', 'exec', fabricNs, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);

    progress.step('installing the CNI executables');
    installCni({ binDir, socket: sock }, [...SUPPORTED_VERSIONS]);

    if (!o.standalone) {
      progress.step('starting the podnet agent in the node namespace');
      const bundle = join(packageRoot(), 'dist', 'podnet.mjs');
      agent = spawn('ip', ['netns', 'exec', nodeNs, process.execPath, bundle, 'agent', '--socket', sock, '--log-level', 'warn'], { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, PODNET_CNI_LOG: join(tmp, 'cni.log') } });
      state.agentPid = agent.pid;
      for (let i = 0; i < 100 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
      if (!existsSync(sock)) throw new Error('the agent did not open its socket within 5 s');
    }

    const dataDir = join(tmp, 'ipam');
    const bridgeConf = netConf('demo-bridge', 'bridge', { bridge: 'pndemo0', isGateway: true, isDefaultGateway: true, ipMasq: true, hairpinMode: true }, [[{ subnet: '10.250.1.0/24' }], [{ subnet: 'fd00:250:1::/64' }]], dataDir);
    const routedConf = netConf('demo-routed', 'routed', {}, [[{ subnet: '10.250.2.0/24' }], [{ subnet: 'fd00:250:2::/64' }]], dataDir);
    const macvlanConf = netConf('demo-underlay', 'macvlan', { master: 'eth0', hostReachable: true }, [[{ subnet: '192.168.250.0/24', rangeStart: '192.168.250.100', rangeEnd: '192.168.250.150', gateway: '192.168.250.1' }]], dataDir);
    const plan: [string, string, Record<string, unknown>][] = [
      ['bridge-a', 'bridge', bridgeConf],
      ['bridge-b', 'bridge', bridgeConf],
      ['routed-a', 'routed', routedConf],
      ['routed-b', 'routed', routedConf],
      ['underlay-a', 'macvlan', macvlanConf],
      ['underlay-b', 'macvlan', macvlanConf],
    ];
    for (const [name, mode, conf] of plan) {
      progress.step(`CNI ADD ${name} (${mode})`);
      const pod: DemoPod = { name, ns: `${prefix}-${name}`, mode, conf, ips: [] };
      ip(['netns', 'add', pod.ns]);
      ip(['-n', pod.ns, 'link', 'set', 'lo', 'up']);
      pods.push(pod);
      const t0 = process.hrtime.bigint();
      const r = cni(binDir, nodeNs, 'ADD', pod, sock);
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (r.code !== 0) throw new Error(`CNI ADD ${name} failed (exit ${r.code}): ${r.out.trim()}`);
      const res = JSON.parse(r.out) as { ips: { address: string }[]; interfaces: { name: string; mac?: string; sandbox?: string }[] };
      pod.ips = res.ips.map((i) => i.address.split('/')[0]);
      pod.mac = res.interfaces.find((i) => i.sandbox)?.mac;
      progress.done(`${pod.ips.join(', ')} in ${ms.toFixed(0)} ms`);
    }

    progress.step('pinging every pod from every pod, the node and the underlay');
    const sources: { name: string; ns: string }[] = [...pods.map((p) => ({ name: p.name, ns: p.ns })), { name: 'node', ns: nodeNs }];
    const matrix: Record<string, Record<string, boolean>> = {};
    let failures = 0;
    for (const s of sources) {
      matrix[s.name] = {};
      for (const d of pods) {
        if (d.name === s.name) continue;
        const okv4 = ping(s.ns, d.ips.find((x) => !x.includes(':'))!);
        const v6 = d.ips.find((x) => x.includes(':'));
        const srcPod = pods.find((p) => p.name === s.name);
        const v6ok = v6 && srcPod && srcPod.mode === d.mode && d.mode !== 'macvlan' ? ping(s.ns, v6) : undefined;
        const ok = okv4 && v6ok !== false;
        matrix[s.name][d.name] = ok;
        if (!ok) failures++;
      }
    }
    if (failures) progress.fail(`${failures} unreachable pairs`);
    else progress.done('all pairs reachable');

    const built = {
      nodeLinks: ip(['-n', nodeNs, '-br', 'link']).trim(),
      nodeRoutes: ip(['-n', nodeNs, 'route']).trim(),
      nft: execFileSync('ip', ['netns', 'exec', nodeNs, 'nft', 'list', 'table', 'inet', 'podnet'], { encoding: 'utf8' }).trim(),
    };
    if (json) {
      console.log(JSON.stringify({ pods: pods.map(({ name, mode, ips, mac, ns }) => ({ name, mode, ips, mac, netns: ns })), matrix, built }, null, 2));
    } else {
      console.log('\nPods (CNI ADD through the installed plugin' + (o.standalone ? ', standalone' : ', served by the agent') + '):');
      for (const p of pods) console.log(`  ${p.name.padEnd(11)} ${p.mode.padEnd(8)} eth0 ${p.mac ?? ''}  ${p.ips.join('  ')}`);
      const names = pods.map((p) => p.name);
      console.log('\nReachability (ping; row = source, column = destination; IPv6 too between pods of one network):');
      console.log('  ' + ''.padEnd(11) + names.map((n) => n.padEnd(11)).join(''));
      for (const s of sources) console.log('  ' + s.name.padEnd(11) + names.map((n) => (n === s.name ? '-' : matrix[s.name][n] ? 'ok' : 'FAIL').padEnd(11)).join(''));
      console.log('\nWhat was built on the node:\n' + built.nodeLinks.replace(/^/gm, '  ') + '\n\n' + built.nodeRoutes.replace(/^/gm, '  ') + '\n\n' + built.nft.replace(/^/gm, '  '));
    }
    if (o.keep) {
      writeFileSync(STATE, JSON.stringify(state));
      console.log(`\nkept: namespaces ${prefix}-*; remove with \`podnet demo --cleanup\``);
      agent?.unref();
      return failures ? 1 : 0;
    }
    progress.step('CNI DEL every pod');
    for (const p of pods.reverse()) {
      const r = cni(binDir, nodeNs, 'DEL', p, sock);
      if (r.code !== 0) throw new Error(`CNI DEL ${p.name} failed: ${r.out}`);
    }
    const left = readLeftovers(nodeNs, dataDir);
    progress.done(left.length ? `left behind: ${left.join(', ')}` : 'nothing left behind');
    return failures || left.length ? 1 : 0;
  } catch (e) {
    progress.fail((e as Error).message);
    return 1;
  } finally {
    if (!o.keep) {
      progress.step('removing the namespaces');
      cleanupFrom(state);
      progress.done('done');
    }
  }
}

function readLeftovers(nodeNs: string, dataDir: string): string[] {
  const left: string[] = [];
  const links = JSON.parse(ip(['-n', nodeNs, '-j', 'link'])) as { ifname: string }[];
  for (const l of links) if (l.ifname.startsWith('veth')) left.push(`link ${l.ifname}`);
  for (const net of ['demo-bridge', 'demo-routed', 'demo-underlay']) {
    const dir = join(dataDir, net);
    if (!existsSync(dir)) continue;
    for (const f of execFileSync('ls', [dir], { encoding: 'utf8' }).split('\n')) if (/^[0-9a-f.:]+$/.test(f) && f) left.push(`reservation ${f}`);
  }
  return left;
}
