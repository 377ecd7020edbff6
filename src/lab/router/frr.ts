// FRR as the lab's router: two processes in the router namespace, zebra (the kernel's routing
// table, interfaces) and bgpd (the sessions), each started in the foreground so the PIDs
// recorded are the daemons'. Everything they use is in the lab's router dir: their config
// files, pid files, vty sockets, the zserv socket between them, and a vtysh.conf of the lab's own
// (so `vtysh -c 'write'` writes the daemons' own files there, never /etc/frr's integrated config).
//
// Reloading does not restart bgpd: the neighbours added since the running config are configured
// through vtysh and the removed ones unconfigured (`no neighbor X`), so the sessions that stay are
// not touched.
//
// Graceful restart: zebra runs with -r (the routes it installed stay in the kernel when it
// stops), bgpd announces the F bit (preserve-fw-state), and a router started again runs zebra
// with -K <restart time>: the kept routes stay until bgpd has learned them again (stale ones go
// when the timer ends), so pods keep talking across the racks through a router restart.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { formatIP, masked, tryParseCidr } from '../../util/ip.js';
import { isAlive, procStartTime, runAsync, startDetached, stopProcess, tail } from '../sys.js';
import type { ProcRef } from '../state.js';
import type { RouterDaemon, RouterFiles, RouterNeighbor, RouterPlan } from './types.js';

const ZEBRA = '/usr/lib/frr/zebra';
const BGPD = '/usr/lib/frr/bgpd';
const VTYSH = '/usr/bin/vtysh';
// Debian's FRR is built with --enable-vty-group=frrvty: a daemon refuses to start unless its user
// is in that group, and root is not. Giving the group itself (-g) passes the check without
// adding root to it; the daemons still run as root (uid 0), with no /etc/group change.
const VTY_GROUP = 'frrvty';

function paths(files: RouterFiles) {
  const d = files.dir;
  return {
    zebraConf: join(d, 'zebra.conf'),
    bgpdConf: join(d, 'bgpd.conf'),
    vtyshConf: join(d, 'vtysh.conf'),
    zebraPid: join(d, 'zebra.pid'),
    bgpdPid: join(d, 'bgpd.pid'),
    zserv: join(d, 'zserv.api'),
    /** the vty sockets (zebra.vty, bgpd.vty) are created in this directory */
    vtyDir: d,
    startedOnce: join(d, 'frr-started-once'),
  };
}

function prefixList(name: string, nets: string[], family: 4 | 6): string[] {
  const max = family === 4 ? 32 : 128;
  const kw = family === 4 ? 'ip' : 'ipv6';
  const items = nets
    .map((n) => tryParseCidr(n))
    .filter((c) => c && c.family === family)
    .map((c) => `${formatIP(masked(c!).addr)}/${c!.prefix}${c!.prefix < max ? ` le ${max}` : ''}`);
  // no network of this family: the list denies everything (a route-map naming a missing list
  // would be an accident waiting to happen)
  if (items.length === 0) return [`${kw} prefix-list ${name} seq 5 deny any`];
  return items.map((it, i) => `${kw} prefix-list ${name} seq ${(i + 1) * 5} permit ${it}`);
}

function keepaliveOf(plan: RouterPlan): number {
  return Math.max(1, Math.floor(plan.holdTime / 3));
}

/** The `router bgp` lines of one neighbour (inside `router bgp`, before the address families). */
export function neighborLines(plan: RouterPlan, n: RouterNeighbor): string[] {
  const a = n.address;
  return [
    `neighbor ${a} remote-as ${n.asn}`,
    `neighbor ${a} description ${n.name.replace(/[^\w.:-]/g, '_')}`,
    `neighbor ${a} timers ${keepaliveOf(plan)} ${plan.holdTime}`,
    // reconnect at once (FRR's default connect retry is 120 s), and send updates with no
    // minimum interval (MRAI): the lab shows what survives an agent's or the router's restart
    `neighbor ${a} timers connect 1`,
    `neighbor ${a} advertisement-interval 0`,
  ];
}

/** One neighbour's lines in an address family (`address-family ipv4|ipv6 unicast`). */
export function neighborAfLines(n: RouterNeighbor, family: 4 | 6): string[] {
  return [`neighbor ${n.address} activate`, `neighbor ${n.address} route-map ${family === 4 ? 'pods4-in' : 'pods6-in'} in`];
}

