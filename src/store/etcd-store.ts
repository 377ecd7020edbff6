// The etcd v3 store, through the `etcd3` npm client (1.1.2 works with etcd 3.4).
//
// Design notes:
// - etcd3 (and gRPC with it) is imported lazily: the CNI bundle imports src/store/index.ts's
//   types only, and an agent on the file store never loads gRPC.
// - Everything goes through the raw KV/Lease/Watch RPCs rather than etcd3's high-level helpers:
//   * etcd3's Lease object keeps itself alive in the background and re-grants on loss; our seam
//     wants "keepAlive returns false once the lease has expired" so the caller re-acquires its
//     subnet through create-if-absent (flannel's behaviour), hence LeaseGrant/LeaseKeepAlive/
//     LeaseRevoke by hand.
//   * etcd3's Watcher resumes from `header.revision + 1` of its last response. That header is the
//     store's *current* revision, which is ahead of the delivered events while a watch started at
//     an old revision is still catching up (etcd sends the backlog in batches of 1,000
//     revisions), so a disconnect in that window would skip events. We track the last delivered
//     event revision ourselves and resume from it.
// - Lease ids: etcd ids are int64 and server-chosen ids usually exceed 2^53, which a JS number
//   cannot hold. We choose the id ourselves (LeaseGrant accepts one) below 2^53. Keys attached to
//   leases granted by other clients (etcdctl) may report a rounded lease id.
// - Retries: etcd3 retries a failed unary call on another endpoint (3 attempts). A write whose
//   outcome is unknown (connection lost mid-call) may still have been applied, so a retried create
//   can report false for a key this store wrote itself: callers treat false as "re-read", which
//   they must do anyway.
// - Failover (a member killed, or every member down and back):
//   * etcd3's default per-host circuit breaker (3 consecutive failures open it for 5 s, a failed
//     probe for 5 s more) is replaced by MemberSkip below: during a full outage every member's
//     breaker opened, and once etcd was back each agent was refused ("circuit breaker is open")
//     for 5 s or more without asking anyone. MemberSkip passes a member over for a second after
//     it failed, and never passes over every member.
//   * gRPC's reconnect backoff (1 s × 1.6 per failed attempt up to 120 s, reset only by a
//     successful connect) is capped at 1 s: until its next attempt a member that is back gets no
//     calls (they wait "for LB pick" until their deadline), and after a long outage that attempt
//     could be a minute or two away.
//   * etcd3 counts a stream's *opening* as a success of its member, so a dead member is not
//     passed over for streams: a lease renewal tries another member when one fails (with one of
//     three members killed a third of the renewals went to it, and 2 of 9 leases with a 10 s TTL
//     expired within 40 s), and a watch etcd has not confirmed within the call deadline is
//     opened again elsewhere.
//   * etcd3 reports the cancel of a stream still open for writing as a failure of its member and
//     closes all of that member's channels; every healthy lease renewal did that. Streams of ours
//     that are fine are ended before they are cancelled.
import { randomInt } from 'node:crypto';
import type { Etcd3, IKeyValue, IOptions, IWatchResponse } from 'etcd3';
import type { KeyValue, Store, Watch, WatchEvent, WatchHandlers } from './types.js';

export interface EtcdStoreOptions {
  /** client URLs, e.g. http://10.0.0.1:2379 (the scheme is optional) */
  endpoints: string[];
  /** prepended to every key (flannel's --etcd-prefix is a key prefix too); stripped on the way out */
  prefix?: string;
  /**
   * per-attempt deadline for unary calls (default 2 s). Short on purpose: a follower that has
   * not yet noticed its leader died forwards the write into the void and etcd only answers after
   * its request timeout (5 s + 2 election timeouts); a short deadline lets etcd3 retry on
   * another member once the election is over (measured: 5 s → about 2 s to the first write).
   */
  callTimeoutMs?: number;
  /** connection timeout (default 3 s) */
  dialTimeoutMs?: number;
}

