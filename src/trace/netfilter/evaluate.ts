// The evaluation of one hook: every base chain of the hook runs in priority order, as the kernel
// runs them, over a model of the packet as the first one of a new connection (ct state new):
// matches on addresses, ports, protocols, interfaces, marks, conntrack state and status, named and
// anonymous sets and maps (intervals, concatenations), verdict maps, jumps and gotos, `numgen` /
// `statistic` (every outcome is followed, each with its chance), NAT (dnat, snat, masquerade,
// redirect), mark changes and notrack. A nat chain runs only for a tracked flow that no earlier nat
// chain of the hook has bound, as in the kernel. What cannot be decided from the packet (a uid, a
// socket, a hash, an xt extension) is "may match": reported, and the rule is taken as not matching.
// Pure: tables and the hook's input in, every outcome out.
import { canonicalIP, contains, tryParseCidr, tryParseIP } from '../../util/ip.js';
import { fork, markChange, type Branch, type Outcome } from './branch.js';
import { isObj, type NfCarry, type NfChain, type NfHook, type NfPacket, type NfRule, type NfTable, type RuleRef, type XtClause, type XtRule } from './model.js';
import { exprText } from './rule-text.js';
import { flagList, inRange, isFlags, isSpecial, matches, NOMATCH, norm, UNKNOWN, type Got, type Val } from './values.js';

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
