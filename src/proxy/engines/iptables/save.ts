// Reading iptables-save output: what podnet has in the kernel. Pure.
import type { ProgrammedEndpoints } from '../../engine.js';
import type { Observed, ObservedTable } from './render.js';
import { BUILTIN_CHAINS, MARK_MASQ, MASQ_NONPOD, NODEPORTS, SERVICES, type Table, isPodnetChain } from './names.js';

/** Splits a rule spec like the shell would (double quotes, backslash escapes inside them). */
export function tokenize(spec: string): string[] {
  const out: string[] = [];
  let cur = '';
  let inTok = false;
  let quoted = false;
  for (let i = 0; i < spec.length; i++) {
    const c = spec[i];
    if (quoted) {
      if (c === '\\' && i + 1 < spec.length) cur += spec[++i];
      else if (c === '"') quoted = false;
      else cur += c;
    } else if (c === '"') {
      quoted = true;
      inTok = true;
    } else if (c === ' ' || c === '\t') {
      if (inTok) out.push(cur);
      cur = '';
      inTok = false;
    } else {
      cur += c;
      inTok = true;
    }
  }
  if (inTok) out.push(cur);
  return out;
}

/** The jump target of a rule spec (`-j X` or `-g X`), if any. */
export function targetOf(tokens: string[]): string | undefined {
  for (let i = tokens.length - 2; i >= 0; i--) if (tokens[i] === '-j' || tokens[i] === '-g' || tokens[i] === '--jump' || tokens[i] === '--goto') return tokens[i + 1];
  return undefined;
}

function optionValue(tokens: string[], ...names: string[]): string | undefined {
  for (let i = 0; i < tokens.length - 1; i++) if (names.includes(tokens[i])) return tokens[i + 1];
  return undefined;
}

const TABLES: readonly Table[] = ['nat', 'filter'];

/**
 * What podnet has in the nat and filter tables of one `iptables-save` (all tables) output: its
 * chains, and the rules of built-in chains that jump to one of them. Other tables and other
 * chains' rules are skipped without tokenizing (a save at 10,000 services has ~100,000 lines).
 */
export function observedFromSave(text: string): Observed {
  const obs: Observed = { nat: { chains: new Set(), jumps: [] }, filter: { chains: new Set(), jumps: [] } };
  let table: ObservedTable | undefined;
  let builtins: readonly string[] = [];
  for (const l of text.split('\n')) {
    if (l.length === 0 || l[0] === '#') continue;
    if (l[0] === '*') {
      const t = l.slice(1).trim() as Table;
      table = TABLES.includes(t) ? obs[t] : undefined;
      builtins = table ? BUILTIN_CHAINS[t] : [];
      continue;
    }
    if (!table) continue;
    if (l[0] === ':') {
      const name = l.slice(1, l.indexOf(' ') > 0 ? l.indexOf(' ') : undefined);
      if (isPodnetChain(name)) table.chains.add(name);
      continue;
    }
    if (l.startsWith('-A ') && !l.startsWith('-A PODNET-')) {
      const sp = l.indexOf(' ', 3);
      const chain = l.slice(3, sp);
      if (!builtins.includes(chain) || !l.includes('PODNET-')) continue;
      const spec = l.slice(sp + 1);
      const t = targetOf(tokenize(spec));
      if (t && isPodnetChain(t)) table.jumps.push({ chain, spec });
    }
  }
  return obs;
}

const QUOTED = /"(?:[^"\\]|\\.)*"/g;

/** Tokens of a rule spec with quoted strings (comments) emptied: cheap, for the options that matter here. */
function bareTokens(spec: string): string[] {
  return (spec.includes('"') ? spec.replace(QUOTED, '""') : spec).split(' ').filter((t) => t !== '');
}

