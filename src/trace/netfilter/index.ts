// Netfilter in the trace: what the rules of a namespace do to the traced packet at one hook
// (prerouting for a packet that arrived, output for one sent from here, then input or forward,
// then postrouting), read from the live rulesets: `nft -j list ruleset` and, for the xtables
// tables, iptables-save (iptables-nft and iptables-legacy). This is the entry point the walk uses:
// it reads a namespace's tables through the TraceView (once per view and namespace), evaluates
// the hook and explains the outcome. The parts, each using only those listed before it:
//   model.ts      tables, chains, rules, the packet and the state that follows it
//   rule-text.ts  nft JSON expressions as the text a step quotes
//   nft-json.ts   `nft -j list ruleset` → the model
//   xtables.ts    iptables-save → the model
//   values.ts     the packet's field values and how a rule's pattern matches them
//   branch.ts     one way the packet can go (numgen and statistic fork it) and how it ends
//   evaluate.ts   every base chain of a hook over the packet, as the kernel runs them
//   explain.ts    the outcomes as steps, podnet's own layouts read by name
import type { ConntrackEntry, TraceView } from '../view.js';
import type { Outcome } from './branch.js';
import { evaluateHook, recentLists, type HookInput } from './evaluate.js';
import { explainHook, type HookPass, type Naming } from './explain.js';
import type { NfTable } from './model.js';
import { isXtablesName, tablesFromNftJson } from './nft-json.js';
import { tablesFromIptablesSave } from './xtables.js';

export type { NfCarry, NfHook, NfPacket, NfTable, RuleRef } from './model.js';
export type { HookInput } from './evaluate.js';
export type { HookPass } from './explain.js';
export { evaluateHook, explainHook, isXtablesName, tablesFromIptablesSave, tablesFromNftJson };
export { parseXtRule } from './xtables.js';

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
