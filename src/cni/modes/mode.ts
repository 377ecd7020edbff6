// The seam between the plugin's verbs and a way of wiring a pod: each mode turns an attachment
// (and its IPAM result) into kernel objects, removes them, and checks them.
import type { KernelAdapter, NetnsRef, NftRunner } from '../../kernel/types.js';
import type { PodnetConfig } from '../config.js';
import type { CniContext } from '../skel.js';
import type { CniIpConfig, CniResult, CniRoute } from '../types.js';
import type { UndoStack } from '../undo.js';

export interface ModeDeps {
  kernel: KernelAdapter;
  nft: NftRunner;
  host: NetnsRef;
}

export interface Attachment {
  ctx: CniContext;
  cfg: PodnetConfig;
  pod: NetnsRef;
  ifname: string;
  containerId: string;
}

export interface ModeAddInput extends Attachment {
  ips: CniIpConfig[];
  routes: CniRoute[];
}

export interface Mode {
  /** Kernel support and config checks that need the kernel (before IPAM is touched). */
  preflight(a: Attachment, deps: ModeDeps): Promise<void>;
  /** Wires the pod; registers an undo for everything it creates. Returns interfaces/ips/routes. */
  add(a: ModeAddInput, deps: ModeDeps, undo: UndoStack): Promise<CniResult>;
  /** Removes what add created; succeeds when it is already gone. `ips` are the pod's IPs when known. */
  del(a: Attachment, deps: ModeDeps, ips: string[]): Promise<void>;
  /** Throws CniError(CheckFailed) naming what differs from prevResult. */
  check(a: Attachment, deps: ModeDeps, prev: CniResult): Promise<void>;
  /** Host-side links this mode owns for GC (by owner alias); empty for modes without host links. */
  ownsHostLinks: boolean;
}
