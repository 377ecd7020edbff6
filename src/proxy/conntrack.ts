// Stale UDP/SCTP flows. A DNAT-ed UDP "connection" lives in conntrack as long as the client keeps
// sending, so after an endpoint goes away the client keeps hitting it (kubernetes#19029, #59368,
// DNS and statsd blackholes). After every change podnet deletes the flows whose reply source is an
// endpoint that was removed from a frontend, also when the service scales to zero or is deleted
// (the 2026 regressions, #139628 and PR#141371). It computes the removal against what was
// programmed, read from the kernel at start, so a restart flushes nothing that did not change
// (#122740).
import { spawnCapture } from '../kernel/exec.js';
import { nsExecArgv } from '../kernel/netns.js';
import type { NetnsRef } from '../kernel/types.js';
import type { ProgrammedEndpoints } from './engine.js';

export interface StaleFlow {
  protocol: 'udp' | 'sctp';
  /** the frontend address; undefined for a NodePort (any node address) */
  origDst?: string;
  origPortDst: number;
  /** the removed endpoint */
  replySrc: string;
  replyPortSrc: number;
}

function splitEndpoint(ep: string): { ip: string; port: number } {
  const i = ep.lastIndexOf('/');
  return { ip: ep.slice(0, i), port: Number(ep.slice(i + 1)) };
}

/** Flows to delete: endpoints of UDP/SCTP frontends present before and gone after. Pure. */
export function staleFlows(before: ProgrammedEndpoints, after: ProgrammedEndpoints): StaleFlow[] {
  const out: StaleFlow[] = [];
  for (const [fe, eps] of before) {
    const [proto, addr, port] = fe.split('/');
    if (proto !== 'udp' && proto !== 'sctp') continue;
    const now = after.get(fe);
    for (const ep of eps) {
      if (now?.has(ep)) continue;
      const e = splitEndpoint(ep);
      out.push({ protocol: proto, origDst: addr === 'nodeport' ? undefined : addr, origPortDst: Number(port), replySrc: e.ip, replyPortSrc: e.port });
    }
  }
  return out;
}

export function conntrackArgv(f: StaleFlow): string[] {
  const v6 = f.replySrc.includes(':');
  const argv = ['conntrack', '-D', '-f', v6 ? 'ipv6' : 'ipv4', '-p', f.protocol];
  if (f.origDst) argv.push('--orig-dst', f.origDst);
  argv.push('--orig-port-dst', String(f.origPortDst), '--reply-src', f.replySrc, '--reply-port-src', String(f.replyPortSrc));
  return argv;
}

export interface ConntrackCleaner {
  delete(flows: StaleFlow[]): Promise<{ deleted: number; errors: string[] }>;
}

/** Runs `conntrack -D` per stale flow in the given namespace. "0 flow entries" is not an error. */
export class ConntrackTool implements ConntrackCleaner {
  constructor(private readonly ns: NetnsRef = { kind: 'current' }) {}

  async delete(flows: StaleFlow[]): Promise<{ deleted: number; errors: string[] }> {
    let deleted = 0;
    const errors: string[] = [];
    for (const f of flows) {
      const argv = nsExecArgv(this.ns, conntrackArgv(f));
      try {
        const r = await spawnCapture(argv, { op: 'conntrack -D', timeoutMs: 10_000 });
        const m = /(\d+) flow entries have been deleted/.exec(r.stderr + r.stdout);
        if (m) deleted += Number(m[1]);
        else if (r.exitCode !== 0) errors.push(`${argv.join(' ')}: ${r.stderr.trim()}`);
      } catch (e) {
        errors.push(`${argv.join(' ')}: ${(e as Error).message}`);
      }
    }
    return { deleted, errors };
  }
}
