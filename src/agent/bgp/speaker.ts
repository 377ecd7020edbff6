// podnet's BGP speaker: one Session per configured peer, the listener that hands incoming
// connections to them, the node's own announcements, and the best path per prefix over every
// peer's Adj-RIB-In (RFC 4271 9.1). It originates the node's pod subnets and never re-advertises
// what it learns: a node is a leaf, the router (or a route reflector) is the transit.
import { createServer, type Server, type Socket } from 'node:net';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../../util/log.js';
import { canonicalIP, tryParseIP } from '../../util/ip.js';
import type { BgpConfig } from './config.js';
import { CeaseSub, ErrCode, type Family, type Prefix } from './messages.js';
import { encodeNotification } from './codec.js';
import { Session, type Announcement, type Path, type PeerStatus } from './session.js';
import { clearMd5Key, fdOf, md5Supported, setMd5Key } from './sockopt.js';

export interface LearnedRoute {
  prefix: Prefix;
  family: Family;
  nextHop: string;
  /** the peer it came from */
  peer: string;
  asPath: number[];
  stale: boolean;
}

export interface SpeakerOptions {
  config: BgpConfig;
  routerId: string;
  /** next hops of the node's announcements: its underlay addresses */
  nextHops: { v4: string; v6?: string };
  /** source addresses of outgoing sessions (default: the kernel's choice) */
  sourceAddress?: { v4?: string; v6?: string };
  /** where to accept connections (default: every address) */
  listenAddress?: string;
  /** where the speaker notes that it is running (an unclean end is a restart: the R bit) */
  dataDir?: string;
  log: Logger;
  /** the routes or a session's state changed (coalesce: called often) */
  onChange: () => void;
}

export interface SpeakerStatus {
  asn: number;
  routerId: string;
  listenPort: number;
  restarting: boolean;
  /** route selection waits for the peers' End-of-RIB after a start (RFC 4724 selection deferral) */
  converged: boolean;
  announced: Prefix[];
  peers: PeerStatus[];
  /** the best path per prefix, as the backend plans its routes from them */
  best: LearnedRoute[];
}

/** How long after a start podnet keeps the routes it finds while waiting for the peers' End-of-RIB. */
export const SELECTION_DEFERRAL_MAX_S = 60;

export class BgpSpeaker {
  private sessions = new Map<string, Session>();
  private servers: Server[] = [];
  private own: Announcement[] = [];
  private cache?: LearnedRoute[];
  private accepted = new Map<string, number>();
  readonly restarting: boolean;
  private convergedLatch = false;
  private deferTimer?: NodeJS.Timeout;
  private readonly marker?: string;
  private changeQueued = false;

  constructor(private readonly o: SpeakerOptions) {
    this.marker = o.dataDir ? join(o.dataDir, 'bgp-running') : undefined;
    // a marker left behind: the previous agent died without withdrawing (kill -9, crash)
    this.restarting = !!this.marker && existsSync(this.marker);
    const local = {
      asn: o.config.asn,
      routerId: o.routerId,
      gracefulRestart: o.config.gracefulRestart,
      restarting: this.restarting,
      sourceAddress: o.sourceAddress ?? {},
      announcements: () => this.own,
      changed: () => this.changed(),
      log: o.log,
    };
    for (const p of o.config.peers) this.sessions.set(p.address, new Session(p, local));
  }

  /** Checks what can be refused before anything starts: MD5 support when a peer has a password. */
  static preflight(config: BgpConfig): void {
    const signed = config.peers.filter((p) => p.password);
    if (signed.length === 0) return;
    const r = md5Supported();
    if (!r.ok) throw new Error(`BGP peer ${signed[0].address} has a Password, but this kernel cannot sign TCP segments (RFC 2385): ${r.reason}`);
  }

  async start(): Promise<void> {
    if (this.marker) {
      mkdirSync(this.o.dataDir!, { recursive: true });
      writeFileSync(this.marker, `${process.pid}\n`);
    }
    const port = this.o.config.listenPort;
    if (port > 0) {
      const v6Peers = this.o.config.peers.some((p) => tryParseIP(p.address)?.family === 6);
      const hosts = this.o.listenAddress ? [this.o.listenAddress] : ['0.0.0.0', ...(v6Peers ? ['::'] : [])];
      for (const host of hosts) this.servers.push(await this.listen(host, port));
    }
    const deferS = Math.min(SELECTION_DEFERRAL_MAX_S, this.o.config.gracefulRestart.restartTime);
    this.deferTimer = setTimeout(() => {
      if (!this.convergedLatch) this.o.log.warn('not every BGP peer sent End-of-RIB in time: routes are selected from what was learned', { afterSeconds: deferS });
      this.convergedLatch = true;
      this.changed();
    }, deferS * 1000);
    for (const s of this.sessions.values()) s.start();
    this.o.log.info('BGP speaker running', { asn: this.o.config.asn, routerId: this.o.routerId, port, peers: this.o.config.peers.map((p) => `${p.address} AS${p.asn}`), restarting: this.restarting });
  }

  private listen(host: string, port: number): Promise<Server> {
    const srv = createServer((sock) => this.onAccept(sock));
    return new Promise((resolve, reject) => {
      srv.once('error', (e: NodeJS.ErrnoException) => {
        reject(new Error(e.code === 'EADDRINUSE' ? `BGP: TCP port ${port} on ${host} is in use (another BGP daemon on this node?)` : `BGP: cannot listen on ${host} port ${port}: ${e.message}`));
      });
      srv.listen({ host, port, ipv6Only: host === '::' }, () => {
        srv.on('error', (e) => this.o.log.error('BGP listener error', { error: e.message }));
        // keys on the listener sign the accepted connections from that peer
        const fam = host.includes(':') ? 6 : 4;
        for (const p of this.o.config.peers) if (p.password && tryParseIP(p.address)?.family === fam) setMd5Key(fdOf(srv), p.address, p.password);
        resolve(srv);
      });
    });
  }