type Duplex<Req, Res> = {
  write(req: Req): void;
  on(ev: 'data', fn: (res: Res) => void): unknown;
  on(ev: 'error', fn: (err: Error) => void): unknown;
  on(ev: 'end', fn: () => void): unknown;
  cancel(): void;
  end(): void;
};

type MemberPolicy = ReturnType<NonNullable<NonNullable<IOptions['faultHandling']>['host']>>;

/**
 * The per-member fault policy (see the design notes): a member whose call failed (`isFailure`:
 * etcd3's isRecoverableError, i.e. gRPC and network errors) is passed over for `skipMs`, unless
 * every member is being passed over, in which case all are tried (the cluster may just be back).
 * Exported for the unit test.
 */
export class MemberSkip {
  private readonly hosts = new Set<string>();
  private readonly failedAt = new Map<string, number>();
  constructor(
    private readonly isFailure: (e: Error) => boolean,
    readonly skipMs = 1000,
    private readonly now: () => number = Date.now,
  ) {}

  /** true while the member is passed over: it failed within skipMs and another member did not */
  skipped(host: string): boolean {
    if (!this.recentlyFailed(host)) return false;
    for (const h of this.hosts) if (!this.recentlyFailed(h)) return true;
    return false;
  }

  policy(host: string): MemberPolicy {
    this.hosts.add(host);
    const execute = async <T>(fn: (ctx: { signal: AbortSignal }) => PromiseLike<T> | T): Promise<T> => {
      // etcd3 moves on to the next member on an error of this kind (cockatiel's BrokenCircuitError)
      if (this.skipped(host)) throw Object.assign(new Error(`etcd member ${host} failed less than ${this.skipMs} ms ago`), { isBrokenCircuitError: true });
      try {
        const r = await fn({ signal: new AbortController().signal });
        this.failedAt.delete(host);
        return r;
      } catch (e) {
        if (e instanceof Error && this.isFailure(e)) this.failedAt.set(host, this.now());
        throw e;
      }
    };
    const noEvent = () => ({ dispose() {} });
    return { execute, onSuccess: noEvent, onFailure: noEvent } as unknown as MemberPolicy;
  }

  private recentlyFailed(host: string): boolean {
    const t = this.failedAt.get(host);
    return t !== undefined && this.now() - t < this.skipMs;
  }
}

/** The first key after every key starting with prefix (etcd's range_end for a prefix). */
function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] < 0xff) {
      end[i]++;
      return end.subarray(0, i + 1);
    }
  }
  // all 0xff (or empty prefix): to the end of the keyspace
  return Buffer.from([0]);
}

export class EtcdStore implements Store {
  readonly describe: string;
  private readonly prefix: string;
  /** per-attempt deadline of unary calls; also how long a stream may stay unanswered */
  readonly callTimeoutMs: number;
  private clientP: Promise<Etcd3> | undefined;
  private watches = new Set<EtcdWatch>();
  private closed = false;

  constructor(private readonly opts: EtcdStoreOptions) {
    if (!opts.endpoints || opts.endpoints.length === 0) throw new Error('etcd store: no endpoints given (--etcd-endpoints)');
    this.prefix = opts.prefix ?? '';
    this.callTimeoutMs = opts.callTimeoutMs ?? 2000;
    this.describe = `etcd:${opts.endpoints.join(',')}${this.prefix ? ` prefix ${this.prefix}` : ''}`;
  }

