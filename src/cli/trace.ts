// `podnet trace SRC DST`: the path a packet of a 5-tuple takes, hop by hop, from live kernel state.
// In a lab (--name, or the only lab) SRC and DST are pod, node or service names or addresses; on a
// real node (--from-netns, --host) SRC is an address or a pod's container ID and the walk may pass
// the node's own namespace and every named one. docs/trace.md says how each step is decided.
import { Command, Option } from 'commander';
import type { TraceRequest } from '../trace/query.js';

/** Exit codes: 0 the path is complete, 1 it breaks (or the trace failed), 2 bad usage. */
const EXIT_BROKEN = 1;
const EXIT_USAGE = 2;

/** The request's options as commander gives them (strings), plus the CLI's own. */
interface TraceOpts extends Omit<TraceRequest, 'lab'> {
  name?: string;
  size: string;
  output: 'text' | 'json';
  verify?: boolean;
  verifyWindow?: string;
}

export function registerTraceCommands(program: Command): void {
  program
    .command('trace <src> <dst>')
    .description('the path a packet takes from SRC to DST, hop by hop, as the kernel decides it now (netfilter and services, FIB, neighbours, bridge FDB, veth, VXLAN, podnet-tund), or the first hop where it breaks; --verify proves it with a real packet')
    .addOption(new Option('--proto <proto>', 'the packet\'s protocol (default: tcp with a port, else icmp)').choices(['tcp', 'udp', 'icmp']))
    .option('--port <n>', 'destination port (also DST as IP:PORT or NAME:PORT)')
    .option('--sport <n>', 'source port (default 40000)')
    .option('--size <bytes>', 'the IP packet\'s size, checked against every link\'s MTU', '84')
    .option('-6, --ipv6', 'use the IPv6 addresses of pod and node names')
    .option('--name <lab>', 'the lab (default: $PODNET_LAB, else the only lab)')
    .option('--from-netns <path>', 'on a real node: send from this network namespace (/run/netns/NAME); SRC an address in it or "-"')
    .option('--host', 'on this machine, not in a lab: SRC is an address or the container ID of a pod podnet\'s CNI wired')
    .option('--ipam-dir <dir>', 'with --host: where podnet-ipam keeps its reservations (default /var/lib/cni/networks)')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text'))
    .option('--verify', 'send a real packet of this 5-tuple from SRC, traced by the kernel (nftables nftrace in a short-lived table podnet-trace-* per namespace, removed afterwards), and say per hop whether the kernel agrees')
    .option('--verify-window <ms>', 'with --verify: how long to wait for the packet at the end of the path', '1500')
    .addHelpText(
      'after',
      '\nSRC, DST: a lab pod or node name (NAME or NAME:PORT), a service (svc/NAME, svc/NAME:PORT; the protocol of its port unless --proto), an IP, or IP:PORT ([IPv6]:PORT).\nExit codes: 0 the path is complete (and with --verify the kernel agrees on every hop), 1 it breaks (the first broken hop is named) or with --verify the kernel disagrees, 2 bad usage.',
    )
    .action(async (src: string, dst: string, o: TraceOpts) => {
      const { TraceUsageError, traceRequest } = await import('../trace/query.js');
      try {
        let lab;
        if (!o.fromNetns && !o.host) {
          const { requireState, resolveLabName } = await import('../lab/state.js');
          try {
            lab = requireState(resolveLabName(o.name));
          } catch (e) {
            throw new TraceUsageError((e as Error).message);
          }
        }
        const windowMs = Number(o.verifyWindow);
        if (!Number.isInteger(windowMs) || windowMs < 1 || windowMs > 600_000) throw new TraceUsageError(`--verify-window must be an integer 1-600000 (ms), not ${JSON.stringify(o.verifyWindow)}`);
        const r = await traceRequest(src, dst, { ...o, lab });
        if (o.verify) {
          const { destinationNamespace, verifyTrace } = await import('../trace/verify.js');
          // past a break, the destination's namespace is watched too (did the packet get there anyway?)
          let watch: string[] = [];
          if (r.verdict === 'broken') {
            const { labNamespaces } = await import('../trace/lab-endpoints.js');
            const { spawnSync } = await import('node:child_process');
            const named = () => {
              const l = spawnSync('ip', ['-j', 'netns', 'list'], { encoding: 'utf8' });
              return l.status === 0 && l.stdout.trim() ? (JSON.parse(l.stdout) as { name: string }[]).map((x) => x.name) : [];
            };
            const owner = destinationNamespace(r.query.dst, lab ? Object.keys(labNamespaces(lab)) : named());
            if (owner) watch = [owner];
          }
          r.verify = await verifyTrace(r, { watch, windowMs });
        }
        if (o.output === 'json') console.log(JSON.stringify(r, null, 2));
        else {
          const { renderTrace } = await import('../trace/render.js');
          console.log(renderTrace(r));
        }
        process.exitCode = r.verdict === 'complete' && (r.verify?.agrees ?? true) ? 0 : EXIT_BROKEN;
      } catch (e) {
        process.stderr.write(`podnet trace: ${(e as Error).message}\n`);
        process.exitCode = e instanceof TraceUsageError ? EXIT_USAGE : EXIT_BROKEN;
      }
    });
}
