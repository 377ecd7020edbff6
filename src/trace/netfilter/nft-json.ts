// `nft -j list ruleset` → the model: tables, base chains (hook, priority, policy), rules (their JSON
// statements kept for the evaluator, their text for the steps) and named sets and maps. The
// xtables-named tables iptables-nft made can be skipped, to be read from iptables-nft-save instead,
// which can say their xt matches (nft's JSON cannot).
import { isObj, type NfChain, type NfHook, type NfTable } from './model.js';
import { ruleText } from './rule-text.js';

const HOOKS: NfHook[] = ['prerouting', 'input', 'forward', 'output', 'postrouting'];
const XT_TABLES = ['raw', 'mangle', 'nat', 'filter', 'security'];

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