/** Rules of the podnet chains of one table: chain -> token lists (quoted strings emptied). */
export function podnetRules(text: string, want: Table): Map<string, string[][]> {
  const chains = new Map<string, string[][]>();
  let on = false;
  for (const l of text.split('\n')) {
    if (l.length === 0 || l[0] === '#') continue;
    if (l[0] === '*') {
      on = l.slice(1).trim() === want;
      continue;
    }
    if (!on) continue;
    if (l[0] === ':') {
      const name = l.slice(1, l.indexOf(' ') > 0 ? l.indexOf(' ') : undefined);
      if (isPodnetChain(name) && !chains.has(name)) chains.set(name, []);
    } else if (l.startsWith('-A PODNET-')) {
      const sp = l.indexOf(' ', 3);
      const chain = l.slice(3, sp);
      const list = chains.get(chain) ?? [];
      list.push(bareTokens(l.slice(sp + 1)));
      chains.set(chain, list);
    }
  }
  return chains;
}

function stripHost(cidr: string): string {
  const s = cidr.indexOf('/');
  return s < 0 ? cidr : cidr.slice(0, s);
}

/** "10.0.0.1:80" or "[fd00::1]:80" -> "10.0.0.1/80", "fd00::1/80" */
function dnatEndpoint(dest: string): string | undefined {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(dest) ?? /^([^:]+):(\d+)$/.exec(dest);
  return m ? `${m[1]}/${m[2]}` : undefined;
}

/**
 * Endpoints per frontend from the nat table of one family's iptables-save output (see
 * ProgrammedEndpoints): every rule of nat PODNET-SERVICES (`-d IP/32 -p P ... --dport N -j X`,
 * key `P/IP/N`) and PODNET-NODEPORTS (`... --dport N -j X`, key `P/nodeport/N`, one per node IP,
 * merged) is followed through the podnet chains it jumps to (EXT, SVC, SVL, SEP; the masquerade
 * mark chains are not paths) to the `-j DNAT --to-destination ip:port` rules it can reach.
 * Frontends without endpoints are rejected or dropped in the filter table and have no nat rule,
 * so they are absent here (as in the nftables engine).
 */
export function programmedFromSave(text: string, into: ProgrammedEndpoints = new Map()): ProgrammedEndpoints {
  const chains = podnetRules(text, 'nat');
  const memo = new Map<string, Set<string>>();
  const resolve = (chain: string, depth: number): Set<string> => {
    const hit = memo.get(chain);
    if (hit) return hit;
    const out = new Set<string>();
    memo.set(chain, out); // cycles (not podnet's own) end here
    if (depth > 8) return out;
    for (const r of chains.get(chain) ?? []) {
      const t = targetOf(r);
      if (t === 'DNAT') {
        const d = optionValue(r, '--to-destination');
        const ep = d ? dnatEndpoint(d) : undefined;
        if (ep) out.add(ep);
      } else if (t && isPodnetChain(t) && t !== MARK_MASQ && t !== MASQ_NONPOD) {
        for (const e of resolve(t, depth + 1)) out.add(e);
      }
    }
    return out;
  };
  const add = (key: string, eps: Set<string>) => {
    const s = into.get(key) ?? new Set<string>();
    for (const e of eps) s.add(e);
    into.set(key, s);
  };
  for (const r of chains.get(SERVICES) ?? []) {
    const t = targetOf(r);
    if (!t || t === NODEPORTS || !isPodnetChain(t)) continue;
    const d = optionValue(r, '-d', '--destination');
    const p = optionValue(r, '-p', '--protocol');
    const port = optionValue(r, '--dport', '--destination-port');
    if (!d || !p || !port) continue;
    add(`${p}/${stripHost(d)}/${port}`, resolve(t, 0));
  }
  for (const r of chains.get(NODEPORTS) ?? []) {
    const t = targetOf(r);
    const p = optionValue(r, '-p', '--protocol');
    const port = optionValue(r, '--dport', '--destination-port');
    if (!t || !isPodnetChain(t) || !p || !port) continue;
    add(`${p}/nodeport/${port}`, resolve(t, 0));
  }
  return into;
}
