// Applies the iptables engine's rules with iptables-restore --noflush (ip6tables-restore for IPv6),
// through iptables-nft or iptables-legacy, inside the engine's network namespace. Only podnet's
// chains (PODNET-*) and its jump rules in the built-in chains are ever written.
//
// Each restore is one transaction per table (iptables-nft: one nf_tables batch; legacy: the table
// blob is replaced under the xtables lock, which `-w` waits for): a failing line applies nothing
// of that table. The hook jumps in built-in chains cannot be written as "ensure" in a restore, so
// they are edited against what iptables-save showed, count-checked (see hookEdits in render.ts):
// an edit made on a stale read fails whole and is retried on a fresh read, and after inserting a
// jump the engine reads again until each hook is there exactly once.
import { KernelError, isUnsupported, spawnCapture } from '../../../kernel/exec.js';
import { netnsFromPath, nsExecArgv } from '../../../kernel/netns.js';
import type { NetnsRef } from '../../../kernel/types.js';
import type { Family } from '../../../util/ip.js';
import type { EngineOptions, ProgrammedEndpoints, ProxyEngine, SyncResult } from '../../engine.js';
import type { ProxyModel, ProxyNode } from '../../model.js';
import { type Table } from './names.js';
import { FAMILIES, type Observed, type PartialOptions, cleanupText, hookEdits, planPartialFamily, renderAll, renderFamily, renderFamilyFull } from './render.js';
import { observedFromSave, programmedFromSave } from './save.js';

export interface IptablesEngineOptions extends EngineOptions, PartialOptions {
  /**
   * how long one iptables-save or -restore may take (ms); default 15 minutes: iptables-nft-restore
   * 1.8.x is superlinear in the chains of one transaction (a full sync of 10,000 services takes
   * minutes on a busy machine; legacy takes seconds)
   */
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 15 * 60_000;

/** How many times a transaction built on a read that went stale (a racing writer) is re-read and retried. */
const RACE_RETRIES = 8;

export class IptablesEngine implements ProxyEngine {
  readonly mode = 'iptables' as const;
  readonly backend: 'nft' | 'legacy';
  private readonly ns: NetnsRef;
  private queue: Promise<unknown> = Promise.resolve();
  /** the node of the last successful sync (JSON), to turn a partial sync after a node change into a full one */
  private lastNode?: string;
  /** what the last operation did, for tests and logs */
  lastStats: { restores: number; saves: number; hookEdits: number; retries: number } = { restores: 0, saves: 0, hookEdits: 0, retries: 0 };

  constructor(private readonly opts: IptablesEngineOptions = {}) {
    this.backend = opts.iptablesBackend ?? 'nft';
    this.ns = netnsFromPath(opts.netns);
  }

  /** The binary for a family and verb: iptables-nft-restore, ip6tables-legacy-save, ... */
  tool(family: Family, verb: 'restore' | 'save'): string {
    return `${family === 4 ? 'iptables' : 'ip6tables'}-${this.backend}-${verb}`;
  }

  render(model: ProxyModel, node: ProxyNode): string {
    return renderAll(model, node);
  }

  /** Runs engine operations one at a time (two syncs of one engine never interleave). */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.queue.then(fn, fn);
    this.queue = p.catch(() => undefined);
    return p;
  }

  private async save(family: Family): Promise<string> {
    const argv = nsExecArgv(this.ns, [this.tool(family, 'save')]);
    this.lastStats.saves++;
    const r = await spawnCapture(argv, { op: `${this.tool(family, 'save')}`, timeoutMs: this.opts.timeoutMs ?? DEFAULT_TIMEOUT_MS });
    if (r.exitCode !== 0) throw new KernelError({ argv, exitCode: r.exitCode, stderr: r.stderr, op: this.tool(family, 'save') });
    return r.stdout;
  }

  /** One iptables-restore --noflush; on failure the KernelError's op names the failing input line. */
  private async restore(family: Family, text: string): Promise<void> {
    const tool = this.tool(family, 'restore');
    const argv = nsExecArgv(this.ns, [tool, '-w', '--noflush']);
    this.lastStats.restores++;
    const r = await spawnCapture(argv, { input: text, op: tool, timeoutMs: this.opts.timeoutMs ?? DEFAULT_TIMEOUT_MS });
    if (r.exitCode === 0) return;
    const m = /line (\d+) failed/.exec(r.stderr);
    const n = m ? Number(m[1]) : undefined;
    const failing = n !== undefined ? text.split('\n')[n - 1] : undefined;
    const err = new KernelError({ argv, exitCode: r.exitCode, stderr: r.stderr, op: failing !== undefined ? `${tool} line ${n}: ${failing}` : `${tool} --noflush` });
    (err as KernelError & { failingLine?: string }).failingLine = failing;
    throw err;
  }

  /** Whether a restore failed on a line whose validity depends on what was read before (a race). */
  private static staleRead(e: unknown): boolean {
    const l = (e as { failingLine?: string }).failingLine;
    return l !== undefined && (l.startsWith('-D ') || l.startsWith('-X ') || l.startsWith('-I '));
  }

