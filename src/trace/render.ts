// A trace as text: one block per hop (namespace, devices in and out, the packet), one line per
// step, the broken step marked, and the verdict.
import type { TraceResult } from './types.js';

export function renderTrace(r: TraceResult): string {
  const q = r.query;
  const port = q.dport ? `/${q.dport}` : '';
  const out = [`trace ${q.srcLabel} (${q.src}) -> ${q.dstLabel} (${q.dst}) ${q.proto}${port}, ${q.size} bytes`];
  r.hops.forEach((h, i) => {
    const devs = [h.in ? `in ${h.in}` : 'sent here', h.out ? `out ${h.out}` : ''].filter(Boolean).join(', ');
    const outer = h.packet.outer ? `  [outer ${h.packet.outer.src} -> ${h.packet.outer.dst} udp/${h.packet.outer.dport}${h.packet.outer.vni !== undefined ? ` VNI ${h.packet.outer.vni}` : ''}]` : '';
    out.push(`${String(i + 1).padStart(2)}  ${h.ns}${h.role ? ` (${h.role})` : ''}: ${devs}${outer}`);
    for (const s of h.steps) {
      out.push(`      ${s.ok ? '  ' : '✗ '}${s.kind.padEnd(9)} ${s.text}`);
      if (!s.ok && s.command) out.push(`                  see: ${s.command}`);
    }
    const v = r.verify?.hops.find((x) => x.hop === i);
    if (v) out.push(`      ${v.agrees ? '✓' : '✗'} verify    ${v.detail}`);
  });
  for (const b of r.verify?.beyond ?? []) out.push(`    ${b.ns}: ${b.detail}`);
  out.push(r.verdict === 'complete' ? `complete: ${r.hops.length} hops` : `BROKEN at hop ${r.broken!.hop + 1}: ${r.broken!.reason}`);
  if (r.verify) {
    const bad = r.verify.hops.find((x) => !x.agrees);
    out.push(r.verify.agrees ? `verify: the kernel agrees on every hop` : `verify: the kernel DISAGREES${bad ? ` at hop ${bad.hop + 1} (${bad.ns}): ${bad.detail}` : ': the destination saw the packet past the break'}`);
  }
  return out.join('\n');
}