/** bgpd's whole config for a plan (pure). */
export function renderFrrConfig(plan: RouterPlan): string {
  const ind = (ls: string[], n: number) => ls.map((l) => ' '.repeat(n) + l);
  const lines = [
    '! written by podnet lab: the router joining the racks, every node an eBGP neighbour',
    'frr defaults traditional',
    'hostname podnet-lab-router',
    'log stdout informational',
    '!',
    // only pod subnets from the nodes, nothing else they might send
    ...prefixList('pods4', plan.clusterNetworks, 4),
    ...prefixList('pods6', plan.clusterNetworks, 6),
    '!',
    'route-map pods4-in permit 10',
    ' match ip address prefix-list pods4',
    'exit',
    'route-map pods6-in permit 10',
    ' match ipv6 address prefix-list pods6',
    'exit',
    '!',
    `router bgp ${plan.asn}`,
    ` bgp router-id ${plan.routerId}`,
    // eBGP without policy: what the nodes send (through the inbound route-maps) goes on to the
    // other nodes, as BIRD's `export where source = RTS_BGP` does
    ' no bgp ebgp-requires-policy',
    ' no bgp default ipv4-unicast',
    // restarting speaker and helper: the R bit after a restart, routes of a restarting node kept
    // for its restart time; F bit: zebra keeps the forwarding state across our own restart
    ' bgp graceful-restart',
    ` bgp graceful-restart restart-time ${plan.restartTime}`,
    ' bgp graceful-restart preserve-fw-state',
    // after a restart, route selection waits for every peer's End-of-RIB at most this long
    // (FRR's default is 360 s; zebra keeps the kernel routes meanwhile)
    ` bgp graceful-restart select-defer-time ${Math.min(plan.restartTime, 10)}`,
    // a new session gets the table at once: FRR otherwise holds a new peer's first updates for
    // the subgroup coalesce time (1 s) in case more peers join its update group
    ' coalesce-time 0',
    ...ind(plan.neighbors.flatMap((n) => neighborLines(plan, n)), 1),
    ' !',
    ' address-family ipv4 unicast',
    ...ind(plan.neighbors.flatMap((n) => neighborAfLines(n, 4)), 2),
    ' exit-address-family',
    ' !',
    ' address-family ipv6 unicast',
    ...ind(plan.neighbors.flatMap((n) => neighborAfLines(n, 6)), 2),
    ' exit-address-family',
    'exit',
    '!',
    '',
  ];
  return lines.join('\n');
}

/** zebra's config: nothing but the name and the log; the interfaces and addresses are the lab's. */
export function renderZebraConfig(): string {
  return ['! written by podnet lab: zebra installs what bgpd learns into the router namespace', 'hostname podnet-lab-router', 'log stdout informational', '!', ''].join('\n');
}

/**
 * The vtysh commands that take the running bgpd from the neighbours it has (address -> remote
 * AS) to the plan's: removed ones (and those whose AS changed) unconfigured, new ones configured
 * in both address families. Empty when nothing changes (pure).
 */
export function reloadCommands(plan: RouterPlan, current: Record<string, number | undefined>): string[] {
  const want = new Map(plan.neighbors.map((n) => [n.address, n]));
  const remove = Object.keys(current).filter((a) => !want.has(a) || want.get(a)!.asn !== current[a]);
  const add = plan.neighbors.filter((n) => !(n.address in current) || remove.includes(n.address));
  if (remove.length === 0 && add.length === 0) return [];
  const cmds = ['configure terminal', `router bgp ${plan.asn}`, ...remove.map((a) => `no neighbor ${a}`), ...add.flatMap((n) => neighborLines(plan, n))];
  if (add.length > 0) {
    for (const fam of [4, 6] as const) {
      cmds.push(`address-family ${fam === 4 ? 'ipv4' : 'ipv6'} unicast`, ...add.flatMap((n) => neighborAfLines(n, fam)), 'exit-address-family');
    }
  }
  cmds.push('end');
  return cmds;
}

/**
 * The neighbours' states from `show bgp neighbors json` (an object keyed by neighbour address,
 * each with bgpState) or `show bgp summary json` (per address family, peers keyed by address,
 * each with state); with both families in a summary, a session is as its worst family says.
 */
