// podnet trace: the path a packet takes, as data. One schema for `-o json` (documented in
// docs/trace.md): the query, the hops (one per namespace the packet passes, in order), each with
// the steps that decided where it went next and the kernel object behind each step, and a
// verdict: the path is complete, or it breaks at the first broken step.

export type Proto = 'tcp' | 'udp' | 'icmp';

/** What is traced: a packet of this 5-tuple leaving `from` (a namespace). */
export interface TraceQuery {
  /** the namespace the packet is sent from */
  fromNs: string;
  /** a label for the source (pod name, node name, the address) */
  srcLabel: string;
  src: string;
  dst: string;
  dstLabel: string;
  proto: Proto;
  sport?: number;
  dport?: number;
  /** bytes of the IP packet, checked against each link's MTU (DF set, as TCP and ping send) */
  size: number;
}

export type StepKind =
  | 'route' // a FIB lookup (the kernel's own: RTM_GETROUTE with the packet's fields)
  | 'neighbour' // the next hop's link-layer address
  | 'veth' // a veth pair: out of one end, into the other (possibly another namespace)
  | 'bridge' // a bridge's forwarding decision (FDB)
  | 'macvlan' // a macvlan child and its parent
  | 'encap' // into a tunnel: outer header
  | 'decap' // out of a tunnel on the other node
  | 'mtu' // the packet against a link's MTU
  | 'netfilter' // a rule or policy on the way
  | 'agent' // the node's agent, which keeps this node's part of the path (routes, FDB, lease)
  | 'deliver'; // the packet arrives at its destination's address

export interface Step {
  kind: StepKind;
  /** one line saying what was decided */
  text: string;
  /** false: this step is where the path breaks */
  ok: boolean;
  /** the kernel object behind the decision, as the kernel reports it */
  object?: Record<string, unknown>;
  /** the command that shows the object (to check by hand) */
  command?: string;
}

export interface Hop {
  /** the namespace (network namespace name) */
  ns: string;
  /** what the namespace is: pod, node, fabric, router (as far as podnet knows) */
  role?: string;
  /** the device the packet came in on; absent where it was sent from */
  in?: string;
  /** the device it leaves on; absent where it is delivered or dropped */
  out?: string;
  /** the packet as it is in this namespace (after a DNAT, or the outer header inside a tunnel) */
  packet: { src: string; dst: string; proto: string; outer?: { src: string; dst: string; proto: 'udp'; dport: number; vni?: number } };
  steps: Step[];
}

export interface TraceResult {
  query: TraceQuery;
  hops: Hop[];
  /** complete: delivered to the destination's address; broken: the first broken step is `broken` */
  verdict: 'complete' | 'broken';
  broken?: { hop: number; step: number; reason: string; command?: string };
  /** with --verify: what the kernel did with a real packet of the query (nftables tracing), per hop */
  verify?: TraceVerify;
}

/** One hop of the explanation against the kernel's trace events in its namespace. */
export interface VerifyHop {
  /** index into `hops` */
  hop: number;
  ns: string;
  /** the kernel reported the packet in this namespace */
  seen: boolean;
  /** seen, with the devices in and out (where the events name them) and no drop where the explanation has none */
  agrees: boolean;
  /** what the kernel did, or how it differs from the explanation */
  detail: string;
}

export interface TraceVerify {
  /** every hop agrees (and past a break, the destination did not see the packet) */
  agrees: boolean;
  hops: VerifyHop[];
  /** namespaces off the explained path that were watched too: the destination's, when the path breaks before it */
  beyond?: { ns: string; seen: boolean; detail: string }[];
}
