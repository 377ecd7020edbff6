// A tiny packet evaluator over an nftables PLAN (the NftPlan data of src/proxy/engines/nftables/plan.ts,
// not the rendered text): it walks the base chains in hook order (filter prerouting/output, nat
// prerouting/output, nat postrouting), looks keys up in the plan's element maps, and follows every
// branch of `numgen random mod N vmap {...}`. Rules are recognized by a handful of regexes; a rule it
// does not understand throws, so a change of the plan's rule shapes makes the tests fail loudly
// instead of silently "passing".
import type { ElemPart, Element, NftPlan } from '../../src/proxy/engines/nftables/plan.js';
import { canonicalIP, contains, parseIP, tryParseCidr } from '../../src/util/ip.js';

export interface Packet {
  src: string;
  proto: 'tcp' | 'udp' | 'sctp';
  dst: string;
  dport: number;
  /** originated on the node (output hooks) rather than arriving on an interface (prerouting hooks) */
  local?: boolean;
}

export interface EvalOptions {
  /** contents of the datapath-filled affinity sets: set name -> keys "saddr . daddr . proto . dport" */
  affinity?: Map<string, Set<string>>;
}

export interface PathOutcome {
  verdict: 'dnat' | 'reject' | 'drop' | 'accept';
  /** "ip/port" when DNAT-ed */
  endpoint?: string;
  masquerade: boolean;
  /** affinity updates performed on the way: set -> timeout seconds */
  pins: { set: string; timeout: number }[];
  /** chains visited, in order */
  trace: string[];
}

export interface EvalResult {
  /** 'none': no rule touched the packet (not a service address) */
  verdict: 'dnat' | 'reject' | 'drop' | 'none';
  /** every endpoint reachable ("ip/port"), sorted */
  endpoints: string[];
  /** true: all paths masquerade; false: none does; 'mixed': depends on the endpoint chosen */
  masquerade: boolean | 'mixed';
  /** endpoint -> masqueraded on that path */
  masqByEndpoint: Map<string, boolean>;
  paths: PathOutcome[];
}

interface State {
  mark: number;
  dnat?: { ip: string; port: number };
  masq: boolean;
  pins: { set: string; timeout: number }[];
  trace: string[];
}

type Verdict = { kind: 'continue' } | { kind: 'return' } | { kind: 'final'; verdict: 'accept' | 'drop' | 'reject' };
interface Branch {
  st: State;
  v: Verdict;
}

const MASQ = 0x4000;

function fam(ip: string): 4 | 6 {
  return ip.includes(':') ? 6 : 4;
}

function partEq(p: ElemPart, v: string | number): boolean {
  if (p.kind === 'ipv4' || p.kind === 'ipv6') return canonicalIP(String(p.value)) === canonicalIP(String(v));
  return String(p.value) === String(v);
}

/** Looks a key (given as values) up in a plan set by comparing element key parts, not text. */
function lookup(plan: NftPlan, set: string, key: (string | number)[]): Element | undefined {
  if (!plan.sets.has(set)) throw new Error(`rule references undeclared set @${set}`);
  const els = plan.elements.get(set);
  if (!els) return undefined;
  for (const el of els.values()) {
    if (el.key.length === key.length && el.key.every((p, i) => partEq(p, key[i]))) return el;
  }
  return undefined;
}

function inIntervalSet(plan: NftPlan, set: string, ip: string): boolean {
  if (!plan.sets.has(set)) throw new Error(`rule references undeclared set @${set}`);
  const a = parseIP(ip);
  for (const el of plan.elements.get(set)?.values() ?? []) {
    const c = tryParseCidr(String(el.key[0].value));
    if (c ? contains(c, a) : canonicalIP(String(el.key[0].value)) === canonicalIP(ip)) return true;
  }
  return false;
}

function clone(s: State): State {
  return { mark: s.mark, dnat: s.dnat ? { ...s.dnat } : undefined, masq: s.masq, pins: [...s.pins], trace: [...s.trace] };
}

class Evaluator {
  constructor(
    private readonly plan: NftPlan,
    private readonly pkt: Packet,
    private readonly opts: EvalOptions,
  ) {}

  private get f(): 4 | 6 {
    return fam(this.pkt.dst);
  }
  private kw(k: string): boolean {
    return (k === 'ip' && this.f === 4) || (k === 'ip6' && this.f === 6);
  }
  /** the destination as the nat chains see it (after DNAT for postrouting) */
  private daddr(st: State): string {
    return st.dnat?.ip ?? this.pkt.dst;
  }

  /** Runs a chain; returns every branch's outcome (numgen forks). `goto` does not come back. */
  run(name: string, st: State, depth = 0): Branch[] {
    if (depth > 32) throw new Error('chain recursion too deep');
    const chain = this.plan.chains.get(name);
    if (!chain) throw new Error(`jump/goto to undeclared chain ${name}`);
    st.trace.push(name);
    return this.rules(chain.rules, 0, st, depth);
  }

