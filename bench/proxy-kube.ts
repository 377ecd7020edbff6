// kube-proxy's two rule layouts, rendered by hand for the proxy benchmark's reference rows. They
// follow kubernetes pkg/proxy/iptables/proxier.go and pkg/proxy/nftables/proxier.go for ClusterIP
// services with endpoints (no NodePorts, no affinity, Cluster traffic policy), including what a
// partial sync writes:
//
//  iptables (iptables-restore --noflush): a full sync writes the top-level chains (filter and nat),
//  every KUBE-SVC-* / KUBE-SEP-* chain and the jump rules from the built-in chains; a partial sync
//  writes the top-level chains again (so all of KUBE-SERVICES: one rule per service) plus only the
//  changed services' KUBE-SVC/KUBE-SEP chains, and `-X` for endpoint chains that went away. With
//  more than 1,000 endpoints kube-proxy is in "large cluster mode": no comments on SVC/SEP rules.
//  (kube-proxy puts the jumps from PREROUTING/OUTPUT/POSTROUTING in place with separate `iptables`
//  calls before its first restore; here they are part of the one restore, so the full sync row is
//  a lower bound for kube-proxy.)
//
//  nftables (`nft -f`, in knftables' one-command-per-line form): table ip kube-proxy, the base and
//  dispatch chains, the service-ips verdict map (`goto service-…`), per service a chain with the
//  masquerade check and `numgen random mod 2 vmap { 0 : goto endpoint-A, 1 : goto endpoint-B }`
//  (an anonymous map per service), per endpoint a chain with the hairpin mark and the DNAT. A partial
//  sync adds/flushes and rewrites only the changed service's chains and its map elements; endpoint
//  chains that went away are flushed (kube-proxy deletes them in a later sync).
import { createHash } from 'node:crypto';
import { base32 } from '../src/proxy/engines/iptables/names.js';
import { CLUSTER_CIDR, MASQ_MARK, SERVICE_CIDR, TARGET_PORT, type BenchService } from './proxy-gen.js';

const sha32 = (s: string): string => base32(createHash('sha256').update(s).digest());

// ---------------------------------------------------------------- iptables

const ipt = {
  svcChain: (s: BenchService): string => `KUBE-SVC-${sha32(`${s.name}tcp`).slice(0, 16)}`,
  sepChain: (s: BenchService, ep: string): string => `KUBE-SEP-${sha32(`${s.name}tcp${ep}:${TARGET_PORT}`).slice(0, 16)}`,
};

const FILTER_TOP = ['KUBE-SERVICES', 'KUBE-EXTERNAL-SERVICES', 'KUBE-FORWARD', 'KUBE-NODEPORTS', 'KUBE-PROXY-FIREWALL'];
const NAT_TOP = ['KUBE-SERVICES', 'KUBE-NODEPORTS', 'KUBE-POSTROUTING', 'KUBE-MARK-MASQ'];

export class KubeIptables {
  private readonly services: BenchService[] = [];
  private readonly byName = new Map<string, number>();

  constructor(initial: BenchService[]) {
    for (const s of initial) this.put(s);
  }

  private put(s: BenchService): void {
    const at = this.byName.get(s.name);
    if (at === undefined) {
      this.byName.set(s.name, this.services.length);
      this.services.push(s);
    } else this.services[at] = s;
  }

  private svcChains(s: BenchService, chains: string[], rules: string[]): void {
    const svc = ipt.svcChain(s);
    chains.push(`:${svc} - [0:0]`);
    rules.push(`-A ${svc} -m comment --comment "${s.name} cluster IP" -m tcp -p tcp -d ${s.clusterIP} --dport ${s.port} ! -s ${CLUSTER_CIDR} -j KUBE-MARK-MASQ`);
    const n = s.endpoints.length;
    s.endpoints.forEach((ep, i) => {
      const sep = ipt.sepChain(s, ep);
      chains.push(`:${sep} - [0:0]`);
      rules.push(i < n - 1 ? `-A ${svc} -m statistic --mode random --probability ${(1 / (n - i)).toFixed(10)} -j ${sep}` : `-A ${svc} -j ${sep}`);
      rules.push(`-A ${sep} -s ${ep} -j KUBE-MARK-MASQ`);
      rules.push(`-A ${sep} -m tcp -p tcp -j DNAT --to-destination ${ep}:${TARGET_PORT}`);
    });
  }

