// Applies hostport.ts' plans: one `nft -f` transaction per ADD through the NftRunner, a read of
// the table to name who holds a taken port, and the UDP conntrack flushes (conntrack -D).
import type { NetnsRef, NftRunner } from '../kernel/types.js';
import { KernelError, isExists, isKernelErr, isNotFound, spawnCapture } from '../kernel/exec.js';
import { describeNetns, nsExecArgv } from '../kernel/netns.js';
import {
  HOSTPORT_TABLE,
  conflictError,
  conntrackAddArgs,
  conntrackDelArgs,
  conntrackDeleteOk,
  findConflicts,
  ownedBy,
  parseHostportTable,
  renderHostportAdd,
  renderHostportDelete,
  type HairpinElement,
  type HostportElement,
  type HostportPlan,
  type HostportTable,
} from './hostport.js';

/** Runs `conntrack -D ...` in a netns; resolves to the number of flows deleted. */
export interface ConntrackRunner {
  delete(ns: NetnsRef, argv: string[]): Promise<number>;
}

export class ConntrackCli implements ConntrackRunner {
  async delete(ns: NetnsRef, argv: string[]): Promise<number> {
    if (argv[0] !== 'conntrack' || argv[1] !== '-D') throw new Error(`not a conntrack delete: ${argv.join(' ')}`);
    const full = nsExecArgv(ns, argv);
    const op = `${argv.join(' ')} in ${describeNetns(ns)}`;
    const r = await spawnCapture(full, { op });
    if (!conntrackDeleteOk(r.exitCode, r.stderr)) throw new KernelError({ argv: full, exitCode: r.exitCode, stderr: r.stderr, op });
    const m = /(\d+) flow entries have been deleted/.exec(r.stderr);
    return m ? Number(m[1]) : 0;
  }
}

export async function listHostports(nft: NftRunner, ns: NetnsRef): Promise<HostportTable> {
  let json: unknown;
  try {
    json = await nft.listJson(ns, ['table', 'inet', HOSTPORT_TABLE]);
  } catch (e) {
    // without nft on the node no hostPort was ever written: DEL and GC have nothing to do
    if (isKernelErr(e) && e.kind === 'unsupported' && /^command not found: nft\b/.test(e.detail)) return { elements: [], hairpin: [], rules: {} };
    throw e;
  }
  return json === undefined ? { elements: [], hairpin: [], rules: {} } : parseHostportTable(json);
}

/**
 * Writes the shared layout and the plan's elements in one transaction. A port held by another
 * attachment (the same key, or a wildcard against a hostIP mapping of the family) is a CniError
 * 107 naming the holder; `onApplied` runs as soon as the elements exist (the caller registers
 * their removal there), before the cross-map check that may still refuse them.
 */
export async function hostportAdd(nft: NftRunner, ns: NetnsRef, plan: HostportPlan, onApplied: () => void): Promise<void> {
  if (!plan.elements.length) return;
  const script = renderHostportAdd(plan);
  for (let attempt = 0; ; attempt++) {
    try {
      await nft.run(ns, script);
      break;
    } catch (e) {
      if (!isExists(e)) throw e;
      const present = await listHostports(nft, ns);
      const held = findConflicts(plan.elements, present.elements, plan.owner);
      if (held.length) throw conflictError(held[0]);
      if (attempt >= 1) throw e;
      // no one else holds the port: either the holder went away since, or the key is this
      // attachment's own with another target (ADD repeated with changed mappings): drop ours, again
      const mine = ownedBy(present, (o) => o === plan.owner);
      const drop = renderHostportDelete(mine.elements, mine.hairpin);
      if (drop) {
        try {
          await nft.run(ns, drop);
        } catch (err) {
          if (!isNotFound(err)) throw err;
        }
      }
    }
  }
  onApplied();
  // wildcard and hostIP mappings live in different maps, so the kernel cannot refuse their
  // overlap: read back. Of two racing ADDs at least one sees the other (each reads after its
  // own commit), so they can never both succeed.
  const present = await listHostports(nft, ns);
  const cross = findConflicts(plan.elements, present.elements, plan.owner);
  if (cross.length) throw conflictError(cross[0]);
}

/** Flushes UDP flows to the new hostPorts (after the elements exist, so none can come back untranslated). */
export async function flushAddConntrack(ct: ConntrackRunner, ns: NetnsRef, elements: HostportElement[]): Promise<void> {
  await Promise.all(conntrackAddArgs(elements).map((argv) => ct.delete(ns, argv)));
}

/** Flushes UDP flows still translated to these targets (after their elements are gone). */
export async function flushDelConntrack(ct: ConntrackRunner, ns: NetnsRef, targets: Pick<HostportElement, 'protocol' | 'podIP' | 'containerPort'>[]): Promise<void> {
  await Promise.all(conntrackDelArgs(targets).map((argv) => ct.delete(ns, argv)));
}

/**
 * Removes every element whose owner matches; returns what was removed (for the conntrack flush).
 * nft 1.0.6 has no "destroy" (delete if present): read, delete what is there, and read again
 * when a concurrent removal beat us to an element.
 */
export async function hostportRemoveOwners(nft: NftRunner, ns: NetnsRef, owners: (owner: string) => boolean): Promise<{ elements: HostportElement[]; hairpin: HairpinElement[] }> {
  const removed: { elements: HostportElement[]; hairpin: HairpinElement[] } = { elements: [], hairpin: [] };
  for (let attempt = 0; ; attempt++) {
    const mine = ownedBy(await listHostports(nft, ns), owners);
    const script = renderHostportDelete(mine.elements, mine.hairpin);
    if (!script) return removed;
    try {
      await nft.run(ns, script);
      removed.elements.push(...mine.elements);
      removed.hairpin.push(...mine.hairpin);
      return removed;
    } catch (e) {
      if (!isNotFound(e) || attempt >= 2) throw e;
    }
  }
}
