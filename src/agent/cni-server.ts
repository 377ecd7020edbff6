// The agent's CNI server: a root-only unix socket; each connection is one CNI request, served
// by the same dispatcher the standalone executable uses. A failing request answers its own
// error and never takes the server down.
import { createServer, type Server } from 'node:net';
import { chmodSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { decodeRequest, encodeResponse } from './protocol.js';
import { runCni } from '../cni/run.js';
import { CniError, ErrCode } from '../cni/errors.js';
import { CURRENT_VERSION } from '../cni/version.js';
import type { Logger } from '../util/log.js';

export const DEFAULT_SOCKET = '/run/podnet/podnet.sock';

export interface CniServer {
  server: Server;
  close(): Promise<void>;
  stats: { requests: number; failures: number; inFlight: number };
}

/**
 * Queries the agent answers on its socket besides CNI (`podnet bgp status`): a request whose
 * environment has PODNET_CONTROL=<name> gets exit code 0 and the handler's JSON, or 1 and an error.
 */
export type ControlHandlers = Map<string, () => unknown>;

/** Called after each CNI request (metrics): the request, whether it succeeded, its time in seconds. */
export type CniRequestHook = (req: { env: Record<string, string>; stdin: string } | undefined, ok: boolean, seconds: number) => void;

export async function startCniServer(opts: { socket: string; log: Logger; cniLog?: Logger; controls?: ControlHandlers; onRequest?: CniRequestHook }): Promise<CniServer> {
  const { socket, log } = opts;
  mkdirSync(dirname(socket), { recursive: true, mode: 0o700 });
  try {
    if (statSync(socket).isSocket()) rmSync(socket); // left by a previous, killed agent
  } catch {
    /* absent */
  }
  const stats = { requests: 0, failures: 0, inFlight: 0 };
  const server = createServer({ allowHalfOpen: true }, (conn) => {
    const chunks: Buffer[] = [];
    let firstByte: bigint | undefined;
    conn.on('data', (c: Buffer) => {
      firstByte ??= process.hrtime.bigint();
      chunks.push(c);
    });
    conn.on('error', (e) => log.warn('client connection error', { error: e.message }));
    conn.on('end', () => {
      stats.requests++;
      stats.inFlight++;
      void (async () => {
        let out: Buffer;
        const t0 = process.hrtime.bigint();
        let req: ReturnType<typeof decodeRequest> | undefined;
        let ok = false;
        let control = false;
        try {
          req = decodeRequest(Buffer.concat(chunks));
          const controlName = req.env.PODNET_CONTROL;
          if (controlName !== undefined) {
            control = true;
            stats.requests--;
            const h = opts.controls?.get(controlName);
            out = h ? encodeResponse({ exitCode: 0, stdout: JSON.stringify(await h()) + '\n', stderr: '' }) : encodeResponse({ exitCode: 1, stdout: JSON.stringify({ error: `this agent does not answer ${controlName}` }) + '\n', stderr: '' });
          } else {
            const which = req.env.PODNET_PLUGIN || 'podnet';
            const ms = (a: bigint, b: bigint): number => Number(b - a) / 1e6;
            // the profile of a request: from the request's first byte to its end, then its decoding
            const steps = { 'socket-read': firstByte === undefined ? 0 : ms(firstByte, t0), decode: ms(t0, process.hrtime.bigint()) };
            const res = await runCni(which, req, opts.cniLog ?? log, steps);
            if (res.exitCode !== 0) stats.failures++;
            ok = res.exitCode === 0;
            out = encodeResponse(res);
          }
        } catch (e) {
          stats.failures++;
          const err = new CniError(ErrCode.AgentFailure, `podnet agent could not serve the request: ${(e as Error).message}`);
          out = encodeResponse({ exitCode: 1, stdout: JSON.stringify(err.toJSON(CURRENT_VERSION)) + '\n', stderr: '' });
          log.error('request failed', { error: (e as Error).stack });
        } finally {
          stats.inFlight--;
        }
        if (!control && opts.onRequest) {
          try {
            opts.onRequest(req, ok, Number(process.hrtime.bigint() - t0) / 1e9);
          } catch (e) {
            log.warn('CNI request hook failed', { error: (e as Error).message });
          }
        }
        conn.end(out);
      })();
    });
  });
  const oldMask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socket, () => resolve());
    });
  } finally {
    process.umask(oldMask);
  }
  chmodSync(socket, 0o600);
  server.on('error', (e) => log.error('CNI server error', { error: e.message }));
  log.info('serving CNI', { socket });
  return {
    server,
    stats,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        try {
          rmSync(socket);
        } catch {
          /* gone */
        }
      }),
  };
}
