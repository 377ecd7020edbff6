// Host veths of concurrent DELs deleted together. Each link deletion waits in the kernel for RCU
// grace periods under the rtnl lock (15-20 ms here), so DELs served concurrently by the agent
// queued behind each other: 4 workers got no more pods per second than 1. Deletions that arrive
// while one is in the kernel (or in the same event-loop turn) go in the next group, which the
// adapter deletes in one unregister (deleteLinksTogether); an adapter without it deletes them
// one by one. A caller's promise settles when its link is gone.
import type { KernelAdapter, NetnsRef } from '../../kernel/types.js';
import { describeNetns } from '../../kernel/netns.js';

interface Waiter {
  name: string;
  resolve: () => void;
  reject: (e: Error) => void;
}

class LinkDeleter {
  private queue: Waiter[] = [];
  private busy = false;
  private scheduled = false;

  constructor(
    private readonly kernel: KernelAdapter,
    private readonly ns: NetnsRef,
  ) {}

  delete(name: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ name, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.busy || this.scheduled || !this.queue.length) return;
    this.scheduled = true;
    // the rest of this turn's requests join first
    setImmediate(() => {
      this.scheduled = false;
      void this.flush();
    });
  }

  private async flush(): Promise<void> {
    const batch = this.queue.splice(0);
    if (!batch.length) return;
    this.busy = true;
    const names = [...new Set(batch.map((w) => w.name))];
    try {
      if (this.kernel.deleteLinksTogether) await this.kernel.deleteLinksTogether(this.ns, names);
      else await this.kernel.apply(this.ns, names.map((name) => ({ op: 'link-del', name, ignoreMissing: true }) as const));
      for (const w of batch) w.resolve();
    } catch (e) {
      if (batch.length === 1) batch[0].reject(e as Error);
      else {
        // who failed is not known from a group: each alone, so each gets its own outcome
        for (const w of batch) {
          try {
            await this.kernel.apply(this.ns, [{ op: 'link-del', name: w.name, ignoreMissing: true }]);
            w.resolve();
          } catch (err) {
            w.reject(err as Error);
          }
        }
      }
    } finally {
      this.busy = false;
      this.schedule();
    }
  }
}

const deleters = new WeakMap<KernelAdapter, Map<string, LinkDeleter>>();

/** Deletes a link (a missing one is no error), together with the concurrent deletions in that netns. */
export function deleteLinkBatched(kernel: KernelAdapter, ns: NetnsRef, name: string): Promise<void> {
  let byNs = deleters.get(kernel);
  if (!byNs) deleters.set(kernel, (byNs = new Map()));
  const key = describeNetns(ns);
  let d = byNs.get(key);
  if (!d) byNs.set(key, (d = new LinkDeleter(kernel, ns)));
  return d.delete(name);
}
