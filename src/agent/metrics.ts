// The agent's Prometheus metrics: one prom-client registry and every metric object, named per
// conventions.md (podnet_*, base units, counters ending in _total; kube-proxy's names where they
// exist: podnet_sync_proxy_rules_duration_seconds, podnet_sync_full/partial_proxy_rules_duration_seconds,
// podnet_sync_proxy_rules_last_timestamp_seconds, podnet_network_programming_duration_seconds).
// The process's own metrics keep prom-client's standard names (process_*, nodejs_*), which
// dashboards and kube-proxy/flannel use unprefixed.
//
// Counters and histograms move where the work happens (the CNI server, the reconcile loop, the
// lease keeper, the proxier's sync hook); gauges that describe things outside the agent (IPAM
// directories, podnet-tund's stats file, the BGP speaker's sessions) are read when scraped.
import { readdirSync } from 'node:fs';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { SpeakerStatus } from './bgp/speaker.js';
import type { TundStats } from './tund/index.js';
import { describeRangeSet, loadIpamConfig } from '../ipam/config.js';
import { findRange, freeCount } from '../ipam/allocator.js';
import { tryParseIP } from '../util/ip.js';

export const PODNET_VERSION = '0.1.0';

/** Seconds: sub-millisecond CNI fast paths up to a slow 10 s pod setup. */
const CNI_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** kube-proxy's sync buckets (exponential from 1 ms). */
const SYNC_BUCKETS = [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192, 16.384];
/** kube-proxy's network programming buckets, from 0.25 s, plus the fast end a local agent reaches. */
const PROGRAMMING_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 20, 30, 60, 120, 300];

/** An IPAM network the agent has served: where its reservations are and its range sets, read at scrape time. */
export interface IpamSource {
  network: string;
  /** per range set: its description and what is allocated and free now (throws when unreadable) */
  read(): { range: string; allocated: number; free: number }[];
}

export interface ScrapeSources {
  cniInFlight?: () => number;
  tundStats?: () => TundStats | undefined;
  bgpStatus?: () => SpeakerStatus;
}

export type CniResult = 'success' | 'error';

export class AgentMetrics {
  readonly registry = new Registry();
  private readonly ipamSources = new Map<string, IpamSource>();
  private sources: ScrapeSources = {};

