// `podnet lab demo`: the cluster side in one command — a 3-node lab (vxlan by default; host-gw, tun), two
// pods per node through the real CNI path, the full pod-to-pod ping matrix with the path each
// pair's packets take (read from the kernel's route lookup on the source node), then teardown.
import { execFile } from 'node:child_process';
import { Progress } from '../util/progress.js';
import { labDown, labUp, podAdd } from './lab.js';
import { loadState, requireState, type Backend, type LabState, type StoreKind } from './state.js';
import { runAsync } from './sys.js';

export type PathKind = 'same node' | 'overlay (vxlan)' | 'tunnel (tun)' | 'routed (host-gw)' | 'unknown';

export interface DemoResult {
  lab: string;
  backend: Backend;
  pods: { name: string; node: string; ip: string }[];
  pairs: { from: string; to: string; path: PathKind; ok: boolean; via?: string }[];
  failures: number;
}

function ping(ns: string, dst: string): Promise<boolean> {
  const once = () =>
    new Promise<boolean>((resolve) => {
      execFile('ip', ['netns', 'exec', ns, 'ping', '-n', '-q', '-c1', '-W2', dst], (err) => resolve(!err));
    });
  // the first packet of a pair may wait on neighbour resolution; one retry covers it
  return once().then((ok) => ok || once());
}

/**
 * Which way the source node sends packets for dst: the device of its route lookup tells
 * bridge (same node), a vxlan device (overlay) or the underlay NIC (host-gw routing).
 */
export async function pathKind(s: LabState, fromNode: string, toNode: string, dst: string): Promise<{ kind: PathKind; via?: string }> {
  if (fromNode === toNode) return { kind: 'same node' };
  const ns = s.nodes[fromNode].ns;
  const r = await runAsync('ip', ['-n', ns, '-j', 'route', 'get', dst]);
  let dev: string | undefined;
  let gw: string | undefined;
  try {
    const j = JSON.parse(r.stdout) as { dev?: string; gateway?: string }[];
    dev = j[0]?.dev;
    gw = j[0]?.gateway;
  } catch {
    return { kind: 'unknown' };
  }
  if (!dev) return { kind: 'unknown' };
  const l = await runAsync('ip', ['-n', ns, '-d', '-j', 'link', 'show', 'dev', dev]);
  let kindName: string | undefined;
  try {
    kindName = (JSON.parse(l.stdout) as { linkinfo?: { info_kind?: string } }[])[0]?.linkinfo?.info_kind;
  } catch {
    /* leave unknown */
  }
  const via = `${dev}${gw ? ` via ${gw}` : ''}`;
  if (kindName === 'vxlan') return { kind: 'overlay (vxlan)', via };
  if (kindName === 'tun') return { kind: 'tunnel (tun)', via };
  if (dev === 'eth0') return { kind: 'routed (host-gw)', via };
  return { kind: 'unknown', via };
}

export async function connectivityMatrix(s: LabState): Promise<DemoResult> {
  const pods = Object.values(s.pods)
    .filter((p) => p.ready && p.ips.length > 0)
    .sort((a, b) => a.node.localeCompare(b.node) || a.name.localeCompare(b.name));
  const pairs: DemoResult['pairs'] = [];
  for (const src of pods) {
    // one source's pings run together: 2 cores, but pings mostly wait
    const row = await Promise.all(
      pods
        .filter((d) => d !== src)
        .map(async (dst) => {
          const [ok, path] = await Promise.all([ping(src.ns, dst.ips[0]), pathKind(s, src.node, dst.node, dst.ips[0])]);
          return { from: src.name, to: dst.name, path: path.kind, ok, ...(path.via ? { via: path.via } : {}) };
        }),
    );
    pairs.push(...row);
  }
  return {
    lab: s.name,
    backend: s.backend,
    pods: pods.map((p) => ({ name: p.name, node: p.node, ip: p.ips[0] })),
    pairs,
    failures: pairs.filter((p) => !p.ok).length,
  };
}

const SHORT: Record<PathKind, string> = { 'same node': 'S', 'overlay (vxlan)': 'O', 'tunnel (tun)': 'T', 'routed (host-gw)': 'R', unknown: '?' };

