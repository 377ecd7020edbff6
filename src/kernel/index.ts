// Entry point of the kernel seam: one shared adapter per process (its link-kind probes are cached).
import type { KernelAdapter, NftRunner } from './types.js';
import { Iproute2Adapter } from './iproute2.js';
import { NftCli } from './nft.js';

export * from './types.js';
export { KernelError, type KernelErrorKind, isNotFound, isExists, isUnsupported, isKernelErr, classifyKernelMessage, run, spawnCapture } from './exec.js';
export { netnsFromPath, describeNetns, validateIfName, validateNetnsName, validateNetns, iprouteArgv, nsExecArgv, netnsFile } from './netns.js';
export { renderOp, describeOp, type RenderedOp, type RenderContext } from './render.js';
export { Iproute2Adapter } from './iproute2.js';
export { NftCli } from './nft.js';

let kernel: Iproute2Adapter | undefined;
let nft: NftCli | undefined;

export function defaultKernel(): KernelAdapter {
  return (kernel ??= new Iproute2Adapter());
}

export function defaultNft(): NftRunner {
  return (nft ??= new NftCli());
}
