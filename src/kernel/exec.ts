// Spawns kernel tools with argument arrays (never through a shell) and turns their failures into
// KernelErrors whose message says what was attempted and what the kernel answered.
import { spawn } from 'node:child_process';

export type KernelErrorKind = 'not-found' | 'exists' | 'busy' | 'unsupported' | 'invalid' | 'other';

export interface KernelErrorInit {
  argv: string[];
  exitCode: number | null;
  stderr: string;
  /** what was attempted: a batch line, a command, an op description */
  op?: string;
  kind?: KernelErrorKind;
  /** index of the failing op in the list given to apply() */
  opIndex?: number;
  /** the failing op object itself, when the error comes from apply() */
  kernelOp?: unknown;
  /** overrides the kernel message that goes into `message` (defaults to stderr) */
  detail?: string;
}

export class KernelError extends Error {
  override name = 'KernelError' as const;
  readonly argv: string[];
  readonly exitCode: number | null;
  readonly stderr: string;
  readonly op: string;
  readonly kind: KernelErrorKind;
  readonly opIndex?: number;
  readonly kernelOp?: unknown;
  /** the kernel's (or tool's) own words, without the "Command failed" noise */
  readonly detail: string;

  constructor(init: KernelErrorInit) {
    const detail = (init.detail ?? cleanStderr(init.stderr)) || `exit code ${init.exitCode}`;
    const op = init.op ?? init.argv.join(' ');
    const where = init.argv.length ? ` [${init.argv.join(' ')}${init.exitCode !== null ? `, exit ${init.exitCode}` : ''}]` : '';
    super(`${op}: ${detail}${where}`);
    this.argv = init.argv;
    this.exitCode = init.exitCode;
    this.stderr = init.stderr;
    this.op = op;
    this.detail = detail;
    this.kind = init.kind ?? classifyKernelMessage(detail);
    if (init.opIndex !== undefined) this.opIndex = init.opIndex;
    if (init.kernelOp !== undefined) this.kernelOp = init.kernelOp;
  }
}

/** Drops iproute2's batch bookkeeping lines and usage dumps so the message is the kernel's answer. */
export function cleanStderr(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.trimEnd())
    .filter((l) => l.trim() !== '' && !/^Command failed /.test(l));
  // A usage text after the real complaint adds nothing but noise.
  const usage = lines.findIndex((l) => /^Usage:/.test(l));
  return (usage > 0 ? lines.slice(0, usage) : lines).join('; ');
}

// Ordered: the first matching class wins. Messages come from iproute2 (RTNETLINK answers / extack
// "Error: ..."), bridge, sysctl (procps) and nft.
const CLASSES: Array<[KernelErrorKind, RegExp]> = [
  ['unsupported', /Unknown device type|Operation not supported|not supported|Protocol not supported|Address family not supported|Function not implemented|command not found/i],
  ['exists', /File exists|already exists|already assigned/i],
  ['busy', /Device or resource busy|Resource busy|Text file busy/i],
  [
    'not-found',
    /Cannot find device|No such device|does not exist|No such process|No such file or directory|Cannot assign requested address|Address not found|FIB table does not exist|Cannot stat|Nexthop not found/i,
  ],
  ['invalid', /Invalid argument|invalid|is wrong|garbage|unknown command|syntax error|Numerical result out of range|not a valid|Argument list too long/i],
];

export function classifyKernelMessage(msg: string): KernelErrorKind {
  for (const [kind, re] of CLASSES) if (re.test(msg)) return kind;
  return 'other';
}

function isKernelError(e: unknown): e is KernelError {
  // Duck-typed so a second copy of this module (bundles, tests) still recognises the error.
  return typeof e === 'object' && e !== null && (e as { name?: unknown }).name === 'KernelError' && 'kind' in e;
}

export function isKernelErr(e: unknown): e is KernelError {
  return isKernelError(e);
}
export function isNotFound(e: unknown): boolean {
  return isKernelError(e) && e.kind === 'not-found';
}
export function isExists(e: unknown): boolean {
  return isKernelError(e) && e.kind === 'exists';
}
export function isUnsupported(e: unknown): boolean {
  return isKernelError(e) && e.kind === 'unsupported';
}

export interface SpawnResult {
  stdout: string;
  stderr: string;
  exitCode: number | null;
  argv: string[];
}

export interface RunOptions {
  input?: string;
  /** what is being attempted, for the error message */
  op?: string;
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 60_000;

/** Runs argv to completion and reports the outcome; rejects only when the program cannot be started or times out. */
export function spawnCapture(argv: string[], opts: RunOptions = {}): Promise<SpawnResult> {
  return new Promise((resolve, reject) => {
    if (argv.length === 0) throw new Error('spawnCapture: empty argv');
    const child = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let settled = false;
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      child.kill('SIGKILL');
      reject(new KernelError({ argv, exitCode: null, stderr: '', op: opts.op, kind: 'other', detail: `timed out after ${opts.timeoutMs ?? DEFAULT_TIMEOUT_MS} ms` }));
    }, opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      const detail = e.code === 'ENOENT' ? `command not found: ${argv[0]} (${toolHint(argv[0])})` : e.message;
      reject(new KernelError({ argv, exitCode: null, stderr: '', op: opts.op, kind: e.code === 'ENOENT' ? 'unsupported' : 'other', detail }));
    });
    child.on('close', (code) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), exitCode: code, argv });
    });
    // A tool that exits early (parse error) closes stdin under us; that is reported through its exit code.
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
  });
}

/** Runs argv and returns stdout; throws KernelError on a non-zero exit. */
export async function run(argv: string[], opts: RunOptions = {}): Promise<string> {
  const r = await spawnCapture(argv, opts);
  if (r.exitCode !== 0) throw new KernelError({ argv, exitCode: r.exitCode, stderr: r.stderr, op: opts.op });
  return r.stdout;
}

function toolHint(cmd: string): string {
  switch (cmd) {
    case 'ip':
    case 'bridge':
      return 'install iproute2';
    case 'sysctl':
      return 'install procps';
    case 'nsenter':
    case 'unshare':
      return 'install util-linux';
    case 'nft':
      return 'install nftables';
    default:
      return 'is it installed and in PATH?';
  }
}