  /** lazily loads etcd3 and connects */
  client(): Promise<Etcd3> {
    if (this.closed) return Promise.reject(new Error(`${this.describe}: store is closed`));
    this.clientP ??= import('etcd3').then(({ Etcd3, isRecoverableError }) => {
      const members = new MemberSkip(isRecoverableError);
      return new Etcd3({
        // etcd3 wants host:port; accept URLs as flannel's --etcd-endpoints gives them
        hosts: this.opts.endpoints.map((e) => e.replace(/^https?:\/\//, '')),
        dialTimeout: this.opts.dialTimeoutMs ?? 3000,
        // keepalive pings notice a vanished peer (power loss, partition) that sends no RST
        grpcOptions: {
          'grpc.keepalive_time_ms': 10_000,
          'grpc.keepalive_timeout_ms': 5000,
          'grpc.keepalive_permit_without_calls': 1,
          // a member that was down is connected again within a second of its return (design notes)
          'grpc.initial_reconnect_backoff_ms': 250,
          'grpc.max_reconnect_backoff_ms': 1000,
        },
        // streams (watch, keepalive) must not get a deadline; unary calls must, or an unreachable
        // cluster hangs the agent forever
        defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + this.callTimeoutMs }),
        // instead of etcd3's per-host circuit breaker (design notes)
        faultHandling: { host: (h) => members.policy(h) },
      });
    });
    return this.clientP;
  }

  private k(key: string): Buffer {
    return Buffer.from(this.prefix + key);
  }

  private unk(key: Buffer): string {
    const s = key.toString('utf8');
    return s.startsWith(this.prefix) ? s.slice(this.prefix.length) : s;
  }

  toKv(kv: IKeyValue): KeyValue {
    return { key: this.unk(kv.key), value: kv.value.toString('utf8'), modRevision: Number(kv.mod_revision), lease: Number(kv.lease) };
  }

  /** Runs an RPC, turning failures into errors that name the endpoints and the operation. */
  private async call<T>(op: string, fn: (c: Etcd3) => Promise<T>): Promise<T> {
    const c = await this.client();
    try {
      return await fn(c);
    } catch (e) {
      const err = e as Error;
      throw new Error(`${this.describe}: ${op} failed: ${err.message}`, { cause: err });
    }
  }

  async get(key: string): Promise<KeyValue | undefined> {
    const res = await this.call(`get ${key}`, (c) => c.kv.range({ key: this.k(key) }));
    return res.kvs.length > 0 ? this.toKv(res.kvs[0]) : undefined;
  }

  async list(prefix: string): Promise<{ kvs: KeyValue[]; revision: number }> {
    const p = this.k(prefix);
    // one Range call: its kvs and header.revision are one consistent snapshot
    const res = await this.call(`list ${prefix}`, (c) => c.kv.range({ key: p, range_end: prefixEnd(p), sort_order: 'Ascend', sort_target: 'Key' }));
    return { kvs: res.kvs.map((kv) => this.toKv(kv)), revision: Number(res.header.revision) };
  }

  create(key: string, value: string, lease?: number): Promise<boolean> {
    return this.compareAndSet(key, value, 0, lease);
  }

  async compareAndSet(key: string, value: string, expected: number, lease?: number): Promise<boolean> {
    const k = this.k(key);
    const compare =
      expected === 0
        ? { key: k, target: 'Create' as const, result: 'Equal' as const, create_revision: 0 }
        : { key: k, target: 'Mod' as const, result: 'Equal' as const, mod_revision: expected };
    const res = await this.call(`write ${key}`, (c) =>
      c.kv.txn({ compare: [compare], success: [{ request_put: { key: k, value: Buffer.from(value), lease: lease ? String(lease) : 0 } }] }),
    );
    return res.succeeded;
  }

  async delete(key: string, expected?: number): Promise<boolean> {
    const k = this.k(key);
    if (expected === undefined) {
      const res = await this.call(`delete ${key}`, (c) => c.kv.deleteRange({ key: k }));
      return Number(res.deleted) > 0;
    }
    // expected 0 means "must be absent": there is nothing to delete then
    if (expected === 0) return false;
    const res = await this.call(`delete ${key}`, (c) =>
      c.kv.txn({ compare: [{ key: k, target: 'Mod', result: 'Equal', mod_revision: expected }], success: [{ request_delete_range: { key: k } }] }),
    );
    return res.succeeded;
  }

