// Which PodFirewall a plugin instance uses. In the node's own netns (where the agent and the
// standalone plugin run) with koffi loadable: nfnetlink in-process, shared by every request of the
// process (one socket pair, one structure check state). Elsewhere, or with PODNET_NFT=cli, or when
// a test injects its own nft runner: the nft CLI.
import type { NetnsRef, NftRunner } from '../../kernel/types.js';
import { cliPodFirewall } from './cli.js';
import { NetlinkPodFirewall } from './netlink.js';
import type { PodFirewall } from './types.js';

export type { PodFirewall, MasqElement, RemovedHostports } from './types.js';

let shared: NetlinkPodFirewall | undefined;
let unavailable: string | undefined;

/** Why the netlink PodFirewall is not used here, or undefined when it is. */
export function podFirewallFallbackReason(): string | undefined {
  return unavailable;
}

export function choosePodFirewall(nft: NftRunner, ns: NetnsRef, opts: { injectedNft: boolean }): PodFirewall {
  const want = (process.env.PODNET_NFT ?? '').trim().toLowerCase();
  if (want !== '' && want !== 'cli' && want !== 'netlink' && want !== 'auto') throw new Error(`PODNET_NFT=${JSON.stringify(process.env.PODNET_NFT)}: expected netlink, cli or auto`);
  if (want === 'cli' || opts.injectedNft || ns.kind !== 'current') return cliPodFirewall(nft, ns);
  if (shared) return shared;
  try {
    shared = new NetlinkPodFirewall({ nft });
    return shared;
  } catch (e) {
    if (want === 'netlink') throw new Error(`PODNET_NFT=netlink, but nfnetlink is unavailable: ${(e as Error).message}`);
    unavailable = (e as Error).message;
    return cliPodFirewall(nft, ns);
  }
}