export function parseFrrSessions(json: string): Record<string, string> {
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch {
    throw new Error(`vtysh did not answer with JSON: ${json.slice(0, 200)}`);
  }
  const res: Record<string, string> = {};
  if (!doc || typeof doc !== 'object') return res;
  const obj = doc as Record<string, unknown>;
  for (const [k, v] of Object.entries(obj)) {
    if (!v || typeof v !== 'object') continue;
    const rec = v as Record<string, unknown>;
    if (typeof rec.bgpState === 'string') res[k] = rec.bgpState;
    else if (rec.peers && typeof rec.peers === 'object') {
      for (const [addr, p] of Object.entries(rec.peers as Record<string, unknown>)) {
        const st = (p as { state?: unknown } | null)?.state;
        if (typeof st !== 'string') continue;
        if (res[addr] === undefined || res[addr] === 'Established') res[addr] = st;
      }
    }
  }
  return res;
}

/** The configured neighbours and their remote AS from `show bgp neighbors json`. */
export function parseFrrNeighborAs(json: string): Record<string, number | undefined> {
  const doc = JSON.parse(json) as Record<string, { remoteAs?: unknown; bgpState?: unknown } | unknown>;
  const res: Record<string, number | undefined> = {};
  for (const [k, v] of Object.entries(doc ?? {})) {
    if (!v || typeof v !== 'object' || typeof (v as { bgpState?: unknown }).bgpState !== 'string') continue;
    const as = (v as { remoteAs?: unknown }).remoteAs;
    res[k] = typeof as === 'number' ? as : undefined;
  }
  return res;
}

function vtyshBase(files: RouterFiles): string[] {
  const p = paths(files);
  return ['--vty_socket', p.vtyDir, '--config_dir', files.dir];
}

async function vtysh(files: RouterFiles, args: string[], timeoutMs = 10_000): Promise<{ code: number; out: string }> {
  const r = await runAsync(VTYSH, [...vtyshBase(files), ...args], { timeoutMs });
  return { code: r.code, out: (r.stdout + r.stderr).trim() };
}

async function neighborsJson(files: RouterFiles): Promise<string> {
  const r = await vtysh(files, ['-d', 'bgpd', '-c', 'show bgp neighbors json']);
  if (r.code !== 0) throw new Error(`vtysh show bgp neighbors json: ${r.out}`);
  return r.out;
}

function argvOf(ns: string, bin: string, conf: string, pid: string, files: RouterFiles, extra: string[]): string[] {
  const p = paths(files);
  // -P 0: no TCP vty, only the unix sockets in the lab's dir; --log stdout: into the router log
  return ['ip', 'netns', 'exec', ns, bin, '-u', 'root', '-g', VTY_GROUP, '-f', conf, '-i', pid, '-z', p.zserv, '--vty_socket', p.vtyDir, '-P', '0', '--log', 'stdout', ...extra];
}

