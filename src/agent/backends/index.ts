// The node agent's cross-node backends: pick one by the network config's backend type.
import type { BackendType } from '../lease.js';
import type { KernelAdapter } from '../../kernel/types.js';
import { HostGwBackend } from './hostgw.js';
import { VxlanBackend, type VxlanConfig } from './vxlan.js';
import { TunBackend, type TunConfig } from './tun.js';
import { BgpBackend } from './bgp.js';
import type { Backend } from './types.js';

export * from './types.js';
export { VxlanBackend, vxlanDeviceName, vtepAddr, type VxlanConfig } from './vxlan.js';
export { HostGwBackend, type HostGwConfig } from './hostgw.js';
export { BgpBackend, type BgpBackendConfig } from './bgp.js';
export { TunBackend, TUN_DEVICE, TUN_ALIAS, TunMtuError, ForeignDeviceError, type TunConfig } from './tun.js';
export { Reconciler, reconcile, type ReconcileReport, type ReconcilerOptions } from './reconciler.js';
export { describePlan, isPodnetRoute } from './common.js';

export interface BackendConfig extends Partial<Omit<VxlanConfig, 'iface'>>, Partial<Omit<TunConfig, 'iface'>> {
  type: BackendType;
  iface: string;
}

export function createBackend(cfg: BackendConfig): Backend {
  switch (cfg.type) {
    case 'vxlan':
      return new VxlanBackend(cfg);
    case 'host-gw':
      return new HostGwBackend(cfg);
    case 'tun':
      return new TunBackend(cfg);
    case 'bgp':
      return new BgpBackend({ iface: cfg.iface, clusterNetworks: cfg.clusterNetworks ?? [] });
    default:
      throw new Error(`unknown backend type ${JSON.stringify((cfg as { type?: unknown }).type)}`);
  }
}

/**
 * A backend checks kernel support when constructed (style model 9): vxlan needs the vxlan module;
 * host-gw and bgp need nothing beyond routing; tun needs TUN devices (/dev/net/tun). Throws with the reason
 * when the kernel cannot do it.
 */
export async function createCheckedBackend(cfg: BackendConfig, kernel: KernelAdapter): Promise<Backend> {
  const b = createBackend(cfg);
  if (b.type === 'vxlan' && !(await kernel.supportsLinkKind('vxlan'))) throw new Error('backend vxlan: this kernel cannot create vxlan links (module vxlan missing?)');
  if (b.type === 'tun' && !(await kernel.supportsLinkKind('tun'))) throw new Error('backend tun: this kernel cannot create TUN devices (module tun missing, or no /dev/net/tun?)');
  return b;
}

