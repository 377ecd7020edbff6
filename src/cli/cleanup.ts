// `podnet cleanup [--all]`: removes everything podnet created on this node (its network namespace):
// nftables tables, iptables chains and rules, devices, routes, neighbours and FDB entries it
// marked, the running podnet-tund, the socket and subnet.env; --all also the IPAM state. Refused
// while an agent answers on the socket (unless --force). Plan: src/agent/cleanup-plan.ts.
import { Command, Option } from 'commander';
import { envDefault } from './node-options.js';

/** Exit codes: 0 done (or nothing to do), 1 a step failed, 2 refused or bad usage. */
const EXIT_FAILED = 1;
const EXIT_REFUSED = 2;

interface CleanupCliOpts {
  dataDir: string;
  socket: string;
  subnetFile: string;
  ipamDir: string;
  network: string[];
  all?: boolean;
  dryRun?: boolean;
  force?: boolean;
  output: 'text' | 'json';
}

export function registerCleanupCommands(program: Command): void {
  const env = (flag: string, dflt: string) => envDefault(flag, dflt) ?? dflt;
  program
    .command('cleanup')
    .description('remove everything podnet created on this node (nftables tables, iptables PODNET chains, podnet devices, proto 80 routes, their neighbours and FDB entries, podnet-tund, the socket, subnet.env) and nothing else; --all also the IPAM state')
    .option('--data-dir <dir>', "the agent's state dir (podnet-tund's pidfile)", env('data-dir', '/var/lib/podnet'))
    .option('--socket <path>', "the agent's CNI socket", env('socket', '/run/podnet/podnet.sock'))
    .option('--subnet-file <path>', 'subnet.env', env('subnet-file', '/run/podnet/subnet.env'))
    .option('--all', "also the IPAM state of podnet's networks and the agent's remembered subnet")
    .option('--ipam-dir <dir>', 'IPAM state dir (<dir>/<network>)', '/var/lib/cni/networks')
    .option('--network <name>', "with --all: a podnet network whose IPAM state goes (repeatable; the networks podnet's host links name are always included)", (v: string, prev: string[] = []) => [...prev, v], [] as string[])
    .option('--dry-run', 'print the plan, change nothing')
    .option('--force', 'run even while an agent answers on the socket')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text'))
    .action(async (o: CleanupCliOpts) => {
      const { runCleanup, socketAnswers } = await import('../agent/cleanup.js');
      if (!o.force && (await socketAnswers(o.socket))) {
        process.stderr.write(`podnet cleanup: a podnet agent is running here (it answers on ${o.socket}); stop it first, or pass --force to remove its state from under it\n`);
        process.exitCode = EXIT_REFUSED;
        return;
      }
      let res: Awaited<ReturnType<typeof runCleanup>>;
      try {
        res = await runCleanup({ dataDir: o.dataDir, socket: o.socket, subnetFile: o.subnetFile, all: !!o.all, ipamDir: o.ipamDir, networks: o.network, dryRun: !!o.dryRun });
      } catch (e) {
        process.stderr.write(`podnet cleanup: ${(e as Error).message}\n`);
        process.exitCode = EXIT_FAILED;
        return;
      }
      const failed = res.steps.filter((s) => !s.ok);
      if (o.output === 'json') {
        const plan = res.plan.map(({ kind, what, why }) => ({ kind, what, why }));
        console.log(JSON.stringify({ dryRun: !!o.dryRun, plan, steps: res.steps }, null, 2));
      } else {
        if (res.plan.length === 0) console.log('nothing of podnet here');
        for (const p of res.plan) console.log(`${o.dryRun ? 'would delete' : 'delete'} ${p.what}  (${p.why})`);
        for (const s of failed) console.log(`FAILED ${s.what}: ${s.error}`);
      }
      if (failed.length) process.exitCode = EXIT_FAILED;
    });
}