  private rules(rules: string[], from: number, st: State, depth: number): Branch[] {
    for (let i = from; i < rules.length; i++) {
      const r = rules[i];
      const step = this.rule(r, st, depth);
      if (step === 'next') continue;
      // a branch-producing rule: continue the remaining rules for branches that fell through (jump returned)
      const out: Branch[] = [];
      for (const b of step) {
        if (b.v.kind === 'continue') out.push(...this.rules(rules, i + 1, b.st, depth));
        else out.push(b);
      }
      return out;
    }
    return [{ st, v: { kind: 'continue' } }];
  }

  /** 'next': rule did not end the chain; otherwise the branches it produced. */
  private rule(r: string, st: State, depth: number): 'next' | Branch[] {
    const mark = `meta mark set meta mark \\| 0x${MASQ.toString(16)}`;
    let m: RegExpExecArray | null;
    const jumpOrGoto = (verb: string, target: string): Branch[] => {
      const res = this.run(target, st, depth + 1);
      return this.afterCall(verb, res);
    };
    const verdictData = (el: Element): Branch[] | 'next' => {
      const d = el.data;
      if (!d || d.kind !== 'verdict') throw new Error(`vmap element without a verdict: ${JSON.stringify(el)}`);
      if (d.verdict === 'goto' || d.verdict === 'jump') return jumpOrGoto(d.verdict, d.chain!);
      if (d.verdict === 'drop' || d.verdict === 'accept') return [{ st, v: { kind: 'final', verdict: d.verdict } }];
      if (d.verdict === 'return') return [{ st, v: { kind: 'return' } }];
      return 'next';
    };

    if ((m = /^(jump|goto) (\S+)$/.exec(r))) return jumpOrGoto(m[1], m[2]);
    if ((m = /^ct state new (jump|goto) (\S+)$/.exec(r))) return jumpOrGoto(m[1], m[2]);
    if ((m = /^(ip6?) daddr \. meta l4proto \. th dport vmap @(\S+)$/.exec(r))) {
      if (!this.kw(m[1])) return 'next';
      const el = lookup(this.plan, m[2], [this.pkt.dst, this.pkt.proto, this.pkt.dport]);
      return el ? verdictData(el) : 'next';
    }
    if ((m = /^meta l4proto (\w+) reject with tcp reset$/.exec(r))) {
      return this.pkt.proto === m[1] ? [{ st, v: { kind: 'final', verdict: 'reject' } }] : 'next';
    }
    if (r === 'reject') return [{ st, v: { kind: 'final', verdict: 'reject' } }];
    if ((m = new RegExp(`^(ip6?) saddr != @(\\S+) ${mark}$`).exec(r))) {
      if (this.kw(m[1]) && !inIntervalSet(this.plan, m[2], this.pkt.src)) st.mark |= MASQ;
      return 'next';
    }
    if (new RegExp(`^${mark}$`).test(r)) {
      st.mark |= MASQ;
      return 'next';
    }
    if ((m = /^(ip6?) saddr \. (ip6?) daddr \. meta l4proto \. th dport @(\S+) goto (\S+)$/.exec(r))) {
      if (!this.kw(m[1])) return 'next';
      if (!this.plan.sets.has(m[3])) throw new Error(`rule references undeclared set @${m[3]}`);
      const k = `${this.pkt.src} . ${this.pkt.dst} . ${this.pkt.proto} . ${this.pkt.dport}`;
      if (this.opts.affinity?.get(m[3])?.has(k)) return jumpOrGoto('goto', m[4]);
      return 'next';
    }
    if ((m = /^update @(\S+) \{ (ip6?) saddr \. (ip6?) daddr \. meta l4proto \. th dport timeout (\d+)s \}$/.exec(r))) {
      if (!this.plan.sets.has(m[1])) throw new Error(`rule references undeclared set @${m[1]}`);
      if (this.kw(m[2])) st.pins.push({ set: m[1], timeout: Number(m[4]) });
      return 'next';
    }
    if ((m = /^numgen random mod (\d+) vmap \{ (.*) \}$/.exec(r))) {
      const n = Number(m[1]);
      const items = m[2].split(', ').map((s) => {
        const x = /^(\d+) : (goto|jump) (\S+)$/.exec(s);
        if (!x) throw new Error(`numgen vmap item not understood: ${s}`);
        return { i: Number(x[1]), verb: x[2], chain: x[3] };
      });
      const idx = items.map((x) => x.i).sort((a, b) => a - b);
      if (idx.length !== n || idx.some((v, i) => v !== i)) throw new Error(`numgen mod ${n} does not map every value 0..${n - 1}: ${r}`);
      const out: Branch[] = [];
      for (const it of items) out.push(...this.afterCall(it.verb, this.run(it.chain, clone(st), depth + 1)));
      return out;
    }
    if ((m = /^dnat (ip6?) to (ip6?) daddr \. meta l4proto \. th dport map @(\S+)$/.exec(r))) {
      if (!this.kw(m[1])) return 'next';
      const el = lookup(this.plan, m[3], [this.pkt.dst, this.pkt.proto, this.pkt.dport]);
      if (!el) return 'next'; // a map miss breaks the rule
      if (!el.data || el.data.kind !== 'value' || el.data.parts.length !== 2) throw new Error(`endpoint map element without ip . port data: ${JSON.stringify(el)}`);
      st.dnat = { ip: String(el.data.parts[0].value), port: Number(el.data.parts[1].value) };
      return [{ st, v: { kind: 'final', verdict: 'accept' } }];
    }
    // postrouting
    if ((m = new RegExp(`^ct status dnat (ip6?) saddr \\. (ip6?) daddr @(\\S+) ${mark}$`).exec(r))) {
      if (!this.kw(m[1]) || !st.dnat) return 'next';
      if (lookup(this.plan, m[3], [this.pkt.src, this.daddr(st)])) st.mark |= MASQ;
      return 'next';
    }
    if ((m = /^meta mark & 0x([0-9a-f]+) == 0 return$/.exec(r))) {
      return (st.mark & parseInt(m[1], 16)) === 0 ? [{ st, v: { kind: 'return' } }] : 'next';
    }
    if ((m = /^meta mark set meta mark \^ 0x([0-9a-f]+)$/.exec(r))) {
      st.mark ^= parseInt(m[1], 16);
      return 'next';
    }
    if (r === 'masquerade fully-random') {
      st.masq = true;
      return [{ st, v: { kind: 'final', verdict: 'accept' } }];
    }
    throw new Error(`nft-eval: rule not understood: ${r}`);
  }

