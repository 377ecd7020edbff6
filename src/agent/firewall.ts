// The node agent's cluster firewall: podnet's own nftables tables `inet podnet-cluster` and (for
// VXLAN and tun) `netdev podnet-cluster` (never another table), written whole in one `nft -f`
// transaction, plus an opt-in iptables fix-up.
//
// What the tables do:
//   - postrouting (nat, srcnat): pod traffic leaving the cluster CIDR is masqueraded to the node's
//     address (`ip saddr <cluster> ip daddr != <cluster> masquerade`); pod-to-pod traffic between
//     nodes keeps its source (host-gw and vxlan carry it unchanged). Multicast is left alone. A nat
//     chain is evaluated for the first packet of a connection only, so established traffic never
//     walks it.
//   - VXLAN and tun: the tunnel's UDP packets are exempted from conntrack (see tunnelUdpPort): on the way
//     in at the underlay device's ingress hook (netdev family), so that only packets arriving on
//     the underlay walk the rule, not every pod packet at prerouting; on the way out at output
//     (priority raw), which forwarded pod packets do not traverse (only their encapsulation does).
//   - No forward chain. A base chain at forward is walked by every forwarded packet, and an
//     `accept` there achieves nothing: with policy accept it changes no verdict, and it cannot
//     override a drop elsewhere (below). The per-packet cost of evaluating two accept rules with
//     counters was measurable (about 1% of the CPU of a pod-to-pod stream, see issue 10).
//
// What is and is NOT possible against a host firewall (flannel#609/#799/#823, Docker's FORWARD DROP):
//   In nftables every base chain hooked at `forward` sees the packet. `accept` only ends the chain
//   it is in; the packet then goes on to the next base chain at that hook, and a `drop` (rule or
//   policy) in ANY of them is final. So no forward chain of podnet's could override a drop in
//   another table — no priority changes that. What podnet does instead:
//     1. detects forward-hook base chains with policy drop in other tables and reports each as a
//        warning naming the table and chain and the two rules the administrator has to add there
//        (forwardBlockers(), pure);
//     2. for the common case that caused flannel#609 — iptables' FORWARD chain with policy DROP
//        (Docker sets it; with iptables-nft this is `table ip filter chain FORWARD`) — and only when
//        asked (iptablesForward: true) and only if that policy IS DROP, inserts accept rules for the
//        cluster CIDR at the top of that chain with `iptables -I FORWARD`, marked with the comment
//        "podnet-cluster" so cleanup removes exactly those. That chain is iptables' (the table is
//        shared by design), which is why this is an explicit opt-in and not part of the nft table.
import type { NetnsRef, NftRunner } from '../kernel/types.js';
import { KernelError, spawnCapture } from '../kernel/exec.js';
import { describeNetns, nsExecArgv } from '../kernel/netns.js';
import { formatCidr, masked, tryParseCidr } from '../util/ip.js';
import type { Logger } from '../util/log.js';

export const CLUSTER_TABLE = 'podnet-cluster';
export const IPTABLES_COMMENT = 'podnet-cluster';

export interface ClusterFirewallSpec {
  /** the cluster CIDRs (e.g. 10.244.0.0/16, fd00:10:244::/56) */
  clusterCidrs: string[];
  /** masquerade pod traffic leaving the cluster (default true) */
  masquerade?: boolean;
  /**
   * the tunnel's UDP port (VXLAN's, or podnet-tund's for the tun backend): its packets between
   * nodes are exempted from conntrack. With the NAT
   * chain loaded every packet is tracked; for the overlay that meant tracking each packet twice
   * (the pod's flow and the tunnel's UDP), which cost ~10% of VXLAN throughput here. Nothing
   * NATs tunnel packets, so they need no connection state.
   */
  tunnelUdpPort?: number;
  /**
   * the underlay device the tunnel packets arrive on (the agent's --iface). With it, incoming
   * tunnel packets are exempted at that device's ingress hook, which no other packet walks;
   * without it, at prerouting (priority raw), which every packet of the node walks.
   */
  tunnelDevice?: string;
}

function split(spec: ClusterFirewallSpec): { v4: string[]; v6: string[] } {
  const v4: string[] = [];
  const v6: string[] = [];
  for (const s of spec.clusterCidrs) {
    const c = tryParseCidr(s);
    if (!c) throw new TypeError(`cluster firewall: ${JSON.stringify(s)} is not a CIDR`);
    (c.family === 4 ? v4 : v6).push(formatCidr(masked(c)));
  }
  if (v4.length + v6.length === 0) throw new TypeError('cluster firewall: no cluster CIDR given');
  return { v4, v6 };
}

const set = (xs: string[]): string => (xs.length === 1 ? xs[0] : `{ ${xs.join(', ')} }`);

