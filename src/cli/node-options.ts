// What the agent and the commands that read its node (status) take to know the node, its network
// config and the cluster store: the same flags, defaults and PODNET_<FLAG> variables everywhere.
import type { Command } from 'commander';
import { hostname } from 'node:os';

/** A flag's default from the environment: --etcd-endpoints reads PODNET_ETCD_ENDPOINTS. */
export function envDefault(flag: string, dflt?: string): string | undefined {
  return process.env[`PODNET_${flag.toUpperCase().replace(/-/g, '_')}`] ?? dflt;
}

/** --config, --store, --etcd-endpoints, --etcd-prefix, --iface, --public-ip, --node-name. */
export function nodeOptions(cmd: Command): Command {
  return cmd
    .option('--config <file>', 'network config, net-conf.json: Network, SubnetLen, Backend (env PODNET_NET_CONFIG_PATH)', envDefault('net-config-path'))
    .option('--store <url>', 'cluster store: file:DIR or etcd', envDefault('store'))
    .option('--etcd-endpoints <urls>', 'comma-separated etcd client URLs', envDefault('etcd-endpoints', 'http://127.0.0.1:2379'))
    .option('--etcd-prefix <prefix>', 'store key prefix', envDefault('etcd-prefix', '/podnet/network'))
    .option('--iface <name>', "public interface (default: the default route's)", envDefault('iface'))
    .option('--public-ip <ip>', 'public IP (default: the first address of --iface)', envDefault('public-ip'))
    .option('--node-name <name>', 'node name recorded in the lease', envDefault('node-name', hostname()));
}
