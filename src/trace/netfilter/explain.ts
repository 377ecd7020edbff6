// Explaining a hook's outcomes as the trace's steps: the way the walk follows (the flow's own
// conntrack entry, else the first in rule order), the NAT done and why, the drop that breaks it,
// and the rules on the way that may have matched. Here podnet's OWN layouts are read by name: the
// service proxy's nftables table `inet podnet-proxy` (svc4/svc6 → lb-<N>-<masq>[-aff<T>] → pick-<i>
// with ep4-<i>; noep4/noep6 → reject-no-endpoints or drop; hairpin sets; the mark 0x4000
// masqueraded in nat-postrouting; see src/proxy/engines/nftables/plan.ts) and its iptables chains
// (PODNET-SERVICES → PODNET-SVC-/SVL-/EXT- → PODNET-SEP-, PODNET-MARK-MASQ, PODNET-POSTROUTING,
// filter PODNET-SERVICES rejecting frontends without endpoints; src/proxy/engines/iptables), so a
// DNAT is told as the service's endpoints with their chances, its affinity and why it masquerades.
// Any other table is "foreign": a drop there names the table, chain, rule and the command to see it.
import { canonicalIP } from '../../util/ip.js';
import type { Step } from '../types.js';
import type { ConntrackEntry } from '../view.js';
import type { Branch, Outcome } from './branch.js';
import type { HookInput } from './evaluate.js';
import { isObj, type NfCarry, type NfPacket, type RuleRef } from './model.js';

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