/**
 * Both tables as one transaction. Pure. `add table` + `delete table` first makes it
 * idempotent and lets chain definitions change: the old table goes and the new one comes in the
 * same atomic commit, so there is no moment without the rules.
 */
export function renderClusterFirewall(spec: ClusterFirewallSpec): string {
  const { v4, v6 } = split(spec);
  const nat: string[] = [];
  if (v4.length && spec.masquerade !== false) nat.push(`    ip saddr ${set(v4)} ip daddr != ${set(v4)} ip daddr != 224.0.0.0/4 counter masquerade`);
  if (v6.length && spec.masquerade !== false) nat.push(`    ip6 saddr ${set(v6)} ip6 daddr != ${set(v6)} ip6 daddr != ff00::/8 counter masquerade`);
  const raw: string[] = [];
  const netdev: string[] = [];
  if (spec.tunnelUdpPort !== undefined) {
    const port = spec.tunnelUdpPort;
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new TypeError(`cluster firewall: tunnel port ${port} out of range`);
    const dev = spec.tunnelDevice;
    if (dev !== undefined && !/^[A-Za-z0-9_.:@-]{1,15}$/.test(dev)) throw new TypeError(`cluster firewall: ${JSON.stringify(dev)} is not a device name`);
    if (dev !== undefined) {
      netdev.push(
        `table netdev ${CLUSTER_TABLE} {`,
        `  chain tunnel-ingress {`,
        `    type filter hook ingress device "${dev}" priority -300; policy accept;`,
        `    udp dport ${port} notrack`,
        `  }`,
        `}`,
      );
    } else {
      raw.push(`  chain tunnel-prerouting {`, `    type filter hook prerouting priority raw; policy accept;`, `    udp dport ${port} notrack`, `  }`);
    }
    raw.push(`  chain tunnel-output {`, `    type filter hook output priority raw; policy accept;`, `    udp dport ${port} notrack`, `  }`);
  }
  return [
    ...renderClusterFirewallCleanup().trimEnd().split('\n'),
    `table inet ${CLUSTER_TABLE} {`,
    ...raw,
    `  chain postrouting {`,
    `    type nat hook postrouting priority srcnat; policy accept;`,
    ...nat,
    `  }`,
    `}`,
    ...netdev,
    '',
  ].join('\n');
}

/** Removes both tables; idempotent (`add` first so a missing table is not an error). Pure. */
export function renderClusterFirewallCleanup(): string {
  return `add table inet ${CLUSTER_TABLE}\ndelete table inet ${CLUSTER_TABLE}\nadd table netdev ${CLUSTER_TABLE}\ndelete table netdev ${CLUSTER_TABLE}\n`;
}

export interface ForwardBlocker {
  family: string;
  table: string;
  chain: string;
  /** what the administrator has to add to that chain */
  advice: string;
}

/**
 * Base chains at the forward hook with policy drop in tables other than podnet's, from
 * `nft -j list ruleset`. Pure. `skipIptablesFilter` leaves out iptables' own FORWARD chains when
 * podnet fixes those itself (iptablesForward).
 */
export function forwardBlockers(ruleset: unknown, spec: ClusterFirewallSpec, skipIptablesFilter = false): ForwardBlocker[] {
  const { v4, v6 } = split(spec);
  const items = (ruleset as { nftables?: Record<string, unknown>[] } | undefined)?.nftables ?? [];
  const out: ForwardBlocker[] = [];
  for (const it of items) {
    const c = it.chain as { family?: string; table?: string; name?: string; hook?: string; policy?: string; type?: string } | undefined;
    if (!c || c.hook !== 'forward' || c.policy !== 'drop' || c.table === CLUSTER_TABLE) continue;
    if (skipIptablesFilter && (c.family === 'ip' || c.family === 'ip6') && c.table === 'filter' && c.name === 'FORWARD') continue;
    const rules: string[] = [];
    if (v4.length && c.family !== 'ip6') rules.push(`ip saddr ${set(v4)} accept`, `ip daddr ${set(v4)} accept`);
    if (v6.length && c.family !== 'ip') rules.push(`ip6 saddr ${set(v6)} accept`, `ip6 daddr ${set(v6)} accept`);
    const fam = c.family ?? '?';
    out.push({
      family: fam,
      table: c.table ?? '?',
      chain: c.name ?? '?',
      advice:
        `table ${fam} ${c.table} chain ${c.name} (hook forward, policy drop) drops pod traffic between nodes, and podnet cannot accept it ` +
        `from its own table (a drop in any forward base chain is final); add to that chain: ${rules.join('; ')}`,
    });
  }
  return out;
}

