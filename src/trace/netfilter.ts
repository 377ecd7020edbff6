// Netfilter in the trace: what the rules of a namespace do to the traced packet at one hook
// (prerouting for a packet that arrived, output for one sent from here, then input or forward,
// then postrouting), read from the live rulesets: `nft -j list ruleset` and, for the xtables
// tables, iptables-save (iptables-nft and iptables-legacy). Every base chain of the hook runs in
// priority order, as the kernel runs them, over a model of the packet as the first one of a new
// connection (ct state new): matches on addresses, ports, protocols, interfaces, marks, conntrack
// state and status, named and anonymous sets and maps (intervals, concatenations), verdict maps,
// jumps and gotos, `numgen` / `statistic` (every outcome is followed, each with its chance), NAT
// (dnat, snat, masquerade, redirect), mark changes and notrack. A nat chain runs only for a tracked
// flow that no earlier nat chain of the hook has bound, as in the kernel. What cannot be decided
// from the packet (a uid, a socket, a hash, an xt extension) is "may match": reported, and the
// rule is taken as not matching.
//
// On top of that generic evaluation the result is explained; there, podnet's OWN layouts are read
// by name: the service proxy's nftables table `inet podnet-proxy` (svc4/svc6 → lb-<N>-<masq>[-aff<T>]
// → pick-<i> with ep4-<i>; noep4/noep6 → reject-no-endpoints or drop; hairpin sets; the mark 0x4000
// masqueraded in nat-postrouting; see src/proxy/engines/nftables/plan.ts) and its iptables chains
// (PODNET-SERVICES → PODNET-SVC-/SVL-/EXT- → PODNET-SEP-, PODNET-MARK-MASQ, PODNET-POSTROUTING,
// filter PODNET-SERVICES rejecting frontends without endpoints; src/proxy/engines/iptables), so a
// DNAT is told as the service's endpoints with their chances, its affinity and why it masquerades.
// Any other table is "foreign": a drop there names the table, chain, rule and the command to see it.
import { canonicalIP, compare, contains, tryParseCidr, tryParseIP } from '../util/ip.js';
import type { Step } from './types.js';
import type { ConntrackEntry, TraceView } from './view.js';

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

interface NftSet {
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

const HOOKS: NfHook[] = ['prerouting', 'input', 'forward', 'output', 'postrouting'];
const XT_TABLES = ['raw', 'mangle', 'nat', 'filter', 'security'];
const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

// ---------------------------------------------------------------------------------------------
// nft -j list ruleset

/**
 * The tables of an `nft -j list ruleset` document. `skip(family, name)`: tables read elsewhere
 * (the xtables tables iptables-nft-save shows, which hold xt expressions nft's JSON cannot say).
 */
export function tablesFromNftJson(doc: unknown, skip: (family: string, name: string) => boolean = () => false): NfTable[] {
  const items = isObj(doc) && Array.isArray(doc.nftables) ? (doc.nftables as unknown[]) : [];
  const tables = new Map<string, NfTable>();
  const key = (f: unknown, n: unknown) => `${String(f)} ${String(n)}`;
  const table = (f: unknown, n: unknown) => tables.get(key(f, n));
  for (const it of items) {
    if (!isObj(it)) continue;
    if (isObj(it.table)) {
      const t = it.table;
      if (skip(String(t.family), String(t.name))) continue;
      tables.set(key(t.family, t.name), { engine: 'nft', family: String(t.family), name: String(t.name), chains: new Map(), sets: new Map() });
    } else if (isObj(it.chain)) {
      const c = it.chain;
      const t = table(c.family, c.table);
      if (!t) continue;
      const hook = typeof c.hook === 'string' && (HOOKS as string[]).includes(c.hook) ? (c.hook as NfHook) : undefined;
      const chain: NfChain = { table: t, name: String(c.name), rules: [] };
      if (hook && typeof c.type === 'string') chain.base = { type: c.type, hook, prio: Number(c.prio ?? 0), policy: c.policy === 'drop' ? 'drop' : 'accept' };
      t.chains.set(chain.name, chain);
    } else if (isObj(it.rule)) {
      const r = it.rule;
      const t = table(r.family, r.table);
      const ch = t?.chains.get(String(r.chain));
      if (!t || !ch) continue;
      const expr = Array.isArray(r.expr) ? (r.expr as unknown[]) : [];
      const comment = typeof r.comment === 'string' ? r.comment : undefined;
      ch.rules.push({
        ref: { engine: 'nft', family: t.family, table: t.name, chain: ch.name, handle: Number(r.handle), pos: ch.rules.length + 1, text: ruleText(expr) + (comment ? ` comment "${comment}"` : ''), ...(comment ? { comment } : {}) },
        nft: expr,
      });
    } else if (isObj(it.set) || isObj(it.map)) {
      const s = (isObj(it.set) ? it.set : it.map) as Record<string, unknown>;
      const t = table(s.family, s.table);
      if (!t) continue;
      t.sets.set(String(s.name), { name: String(s.name), map: s.map, flags: Array.isArray(s.flags) ? (s.flags as string[]) : typeof s.flags === 'string' ? [s.flags] : [], elem: Array.isArray(s.elem) ? (s.elem as unknown[]) : [] });
    }
  }
  return [...tables.values()];
}

/** xtables-named tables of the ip/ip6 families: iptables-nft's, when iptables-nft-save lists them. */
export function isXtablesName(family: string, name: string): boolean {
  return (family === 'ip' || family === 'ip6') && XT_TABLES.includes(name);
}

// ---------------------------------------------------------------------------------------------
// iptables-save

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

const XT_PRIO: Record<string, Partial<Record<NfHook, number>>> = {
  raw: { prerouting: -300, output: -300 },
  mangle: { prerouting: -150, input: -150, forward: -150, output: -150, postrouting: -150 },
  nat: { prerouting: -100, output: -100, input: 100, postrouting: 100 },
  filter: { input: 0, forward: 0, output: 0 },
  security: { input: 50, forward: 50, output: 50 },
};

/** iptables-save's quoting: words, "double quoted" with backslash escapes. */
function xtWords(line: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < line.length) {
    if (line[i] === ' ') {
      i++;
      continue;
    }
    let w = '';
    if (line[i] === '"') {
      i++;
      while (i < line.length && line[i] !== '"') {
        if (line[i] === '\\' && i + 1 < line.length) i++;
        w += line[i++];
      }
      i++;
    } else while (i < line.length && line[i] !== ' ') w += line[i++];
    out.push(w);
  }
  return out;
}

const FLAG_WITH_VALUE = new Set(['-s', '-d', '-p', '-i', '-o', '--source', '--destination', '--protocol', '--in-interface', '--out-interface']);
const FLAG_NAMES: Record<string, string> = { '--source': '-s', '--destination': '-d', '--protocol': '-p', '--in-interface': '-i', '--out-interface': '-o' };

export function parseXtRule(words: string[]): XtRule {
  const rule: XtRule = { clauses: [] };
  let mod: XtClause | undefined;
  let target: { name: string; opts: XtOpt[] } | undefined;
  let neg = false;
  for (let i = 0; i < words.length; i++) {
    const w = words[i];
    if (w === '!') {
      neg = true;
      continue;
    }
    if (FLAG_WITH_VALUE.has(w)) {
      rule.clauses.push({ kind: 'flag', name: FLAG_NAMES[w] ?? w, neg, value: words[++i], opts: [] });
      mod = undefined;
      target = undefined;
    } else if (w === '-f' || w === '--fragment') {
      rule.clauses.push({ kind: 'flag', name: '-f', neg, opts: [] });
    } else if (w === '-m' || w === '--match') {
      mod = { kind: 'module', name: words[++i], neg: false, opts: [] };
      rule.clauses.push(mod);
      target = undefined;
    } else if (w === '-j' || w === '--jump') {
      target = { name: words[++i], opts: [] };
      rule.target = target;
      mod = undefined;
    } else if (w === '-g' || w === '--goto') {
      rule.goto = words[++i];
    } else if (w.startsWith('--')) {
      const opt: XtOpt = { name: w.slice(2), neg, values: [] };
      while (i + 1 < words.length && !words[i + 1].startsWith('-') && words[i + 1] !== '!') opt.values.push(words[++i]);
      // a value may itself start with '-' only as a negative number, which no option here takes
      if (target) target.opts.push(opt);
      else if (mod) mod.opts.push(opt);
      else if (rule.clauses.length) rule.clauses[rule.clauses.length - 1].opts.push(opt);
    }
    neg = false;
  }
  return rule;
}

/** The tables of one family's iptables-save output. */
export function tablesFromIptablesSave(text: string, family: 4 | 6, backend: 'nft' | 'legacy'): NfTable[] {
  const fam = family === 4 ? 'ip' : 'ip6';
  const tables: NfTable[] = [];
  let t: NfTable | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) {
      t = { engine: 'xt', family: fam, name: line.slice(1), backend, chains: new Map(), sets: new Map() };
      tables.push(t);
    } else if (!t || line === 'COMMIT' || line.startsWith('#') || !line) continue;
    else if (line.startsWith(':')) {
      const [name, policy] = line.slice(1).split(/\s+/);
      const chain: NfChain = { table: t, name, rules: [] };
      const hook = ({ PREROUTING: 'prerouting', INPUT: 'input', FORWARD: 'forward', OUTPUT: 'output', POSTROUTING: 'postrouting' } as Record<string, NfHook>)[name];
      const prio = hook !== undefined ? XT_PRIO[t.name]?.[hook] : undefined;
      if (hook && prio !== undefined && policy !== '-') chain.base = { type: t.name === 'nat' ? 'nat' : 'filter', hook, prio, policy: policy === 'DROP' ? 'drop' : 'accept' };
      t.chains.set(name, chain);
    } else if (line.startsWith('-A ')) {
      const words = xtWords(line);
      const ch = t.chains.get(words[1]);
      if (!ch) continue;
      const xt = parseXtRule(words.slice(2));
      const comment = xt.clauses.find((c) => c.name === 'comment')?.opts.find((o) => o.name === 'comment')?.values.join(' ');
      ch.rules.push({ ref: { engine: 'xt', family: fam, table: t.name, chain: ch.name, pos: ch.rules.length + 1, text: line, backend, ...(comment ? { comment } : {}) }, xt });
    }
  }
  return tables;
}

