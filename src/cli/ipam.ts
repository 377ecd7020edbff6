// `podnet ipam ls|check|gc`: the reservations of podnet-ipam (and host-local: the same files)
// under a data dir, checked against the interfaces live on this node, and the leaks released.
// src/ipam/inspect.ts says how each reservation is classified.
import { Command, Option } from 'commander';
import { DEFAULT_DATA_DIR } from '../ipam/config.js';

/** Exit codes: 0 clean (gc: done), 1 leaks, conflicts or unreserved addresses found (gc: a leak could not be released), 2 bad usage or failure. */
const EXIT_FOUND = 1;
const EXIT_FAIL = 2;

class UsageError extends Error {}

interface Opts {
  dataDir: string;
  output: 'text' | 'json';
  grace?: string;
  dryRun?: boolean;
}

function common(c: Command, live: boolean): Command {
  c.option('--data-dir <dir>', 'where the reservations are: <dir>/<network>/<ip> (podnet-ipam\'s and host-local\'s dataDir)', DEFAULT_DATA_DIR).addOption(
    new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text'),
  );
  if (live) c.option('--grace <seconds>', 'a reservation younger than this that no interface carries yet is pending (an ADD in flight), not leaked', '30');
  return c;
}

function graceMs(o: Opts): number {
  const s = Number(o.grace);
  if (o.grace === undefined || !Number.isFinite(s) || s < 0 || s > 86_400) throw new UsageError(`--grace must be a number of seconds 0-86400, not ${JSON.stringify(o.grace)}`);
  return s * 1000;
}

async function dataDirOk(dir: string): Promise<void> {
  const { statSync } = await import('node:fs');
  const st = statSync(dir, { throwIfNoEntry: false });
  if (!st?.isDirectory()) throw new UsageError(`--data-dir ${dir}: no such directory`);
}

function action(name: string, fn: (o: Opts) => Promise<void>) {
  return async (o: Opts) => {
    try {
      await fn(o);
    } catch (e) {
      process.stderr.write(`podnet ipam ${name}: ${(e as Error).message}\n`);
      process.exitCode = EXIT_FAIL;
    }
  };
}

const short = (id: string) => (id.length > 16 ? id.slice(0, 16) + '…' : id);

async function runInspection(o: Opts) {
  await dataDirOk(o.dataDir);
  const { inspect, IpLiveReader } = await import('../ipam/inspect.js');
  return inspect(o.dataDir, new IpLiveReader(), { graceMs: graceMs(o) });
}

