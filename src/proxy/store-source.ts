// Feeds a Proxier from the cluster store: one key per Service and per EndpointSlice
// (see document.ts), listed once and then watched; a watch that cannot resume re-lists.
import type { Store, Watch, WatchEvent } from '../store/types.js';
import type { Logger } from '../util/log.js';
import { SERVICES_PREFIX, SLICES_PREFIX } from './document.js';
import type { RawEndpointSlice, RawService } from './model.js';
import type { Proxier } from './proxier.js';

export interface StoreSource {
  close(): void;
}

function nsName(key: string, prefix: string): [string, string] | undefined {
  const rest = key.slice(prefix.length).split('/');
  return rest.length === 2 && rest[0] && rest[1] ? [rest[0], rest[1]] : undefined;
}

function parse<T>(key: string, value: string, log: Logger): T | undefined {
  try {
    const v = JSON.parse(value) as T;
    if (typeof v !== 'object' || v === null) throw new Error('not a JSON object');
    return v;
  } catch (e) {
    log.warn('ignoring an unparsable object in the store', { key, error: (e as Error).message });
    return undefined;
  }
}

export async function startStoreSource(store: Store, proxier: Proxier, log: Logger): Promise<StoreSource> {
  const watches: Watch[] = [];
  let closed = false;

  const relist = async () => {
    const [svcs, slices] = await Promise.all([store.list(SERVICES_PREFIX), store.list(SLICES_PREFIX)]);
    const services = svcs.kvs.map((kv) => parse<RawService>(kv.key, kv.value, log)).filter((x): x is RawService => !!x);
    const endpointSlices = slices.kvs.map((kv) => parse<RawEndpointSlice>(kv.key, kv.value, log)).filter((x): x is RawEndpointSlice => !!x);
    proxier.replaceAll({ services, endpointSlices });
    return { svcRev: svcs.revision, sliceRev: slices.revision };
  };

  const start = async () => {
    const { svcRev, sliceRev } = await relist();
    if (closed) return;
    const onReset = (reason: string) => {
      log.warn('service watch reset; re-listing', { reason });
      for (const w of watches.splice(0)) w.close();
      void start().catch((e) => log.error('re-listing services failed', { error: (e as Error).message }));
    };
    const watchKind = <T>(prefix: string, rev: number, what: string, put: (v: T) => void, del: (ns: string, name: string) => void): Watch =>
      store.watch(prefix, rev, {
        onEvent: (ev: WatchEvent) => {
          if (ev.type === 'put') {
            const v = parse<T>(ev.kv.key, ev.kv.value, log);
            if (v) put(v);
          } else {
            const k = nsName(ev.key, prefix);
            if (k) del(k[0], k[1]);
          }
        },
        onReset,
        onError: (e) => log.warn(`${what} watch error (retrying)`, { error: e.message }),
      });
    watches.push(
      watchKind<RawService>(SERVICES_PREFIX, svcRev, 'service', (v) => proxier.putService(v), (ns, n) => proxier.deleteService(ns, n)),
      watchKind<RawEndpointSlice>(SLICES_PREFIX, sliceRev, 'endpoint slice', (v) => proxier.putSlice(v), (ns, n) => proxier.deleteSlice(ns, n)),
    );
  };
  await start();
  return {
    close() {
      closed = true;
      for (const w of watches.splice(0)) w.close();
    },
  };
}
