// podnet's command line. When a runtime execs it as a CNI plugin (CNI_COMMAND set), it acts as
// one, so `dist/podnet.mjs` also works as a plugin binary.
import { Command, Option } from 'commander';
import { SUPPORTED_VERSIONS } from '../cni/version.js';
import { registerLabCommands } from './lab.js';
import { registerBgpCommands } from './bgp.js';
import { registerTraceCommands } from './trace.js';
import { registerInstallCommands } from './install.js';
import { registerCleanupCommands } from './cleanup.js';
import { registerIpamCommands } from './ipam.js';
import { parsePortRange, registerProxyCommands } from './proxy.js';
import { registerStatusCommands } from './status.js';
import { envDefault, nodeOptions } from './node-options.js';

const VERSION = '0.1.0';

async function runAsPlugin(): Promise<void> {
  await import('../cni/entry.js');
}

function parseRange(v: string): [number, number] {
  const r = parsePortRange(v);
  if (!r) {
    process.stderr.write(`podnet agent: --node-port-range: expected LOW-HIGH within 1-65535, got ${JSON.stringify(v)}\n`);
    process.exit(2);
  }
  return r;
}

function outputOption(): Option {
  return new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text');
}

export function buildCli(): Command {
  const program = new Command('podnet')
    .description('Container networking for Linux: CNI plugin (bridge, routed, macvlan), IPAM and node agent')
    .version(VERSION, '-v, --version')
    .showHelpAfterError();

  const env = envDefault;
  const agent = program
    .command('agent')
    .description('run the node agent: CNI on a root-only unix socket; with --config and --store also the cluster side (subnet lease, vxlan/host-gw/tun/bgp datapath, subnet.env)')
    .option('--socket <path>', 'CNI socket path', env('socket', '/run/podnet/podnet.sock'));
  nodeOptions(agent)
    .option('--subnet-file <path>', 'where to write subnet.env', env('subnet-file', '/run/podnet/subnet.env'))
    .option('--data-dir <dir>', 'agent state', env('data-dir', '/var/lib/podnet'))
    .option('--no-ip-masq', 'do not masquerade pod traffic leaving the cluster network (env PODNET_IP_MASQ=false)')
    .option('--lease-ttl <seconds>', 'subnet lease TTL', env('lease-ttl', '30'))
    .option('--resync <seconds>', 'full reconcile period', env('resync', '10'))
    .addOption(new Option('--proxy-mode <mode>', 'service proxy rule engine, or off (cluster side only)').choices(['nftables', 'iptables', 'off']).default(env('proxy-mode', 'nftables')))
    .option('--node-port-range <lo-hi>', 'NodePort range of the service proxy', env('node-port-range', '30000-32767'))
    .option('--bgp-asn <asn>', 'bgp backend: this node\'s AS number (overrides the net-conf ASN)', env('bgp-asn'))
    .option('--bgp-peer <addr[:asn]>', 'bgp backend: a BGP peer of this node, repeatable (replaces the net-conf Peers; ASN default: the node\'s own)', (v: string, prev: string[] = []) => [...prev, v])
    .option('--log-level <level>', 'debug, info, warn or error', env('log-level', 'info'))
    .option('--metrics-addr <host:port>', 'serve /metrics, /healthz, /readyz and /debug/state here (e.g. 127.0.0.1:9603); empty: off', env('metrics-addr', ''))
    .action(async (o: Record<string, string | boolean | string[] | undefined>) => {
      const { runAgent } = await import('../agent/agent.js');
      try {
        await runAgent({
          socket: String(o.socket),
          logLevel: String(o.logLevel),
          metricsAddr: String(o.metricsAddr ?? ''),
          config: o.config as string | undefined,
          store: o.store as string | undefined,
          etcdEndpoints: String(o.etcdEndpoints).split(',').filter(Boolean),
          etcdPrefix: String(o.etcdPrefix),
          iface: o.iface as string | undefined,
          publicIP: o.publicIp as string | undefined,
          nodeName: String(o.nodeName),
          subnetFile: String(o.subnetFile),
          dataDir: String(o.dataDir),
          ipMasq: o.ipMasq !== false && env('ip-masq') !== 'false',
          leaseTtl: Number(o.leaseTtl),
          resyncSeconds: Number(o.resync),
          proxyMode: o.proxyMode as 'nftables' | 'iptables' | 'off',
          nodePortRange: parseRange(String(o.nodePortRange)),
          bgpAsn: o.bgpAsn as string | undefined,
          bgpPeers: (o.bgpPeer as string[] | undefined) ?? env('bgp-peers')?.split(',').filter(Boolean),
        });
      } catch (e) {
        process.stderr.write(`podnet agent: ${(e as Error).message}\n`);
        process.exit(2);
      }
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

  registerProxyCommands(program);
  registerLabCommands(program);
  registerBgpCommands(program);
  registerTraceCommands(program);
  registerInstallCommands(program);
  registerCleanupCommands(program);
  registerIpamCommands(program);
  registerStatusCommands(program);
  return program;
}

if (process.env.CNI_COMMAND) {
  await runAsPlugin();
} else {
  await buildCli().parseAsync(process.argv);
}
