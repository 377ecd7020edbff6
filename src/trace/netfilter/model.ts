// The model netfilter is evaluated over, shared by every part of src/trace/netfilter: tables (nft's
// and the xtables ones alike) with their chains, rules and sets; the packet as netfilter sees it; a
// rule by where it is (what a step names); and the state that follows the packet from hook to hook
// (the mark, the NAT done). Both readers (nft-json.ts, xtables.ts) produce it, so the evaluator
// treats every table alike but for a rule's own statements (nft JSON or xt clauses).

export type NfHook = 'prerouting' | 'input' | 'forward' | 'output' | 'postrouting';

/** The packet as netfilter sees it. */
export interface NfPacket {
  family: 4 | 6;
  src: string;
  dst: string;
  proto: string;
  sport?: number;
  dport?: number;
  size?: number;
}

/** A rule (or a chain's policy, pos 0) by where it is. */
export interface RuleRef {
  engine: 'nft' | 'xt';
  family: string;
  table: string;
  chain: string;
  /** nft rule handle */
  handle?: number;
  /** 1-based position in its chain (iptables' rule number); 0: the chain's policy */
  pos: number;
  text: string;
  comment?: string;
  backend?: 'nft' | 'legacy';
}

/** What netfilter state follows the packet through one namespace (the mark, the NAT done). */
export interface NfCarry {
  mark: number;
  /** the rule that last changed the mark, and the rule that led there (a jump) */
  markBy?: RuleRef;
  markVia?: RuleRef;
  dnat?: { dst: string; dport?: number; rule: RuleRef };
  snat?: { src: string; rule: RuleRef };
  untracked?: RuleRef;
}

interface BaseInfo {
  type: string;
  hook: NfHook;
  prio: number;
  policy: 'accept' | 'drop';
}

export interface NfRule {
  ref: RuleRef;
  nft?: unknown[];
  xt?: XtRule;
}

export interface NfChain {
  table: NfTable;
  name: string;
  base?: BaseInfo;
  rules: NfRule[];
}

export interface NftSet {
  name: string;
  map?: unknown;
  flags: string[];
  elem: unknown[];
}

export interface NfTable {
  engine: 'nft' | 'xt';
  family: string;
  name: string;
  backend?: 'nft' | 'legacy';
  chains: Map<string, NfChain>;
  sets: Map<string, NftSet>;
}

// ---------------------------------------------------------------------------------------------
// an iptables rule, as xtables.ts parses it and the evaluator runs it

export interface XtOpt {
  name: string;
  neg: boolean;
  values: string[];
}

/** One clause of an iptables rule: a built-in match (-s, -d, -p, -i, -o, -f) or a module (-m) with its options. */
export interface XtClause {
  kind: 'flag' | 'module';
  /** the flag (-s) or the module's name (tcp, comment, statistic, ...) */
  name: string;
  neg: boolean;
  value?: string;
  opts: XtOpt[];
}

export interface XtRule {
  clauses: XtClause[];
  target?: { name: string; opts: XtOpt[] };
  goto?: string;
}

/** A JSON object (not an array): nft's JSON is read through this guard wherever it is walked. */
export const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
