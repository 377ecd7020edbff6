// `podnet trace SRC DST`: the path a packet of a 5-tuple takes, hop by hop, from live kernel state.
// In a lab (--name, or the only lab) SRC and DST are pod or node names or addresses; on a real
// node (--from-netns) SRC is an address in that namespace (or its first one) and the walk may pass
// every named namespace of the machine.
import { spawnSync } from 'node:child_process';
import { basename } from 'node:path';
import { Command, Option } from 'commander';
import type { Proto, TraceQuery } from '../trace/types.js';
import type { ClusterFacts } from '../trace/view.js';

/** Exit codes: 0 the path is complete, 1 it breaks (or the trace failed), 2 bad usage. */
const EXIT_BROKEN = 1;
const EXIT_USAGE = 2;

class UsageError extends Error {}

interface TraceOpts {
  name?: string;
  fromNetns?: string;
  proto?: Proto;
  port?: string;
  sport?: string;
  size: string;
  ipv6?: boolean;
  output: 'text' | 'json';
}

function intIn(v: string | undefined, lo: number, hi: number, what: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < lo || n > hi) throw new UsageError(`${what} must be an integer ${lo}-${hi}, not ${JSON.stringify(v)}`);
  return n;
}

async function buildQuery(src: string, dst: string, o: TraceOpts) {
  const { labCluster, labNamespaces, resolveLabEndpoint, parseAddrPort } = await import('../trace/lab-endpoints.js');
  let facts: ClusterFacts | undefined;
  const family = o.ipv6 ? 6 : undefined;
  let roles: Record<string, string>;
  let s: { label: string; ip: string; ns?: string };
  let d: { label: string; ip: string; port?: number };
  if (o.fromNetns) {
    // a real node: the source namespace by path (/run/netns/NAME) or name, the walk over every named one
    const name = basename(o.fromNetns);
    const list = spawnSync('ip', ['-j', 'netns', 'list'], { encoding: 'utf8' });
    const names = list.status === 0 && list.stdout.trim() ? (JSON.parse(list.stdout) as { name: string }[]).map((x) => x.name) : [];
    if (!names.includes(name)) throw new UsageError(`--from-netns ${o.fromNetns}: no named network namespace ${name} (ip netns list)`);
    roles = Object.fromEntries(names.map((n) => [n, n === name ? 'source' : '']));
    const a = src === '-' ? undefined : parseAddrPort(src);
    if (src !== '-' && !a) throw new UsageError(`with --from-netns, SRC is an address in that namespace or "-" (its first address), not ${src}`);
    let ip = a?.ip;
    if (!ip) {
      const r = spawnSync('ip', ['-n', name, '-j', '-o', 'addr', 'show', 'scope', 'global'], { encoding: 'utf8' });
      const addrs = (JSON.parse(r.stdout || '[]') as { addr_info?: { local: string; family: string }[] }[]).flatMap((x) => x.addr_info ?? []);
      ip = addrs.find((x) => (family === 6 ? x.family === 'inet6' : x.family === 'inet'))?.local;
      if (!ip) throw new UsageError(`${name} has no global IPv${family ?? 4} address to send from`);
    }
    s = { label: ip, ip, ns: name };
    const da = parseAddrPort(dst);
    if (!da) throw new UsageError(`with --from-netns, DST is an address (IP or IP:PORT), not ${dst}`);
    d = { label: da.ip, ...da };
  } else {
    const { requireState, resolveLabName } = await import('../lab/state.js');
    const usage = <T>(f: () => T): T => {
      try {
        return f();
      } catch (e) {
        throw new UsageError((e as Error).message);
      }
    };
    const st = usage(() => requireState(resolveLabName(o.name)));
    roles = labNamespaces(st);
    facts = labCluster(st);
    s = usage(() => resolveLabEndpoint(st, src, family));
    if (!s.ns) throw new UsageError(`SRC ${src} is in no namespace of lab ${st.name}: trace from a pod, a node or one of their addresses`);
    const srcFamily = s.ip.includes(':') ? 6 : 4;
    d = usage(() => resolveLabEndpoint(st, dst, family ?? srcFamily));
  }
  if (s.ip.includes(':') !== d.ip.includes(':')) throw new UsageError(`SRC ${s.ip} and DST ${d.ip} are of different IP families (-6 picks IPv6 addresses of names)`);
  const dport = intIn(o.port, 1, 65535, '--port') ?? d.port;
  const proto: Proto = o.proto ?? (dport !== undefined ? 'tcp' : 'icmp');
  if (proto === 'icmp' && dport !== undefined) throw new UsageError('--proto icmp has no port');
  const q: TraceQuery = {
    fromNs: s.ns!,
    srcLabel: s.label,
    src: s.ip,
    dst: d.ip,
    dstLabel: d.label,
    proto,
    ...(proto !== 'icmp' ? { sport: intIn(o.sport, 1, 65535, '--sport') ?? 40000, dport: dport ?? 80 } : {}),
    size: intIn(o.size, 28, 65535, '--size')!,
  };
  return { q, roles, facts };
}

export function registerTraceCommands(program: Command): void {
  program
    .command('trace <src> <dst>')
    .description('the path a packet takes from SRC to DST, hop by hop, as the kernel decides it now (FIB, neighbours, bridge FDB, veth, VXLAN), or the first hop where it breaks')
    .addOption(new Option('--proto <proto>', 'the packet\'s protocol (default: tcp with a port, else icmp)').choices(['tcp', 'udp', 'icmp']))
    .option('--port <n>', 'destination port (also DST as IP:PORT or NAME:PORT)')
    .option('--sport <n>', 'source port (default 40000)')
    .option('--size <bytes>', 'the IP packet\'s size, checked against every link\'s MTU', '84')
    .option('-6, --ipv6', 'use the IPv6 addresses of pod and node names')
    .option('--name <lab>', 'the lab (default: $PODNET_LAB, else the only lab)')
    .option('--from-netns <path>', 'on a real node: send from this network namespace (/run/netns/NAME); SRC an address in it or "-"')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text'))
    .addHelpText('after', '\nSRC, DST: a lab pod or node name (NAME or NAME:PORT), an IP, or IP:PORT ([IPv6]:PORT).\nExit codes: 0 the path is complete, 1 it breaks (the first broken hop is named), 2 bad usage.')
    .action(async (src: string, dst: string, o: TraceOpts) => {
      try {
        const { q, roles, facts } = await buildQuery(src, dst, o);
        const { LiveView } = await import('../trace/view.js');
        const { walk } = await import('../trace/walk.js');
        const r = await walk(new LiveView(Object.keys(roles), roles, facts), q);
        if (o.output === 'json') console.log(JSON.stringify(r, null, 2));
        else {
          const { renderTrace } = await import('../trace/render.js');
          console.log(renderTrace(r));
        }
        process.exitCode = r.verdict === 'complete' ? 0 : EXIT_BROKEN;
      } catch (e) {
        process.stderr.write(`podnet trace: ${(e as Error).message}\n`);
        process.exitCode = e instanceof UsageError ? EXIT_USAGE : EXIT_BROKEN;
      }
    });
}
