// Opens the cluster store named by a URL, flannel-style: the embedded file store for one
// machine or the lab, etcd for a real cluster. Each backend is imported only when chosen, so
// the CNI bundle and file-store agents never load gRPC.
import type { Store } from './types.js';

export type { KeyValue, Store, Watch, WatchEvent, WatchHandlers } from './types.js';

export interface OpenStoreOptions {
  /** etcd client URLs (for `etcd`), e.g. ["http://10.0.0.1:2379"] */
  endpoints?: string[];
  /** etcd key prefix */
  prefix?: string;
  /** file store: events kept for resuming watchers (default 10,000) */
  maxEvents?: number;
  /** file store: lease reaper period (default 500 ms) */
  reapIntervalMs?: number;
  /** file store: watcher poll period behind inotify (default 250 ms) */
  pollIntervalMs?: number;
  /** etcd: per-attempt deadline of unary calls (default 2 s) */
  callTimeoutMs?: number;
}

/**
 * @param url `file:/path/to/dir` (state.json inside), `file:/path/to/name.json`, `file:///path`,
 *   `etcd` (endpoints from opts.endpoints) or `etcd://host:2379,host:2379`
 */
export async function openStore(url: string, opts: OpenStoreOptions = {}): Promise<Store> {
  if (url.startsWith('file:')) {
    let path = url.slice('file:'.length);
    // file:///x is the URL spelling of /x; file://host/x is not supported
    if (path.startsWith('//')) {
      path = path.slice(2);
      if (!path.startsWith('/')) throw new Error(`store URL ${url}: use file:/path or file:///path`);
    }
    if (!path) throw new Error(`store URL ${url}: no path`);
    const { FileStore } = await import('./file-store.js');
    return new FileStore(decodeURIComponent(path), opts);
  }
  if (url === 'etcd' || url.startsWith('etcd:')) {
    const inline = url.startsWith('etcd://') ? url.slice('etcd://'.length).split(',').filter(Boolean) : [];
    const endpoints = opts.endpoints && opts.endpoints.length > 0 ? opts.endpoints : inline;
    if (endpoints.length === 0) throw new Error(`store URL ${url}: no etcd endpoints (give --etcd-endpoints)`);
    const { EtcdStore } = await import('./etcd-store.js');
    return new EtcdStore({ endpoints, prefix: opts.prefix, callTimeoutMs: opts.callTimeoutMs });
  }
  throw new Error(`unknown store URL ${JSON.stringify(url)}: expected file:/path or etcd`);
}