  // CNI
  readonly cniRequests = new Counter({ name: 'podnet_cni_requests_total', help: 'CNI requests served by the agent, by verb, plugin and result', labelNames: ['verb', 'plugin', 'result'] as const, registers: [this.registry] });
  readonly cniDuration = new Histogram({ name: 'podnet_cni_request_duration_seconds', help: 'Time to serve a CNI request in the agent, by verb and plugin', labelNames: ['verb', 'plugin'] as const, buckets: CNI_BUCKETS, registers: [this.registry] });
  readonly cniInFlight: Gauge;
  // IPAM (read at scrape time from the networks served)
  readonly ipamAllocated: Gauge<'network' | 'range'>;
  readonly ipamFree: Gauge<'network' | 'range'>;
  readonly ipamReadErrors = new Counter({ name: 'podnet_ipam_read_errors_total', help: 'Scrapes that could not read an IPAM network\'s reservations or ranges', labelNames: ['network'] as const, registers: [this.registry] });
  // lease and store
  readonly leaseHeld = new Gauge({ name: 'podnet_lease_held', help: '1 while this node holds its subnet lease', registers: [this.registry] });
  readonly leaseRenewals = new Counter({ name: 'podnet_lease_renewals_total', help: 'Subnet lease keep-alives, by result (success, expired: taken again, error: store unreachable)', labelNames: ['result'] as const, registers: [this.registry] });
  readonly leaseAcquisitions = new Counter({ name: 'podnet_lease_acquisitions_total', help: 'Times the subnet lease was taken (at start and after an expiry)', registers: [this.registry] });
  readonly storeErrors = new Counter({ name: 'podnet_store_errors_total', help: 'Failed cluster store operations, by operation', labelNames: ['op'] as const, registers: [this.registry] });
  readonly watchResets = new Counter({ name: 'podnet_lease_watch_resets_total', help: 'Lease watch resets (compaction, store replaced) that made the agent list again', registers: [this.registry] });
  // reconcile
  readonly reconcilePasses = new Counter({ name: 'podnet_reconcile_passes_total', help: 'Datapath reconcile passes, by kind (full: the kernel read; incremental: the known state) and result', labelNames: ['kind', 'result'] as const, registers: [this.registry] });
  readonly reconcileDuration = new Histogram({ name: 'podnet_reconcile_duration_seconds', help: 'Time of one datapath reconcile pass, by kind', labelNames: ['kind'] as const, buckets: SYNC_BUCKETS, registers: [this.registry] });
  readonly reconcileObjects = new Counter({ name: 'podnet_reconcile_objects_changed_total', help: 'Kernel objects (routes, neighbours, FDB entries) a reconcile pass added or replaced, or removed', labelNames: ['op'] as const, registers: [this.registry] });
  readonly driftRepaired = new Counter({ name: 'podnet_reconcile_drift_repaired_total', help: 'Kernel objects a full pass changed that the state known from the last pass did not need (changed behind the agent\'s back)', registers: [this.registry] });
  readonly deviceRepairs = new Counter({ name: 'podnet_backend_device_repairs_total', help: 'Full passes that found the backend device gone or changed and set it up again, by what was done (created, recreated, adopted: fixed in place)', labelNames: ['action'] as const, registers: [this.registry] });
  readonly reconcileLastSuccess = new Gauge({ name: 'podnet_reconcile_last_success_timestamp_seconds', help: 'When the last datapath reconcile pass succeeded (Unix time)', registers: [this.registry] });
  readonly peersKnown = new Gauge({ name: 'podnet_peers_known', help: 'Peer subnet leases the agent sees', registers: [this.registry] });
  readonly peersProgrammed = new Gauge({ name: 'podnet_peers_programmed', help: 'Peers the last successful pass programmed (known minus refused)', registers: [this.registry] });
  readonly peersRefused = new Gauge({ name: 'podnet_peers_refused', help: 'Peers the last pass refused (not on the same L2, missing VtepMAC, conflicting route...)', registers: [this.registry] });
  readonly programming = new Histogram({ name: 'podnet_network_programming_duration_seconds', help: 'From a change seen (a lease, a Service or EndpointSlice) to the kernel programmed for it, by component', labelNames: ['component'] as const, buckets: PROGRAMMING_BUCKETS, registers: [this.registry] });
  // proxy
  readonly proxySyncDuration = new Histogram({ name: 'podnet_sync_proxy_rules_duration_seconds', help: 'Service proxy sync latency (full and partial)', buckets: SYNC_BUCKETS, registers: [this.registry] });
  readonly proxyFullSyncDuration = new Histogram({ name: 'podnet_sync_full_proxy_rules_duration_seconds', help: 'Service proxy full sync latency', buckets: SYNC_BUCKETS, registers: [this.registry] });
  readonly proxyPartialSyncDuration = new Histogram({ name: 'podnet_sync_partial_proxy_rules_duration_seconds', help: 'Service proxy partial sync latency', buckets: SYNC_BUCKETS, registers: [this.registry] });
  readonly proxyLastSync = new Gauge({ name: 'podnet_sync_proxy_rules_last_timestamp_seconds', help: 'When the service proxy last synced successfully (Unix time)', registers: [this.registry] });
  readonly proxySyncs = new Counter({ name: 'podnet_sync_proxy_rules_total', help: 'Service proxy syncs, by kind and result', labelNames: ['kind', 'result'] as const, registers: [this.registry] });
  readonly proxyChanges = new Counter({ name: 'podnet_sync_proxy_rules_changes_total', help: 'Kernel objects (rules, chains, map elements) the proxy\'s transactions carried', labelNames: ['kind'] as const, registers: [this.registry] });
  readonly proxyServices = new Gauge({ name: 'podnet_proxy_services', help: 'Services known to the proxy', registers: [this.registry] });
  readonly proxyPorts = new Gauge({ name: 'podnet_proxy_service_ports_programmed', help: 'Service ports programmed by the last successful sync', registers: [this.registry] });
  readonly proxyProblems = new Gauge({ name: 'podnet_proxy_service_problems', help: 'Services or ports the proxy rejected as invalid', registers: [this.registry] });
  readonly conntrackDeleted = new Counter({ name: 'podnet_proxy_conntrack_entries_deleted_total', help: 'Stale UDP/SCTP conntrack entries the proxy deleted', registers: [this.registry] });
  // tun backend (podnet-tund's stats file) and bgp backend (the speaker's sessions), read at scrape time
  readonly tunnelPackets: Counter<'direction'>;
  readonly tunnelBytes: Counter<'direction'>;
  readonly tunnelDrops: Counter<'reason'>;
  readonly bgpSessions: Gauge<'state'>;
  readonly bgpPrefixes: Gauge<'peer' | 'kind'>;
  readonly bgpAnnounced: Gauge;
  readonly buildInfo = new Gauge({ name: 'podnet_build_info', help: 'podnet\'s version and the Node.js running it (always 1)', labelNames: ['version', 'nodejs', 'backend'] as const, registers: [this.registry] });

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    const self = this;
    this.cniInFlight = new Gauge({
      name: 'podnet_cni_requests_in_flight',
      help: 'CNI requests being served now',
      registers: [this.registry],
      collect() {
        this.set(self.sources.cniInFlight?.() ?? 0);
      },
    });
    this.ipamAllocated = new Gauge({
      name: 'podnet_ipam_addresses_allocated',
      help: 'Addresses reserved in each IPAM range set of the networks the agent served',
      labelNames: ['network', 'range'] as const,
      registers: [this.registry],
      collect() {
        self.collectIpam();
      },
    });
    this.ipamFree = new Gauge({ name: 'podnet_ipam_addresses_free', help: 'Addresses still free in each IPAM range set of the networks the agent served', labelNames: ['network', 'range'] as const, registers: [this.registry] });
    const tund = () => this.sources.tundStats?.();
    const setCounter = (c: Counter<string>, labels: Record<string, string>, v: unknown) => {
      if (typeof v === 'number' && Number.isFinite(v)) c.labels(labels).inc(v);
    };
    this.tunnelPackets = new Counter({
      name: 'podnet_tunnel_packets_total',
      help: 'tun backend: packets podnet-tund moved (tx: read from podnet.tun and sent to peers; rx: received and written to podnet.tun)',
      labelNames: ['direction'] as const,
      registers: [this.registry],
      collect() {
        const s = tund();
        if (!s) return;
        // podnet-tund's counters are the truth; a restarted daemon starts again from 0, as counters do
        this.reset();
        setCounter(this, { direction: 'tx' }, s.tun_reads);
        setCounter(this, { direction: 'rx' }, s.tun_writes);
        self.tunnelBytes.reset();
        setCounter(self.tunnelBytes, { direction: 'tx' }, s.tun_read_bytes);
        setCounter(self.tunnelBytes, { direction: 'rx' }, s.tun_write_bytes);
        self.tunnelDrops.reset();
        for (const [k, v] of Object.entries(s)) if (k.startsWith('drop_')) setCounter(self.tunnelDrops, { reason: k.slice(5) }, v);
      },
    });
    this.tunnelBytes = new Counter({ name: 'podnet_tunnel_bytes_total', help: 'tun backend: inner packet bytes podnet-tund moved, by direction', labelNames: ['direction'] as const, registers: [this.registry] });
    this.tunnelDrops = new Counter({ name: 'podnet_tunnel_drops_total', help: 'tun backend: packets podnet-tund dropped, by reason', labelNames: ['reason'] as const, registers: [this.registry] });
    this.bgpSessions = new Gauge({
      name: 'podnet_bgp_sessions',
      help: 'bgp backend: BGP sessions by state',
      labelNames: ['state'] as const,
      registers: [this.registry],
      collect() {
        const st = self.sources.bgpStatus?.();
        if (!st) return;
        this.reset();
        self.bgpPrefixes.reset();
        for (const s of ['Idle', 'Connect', 'Active', 'OpenSent', 'OpenConfirm', 'Established']) this.labels({ state: s }).set(0);
        for (const p of st.peers) {
          this.labels({ state: p.state }).inc();
          for (const kind of ['received', 'accepted', 'announced', 'stale'] as const) self.bgpPrefixes.labels({ peer: p.address, kind }).set(p.prefixes[kind]);
        }
        self.bgpAnnounced.set(st.announced.length);
      },
    });
    this.bgpPrefixes = new Gauge({ name: 'podnet_bgp_prefixes', help: 'bgp backend: prefixes per peer (received, accepted, announced, stale)', labelNames: ['peer', 'kind'] as const, registers: [this.registry] });
    this.bgpAnnounced = new Gauge({ name: 'podnet_bgp_announced_prefixes', help: 'bgp backend: this node\'s own prefixes announced', registers: [this.registry] });
    this.buildInfo.labels({ version: PODNET_VERSION, nodejs: process.version, backend: '' }).set(1);
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }

  /** The backend label of podnet_build_info, once the cluster side knows it. */
  setBackend(backend: string): void {
    this.buildInfo.reset();
    this.buildInfo.labels({ version: PODNET_VERSION, nodejs: process.version, backend }).set(1);
  }

  setSources(s: ScrapeSources): void {
    this.sources = { ...this.sources, ...s };
  }

  /** Records an IPAM network seen in a CNI request; its ranges are read when scraped. */
  addIpamSource(src: IpamSource): void {
    this.ipamSources.set(src.network, src);
  }

  private collectIpam(): void {
    this.ipamAllocated.reset();
    this.ipamFree.reset();
    for (const src of this.ipamSources.values()) {
      try {
        for (const r of src.read()) {
          this.ipamAllocated.labels({ network: src.network, range: r.range }).set(r.allocated);
          this.ipamFree.labels({ network: src.network, range: r.range }).set(r.free);
        }
      } catch {
        this.ipamReadErrors.labels({ network: src.network }).inc();
      }
    }
  }

  cniRequest(verb: string, plugin: string, result: CniResult, seconds: number): void {
    this.cniRequests.labels({ verb, plugin, result }).inc();
    this.cniDuration.labels({ verb, plugin }).observe(seconds);
  }

  /** The Prometheus text exposition of everything. */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