  /** The restore input; `changed` = undefined: everything (full sync), else only those services' chains. */
  private render(changed: BenchService[] | undefined, removedSeps: string[] = [], jumps = false): string {
    const out: string[] = ['*filter'];
    for (const c of FILTER_TOP) out.push(`:${c} - [0:0]`);
    out.push(
      '-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP',
      '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT',
      '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
    );
    if (jumps) {
      out.push(
        '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
        '-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
        '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
        '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
        '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
        '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
        '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
        '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
      );
    }
    out.push('COMMIT', '*nat');
    const chains: string[] = NAT_TOP.map((c) => `:${c} - [0:0]`);
    const rules: string[] = [
      `-A KUBE-POSTROUTING -m mark ! --mark ${MASQ_MARK}/${MASQ_MARK} -j RETURN`,
      `-A KUBE-POSTROUTING -j MARK --xor-mark ${MASQ_MARK}`,
      '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
      `-A KUBE-MARK-MASQ -j MARK --or-mark ${MASQ_MARK}`,
    ];
    for (const s of this.services) {
      rules.push(`-A KUBE-SERVICES -m comment --comment "${s.name} cluster IP" -m tcp -p tcp -d ${s.clusterIP} --dport ${s.port} -j ${ipt.svcChain(s)}`);
    }
    for (const s of changed ?? this.services) this.svcChains(s, chains, rules);
    for (const sep of removedSeps) {
      chains.push(`:${sep} - [0:0]`);
      rules.push(`-X ${sep}`);
    }
    rules.push('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS');
    if (jumps) {
      rules.push(
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
      );
    }
    out.push(...chains, ...rules, 'COMMIT', '');
    return out.join('\n');
  }

  /** Full sync from an empty netns (with the built-in chain jumps). */
  full(): string {
    return this.render(undefined, [], true);
  }

  /** Partial sync after adding (or changing) service `s`. */
  addService(s: BenchService): string {
    this.put(s);
    return this.render([s]);
  }

  /** Partial sync after service `name`'s endpoint `oldIP` became `newIP`. */
  replaceEndpoint(name: string, oldIP: string, newIP: string): string {
    const at = this.byName.get(name);
    if (at === undefined) throw new Error(`no service ${name}`);
    const old = this.services[at];
    const s: BenchService = { ...old, endpoints: old.endpoints.map((e) => (e === oldIP ? newIP : e)).sort() };
    this.services[at] = s;
    return this.render([s], [ipt.sepChain(old, oldIP)]);
  }
}

// ---------------------------------------------------------------- nftables

const T = 'ip kube-proxy';

function hashAndTruncate(name: string): string {
  const n = `${sha32(name).slice(0, 8)}-${name}`;
  return n.length > 240 ? `${n.slice(0, 237)}...` : n;
}
const nftn = {
  // unnamed service port: kube-proxy's ServicePortName.Port is ""
  base: (s: BenchService): string => hashAndTruncate(`${s.name}/tcp/`),
  svcChain: (s: BenchService): string => `service-${nftn.base(s)}`,
  epChain: (s: BenchService, ep: string): string => `endpoint-${hashAndTruncate(`${s.name}/tcp/__${ep}/${TARGET_PORT}`)}`,
};

const BASE_CHAINS: [string, string, string, string][] = [
  ['filter-prerouting', 'filter', 'prerouting', '-110'],
  ['filter-input', 'filter', 'input', '-110'],
  ['filter-forward', 'filter', 'forward', '-110'],
  ['filter-output', 'filter', 'output', '-110'],
  ['filter-output-post-dnat', 'filter', 'output', '-90'],
  ['nat-prerouting', 'nat', 'prerouting', '-100'],
  ['nat-output', 'nat', 'output', '-100'],
  ['nat-postrouting', 'nat', 'postrouting', '100'],
];
const JUMPS: [string, string, string][] = [
  ['nodeport-endpoints-check', 'filter-input', 'ct state new '],
  ['service-endpoints-check', 'filter-input', 'ct state new '],
  ['service-endpoints-check', 'filter-forward', 'ct state new '],
  ['service-endpoints-check', 'filter-output', 'ct state new '],
  ['firewall-check', 'filter-prerouting', 'ct state new '],
  ['firewall-check', 'filter-output', 'ct state new '],
  ['services', 'nat-output', ''],
  ['services', 'nat-prerouting', ''],
  ['masquerading', 'nat-postrouting', ''],
  ['cluster-ips-check', 'filter-forward', 'ct state new '],
  ['cluster-ips-check', 'filter-output-post-dnat', 'ct state new '],
];

export class KubeNft {
  private readonly services = new Map<string, BenchService>();

  constructor(initial: BenchService[]) {
    for (const s of initial) this.services.set(s.name, s);
  }

  private static ensure(out: string[], seen: Set<string>, chain: string): void {
    if (seen.has(chain)) return;
    seen.add(chain);
    out.push(`add chain ${T} ${chain}`, `flush chain ${T} ${chain}`);
  }