export function renderMatrix(r: DemoResult, tty: boolean): string {
  const names = r.pods.map((p) => p.name);
  const w = Math.max(6, ...names.map((n) => n.length + 2));
  const out: string[] = [];
  out.push('Pods:');
  for (const p of r.pods) out.push(`  ${p.name.padEnd(w)} node ${p.node.padEnd(6)} ${p.ip}`);
  out.push('');
  out.push('Pod-to-pod reachability (ping; row = from, column = to; S same node, O overlay (vxlan), T tunnel (tun), R routed (host-gw)):');
  out.push('  ' + ''.padEnd(w) + names.map((n) => n.padEnd(w)).join(''));
  for (const from of names) {
    const cells = names.map((to) => {
      if (to === from) return '·'.padEnd(w);
      const p = r.pairs.find((x) => x.from === from && x.to === to)!;
      const mark = p.ok ? (tty ? '\x1b[32m✓\x1b[0m' : 'ok') : tty ? '\x1b[31m✗\x1b[0m' : 'FAIL';
      const plain = p.ok ? (tty ? '✓' : 'ok') : tty ? '✗' : 'FAIL';
      const cell = `${plain} ${SHORT[p.path]}`;
      return cell.replace(plain, mark) + ' '.repeat(Math.max(1, w - cell.length));
    });
    out.push('  ' + from.padEnd(w) + cells.join(''));
  }
  const kinds = new Map<string, number>();
  for (const p of r.pairs) kinds.set(p.path, (kinds.get(p.path) ?? 0) + 1);
  out.push('');
  out.push(`${r.pairs.length - r.failures}/${r.pairs.length} pairs reachable (${[...kinds].map(([k, n]) => `${n} ${k}`).join(', ')})`);
  for (const p of r.pairs.filter((x) => !x.ok)) out.push(`  FAILED ${p.from} → ${p.to} (${p.path}${p.via ? `, ${p.via}` : ''})`);
  return out.join('\n');
}

export interface DemoOptions {
  name: string;
  keep?: boolean;
  backend?: Backend;
  store?: StoreKind;
  output: string;
}

export async function runLabDemo(o: DemoOptions): Promise<number> {
  const json = o.output === 'json';
  const progress = new Progress(process.stderr);
  let built = false;
  const teardown = async () => {
    if (!built || o.keep) return;
    built = false;
    progress.step(`tearing down lab ${o.name}`);
    await labDown(o.name);
    progress.done();
  };
  // Ctrl-C mid-way still removes what was built (unless --keep)
  const onSignal = () => {
    void teardown().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    // a lab of this name that is not ours must survive the demo's teardown
    if (loadState(o.name)) throw new Error(`lab ${o.name} exists already: \`podnet lab down --name ${o.name}\` or \`lab demo --name OTHER\``);
    built = true;
    const s0 = await labUp({ name: o.name, nodes: 3, backend: o.backend ?? 'vxlan', store: o.store ?? 'file', progress, notes: process.stderr });
    for (const n of Object.values(s0.nodes).sort((a, b) => a.index - b.index)) {
      for (const suffix of ['a', 'b']) {
        const pod = `${n.name}${suffix}`;
        progress.step(`pod ${pod} on ${n.name} (CNI ADD)`);
        const r = await podAdd(o.name, pod, n.name);
        progress.done(r.ips.join(', '));
      }
    }
    progress.step('pinging every pod from every pod');
    const result = await connectivityMatrix(requireState(o.name));
    if (result.failures) progress.fail(`${result.failures} of ${result.pairs.length} pairs unreachable`);
    else progress.done(`${result.pairs.length} pairs`);
    if (json) console.log(JSON.stringify(result, null, 2));
    else console.log('\n' + renderMatrix(result, !!process.stdout.isTTY) + '\n');
    if (o.keep) process.stderr.write(`lab ${o.name} kept: \`podnet lab status --name ${o.name}\`, \`podnet lab down --name ${o.name}\`\n`);
    return result.failures ? 1 : 0;
  } catch (e) {
    progress.fail((e as Error).message);
    return 1;
  } finally {
    await teardown();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