// ---------------------------------------------------------------------------------------------
// nft expressions as text (for the rules a step names)

function exprText(e: unknown): string {
  if (e === null || e === undefined) return '';
  if (typeof e === 'string' || typeof e === 'number' || typeof e === 'boolean') return String(e);
  if (Array.isArray(e)) return `{ ${e.map(exprText).join(', ')} }`;
  if (!isObj(e)) return JSON.stringify(e);
  const [k, v] = Object.entries(e)[0] ?? ['', undefined];
  const o = (isObj(v) ? v : {}) as Record<string, unknown>;
  switch (k) {
    case 'payload':
      return o.protocol ? `${String(o.protocol)} ${String(o.field)}` : `@${String(o.base)},${String(o.offset)},${String(o.len)}`;
    case 'meta':
      return `meta ${String(o.key)}`;
    case 'ct':
      return `ct ${o.dir ? `${String(o.dir)} ` : ''}${String(o.key)}`;
    case 'concat':
      return (v as unknown[]).map(exprText).join(' . ');
    case 'prefix':
      return `${String(o.addr)}/${String(o.len)}`;
    case 'range':
      return `${exprText((v as unknown[])[0])}-${exprText((v as unknown[])[1])}`;
    case 'set':
      if (Array.isArray(v)) return `{ ${v.map((x) => (Array.isArray(x) ? `${exprText(x[0])} : ${exprText(x[1])}` : exprText(x))).join(', ')} }`;
      if (typeof v === 'string') return v;
      return `${String(o.op)} ${String(o.set)} { ${exprText(o.elem)} }`;
    case 'map':
      return `${exprText(o.key)} map ${exprText(o.data)}`;
    case 'numgen':
      return `numgen ${String(o.mode)} mod ${String(o.mod)}${o.offset ? ` offset ${String(o.offset)}` : ''}`;
    case 'jhash':
    case 'symhash':
      return `${k} mod ${String(o.mod)}`;
    case '&':
    case '|':
    case '^':
    case '<<':
    case '>>':
      return `${exprText((v as unknown[])[0])} ${k} ${exprText((v as unknown[])[1])}`;
    case 'fib':
      return `fib ${((o.flags as string[]) ?? []).join(' . ')} ${String(o.result)}`;
    case 'elem':
      return exprText(o.val);
    case 'match': {
      const op = o.op === '==' || o.op === 'in' ? '' : `${String(o.op)} `;
      return `${exprText(o.left)} ${op}${exprText(o.right)}`;
    }
    case 'accept':
    case 'drop':
    case 'continue':
    case 'return':
    case 'counter':
    case 'notrack':
    case 'log':
      return k;
    case 'jump':
    case 'goto':
      return `${k} ${String(o.target)}`;
    case 'reject':
      return `reject${o.type ? ` with ${String(o.type)}` : ''}${o.expr ? ` ${String(o.expr)}` : ''}`;
    case 'vmap':
      return `${exprText(o.key)} vmap ${exprText(o.data)}`;
    case 'dnat':
    case 'snat':
      return `${k}${o.family ? ` ${String(o.family)}` : ''} to ${exprText(o.addr)}${o.port !== undefined ? `:${exprText(o.port)}` : ''}`;
    case 'masquerade':
    case 'redirect':
      return `${k}${o.port !== undefined ? ` to :${exprText(o.port)}` : ''}${o.flags ? ` ${[o.flags].flat().join(',')}` : ''}`;
    case 'mangle':
      return `${exprText(o.key)} set ${exprText(o.value)}`;
    case 'limit':
      return `limit rate ${String(o.rate)}/${String(o.per)}`;
    case 'xt':
      return `xt ${String(o.type)} ${String(o.name)}`;
    default:
      return JSON.stringify(e);
  }
}

function ruleText(expr: unknown[]): string {
  return expr.map(exprText).join(' ').replace(/\s+/g, ' ').trim();
}

// ---------------------------------------------------------------------------------------------
// evaluation

const UNKNOWN = Symbol('unknown');
const NOMATCH = Symbol('nomatch');
type Flags = { flags: string[] };
type Special = { numgen: { mod: number; offset: number; why: string } } | { random: { mask: number } };
type Val = string | number | Flags | Special | Val[] | typeof UNKNOWN;
type Got = Val | typeof NOMATCH;

const PROTO_NUM: Record<string, number> = { icmp: 1, igmp: 2, tcp: 6, udp: 17, gre: 47, esp: 50, ah: 51, 'ipv6-icmp': 58, icmpv6: 58, sctp: 132, udplite: 136 };
const SERVICE_NUM: Record<string, number> = { http: 80, https: 443, domain: 53, ssh: 22, ntp: 123, bgp: 179, 'http-alt': 8080 };

function isFlags(v: unknown): v is Flags {
  return isObj(v) && Array.isArray((v as Flags).flags);
}
function isSpecial(v: unknown): v is Special {
  return isObj(v) && ('numgen' in v || 'random' in v);
}

/** Comparable form: canonical IP, protocol and service names as numbers, numeric strings as numbers. */
function norm(v: string | number): string | number {
  if (typeof v === 'number') return v;
  const ip = canonicalIP(v);
  if (ip) return ip;
  if (/^\d+$/.test(v)) return Number(v);
  if (/^0x[0-9a-f]+$/i.test(v)) return parseInt(v, 16);
  return PROTO_NUM[v] ?? SERVICE_NUM[v] ?? v;
}

function flagList(x: unknown): string[] | undefined {
  if (typeof x === 'string') return [x];
  if (Array.isArray(x) && x.every((y) => typeof y === 'string')) return x as string[];
  if (isObj(x) && Array.isArray(x.set)) return flagList(x.set);
  if (isObj(x) && Array.isArray(x['|'])) return (x['|'] as unknown[]).flatMap((y) => flagList(y) ?? []);
  return undefined;
}

/** Whether `pattern` (a literal, prefix, range, concatenation, set element or set) matches the value: true, false, or undefined (cannot tell). */
function matches(pattern: unknown, v: Val, sets?: Map<string, NftSet>): boolean | undefined {
  if (v === UNKNOWN) return undefined;
  if (isObj(pattern) && isObj(pattern.elem)) return matches(pattern.elem.val, v, sets);
  if (typeof pattern === 'string' && pattern.startsWith('@')) {
    const s = sets?.get(pattern.slice(1));
    if (!s) return undefined;
    return anyOf(s.elem.map((e) => (Array.isArray(e) && s.map !== undefined ? e[0] : e)), v, sets);
  }
  if (isObj(pattern) && Array.isArray(pattern.set)) return anyOf(pattern.set as unknown[], v, sets);
  if (Array.isArray(v)) {
    const parts = isObj(pattern) && Array.isArray(pattern.concat) ? (pattern.concat as unknown[]) : undefined;
    if (!parts || parts.length !== v.length) return false;
    let unsure = false;
    for (let i = 0; i < parts.length; i++) {
      const m = matches(parts[i], v[i], sets);
      if (m === false) return false;
      if (m === undefined) unsure = true;
    }
    return unsure ? undefined : true;
  }
  if (isFlags(v)) {
    const want = flagList(pattern);
    return want ? want.some((f) => v.flags.includes(f)) : undefined;
  }
  if (isSpecial(v)) return undefined;
  if (isObj(pattern) && isObj(pattern.prefix)) {
    const c = tryParseCidr(`${String(pattern.prefix.addr)}/${String(pattern.prefix.len)}`);
    const a = typeof v === 'string' ? tryParseIP(v) : undefined;
    return c && a ? c.family === a.family && contains(c, a) : false;
  }
  if (isObj(pattern) && Array.isArray(pattern.range)) {
    const [lo, hi] = pattern.range as unknown[];
    return inRange(lo, hi, v);
  }
  // an interface name pattern: "veth*" matches every name starting with veth
  if (typeof pattern === 'string' && pattern.endsWith('*') && !pattern.endsWith('\\*') && typeof v === 'string') return v.startsWith(pattern.slice(0, -1));
  if (typeof pattern === 'string' || typeof pattern === 'number') return norm(pattern) === norm(v as string | number);
  return undefined;
}

function inRange(lo: unknown, hi: unknown, v: Val): boolean | undefined {
  if (typeof v === 'number' || (typeof v === 'string' && /^\d+$/.test(v))) return Number(lo) <= Number(v) && Number(v) <= Number(hi);
  const a = typeof v === 'string' ? tryParseIP(v) : undefined;
  const l = tryParseIP(String(lo));
  const h = tryParseIP(String(hi));
  if (!a || !l || !h) return undefined;
  return a.family === l.family && compare(l, a) <= 0 && compare(a, h) <= 0;
}

function anyOf(patterns: unknown[], v: Val, sets?: Map<string, NftSet>): boolean | undefined {
  let unsure = false;
  for (const p of patterns) {
    const m = matches(p, v, sets);
    if (m === true) return true;
    if (m === undefined) unsure = true;
  }
  return unsure ? undefined : false;
}

