// `podnet lab ...`: a multi-node cluster on one machine (see src/lab/lab.ts). Every subcommand
// takes --name (default: $PODNET_LAB, else the only lab there is, else "lab").
import { spawn } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { Command, Option } from 'commander';
import { BACKEND_TYPES, type BackendType } from '../agent/lease.js';
import { table } from '../util/table.js';

type Out = { output: string };

function outputOption(): Option {
  return new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text');
}

function nameOption(): Option {
  return new Option('--name <lab>', 'lab name (a-z, 0-9; default: $PODNET_LAB, else the only lab, else "lab")');
}

/** Runs a subcommand body; errors become one line on stderr and exit code 1, not a stack trace. */
function action<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (e) {
      process.stderr.write(`podnet lab: ${(e as Error).message}\n`);
      process.exitCode = 1;
    }
  };
}

function intArg(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n)) throw new Error(`not an integer: ${v}`);
  return n;
}

/** For options that may be repeated: every value, in order. */
function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

export function registerLabCommands(program: Command): void {
  const lab = program.command('lab').description('a multi-node cluster on this machine: nodes, agents, pods and etcd in network namespaces');

  lab
    .command('up')
    .description('create a lab: fabric with an underlay bridge, N nodes each running an agent, etcd members for --store etcd')
    .option('--nodes <n>', 'number of nodes', intArg, 3)
    .addOption(new Option('--backend <type>', 'datapath between nodes (tun: podnet-tund, docs/tun.md)').choices([...BACKEND_TYPES]).default('vxlan'))
    .addOption(new Option('--store <kind>', 'cluster store').choices(['file', 'etcd']).default('file'))
    .option('--etcd-members <m>', 'etcd cluster size for --store etcd', intArg, 1)
    .option('--network <cidr>', 'cluster CIDR', '10.244.0.0/16')
    .option('--ipv6-network <cidr>', 'dual-stack pods: the cluster\'s IPv6 CIDR (/56 or wider; a /64 per node), e.g. fd00:10:244::/48')
    .option('--service-cidr <cidr>', 'where `lab service add` takes cluster IPs from (.1 reserved)', '10.96.0.0/16')
    .addOption(new Option('--proxy-mode <mode>', 'service proxy of every agent (passed as `podnet agent --proxy-mode`)').choices(['nftables', 'iptables', 'off']).default('nftables'))
    .option('--racks <r>', 'underlay segments (each its own bridge and /24, fd00:<k>::/64 with --ipv6-network) joined by a router namespace; nodes are spread over them', intArg, 1)
    .addOption(new Option('--router <daemon>', 'the router\'s BGP daemon for --backend bgp: BIRD 2 or FRR (bgpd + zebra); default bird').choices(['bird', 'frr']))
    .option('--timeout <s>', 'seconds to wait for every node\'s subnet lease', intArg, 30)
    .addOption(new Option('--no-agents', 'build the topology only (no agents; for testing the lab itself)').hideHelp())
    .addOption(nameOption())
    .addOption(outputOption())
    .action(
      action(async (o: { nodes: number; backend: BackendType; store: 'file' | 'etcd'; etcdMembers: number; network: string; ipv6Network?: string; serviceCidr: string; proxyMode: 'nftables' | 'iptables' | 'off'; racks: number; router?: 'bird' | 'frr'; timeout: number; agents: boolean; name?: string } & Out) => {
        const { labUp } = await import('../lab/lab.js');
        const { labStatus, renderStatus } = await import('../lab/status.js');
        const { Progress } = await import('../util/progress.js');
        const { validateLabName } = await import('../lab/state.js');
        // `up` does not guess an existing lab: the default is "lab"
        const name = o.name ?? process.env.PODNET_LAB ?? 'lab';
        validateLabName(name);
        try {
          const s = await labUp({
            name,
            nodes: o.nodes,
            backend: o.backend,
            store: o.store,
            etcdMembers: o.store === 'etcd' ? o.etcdMembers : undefined,
            network: o.network,
            ipv6Network: o.ipv6Network,
            serviceCidr: o.serviceCidr,
            proxyMode: o.proxyMode,
            racks: o.racks,
            router: o.router,
            timeoutMs: o.timeout * 1000,
            noAgents: !o.agents,
            progress: new Progress(process.stderr),
            notes: process.stderr,
          });
          if (o.output === 'json') console.log(JSON.stringify(labStatus(s), null, 2));
          else console.log(renderStatus(labStatus(s)));
        } catch (e) {
          const { loadState } = await import('../lab/state.js');
          const s = (() => {
            try {
              return loadState(name);
            } catch {
              return undefined;
            }
          })();
          // what was built stays for inspection (agent logs); the state says how to remove it
          const hint = s ? `\nwhat was built is recorded in ${s.dir}/state.json; \`podnet lab down --name ${name}\` removes it` : '';
          throw new Error(`${(e as Error).message}${hint}`);
        }
      }),
    );

  lab
    .command('down')
    .description('remove everything a lab recorded (processes by PID, namespaces, files), also after a crash')
    .addOption(nameOption())
    .addOption(outputOption())
    .action(
      action(async (o: { name?: string } & Out) => {
        const { labDown } = await import('../lab/lab.js');
        const { resolveLabName } = await import('../lab/state.js');
        const { Progress } = await import('../util/progress.js');
        const name = resolveLabName(o.name);
        const r = await labDown(name, new Progress(o.output === 'json' ? null : process.stderr));
        if (o.output === 'json') console.log(JSON.stringify({ lab: name, ...r }));
        else console.log(`lab ${name}: stopped ${r.stopped.length} processes, deleted ${r.namespaces.length} namespaces${r.removedDir ? ', removed its dir' : ''}`);
      }),
    );

  lab
    .command('ls')
    .description('list the labs')
    .addOption(outputOption())
    .action(
      action(async (o: Out) => {
        const { labSummaries, renderSummaries } = await import('../lab/status.js');
        const l = labSummaries();
        console.log(o.output === 'json' ? JSON.stringify(l, null, 2) : renderSummaries(l));
      }),
    );

  lab
    .command('status')
    .description('nodes (underlay IP, leased subnet, agent PID), pods with IPs and servers, etcd members, services (from the store)')
    .addOption(nameOption())
    .addOption(outputOption())
    .action(
      action(async (o: { name?: string } & Out) => {
        const { requireState, resolveLabName } = await import('../lab/state.js');
        const { labStatusWithServices, renderStatus } = await import('../lab/status.js');
        const st = await labStatusWithServices(requireState(resolveLabName(o.name)));
        console.log(o.output === 'json' ? JSON.stringify(st, null, 2) : renderStatus(st));
      }),
    );

  const pod = lab.command('pod').description('pods: network namespaces wired through the node\'s CNI plugin');
  pod
    .command('add <pod>')
    .description('create a pod on a node (CNI ADD exactly as a runtime calls it); --serve runs a server in it that answers with the pod\'s name')
    .requiredOption('--node <node>', 'node to run the pod on')
    .option('--serve <port[/udp]>', 'answer every TCP connection (PORT, PORT/tcp) or UDP datagram (PORT/udp) on this port with the pod\'s name and a newline; repeatable', collect)
    .option('--serve-timeout <s>', 'seconds to wait for the server to listen', intArg, 10)
    .option('--host-port <host:container[/udp]>', 'publish a pod port on the node\'s addresses (the CNI portMappings capability, as a runtime passes it); repeatable', collect)
    .addOption(nameOption())
    .addOption(outputOption())
    .action(
      action(async (podName: string, o: { node: string; serve?: string[]; serveTimeout: number; hostPort?: string[]; name?: string } & Out) => {
        const { podAdd } = await import('../lab/lab.js');
        const { resolveLabName } = await import('../lab/state.js');
        const r = await podAdd(resolveLabName(o.name), podName, o.node, { serve: o.serve, serveTimeoutMs: o.serveTimeout * 1000, hostPorts: o.hostPort });
        console.log(o.output === 'json' ? JSON.stringify(r) : `pod ${r.name} on ${r.node}: ${r.ips.join(', ')}${r.serve ? `; serving ${r.serve.ports.join(', ')} (PID ${r.serve.pid})` : ''}`);
      }),
    );
  pod
    .command('del <pod>')
    .description('delete a pod (CNI DEL, then its namespace)')
    .addOption(nameOption())
    .action(
      action(async (podName: string, o: { name?: string }) => {
        const { podDel } = await import('../lab/lab.js');
        const { resolveLabName } = await import('../lab/state.js');
        const r = await podDel(resolveLabName(o.name), podName);
        for (const w of r.endpointWarnings) process.stderr.write(`podnet lab: warning: ${w}\n`);
        console.log(`pod ${podName} deleted${r.serverStopped ? ' (its server stopped)' : ''}`);
      }),
    );

  const node = lab.command('node').description('add or remove nodes');
  node
    .command('add [node]')
    .description('add a node (default name n<next>) with its agent, and wait for its subnet lease')
    .option('--timeout <s>', 'seconds to wait for the subnet lease', intArg, 30)
    .addOption(nameOption())
    .addOption(outputOption())
    .action(
      action(async (nodeName: string | undefined, o: { timeout: number; name?: string } & Out) => {
        const { nodeAdd, nodeSubnet } = await import('../lab/lab.js');
        const { resolveLabName } = await import('../lab/state.js');
        const { Progress } = await import('../util/progress.js');
        const n = await nodeAdd(resolveLabName(o.name), nodeName, { timeoutMs: o.timeout * 1000, progress: new Progress(process.stderr), notes: process.stderr });
        const subnet = nodeSubnet(n);
        console.log(o.output === 'json' ? JSON.stringify({ node: n.name, ip: n.ip, subnet }) : `node ${n.name}: ${n.ip}, pods ${subnet ?? '?'}`);
      }),
    );
  node
    .command('del <node>')
    .description('remove a node: stop its agent (and its podnet-tund), delete its lease from the store, delete its namespace and pods')
    .addOption(nameOption())
    .action(
      action(async (nodeName: string, o: { name?: string }) => {
        const { nodeDel } = await import('../lab/lab.js');
        const { resolveLabName } = await import('../lab/state.js');
        const { Progress } = await import('../util/progress.js');
        const r = await nodeDel(resolveLabName(o.name), nodeName, new Progress(process.stderr));
        for (const w of r.endpointWarnings) process.stderr.write(`podnet lab: warning: ${w}\n`);
        console.log(`node ${nodeName} removed${r.lease ? `; lease ${r.lease} ${r.leaseDeleted ? 'deleted' : `left to expire (${r.detail})`}` : ''}`);
      }),
    );

  const service = lab.command('service').description('services for podnet\'s proxy: a v1 Service and an EndpointSlice per service, written to the lab\'s cluster store');
  service
    .command('add <service>')
    .description('allocate a cluster IP (and NodePorts) and write the Service and its EndpointSlice, after the proxy\'s own validation')
    .option('--port <port[/proto]>', 'service port: PORT, PORT/tcp or PORT/udp (required; repeatable)', collect)
    .option('--target <port>', 'the pods\' port (default: the service port); once, or once per --port', collect)
    .option('--pods <a,b,c>', 'the endpoints: lab pods, comma-separated (default: none)')
    .addOption(new Option('--type <type>', 'service type').choices(['ClusterIP', 'NodePort']).default('ClusterIP'))
    .option('--node-port <n>', 'NodePort (30000-32767; default: the lowest free one); once per --port', collect)
    .option('--cluster-ip <ip>', 'a given cluster IP from the service CIDR (default: the lowest free one)')
    .addOption(new Option('--affinity <kind>', 'session affinity').choices(['None', 'ClientIP']).default('None'))
    .option('--affinity-timeout <s>', 'ClientIP affinity timeout in seconds (default 10800)')
    .addOption(new Option('--external-traffic-policy <policy>', 'NodePort traffic to local endpoints only (Local) or any (Cluster)').choices(['Cluster', 'Local']))
    .addOption(new Option('--internal-traffic-policy <policy>', 'cluster IP traffic to local endpoints only (Local) or any (Cluster)').choices(['Cluster', 'Local']))
    .addOption(nameOption())
    .addOption(outputOption())
    .action(
      action(
        async (
          svcName: string,
          o: {
            port?: string[];
            target?: string[];
            pods?: string;
            type: 'ClusterIP' | 'NodePort';
            nodePort?: string[];
            clusterIp?: string;
            affinity: 'None' | 'ClientIP';
            affinityTimeout?: string;
            externalTrafficPolicy?: 'Cluster' | 'Local';
            internalTrafficPolicy?: 'Cluster' | 'Local';
            name?: string;
          } & Out,
        ) => {
          const { serviceAdd } = await import('../lab/service-ops.js');
          const { resolveLabName } = await import('../lab/state.js');
          const { renderServices } = await import('../lab/services.js');
          const v = await serviceAdd(resolveLabName(o.name), {
            name: svcName,
            ports: o.port ?? [],
            targets: o.target ?? [],
            nodePorts: o.nodePort ?? [],
            type: o.type,
            pods: o.pods,
            clusterIP: o.clusterIp,
            affinity: o.affinity,
            affinityTimeout: o.affinityTimeout,
            externalTrafficPolicy: o.externalTrafficPolicy,
            internalTrafficPolicy: o.internalTrafficPolicy,
          });
          console.log(o.output === 'json' ? JSON.stringify(v, null, 2) : renderServices([v]));
        },
      ),
    );
  service
    .command('del <service>')
    .description('delete a service and its EndpointSlice from the store')
    .addOption(nameOption())
    .addOption(outputOption())
    .action(
      action(async (svcName: string, o: { name?: string } & Out) => {
        const { serviceDel } = await import('../lab/service-ops.js');
        const { resolveLabName } = await import('../lab/state.js');
        const r = await serviceDel(resolveLabName(o.name), svcName);
        console.log(o.output === 'json' ? JSON.stringify(r) : `service ${svcName} deleted${r.deleted.length ? ` (${r.deleted.join(', ')})` : ' (it was not in the store)'}`);
      }),
    );
  service
    .command('ls')
    .description('the services in the store (what the proxy sees): type, cluster IP, ports, NodePorts, endpoints, affinity')
    .addOption(nameOption())
    .addOption(outputOption())
    .action(
      action(async (o: { name?: string } & Out) => {
        const { serviceList } = await import('../lab/service-ops.js');
        const { requireState, resolveLabName } = await import('../lab/state.js');
        const { renderServices } = await import('../lab/services.js');
        const v = await serviceList(requireState(resolveLabName(o.name)));
        console.log(o.output === 'json' ? JSON.stringify(v, null, 2) : renderServices(v));
      }),
    );

  const endpoints = lab.command('endpoints').description('a service\'s endpoints (its EndpointSlice)');
  endpoints
    .command('set <service>')
    .description('rewrite the service\'s EndpointSlice with these pods (--pods \'\': scale to zero)')
    .requiredOption('--pods <a,b,c>', 'lab pods, comma-separated (\'\': none)')
    .addOption(nameOption())
    .addOption(outputOption())
    .action(
      action(async (svcName: string, o: { pods: string; name?: string } & Out) => {
        const { endpointsSet } = await import('../lab/service-ops.js');
        const { resolveLabName } = await import('../lab/state.js');
        const { renderServices } = await import('../lab/services.js');
        const v = await endpointsSet(resolveLabName(o.name), svcName, o.pods);
        console.log(o.output === 'json' ? JSON.stringify(v, null, 2) : renderServices([v]));
      }),
    );

  // the reply server `pod add --serve` runs in a pod's namespace (not for direct use)
  lab
    .command('serve', { hidden: true })
    .description('answer TCP connections and UDP datagrams with a line (what `pod add --serve` runs in the pod)')
    .requiredOption('--reply <text>', 'the line to answer with (a newline is added)')
    .option('--tcp <port>', 'TCP port; repeatable', collect)
    .option('--udp <port>', 'UDP port; repeatable', collect)
    .option('--ready-file <path>', 'written with the PID once every port listens')
    .action(
      action(async (o: { reply: string; tcp?: string[]; udp?: string[]; readyFile?: string }) => {
        const { runServer } = await import('../lab/serve.js');
        const port = (v: string) => {
          const n = Number(v);
          if (!Number.isInteger(n) || n < 1 || n > 65535) throw new Error(`port out of range: ${v}`);
          return n;
        };
        await runServer({ reply: o.reply, tcp: (o.tcp ?? []).map(port), udp: (o.udp ?? []).map(port), readyFile: o.readyFile });
      }),
    );

  lab
    .command('agent <action> <node>')
    .description('stop, start or restart a node\'s agent (by its recorded PID); --kill stops with SIGKILL; the tun backend\'s podnet-tund keeps running and is adopted')
    .option('--kill', 'SIGKILL instead of SIGTERM (a crash)')
    .addOption(nameOption())
    .action(
      action(async (act: string, nodeName: string, o: { kill?: boolean; name?: string }) => {
        if (act !== 'start' && act !== 'stop' && act !== 'restart') throw new Error(`agent action must be start, stop or restart, not ${act}`);
        const { agentCtl } = await import('../lab/lab.js');
        const { resolveLabName } = await import('../lab/state.js');
        const r = await agentCtl(resolveLabName(o.name), act, nodeName, !!o.kill);
        console.log(`agent of ${nodeName}: ${r.stopped ? `stopped${o.kill ? ' (SIGKILL)' : ''}` : act === 'start' ? '' : 'was not running'}${r.pid ? `${r.stopped ? ', ' : ''}running as PID ${r.pid}` : ''}`);
      }),
    );

  lab
    .command('etcd <action> <member>')
    .description('stop or start an etcd member (by its recorded PID); --kill stops with SIGKILL')
    .option('--kill', 'SIGKILL instead of SIGTERM')
    .addOption(nameOption())
    .action(
      action(async (act: string, member: string, o: { kill?: boolean; name?: string }) => {
        if (act !== 'start' && act !== 'stop') throw new Error(`etcd action must be start or stop, not ${act}`);
        const { etcdCtl } = await import('../lab/lab.js');
        const { resolveLabName } = await import('../lab/state.js');
        const r = await etcdCtl(resolveLabName(o.name), act, member, !!o.kill);
        console.log(`etcd ${member}: ${act === 'stop' ? (r.stopped ? 'stopped' : 'was not running') : `running as PID ${r.pid}`}`);
      }),
    );

  lab
    .command('router <action>')
    .description('stop, start or restart the router\'s BGP daemon (by its recorded PIDs): what survives it; --kill stops with SIGKILL. `sessions`: each node\'s session as the daemon reports it')
    .option('--kill', 'SIGKILL instead of SIGTERM (a crash)')
    .addOption(nameOption())
    .addOption(outputOption())
    .addHelpText('after', '\nExit codes: 0 done (sessions: every node Established), 1 an error, 3 (sessions) a node\'s session is not Established.')
    .action(
      action(async (act: string, o: { kill?: boolean; name?: string } & Out) => {
        const { routerCtl, routerSessionsByNode } = await import('../lab/lab.js');
        const { resolveLabName } = await import('../lab/state.js');
        if (act === 'sessions') {
          const rows = await routerSessionsByNode(resolveLabName(o.name));
          if (o.output === 'json') console.log(JSON.stringify(rows));
          else console.log(table([['NODE', 'ADDRESS', 'STATE'], ...rows.map((r) => [r.node, r.address, r.state])]));
          if (rows.some((r) => r.state !== 'Established')) process.exitCode = 3;
          return;
        }
        if (act !== 'start' && act !== 'stop' && act !== 'restart') throw new Error(`router action must be start, stop, restart or sessions, not ${act}`);
        const r = await routerCtl(resolveLabName(o.name), act, !!o.kill);
        if (o.output === 'json') console.log(JSON.stringify(r));
        else console.log(`router: ${r.stopped ? `stopped${o.kill ? ' (SIGKILL)' : ''}` : act === 'stop' ? 'was not running' : ''}${r.pids.length ? `${r.stopped ? ', ' : ''}running as PID ${r.pids.join(', ')}` : ''}`);
      }),
    );

  lab
    .command('exec <target> <command...>')
    .description('run a command in the namespace of a pod, node, etcd member, "fabric" or "router" (use -- before the command; in the router, birdc and vtysh talk to the lab\'s daemon)')
    .addOption(nameOption())
    .action(
      action(async (target: string, command: string[], o: { name?: string }) => {
        const { requireState, resolveLabName } = await import('../lab/state.js');
        const { execArgvFor, resolveTarget } = await import('../lab/lab.js');
        const s = requireState(resolveLabName(o.name));
        const ns = resolveTarget(s, target);
        const child = spawn('ip', ['netns', 'exec', ns, ...execArgvFor(s, target, command)], { stdio: 'inherit' });
        // the command's exit code is ours; a signal death maps to 128+n as a shell does
        const code = await new Promise<number>((resolve) => {
          child.on('error', (e) => {
            process.stderr.write(`podnet lab exec: ${e.message}\n`);
            resolve(127);
          });
          child.on('exit', (c, sig) => resolve(c ?? 128 + (sig ? osConstants.signals[sig] : 0)));
        });
        process.exitCode = code;
      }),
    );

  lab
    .command('ui')
    .description('a web page of the lab: the graph of its namespaces (fabric or racks and router, nodes, pods, services, tunnels) updated live, and `podnet trace` drawn on it hop by hop')
    .option('--listen <host:port>', 'address to serve on (port 0: a free one)', '127.0.0.1:8080')
    .option('--allow-remote', 'allow a non-loopback --listen address (the page runs traces as root and has no authentication)')
    .addOption(nameOption())
    .addHelpText('after', '\nServes / (the page), /api/topology, /api/trace?src=&dst=&proto=&port=, /api/events (server-sent events). Runs until SIGINT or SIGTERM.')
    .action(
      action(async (o: { listen: string; allowRemote?: boolean; name?: string }) => {
        const { requireState, resolveLabName } = await import('../lab/state.js');
        const { startUiServer } = await import('../lab/ui/server.js');
        const name = resolveLabName(o.name);
        requireState(name);
        const srv = await startUiServer({ lab: name, listen: o.listen, allowRemote: !!o.allowRemote });
        console.log(`podnet lab ui: ${srv.url} (lab ${name}; Ctrl-C stops)`);
        const sig = await new Promise<NodeJS.Signals>((resolve) => {
          process.once('SIGINT', () => resolve('SIGINT'));
          process.once('SIGTERM', () => resolve('SIGTERM'));
        });
        await srv.close();
        process.stderr.write(`podnet lab ui: ${sig}: stopped\n`);
      }),
    );

  lab
    .command('demo')
    .description('a 3-node lab (vxlan, host-gw or tun) with 2 pods per node, the pod-to-pod ping matrix with each pair\'s path, then teardown')
    .option('--keep', 'leave the lab up afterwards')
    .addOption(new Option('--backend <type>', 'datapath between nodes (tun: podnet-tund, docs/tun.md)').choices([...BACKEND_TYPES]).default('vxlan'))
    .addOption(new Option('--store <kind>', 'cluster store').choices(['file', 'etcd']).default('file'))
    .option('--name <lab>', 'lab name', 'demo')
    .addOption(outputOption())
    .action(
      action(async (o: { keep?: boolean; backend: BackendType; store: 'file' | 'etcd'; name: string } & Out) => {
        const { runLabDemo } = await import('../lab/demo.js');
        const { validateLabName } = await import('../lab/state.js');
        validateLabName(o.name);
        process.exitCode = await runLabDemo({ name: o.name, keep: o.keep, backend: o.backend, store: o.store, output: o.output });
      }),
    );
}
