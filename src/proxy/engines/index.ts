// Engine factory: the proxy, the CLI and the benchmarks pick an engine by mode.
import type { EngineOptions, ProxyEngine, ProxyMode } from '../engine.js';
import { NftablesEngine } from './nftables/engine.js';

export const PROXY_MODES: readonly ProxyMode[] = ['nftables', 'iptables'];

export async function createEngine(mode: ProxyMode, opts: EngineOptions = {}): Promise<ProxyEngine> {
  switch (mode) {
    case 'nftables':
      return new NftablesEngine(opts);
    case 'iptables': {
      // loaded on demand: most nodes never run it
      const { IptablesEngine } = await import('./iptables/engine.js');
      return new IptablesEngine(opts);
    }
    default:
      throw new Error(`unknown proxy mode ${JSON.stringify(mode)} (nftables or iptables)`);
  }
}
