// A TTY-aware step printer for long operations (steps with durations); silent when null.
export class Progress {
  private started = 0n;
  private current = '';
  constructor(private readonly out: NodeJS.WriteStream | null) {}

  step(what: string): void {
    this.current = what;
    this.started = process.hrtime.bigint();
    this.out?.write(`${this.out.isTTY ? '\x1b[36m›\x1b[0m' : '-'} ${what}\n`);
  }

  private ms(): string {
    return `${(Number(process.hrtime.bigint() - this.started) / 1e6).toFixed(0)} ms`;
  }

  done(note = ''): void {
    this.out?.write(`  ${this.out.isTTY ? '\x1b[32m✓\x1b[0m' : 'ok'} ${note}${note ? ' ' : ''}(${this.ms()})\n`);
  }

  fail(note: string): void {
    this.out?.write(`  ${this.out?.isTTY ? '\x1b[31m✗\x1b[0m' : 'FAILED'} ${this.current}: ${note}\n`);
  }
}
