// Helper of bench/proxy.ts: loads podnet's proxy engines and Proxier if they are there, so that a
// missing or broken one becomes a "not available: <reason>" row instead of failing the benchmark.
import type { EngineOptions, ProxyEngine, ProxyMode } from '../src/proxy/engine.js';
import type { ProxyNode, RawEndpointSlice, RawService, ServiceState } from '../src/proxy/model.js';

export interface ProxierLike {
  replaceAll(state: ServiceState): void;
  putService(raw: RawService): void;
  putSlice(raw: RawEndpointSlice): void;
  sync(): Promise<{ kind: 'full' | 'partial' | 'none'; changes: number; ms: number }>;
}
/** `netns`: where the Proxier's conntrack cleaner works (never the root netns here) */
export type ProxierCtor = new (opts: { engine: ProxyEngine; node: ProxyNode; netns?: string; log?: unknown }) => ProxierLike;
export type CreateEngine = (mode: ProxyMode, opts?: EngineOptions) => Promise<ProxyEngine> | ProxyEngine;

export interface Podnet {
  createEngine?: CreateEngine;
  engineWhy?: string;
  Proxier?: ProxierCtor;
  proxierWhy?: string;
}

// Specifiers kept in variables: the modules may not exist yet when this is type-checked.
const ENGINES = '../src/proxy/engines/index.js';
const PROXIER = '../src/proxy/proxier.js';

function why(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  return m.split('\n')[0].slice(0, 160);
}

export async function loadPodnet(): Promise<Podnet> {
  const out: Podnet = {};
  try {
    const m = (await import(ENGINES)) as { createEngine?: unknown };
    if (typeof m.createEngine === 'function') out.createEngine = m.createEngine as CreateEngine;
    else out.engineWhy = `${ENGINES} exports no createEngine`;
  } catch (e) {
    out.engineWhy = `cannot load src/proxy/engines: ${why(e)}`;
  }
  try {
    const m = (await import(PROXIER)) as { Proxier?: unknown };
    if (typeof m.Proxier === 'function') out.Proxier = m.Proxier as ProxierCtor;
    else out.proxierWhy = `${PROXIER} exports no Proxier`;
  } catch (e) {
    out.proxierWhy = `cannot load src/proxy/proxier: ${why(e)}`;
  }
  return out;
}

export function errorText(e: unknown): string {
  return why(e);
}
