// The rule-engine seam: one interface, one folder per engine (engines/nftables, engines/iptables).
// Engines render a ProxyModel purely and apply it to the network namespace they were made for.
import type { ProxyModel, ProxyNode, ServicePort } from './model.js';

export type ProxyMode = 'nftables' | 'iptables';

export interface EngineOptions {
  /** a netns path (/run/netns/x or /proc/PID/ns/net); default: the caller's own namespace */
  netns?: string;
  /** iptables engine: which backend binary family ('nft' = iptables-nft, 'legacy' = iptables-legacy) */
  iptablesBackend?: 'nft' | 'legacy';
}

export interface SyncResult {
  /** 'full' replaced everything the engine owns; 'partial' touched only what changed */
  kind: 'full' | 'partial';
  /** how many kernel objects (rules, chains, elements) the transaction carried */
  changes: number;
}

/**
 * Endpoints programmed per frontend: frontend key -> set of "ip/port" (IPv6 as is).
 * Frontend keys: `${proto}/${ip}/${port}` for cluster and external IPs, `${proto}/nodeport/${port}`.
 */
export type ProgrammedEndpoints = Map<string, Set<string>>;

/** Which ports differ between prev and next, when the caller knows (saves engines a scan of every port). */
export interface ChangedPorts {
  before: ServicePort[];
  after: ServicePort[];
}

export interface ProxyEngine {
  readonly mode: ProxyMode;
  /** The complete ruleset for this model, as the engine's own tool would load it (nft -f / iptables-restore). Pure. */
  render(model: ProxyModel, node: ProxyNode): string;
  /** Replaces everything the engine owns with this model in one atomic transaction. */
  fullSync(model: ProxyModel, node: ProxyNode): Promise<SyncResult>;
  /**
   * Moves the kernel from `prev` (the last model applied successfully) to `next`, touching only
   * what changed. May fall back to a full sync itself when a change is structural; throws on failure
   * (the caller then retries with fullSync).
   */
  partialSync(prev: ProxyModel, next: ProxyModel, node: ProxyNode, changed?: ChangedPorts): Promise<SyncResult>;
  /** What the kernel currently has (for conntrack decisions at start: flush only what really changed). */
  programmedEndpoints(node: ProxyNode): Promise<ProgrammedEndpoints>;
  /** Removes everything this engine created. Idempotent. */
  cleanup(): Promise<void>;
  close?(): void;
}

export function frontendKeys(p: { protocol: string; clusterIPs: string[]; externalIPs: string[]; port: number; nodePort?: number }): string[] {
  const keys = [...p.clusterIPs, ...p.externalIPs].map((ip) => `${p.protocol}/${ip}/${p.port}`);
  if (p.nodePort !== undefined) keys.push(`${p.protocol}/nodeport/${p.nodePort}`);
  return keys;
}