/** Names in a reservation directory that are addresses (host-local's layout: one file per IP). */
export function reservedNames(dir: string): Set<string> {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return new Set();
    throw e;
  }
  return new Set(names.filter((n) => /^[0-9a-fA-F:.]+$/.test(n) && (n.includes('.') || n.includes(':'))));
}

/**
 * The IPAM network of a CNI config (the plugin's `ipam` section, podnet-ipam or host-local's
 * shape), read at scrape time: its range sets (subnetFile re-read each time) and its reservation
 * directory. undefined when the config has no IPAM podnet can read.
 */
export function ipamSourceFromConfig(conf: unknown): IpamSource | undefined {
  if (typeof conf !== 'object' || conf === null) return undefined;
  const c = conf as Record<string, unknown>;
  const ipam = c.ipam as Record<string, unknown> | undefined;
  if (typeof c.name !== 'string' || typeof ipam !== 'object' || ipam === null) return undefined;
  if (ipam.type !== 'podnet-ipam' && ipam.type !== 'host-local') return undefined;
  // only the fields that say where and what: the per-request ones (args, runtimeConfig) are not kept
  const kept = { name: c.name, cniVersion: c.cniVersion, ipam };
  return {
    network: c.name,
    read() {
      const cfg = loadIpamConfig(kept);
      const reserved = reservedNames(cfg.storeDir);
      const ips = [...reserved].map(tryParseIP).filter((a) => a !== undefined);
      return cfg.rangeSets.map((set) => ({ range: describeRangeSet(set), allocated: ips.filter((a) => findRange(set, a) >= 0).length, free: Number(freeCount(set, reserved)) }));
    },
  };
}