  async grantLease(ttlSeconds: number): Promise<number> {
    for (let attempt = 0; ; attempt++) {
      const id = randomInt(1, 2 ** 47) * 64 + randomInt(0, 64); // < 2^53, safe as a JS number
      try {
        const res = await this.call(`grant lease (ttl ${ttlSeconds}s)`, (c) => c.leaseClient.leaseGrant({ TTL: ttlSeconds, ID: String(id) }));
        if (res.error) throw new Error(`${this.describe}: grant lease failed: ${res.error}`);
        return Number(res.ID);
      } catch (e) {
        // an id collision is astronomically unlikely, but etcd reports it, so pick another
        if (attempt < 3 && /lease already exists/.test((e as Error).message)) continue;
        throw e;
      }
    }
  }

  async keepAlive(lease: number): Promise<boolean> {
    // a renewal tries another member when one fails or does not answer (that one is passed over
    // next, see MemberSkip): etcd3 opens a stream on a random member, dead ones included, and
    // a lease whose renewals all went to a killed member expired under a healthy cluster
    const attempts = Math.max(2, this.opts.endpoints.length);
    let last: Error | undefined;
    for (let i = 0; i < attempts && !this.closed; i++) {
      try {
        return await this.keepAliveOnce(lease);
      } catch (e) {
        last = e as Error;
      }
    }
    throw last ?? new Error(`${this.describe}: store is closed`);
  }

  private keepAliveOnce(lease: number): Promise<boolean> {
    return this.call(`keep lease ${lease} alive`, async (c) => {
      const stream = (await c.leaseClient.leaseKeepAlive()) as unknown as Duplex<{ ID: string }, { TTL: string; ID: string }>;
      let answered = false;
      try {
        return await new Promise<boolean>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`no answer within ${this.callTimeoutMs} ms`)), this.callTimeoutMs);
          stream.on('data', (res) => {
            clearTimeout(timer);
            answered = true;
            // etcd answers TTL 0 for a lease it no longer has (expired or revoked)
            resolve(Number(res.TTL) > 0);
          });
          stream.on('error', (err) => {
            clearTimeout(timer);
            reject(err);
          });
          stream.on('end', () => {
            clearTimeout(timer);
            reject(new Error('keepalive stream ended'));
          });
          stream.write({ ID: String(lease) });
        });
      } finally {
        // an answered stream is ended before it is cancelled: etcd3 reports the cancel of a stream
        // still open for writing to the member's policy as a failure (and closes its channels)
        if (answered) stream.end();
        stream.cancel();
      }
    });
  }

  async revokeLease(lease: number): Promise<void> {
    try {
      await this.call(`revoke lease ${lease}`, (c) => c.leaseClient.leaseRevoke({ ID: String(lease) }));
    } catch (e) {
      // revoking a lease that already expired is success: its keys are gone either way
      if (/lease not found/.test((e as Error).message)) return;
      throw e;
    }
  }

  watch(prefix: string, fromRevision: number, handlers: WatchHandlers): Watch {
    if (this.closed) throw new Error(`${this.describe}: store is closed`);
    const w = new EtcdWatch(this, this.k(prefix), fromRevision, handlers, () => this.watches.delete(w));
    this.watches.add(w);
    void w.connect();
    return w;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    for (const w of [...this.watches]) w.close();
    this.closed = true;
    if (this.clientP) (await this.clientP.catch(() => undefined))?.close();
  }
}

/** Cancels a stream of ours that is fine: ended first, so that etcd3 does not report its member failed. */
function endAndCancel(stream: { end(): void; cancel(): void }): void {
  try {
    stream.end();
    stream.cancel();
  } catch {
    // already gone
  }
}

