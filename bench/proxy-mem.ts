// Helper of bench/proxy.ts: the proxy's peak memory. Run as its own Node process:
//
//   node --import tsx bench/proxy-mem.ts MODE NETNS_PATH SERVICES
//
// MODE nftables|iptables: builds SERVICES services with their slices and does what the proxy does
// at start (Proxier.replaceAll + sync; engine.fullSync(normalize(...)) when there is no Proxier yet)
// against the netns; MODE baseline: builds and normalizes the same state only. Prints one JSON line
// with VmHWM/VmRSS of this process (from /proc/self/status) at the end.
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { normalize } from '../src/proxy/normalize.js';
import type { ProxyEngine, ProxyMode } from '../src/proxy/engine.js';
import { NODE, makeState } from './proxy-gen.js';
import { loadPodnet } from './proxy-podnet.js';

function statusKb(field: string): number {
  const m = readFileSync('/proc/self/status', 'utf8').match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'));
  return m ? Number(m[1]) : NaN;
}

const [mode, netns, count] = process.argv.slice(2);
const n = Number(count);
const state = makeState(n);
let via = 'normalize only';
let ms = 0;
let engine: ProxyEngine | undefined;
if (mode === 'baseline') {
  normalize(state, NODE);
} else {
  const podnet = await loadPodnet();
  if (!podnet.createEngine) throw new Error(`no engines: ${podnet.engineWhy}`);
  engine = await podnet.createEngine(mode as ProxyMode, { netns, iptablesBackend: 'nft' });
  const t0 = performance.now();
  if (podnet.Proxier) {
    const proxier = new podnet.Proxier({ engine, node: NODE, netns });
    proxier.replaceAll(state);
    await proxier.sync();
    via = 'Proxier.replaceAll + sync';
  } else {
    await engine.fullSync(normalize(state, NODE), NODE);
    via = 'engine.fullSync(normalize())';
  }
  ms = performance.now() - t0;
}
const out = { mode, services: n, via, ms, hwmKb: statusKb('VmHWM'), rssKb: statusKb('VmRSS') };
engine?.close?.();
process.stdout.write(JSON.stringify(out) + '\n');
process.exit(0);
