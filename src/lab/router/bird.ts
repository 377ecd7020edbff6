// BIRD 2 as the lab's router: one config file, one process (`bird -f`, so the PID recorded is the
// daemon's), its control socket in the lab's dir. Reconfiguring (`birdc configure`) starts the
// protocols of new neighbours and stops those of removed ones; the others keep their sessions.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { formatIP, masked, tryParseCidr } from '../../util/ip.js';
import { isAlive, runAsync, startDetached, stopProcess, tail } from '../sys.js';
import type { ProcRef } from '../state.js';
import type { RouterDaemon, RouterFiles, RouterPlan } from './types.js';

const BIRD = '/usr/sbin/bird';
const BIRDC = '/usr/sbin/birdc';

function paths(files: RouterFiles) {
  return { conf: join(files.dir, 'bird.conf'), sock: join(files.dir, 'bird.ctl'), pid: join(files.dir, 'bird.pid') };
}

/** BIRD protocol names start with a letter; node names may not. */
export function protocolName(node: string): string {
  return `node_${node}`;
}

function prefixSet(nets: string[], family: 4 | 6): string {
  const max = family === 4 ? 32 : 128;
  const items = nets
    .map((n) => tryParseCidr(n))
    .filter((c) => c && c.family === family)
    .map((c) => `${formatIP(masked(c!).addr)}/${c!.prefix}{${c!.prefix},${max}}`);
  return items.length > 0 ? `[ ${items.join(', ')} ]` : '';
}

/** The whole bird.conf for a plan (pure). */
export function renderBirdConfig(plan: RouterPlan): string {
  const v4 = prefixSet(plan.clusterNetworks, 4);
  const v6 = prefixSet(plan.clusterNetworks, 6);
  const keepalive = Math.max(1, Math.floor(plan.holdTime / 3));
  const lines = [
    '# written by podnet lab: the router joining the racks, every node an eBGP neighbour',
    'log stderr all;',
    `router id ${plan.routerId};`,
    '',
    'protocol device { scan time 2; }',
    '',
    // only pod subnets from the nodes, nothing else they might send
    `filter pods4 { ${v4 ? `if net ~ ${v4} then accept; ` : ''}reject; }`,
    `filter pods6 { ${v6 ? `if net ~ ${v6} then accept; ` : ''}reject; }`,
    '',
    // the learned pod routes go into the router namespace's kernel table; with `graceful restart`
    // a router started with -R keeps the kernel routes until its sessions have converged
    'protocol kernel kernel4 { ipv4 { import none; export where source = RTS_BGP; }; learn off; scan time 10; graceful restart on; }',
    'protocol kernel kernel6 { ipv6 { import none; export where source = RTS_BGP; }; learn off; scan time 10; graceful restart on; }',
    '',
    'template bgp podnode {',
    `  local as ${plan.asn};`,
    `  hold time ${plan.holdTime}; keepalive time ${keepalive};`,
    // reconnect at once: the lab shows what survives an agent's or the router's restart, and
    // BIRD's defaults (5 s before the first connect, 120 s between retries, 60 s after an error)
    // would hide it
    '  connect delay time 1; connect retry time 1; error wait time 1, 4; error forget time 10;',
    `  graceful restart on; graceful restart time ${plan.restartTime};`,
    '  ipv4 { import filter pods4; export where source = RTS_BGP; };',
    '  ipv6 { import filter pods6; export where source = RTS_BGP; };',
    '}',
    '',
    ...plan.neighbors.map((n) => `protocol bgp ${protocolName(n.name)} from podnode { description "${n.name}"; neighbor ${n.address} as ${n.asn}; }`),
    '',
  ];
  return lines.join('\n');
}

async function birdc(files: RouterFiles, args: string[], timeoutMs = 10_000): Promise<{ code: number; out: string }> {
  const r = await runAsync(BIRDC, ['-s', paths(files).sock, ...args], { timeoutMs });
  return { code: r.code, out: (r.stdout + r.stderr).trim() };
}

/** `show protocols all`: the neighbour address and BGP state of each bgp protocol. */
export function parseBirdProtocols(out: string): Record<string, string> {
  const res: Record<string, string> = {};
  // blocks start with a line "<name> BGP <table> <state> <since> <info>"
  const blocks = out.split(/\n(?=\S)/);
  for (const b of blocks) {
    const head = b.split('\n')[0].trim().split(/\s+/);
    if (head[1] !== 'BGP') continue;
    const state = /BGP state:\s+(\S+)/.exec(b)?.[1] ?? head[5] ?? head[3];
    const addr = /Neighbor address:\s+(\S+)/.exec(b)?.[1];
    if (addr) res[addr] = state;
  }
  return res;
}

export const bird: RouterDaemon = {
  kind: 'bird',
  pkg: 'bird2',

  preflight() {
    for (const f of [BIRD, BIRDC]) if (!existsSync(f)) throw new Error(`--router bird needs ${f}: install the Debian package bird2 (apt-get install bird2)`);
  },

  async start(ns: string, plan: RouterPlan, files: RouterFiles): Promise<ProcRef[]> {
    this.preflight();
    mkdirSync(files.dir, { recursive: true });
    const p = paths(files);
    writeFileSync(p.conf, renderBirdConfig(plan));
    const check = await runAsync(BIRD, ['-p', '-c', p.conf]);
    if (check.code !== 0) throw new Error(`bird rejected ${p.conf}: ${(check.stdout + check.stderr).trim()}`);
    // -R after the first start: a router coming back from a crash keeps its kernel routes
    // until the sessions have converged (graceful restart as the restarting side)
    const restarting = existsSync(join(files.dir, 'started-once'));
    const proc = startDetached(['ip', 'netns', 'exec', ns, BIRD, '-f', '-c', p.conf, '-s', p.sock, '-P', p.pid, ...(restarting ? ['-R'] : [])], files.log);
    writeFileSync(join(files.dir, 'started-once'), '');
    const until = Date.now() + 15_000;
    for (;;) {
      if (!isAlive(proc)) throw new Error(`bird exited at start; the end of ${files.log}:\n${tail(files.log)}`);
      const r = await birdc(files, ['show', 'status'], 3000);
      if (r.code === 0 && /Daemon is up and running|BIRD [\d.]+ ready/.test(r.out)) return [proc];
      if (Date.now() > until) {
        await stopProcess(proc, 'SIGTERM', 3000);
        throw new Error(`bird did not answer on ${p.sock} within 15 s (${r.out}); the end of ${files.log}:\n${tail(files.log)}`);
      }
      await sleep(100);
    }
  },

  async reload(_ns: string, plan: RouterPlan, files: RouterFiles): Promise<void> {
    const p = paths(files);
    writeFileSync(p.conf, renderBirdConfig(plan));
    const r = await birdc(files, ['configure']);
    if (r.code !== 0 || !/Reconfigur/.test(r.out)) throw new Error(`birdc configure: ${r.out}`);
  },

  execArgv(argv: string[], files: RouterFiles): string[] {
    if (argv[0] !== 'birdc' && argv[0] !== BIRDC) return argv;
    if (argv.includes('-s')) return argv;
    return [argv[0], '-s', paths(files).sock, ...argv.slice(1)];
  },

  async sessions(_ns: string, files: RouterFiles): Promise<Record<string, string>> {
    const r = await birdc(files, ['show', 'protocols', 'all']);
    if (r.code !== 0) throw new Error(`birdc show protocols: ${r.out}`);
    return parseBirdProtocols(r.out);
  },
};