  private onAccept(sock: Socket): void {
    const raw = sock.remoteAddress ?? '';
    const addr = canonicalIP(raw.startsWith('::ffff:') ? raw.slice(7) : raw);
    const s = addr ? this.sessions.get(addr) : undefined;
    if (!s) {
      this.o.log.warn('BGP connection from an address that is not a configured peer: rejected', { from: raw });
      sock.on('error', () => {});
      sock.end(encodeNotification(ErrCode.CEASE, CeaseSub.CONNECTION_REJECTED));
      return;
    }
    s.accept(sock);
  }

  /** The node's own prefixes (its pod subnets): announced with its underlay address as next hop. */
  setOwnPrefixes(prefixes: { prefix: Prefix; family: Family }[]): void {
    const next: Announcement[] = [];
    for (const p of prefixes) {
      const nh = p.family === 'ipv4' ? this.o.nextHops.v4 : this.o.nextHops.v6;
      if (nh) next.push({ prefix: p.prefix, family: p.family, nextHop: nh });
    }
    if (JSON.stringify(next) === JSON.stringify(this.own)) return;
    this.own = next;
    for (const s of this.sessions.values()) s.announce();
  }

  private changed(): void {
    this.cache = undefined;
    if (!this.convergedLatch && this.allEndOfRib()) this.convergedLatch = true;
    // many changes in one tick (a burst of UPDATEs) are one notification; delivered after the
    // current I/O turn, never from inside start(): the owner may not be ready for it until start()
    // has resolved (the agent's scheduler is set up right after)
    if (this.changeQueued) return;
    this.changeQueued = true;
    setImmediate(() => {
      this.changeQueued = false;
      this.o.onChange();
    });
  }

  private allEndOfRib(): boolean {
    if (this.sessions.size === 0) return true;
    for (const s of this.sessions.values()) {
      if (s.state !== 'Established' || !s.negotiated) return false;
      for (const f of s.negotiated.families) if (!s.eorReceived.has(f)) return false;
    }
    return true;
  }

  /** After a start, route selection waits until every peer sent End-of-RIB (or the deferral time passed). */
  converged(): boolean {
    return this.convergedLatch;
  }

  /** The best path per prefix over every peer (RFC 4271 9.1.2.2, without IGP cost). */
  bestRoutes(): LearnedRoute[] {
    if (this.cache) return this.cache;
    const best = new Map<Prefix, { path: Path; s: Session }>();
    for (const s of this.sessions.values()) {
      for (const path of s.ribIn.values()) {
        const cur = best.get(path.prefix);
        if (!cur || better(path, s, cur.path, cur.s)) best.set(path.prefix, { path, s });
      }
    }
    this.cache = [...best.values()].map(({ path, s }) => ({ prefix: path.prefix, family: path.family, nextHop: path.nextHop, peer: s.peer.address, asPath: path.asPath, stale: path.stale }));
    return this.cache;
  }

  /** How many routes of each peer the backend installed (for status). */
  setAccepted(byPeer: Map<string, number>): void {
    this.accepted = byPeer;
  }

  status(): SpeakerStatus {
    return {
      asn: this.o.config.asn,
      routerId: this.o.routerId,
      listenPort: this.o.config.listenPort,
      restarting: this.restarting,
      converged: this.convergedLatch,
      announced: this.own.map((a) => a.prefix),
      peers: [...this.sessions.values()].map((s) => s.status(this.accepted.get(s.peer.address) ?? 0)),
      best: this.bestRoutes(),
    };
  }

  /** 'withdraw': the peers drop this node's routes now; 'graceful': they keep them for the restart time. */
  async stop(mode: 'withdraw' | 'graceful' = 'withdraw'): Promise<void> {
    if (this.deferTimer) clearTimeout(this.deferTimer);
    await Promise.all([...this.sessions.values()].map((s) => s.stop(mode)));
    for (const srv of this.servers) {
      for (const p of this.o.config.peers) if (p.password) clearMd5Key(fdOf(srv), p.address);
      await new Promise<void>((r) => srv.close(() => r()));
    }
    this.servers = [];
    if (this.marker && mode === 'withdraw') rmSync(this.marker, { force: true });
  }
}

function ibgp(s: Session): boolean {
  return s.ibgp;
}

function ipNum(s: string | undefined): bigint {
  return (s && tryParseIP(s)?.value) || 0n;
}

/** a better than b (RFC 4271 9.1.2.2, with the stable tie-breaks of peer router ID and address) */
function better(a: Path, sa: Session, b: Path, sb: Session): boolean {
  const lpA = a.localPref ?? 100;
  const lpB = b.localPref ?? 100;
  if (lpA !== lpB) return lpA > lpB;
  if (a.asPath.length !== b.asPath.length) return a.asPath.length < b.asPath.length;
  if (a.origin !== b.origin) return a.origin < b.origin;
  if ((a.med ?? 0) !== (b.med ?? 0)) return (a.med ?? 0) < (b.med ?? 0);
  if (ibgp(sa) !== ibgp(sb)) return !ibgp(sa);
  if (a.stale !== b.stale) return !a.stale;
  const ra = ipNum(sa.negotiated?.peerRouterId);
  const rb = ipNum(sb.negotiated?.peerRouterId);
  if (ra !== rb) return ra < rb;
  return ipNum(sa.peer.address) < ipNum(sb.peer.address);
}
