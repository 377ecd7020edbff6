// `podnet proxy cleanup`: removes what every engine may have created, like `kube-proxy --cleanup`.
import type { EngineOptions } from './engine.js';
import { createEngine, PROXY_MODES } from './engines/index.js';

export interface CleanupStep {
  what: string;
  ok: boolean;
  error?: string;
}

export async function cleanupAll(opts: Pick<EngineOptions, 'netns'>): Promise<CleanupStep[]> {
  const steps: CleanupStep[] = [];
  const targets: { what: string; opts: EngineOptions; mode: (typeof PROXY_MODES)[number] }[] = [
    { what: 'nftables table inet podnet-proxy', mode: 'nftables', opts },
    { what: 'iptables-nft PODNET chains', mode: 'iptables', opts: { ...opts, iptablesBackend: 'nft' } },
    { what: 'iptables-legacy PODNET chains', mode: 'iptables', opts: { ...opts, iptablesBackend: 'legacy' } },
  ];
  for (const t of targets) {
    try {
      const e = await createEngine(t.mode, t.opts);
      await e.cleanup();
      e.close?.();
      steps.push({ what: t.what, ok: true });
    } catch (e) {
      steps.push({ what: t.what, ok: false, error: (e as Error).message });
    }
  }
  return steps;
}