  /** After `jump` the caller goes on with its next rule; after `goto` the caller itself is done (returns). */
  private afterCall(verb: string, res: Branch[]): Branch[] {
    const v: Verdict = verb === 'goto' ? { kind: 'return' } : { kind: 'continue' };
    return res.map((b) => (b.v.kind === 'final' ? b : { st: b.st, v }));
  }

  /** Runs every base chain of a hook (ordered by declaration; the plan has one per hook and type). */
  hook(re: RegExp, st: State): Branch[] {
    let branches: Branch[] = [{ st, v: { kind: 'continue' } }];
    for (const c of this.plan.chains.values()) {
      if (!c.hook || !re.test(c.hook)) continue;
      const next: Branch[] = [];
      for (const b of branches) {
        if (b.v.kind === 'final' && b.v.verdict !== 'accept') {
          next.push(b);
          continue;
        }
        // a base chain's policy is accept: return / fall-through / accept all go on to the next hook
        next.push(...this.run(c.name, b.st, 0).map((x) => (x.v.kind === 'final' ? x : { st: x.st, v: { kind: 'final', verdict: 'accept' } as Verdict })));
      }
      branches = next;
    }
    return branches;
  }
}

/** Sends one new-flow packet through the plan. */
export function evaluate(plan: NftPlan, pkt: Packet, opts: EvalOptions = {}): EvalResult {
  const ev = new Evaluator(plan, pkt, opts);
  const start: State = { mark: 0, masq: false, pins: [], trace: [] };
  const paths: PathOutcome[] = [];
  const filterHook = pkt.local ? /filter hook output/ : /filter hook prerouting/;
  const natHook = pkt.local ? /nat hook output/ : /nat hook prerouting/;
  for (const f of ev.hook(filterHook, start)) {
    if (f.v.kind === 'final' && (f.v.verdict === 'drop' || f.v.verdict === 'reject')) {
      paths.push({ verdict: f.v.verdict, masquerade: false, pins: f.st.pins, trace: f.st.trace });
      continue;
    }
    for (const n of ev.hook(natHook, f.st)) {
      if (n.v.kind === 'final' && (n.v.verdict === 'drop' || n.v.verdict === 'reject')) {
        paths.push({ verdict: n.v.verdict, masquerade: false, pins: n.st.pins, trace: n.st.trace });
        continue;
      }
      for (const p of ev.hook(/nat hook postrouting/, n.st)) {
        const st = p.st;
        paths.push({
          verdict: st.dnat ? 'dnat' : 'accept',
          endpoint: st.dnat ? `${st.dnat.ip}/${st.dnat.port}` : undefined,
          masquerade: st.masq,
          pins: st.pins,
          trace: st.trace,
        });
      }
    }
  }
  const kinds = new Set(paths.map((p) => p.verdict));
  if (kinds.size !== 1) throw new Error(`paths disagree on the verdict: ${[...kinds].join(', ')}`);
  const k = [...kinds][0];
  const masqByEndpoint = new Map<string, boolean>();
  for (const p of paths) if (p.endpoint) masqByEndpoint.set(p.endpoint, (masqByEndpoint.get(p.endpoint) ?? false) || p.masquerade);
  const ms = new Set(paths.map((p) => p.masquerade));
  return {
    verdict: k === 'accept' ? 'none' : k,
    endpoints: [...masqByEndpoint.keys()].sort(),
    masquerade: ms.size === 2 ? 'mixed' : [...ms][0],
    masqByEndpoint,
    paths,
  };
}
