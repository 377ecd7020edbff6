// The agent's cluster side: lease a subnet, set up the backend's device and podnet's cluster
// firewall, publish subnet.env, then reconcile the datapath against the peers' leases on every
// store change and periodically. Everything that can be refused (config, store, subnets; for the
// tun backend also the underlay MTU, a foreign podnet.tun, the datapath binary and its UDP port) is
// checked before the kernel is touched; a restarted agent adopts what it finds (for tun: the device
// and the running podnet-tund, which outlives the agent like its routes).
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { defaultKernel, defaultNft } from '../kernel/index.js';
import type { NetnsRef } from '../kernel/types.js';
import type { Logger } from '../util/log.js';
import { openStore } from '../store/index.js';
import type { Store } from '../store/types.js';
import { BgpBackend, createCheckedBackend, Reconciler, TunBackend, type DeviceResult } from './backends/index.js';
import { applyOverrides, describePeers, type BgpConfig } from './bgp/config.js';
import { BgpSpeaker, type SpeakerStatus } from './bgp/speaker.js';
import { ensureTund, findTund, preflightTund, readPeers, stopTund, writePeers, type TundHandle } from './tund/index.js';
import { ensureClusterFirewall } from './firewall.js';
import { formatCidr } from '../util/ip.js';
import type { NodeLease } from './lease.js';
import { acquireLease, LeaseWatcher, updateLease, type HeldLease } from './leases.js';
import { parseNetConf, NetConfError, type NetConf } from './netconf.js';
import { detectNode, type NodeIdentity } from './node-ip.js';
import { renderSubnetEnv, writeSubnetEnv } from './subnet-env.js';
import { writeAtomic } from '../cni/install.js';
import type { ProxyMode } from '../proxy/engine.js';
import type { ProxyNode } from '../proxy/model.js';
import type { ClusterTracker } from './health.js';
import { describeOp } from '../kernel/render.js';
import { readTundStats } from './tund/index.js';

export interface ClusterOptions {
  configPath: string;
  store: string;
  etcdEndpoints: string[];
  etcdPrefix: string;
  iface?: string;
  publicIP?: string;
  nodeName: string;
  subnetFile: string;
  dataDir: string;
  ipMasq: boolean;
  leaseTtl: number;
  resyncSeconds: number;
  /** the service proxy's rule engine, or off */
  proxyMode?: 'nftables' | 'iptables' | 'off';
  /** inclusive NodePort range */
  nodePortRange?: [number, number];
  /** bgp backend: this node's AS (overrides net-conf's ASN) */
  bgpAsn?: string;
  /** bgp backend: this node's peers, ADDR[:ASN] (replace net-conf's Peers) */
  bgpPeers?: string[];
  log: Logger;
  /** metrics and probes (--metrics-addr): the lease, the passes and the proxy are reported to it */
  tracker?: ClusterTracker;
}

export interface ClusterAgent {
  readonly lease: () => NodeLease | undefined;
  /** bgp backend: the speaker's sessions and routes (`podnet bgp status`) */
  readonly bgpStatus?: () => SpeakerStatus;
  stop(): Promise<void>;
}

/** net-conf.json read and checked against the node's own networks; an Error naming the file and the field. */
export function readConfig(path: string, node: NodeIdentity): NetConf {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`--config ${path}: ${(e as Error).message}`);
  }
  return parseNetConf(raw, node.connected.map((net) => ({ what: `the node network on ${node.iface}`, net })));
}