export interface FirewallOptions {
  nft: NftRunner;
  ns: NetnsRef;
  spec: ClusterFirewallSpec;
  /** opt-in: when iptables' FORWARD policy is DROP, insert cluster accept rules there (see the note at the top) */
  iptablesForward?: boolean;
  log?: Logger;
}

export interface FirewallReport {
  /** one per foreign forward chain that will still drop pod traffic */
  warnings: string[];
  /** iptables rules podnet inserted this time (argv of each -I) */
  iptablesInserted: string[][];
}

async function ipt(ns: NetnsRef, tool: 'iptables' | 'ip6tables', args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  const argv = nsExecArgv(ns, [tool, '-w', ...args]);
  const r = await spawnCapture(argv, { op: `${tool} ${args.join(' ')} in ${describeNetns(ns)}` });
  return { code: r.exitCode, out: r.stdout, err: r.stderr };
}

function iptRules(fam: 4 | 6, cidrs: string[]): string[][] {
  return cidrs.flatMap((c) => [
    ['FORWARD', '-s', c, '-m', 'comment', '--comment', IPTABLES_COMMENT, '-j', 'ACCEPT'],
    ['FORWARD', '-d', c, '-m', 'comment', '--comment', IPTABLES_COMMENT, '-j', 'ACCEPT'],
  ]);
}

/** Inserts podnet's accept rules into iptables' FORWARD chain, only when its policy is DROP. */
async function ensureIptablesForward(ns: NetnsRef, spec: ClusterFirewallSpec): Promise<string[][]> {
  const { v4, v6 } = split(spec);
  const inserted: string[][] = [];
  for (const [fam, tool, cidrs] of [[4, 'iptables', v4], [6, 'ip6tables', v6]] as const) {
    if (cidrs.length === 0) continue;
    const s = await ipt(ns, tool, ['-S', 'FORWARD']);
    if (s.code !== 0) throw new KernelError({ argv: [tool, '-S', 'FORWARD'], exitCode: s.code, stderr: s.err, op: `${tool} -S FORWARD in ${describeNetns(ns)}` });
    if (!/^-P FORWARD DROP$/m.test(s.out)) continue;
    for (const rule of iptRules(fam, [...cidrs])) {
      const [chain, ...rest] = rule;
      if ((await ipt(ns, tool, ['-C', chain, ...rest])).code === 0) continue;
      const r = await ipt(ns, tool, ['-I', chain, '1', ...rest]);
      if (r.code !== 0) throw new KernelError({ argv: [tool, '-I', ...rule], exitCode: r.code, stderr: r.err, op: `${tool} -I ${rule.join(' ')} in ${describeNetns(ns)}` });
      inserted.push([tool, '-I', chain, '1', ...rest]);
    }
  }
  return inserted;
}

/** Deletes every FORWARD rule carrying podnet's comment, whatever CIDR it names (also stale ones). */
async function removeIptablesForward(ns: NetnsRef): Promise<void> {
  for (const tool of ['iptables', 'ip6tables'] as const) {
    const s = await ipt(ns, tool, ['-S', 'FORWARD']);
    if (s.code !== 0) continue; // no such table/tool: nothing of ours there
    for (const line of s.out.split('\n')) {
      if (!line.startsWith('-A FORWARD ') || !line.includes(`--comment ${IPTABLES_COMMENT}`)) continue;
      // -S prints rules in the exact form -D accepts; our rules contain no quoted words
      const args = line.trim().split(/\s+/).slice(1);
      await ipt(ns, tool, ['-D', ...args]);
    }
  }
}

/** Writes podnet's table (one transaction) and reports what would still block pod traffic. Idempotent. */
export async function ensureClusterFirewall(o: FirewallOptions): Promise<FirewallReport> {
  await o.nft.run(o.ns, renderClusterFirewall(o.spec));
  const iptablesInserted = o.iptablesForward ? await ensureIptablesForward(o.ns, o.spec) : [];
  const ruleset = await o.nft.listJson(o.ns, ['ruleset']);
  const warnings = forwardBlockers(ruleset, o.spec, o.iptablesForward === true).map((b) => b.advice);
  for (const w of warnings) o.log?.warn('host firewall blocks pod traffic', { advice: w });
  if (iptablesInserted.length) o.log?.info('iptables FORWARD policy is DROP: cluster accept rules inserted', { rules: iptablesInserted.map((r) => r.join(' ')) });
  return { warnings, iptablesInserted };
}

/** Removes podnet's table and (if it was used) its iptables FORWARD rules. Idempotent. */
export async function removeClusterFirewall(o: Omit<FirewallOptions, 'spec'>): Promise<void> {
  await o.nft.run(o.ns, renderClusterFirewallCleanup());
  if (o.iptablesForward) await removeIptablesForward(o.ns);
}
