// The wire format between the thin CNI client and the agent, chosen so a POSIX shell with
// socat can speak it: NUL can appear in neither an environment value nor JSON.
//   request:  "PODNET1\0" ("KEY=VALUE\0")* "\0" <stdin bytes>   then the client half-closes
//   response: "<exit code>\n" <stdout bytes>
import type { CniRequest, CniResponse } from '../cni/types.js';

export const MAGIC = 'PODNET1\0';

export function encodeRequest(req: CniRequest): Buffer {
  const parts = [MAGIC];
  for (const [k, v] of Object.entries(req.env)) parts.push(`${k}=${v}\0`);
  parts.push('\0', req.stdin);
  return Buffer.from(parts.join(''), 'utf8');
}

export function decodeRequest(buf: Buffer): CniRequest {
  const s = buf.toString('utf8');
  if (!s.startsWith(MAGIC)) throw new Error('not a podnet CNI request (bad magic)');
  let pos = MAGIC.length;
  const env: Record<string, string> = {};
  for (;;) {
    const end = s.indexOf('\0', pos);
    if (end < 0) throw new Error('truncated podnet CNI request');
    const entry = s.slice(pos, end);
    pos = end + 1;
    if (entry === '') break;
    const eq = entry.indexOf('=');
    if (eq <= 0) throw new Error(`malformed environment entry in request: ${JSON.stringify(entry.slice(0, 40))}`);
    const v = entry.slice(eq + 1);
    // an unset variable arrives as KEY= from the shell client: treat as absent
    if (v !== '') env[entry.slice(0, eq)] = v;
  }
  return { env, stdin: s.slice(pos) };
}

export function encodeResponse(res: CniResponse): Buffer {
  return Buffer.from(`${res.exitCode}\n${res.stdout}`, 'utf8');
}

export function decodeResponse(buf: Buffer): CniResponse {
  const s = buf.toString('utf8');
  const nl = s.indexOf('\n');
  if (nl < 0 || !/^\d+$/.test(s.slice(0, nl))) throw new Error('malformed agent response');
  return { exitCode: Number(s.slice(0, nl)), stdout: s.slice(nl + 1), stderr: '' };
}
