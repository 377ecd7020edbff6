// Asking a running agent over its CNI socket for one of its controls (PODNET_CONTROL: bgp-status,
// ...): one request in the socket's own framing, one JSON answer.
import { connect } from 'node:net';
import { decodeResponse, encodeRequest } from './protocol.js';

export function askAgent(socket: string, control: string, timeoutMs = 5000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const c = connect(socket);
    const t = setTimeout(() => c.destroy(new Error(`no answer from the agent on ${socket} within ${timeoutMs} ms`)), timeoutMs);
    c.on('connect', () => c.end(encodeRequest({ env: { PODNET_CONTROL: control }, stdin: '' })));
    c.on('data', (d: Buffer) => chunks.push(d));
    c.on('error', (e) => {
      clearTimeout(t);
      reject(new Error(`cannot reach the agent on ${socket}: ${e.message}`));
    });
    c.on('end', () => {
      clearTimeout(t);
      try {
        const r = decodeResponse(Buffer.concat(chunks));
        const body = JSON.parse(r.stdout) as unknown;
        if (r.exitCode !== 0) reject(new Error((body as { error?: string }).error ?? `agent answered exit code ${r.exitCode}`));
        else resolve(body);
      } catch (e) {
        reject(new Error(`malformed answer from the agent: ${(e as Error).message}`));
      }
    });
  });
}