export async function startCluster(o: ClusterOptions): Promise<ClusterAgent> {
  const log = o.log;
  const kernel = defaultKernel();
  const ns: NetnsRef = { kind: 'current' };
  const node = await detectNode(kernel, ns, { iface: o.iface, publicIP: o.publicIP });
  const conf = readConfig(o.configPath, node);
  // bad --bgp-asn/--bgp-peer are refused before the backend's kernel checks
  const bgpConf = conf.backend.type === 'bgp' ? bgpNodeConfig(conf, o, node) : undefined;
  const clusterCidrs = [formatCidr(conf.network), ...(conf.ipv6Network ? [formatCidr(conf.ipv6Network)] : [])];
  const backend = await createCheckedBackend(
    { type: conf.backend.type, vni: conf.backend.vni, dstport: conf.backend.port, port: conf.backend.port, clusterNetworks: clusterCidrs, dataDir: o.dataDir, iface: node.iface },
    kernel,
  );
  const tun = backend instanceof TunBackend ? backend : undefined;
  const bgpBackend = backend instanceof BgpBackend ? backend : undefined;
  const tundOpts = tun ? { dataDir: o.dataDir, dev: tun.device, listen: node.publicIP, port: tun.port, log: log.child({ subsys: 'tund' }) } : undefined;
  // <prefix>/subnets/10.244.1.0-24, with flannel's meaning of --etcd-prefix (default /podnet/network)
  const prefix = `${o.etcdPrefix.replace(/\/$/, '')}/subnets/`;
  const store: Store = await openStore(o.store, { endpoints: o.etcdEndpoints });
  try {
    // an unreachable store is an error before anything is built
    await store.list(prefix);
  } catch (e) {
    await store.close().catch(() => {});
    throw new Error(`cluster store ${store.describe} is unreachable: ${(e as Error).message}`);
  }
  if (tun && tundOpts) {
    // tun: every refusal before the lease is taken and the kernel touched: the underlay MTU, a
    // podnet.tun that is not podnet's, the podnet-tund binary, its UDP port (unless the running
    // daemon that holds it is adopted)
    try {
      await tun.check({ kernel, ns, own: { subnet: formatCidr(conf.network), publicIP: node.publicIP, ...(conf.ipv6Network ? { ipv6Subnet: formatCidr(conf.ipv6Network) } : {}) } });
      await preflightTund(tundOpts);
    } catch (e) {
      await store.close().catch(() => {});
      throw e;
    }
  }
  mkdirSync(o.dataDir, { recursive: true });
  const rememberFile = join(o.dataDir, 'subnet');
  const remembered = existsSync(rememberFile) ? readFileSync(rememberFile, 'utf8').trim() : undefined;
  const ownBackendData = tun ? { Port: tun.port } : bgpConf ? { ASN: bgpConf.asn, Peers: describePeers(bgpConf.peers), RouterID: bgpConf.routerId! } : {};
  let held: HeldLease = await acquireLease({ store, conf, prefix, ttlSeconds: o.leaseTtl, publicIP: node.publicIP, publicIPv6: node.publicIPv6, nodeName: o.nodeName, backendData: ownBackendData, remembered, log });
  writeAtomic(rememberFile, held.lease.subnet + '\n', 0o644);
  const tracker = o.tracker;
  tracker?.setLease(held.lease, true);
  tracker?.metrics?.setBackend(backend.type);
  const locals = [held.lease.subnet, ...(held.lease.ipv6Subnet ? [held.lease.ipv6Subnet] : [])];
  let dev: DeviceResult | undefined;
  let tund: TundHandle | undefined;
  let speaker: BgpSpeaker | undefined;
  // nothing half-built: what this start created (the tun device, podnet-tund) goes again when a
  // later step fails; what it adopted stays as it was found
  const undo = async (e: unknown): Promise<never> => {
    if (tund?.action === 'started' && tundOpts) await stopTund(tundOpts.dataDir).catch(() => false);
    await speaker?.stop('withdraw').catch(() => undefined);
    if (tun && dev?.action === 'created' && dev.device) await kernel.apply(ns, [{ op: 'link-del', name: dev.device, ignoreMissing: true }]).catch(() => undefined);
    // tun: no lease either, so that no peer routes to a node without a datapath
    if (tun) await store.revokeLease(held.leaseId).catch(() => {});
    await store.close().catch(() => {});
    throw e;
  };
  /**
   * A device ensureDevice set up (at start, or again in a full pass): a podnet-tund still running
   * for a device that was gone is attached to nothing and is stopped (started again by the
   * caller); the lease carries the device's backend data (a new vxlan device has a new MAC
   * unless one is configured; bgp: the speaker's).
   */
  const takeDevice = async (d: DeviceResult): Promise<void> => {
    dev = bgpConf ? { ...d, backendData: ownBackendData } : d;
    if (tundOpts && d.action === 'created' && findTund(tundOpts.dataDir)) {
      log.warn('podnet-tund runs but its device was gone: restarting it on the new podnet.tun');
      await stopTund(tundOpts.dataDir);
    }
    if (JSON.stringify(dev.backendData) !== JSON.stringify(held.lease.backendData)) held = await updateLease(store, held, { ...held.lease, backendData: dev.backendData });
  };
  try {
    dev = await backend.ensureDevice({ kernel, ns, own: held.lease, log });
    log.info('backend device ready', { backend: backend.type, device: dev.device, action: dev.action, reasons: dev.reasons, mtu: dev.mtu });
    await takeDevice(dev);
    if (tundOpts) {
      // a daemon started now reads its peer table at start: this node's subnets, peers follow with the first pass
      const have = readPeers(tundOpts.dataDir);
      if (!findTund(tundOpts.dataDir) || !have || JSON.stringify([...have.locals].sort()) !== JSON.stringify([...locals].sort())) writePeers(tundOpts.dataDir, { locals, peers: [] });
      tund = await ensureTund(tundOpts);
    }
    // the tunnels' outer UDP datagrams (vxlan's and podnet-tund's) are kept out of conntrack
    const tunnel = conf.backend.type === 'vxlan' || conf.backend.type === 'tun' ? { tunnelUdpPort: conf.backend.port, tunnelDevice: node.iface } : {};
    await ensureClusterFirewall({ nft: defaultNft(), ns, spec: { clusterCidrs, masquerade: o.ipMasq, ...tunnel }, iptablesForward: true, log });
  } catch (e) {
    return undo(e);
  }
  // Backend.MTU can only lower the pod MTU below what the underlay allows
  const podMtu = Math.min(dev.mtu, conf.backend.mtu ?? dev.mtu);
  writeSubnetEnv(o.subnetFile, renderSubnetEnv(conf, held.lease, podMtu, o.ipMasq));
  log.info('node ready', { iface: node.iface, publicIP: node.publicIP, subnet: held.lease.subnet, ipv6Subnet: held.lease.ipv6Subnet, mtu: podMtu, backend: backend.type, store: store.describe, ...(tund ? { tundPid: tund.pid, tund: tund.action } : {}) });

  const reconciler = new Reconciler({ kernel, ns, backend, log: log.child({ subsys: 'reconcile' }) });
  let timer: NodeJS.Timeout | undefined;
  const ownPrefixes = (l: NodeLease) => [{ prefix: l.subnet, family: 'ipv4' as const }, ...(l.ipv6Subnet ? [{ prefix: l.ipv6Subnet, family: 'ipv6' as const }] : [])];
  if (bgpBackend && bgpConf) {
    // the speaker's routes and session changes reconcile like lease changes do
    speaker = new BgpSpeaker({ config: bgpConf, routerId: bgpConf.routerId!, nextHops: { v4: node.publicIP, ...(node.publicIPv6 ? { v6: node.publicIPv6 } : {}) }, sourceAddress: { v4: node.publicIP, ...(node.publicIPv6 ? { v6: node.publicIPv6 } : {}) }, dataDir: o.dataDir, log: log.child({ subsys: 'bgp' }), onChange: () => schedule() });
    bgpBackend.useSpeaker(speaker);
    speaker.setOwnPrefixes(ownPrefixes(held.lease));
    try {
      await speaker.start();
    } catch (e) {
      return undo(e);
    }
  }
  let running = false;
  let again = false;
  let stopped = false;
  // lease events reconcile against the state known from the last pass; the periodic resync
  // (and any pass after a failure) reads the kernel in full and repairs drift
  let wantFull = true;
  const watcher = new LeaseWatcher(
    store,
    () => {
      tracker?.changeSeen();
      schedule();
    },
    log.child({ subsys: 'leases' }),
    prefix,
    { onReset: () => tracker?.watchReset(), onError: () => tracker?.storeError('watch') },
  );
  const peersNow = () => [...watcher.leases.values()].filter((l) => l.subnet !== held.lease.subnet);
  const reconcileNow = async () => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    const peers = peersNow();
    const full = wantFull;
    const tok = tracker?.passStart(peers);
    try {
      wantFull = false;
      // the device is part of the datapath: a full pass sets it up again when it was deleted or
      // changed by hand, as at start (its routes, neighbours and FDB entries follow in this pass)
      if (full) await repairDevice();
      // one pidfile read and one /proc look per pass
      if (tundOpts && !findTund(tundOpts.dataDir)) {
        // the datapath died (or was stopped) under a running agent: start it again; the routes
        // are reconciled whether or not that works (the next pass tries again)
        log.error('podnet-tund is not running: starting it again', { dataDir: tundOpts.dataDir });
        try {
          writePeers(tundOpts.dataDir, readPeers(tundOpts.dataDir) ?? { locals, peers: [] });
          tund = await ensureTund(tundOpts);
        } catch (e) {
          log.error('cannot start podnet-tund (retried on the next pass)', { error: (e as Error).message });
        }
      }
      // the lease may have been taken again (another subnet after an outage): announce what is held
      speaker?.setOwnPrefixes(ownPrefixes(held.lease));
      const report = await reconciler.reconcile(held.lease, peers, { full });
      for (const err of report.errors) log.error('peer refused', { ...err });
      // the userspace datapath (tun) takes the peers of the plan just applied
      if (report.datapath && backend.syncDatapath) await backend.syncDatapath(report.datapath);
      if (tok) tracker?.passDone(tok, full, report);
    } catch (e) {
      wantFull = true;
      if (tok) tracker?.passFailed(tok, full, e as Error);
      log.error('reconcile failed (retried on the next change or resync)', { error: (e as Error).message });
    } finally {
      running = false;
      if (again && !stopped) {
        again = false;
        schedule();
      }
    }
  };
  const repairDevice = async () => {
    const again = await backend.ensureDevice({ kernel, ns, own: held.lease, log });
    if (again.action === 'none') return;
    log.warn('backend device repaired', { backend: backend.type, device: again.device, action: again.action, reasons: again.reasons });
    tracker?.deviceRepaired(again.action);
    // a stopped podnet-tund is started again by the pass's own check
    await takeDevice(again);
  };
  // events only schedule work; a burst of changes becomes one pass
  const schedule = () => {
    if (stopped || timer) return;
    timer = setTimeout(() => {
      timer = undefined;
      void reconcileNow();
    }, 5);
  };
  await watcher.start();
  if (tracker) {
    // readiness: the kernel holds what the plan wants now (a dry run), podnet-tund runs, subnet.env is there
    tracker.probes.subnetFile = () => existsSync(o.subnetFile);
    // until startProxy hands over the proxier's status: not ready (its first sync has not run)
    if (o.proxyMode && o.proxyMode !== 'off') tracker.probes.proxy = () => undefined;
    tracker.probes.datapath = async () => {
      const out: string[] = [];
      if (tundOpts && !findTund(tundOpts.dataDir)) out.push('datapath not programmed: podnet-tund is not running');
      const ops = await reconciler.pending(held.lease, peersNow());
      if (ops.length) out.push(`datapath not programmed: ${ops.length} change(s) pending (drift not repaired yet): ${ops.slice(0, 3).map(describeOp).join('; ')}${ops.length > 3 ? '; …' : ''}`);
      return out;
    };
    tracker.probes.state = () => ({ backend: backend.type, device: dev?.device, mtu: podMtu, subnetFile: o.subnetFile, programmed: reconciler.knownState() ?? null, ...(speaker ? { bgp: speaker.status() } : {}), ...(tundOpts ? { tund: readTundStats(tundOpts.dataDir) ?? null } : {}) });
    tracker.metrics?.setSources({ ...(tundOpts ? { tundStats: () => readTundStats(tundOpts.dataDir) } : {}), ...(speaker ? { bgpStatus: () => speaker!.status() } : {}) });
  }
  const proxy = o.proxyMode && o.proxyMode !== 'off' ? await startProxy(o, store, { name: o.nodeName, nodeIPs: [node.publicIP, ...(node.publicIPv6 ? [node.publicIPv6] : [])], clusterCIDRs: clusterCidrs, nodePortRange: o.nodePortRange ?? [30000, 32767] }) : undefined;
  const resync = setInterval(() => {
    wantFull = true;
    schedule();
    // the lease view too: a watch stuck in reconnect backoff after a store outage must not keep
    // a new peer out for longer than one resync period (a change found schedules a pass itself)
    watcher.relist().catch((e: Error) => (tracker?.storeError('list'), log.warn('re-listing leases failed (the watch still runs)', { error: e.message })));
  }, o.resyncSeconds * 1000);

  // keep the lease alive; a store outage leaves the datapath as it is
  const keepAlive = setInterval(async () => {
    try {
      if (!(await store.keepAlive(held.leaseId))) {
        tracker?.renewal('expired');
        log.warn('subnet lease expired (store outage longer than its TTL?); taking it again');
        held = await acquireLease({ store, conf, prefix, ttlSeconds: o.leaseTtl, publicIP: node.publicIP, publicIPv6: node.publicIPv6, nodeName: o.nodeName, backendData: held.lease.backendData, remembered: held.lease.subnet, log });
        tracker?.setLease(held.lease, true);
      } else tracker?.renewal('success');
    } catch (e) {
      tracker?.renewal('error');
      log.warn('cannot renew the subnet lease (store unreachable?); datapath unchanged', { error: (e as Error).message });
    }
  }, Math.max(500, (o.leaseTtl * 1000) / 3));

  return {
    lease: () => held.lease,
    ...(speaker ? { bgpStatus: () => speaker!.status() } : {}),
    async stop() {
      stopped = true;
      clearInterval(resync);
      clearInterval(keepAlive);
      if (timer) clearTimeout(timer);
      watcher.close();
      await proxy?.stop();
      // a stopping node withdraws its routes (the peers drop them now); kill -9 leaves them to
      // graceful restart at the peers
      await speaker?.stop('withdraw').catch((e: Error) => log.warn('BGP shutdown', { error: e.message }));
      // the lease stays: a restarted agent takes the same subnet back and adopts the datapath
      // (podnet-tund too: it keeps forwarding while the agent is away)
      await store.close().catch(() => {});
    },
  };
}