export function registerIpamCommands(program: Command): void {
  const ipam = program
    .command('ipam')
    .description('inspect and repair IPAM reservations (podnet-ipam and host-local files) against the interfaces live on this node')
    .addHelpText(
      'after',
      '\nRun on the node, in the namespace its host links are in. Every named network namespace (/run/netns) and every namespace a\nprocess holds is read with `ip -j` (nothing is changed). A reservation is live when some namespace has an interface of its\nname carrying its address; leaked when none carries it (the container\'s interface or namespace is gone).\nExit codes: 0 clean, 1 problems found, 2 bad usage or failure.',
    );

  common(ipam.command('ls').description('every reservation under the data dir: network, address, container, interface (from the files only)'), false).action(
    action('ls', async (o) => {
      await dataDirOk(o.dataDir);
      const { readDataDir } = await import('../ipam/inspect.js');
      const { networks, allocations } = readDataDir(o.dataDir);
      if (o.output === 'json') {
        console.log(JSON.stringify({ dataDir: o.dataDir, networks, allocations: allocations.map(({ network, ip, containerID, ifname, file, mtimeMs }) => ({ network, ip, containerID, ifname: ifname ?? null, file, reservedAt: new Date(mtimeMs).toISOString() })) }, null, 2));
        return;
      }
      if (!allocations.length) {
        console.log(`no reservations under ${o.dataDir}${networks.length ? ` (networks: ${networks.join(', ')})` : ''}`);
        return;
      }
      const { table } = await import('../util/table.js');
      console.log(table([['NETWORK', 'IP', 'CONTAINER', 'IFNAME'], ...allocations.map((a) => [a.network, a.ip, a.containerID, a.ifname ?? '-'])]));
    }),
  );

  common(
    ipam
      .command('check')
      .description('find leaks (reservations whose container no longer has the interface or the namespace), addresses reserved for one interface and carried by another, and addresses in use on a pod interface with no reservation')
      .addHelpText('after', '\nExit codes: 0 nothing found, 1 leaks, conflicts or unreserved addresses (each listed with the reason), 2 bad usage or failure.'),
    true,
  ).action(
    action('check', async (o) => {
      const i = await runInspection(o);
      const { problems } = await import('../ipam/inspect.js');
      const p = problems(i);
      const pending = i.allocations.filter((a) => a.state === 'pending');
      if (o.output === 'json') {
        console.log(JSON.stringify({ dataDir: i.dataDir, networks: i.networks, allocations: i.allocations.map(view), unreserved: i.unreserved }, null, 2));
      } else {
        const live = i.allocations.filter((a) => a.state === 'live').length;
        console.log(`${i.allocations.length} reservations in ${i.networks.length} networks under ${i.dataDir}: ${live} live, ${p.leaked.length} leaked, ${p.conflicts.length} conflicting, ${pending.length} pending; ${p.unreserved.length} addresses in use without a reservation`);
        for (const a of [...p.leaked, ...p.conflicts, ...pending]) console.log(`${a.state.padEnd(10)} ${a.network} ${a.ip} ${short(a.containerID)}/${a.ifname ?? '*'}: ${a.reason}`);
        for (const u of p.unreserved) console.log(`unreserved ${u.network} ${u.ip}: ${u.reason}`);
      }
      if (p.leaked.length || p.conflicts.length || p.unreserved.length) process.exitCode = EXIT_FOUND;
    }),
  );

  common(
    ipam
      .command('gc')
      .description('release the leaks check finds (through the store\'s lock, each re-read under it first); never a live, pending or conflicting reservation')
      .option('--dry-run', 'list what would be released, change nothing')
      .addHelpText('after', '\nExit codes: 0 done (or nothing to do), 1 a leak could not be released, 2 bad usage or failure. Unreserved addresses are listed, not changed.'),
    true,
  ).action(
    action('gc', async (o) => {
      const i = await runInspection(o);
      const { releaseLeaks } = await import('../ipam/inspect.js');
      const r = await releaseLeaks(i, { dryRun: o.dryRun });
      if (o.output === 'json') {
        console.log(JSON.stringify({ dataDir: i.dataDir, dryRun: !!o.dryRun, released: r.released.map(view), kept: r.kept.map((k) => ({ ...view(k.allocation), keptBecause: k.reason })), unreserved: i.unreserved }, null, 2));
      } else {
        const verb = o.dryRun ? 'would release' : 'released';
        for (const a of r.released) console.log(`${verb} ${a.network} ${a.ip} ${short(a.containerID)}/${a.ifname ?? '*'}: ${a.reason}`);
        for (const k of r.kept) console.log(`kept ${k.allocation.network} ${k.allocation.ip}: ${k.reason}`);
        for (const u of i.unreserved) console.log(`unreserved (left as is) ${u.network} ${u.ip}: ${u.reason}`);
        if (!r.released.length && !r.kept.length) console.log(`no leaks under ${i.dataDir}`);
      }
      if (r.kept.some((k) => !k.reason.startsWith('released by someone else'))) process.exitCode = EXIT_FOUND;
    }),
  );
}

function view(a: { network: string; ip: string; containerID: string; ifname?: string; file: string; state: string; reason: string; carrier?: { netns: string; ifname: string }; mtimeMs: number }) {
  return { network: a.network, ip: a.ip, containerID: a.containerID, ifname: a.ifname ?? null, file: a.file, state: a.state, reason: a.reason, carrier: a.carrier ?? null, reservedAt: new Date(a.mtimeMs).toISOString() };
}