  fullSync(model: ProxyModel, node: ProxyNode): Promise<SyncResult> {
    return this.serial(async () => {
      this.lastStats = { restores: 0, saves: 0, hookEdits: 0, retries: 0 };
      this.lastNode = undefined;
      let changes = 0;
      for (const family of FAMILIES) {
        const fr = renderFamily(model, node, family);
        for (let attempt = 0; ; attempt++) {
          const observed = observedFromSave(await this.save(family));
          const { text, changes: n } = renderFamilyFull(fr, observed);
          const edits = hookEdits('nat', observed.nat).length + hookEdits('filter', observed.filter).length;
          try {
            await this.restore(family, text);
          } catch (e) {
            if (attempt < RACE_RETRIES && IptablesEngine.staleRead(e)) {
              this.lastStats.retries++;
              continue;
            }
            throw e;
          }
          changes += n;
          this.lastStats.hookEdits += edits;
          if (edits > 0) changes += await this.settleHooks(family, true);
          break;
        }
      }
      this.lastNode = JSON.stringify(node);
      return { kind: 'full', changes };
    });
  }

  /**
   * Reads the built-in chains again until each of podnet's hooks is there exactly once (wanted)
   * or not at all (!wanted). Two syncs that both saw no hook both insert one; each then sees two
   * and deletes both and inserts one in a single transaction; the one that acts on the stale read
   * fails whole and re-reads. No transaction can leave zero hooks, so traffic is never unhooked.
   */
  private async settleHooks(family: Family, wanted: boolean): Promise<number> {
    let changes = 0;
    for (let i = 0; ; i++) {
      const observed = observedFromSave(await this.save(family));
      const text = (['nat', 'filter'] as Table[])
        .map((t) => ({ t, edits: hookEdits(t, observed[t], wanted) }))
        .filter((x) => x.edits.length > 0)
        .map((x) => `*${x.t}\n${x.edits.join('\n')}\nCOMMIT\n`)
        .join('');
      if (!text) return changes;
      if (i >= RACE_RETRIES) throw new KernelError({ argv: [], exitCode: null, stderr: '', op: `${this.tool(family, 'restore')} hooks`, detail: 'podnet jump rules keep changing under us (another writer?)' });
      try {
        await this.restore(family, text);
        const n = text.split('\n').filter((l) => l.startsWith('-')).length;
        changes += n;
        this.lastStats.hookEdits += n;
      } catch (e) {
        if (!IptablesEngine.staleRead(e)) throw e;
        this.lastStats.retries++;
      }
    }
  }

  partialSync(prev: ProxyModel, next: ProxyModel, node: ProxyNode): Promise<SyncResult> {
    if (this.lastNode !== undefined && this.lastNode !== JSON.stringify(node)) return this.fullSync(next, node);
    return this.serial(async () => {
      this.lastStats = { restores: 0, saves: 0, hookEdits: 0, retries: 0 };
      let changes = 0;
      for (const family of FAMILIES) {
        const plan = planPartialFamily(prev, next, node, family, this.opts);
        if (!plan.text) continue;
        await this.restore(family, plan.text);
        changes += plan.changes;
      }
      this.lastNode = JSON.stringify(node);
      return { kind: 'partial', changes };
    });
  }

  /** Endpoints per frontend as the nat tables of both families have them (see programmedFromSave). */
  programmedEndpoints(_node?: ProxyNode): Promise<ProgrammedEndpoints> {
    return this.serial(async () => {
      this.lastStats = { restores: 0, saves: 0, hookEdits: 0, retries: 0 };
      const out: ProgrammedEndpoints = new Map();
      for (const family of FAMILIES) programmedFromSave(await this.save(family), out);
      return out;
    });
  }

  /**
   * Removes podnet's jumps from the built-in chains and every PODNET-* chain of nat and filter,
   * both families. Idempotent; a backend whose binaries are not installed has nothing to remove.
   */
  cleanup(): Promise<void> {
    return this.serial(async () => {
      this.lastStats = { restores: 0, saves: 0, hookEdits: 0, retries: 0 };
      this.lastNode = undefined;
      for (const family of FAMILIES) {
        for (let attempt = 0; ; attempt++) {
          let saved: string;
          try {
            saved = await this.save(family);
          } catch (e) {
            // without the backend's tools nothing of this backend can have been created here
            if (isUnsupported(e) && attempt === 0) break;
            throw e;
          }
          const observed: Observed = observedFromSave(saved);
          const text = cleanupText(observed);
          if (!text) break;
          try {
            await this.restore(family, text);
            break;
          } catch (e) {
            if (attempt < RACE_RETRIES && IptablesEngine.staleRead(e)) continue;
            throw e;
          }
        }
      }
    });
  }
}

export function createIptablesEngine(opts: IptablesEngineOptions = {}): IptablesEngine {
  return new IptablesEngine(opts);
}
