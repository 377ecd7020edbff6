// `podnet cleanup`: reads the node (this process' network namespace), plans with cleanup-plan.ts
// and applies the plan through the KernelAdapter, nft and iptables-restore. Idempotent: every
// deletion tolerates an object already gone, and a second run plans nothing.
import { existsSync, lstatSync, readdirSync, readFileSync, rmdirSync, rmSync, unlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { join, resolve } from 'node:path';
import { defaultKernel, defaultNft, isUnsupported, KernelError, spawnCapture } from '../kernel/index.js';
import type { KernelAdapter, KernelOp, NetnsRef, NftRunner } from '../kernel/types.js';
import { findTund, stopTund, tundFiles } from './tund/index.js';
import { networksOfLinks, planCleanup, VXLAN_DEVICE, type CleanupItem, type IptablesBackend, type IptablesSave, type NodeState } from './cleanup-plan.js';

export interface CleanupOptions {
  dataDir: string;
  socket: string;
  subnetFile: string;
  all: boolean;
  /** where the IPAM reservations are: <ipamDir>/<network> */
  ipamDir: string;
  /** networks whose IPAM state --all removes, besides those the CNI's host links name */
  networks: string[];
}

const ns: NetnsRef = { kind: 'current' };

/** Whether something accepts connections on the socket (a running agent). */
export function socketAnswers(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((res) => {
    const c = connect(path);
    const t = setTimeout(() => {
      c.destroy();
      res(false);
    }, timeoutMs);
    c.once('connect', () => {
      clearTimeout(t);
      c.destroy();
      res(true);
    });
    c.once('error', () => {
      clearTimeout(t);
      res(false);
    });
  });
}

function isSocket(p: string): boolean {
  try {
    return lstatSync(p).isSocket();
  } catch {
    return false;
  }
}

async function iptablesSave(backend: IptablesBackend, family: 4 | 6): Promise<IptablesSave | undefined> {
  const tool = `${family === 4 ? 'iptables' : 'ip6tables'}-${backend}-save`;
  let r;
  try {
    r = await spawnCapture([tool], { op: tool });
  } catch {
    return undefined; // not installed: nothing of this backend can be here
  }
  if (r.exitCode !== 0) return undefined;
  return { backend, family, text: r.stdout };
}

function nftTables(json: unknown): { family: string; name: string }[] {
  const items = (json as { nftables?: Record<string, unknown>[] } | undefined)?.nftables ?? [];
  const out: { family: string; name: string }[] = [];
  for (const it of items) {
    const t = it.table as { family?: string; name?: string } | undefined;
    if (t?.family && t.name) out.push({ family: t.family, name: t.name });
  }
  return out;
}

/** What cleanup needs to know of this node. */
export async function readNodeState(o: CleanupOptions, kernel: KernelAdapter = defaultKernel(), nft: NftRunner = defaultNft()): Promise<NodeState> {
  const links = await kernel.links(ns);
  const routes = [...(await kernel.routes(ns, { family: 4, table: 'all' })), ...(await kernel.routes(ns, { family: 6, table: 'all' }))];
  const neighbours = [];
  const fdb = [];
  for (const l of links) {
    if (l.kind !== 'vxlan' || !VXLAN_DEVICE.test(l.name)) continue;
    neighbours.push(...(await kernel.neighbours(ns, l.name)));
    fdb.push(...(await kernel.fdb(ns, l.name)));
  }
  const tables = nftTables(await nft.listJson(ns, ['tables']));
  const iptables: IptablesSave[] = [];
  for (const backend of ['nft', 'legacy'] as const) {
    for (const family of [4, 6] as const) {
      const s = await iptablesSave(backend, family);
      if (s) iptables.push(s);
    }
  }
  const t = findTund(o.dataDir);
  const tf = tundFiles(o.dataDir);
  const subnetContent = (() => {
    try {
      return lstatSync(o.subnetFile).isFile() ? readFileSync(o.subnetFile, 'utf8') : undefined;
    } catch {
      return undefined;
    }
  })();
  const networks = [...new Set([...networksOfLinks(links), ...o.networks])].sort();
  const ipamDirs = networks.map((network) => ({ network, path: join(resolve(o.ipamDir), network) })).filter((d) => existsSync(d.path));
  return {
    links,
    routes,
    neighbours,
    fdb,
    nftTables: tables,
    iptables,
    ...(t ? { tund: { pid: t.pid, pidfile: tf.pid } } : {}),
    files: {
      ...(isSocket(o.socket) ? { socket: resolve(o.socket) } : {}),
      ...(subnetContent !== undefined ? { subnetFile: { path: resolve(o.subnetFile), content: subnetContent } } : {}),
      ...(existsSync(tf.dir) ? { tundDir: tf.dir } : {}),
      dataFiles: ['subnet', 'bgp-running'].map((f) => join(resolve(o.dataDir), f)).filter((p) => existsSync(p)),
      ipamDirs,
      ...(existsSync(o.dataDir) && lstatSync(o.dataDir).isDirectory() ? { dataDir: { path: resolve(o.dataDir), entries: readdirSync(o.dataDir) } } : {}),
    },
  };
}

/** Quotes one token for iptables-restore. */
function restoreToken(t: string): string {
  return /^[A-Za-z0-9_.:/,!=+@%-]+$/.test(t) ? t : `"${t.replace(/(["\\])/g, '\\$1')}"`;
}

/** The restore text that removes these items of one backend and family. Pure. */
export function iptablesRemovalText(items: CleanupItem[]): string {
  const byTable = new Map<string, { rules: string[]; chains: string[] }>();
  const of = (t: string) => byTable.get(t) ?? byTable.set(t, { rules: [], chains: [] }).get(t)!;
  for (const it of items) {
    if (it.kind === 'iptables-rule') of(it.table).rules.push(`-D ${it.chain} ${it.spec.map(restoreToken).join(' ')}`);
    else if (it.kind === 'iptables-chain') of(it.table).chains.push(it.chain);
  }
  let out = '';
  for (const [t, { rules, chains }] of byTable) {
    // jumps out of the built-in chains first, then every podnet chain is flushed before any is
    // deleted (they jump to each other)
    out += `*${t}\n${rules.map((r) => r + '\n').join('')}${chains.map((c) => `-F ${c}\n`).join('')}${chains.map((c) => `-X ${c}\n`).join('')}COMMIT\n`;
  }
  return out;
}

export interface ApplyStep {
  what: string;
  ok: boolean;
  error?: string;
}

/**
 * Applies a plan in its order; a failing step is reported and the others still run (what is left
 * is what a second run plans). Returns one step per group of items.
 */
export async function applyCleanup(plan: CleanupItem[], kernel: KernelAdapter = defaultKernel(), nft: NftRunner = defaultNft()): Promise<ApplyStep[]> {
  const steps: ApplyStep[] = [];
  const step = async (what: string, fn: () => Promise<unknown>) => {
    try {
      await fn();
      steps.push({ what, ok: true });
    } catch (e) {
      steps.push({ what, ok: false, error: (e as Error).message });
    }
  };
  for (const p of plan) {
    if (p.kind !== 'process') continue;
    await step(p.what, async () => {
      // stopTund re-reads the pidfile and re-checks /proc before every signal
      const dataDir = resolve(p.pidfile, '..', '..');
      if (!(await stopTund(dataDir))) {
        if (findTund(dataDir)) throw new Error(`podnet-tund ${p.pid} did not stop`);
      }
    });
  }
  const tables = plan.filter((p) => p.kind === 'nft-table');
  if (tables.length) {
    const script = tables.map((t) => `add table ${t.family} ${t.name}\ndelete table ${t.family} ${t.name}\n`).join('');
    await step(`delete ${tables.length} nftables table(s)`, () => nft.run(ns, script));
  }
  const ipt = plan.filter((p) => p.kind === 'iptables-rule' || p.kind === 'iptables-chain');
  const groups = new Map<string, CleanupItem[]>();
  for (const p of ipt) {
    if (p.kind !== 'iptables-rule' && p.kind !== 'iptables-chain') continue;
    const k = `${p.family === 4 ? 'iptables' : 'ip6tables'}-${p.backend}-restore`;
    groups.set(k, [...(groups.get(k) ?? []), p]);
  }
  for (const [tool, items] of groups) {
    await step(`${tool}: ${items.length} rule(s)/chain(s)`, async () => {
      const argv = [tool, '-w', '--noflush'];
      const r = await spawnCapture(argv, { input: iptablesRemovalText(items), op: `${tool} --noflush` });
      if (r.exitCode !== 0) throw new KernelError({ argv, exitCode: r.exitCode, stderr: r.stderr, op: `${tool} --noflush` });
    });
  }
  const ops: KernelOp[] = [];
  for (const p of plan) {
    if (p.kind === 'route') ops.push({ op: 'route-del', route: p.route, ignoreMissing: true });
    else if (p.kind === 'neighbour') ops.push({ op: 'neigh-del', dev: p.dev, dst: p.dst, ignoreMissing: true });
    else if (p.kind === 'fdb') ops.push({ op: 'fdb-del', dev: p.dev, mac: p.mac, dst: p.dst, ignoreMissing: true });
  }
  if (ops.length) await step(`delete ${ops.length} route(s), neighbour(s), FDB entries`, () => kernel.apply(ns, ops));
  const links = plan.flatMap((p) => (p.kind === 'link' ? [p.name] : []));
  if (links.length) {
    await step(`delete ${links.length} link(s)`, async () => {
      if (kernel.deleteLinksTogether) {
        try {
          await kernel.deleteLinksTogether(ns, links);
          return;
        } catch (e) {
          if (!isUnsupported(e)) throw e;
        }
      }
      await kernel.apply(ns, links.map((name) => ({ op: 'link-del', name, ignoreMissing: true })));
    });
  }
  for (const p of plan) {
    if (p.kind === 'file') await step(p.what, async () => unlinkSync(p.path));
    else if (p.kind === 'dir') await step(p.what, async () => rmSync(p.path, { recursive: true, force: true }));
    else if (p.kind === 'empty-dir') await step(p.what, async () => rmdirSync(p.path));
  }
  return steps;
}

/** Reads, plans and (unless dryRun) applies. */
export async function runCleanup(o: CleanupOptions & { dryRun: boolean }): Promise<{ plan: CleanupItem[]; steps: ApplyStep[] }> {
  const plan = planCleanup(await readNodeState(o), { all: o.all });
  const steps = o.dryRun || plan.length === 0 ? [] : await applyCleanup(plan);
  return { plan, steps };
}