/**
 * The bgp backend's settings for this node: net-conf's, with the agent's --bgp-asn/--bgp-peer,
 * checked before anything is touched (bad ones exit 2).
 */
function bgpNodeConfig(conf: NetConf, o: ClusterOptions, node: NodeIdentity): BgpConfig {
  const cfg = applyOverrides(conf.backend.bgp!, { asn: o.bgpAsn, peers: o.bgpPeers });
  const own = new Set([node.publicIP, node.publicIPv6].filter(Boolean));
  for (const p of cfg.peers) if (own.has(p.address)) throw new Error(`BGP peer ${p.address} is this node's own address`);
  if (cfg.peers.length === 0) o.log.warn('bgp backend without peers: the node\'s subnet is announced to nobody (set Backend.Peers or --bgp-peer)');
  BgpSpeaker.preflight(cfg);
  return { ...cfg, routerId: cfg.routerId ?? node.publicIP };
}

/** The service proxy inside the agent: a Proxier fed from the store's Service and EndpointSlice keys. */
async function startProxy(o: ClusterOptions, store: Store, node: ProxyNode): Promise<{ stop(): Promise<void> }> {
  const tracker = o.tracker;
  const { createEngine } = await import('../proxy/engines/index.js');
  const { Proxier } = await import('../proxy/proxier.js');
  const { startStoreSource } = await import('../proxy/store-source.js');
  const log = o.log.child({ subsys: 'proxy' });
  const engine = await createEngine(o.proxyMode as ProxyMode);
  const proxier = new Proxier({ engine, node, log, resyncIntervalMs: Math.max(o.resyncSeconds, 60) * 1000, ...(tracker ? { onSync: (r) => tracker.proxySync(r as typeof r & { kind: 'full' | 'partial' }), onSyncError: (kind) => tracker.proxySyncFailed(kind) } : {}) });
  if (tracker) {
    tracker.probes.proxy = () => proxier.status();
    const prev = tracker.probes.state;
    tracker.probes.state = () => ({ ...(prev?.() as object), proxy: { mode: o.proxyMode, ...proxier.status(), ports: (proxier.model()?.ports ?? []).map((p) => ({ id: p.id, protocol: p.protocol, port: p.port, clusterIPs: p.clusterIPs, externalIPs: p.externalIPs, nodePort: p.nodePort, endpoints: p.endpoints })) } });
  }
  const source = await startStoreSource(store, proxier, log);
  const first = await proxier.sync().catch((e: Error) => {
    log.error('first proxy sync failed (retrying)', { error: e.message });
    return undefined;
  });
  proxier.start();
  log.info('service proxy running', { mode: o.proxyMode, nodeIPs: node.nodeIPs, clusterCIDRs: node.clusterCIDRs, ports: first?.ports, ms: first ? Math.round(first.ms) : undefined });
  return {
    async stop() {
      source.close();
      await proxier.stop();
    },
  };
}

export { NetConfError };
