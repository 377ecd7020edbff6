// `podnet proxy render|sync|cleanup`: the service proxy driven from a file, in the current
// network namespace (the agent runs the same Proxier against the cluster store).
import { readFileSync, existsSync, watch } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { hostname, networkInterfaces } from 'node:os';
import { Command, Option } from 'commander';
import type { ProxyMode } from '../proxy/engine.js';
import type { ProxyNode } from '../proxy/model.js';
import { createLogger, type Level } from '../util/log.js';

/** Exit codes: 0 ok; 1 bad input (the file, or rejected services with --strict); 2 kernel or runtime failure. */
const EXIT_INPUT = 1;
const EXIT_RUNTIME = 2;

class InputError extends Error {}

function readState(file: string) {
  return import('../proxy/document.js').then(({ parseServicesDocument }) => {
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(file, 'utf8'));
    } catch (e) {
      throw new InputError(`${file}: ${(e as Error).message}`);
    }
    try {
      return parseServicesDocument(raw);
    } catch (e) {
      throw new InputError(`${file}: ${(e as Error).message}`);
    }
  });
}

function readSubnetEnvNetworks(path: string): string[] {
  if (!existsSync(path)) return [];
  const out: string[] = [];
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const m = /^PODNET_(NETWORK|IPV6_NETWORK)=(\S+)$/.exec(line.trim());
    if (m) out.push(m[2]);
  }
  return out;
}

/** The addresses of this namespace's interfaces, loopback excluded (NodePorts answer there). */
function localAddresses(): string[] {
  const out: string[] = [];
  for (const addrs of Object.values(networkInterfaces())) {
    for (const a of addrs ?? []) if (!a.internal && !a.address.startsWith('fe80:')) out.push(a.address);
  }
  return out;
}

interface NodeOpts {
  nodeName: string;
  nodeIp?: string[];
  clusterCidr?: string[];
  subnetFile: string;
  nodePortRange: string;
}

/** `LOW-HIGH` within 1-65535; undefined when it is not one. */
export function parsePortRange(v: string): [number, number] | undefined {
  const m = /^(\d+)-(\d+)$/.exec(v);
  if (!m || Number(m[1]) < 1 || Number(m[2]) > 65535 || Number(m[1]) > Number(m[2])) return undefined;
  return [Number(m[1]), Number(m[2])];
}

export function nodeFromOptions(o: NodeOpts): ProxyNode {
  const range = parsePortRange(o.nodePortRange);
  if (!range) throw new InputError(`--node-port-range: expected LOW-HIGH within 1-65535, got ${JSON.stringify(o.nodePortRange)}`);
  return {
    name: o.nodeName,
    nodeIPs: o.nodeIp && o.nodeIp.length > 0 ? o.nodeIp : localAddresses(),
    clusterCIDRs: o.clusterCidr && o.clusterCidr.length > 0 ? o.clusterCidr : readSubnetEnvNetworks(o.subnetFile),
    nodePortRange: range,
  };
}

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, ...v.split(',').filter(Boolean)];
}

function nodeOptions(c: Command): Command {
  const env = (k: string) => process.env[`PODNET_${k}`];
  return c
    .option('--node-name <name>', 'this node\'s name (endpoints with this nodeName are local)', env('NODE_NAME') ?? hostname())
    .option('--node-ip <ip>', 'address NodePorts answer on; repeatable (default: every non-loopback address here)', collect)
    .option('--cluster-cidr <cidr>', 'pod network; traffic from outside it to a cluster IP is masqueraded; repeatable (default: PODNET_NETWORK from --subnet-file)', collect)
    .option('--subnet-file <path>', 'the agent\'s subnet.env', env('SUBNET_FILE') ?? '/run/podnet/subnet.env')
    .option('--node-port-range <lo-hi>', 'NodePort range', '30000-32767');
}

function modeOption(): Option {
  return new Option('--mode <mode>', 'rule engine').choices(['nftables', 'iptables']).default(process.env.PODNET_PROXY_MODE ?? 'nftables');
}

function iptablesOption(): Option {
  return new Option('--iptables-backend <backend>', 'iptables engine: iptables-nft or iptables-legacy').choices(['nft', 'legacy']).default('nft');
}

function action<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (e) {
      process.stderr.write(`podnet proxy: ${(e as Error).message}\n`);
      process.exitCode = e instanceof InputError ? EXIT_INPUT : EXIT_RUNTIME;
    }
  };
}

type CommonOpts = NodeOpts & { services: string; mode: ProxyMode; iptablesBackend: 'nft' | 'legacy'; output: string; strict?: boolean; logLevel: string };

