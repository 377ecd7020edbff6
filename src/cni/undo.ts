// Every multi-step change keeps an undo stack: on failure it unwinds in reverse before the
// error is answered, so a failed ADD leaves nothing behind.
import type { Logger } from '../util/log.js';

export class UndoStack {
  private steps: { what: string; fn: () => Promise<void> }[] = [];

  push(what: string, fn: () => Promise<void>): void {
    this.steps.push({ what, fn });
  }

  /** Runs every undo step, newest first, continuing past failures (which are logged). */
  async unwind(log: Logger): Promise<void> {
    while (this.steps.length) {
      const s = this.steps.pop()!;
      try {
        await s.fn();
      } catch (e) {
        log.warn('rollback step failed', { step: s.what, error: (e as Error).message });
      }
    }
  }

  clear(): void {
    this.steps = [];
  }
}
