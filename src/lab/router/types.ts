// The lab's router: a namespace joining the racks, running a real BGP daemon from Debian (BIRD 2 or
// FRR) with every bgp node as an eBGP neighbour. The lab owns the topology (legs, addresses,
// neighbours: a RouterPlan); each daemon folder turns a plan into its own config, starts the
// daemon by PID in the router namespace, reloads it when nodes come and go, and knows how its
// CLI finds the control socket.
import type { ProcRef } from '../state.js';

export type RouterKind = 'bird' | 'frr';
export const ROUTER_KINDS: readonly RouterKind[] = ['bird', 'frr'];

/** One leg of the router: an interface on a rack's underlay. */
export interface RouterLeg {
  ifname: string;
  /** the router's address on the rack, with prefix length ("192.168.101.253/24") */
  v4: string;
  /** the router's IPv6 address on the rack, with prefix length, when the rack has an IPv6 underlay */
  v6?: string;
}

/** An eBGP neighbour: a node's agent. */
export interface RouterNeighbor {
  /** the node's name (a protocol / description name in the daemon's config) */
  name: string;
  /** the node's IPv4 underlay address: the session runs over IPv4 and carries IPv4 and IPv6 unicast */
  address: string;
  asn: number;
}

export interface RouterPlan {
  asn: number;
  routerId: string;
  legs: RouterLeg[];
  neighbors: RouterNeighbor[];
  /** the cluster's pod networks: only prefixes inside them are accepted from the nodes */
  clusterNetworks: string[];
  /** seconds a restarting neighbour's routes are kept (graceful restart) */
  restartTime: number;
  /** keepalive/hold the router proposes (the session takes the lower of both sides') */
  holdTime: number;
}

/** Where a running router keeps its files: config, control socket, pid files, log. */
export interface RouterFiles {
  dir: string;
  log: string;
}

export interface RouterDaemon {
  readonly kind: RouterKind;
  /** the Debian package that has it (for error messages) */
  readonly pkg: string;
  /** a clear error when the daemon's binaries are not installed */
  preflight(): void;
  /** writes the config for `plan` under files.dir and starts the daemon(s) in `ns`; resolves once the control socket answers */
  start(ns: string, plan: RouterPlan, files: RouterFiles): Promise<ProcRef[]>;
  /** rewrites the config and makes the running daemon apply it (neighbours added or removed), without restarting the sessions that stay */
  reload(ns: string, plan: RouterPlan, files: RouterFiles): Promise<void>;
  /** argv for `lab exec router -- CMD ...`: the daemon's CLI (birdc, vtysh) pointed at this router's control socket; other commands unchanged */
  execArgv(argv: string[], files: RouterFiles): string[];
  /** the neighbours' session states, by neighbour address ("Established", "Active", ...) */
  sessions(ns: string, files: RouterFiles): Promise<Record<string, string>>;
}
