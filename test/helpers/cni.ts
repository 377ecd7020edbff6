// Drives podnet exactly as a runtime does: the installed executable, exec'd inside a "node"
// network namespace with CNI_* in the environment and the config on stdin — optionally with
// an agent serving the socket in that node namespace.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetnsFixture, RUN_PREFIX } from './netns.js';
import { pingFrom } from '../../src/util/ping.js';
import { installCni } from '../../src/cni/install.js';
import { SUPPORTED_VERSIONS } from '../../src/cni/version.js';

const ROOT = new URL('../../', import.meta.url).pathname;

export function ensureBuilt(): void {
  if (!existsSync(join(ROOT, 'dist/podnet-cni.mjs')) || !existsSync(join(ROOT, 'dist/podnet.mjs'))) {
    execFileSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'inherit' });
  }
}

export interface CniCall {
  command: string;
  containerId?: string;
  netns?: string;
  ifname?: string;
  conf: unknown;
  args?: string;
  plugin?: string;
  env?: Record<string, string>;
}

export interface CniOutcome {
  code: number;
  stdout: string;
  stderr: string;
  json?: Record<string, unknown>;
}

/** A CNI executable exec'd in the node namespace as a runtime does: `env` is its whole environment, the config on stdin. */
export function execPlugin(nodeNs: string, exe: string, env: Record<string, string>, stdin: string): { child: ChildProcess; done: Promise<CniOutcome> } {
  const child = spawn('ip', ['netns', 'exec', nodeNs, exe], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  const done = new Promise<CniOutcome>((resolve) => {
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('close', (code) => {
      let json: Record<string, unknown> | undefined;
      try {
        json = stdout.trim() ? JSON.parse(stdout) : undefined;
      } catch {
        /* not JSON */
      }
      resolve({ code: code ?? -1, stdout, stderr, json });
    });
    child.stdin.on('error', () => {});
    child.stdin.end(stdin);
  });
  return { child, done };
}

export class CniHarness {
  readonly fixture = new NetnsFixture();
  readonly tmp = mkdtempSync(join(tmpdir(), `${RUN_PREFIX}-cni-`));
  readonly binDir = join(this.tmp, 'bin');
  readonly sock = join(this.tmp, 'podnet.sock');
  readonly logFile = join(this.tmp, 'cni.log');
  readonly nodeNs: string;
  agent?: ChildProcess;

  constructor(opts: { shellClient?: boolean } = {}) {
    ensureBuilt();
    this.nodeNs = this.fixture.add('node');
    installCni({ binDir: this.binDir, socket: this.sock }, [...SUPPORTED_VERSIONS], opts);
    // the reference plugins, for interop and delegation
    for (const p of ['host-local', 'bridge', 'loopback']) {
      if (existsSync(`/usr/lib/cni/${p}`)) copyFileSync(`/usr/lib/cni/${p}`, join(this.binDir, p));
    }
  }

  pod(tag = 'pod'): string {
    return this.fixture.add(tag);
  }

  podPath(ns: string): string {
    return `/run/netns/${ns}`;
  }

  async startAgent(opts: { env?: Record<string, string> } = {}): Promise<void> {
    this.agent = spawn('ip', ['netns', 'exec', this.nodeNs, process.execPath, join(ROOT, 'dist/podnet.mjs'), 'agent', '--socket', this.sock, '--log-level', 'warn'], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, PODNET_CNI_LOG: this.logFile, ...opts.env },
    });
    this.agent.stderr?.on('data', (d) => process.stderr.write(`[agent] ${d}`));
    for (let i = 0; i < 200 && !existsSync(this.sock); i++) await new Promise((r) => setTimeout(r, 25));
    if (!existsSync(this.sock)) throw new Error('agent did not start');
  }

  async stopAgent(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const a = this.agent;
    if (!a || a.exitCode !== null) return;
    const done = new Promise((r) => a.once('exit', r));
    a.kill(signal);
    await done;
    this.agent = undefined;
  }

  invoke(call: CniCall): Promise<CniOutcome> {
    return this.start(call).done;
  }

  /** Starts a call; `child` is the plugin process itself (ip netns exec and the client both exec, never fork). */
  start(call: CniCall): { child: ChildProcess; done: Promise<CniOutcome> } {
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      CNI_COMMAND: call.command,
      CNI_PATH: this.binDir,
      PODNET_CNI_LOG: this.logFile,
      ...(call.containerId !== undefined ? { CNI_CONTAINERID: call.containerId } : {}),
      ...(call.netns !== undefined ? { CNI_NETNS: call.netns } : {}),
      ...(call.ifname !== undefined ? { CNI_IFNAME: call.ifname } : {}),
      ...(call.args !== undefined ? { CNI_ARGS: call.args } : {}),
      ...(call.env ?? {}),
    };
    const stdin = typeof call.conf === 'string' ? call.conf : JSON.stringify(call.conf);
    return execPlugin(this.nodeNs, join(this.binDir, call.plugin ?? 'podnet'), env, stdin);
  }

  /** Runs a command in a netns; returns stdout or throws with stderr. */
  exec(ns: string, argv: string[], allowFail = false): string {
    try {
      return execFileSync('ip', ['netns', 'exec', ns, ...argv], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      if (allowFail) return '';
      throw new Error(`${argv.join(' ')} in ${ns}: ${(e as { stderr?: string }).stderr ?? (e as Error).message}`);
    }
  }

  ping(ns: string, dst: string, extra: string[] = []): boolean {
    return pingFrom(ns, dst, extra);
  }

  nodeLinks(): { ifname: string; ifalias?: string }[] {
    return JSON.parse(this.exec(this.nodeNs, ['ip', '-j', 'link', 'show']));
  }

  reservations(dataDir: string, network: string): string[] {
    const dir = join(dataDir, network);
    if (!existsSync(dir)) return [];
    return readdirSync(dir).filter((f) => /^[0-9a-f.:]+$/i.test(f) && /[.:]/.test(f));
  }

  async cleanup(): Promise<void> {
    await this.stopAgent('SIGKILL').catch(() => {});
    this.fixture.cleanup();
    rmSync(this.tmp, { recursive: true, force: true });
  }
}
