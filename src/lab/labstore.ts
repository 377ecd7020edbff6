// The lab's access to its cluster store, for the service objects it writes. The file store is a
// directory every process on the machine shares, so the lab opens it itself; etcd listens on the
// underlay, which the lab process (in the root namespace) is not on, so etcdctl runs in the
// fabric namespace. Keys are raw (the agents open the store without a prefix).
import { join } from 'node:path';
import { FileStore } from '../store/file-store.js';
import { etcdEndpoints } from './agents.js';
import type { LabState } from './state.js';
import { runAsync } from './sys.js';

export interface LabKv {
  key: string;
  value: string;
}

export interface LabStore {
  readonly describe: string;
  list(prefix: string): Promise<LabKv[]>;
  put(key: string, value: string): Promise<void>;
  /** false when the key was absent */
  del(key: string): Promise<boolean>;
  close(): Promise<void>;
}

export function openLabStore(s: LabState): LabStore {
  return s.store === 'etcd' ? new EtcdctlStore(s) : new LabFileStore(join(s.dir, 'store'));
}

class LabFileStore implements LabStore {
  readonly describe: string;
  private readonly store: FileStore;
  constructor(dir: string) {
    this.store = new FileStore(dir);
    this.describe = `file:${dir}`;
  }
  async list(prefix: string): Promise<LabKv[]> {
    return (await this.store.list(prefix)).kvs.map((kv) => ({ key: kv.key, value: kv.value }));
  }
  async put(key: string, value: string): Promise<void> {
    // the store has compare-and-set, not a blind put: retry on a concurrent change
    for (let i = 0; i < 20; i++) {
      const cur = await this.store.get(key);
      if (await this.store.compareAndSet(key, value, cur?.modRevision ?? 0)) return;
    }
    throw new Error(`${this.describe}: ${key} kept changing under the write`);
  }
  del(key: string): Promise<boolean> {
    return this.store.delete(key);
  }
  close(): Promise<void> {
    return this.store.close();
  }
}

class EtcdctlStore implements LabStore {
  readonly describe: string;
  private readonly endpoints: string;
  constructor(private readonly s: LabState) {
    this.endpoints = etcdEndpoints(s).join(',');
    this.describe = `etcd ${this.endpoints}`;
  }
  private async etcdctl(args: string[], input?: string): Promise<string> {
    const r = await runAsync('ip', ['netns', 'exec', this.s.fabricNs, 'etcdctl', '--endpoints', this.endpoints, '--dial-timeout=2s', '--command-timeout=5s', ...args], {
      env: { ...process.env, ETCDCTL_API: '3' },
      input,
      timeoutMs: 20_000,
    });
    if (r.code !== 0) throw new Error(`${this.describe}: etcdctl ${args[0]} failed: ${(r.stderr || r.stdout).trim().split('\n').pop()}`);
    return r.stdout;
  }
  async list(prefix: string): Promise<LabKv[]> {
    const out = await this.etcdctl(['get', '--prefix', prefix, '-w', 'json']);
    const j = JSON.parse(out) as { kvs?: { key: string; value?: string }[] };
    return (j.kvs ?? []).map((kv) => ({ key: Buffer.from(kv.key, 'base64').toString('utf8'), value: Buffer.from(kv.value ?? '', 'base64').toString('utf8') }));
  }
  async put(key: string, value: string): Promise<void> {
    // the value on stdin: no JSON on a command line, no value mistaken for a flag
    await this.etcdctl(['put', key], value);
  }
  async del(key: string): Promise<boolean> {
    const out = await this.etcdctl(['del', key]);
    return out.trim() !== '0';
  }
  async close(): Promise<void> {}
}
