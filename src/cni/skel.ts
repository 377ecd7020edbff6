// The CNI dispatcher: takes env and stdin as parameters (never process globals), so the
// same code serves the standalone executable, the agent and the tests.
import { CniError, ErrCode, asCniError } from './errors.js';
import { parseCommand, parseEnv, NAME_RE } from './env.js';
import { CURRENT_VERSION, compareVersions, convertResult, parseResult, requireSupported, versionInfo } from './version.js';
import type { CniEnv, CniRequest, CniResponse, CniResult } from './types.js';
import { nullLogger, type Logger } from '../util/log.js';

export interface CniContext {
  env: CniEnv;
  /** the full network configuration from stdin, as parsed */
  conf: Record<string, unknown>;
  cniVersion: string;
  prevResult?: CniResult;
  stdin: string;
  log: Logger;
  /** milliseconds spent per step of this request (the done log line carries them: the profile) */
  steps?: Record<string, number>;
}

/** Runs one step of a request and adds its duration to ctx.steps under `name`. */
export async function timed<T>(ctx: Pick<CniContext, 'steps'>, name: string, fn: () => Promise<T>): Promise<T> {
  const t0 = process.hrtime.bigint();
  try {
    return await fn();
  } finally {
    if (ctx.steps) ctx.steps[name] = (ctx.steps[name] ?? 0) + Number(process.hrtime.bigint() - t0) / 1e6;
  }
}

const round = (steps: Record<string, number>): Record<string, number> => Object.fromEntries(Object.entries(steps).map(([k, v]) => [k, Math.round(v * 1000) / 1000]));

export interface CniPlugin {
  readonly name: string;
  add(ctx: CniContext): Promise<CniResult>;
  del(ctx: CniContext): Promise<void>;
  check(ctx: CniContext): Promise<void>;
  status(ctx: CniContext): Promise<void>;
  gc(ctx: CniContext): Promise<void>;
}

function ok(stdout: string): CniResponse {
  return { exitCode: 0, stdout, stderr: '' };
}

function fail(err: CniError, version: string): CniResponse {
  return { exitCode: 1, stdout: JSON.stringify(err.toJSON(version)) + '\n', stderr: '' };
}

export function decodeConfig(stdin: string): Record<string, unknown> {
  let conf: unknown;
  try {
    conf = JSON.parse(stdin);
  } catch (e) {
    throw new CniError(ErrCode.DecodeFailure, `error decoding network config from stdin: ${(e as Error).message}`);
  }
  if (typeof conf !== 'object' || conf === null || Array.isArray(conf)) {
    throw new CniError(ErrCode.DecodeFailure, 'error decoding network config from stdin: expected a JSON object');
  }
  return conf as Record<string, unknown>;
}

export async function dispatch(plugin: CniPlugin, req: CniRequest, log: Logger = nullLogger, steps: Record<string, number> = {}): Promise<CniResponse> {
  let version = CURRENT_VERSION;
  const begun = process.hrtime.bigint();
  try {
    const command = parseCommand(req.env);
    if (command === 'VERSION') return ok(JSON.stringify(versionInfo()) + '\n');
    const env = parseEnv(req.env);
    const conf = decodeConfig(req.stdin);
    if (typeof conf.cniVersion === 'string' && conf.cniVersion) version = conf.cniVersion;
    requireSupported(conf.cniVersion);
    if (typeof conf.name !== 'string' || conf.name === '') throw new CniError(ErrCode.InvalidConfig, 'missing network name');
    if (!NAME_RE.test(conf.name)) throw new CniError(ErrCode.InvalidConfig, `invalid characters in network name: ${JSON.stringify(conf.name)}`);
    if (command === 'CHECK' && compareVersions(version, '0.4.0') < 0) {
      throw new CniError(ErrCode.IncompatibleVersion, `config version ${version} does not allow CHECK (needs 0.4.0 or later)`);
    }
    if ((command === 'STATUS' || command === 'GC') && compareVersions(version, '1.1.0') < 0) {
      throw new CniError(ErrCode.IncompatibleVersion, `config version ${version} does not allow ${command} (needs 1.1.0 or later)`);
    }
    let prevResult: CniResult | undefined;
    if (conf.prevResult !== undefined && conf.prevResult !== null) prevResult = parseResult(conf.prevResult, version);
    const ctx: CniContext = { env, conf, cniVersion: version, prevResult, stdin: req.stdin, steps, log: log.child({ cmd: command, containerID: env.containerId, ifname: env.ifname, plugin: plugin.name }) };
    const started = process.hrtime.bigint();
    steps.parse = Number(started - begun) / 1e6;
    switch (command) {
      case 'ADD': {
        const result = await plugin.add(ctx);
        ctx.log.info('ADD done', { ms: Number(process.hrtime.bigint() - started) / 1e6, steps: round(ctx.steps!) });
        return ok(JSON.stringify(convertResult(result, version)) + '\n');
      }
      case 'DEL':
        await plugin.del(ctx);
        break;
      case 'CHECK':
        await plugin.check(ctx);
        break;
      case 'STATUS':
        await plugin.status(ctx);
        break;
      case 'GC':
        await plugin.gc(ctx);
        break;
    }
    ctx.log.info(`${command} done`, { ms: Number(process.hrtime.bigint() - started) / 1e6, steps: round(ctx.steps!) });
    return ok('');
  } catch (e) {
    const err = asCniError(e);
    log.warn('CNI request failed', { code: err.code, error: err.message, cmd: req.env.CNI_COMMAND, containerID: req.env.CNI_CONTAINERID });
    return fail(err, version);
  }
}
