// One way the packet can go through a hook: numgen, statistic and meta random fork the evaluation,
// and each branch carries its chance, its own packet and netfilter state, the rules it hit (the
// trail the steps are told from) and what could not be decided on the way. An Outcome is a branch
// at the end of a chain or hook with its verdict; the evaluator makes them, explain.ts tells them.
import type { NfCarry, NfChain, NfPacket, RuleRef } from './model.js';

interface Maybe {
  rule: RuleRef;
  why: string;
}

interface Hit {
  rule: RuleRef;
  /** the chain it jumped / went to */
  to?: string;
  /** the set element it matched (affinity entries: expires) */
  elem?: unknown;
}

/** One way the packet can go (numgen and statistic fork it), with its chance. */
export interface Branch {
  p: number;
  pkt: NfPacket;
  c: NfCarry;
  trail: Hit[];
  maybe: Maybe[];
  /** NAT bound in this hook: later nat chains of the hook are skipped */
  bound: boolean;
  /** base chains with policy drop that a rule accepted the packet in */
  accepted: RuleRef[];
  /** affinity records the packet makes on the way: set (or recent list) and timeout */
  pins: { set: string; timeout?: number }[];
  /** xt_recent lists checked on the way (iptables' ClientIP affinity): whether the client is on it */
  recent: { name: string; seconds?: number; on: boolean }[];
}

/** A new mark; the rule is remembered as the one that set it only when it sets bits (clearing one keeps who set it). */
export function markChange(b: Branch, mark: number, rule: RuleRef): void {
  if ((mark & ~b.c.mark) !== 0) {
    b.c.markBy = rule;
    const prev = b.trail.length ? b.trail[b.trail.length - 1].rule : undefined;
    b.c.markVia = prev && prev !== rule ? prev : undefined;
  }
  b.c.mark = mark;
}

export function fork(b: Branch, p: number): Branch {
  return {
    p: b.p * p,
    pkt: { ...b.pkt },
    c: { ...b.c },
    trail: [...b.trail],
    maybe: [...b.maybe],
    bound: b.bound,
    accepted: [...b.accepted],
    pins: [...b.pins],
    recent: [...b.recent],
  };
}

/** A branch at the end of a chain or hook. */
export interface Outcome {
  b: Branch;
  v: 'accept' | 'drop' | 'reject' | 'return';
  /** the rule (or policy) that decided */
  by?: RuleRef;
  reject?: string;
  /** the base chain where it was decided */
  base?: NfChain;
}