/** One watch on its own gRPC stream, re-created from the last delivered revision after any failure. */
class EtcdWatch implements Watch {
  private last: number;
  private stream: Duplex<unknown, IWatchResponse> | undefined;
  private closed = false;
  private backoffMs = 100;
  private retryTimer: NodeJS.Timeout | undefined;
  private createdTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: EtcdStore,
    private readonly key: Buffer,
    fromRevision: number,
    private readonly h: WatchHandlers,
    private readonly onClose: () => void,
  ) {
    this.last = fromRevision;
  }

  async connect(): Promise<void> {
    if (this.closed) return;
    let stream: Duplex<unknown, IWatchResponse>;
    try {
      const c = await this.store.client();
      stream = (await c.watchClient.watch()) as unknown as Duplex<unknown, IWatchResponse>;
    } catch (e) {
      return this.drop(e as Error, undefined);
    }
    if (this.closed) return endAndCancel(stream);
    this.stream = stream;
    stream.on('data', (res) => this.onResponse(res, stream));
    stream.on('error', (err) => this.drop(err, stream));
    stream.on('end', () => this.drop(new Error('watch stream ended'), stream));
    stream.write({
      create_request: { key: this.key, range_end: prefixEnd(this.key), start_revision: this.last + 1, progress_notify: true },
    });
    // etcd confirms a watch at once; one not confirmed within the call deadline waits on a member
    // that does not answer (unreachable, still starting) and would wait, without an error, until
    // gRPC's keepalive gives up (15 s): it is opened again, elsewhere (its cancel makes etcd3
    // report that member failed)
    this.createdTimer = setTimeout(() => this.drop(new Error(`etcd did not confirm the watch within ${this.store.callTimeoutMs} ms`), stream), this.store.callTimeoutMs);
  }

  private onResponse(res: IWatchResponse, stream: Duplex<unknown, IWatchResponse>): void {
    if (this.closed || stream !== this.stream) return;
    clearTimeout(this.createdTimer);
    if (Number(res.compact_revision) > 0) {
      // etcd no longer has the events after our revision: the caller must re-list
      this.close();
      this.h.onReset?.(`revision ${this.last + 1} is compacted (oldest kept: ${res.compact_revision})`);
      return;
    }
    if (res.canceled) return this.drop(new Error(`watch canceled by etcd: ${res.cancel_reason || 'no reason given'}`), stream);
    if (res.created) return;
    // a healthy response: the next failure starts its backoff from the beginning again
    this.backoffMs = 100;
    let maxRev = this.last;
    for (const ev of res.events ?? []) {
      const rev = Number(ev.kv.mod_revision);
      // after a reconnect etcd starts at last+1, so this only guards against surprises
      if (rev <= this.last) continue;
      maxRev = Math.max(maxRev, rev);
      const we: WatchEvent =
        ev.type === 'Delete'
          ? { type: 'delete', key: this.store.toKv(ev.kv).key, revision: rev }
          : { type: 'put', kv: this.store.toKv(ev.kv), revision: rev };
      try {
        this.h.onEvent(we);
      } catch (err) {
        this.h.onError?.(err as Error);
      }
      if (this.closed) return;
    }
    // etcd never splits one revision's events across responses, so the whole revision is delivered
    this.last = maxRev;
  }

  private drop(err: Error, stream: Duplex<unknown, IWatchResponse> | undefined): void {
    if (this.closed || (stream && stream !== this.stream)) return;
    this.stream = undefined;
    clearTimeout(this.createdTimer);
    try {
      stream?.cancel();
    } catch {
      // already gone
    }
    this.h.onError?.(new Error(`${this.store.describe}: watch interrupted, resuming from revision ${this.last + 1}: ${err.message}`, { cause: err }));
    const delay = this.backoffMs * (0.5 + Math.random());
    // capped low: the lease watch is how a node learns of new peers; a retry every ≤ 3 s costs
    // etcd one failed stream open
    this.backoffMs = Math.min(this.backoffMs * 2, 2000);
    this.retryTimer = setTimeout(() => void this.connect(), delay);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.createdTimer);
    const s = this.stream;
    this.stream = undefined;
    if (s) endAndCancel(s);
    this.onClose();
  }
}
