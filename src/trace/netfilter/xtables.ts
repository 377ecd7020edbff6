// iptables-save (iptables-nft or iptables-legacy, one family) → the model: each table's built-in
// chains become base chains at the priority the kernel gives that table, so they run among nft's
// chains in the kernel's order, and every -A line becomes a rule of clauses (the built-in flags, the
// -m modules with their options) and a target.
import type { NfChain, NfHook, NfTable, XtClause, XtOpt, XtRule } from './model.js';

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
