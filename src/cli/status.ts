// `podnet status [-o json]`: this node's health, read only (src/node/gather.ts): the lease and its
// expiry, the backend device, each peer programmed or not (the object named), subnet.env, the CNI
// socket, the proxy's services, IPAM usage, the store.
import { Command, Option } from 'commander';
import { DEFAULT_DATA_DIR } from '../ipam/config.js';
import { parsePortRange } from './proxy.js';
import { envDefault, nodeOptions } from './node-options.js';

/** Exit codes: 0 all good; 1 something is wrong (each problem listed with its reason and where to look); 2 bad usage or the store unreachable. */
const EXIT_PROBLEMS = 1;
const EXIT_USAGE = 2;

export function registerStatusCommands(program: Command): void {
  const env = envDefault;
  const status = program
    .command('status')
    .description("this node's health, read only: lease and expiry, backend device, each peer programmed or missing, subnet.env, CNI socket, proxy services, IPAM usage, the store");
  nodeOptions(status)
    .option('--subnet-file <path>', "the agent's subnet.env", env('subnet-file', '/run/podnet/subnet.env'))
    .option('--socket <path>', "the agent's CNI socket", env('socket', '/run/podnet/podnet.sock'))
    .option('--data-dir <dir>', "the agent's state (tun: podnet-tund's peers file)", env('data-dir', '/var/lib/podnet'))
    .option('--ipam-data-dir <dir>', 'IPAM reservations: <dir>/<network>/<ip>', DEFAULT_DATA_DIR)
    .addOption(new Option('--proxy-mode <mode>', "the agent's service proxy engine, or off").choices(['nftables', 'iptables', 'off']).default(env('proxy-mode', 'nftables')))
    .option('--node-port-range <lo-hi>', "the agent's NodePort range", env('node-port-range', '30000-32767'))
    .option('--metrics-addr <host:port>', "the agent's --metrics-addr, to read the proxy's last sync", env('metrics-addr'))
    .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text'))
    .addHelpText('after', '\nExit codes: 0 all good, 1 something is wrong (each problem listed, with its reason and the command to look), 2 bad usage or the store unreachable.')
    .action(async (o: Record<string, string | undefined>) => {
      const fail = (msg: string) => {
        process.stderr.write(`podnet status: ${msg}\n`);
        process.exitCode = EXIT_USAGE;
      };
      if (!o.config) return fail('--config is required (or PODNET_NET_CONFIG_PATH)');
      if (!o.store) return fail('--store is required (or PODNET_STORE)');
      const range = parsePortRange(String(o.nodePortRange));
      if (!range) return fail(`--node-port-range: expected LOW-HIGH within 1-65535, got ${JSON.stringify(o.nodePortRange)}`);
      const { gatherStatus, renderStatusText, StatusUsageError } = await import('../node/gather.js');
      let st;
      try {
        st = await gatherStatus({
          config: o.config,
          store: o.store,
          etcdEndpoints: String(o.etcdEndpoints).split(',').filter(Boolean),
          etcdPrefix: String(o.etcdPrefix),
          ...(o.iface ? { iface: o.iface } : {}),
          ...(o.publicIp ? { publicIP: o.publicIp } : {}),
          ...(o.nodeName ? { nodeName: o.nodeName } : {}),
          subnetFile: String(o.subnetFile),
          socket: String(o.socket),
          dataDir: String(o.dataDir),
          ipamDataDir: String(o.ipamDataDir),
          proxyMode: o.proxyMode as 'nftables' | 'iptables' | 'off',
          nodePortRange: range,
          ...(o.metricsAddr ? { metricsAddr: o.metricsAddr } : {}),
        });
      } catch (e) {
        if (e instanceof StatusUsageError) return fail(e.message);
        throw e;
      }
      process.stdout.write(o.output === 'json' ? JSON.stringify(st, null, 2) + '\n' : renderStatusText(st));
      if (st.problems.length) process.exitCode = EXIT_PROBLEMS;
    });
}