  private static setup(out: string[]): void {
    out.push(`add table ${T} { comment "rules for kube-proxy" ; }`);
    for (const [name, type, hook, prio] of BASE_CHAINS) {
      out.push(`add chain ${T} ${name} { type ${type} hook ${hook} priority ${prio} ; }`, `flush chain ${T} ${name}`);
    }
    const seen = new Set<string>();
    for (const [dst, src, extra] of JUMPS) {
      KubeNft.ensure(out, seen, dst);
      out.push(`add rule ${T} ${src} ${extra}jump ${dst}`);
    }
    for (const c of ['services', 'cluster-ips-check', 'masquerading', 'mark-for-masquerade']) KubeNft.ensure(out, seen, c);
    out.push(
      `add rule ${T} mark-for-masquerade mark set mark or ${MASQ_MARK}`,
      `add rule ${T} masquerading mark and ${MASQ_MARK} == 0 return`,
      `add rule ${T} masquerading mark set mark xor ${MASQ_MARK}`,
      `add rule ${T} masquerading masquerade fully-random`,
      `add set ${T} cluster-ips { type ipv4_addr ; comment "Active ClusterIPs" ; }`,
      `add rule ${T} cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"`,
      `add rule ${T} cluster-ips-check ip daddr { ${SERVICE_CIDR} } drop comment "Drop traffic to unallocated ClusterIPs"`,
      `add set ${T} nodeport-ips { type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }`,
      `delete set ${T} nodeport-ips`,
      `add map ${T} no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }`,
      `add map ${T} no-endpoint-nodeports { type inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }`,
      `add chain ${T} reject-chain { comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }`,
      `flush chain ${T} reject-chain`,
      `add rule ${T} reject-chain reject`,
      `add rule ${T} service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services`,
      `add rule ${T} nodeport-endpoints-check ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports`,
      `add map ${T} firewall-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "destinations that are subject to LoadBalancerSourceRanges" ; }`,
      `add rule ${T} firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips`,
      `add map ${T} service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }`,
      `add map ${T} service-nodeports { type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }`,
      `add rule ${T} services ip daddr . meta l4proto . th dport vmap @service-ips`,
      `add rule ${T} services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports`,
    );
    for (const s of ['cluster-ips']) out.push(`flush set ${T} ${s}`);
    for (const m of ['service-ips', 'firewall-ips', 'no-endpoint-services', 'no-endpoint-nodeports', 'service-nodeports']) out.push(`flush map ${T} ${m}`);
  }

  /** One service's chains, rules and (when `elements`) map/set elements. */
  private static service(out: string[], s: BenchService, elements: boolean): void {
    const seen = new Set<string>();
    for (const ep of s.endpoints) KubeNft.ensure(out, seen, nftn.epChain(s, ep));
    const svc = nftn.svcChain(s);
    KubeNft.ensure(out, seen, svc);
    if (elements) {
      out.push(`add element ${T} cluster-ips { ${s.clusterIP} }`);
      out.push(`add element ${T} service-ips { ${s.clusterIP} . tcp . ${s.port} : goto ${svc} }`);
    }
    out.push(`add rule ${T} ${svc} ip daddr ${s.clusterIP} tcp dport ${s.port} ip saddr != ${CLUSTER_CIDR} jump mark-for-masquerade`);
    const vm = s.endpoints.map((ep, i) => `${i} : goto ${nftn.epChain(s, ep)}`).join(' , ');
    out.push(`add rule ${T} ${svc} numgen random mod ${s.endpoints.length} vmap { ${vm} }`);
    for (const ep of s.endpoints) {
      const c = nftn.epChain(s, ep);
      out.push(`add rule ${T} ${c} ip saddr ${ep} jump mark-for-masquerade`);
      out.push(`add rule ${T} ${c} meta l4proto tcp dnat to ${ep}:${TARGET_PORT}`);
    }
  }

  full(): string {
    const out: string[] = [];
    KubeNft.setup(out);
    for (const s of this.services.values()) KubeNft.service(out, s, true);
    out.push('');
    return out.join('\n');
  }

  addService(s: BenchService): string {
    this.services.set(s.name, s);
    const out: string[] = [];
    KubeNft.service(out, s, true);
    out.push('');
    return out.join('\n');
  }

  replaceEndpoint(name: string, oldIP: string, newIP: string): string {
    const old = this.services.get(name);
    if (!old) throw new Error(`no service ${name}`);
    const s: BenchService = { ...old, endpoints: old.endpoints.map((e) => (e === oldIP ? newIP : e)).sort() };
    this.services.set(name, s);
    const out: string[] = [];
    KubeNft.service(out, s, false); // map element unchanged (same service chain)
    out.push(`flush chain ${T} ${nftn.epChain(old, oldIP)}`); // stale: deleted by a later sync
    out.push('');
    return out.join('\n');
  }

  /** kube-proxy also lists the table's chains on every sync (to find stale ones). */
  static listChainsArgs(): string[] {
    return ['--json', 'list', 'chains', 'ip'];
  }
}