interface Ctx {
  hook: NfHook;
  iif?: string;
  oif?: string;
  /** local addresses of the namespace (canonical) */
  local: Set<string>;
  /** the source masquerade would pick on oif */
  masqSrc?: string;
  tables: NfTable[];
  recent: Map<string, string[] | undefined>;
}

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
interface Branch {
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
function markChange(b: Branch, mark: number, rule: RuleRef): void {
  if ((mark & ~b.c.mark) !== 0) {
    b.c.markBy = rule;
    const prev = b.trail.length ? b.trail[b.trail.length - 1].rule : undefined;
    b.c.markVia = prev && prev !== rule ? prev : undefined;
  }
  b.c.mark = mark;
}

function fork(b: Branch, p: number): Branch {
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

type Verdict = 'accept' | 'drop' | 'reject' | 'return' | 'continue';
type RuleOut =
  | { k: 'nomatch' }
  | { k: 'next' }
  | { k: 'verdict'; v: Verdict; reject?: string }
  | { k: 'jump' | 'goto'; chain: string };
interface Res {
  b: Branch;
  r: RuleOut;
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

const MAX_BRANCHES = 4096;

class Evaluator {
  private branches = 0;
  constructor(private readonly ctx: Ctx) {}

  private fail(b: Branch, rule: RuleRef, why: string): Res[] {
    b.maybe.push({ rule, why });
    return [{ b, r: { k: 'nomatch' } }];
  }

  // ---- nft values ----
  private get(e: unknown, b: Branch): Got {
    const pkt = b.pkt;
    if (typeof e === 'string' || typeof e === 'number') return e;
    if (!isObj(e)) return UNKNOWN;
    const [k, v] = Object.entries(e)[0] ?? ['', undefined];
    const o = (isObj(v) ? v : {}) as Record<string, unknown>;
    const fam4 = pkt.family === 4;
    switch (k) {
      case 'payload': {
        const proto = String(o.protocol ?? '');
        const field = String(o.field ?? '');
        if (proto === 'ip' || proto === 'ip6') {
          if ((proto === 'ip') !== fam4) return NOMATCH;
          if (field === 'saddr') return pkt.src;
          if (field === 'daddr') return pkt.dst;
          if (field === 'protocol' || field === 'nexthdr') return pkt.proto === 'icmp' && !fam4 ? 'ipv6-icmp' : pkt.proto;
          if (field === 'length' || field === 'payload_len') return pkt.size ?? UNKNOWN;
          return UNKNOWN;
        }
        if (proto === 'tcp' || proto === 'udp' || proto === 'sctp' || proto === 'udplite') {
          if (pkt.proto !== proto) return NOMATCH;
          if (field === 'sport') return pkt.sport ?? UNKNOWN;
          if (field === 'dport') return pkt.dport ?? UNKNOWN;
          if (field === 'flags' && proto === 'tcp') return { flags: ['syn'] };
          return UNKNOWN;
        }
        if (proto === 'th') {
          if (!['tcp', 'udp', 'sctp', 'udplite'].includes(pkt.proto)) return UNKNOWN;
          if (field === 'sport') return pkt.sport ?? UNKNOWN;
          if (field === 'dport') return pkt.dport ?? UNKNOWN;
          return UNKNOWN;
        }
        if (proto === 'icmp' || proto === 'icmpv6') {
          if (pkt.proto !== 'icmp' || (proto === 'icmp') !== fam4) return NOMATCH;
          if (field === 'type') return 'echo-request';
          if (field === 'code') return 0;
          return UNKNOWN;
        }
        return UNKNOWN;
      }
      case 'meta': {
        const key = String(o.key);
        const l4 = pkt.proto === 'icmp' && !fam4 ? 'ipv6-icmp' : pkt.proto;
        switch (key) {
          case 'l4proto':
            return l4;
          case 'nfproto':
            return fam4 ? 'ipv4' : 'ipv6';
          case 'protocol':
            return fam4 ? 'ip' : 'ip6';
          case 'iifname':
          case 'iif':
            if (this.ctx.hook === 'output') return NOMATCH;
            return this.ctx.iif ?? UNKNOWN;
          case 'oifname':
          case 'oif':
            if (this.ctx.hook === 'prerouting' || this.ctx.hook === 'input') return NOMATCH;
            return this.ctx.oif ?? UNKNOWN;
          case 'mark':
            return b.c.mark;
          case 'random':
            return { random: { mask: 0xffffffff } };
          case 'pkttype':
            return 'host';
          case 'length':
            return pkt.size ?? UNKNOWN;
          default:
            return UNKNOWN;
        }
      }
      case 'ct': {
        const key = String(o.key);
        if (key === 'state') return { flags: [b.c.untracked ? 'untracked' : 'new'] };
        if (b.c.untracked) return NOMATCH;
        if (key === 'status') return { flags: [...(b.c.dnat ? ['dnat'] : []), ...(b.c.snat ? ['snat'] : [])] };
        if (key === 'direction') return 'original';
        if (key === 'mark') return 0;
        if (key === 'zone') return 0;
        if (key === 'l3proto') return fam4 ? 'ipv4' : 'ipv6';
        if (key === 'protocol') return pkt.proto;
        if (o.dir === 'reply') return UNKNOWN;
        if (key === 'saddr' || key === 'ip saddr' || key === 'ip6 saddr') return b.c.snat?.src ?? pkt.src;
        if (key === 'daddr' || key === 'ip daddr' || key === 'ip6 daddr') return b.c.dnat?.dst ?? pkt.dst;
        if (key === 'proto-dst') return b.c.dnat?.dport ?? pkt.dport ?? UNKNOWN;
        return UNKNOWN;
      }
      case 'fib': {
        const flags = (o.flags as string[]) ?? [];
        if (o.result === 'type' && flags.includes('daddr') && !flags.includes('iif') && !flags.includes('oif')) {
          const ip = canonicalIP(pkt.dst) ?? pkt.dst;
          if (this.ctx.local.has(ip)) return 'local';
          if (/^(224|23\d)\./.test(ip) || ip.toLowerCase().startsWith('ff')) return 'multicast';
          return fam4 && pkt.dst.endsWith('.255') ? UNKNOWN : 'unicast';
        }
        if (o.result === 'type' && flags.includes('saddr') && !flags.includes('iif')) return this.ctx.local.has(canonicalIP(pkt.src) ?? pkt.src) ? 'local' : 'unicast';
        return UNKNOWN;
      }
      case 'concat': {
        const parts: Val[] = [];
        for (const x of v as unknown[]) {
          const g = this.get(x, b);
          if (g === NOMATCH) return NOMATCH;
          parts.push(g);
        }
        return parts;
      }
      case '&':
      case '|':
      case '^': {
        const [l, r] = (v as unknown[]).map((x) => this.get(x, b));
        if (l === NOMATCH || r === NOMATCH) return NOMATCH;
        if (isObj(l) && 'random' in l && k === '&' && typeof r === 'number') return { random: { mask: r } };
        if (isFlags(l)) {
          const f = flagList((v as unknown[])[1]);
          if (!f) return UNKNOWN;
          return { flags: k === '&' ? l.flags.filter((x) => f.includes(x)) : [...new Set([...l.flags, ...f])] };
        }
        if (typeof l !== 'number' || typeof r !== 'number') return UNKNOWN;
        return k === '&' ? (l & r) >>> 0 : k === '|' ? (l | r) >>> 0 : (l ^ r) >>> 0;
      }
      case 'numgen':
        return { numgen: { mod: Number(o.mod), offset: Number(o.offset ?? 0), why: `numgen ${String(o.mode)}` } };
      case 'jhash':
      case 'symhash':
        return { numgen: { mod: Number(o.mod), offset: Number(o.offset ?? 0), why: `${k} (a hash of the packet's fields: the chances are those of an even spread)` } };
      case 'map': {
        return UNKNOWN; // maps are resolved where they are used (dnat, vmap), with their branches
      }
      default:
        return UNKNOWN;
    }
  }

  /** A map (or verdict map) lookup: one result per branch the key has (numgen: one per value). */
  private lookup(b: Branch, keyExpr: unknown, data: unknown, table: NfTable): { p: number; found?: unknown; elem?: unknown; unsure?: boolean }[] {
    const key = this.get(keyExpr, b);
    let pairs: [unknown, unknown][] = [];
    if (typeof data === 'string' && data.startsWith('@')) {
      const s = table.sets.get(data.slice(1));
      pairs = (s?.elem ?? []).filter(Array.isArray).map((e) => [(e as unknown[])[0], (e as unknown[])[1]]);
    } else if (isObj(data) && Array.isArray(data.set)) pairs = (data.set as unknown[]).filter(Array.isArray).map((e) => [(e as unknown[])[0], (e as unknown[])[1]]);
    if (key === NOMATCH) return [{ p: 1 }];
    const find = (v: Val) => {
      let unsure = false;
      for (const [k, d] of pairs) {
        const m = matches(k, v, table.sets);
        if (m === true) return { found: d, elem: k };
        if (m === undefined) unsure = true;
      }
      return { unsure };
    };
    if (isObj(key) && 'numgen' in key) {
      const { mod, offset } = key.numgen;
      if (!(mod >= 1 && mod <= 1024)) return [{ p: 1, unsure: true }];
      const out: { p: number; found?: unknown; elem?: unknown; unsure?: boolean }[] = [];
      for (let i = 0; i < mod; i++) out.push({ p: 1 / mod, ...find(offset + i) });
      return out;
    }
    if (isSpecial(key)) return [{ p: 1, unsure: true }];
    return [{ p: 1, ...find(key) }];
  }

  private setMark(b: Branch, value: unknown, rule: RuleRef): boolean {
    const v = this.get(value, b);
    if (typeof v !== 'number') return false;
    markChange(b, v >>> 0, rule);
    return true;
  }

  private addr(x: unknown): { ip?: string; port?: number } | undefined {
    if (typeof x === 'string') return { ip: x };
    if (isObj(x) && Array.isArray(x.concat)) {
      const [ip, port] = x.concat as unknown[];
      return { ip: String(ip), ...(port !== undefined ? { port: Number(port) } : {}) };
    }
    return undefined;
  }

  /** A NAT statement: where the packet now goes or comes from (a map in it may fork). */
  private nat(kind: string, o: Record<string, unknown>, b: Branch, rule: RuleRef, table: NfTable): Res[] {
    if (b.c.untracked) return [{ b, r: { k: 'next' } }];
    if (o.family && ((o.family === 'ip') !== (b.pkt.family === 4))) return [{ b, r: { k: 'nomatch' } }];
    const apply = (br: Branch, to: { ip?: string; port?: number } | undefined): Res => {
      if (kind === 'dnat' || kind === 'redirect') {
        let ip = to?.ip;
        if (kind === 'redirect') ip = this.ctx.iif ? undefined : b.pkt.family === 4 ? '127.0.0.1' : '::1';
        if (kind === 'redirect' && !ip) ip = [...this.ctx.local].find((a) => a.includes(':') === (b.pkt.family === 6));
        br.c.dnat = { dst: br.pkt.dst, ...(br.pkt.dport !== undefined ? { dport: br.pkt.dport } : {}), rule };
        if (ip) br.pkt.dst = ip;
        if (to?.port !== undefined) br.pkt.dport = to.port;
      } else {
        const ip = kind === 'masquerade' ? this.ctx.masqSrc : to?.ip;
        br.c.snat = { src: br.pkt.src, rule };
        if (ip) br.pkt.src = ip;
        if (to?.port !== undefined) br.pkt.sport = to.port;
      }
      br.bound = true;
      return { b: br, r: { k: 'verdict', v: 'accept' } };
    };
    if (kind === 'masquerade' || (kind === 'redirect' && o.port === undefined)) return [apply(b, undefined)];
    const portOf = (p: unknown) => (typeof p === 'number' ? p : typeof p === 'string' && /^\d+$/.test(p) ? Number(p) : undefined);
    if (isObj(o.addr) && isObj(o.addr.map)) {
      const m = o.addr.map as Record<string, unknown>;
      const out: Res[] = [];
      for (const r of this.lookup(b, m.key, m.data, table)) {
        const br = r.p === 1 ? b : fork(b, r.p);
        if (r.unsure) out.push(...this.fail(br, rule, `cannot tell which element of ${exprText(m.data)} the packet's key matches`));
        else if (r.found === undefined) out.push({ b: br, r: { k: 'nomatch' } }); // a map miss ends the rule
        else {
          const to = this.addr(r.found);
          out.push(apply(br, to && { ...to, ...(portOf(o.port) !== undefined ? { port: portOf(o.port) } : {}) }));
        }
      }
      return out;
    }
    const to = o.addr !== undefined ? this.addr(o.addr) : {};
    if (!to) return this.fail(b, rule, `cannot evaluate the ${kind} target ${exprText(o.addr)}`);
    const port = portOf(o.port);
    return [apply(b, { ...to, ...(port !== undefined ? { port } : {}) })];
  }

  private verdictOf(d: unknown): RuleOut | undefined {
    if (!isObj(d)) return undefined;
    if ('accept' in d) return { k: 'verdict', v: 'accept' };
    if ('drop' in d) return { k: 'verdict', v: 'drop' };
    if ('return' in d) return { k: 'verdict', v: 'return' };
    if ('continue' in d) return { k: 'verdict', v: 'continue' };
    if (isObj(d.jump)) return { k: 'jump', chain: String(d.jump.target) };
    if (isObj(d.goto)) return { k: 'goto', chain: String(d.goto.target) };
    return undefined;
  }

  /** The statements of an nft rule from `i` on. */
  private nftStmts(list: unknown[], i: number, b: Branch, rule: RuleRef, table: NfTable): Res[] {
    if (i >= list.length) return [{ b, r: { k: 'next' } }];
    const s = list[i];
    const on = (br: Branch) => this.nftStmts(list, i + 1, br, rule, table);
    if (!isObj(s)) return this.fail(b, rule, `statement ${JSON.stringify(s)} not understood`);
    const [k, v] = Object.entries(s)[0] ?? ['', undefined];
    const o = (isObj(v) ? v : {}) as Record<string, unknown>;
    switch (k) {
      case 'match': {
        const left = this.get(o.left, b);
        if (left === NOMATCH) return [{ b, r: { k: 'nomatch' } }];
        const op = String(o.op);
        if (isObj(left) && 'random' in left) {
          // meta random & MASK < N: true with the chance N / (MASK + 1)
          const n = Number(o.right);
          const range = left.random.mask + 1;
          let p = op === '<' ? n / range : op === '<=' ? (n + 1) / range : op === '>' ? (range - n - 1) / range : op === '>=' ? (range - n) / range : NaN;
          if (!Number.isFinite(p)) return this.fail(b, rule, `${exprText(o.left)} ${op} ${exprText(o.right)}: a random number`);
          p = Math.max(0, Math.min(1, p));
          const out: Res[] = [];
          if (p > 0) out.push(...on(fork(b, p)));
          if (p < 1) out.push({ b: fork(b, 1 - p), r: { k: 'nomatch' } });
          return out;
        }
        if (left === UNKNOWN || isSpecial(left)) return this.fail(b, rule, `cannot evaluate ${exprText(o.left)} for this packet`);
        let m: boolean | undefined;
        if (['<', '>', '<=', '>='].includes(op)) {
          const l = typeof left === 'number' ? left : typeof left === 'string' ? Number(norm(left)) : NaN;
          const r = Number(typeof o.right === 'string' ? norm(o.right) : o.right);
          m = Number.isFinite(l) && Number.isFinite(r) ? (op === '<' ? l < r : op === '>' ? l > r : op === '<=' ? l <= r : l >= r) : undefined;
        } else if (isFlags(left) && (op === '==' || op === '!=') && !(typeof o.right === 'string' && o.right.startsWith('@'))) {
          // flags compared with == are compared whole (after a mask: tcp flags & (syn | ack) == syn)
          const want = flagList(o.right);
          m = want ? want.length === left.flags.length && want.every((f) => left.flags.includes(f)) : undefined;
          if (op === '!=' && m !== undefined) m = !m;
        } else {
          m = matches(o.right, left, table.sets);
          if (op === '!=') m = m === undefined ? undefined : !m;
        }
        if (m === undefined) return this.fail(b, rule, `cannot tell whether ${exprText(o.left)} ${op === '==' || op === 'in' ? 'is in' : op} ${exprText(o.right)}`);
        if (!m) return [{ b, r: { k: 'nomatch' } }];
        if (typeof o.right === 'string' && o.right.startsWith('@')) {
          const set = table.sets.get(o.right.slice(1));
          const elem = set?.elem.find((e) => matches(e, left, table.sets) === true);
          b.trail.push({ rule, elem });
        }
        return on(b);
      }
      case 'counter':
      case 'log':
      case 'limit':
      case 'quota':
      case 'meter':
      case 'flow':
        return on(b);
      case 'notrack':
        b.c.untracked = rule;
        return on(b);
      case 'mangle': {
        const key = isObj(o.key) ? o.key : {};
        if (isObj(key.meta) && key.meta.key === 'mark') {
          if (!this.setMark(b, o.value, rule)) return this.fail(b, rule, `cannot compute the new mark ${exprText(o.value)}`);
          return on(b);
        }
        return on(b); // a ct mark, a payload or another field: not what this trace follows
      }
      case 'set': {
        if (Array.isArray(v) || typeof v === 'string') return this.fail(b, rule, `statement ${exprText(s)} not understood`);
        const elem = isObj(o.elem) && isObj(o.elem.elem) ? o.elem.elem : undefined;
        b.pins.push({ set: String(o.set), ...(elem && typeof elem.timeout === 'number' ? { timeout: elem.timeout } : {}) });
        return on(b);
      }
      case 'accept':
      case 'drop':
      case 'return':
      case 'continue':
        return [{ b, r: { k: 'verdict', v: k } }];
      case 'reject': {
        const type = String(o.type ?? '');
        const code = String(o.expr ?? '');
        const text = type === 'tcp reset' ? 'a TCP reset' : code ? `ICMP ${code}` : 'ICMP port unreachable';
        if (type === 'tcp reset' && b.pkt.proto !== 'tcp') return [{ b, r: { k: 'nomatch' } }];
        return [{ b, r: { k: 'verdict', v: 'reject', reject: text } }];
      }
      case 'jump':
      case 'goto':
        return [{ b, r: { k, chain: String(o.target) } }];
      case 'vmap': {
        const out: Res[] = [];
        for (const r of this.lookup(b, o.key, o.data, table)) {
          const br = r.p === 1 ? b : fork(b, r.p);
          if (r.unsure) {
            out.push(...this.fail(br, rule, `cannot tell which element of ${exprText(o.data)} ${exprText(o.key)} matches`));
            continue;
          }
          if (r.found === undefined) {
            out.push({ b: br, r: { k: 'nomatch' } });
            continue;
          }
          const vd = this.verdictOf(r.found);
          if (!vd) {
            out.push(...this.fail(br, rule, `verdict ${JSON.stringify(r.found)} not understood`));
            continue;
          }
          br.trail.push({ rule, elem: r.elem, ...(vd.k === 'jump' || vd.k === 'goto' ? { to: vd.chain } : {}) });
          out.push({ b: br, r: vd });
        }
        return out;
      }
      case 'dnat':
      case 'snat':
      case 'masquerade':
      case 'redirect':
        return this.nat(k, o, b, rule, table);
      case 'xt':
        if (o.type === 'match' && o.name === 'comment') return on(b);
        return this.fail(b, rule, `xt ${String(o.type)} ${String(o.name)} (an iptables extension nft cannot show)`);
      default:
        return this.fail(b, rule, `statement ${k} not understood`);
    }
  }

  // ---- iptables ----
  /** An iptables rule's clauses from `i` on, then its target; the ways it matches come before the ways it does not. */
  private xtRule(rule: NfRule, b: Branch, table: NfTable, i = 0): Res[] {
    const x = rule.xt!;
    if (i >= x.clauses.length) return this.xtTarget(x, b, rule.ref, table);
    const c = x.clauses[i];
    const r = this.xtClause(c, b, rule.ref);
    if (r === false) return [{ b, r: { k: 'nomatch' } }];
    if (r === undefined) {
      const what = c.kind === 'flag' ? `${c.neg ? '! ' : ''}${c.name} ${c.value}` : `-m ${c.name} ${c.opts.map((o) => [o.neg ? '!' : '', `--${o.name}`, ...o.values].filter(Boolean).join(' ')).join(' ')}`;
      return this.fail(b, rule.ref, `cannot evaluate ${what} for this packet`);
    }
    if (r === true) return this.xtRule(rule, b, table, i + 1);
    // statistic: the rule matches with chance p
    const out: Res[] = [];
    if (r.p > 0) out.push(...this.xtRule(rule, fork(b, r.p), table, i + 1));
    if (r.p < 1) out.push({ b: fork(b, 1 - r.p), r: { k: 'nomatch' } });
    return out;
  }

  private portIn(spec: string, port: number | undefined): boolean | undefined {
    if (port === undefined) return undefined;
    return spec.split(',').some((p) => {
      const [lo, hi] = p.split(':');
      return hi !== undefined ? port >= Number(lo || 0) && port <= Number(hi || 65535) : port === Number(norm(lo));
    });
  }

  private addrIn(spec: string, ip: string): boolean {
    const c = tryParseCidr(spec.includes('/') ? spec : `${spec}/${spec.includes(':') ? 128 : 32}`);
    const a = tryParseIP(ip);
    if (!c || !a) return false;
    if (!/^\d+$/.test(spec.split('/')[1] ?? '32')) return false;
    return c.family === a.family && contains(c, a);
  }

  /** One clause: true, false, undefined (cannot tell), or a chance. */
  private xtClause(c: XtClause, b: Branch, rule: RuleRef): boolean | undefined | { p: number } {
    const pkt = b.pkt;
    const neg = (r: boolean | undefined, n: boolean) => (r === undefined ? undefined : n ? !r : r);
    const ifMatch = (pattern: string, dev: string | undefined, absent: boolean): boolean | undefined => {
      if (absent) return false;
      if (dev === undefined) return undefined;
      return pattern.endsWith('+') ? dev.startsWith(pattern.slice(0, -1)) : dev === pattern;
    };
    if (c.kind === 'flag') {
      const v = c.value ?? '';
      switch (c.name) {
        case '-s':
          return neg(this.addrIn(v, pkt.src), c.neg);
        case '-d':
          return neg(this.addrIn(v, pkt.dst), c.neg);
        case '-p':
          return neg(v === 'all' || v === '0' || norm(v) === norm(pkt.proto === 'icmp' && pkt.family === 6 ? 'ipv6-icmp' : pkt.proto), c.neg);
        case '-i':
          return neg(ifMatch(v, this.ctx.iif, this.ctx.hook === 'output' || this.ctx.hook === 'postrouting'), c.neg);
        case '-o':
          return neg(ifMatch(v, this.ctx.oif, this.ctx.hook === 'prerouting' || this.ctx.hook === 'input'), c.neg);
        case '-f':
          return c.neg; // the traced packet is not a fragment
        default:
          return undefined;
      }
    }
    const opt = (n: string) => c.opts.find((o) => o.name === n);
    const all = (checks: (boolean | undefined)[]) => (checks.includes(false) ? false : checks.includes(undefined) ? undefined : true);
    switch (c.name) {
      case 'comment':
      case 'limit':
      case 'hashlimit':
        return true;
      case 'tcp':
      case 'udp':
      case 'sctp': {
        if (pkt.proto !== c.name) return false;
        const checks: (boolean | undefined)[] = [];
        for (const o of c.opts) {
          if (o.name === 'dport' || o.name === 'destination-port') checks.push(neg(this.portIn(o.values[0], pkt.dport), o.neg));
          else if (o.name === 'sport' || o.name === 'source-port') checks.push(neg(this.portIn(o.values[0], pkt.sport), o.neg));
          else if (o.name === 'syn') checks.push(!o.neg);
          else if (o.name === 'tcp-flags') {
            const [mask, comp] = o.values.map((x) => (x === 'ALL' ? ['FIN', 'SYN', 'RST', 'PSH', 'ACK', 'URG'] : x === 'NONE' ? [] : x.split(',')));
            const set: string[] = (mask ?? []).filter((f) => f === 'SYN');
            checks.push(neg(set.length === (comp ?? []).length && (comp ?? []).every((f) => set.includes(f)), o.neg));
          } else checks.push(undefined);
        }
        return all(checks);
      }
      case 'multiport': {
        const checks: (boolean | undefined)[] = [];
        for (const o of c.opts) {
          if (o.name === 'dports' || o.name === 'destination-ports') checks.push(neg(this.portIn(o.values[0], pkt.dport), o.neg));
          else if (o.name === 'sports' || o.name === 'source-ports') checks.push(neg(this.portIn(o.values[0], pkt.sport), o.neg));
          else if (o.name === 'ports') checks.push(neg(this.portIn(o.values[0], pkt.dport) || this.portIn(o.values[0], pkt.sport), o.neg));
          else checks.push(undefined);
        }
        return all(checks);
      }
      case 'icmp':
      case 'icmp6': {
        if (pkt.proto !== 'icmp') return false;
        const t = opt('icmp-type') ?? opt('icmpv6-type');
        if (!t) return true;
        return neg(['echo-request', '8', '8/0', '128', '128/0'].includes(t.values[0]), t.neg);
      }
      case 'addrtype': {
        const checks: (boolean | undefined)[] = [];
        for (const o of c.opts) {
          const ip = o.name === 'dst-type' ? pkt.dst : o.name === 'src-type' ? pkt.src : undefined;
          if (ip === undefined) {
            checks.push(undefined);
            continue;
          }
          const local = this.ctx.local.has(canonicalIP(ip) ?? ip);
          const types = o.values[0].split(',');
          const r = types.some((t) => (t === 'LOCAL' ? local : t === 'UNICAST' ? !/^(22[4-9]|23\d)\./.test(ip) : undefined));
          checks.push(neg(types.every((t) => t === 'LOCAL' || t === 'UNICAST') ? r : undefined, o.neg));
        }
        return all(checks);
      }
      case 'conntrack':
      case 'state': {
        const checks: (boolean | undefined)[] = [];
        for (const o of c.opts) {
          if (o.name === 'ctstate' || o.name === 'state') {
            const mine = b.c.untracked ? ['UNTRACKED'] : ['NEW', ...(b.c.dnat ? ['DNAT'] : []), ...(b.c.snat ? ['SNAT'] : [])];
            checks.push(neg(o.values[0].split(',').some((s) => mine.includes(s)), o.neg));
          } else if (o.name === 'ctstatus') checks.push(neg(o.values[0].split(',').includes('NONE'), o.neg));
          else if (o.name === 'ctdir') checks.push(neg(o.values[0] === 'ORIGINAL', o.neg));
          else if (o.name === 'ctorigdst') checks.push(neg(this.addrIn(o.values[0], b.c.dnat?.dst ?? pkt.dst), o.neg));
          else if (o.name === 'ctorigsrc') checks.push(neg(this.addrIn(o.values[0], b.c.snat?.src ?? pkt.src), o.neg));
          else if (o.name === 'ctorigdstport') checks.push(neg(this.portIn(o.values[0], b.c.dnat?.dport ?? pkt.dport), o.neg));
          else if (o.name === 'ctproto') checks.push(neg(norm(o.values[0]) === norm(pkt.proto), o.neg));
          else checks.push(undefined);
        }
        return all(checks);
      }
      case 'mark': {
        const o = opt('mark');
        if (!o) return undefined;
        const [value, mask] = o.values[0].split('/').map((x) => Number(x));
        return neg(((b.c.mark & (mask ?? 0xffffffff)) >>> 0) === value, o.neg);
      }
      case 'statistic': {
        const mode = opt('mode')?.values[0];
        if (mode === 'random') {
          const p = Number(opt('probability')?.values[0]);
          if (!Number.isFinite(p)) return undefined;
          return { p: opt('probability')!.neg ? 1 - p : p };
        }
        if (mode === 'nth') {
          const every = Number(opt('every')?.values[0]);
          return every >= 1 ? { p: 1 / every } : undefined;
        }
        return undefined;
      }
      case 'recent': {
        const name = opt('name')?.values[0] ?? 'DEFAULT';
        const check = opt('rcheck') ?? opt('update');
        if (check) {
          const list = this.ctx.recent.get(name);
          const ip = opt('rdest') ? pkt.dst : pkt.src;
          if (list === undefined) return undefined;
          const on = list.some((x) => canonicalIP(x) === canonicalIP(ip));
          const secs = opt('seconds')?.values[0];
          b.recent.push({ name, ...(secs ? { seconds: Number(secs) } : {}), on });
          if (!on) return check.neg;
          // on the list: whether it was seen within --seconds this trace does not tell
          return opt('seconds') ? undefined : !check.neg;
        }
        if (opt('set')) b.pins.push({ set: `recent ${name}` });
        return true;
      }
      case 'iprange': {
        const checks: (boolean | undefined)[] = [];
        for (const o of c.opts) {
          const ip = o.name === 'src-range' ? pkt.src : o.name === 'dst-range' ? pkt.dst : undefined;
          const [lo, hi] = o.values[0].split('-');
          checks.push(ip === undefined ? undefined : neg(inRange(lo, hi, ip), o.neg));
        }
        return all(checks);
      }
      case 'pkttype': {
        const o = opt('pkt-type');
        return o ? neg(o.values[0] === 'unicast' || o.values[0] === 'host', o.neg) : undefined;
      }
      default:
        void rule;
        return undefined;
    }
  }

  private xtTarget(x: XtRule, b: Branch, rule: RuleRef, table: NfTable): Res[] {
    if (x.goto) return [{ b, r: { k: 'goto', chain: x.goto } }];
    const t = x.target;
    if (!t) return [{ b, r: { k: 'next' } }];
    const opt = (n: string) => t.opts.find((o) => o.name === n)?.values[0];
    const hostPort = (s: string | undefined): { ip?: string; port?: number } => {
      if (!s) return {};
      const m = /^\[([^\]]+)\](?::(\d+))?/.exec(s) ?? /^([^:-]+)(?:-[^:]+)?(?::(\d+))?/.exec(s);
      return m ? { ip: m[1], ...(m[2] ? { port: Number(m[2]) } : {}) } : {};
    };
    switch (t.name) {
      case 'ACCEPT':
        return [{ b, r: { k: 'verdict', v: 'accept' } }];
      case 'DROP':
        return [{ b, r: { k: 'verdict', v: 'drop' } }];
      case 'RETURN':
        return [{ b, r: { k: 'verdict', v: 'return' } }];
      case 'REJECT': {
        const w = opt('reject-with') ?? 'icmp-port-unreachable';
        return [{ b, r: { k: 'verdict', v: 'reject', reject: w === 'tcp-reset' ? 'a TCP reset' : `ICMP ${w.replace(/^icmp6?-/, '')}` } }];
      }
      case 'DNAT':
        return this.nat('dnat', { addr: undefined }, b, rule, table).map((r) => {
          const to = hostPort(opt('to-destination'));
          if (r.r.k === 'verdict' && r.b.c.dnat?.rule === rule) {
            if (to.ip) r.b.pkt.dst = to.ip;
            if (to.port !== undefined) r.b.pkt.dport = to.port;
          }
          return r;
        });
      case 'SNAT':
        return this.nat('snat', { addr: undefined }, b, rule, table).map((r) => {
          const to = hostPort(opt('to-source'));
          if (r.r.k === 'verdict' && r.b.c.snat?.rule === rule && to.ip) r.b.pkt.src = to.ip;
          return r;
        });
      case 'MASQUERADE':
        return this.nat('masquerade', {}, b, rule, table);
      case 'REDIRECT': {
        const port = opt('to-ports');
        return this.nat('redirect', port ? { port: Number(port.split('-')[0]) } : {}, b, rule, table);
      }
      case 'MARK': {
        let mark = b.c.mark;
        const num = (s: string | undefined) => (s === undefined ? undefined : Number(s));
        const [xv, xm] = (opt('set-xmark') ?? '').split('/').map((s) => num(s));
        const [sv, sm] = (opt('set-mark') ?? '').split('/').map((s) => num(s));
        if (xv !== undefined && !Number.isNaN(xv)) mark = ((mark & ~(xm ?? 0xffffffff)) ^ xv) >>> 0;
        else if (sv !== undefined && !Number.isNaN(sv)) mark = ((mark & ~(sm ?? 0xffffffff)) | sv) >>> 0;
        else if (opt('or-mark') !== undefined) mark = (mark | Number(opt('or-mark'))) >>> 0;
        else if (opt('and-mark') !== undefined) mark = (mark & Number(opt('and-mark'))) >>> 0;
        else if (opt('xor-mark') !== undefined) mark = (mark ^ Number(opt('xor-mark'))) >>> 0;
        else return this.fail(b, rule, `MARK ${t.opts.map((o) => `--${o.name} ${o.values.join(' ')}`).join(' ')} not understood`);
        markChange(b, mark, rule);
        return [{ b, r: { k: 'next' } }];
      }
      case 'NOTRACK':
        b.c.untracked = rule;
        return [{ b, r: { k: 'next' } }];
      case 'CT':
        if (t.opts.some((o) => o.name === 'notrack')) b.c.untracked = rule;
        return [{ b, r: { k: 'next' } }];
      case 'LOG':
      case 'NFLOG':
      case 'TRACE':
      case 'AUDIT':
      case 'CONNMARK':
      case 'CHECKSUM':
      case 'TCPMSS':
        return [{ b, r: { k: 'next' } }];
      default:
        if (table.chains.has(t.name)) return [{ b, r: { k: 'jump', chain: t.name } }];
        return this.fail(b, rule, `target ${t.name} (an extension this trace does not follow)`);
    }
  }

  // ---- chains ----
  private evalRule(rule: NfRule, b: Branch, table: NfTable): Res[] {
    if (rule.nft) return this.nftStmts(rule.nft, 0, b, rule.ref, table);
    return this.xtRule(rule, b, table);
  }

  runChain(ch: NfChain, b: Branch, depth = 0): Outcome[] {
    if (depth > 64) throw new Error(`chain ${ch.name}: jumps nested more than 64 deep`);
    return this.runRules(ch, 0, b, depth);
  }

  private runRules(ch: NfChain, i: number, b: Branch, depth: number): Outcome[] {
    if (++this.branches > MAX_BRANCHES * 16) throw new Error(`more than ${MAX_BRANCHES * 16} rule evaluations: the ruleset forks too much to follow every branch`);
    if (i >= ch.rules.length) return [{ b, v: 'return' }];
    const rule = ch.rules[i];
    const out: Outcome[] = [];
    for (const res of this.evalRule(rule, b, ch.table)) {
      const r = res.r;
      const hit = (to?: string) => {
        const t = res.b.trail;
        const last = t[t.length - 1];
        if (last && last.rule === rule.ref) {
          if (to && !last.to) t[t.length - 1] = { ...last, to };
          return;
        }
        t.push({ rule: rule.ref, ...(to ? { to } : {}) });
      };
      if (r.k === 'nomatch' || r.k === 'next' || (r.k === 'verdict' && r.v === 'continue')) {
        if (r.k === 'next') hit();
        out.push(...this.runRules(ch, i + 1, res.b, depth));
      } else if (r.k === 'verdict') {
        hit();
        out.push({ b: res.b, v: r.v as Outcome['v'], by: rule.ref, ...(r.reject ? { reject: r.reject } : {}) });
      } else {
        const target = ch.table.chains.get(r.chain);
        hit(r.chain);
        if (!target) {
          res.b.maybe.push({ rule: rule.ref, why: `${r.k} to chain ${r.chain}, which is not in the ruleset` });
          out.push(...this.runRules(ch, i + 1, res.b, depth));
          continue;
        }
        for (const o of this.runChain(target, res.b, depth + 1)) {
          if (o.v === 'return' && r.k === 'jump') out.push(...this.runRules(ch, i + 1, o.b, depth));
          else out.push(o);
        }
      }
    }
    if (out.length > MAX_BRANCHES) throw new Error(`more than ${MAX_BRANCHES} ways through chain ${ch.name}`);
    return out;
  }

  /** Every base chain of the hook for this packet's family, in priority order. */
  hook(b0: Branch): Outcome[] {
    const fam = b0.pkt.family === 4 ? 'ip' : 'ip6';
    const chains = this.ctx.tables
      .filter((t) => t.family === fam || t.family === 'inet')
      .flatMap((t) => [...t.chains.values()])
      .filter((c) => c.base?.hook === this.ctx.hook)
      .map((c, i) => ({ c, i }))
      .sort((a, b) => a.c.base!.prio - b.c.base!.prio || a.i - b.i)
      .map((x) => x.c);
    let alive: Branch[] = [b0];
    const done: Outcome[] = [];
    for (const ch of chains) {
      const next: Branch[] = [];
      for (const b of alive) {
        // nat chains see only the first packet of a tracked connection, and only until one binds it
        if (ch.base!.type === 'nat' && (b.c.untracked || b.bound)) {
          next.push(b);
          continue;
        }
        for (const o of this.runChain(ch, b)) {
          if (o.v === 'accept' || (o.v === 'return' && ch.base!.policy === 'accept')) {
            if (o.v === 'accept' && ch.base!.policy === 'drop' && o.by) o.b.accepted.push(o.by);
            next.push(o.b);
          } else if (o.v === 'return') done.push({ b: o.b, v: 'drop', by: { ...policyRef(ch) }, base: ch });
          else done.push({ ...o, base: ch });
        }
      }
      alive = next;
    }
    return [...alive.map((b): Outcome => ({ b, v: 'accept' })), ...done];
  }
}

function policyRef(ch: NfChain): RuleRef {
  const t = ch.table;
  return { engine: t.engine, family: t.family, table: t.name, chain: ch.name, pos: 0, text: `policy ${ch.base!.policy}`, ...(t.backend ? { backend: t.backend } : {}) };
}

export interface HookInput {
  hook: NfHook;
  pkt: NfPacket;
  carry?: NfCarry;
  iif?: string;
  oif?: string;
  local: string[];
  masqSrc?: string;
  recent?: Map<string, string[] | undefined>;
}

/** Runs a hook over tables (pure: the unit tests' entry point). */
export function evaluateHook(tables: NfTable[], input: HookInput): Outcome[] {
  const ctx: Ctx = {
    hook: input.hook,
    iif: input.iif,
    oif: input.oif,
    local: new Set(input.local.map((a) => canonicalIP(a) ?? a)),
    masqSrc: input.masqSrc,
    tables,
    recent: input.recent ?? new Map(),
  };
  const b: Branch = { p: 1, pkt: { ...input.pkt }, c: { mark: 0, ...input.carry }, trail: [], maybe: [], bound: false, accepted: [], pins: [], recent: [] };
  return new Evaluator(ctx).hook(b);
}

/** The xt_recent lists a ruleset checks (iptables' ClientIP affinity): read before the evaluation. */
export function recentLists(tables: NfTable[]): string[] {
  const out = new Set<string>();
  for (const t of tables) for (const c of t.chains.values()) for (const r of c.rules) for (const cl of r.xt?.clauses ?? []) {
    if (cl.name === 'recent' && cl.opts.some((o) => o.name === 'rcheck' || o.name === 'update')) out.add(cl.opts.find((o) => o.name === 'name')?.values[0] ?? 'DEFAULT');
  }
  return [...out];
}

// ---------------------------------------------------------------------------------------------
// explaining an outcome

/** Facts that name what a frontend is. */
export interface Naming {
  ns: string;
  services?: { name: string; ip: string; port: number; proto: string; nodePort?: number }[];
}

const PODNET_TABLES = new Set(['podnet-proxy', 'podnet', 'podnet-cluster', 'podnet-hostport']);
/** podnet's own: its nftables tables and the PODNET- chains it writes into the xtables tables */
export function isPodnet(r: RuleRef): boolean {
  return r.engine === 'nft' ? PODNET_TABLES.has(r.table) : r.chain.startsWith('PODNET-');
}

const tableName = (r: RuleRef) => (r.engine === 'nft' ? `${r.family === 'ip' ? 'ip' : r.family} ${r.table}` : `${r.family === 'ip' ? 'iptables' : 'ip6tables'}${r.backend === 'legacy' ? '-legacy' : ''} ${r.table}`);

export function where(r: RuleRef): string {
  const t = r.engine === 'nft' ? `table ${tableName(r)} chain ${r.chain}` : `${tableName(r)} table chain ${r.chain}`;
  if (r.pos === 0) return `${t} (${r.text})`;
  return r.engine === 'nft' ? `${t} rule handle ${r.handle}` : `${t} rule ${r.pos}`;
}

export function chainCommand(ns: string, r: RuleRef): string {
  if (r.engine === 'nft') return `ip netns exec ${ns} nft -a list chain ${r.family} ${r.table} ${r.chain}`;
  const tool = `${r.family === 'ip' ? 'iptables' : 'ip6tables'}-${r.backend ?? 'nft'}`;
  return `ip netns exec ${ns} ${tool} -t ${r.table} -L ${r.chain} -n -v --line-numbers`;
}

const hostPort = (ip: string, port?: number) => (port === undefined ? ip : ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`);
const pct = (p: number) => `${Math.round(p * 1000) / 10}%`;

function frontendName(n: Naming, ip: string, port: number | undefined, proto: string, local: Set<string>): string {
  const s = n.services?.find((x) => canonicalIP(x.ip) === canonicalIP(ip) && x.port === port && x.proto === proto);
  if (s) return `service ${s.name} (${hostPort(ip, port)}/${proto})`;
  const np = n.services?.find((x) => x.nodePort === port && x.proto === proto);
  if (np && local.has(canonicalIP(ip) ?? ip)) return `NodePort ${port} of service ${np.name} (${hostPort(ip, port)}/${proto})`;
  return `${hostPort(ip, port)}/${proto}`;
}

/** Why podnet's proxy masquerades: from the rule that set the mark 0x4000 and the rule that led to it. */
function masqReason(c: NfCarry, src: string): string | undefined {
  const by = c.markBy;
  if (!by || !isPodnet(by)) return by ? `mark set by ${where(by)}` : undefined;
  const via = c.markVia;
  const texts = `${by.text} ${via?.text ?? ''}`;
  if (/hairpin/.test(texts)) return 'hairpin: the endpoint is the client itself, so it must see the reply come from the service';
  if (/cluster-nets|! -s /.test(texts)) return `the source ${src} is outside the cluster networks`;
  if (/^lb-\d+-all/.test(by.chain) || /external traffic/.test(texts) || (via && /^PODNET-EXT-/.test(via.chain)) || /^PODNET-EXT-/.test(by.chain)) return 'traffic to a NodePort or external IP with externalTrafficPolicy Cluster is always masqueraded (its endpoint may be on another node)';
  return `mark 0x4000 set by ${where(by)}`;
}

interface Group {
  key: string;
  p: number;
  first: Outcome;
}

function groupOutcomes(outs: Outcome[]): Group[] {
  const m = new Map<string, Group>();
  for (const o of outs) {
    const b = o.b;
    const key = `${o.v} ${o.by ? where(o.by) : ''} ${b.pkt.src} ${b.pkt.sport ?? ''} ${b.pkt.dst} ${b.pkt.dport ?? ''}`;
    const g = m.get(key);
    if (g) g.p += b.p;
    else m.set(key, { key, p: b.p, first: o });
  }
  return [...m.values()];
}

export interface HookPass {
  steps: Step[];
  /** the last step is the broken one: the packet does not go on */
  broken: boolean;
  pkt: NfPacket;
  carry: NfCarry;
}

/** The steps a hook's outcomes make, and the branch the walk goes on with. */
export function explainHook(outs: Outcome[], input: HookInput, naming: Naming, conntrack?: ConntrackEntry[]): HookPass {
  const steps: Step[] = [];
  const ns = naming.ns;
  const local = new Set(input.local.map((a) => canonicalIP(a) ?? a));
  const groups = groupOutcomes(outs);
  const accepts = groups.filter((g) => g.first.v === 'accept');
  const drops = groups.filter((g) => g.first.v !== 'accept');
  const orig = input.pkt;
  const fe = () => frontendName(naming, orig.dst, orig.dport, orig.proto, local);
  const nfStep = (ok: boolean, text: string, by?: RuleRef, object?: Record<string, unknown>): Step => ({ kind: 'netfilter', text, ok, ...(object ? { object } : {}), ...(by ? { command: chainCommand(ns, by) } : {}) });

  // rules on the way that could not be evaluated and would have changed something
  const chosenFor = (g: Group) => g.first.b;
  const mentionMaybe = (b: Branch) => {
    for (const m of b.maybe) {
      if (steps.some((s) => s.object?.rule === where(m.rule))) continue;
      if (!/\b(drop|reject|accept|jump|goto|vmap|dnat|snat|masquerade|redirect)\b/.test(m.rule.text) && !/ -[jg] \S/.test(m.rule.text)) continue;
      steps.push(nfStep(true, `${input.hook}: ${where(m.rule)} may match (${m.why}): ${m.rule.text}; taken as not matching`, m.rule, { rule: where(m.rule), maybe: true }));
    }
  };

  if (accepts.length === 0) {
    // every way ends in a drop or reject: the most likely one is the broken step
    const g = drops.sort((a, b) => b.p - a.p)[0];
    const o = g.first;
    mentionMaybe(o.b);
    steps.push(explainDrop(o, input, naming, fe(), local));
    return { steps, broken: true, pkt: o.b.pkt, carry: o.b.c };
  }

  // which way the walk follows: the flow's own conntrack entry, else the first one in rule order
  let chosen = accepts[0];
  const exact = conntrack?.find((e) => e.orig.sport === orig.sport);
  if (exact) {
    const viaCt = accepts.find((g) => canonicalIP(g.first.b.pkt.dst) === canonicalIP(exact.reply.src) && (g.first.b.pkt.dport === undefined || g.first.b.pkt.dport === exact.reply.sport));
    if (viaCt) chosen = viaCt;
  }
  const b = chosenFor(chosen);
  mentionMaybe(b);
  for (const by of b.accepted) steps.push(nfStep(true, `${input.hook}: accepted by ${where(by)}: ${by.text} (the chain's policy is drop)`, by, { rule: where(by) }));

  const dropP = drops.reduce((a, g) => a + g.p, 0);
  const dropNote = dropP > 0 ? `; with a chance of ${pct(dropP)} it is dropped instead (${drops.map((g) => `${g.first.v} by ${g.first.by ? where(g.first.by) : 'a policy'}`).join('; ')})` : '';

  const dnat = b.c.dnat && !input.carry?.dnat ? b.c.dnat : undefined;
  if (dnat) steps.push(explainDnat(accepts, chosen, input, naming, fe(), dropNote, local));
  const snat = b.c.snat && !input.carry?.snat ? b.c.snat : undefined;
  if (snat) {
    const why =
      snat.rule.chain === 'nat-postrouting' || snat.rule.chain === 'PODNET-POSTROUTING'
        ? masqReason(b.c, snat.src)
        : snat.rule.engine === 'nft' && snat.rule.table === 'podnet-cluster'
          ? "the agent's masquerade: from the cluster network to outside it"
          : snat.rule.engine === 'nft' && snat.rule.table === 'podnet'
            ? "the CNI's ipMasq: a pod's traffic to outside the cluster networks"
            : undefined;
    const kind = /masquerade|MASQUERADE/.test(snat.rule.text) ? 'masqueraded' : 'SNAT-ed';
    steps.push(
      nfStep(true, `${input.hook}: ${kind}: source ${snat.src} -> ${b.pkt.src}${b.pkt.sport !== orig.sport ? `:${b.pkt.sport}` : ''} by ${where(snat.rule)}${why ? ` (${why})` : ''}${!dnat ? dropNote : ''}`, snat.rule, {
        rule: where(snat.rule),
        from: snat.src,
        to: b.pkt.src,
        ...(why ? { why } : {}),
        ...(input.oif ? { oif: input.oif } : {}),
      }),
    );
  }
  if (!dnat && !snat && dropNote) steps.push(nfStep(true, `${input.hook}: accepted${dropNote}`));
  // podnet's own notrack (the tunnel's UDP packets) is by design and said nowhere; another table's is worth a line
  if (b.c.untracked && !input.carry?.untracked && !isPodnet(b.c.untracked)) steps.push(nfStep(true, `${input.hook}: not tracked by conntrack (${where(b.c.untracked)}: ${b.c.untracked.text}): no NAT applies to it`, b.c.untracked, { rule: where(b.c.untracked) }));
  if (conntrack?.length) steps.push(conntrackStep(conntrack, orig, ns, exact));
  return { steps, broken: false, pkt: b.pkt, carry: b.c };
}

function conntrackStep(entries: ConntrackEntry[], q: NfPacket, ns: string, exact: ConntrackEntry | undefined): Step {
  const show = (e: ConntrackEntry) => {
    const nat = canonicalIP(e.reply.src) !== canonicalIP(e.orig.dst) || e.reply.sport !== e.orig.dport ? `, replies from ${hostPort(e.reply.src, e.reply.sport)} (DNAT-ed)` : '';
    const snat = canonicalIP(e.reply.dst) !== canonicalIP(e.orig.src) ? `, replies to ${e.reply.dst} (SNAT-ed)` : '';
    return `${e.proto}${e.state ? ` ${e.state}` : ''} ${hostPort(e.orig.src, e.orig.sport)} -> ${hostPort(e.orig.dst, e.orig.dport)}${nat}${snat}${e.flags.length ? ` [${e.flags.join(',')}]` : ''}`;
  };
  const cmd = `ip netns exec ${ns} conntrack -L -p ${q.proto} --orig-src ${q.src} --orig-dst ${q.dst}${q.dport !== undefined && q.proto !== 'icmp' ? ` --dport ${q.dport}` : ''}`;
  const text = exact
    ? `conntrack: this flow has an entry: ${show(exact)} (its packets follow the entry, not the nat rules)`
    : `conntrack: no entry for source port ${q.sport ?? '-'}, ${entries.length} of this client to ${hostPort(q.dst, q.dport)} with other source ports, e.g. ${show(entries[0])}`;
  return { kind: 'netfilter', text, ok: true, object: { conntrack: exact ? [exact] : entries.slice(0, 10) }, command: cmd };
}

function explainDrop(o: Outcome, input: HookInput, naming: Naming, fe: string, local: Set<string>): Step {
  const by = o.by!;
  const how = o.v === 'reject' ? `rejected with ${o.reject ?? 'ICMP port unreachable'}` : 'dropped';
  const object: Record<string, unknown> = { rule: where(by), table: tableName(by), chain: by.chain, verdict: o.v, ...(by.handle !== undefined ? { handle: by.handle } : {}), ...(by.pos ? { position: by.pos } : {}), text: by.text, hook: input.hook };
  if (o.base) object.base = { chain: o.base.name, hook: o.base.base!.hook, priority: o.base.base!.prio, policy: o.base.base!.policy };
  if (o.reject) object.reject = o.reject;
  const cmd = chainCommand(naming.ns, by);
  // podnet's proxy: a frontend without endpoints (nft: the noep maps; iptables: filter PODNET-SERVICES)
  const trail = o.b.trail.map((h) => h.rule);
  const noep = [by, ...trail].some((r) => isPodnet(r) && (r.chain === 'no-endpoints' || r.chain === 'reject-no-endpoints' || /has no (local )?endpoints/.test(r.comment ?? '')));
  if (noep) {
    const localOnly = o.v === 'drop' || /no local endpoints/.test(by.comment ?? '');
    const text = localOnly
      ? `${fe} has no ready endpoint on this node and its traffic policy is Local: dropped (${where(by)})`
      : `${fe} has no ready endpoints: ${how} (${where(by)})`;
    return { kind: 'netfilter', text, ok: false, object: { ...object, service: fe }, command: cmd };
  }
  const whose = isPodnet(by) ? "podnet's" : 'foreign';
  const base = o.base ? `${o.base.name !== by.chain ? `reached from base chain ${o.base.name}, ` : ''}hook ${o.base.base!.hook} priority ${o.base.base!.prio}` : '';
  const text = by.pos === 0
    ? `${input.hook}: ${how} by the policy ${o.base?.base?.policy ?? 'drop'} of ${whose} table ${tableName(by)} chain ${by.chain}${base ? ` (${base})` : ''}`
    : `${input.hook}: ${how} by ${whose} ${where(by)}: ${by.text}${base ? ` (${base})` : ''}`;
  return { kind: 'netfilter', text, ok: false, object, command: cmd };
}

function explainDnat(accepts: Group[], chosen: Group, input: HookInput, naming: Naming, fe: string, dropNote: string, local: Set<string>): Step {
  void local;
  const b = chosen.first.b;
  const rule = b.c.dnat!.rule;
  const total = accepts.reduce((a, g) => a + g.p, 0);
  const eps = new Map<string, { ip: string; port?: number; chance: number }>();
  for (const g of accepts) {
    const k = hostPort(g.first.b.pkt.dst, g.first.b.pkt.dport);
    const e = eps.get(k) ?? { ip: g.first.b.pkt.dst, ...(g.first.b.pkt.dport !== undefined ? { port: g.first.b.pkt.dport } : {}), chance: 0 };
    e.chance += g.p;
    eps.set(k, e);
  }
  void total;
  const list = [...eps.values()].map((e) => ({ ...e, chance: Math.round(e.chance * 10000) / 10000 }));
  const chosenEp = hostPort(b.pkt.dst, b.pkt.dport);
  const object: Record<string, unknown> = {
    rule: where(rule),
    original: { dst: input.pkt.dst, ...(input.pkt.dport !== undefined ? { dport: input.pkt.dport } : {}) },
    endpoints: list,
    chosen: { dst: b.pkt.dst, ...(b.pkt.dport !== undefined ? { dport: b.pkt.dport } : {}) },
    path: b.trail.map((h) => where(h.rule)),
  };
  const parts: string[] = [];
  // podnet's nftables proxy: the lb chain the frontend went to says the endpoint count, masquerade policy and affinity
  const lbHit = b.trail.find((h) => h.rule.engine === 'nft' && h.rule.table === 'podnet-proxy' && h.to && /^lb-\d+-(int|all|none)(-aff\d+)?$/.test(h.to));
  const podnet = isPodnet(rule);
  if (lbHit) {
    const [, n, masq, aff] = /^lb-(\d+)-(int|all|none)(?:-aff(\d+))?$/.exec(lbHit.to!)!;
    object.lb = lbHit.to;
    object.masquerade = masq === 'int' ? 'when the source is outside the cluster networks' : masq === 'all' ? 'always' : 'never';
    parts.push(`${lbHit.rule.chain} ${lbHit.rule.text.includes('@svc') ? `@svc${input.pkt.family}` : ''} -> ${lbHit.to} (${n} endpoint${n === '1' ? '' : 's'})`.replace(/\s+/g, ' '));
    if (aff) {
      const pinned = b.trail.find((h) => h.rule.chain === lbHit.to && /@aff\d-\d+/.test(h.rule.text) && h.to?.startsWith('pin-'));
      const set = pinned ? /@(aff\d-\d+)/.exec(pinned.rule.text)![1] : undefined;
      const expires = pinned && isObj(pinned.elem) && isObj(pinned.elem.elem) && typeof pinned.elem.elem.expires === 'number' ? pinned.elem.elem.expires : undefined;
      object.affinity = { timeoutSeconds: Number(aff), ...(set ? { pinnedBy: set, ...(expires !== undefined ? { expiresInSeconds: expires } : {}) } : {}) };
      parts.push(set ? `ClientIP affinity ${aff} s: this client is pinned by an entry in @${set}${expires !== undefined ? ` (expires in ${expires} s)` : ''}` : `ClientIP affinity ${aff} s: no entry for this client yet, so one is picked at random and recorded in @aff${input.pkt.family}-<slot> for ${aff} s`);
    }
  } else if (podnet && rule.engine === 'xt') {
    const svc = b.trail.find((h) => /^PODNET-(SVC|SVL)-/.test(h.to ?? ''));
    if (svc) parts.push(`PODNET-SERVICES -> ${svc.to}${/^PODNET-SVL-/.test(svc.to!) ? ' (local endpoints only)' : ''}`);
    // ClientIP affinity: a recent list per endpoint, checked before the random pick
    const checked = b.recent.length ? b.recent : b.maybe.filter((m) => /--rcheck/.test(m.rule.text)).map((m) => ({ name: /--name (\S+)/.exec(m.rule.text)?.[1] ?? '', seconds: Number(/--seconds (\d+)/.exec(m.rule.text)?.[1]), on: true }));
    if (checked.length) {
      const secs = checked[0].seconds;
      const on = checked.filter((r) => r.on).map((r) => r.name);
      object.affinity = { timeoutSeconds: secs, lists: checked.map((r) => r.name), ...(on.length ? { clientOn: on } : {}) };
      parts.push(`ClientIP affinity ${secs} s (recent lists per endpoint): ${on.length ? `this client is on ${on.join(', ')}, so it goes to that endpoint if it was seen within ${secs} s` : 'this client is on none of them yet, so one is picked at random and recorded'}`);
    }
  }
  if (b.c.mark & 0x4000 && podnet) {
    const why = masqReason(b.c, input.pkt.src);
    object.masqueraded = why ?? true;
    parts.push(`masqueraded on the way out (${why})`);
  } else if (podnet) parts.push('the source address is kept');
  const epText = list.map((e) => `${hostPort(e.ip, e.port)} ${pct(e.chance)}`).join(', ');
  const text = `${input.hook}: ${fe}: DNAT to ${chosenEp}${list.length > 1 ? ` (followed here; the ${list.length} endpoints and their chances: ${epText})` : ''} by ${where(rule)}${parts.length ? `; ${parts.join('; ')}` : ''}${dropNote}`;
  return { kind: 'netfilter', text, ok: true, object, command: chainCommand(naming.ns, rule) };
}

// ---------------------------------------------------------------------------------------------
// the live side: read a namespace's tables through the view

const tablesMemo = new WeakMap<TraceView, Map<string, Promise<{ tables: NfTable[]; recent: Map<string, string[] | undefined> } | undefined>>>();

async function loadTables(view: TraceView, ns: string, family: 4 | 6): Promise<{ tables: NfTable[]; recent: Map<string, string[] | undefined> } | undefined> {
  if (!view.ruleset && !view.iptables) return undefined;
  let memo = tablesMemo.get(view);
  if (!memo) tablesMemo.set(view, (memo = new Map()));
  const key = `${ns} ${family}`;
  let p = memo.get(key);
  if (!p) {
    p = (async () => {
      const doc = view.ruleset ? await view.ruleset(ns) : undefined;
      const all = doc ? tablesFromNftJson(doc) : [];
      const xtNamed = !doc || all.some((t) => isXtablesName(t.family, t.name));
      const dumps = view.iptables ? await view.iptables(ns, family, xtNamed) : [];
      const xt = dumps.flatMap((d) => tablesFromIptablesSave(d.text, family, d.backend));
      // the xtables tables iptables-nft made are read from iptables-nft-save, which can say their xt matches
      const fromXtNft = new Set(xt.filter((t) => t.backend === 'nft').map((t) => `${t.family} ${t.name}`));
      const nft = doc ? tablesFromNftJson(doc, (f, n) => isXtablesName(f, n) && fromXtNft.has(`${f} ${n}`)) : [];
      const tables = [...nft, ...xt];
      const recent = new Map<string, string[] | undefined>();
      for (const name of recentLists(tables)) recent.set(name, view.xtRecent ? await view.xtRecent(ns, name) : undefined);
      return { tables, recent };
    })();
    memo.set(key, p);
  }
  return p;
}

/**
 * One hook in one namespace for the walk: the steps (none when no rule did anything worth saying),
 * whether the packet is dropped, and the packet and netfilter state it goes on with. Undefined
 * when the view reads no rulesets.
 */
export async function traceHook(view: TraceView, input: Omit<HookInput, 'local' | 'recent'> & { ns: string; prefsrc?: string }): Promise<HookPass | undefined> {
  const { ns } = input;
  const loaded = await loadTables(view, ns, input.pkt.family);
  if (!loaded) return undefined;
  const hasChains = loaded.tables.some((t) => [...t.chains.values()].some((c) => c.base?.hook === input.hook));
  if (!hasChains) return { steps: [], broken: false, pkt: input.pkt, carry: input.carry ?? { mark: 0 } };
  const addrs = await view.addresses(ns);
  const local = addrs.map((a) => a.address);
  let masqSrc = input.masqSrc;
  if (input.hook === 'postrouting' && !masqSrc) {
    const fam = input.pkt.family;
    masqSrc = input.prefsrc ?? addrs.find((a) => a.ifname === input.oif && a.family === fam && a.scope === 'global')?.address ?? addrs.find((a) => a.family === fam && a.scope === 'global')?.address;
  }
  const full: HookInput = { ...input, local, ...(masqSrc ? { masqSrc } : {}), recent: loaded.recent };
  let outs: Outcome[];
  try {
    outs = evaluateHook(loaded.tables, full);
  } catch (e) {
    return { steps: [{ kind: 'netfilter', text: `${input.hook}: the rules here could not be followed (${(e as Error).message}): netfilter is left out for this hook`, ok: true, command: `ip netns exec ${ns} nft list ruleset` }], broken: false, pkt: input.pkt, carry: input.carry ?? { mark: 0 } };
  }
  const facts = view.cluster?.();
  const naming: Naming = { ns, ...(facts?.services ? { services: facts.services } : {}) };
  // the flow's conntrack entries, where a NAT rule may have made one (before the nat chains decide)
  let ct: ConntrackEntry[] | undefined;
  const nat = loaded.tables.some((t) => [...t.chains.values()].some((c) => c.base?.type === 'nat'));
  if (nat && view.conntrack && (input.hook === 'prerouting' || input.hook === 'output') && !input.carry?.dnat) {
    ct = await view.conntrack(ns, { family: input.pkt.family, proto: input.pkt.proto, src: input.pkt.src, dst: input.pkt.dst, ...(input.pkt.dport !== undefined ? { dport: input.pkt.dport } : {}) });
  }
  return explainHook(outs, full, naming, ct);
}
