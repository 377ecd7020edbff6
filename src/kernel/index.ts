// Entry point of the kernel seam: one shared adapter per process (its link-kind probes are cached).
// The default is the in-process rtnetlink adapter when koffi loads (iproute2 serving what it does not
// implement); PODNET_KERNEL=iproute2 forces the CLI adapter, PODNET_KERNEL=netlink insists on netlink.
import type { KernelAdapter, NftRunner } from './types.js';
import { Iproute2Adapter } from './iproute2.js';
import { NetlinkAdapter } from './netlink-adapter.js';
import { loadLibc } from './netlink/socket.js';
import { NftCli } from './nft.js';

export * from './types.js';
export { KernelError, type KernelErrorKind, isNotFound, isExists, isUnsupported, isKernelErr, classifyKernelMessage, run, spawnCapture } from './exec.js';
export { netnsFromPath, describeNetns, validateIfName, validateNetnsName, validateNetns, iprouteArgv, nsExecArgv, netnsFile } from './netns.js';
export { renderOp, describeOp, type RenderedOp, type RenderContext } from './render.js';
export { Iproute2Adapter } from './iproute2.js';
export { NetlinkAdapter, type NetlinkAdapterOptions } from './netlink-adapter.js';
export { NftCli } from './nft.js';

export type KernelBackendName = 'netlink' | 'iproute2';

let kernel: Iproute2Adapter | NetlinkAdapter | undefined;
let backend: KernelBackendName | undefined;
let nft: NftCli | undefined;
/** why the netlink adapter is not in use, when it is not (for logs) */
let fallbackReason: string | undefined;

function chooseKernel(): Iproute2Adapter | NetlinkAdapter {
  const want = (process.env.PODNET_KERNEL ?? '').trim().toLowerCase();
  if (want !== '' && want !== 'netlink' && want !== 'iproute2' && want !== 'auto') {
    throw new Error(`PODNET_KERNEL=${JSON.stringify(process.env.PODNET_KERNEL)}: expected netlink, iproute2 or auto`);
  }
  const ip = new Iproute2Adapter();
  if (want === 'iproute2') {
    fallbackReason = 'PODNET_KERNEL=iproute2';
    backend = 'iproute2';
    return ip;
  }
  try {
    // loads koffi and libc and declares the functions: any failure shows here, not mid-request
    loadLibc();
  } catch (e) {
    if (want === 'netlink') throw new Error(`PODNET_KERNEL=netlink, but koffi cannot be loaded: ${(e as Error).message}`);
    fallbackReason = `koffi unavailable: ${(e as Error).message}`;
    backend = 'iproute2';
    return ip;
  }
  backend = 'netlink';
  return new NetlinkAdapter(ip);
}

export function defaultKernel(): KernelAdapter {
  return (kernel ??= chooseKernel());
}

/** Which adapter defaultKernel() serves (choosing it if nothing asked yet). */
export function kernelBackendName(): KernelBackendName {
  defaultKernel();
  return backend!;
}

/** Why defaultKernel() is the iproute2 adapter; undefined when it is the netlink one. */
export function kernelBackendFallbackReason(): string | undefined {
  defaultKernel();
  return fallbackReason;
}

export function defaultNft(): NftRunner {
  return (nft ??= new NftCli());
}
