// PodFirewall through the nft CLI: one `nft` process per operation (and a listing before each
// removal). Serves any netns and nodes without koffi; the netlink one is preferred in-process.
import type { NetnsRef, NftRunner } from '../../kernel/types.js';
import { listMasqPods, masqAdd, masqRemoveOwners } from '../masq.js';
import { hostportAdd, hostportRemoveOwners, listHostports } from '../hostport-apply.js';
import type { PodFirewall } from './types.js';

export function cliPodFirewall(nft: NftRunner, ns: NetnsRef): PodFirewall {
  return {
    kind: 'cli',
    masqAdd: (entries, owner) => masqAdd(nft, ns, entries, owner),
    masqRemove: (owner) => masqRemoveOwners(nft, ns, new Set([owner])),
    masqRemoveOwners: (owners) => masqRemoveOwners(nft, ns, owners),
    masqList: () => listMasqPods(nft, ns),
    hostportAdd: (plan, onApplied) => hostportAdd(nft, ns, plan, onApplied),
    hostportRemove: (owners) => hostportRemoveOwners(nft, ns, owners),
    hostportList: () => listHostports(nft, ns),
  };
}
