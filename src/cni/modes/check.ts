// CHECK for the pod side, shared by all modes: the interface, its MAC, addresses and routes are
// as the ADD result (prevResult) says.
import { CniError, ErrCode } from '../errors.js';
import { canonicalIP, tryParseCidr, formatCidr, masked } from '../../util/ip.js';
import type { Route } from '../../kernel/types.js';
import type { CniResult } from '../types.js';
import type { Attachment, ModeDeps } from './mode.js';

function normDst(dst: string, v6: boolean): string {
  if (dst === 'default') return v6 ? '::/0' : '0.0.0.0/0';
  const c = tryParseCidr(dst.includes('/') ? dst : `${dst}/${v6 ? 128 : 32}`);
  return c ? formatCidr(masked(c)) : dst;
}

export function routePresent(routes: Route[], dst: string, gw?: string): boolean {
  const v6 = dst.includes(':') || (gw ?? '').includes(':');
  const want = normDst(dst, v6);
  return routes.some((r) => normDst(r.dst, r.family === 6) === want && (!gw || (r.gateway && canonicalIP(r.gateway) === canonicalIP(gw))));
}

export async function checkPodSide(a: Attachment, deps: ModeDeps, prev: CniResult): Promise<void> {
  const ifaces = prev.interfaces ?? [];
  const idx = ifaces.findIndex((i) => i.name === a.ifname && i.sandbox);
  const link = await deps.kernel.link(a.pod, a.ifname);
  if (!link) throw new CniError(ErrCode.CheckFailed, `interface ${a.ifname} is missing in ${(a.pod as { path?: string }).path ?? 'the pod'}`);
  const want = idx >= 0 ? ifaces[idx] : undefined;
  if (want?.mac && want.mac.toLowerCase() !== link.mac.toLowerCase()) {
    throw new CniError(ErrCode.CheckFailed, `interface ${a.ifname} has MAC ${link.mac}, expected ${want.mac}`);
  }
  const addrs = (await deps.kernel.addresses(a.pod, a.ifname)).map((x) => `${canonicalIP(x.address)}`);
  for (const ip of prev.ips ?? []) {
    if (idx >= 0 && ip.interface !== undefined && ip.interface !== idx) continue;
    const addr = canonicalIP(ip.address.split('/')[0]);
    if (!addrs.includes(addr ?? '')) throw new CniError(ErrCode.CheckFailed, `address ${ip.address} is missing on ${a.ifname}`);
  }
  if (prev.routes?.length) {
    const routes = [...(await deps.kernel.routes(a.pod, { family: 4 })), ...(await deps.kernel.routes(a.pod, { family: 6 }))];
    for (const r of prev.routes) {
      if (!routePresent(routes, r.dst, r.gw)) throw new CniError(ErrCode.CheckFailed, `route to ${r.dst}${r.gw ? ` via ${r.gw}` : ''} is missing in the pod`);
    }
  }
}
