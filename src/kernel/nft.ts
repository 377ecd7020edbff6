// nftables through the nft CLI: scripts go in whole on stdin so each run is one atomic transaction.
import type { NetnsRef, NftRunner } from './types.js';
import { KernelError, spawnCapture } from './exec.js';
import { describeNetns, nsExecArgv } from './netns.js';

export interface NftCliOptions {
  timeoutMs?: number;
}

export class NftCli implements NftRunner {
  spawns = 0;
  constructor(private readonly opts: NftCliOptions = {}) {}

  async run(ns: NetnsRef, script: string): Promise<void> {
    if (typeof script !== 'string') throw new KernelError({ argv: [], exitCode: null, stderr: '', op: 'nft -f -', kind: 'invalid', detail: 'script must be a string' });
    const argv = nsExecArgv(ns, ['nft', '-f', '-']);
    this.spawns++;
    const r = await spawnCapture(argv, { input: script.endsWith('\n') ? script : script + '\n', op: `nft script in ${describeNetns(ns)}`, timeoutMs: this.opts.timeoutMs });
    if (r.exitCode !== 0) {
      throw new KernelError({ argv, exitCode: r.exitCode, stderr: r.stderr, op: `nft script in ${describeNetns(ns)}`, detail: nftDetail(r.stderr) });
    }
  }

  async listJson(ns: NetnsRef, args: string[], opts: { terse?: boolean } = {}): Promise<unknown | undefined> {
    if (!Array.isArray(args) || args.some((a) => typeof a !== 'string')) {
      throw new KernelError({ argv: [], exitCode: null, stderr: '', op: 'nft -j list', kind: 'invalid', detail: 'args must be an array of strings' });
    }
    // -t (terse) leaves set elements out: listing a table's objects stays cheap at 30,000 elements
    const argv = nsExecArgv(ns, ['nft', '-j', ...(opts.terse ? ['-t'] : []), 'list', ...args]);
    const op = `nft list ${args.join(' ')} in ${describeNetns(ns)}`;
    this.spawns++;
    const r = await spawnCapture(argv, { op, timeoutMs: this.opts.timeoutMs });
    if (r.exitCode !== 0) {
      const e = new KernelError({ argv, exitCode: r.exitCode, stderr: r.stderr, op, detail: nftDetail(r.stderr) });
      // "No such file or directory" from nft is the listed object; from nsenter it is the netns itself.
      if (e.kind === 'not-found' && !/^nsenter:/m.test(r.stderr)) return undefined;
      throw e;
    }
    const t = r.stdout.trim();
    if (t === '') return undefined;
    try {
      return JSON.parse(t) as unknown;
    } catch (err) {
      throw new KernelError({ argv, exitCode: r.exitCode, stderr: r.stderr, op, kind: 'other', detail: `unparsable JSON from nft: ${(err as Error).message}` });
    }
  }
}

/** nft's error plus the script line it points at, without the caret line. */
export function nftDetail(stderr: string): string {
  const lines = stderr.split('\n').filter((l) => l.trim() !== '' && !/^\s*\^+\s*$/.test(l));
  return lines.join(' | ').trim();
}