/** FRR keeps a per-process dir /var/tmp/frr/<daemon>.<pid> that a killed daemon leaves behind. */
function removeStaleTmp(pidFile: string, daemon: string): void {
  try {
    const pid = Number(readFileSync(pidFile, 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 1) return;
    // still running (a zombie not yet reaped counts as gone): the dir is that process's
    if (procStartTime(pid) !== undefined) return;
    rmSync(`/var/tmp/frr/${daemon}.${pid}`, { recursive: true, force: true });
  } catch {
    /* no pid file: nothing left behind */
  }
}

async function waitReady(files: RouterFiles, daemon: 'zebra' | 'bgpd', proc: ProcRef, others: ProcRef[], untilMs: number): Promise<void> {
  const cmd = daemon === 'zebra' ? 'show version' : 'show bgp summary json';
  for (;;) {
    if (!isAlive(proc)) {
      for (const o of others) await stopProcess(o, 'SIGTERM', 3000);
      throw new Error(`frr's ${daemon} exited at start; the end of ${files.log}:\n${tail(files.log)}`);
    }
    const r = await vtysh(files, ['-d', daemon, '-c', cmd], 3000);
    if (r.code === 0 && (daemon === 'zebra' ? /FRRouting/.test(r.out) : /^\s*\{/.test(r.out))) return;
    if (Date.now() > untilMs) {
      for (const o of [proc, ...others]) await stopProcess(o, 'SIGTERM', 3000);
      throw new Error(`frr's ${daemon} did not answer on ${join(files.dir, `${daemon}.vty`)} within 15 s (${r.out}); the end of ${files.log}:\n${tail(files.log)}`);
    }
    await sleep(100);
  }
}

export const frr: RouterDaemon = {
  kind: 'frr',
  pkg: 'frr',

  preflight() {
    for (const f of [ZEBRA, BGPD, VTYSH]) if (!existsSync(f)) throw new Error(`--router frr needs ${f}: install the Debian package frr (apt-get install frr)`);
  },

  async start(ns: string, plan: RouterPlan, files: RouterFiles): Promise<ProcRef[]> {
    this.preflight();
    mkdirSync(files.dir, { recursive: true });
    const p = paths(files);
    writeFileSync(p.zebraConf, renderZebraConfig());
    writeFileSync(p.bgpdConf, renderFrrConfig(plan));
    // vtysh reads this instead of /etc/frr/vtysh.conf (which asks for the integrated frr.conf)
    writeFileSync(p.vtyshConf, '! podnet lab: each daemon keeps its own config file in this dir\n');
    // vtysh's dry run parses the file as the daemons would, and exits non-zero on a bad line
    // (bgpd -C exits 0 whatever it finds)
    const check = await runAsync(VTYSH, ['--config_dir', files.dir, '-C', '-f', p.bgpdConf]);
    if (check.code !== 0) throw new Error(`frr rejected ${p.bgpdConf}: ${(check.stdout + check.stderr).trim()}`);
    removeStaleTmp(p.zebraPid, 'zebra');
    removeStaleTmp(p.bgpdPid, 'bgpd');
    for (const s of [p.zserv, join(p.vtyDir, 'zebra.vty'), join(p.vtyDir, 'bgpd.vty')]) rmSync(s, { force: true });
    // started before: a router coming back keeps the routes zebra left in the kernel (-r) until
    // bgpd has learned them again, at most the restart time (-K)
    const restarting = existsSync(p.startedOnce);
    const until = Date.now() + 15_000;
    const zebra = startDetached(argvOf(ns, ZEBRA, p.zebraConf, p.zebraPid, files, ['-r', ...(restarting ? ['-K', String(plan.restartTime)] : [])]), files.log);
    writeFileSync(p.startedOnce, '');
    await waitReady(files, 'zebra', zebra, [], until);
    const bgpd = startDetached(argvOf(ns, BGPD, p.bgpdConf, p.bgpdPid, files, []), files.log);
    await waitReady(files, 'bgpd', bgpd, [zebra], until);
    // zebra first: stopped in this order, zebra is gone (keeping its routes, -r) before bgpd's
    // shutdown could withdraw them
    return [zebra, bgpd];
  },

  async reload(_ns: string, plan: RouterPlan, files: RouterFiles): Promise<void> {
    const p = paths(files);
    writeFileSync(p.bgpdConf, renderFrrConfig(plan));
    const cmds = reloadCommands(plan, parseFrrNeighborAs(await neighborsJson(files)));
    if (cmds.length === 0) return;
    const r = await vtysh(files, cmds.flatMap((c) => ['-c', c]));
    const errs = r.out.split('\n').filter((l) => /^%/.test(l.trim()));
    if (r.code !== 0 || errs.length > 0) throw new Error(`vtysh ${cmds.join(' / ')}: ${r.out}`);
    const now = parseFrrNeighborAs(await neighborsJson(files));
    const want = plan.neighbors.map((n) => `${n.address} AS${n.asn}`).sort();
    const got = Object.entries(now).map(([a, as]) => `${a} AS${as}`).sort();
    if (want.join() !== got.join()) throw new Error(`frr's bgpd has neighbours ${got.join(', ') || 'none'} after the reload, not ${want.join(', ') || 'none'}`);
  },

  execArgv(argv: string[], files: RouterFiles): string[] {
    if (argv[0] !== 'vtysh' && argv[0] !== VTYSH) return argv;
    if (argv.some((a) => a === '--vty_socket' || a.startsWith('--vty_socket='))) return argv;
    return [argv[0], ...vtyshBase(files), ...argv.slice(1)];
  },

  async sessions(_ns: string, files: RouterFiles): Promise<Record<string, string>> {
    return parseFrrSessions(await neighborsJson(files));
  },
};
