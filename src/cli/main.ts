// podnet's command line. When a runtime execs it as a CNI plugin (CNI_COMMAND set), it acts as
// one, so `dist/podnet.mjs` also works as a plugin binary.
import { Command, Option } from 'commander';
import { SUPPORTED_VERSIONS } from '../cni/version.js';

const VERSION = '0.1.0';

async function runAsPlugin(): Promise<void> {
  await import('../cni/entry.js');
}

function outputOption(): Option {
  return new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text');
}

export function buildCli(): Command {
  const program = new Command('podnet')
    .description('Container networking for Linux: CNI plugin (bridge, routed, macvlan), IPAM and node agent')
    .version(VERSION, '-v, --version')
    .showHelpAfterError();

  program
    .command('agent')
    .description('run the node agent: serves CNI requests on a root-only unix socket')
    .option('--socket <path>', 'CNI socket path (env PODNET_SOCKET)', process.env.PODNET_SOCKET || '/run/podnet/podnet.sock')
    .option('--log-level <level>', 'debug, info, warn or error', process.env.PODNET_LOG_LEVEL || 'info')
    .action(async (o: { socket: string; logLevel: string }) => {
      const { runAgent } = await import('../agent/agent.js');
      await runAgent({ socket: o.socket, logLevel: o.logLevel });
    });

  const cni = program.command('cni').description('CNI plugin installation and invocation');
  cni
    .command('install')
    .description('install the podnet and podnet-ipam executables into a CNI bin dir, and optionally a conflist')
    .requiredOption('--bin-dir <dir>', 'CNI bin dir, e.g. /opt/cni/bin')
    .option('--conf-dir <dir>', 'CNI conf dir to write 10-podnet.conflist into, e.g. /etc/cni/net.d')
    .option('--socket <path>', 'agent socket the client talks to', '/run/podnet/podnet.sock')
    .option('--network <name>', 'network name in the conflist', 'podnet')
    .option('--subnet <cidr>', 'pod subnet for the conflist (default: read from the agent subnet file)')
    .addOption(new Option('--mode <mode>', 'pod wiring mode in the conflist').choices(['bridge', 'routed', 'macvlan']).default('bridge'))
    .addOption(outputOption())
    .action(async (o: { binDir: string; confDir?: string; socket: string; network: string; subnet?: string; mode: string; output: string }) => {
      const { installCni } = await import('../cni/install.js');
      const written = installCni(o, [...SUPPORTED_VERSIONS]);
      if (o.output === 'json') console.log(JSON.stringify({ written }));
      else for (const w of written) console.log(`installed ${w}`);
    });
  cni
    .command('exec')
    .description('act as the CNI plugin (reads CNI_* from the environment and the config from stdin)')
    .addOption(new Option('--plugin <name>', 'which plugin').choices(['podnet', 'podnet-ipam']).default('podnet'))
    .action(async (o: { plugin: string }) => {
      process.env.PODNET_PLUGIN = o.plugin;
      await runAsPlugin();
    });

  program
    .command('demo')
    .description('create pods in throw-away namespaces through the real CNI path (bridge, routed, macvlan), show that they reach each other, print what was built, remove it')
    .option('--keep', 'leave the namespaces up (remove later with `podnet demo --cleanup`)')
    .option('--cleanup', 'remove what a kept demo left')
    .option('--standalone', 'run the plugin without the agent')
    .addOption(outputOption())
    .action(async (o: { keep?: boolean; cleanup?: boolean; standalone?: boolean; output: string }) => {
      const { runDemo } = await import('./demo.js');
      process.exitCode = await runDemo(o);
    });

  return program;
}

if (process.env.CNI_COMMAND) {
  await runAsPlugin();
} else {
  await buildCli().parseAsync(process.argv);
}