export function registerProxyCommands(program: Command): void {
  const proxy = program
    .command('proxy')
    .description('the service proxy: cluster IPs, NodePorts and external IPs DNAT-ed to endpoints by nftables (or iptables)')
    .addHelpText('after', '\nThe services file holds {"services": [...], "endpointSlices": [...]} in the shape of Kubernetes v1 Services and\ndiscovery/v1 EndpointSlices, or a Kubernetes List (kubectl get svc,endpointslices -A -o json).\nExit codes: 0 ok, 1 bad input, 2 kernel or runtime failure.');

  nodeOptions(
    proxy
      .command('render')
      .description('print the ruleset the services file renders to (nothing is applied)')
      .requiredOption('--services <file>', 'services and endpoint slices (JSON)')
      .addOption(modeOption())
      .addOption(new Option('-o, --output <format>', 'text: the ruleset; json: the normalized model and the rejected services').choices(['text', 'json']).default('text'))
      .option('--strict', 'exit 1 when any service is rejected'),
  ).action(
    action(async (o: CommonOpts) => {
      const node = nodeFromOptions(o);
      const state = await readState(o.services);
      const { normalize } = await import('../proxy/normalize.js');
      const { createEngine } = await import('../proxy/engines/index.js');
      const model = normalize(state, node);
      model.ports.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      const engine = await createEngine(o.mode, {});
      if (o.output === 'json') console.log(JSON.stringify({ node, mode: o.mode, ports: model.ports, problems: model.problems, ruleset: engine.render(model, node) }, null, 2));
      else {
        process.stdout.write(engine.render(model, node));
        for (const p of model.problems) process.stderr.write(`rejected: service ${p.service}: ${p.field}: ${p.message}\n`);
      }
      if (o.strict && model.problems.length > 0) process.exitCode = EXIT_INPUT;
    }),
  );

  nodeOptions(
    proxy
      .command('sync')
      .description('apply the services file to this network namespace; without --once, keep it in sync as the file changes')
      .requiredOption('--services <file>', 'services and endpoint slices (JSON)')
      .addOption(modeOption())
      .addOption(iptablesOption())
      .option('--once', 'one full sync, then exit')
      .option('--resync <seconds>', 'full resync period that repairs drift', '60')
      .option('--strict', 'with --once: exit 1 when any service is rejected')
      .addOption(new Option('-o, --output <format>', 'output format of the --once report').choices(['text', 'json']).default('text'))
      .option('--log-level <level>', 'debug, info, warn or error', process.env.PODNET_LOG_LEVEL ?? 'info'),
  ).action(
    action(async (o: CommonOpts & { once?: boolean; resync: string }) => {
      const node = nodeFromOptions(o);
      const log = createLogger({ subsys: 'proxy', level: o.logLevel as Level });
      const { createEngine } = await import('../proxy/engines/index.js');
      const { Proxier } = await import('../proxy/proxier.js');
      const engine = await createEngine(o.mode, { iptablesBackend: o.iptablesBackend });
      const proxier = new Proxier({ engine, node, log, resyncIntervalMs: Number(o.resync) * 1000 });
      proxier.replaceAll(await readState(o.services));
      if (o.once) {
        const r = await proxier.sync();
        const st = proxier.status();
        if (o.output === 'json') console.log(JSON.stringify({ ...r, rejected: st.problems }));
        else {
          console.log(`synced ${r.ports} service ports of ${r.services} services with ${o.mode} (${r.kind}, ${r.changes} objects, ${r.ms.toFixed(0)} ms)`);
          for (const p of st.problems) console.log(`rejected: ${p}`);
        }
        await proxier.stop();
        if (o.strict && st.problems.length > 0) process.exitCode = EXIT_INPUT;
        return;
      }
      log.info('proxy syncing from file', { file: resolve(o.services), mode: o.mode, node: node.name, nodeIPs: node.nodeIPs, clusterCIDRs: node.clusterCIDRs });
      await proxier.sync();
      proxier.start();
      // watch the directory: editors and `mv` replace the file rather than write it in place
      const file = resolve(o.services);
      let pending: NodeJS.Timeout | undefined;
      const w = watch(dirname(file), (_ev, name) => {
        if (name !== null && name !== basename(file)) return;
        if (pending) clearTimeout(pending);
        pending = setTimeout(() => {
          readState(file)
            .then((st) => {
              proxier.replaceAll(st);
              log.info('services file changed', { services: st.services.length, endpointSlices: st.endpointSlices.length });
            })
            .catch((e) => log.error('services file unreadable; keeping the current rules', { error: (e as Error).message }));
        }, 50);
      });
      const stop = async (sig: string) => {
        log.info('stopping (rules stay in place; `podnet proxy cleanup` removes them)', { signal: sig });
        w.close();
        await proxier.stop();
        process.exit(0);
      };
      process.on('SIGTERM', () => void stop('SIGTERM'));
      process.on('SIGINT', () => void stop('SIGINT'));
    }),
  );

  proxy
    .command('cleanup')
    .description('remove everything podnet\'s proxy created in this network namespace (both engines, iptables-nft and -legacy)')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text'))
    .action(
      action(async (o: { output: string }) => {
        const { cleanupAll } = await import('../proxy/cleanup.js');
        const done = await cleanupAll({});
        if (o.output === 'json') console.log(JSON.stringify(done));
        else for (const d of done) console.log(`${d.ok ? 'removed' : 'failed '} ${d.what}${d.error ? `: ${d.error}` : ''}`);
        if (done.some((d) => !d.ok)) process.exitCode = EXIT_RUNTIME;
      }),
    );
}
