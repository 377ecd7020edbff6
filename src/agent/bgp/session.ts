// One BGP peer: the RFC 4271 session state machine (Idle, Connect, Active, OpenSent, OpenConfirm,
// Established) with its hold, keepalive and connect-retry timers, over any number of TCP
// connections at once (our own connect and the peer's, RFC 4271 6.8 collision resolution keeps
// one). What a session learns goes to its Adj-RIB-In, which the speaker (speaker.ts) reads; what
// it announces is the speaker's. Graceful restart (RFC 4724, RFC 8538): a GR-capable peer whose
// session drops without a Hard Reset keeps its routes, marked stale, for its restart time.
import { connect as tcpConnect, type Socket } from 'node:net';
import type { Logger } from '../../util/log.js';
import { tryParseIP } from '../../util/ip.js';
import type { BgpPeerConfig } from './config.js';
import {
  AFI_IPV4,
  AFI_IPV6,
  AS_TRANS,
  BgpError,
  CeaseSub,
  ErrCode,
  MsgType,
  OpenSub,
  SAFI_UNICAST,
  UpdateSub,
  endOfRib,
  type BgpMessage,
  type Capabilities,
  type Family,
  type OpenMsg,
  type PathAttributes,
  type Prefix,
  type SessionCodecContext,
  type UpdateMsg,
} from './messages.js';
import { MessageReader, decodeMessage, encodeEndOfRib, encodeKeepalive, encodeNotification, encodeOpen, encodeUpdates, encodeWithdrawals } from './codec.js';
import { connectSigned, fdOf, setTtl } from './sockopt.js';

export type SessionState = 'Idle' | 'Connect' | 'Active' | 'OpenSent' | 'OpenConfirm' | 'Established';

/** A path learned from the peer (one entry of its Adj-RIB-In). */
export interface Path {
  prefix: Prefix;
  family: Family;
  nextHop: string;
  asPath: number[];
  origin: number;
  med?: number;
  localPref?: number;
  /** kept across the peer's restart, not yet refreshed (RFC 4724 4.2) */
  stale: boolean;
}

/** One route this node announces. */
export interface Announcement {
  prefix: Prefix;
  family: Family;
  nextHop: string;
}

export interface LocalSpeaker {
  asn: number;
  routerId: string;
  gracefulRestart: { enabled: boolean; restartTime: number };
  /** this instance restarted with its forwarding state kept (the R and F bits) */
  restarting: boolean;
  /** source addresses of outgoing connections (the node's underlay addresses), by family */
  sourceAddress: { v4?: string; v6?: string };
  /** what the speaker announces to every peer now */
  announcements(): Announcement[];
  /** the Adj-RIB-In (or the session's state) changed */
  changed(): void;
  log: Logger;
}

/** Connect-retry backoff (RFC 4271's ConnectRetryTimer, doubled per failure, with jitter). */
export const RETRY_BASE_MS = 1000;
export const RETRY_MAX_MS = 16_000;
/** RFC 4271 10: the hold time of OpenSent */
const OPEN_HOLD_MS = 240_000;
const CONNECT_TIMEOUT_MS = 5000;

interface Conn {
  sock: Socket;
  /** who opened the TCP connection */
  outbound: boolean;
  state: 'OpenSent' | 'OpenConfirm' | 'Established';
  reader: MessageReader;
  ctx: SessionCodecContext;
  open?: OpenMsg;
  holdMs: number;
  holdTimer?: NodeJS.Timeout;
  keepaliveTimer?: NodeJS.Timeout;
  closed: boolean;
}

/** What the two OPENs agreed. */
interface Negotiated {
  families: Family[];
  as4: boolean;
  holdTime: number;
  routeRefresh: boolean;
  /** the peer's graceful-restart capability, if both sides have GR on */
  peerGr?: { restartTime: number; notification: boolean; preserved: Family[] };
  notificationGr: boolean;
  peerRouterId: string;
}

export interface PeerStatus {
  address: string;
  asn: number;
  state: SessionState;
  /** seconds in Established, when it is */
  uptimeSeconds?: number;
  peerRouterId?: string;
  holdTime?: number;
  families?: Family[];
  prefixes: { received: number; accepted: number; announced: number; stale: number };
  lastError?: string;
  /** the last error NOTIFICATION sent to or received from the peer since the last Established (lastError may be a later connect failure) */
  lastNotification?: string;
  /** failed connection attempts since the last Established */
  connectRetries: number;
  /** the next active connect, while waiting for it */
  nextRetryInMs?: number;
  gracefulRestart?: { peerRestartTime: number; restarting: boolean };
  passive: boolean;
}

function familyOf(afi: number, safi: number): Family | undefined {
  if (safi !== SAFI_UNICAST) return undefined;
  return afi === AFI_IPV4 ? 'ipv4' : afi === AFI_IPV6 ? 'ipv6' : undefined;
}

export class Session {
  state: SessionState = 'Idle';
  /** Adj-RIB-In: prefix → path */
  readonly ribIn = new Map<Prefix, Path>();
  /** prefixes of the last UPDATEs refused by import policy (AS loop), counted in status */
  private rejected = new Set<Prefix>();
  private conns = new Set<Conn>();
  private established?: Conn;
  negotiated?: Negotiated;
  private connecting = false;
  private retryTimer?: NodeJS.Timeout;
  private retryAt?: number;
  private retries = 0;
  private restartTimer?: NodeJS.Timeout;
  private upSince?: number;
  lastError?: string;
  /** the last error NOTIFICATION sent or received since the last Established (a peer in its idle hold closes later connections without saying why again) */
  private lastNotification?: string;
  private stopped = true;
  /** families whose End-of-RIB the peer sent in this session */
  readonly eorReceived = new Set<Family>();
  /** what was last sent, so a change is announced as the difference */
  private adjRibOut = new Map<Prefix, Announcement>();
  private readonly log: Logger;

  constructor(
    readonly peer: BgpPeerConfig,
    private readonly local: LocalSpeaker,
  ) {
    this.log = local.log.child({ peer: peer.address, peerAs: peer.asn });
  }

  get ibgp(): boolean {
    return this.peer.asn === this.local.asn;
  }

  start(): void {
    this.stopped = false;
    this.toIdleThenRetry(0);
  }

  /**
   * Ends the session. 'withdraw': every announced route is withdrawn first, then a Cease
   * (Administrative Shutdown), so the peer drops this node's routes now. 'graceful': a Cease the
   * peer treats as a restart when both sides have the N bit (RFC 8538); routes stay at the peer.
   */
  async stop(mode: 'withdraw' | 'graceful'): Promise<void> {
    this.stopped = true;
    this.clearRetry();
    const c = this.established;
    if (c && mode === 'withdraw') {
      const byFamily = new Map<Family, Prefix[]>();
      for (const a of this.adjRibOut.values()) byFamily.set(a.family, [...(byFamily.get(a.family) ?? []), a.prefix]);
      for (const [fam, prefixes] of byFamily) for (const m of encodeWithdrawals(fam, prefixes, c.ctx)) c.sock.write(m);
      this.adjRibOut.clear();
    }
    const sub = mode === 'withdraw' && this.negotiated?.notificationGr ? CeaseSub.HARD_RESET : CeaseSub.ADMINISTRATIVE_SHUTDOWN;
    const closing = [...this.conns].map((x) => this.closeConn(x, { notify: [ErrCode.CEASE, sub, Buffer.from('podnet agent stopping')], why: 'stopping', flush: true }));
    await Promise.all(closing);
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.state = 'Idle';
  }

  // ---- connection management -------------------------------------------------------------

  private clearRetry(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.retryAt = undefined;
  }

  private backoffMs(): number {
    const base = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** Math.min(this.retries, 10));
    return Math.round(base * (0.75 + Math.random() * 0.5));
  }

  /** Idle (no connection) → Active: wait for the peer, and connect ourselves after `delayMs`. */
  private toIdleThenRetry(delayMs: number): void {
    if (this.stopped || this.conns.size > 0) return;
    this.state = this.peer.passive ? 'Active' : delayMs === 0 ? 'Connect' : 'Active';
    this.local.changed();
    if (this.peer.passive) return;
    this.clearRetry();
    this.retryAt = Date.now() + delayMs;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.retryAt = undefined;
      void this.connectOut();
    }, delayMs);
  }

  private ttl(): number | undefined {
    if (this.peer.multihop !== undefined) return this.peer.multihop;
    // eBGP peers are directly connected unless configured otherwise (RFC 4271 5.1.3); iBGP: the default
    return this.ibgp ? undefined : 1;
  }

  private async connectOut(): Promise<void> {
    if (this.stopped || this.connecting || this.established) return;
    this.connecting = true;
    if (this.conns.size === 0) this.state = 'Connect';
    this.local.changed();
    const v6 = tryParseIP(this.peer.address)?.family === 6;
    try {
      let sock: Socket;
      if (this.peer.password) {
        sock = await connectSigned({ peer: this.peer.address, port: this.peer.port, key: this.peer.password, ttl: this.ttl(), timeoutMs: CONNECT_TIMEOUT_MS, source: v6 ? this.local.sourceAddress.v6 : this.local.sourceAddress.v4 });
      } else {
        sock = await new Promise<Socket>((resolve, reject) => {
          const localAddress = v6 ? this.local.sourceAddress.v6 : this.local.sourceAddress.v4;
          const s = tcpConnect({ host: this.peer.address, port: this.peer.port, timeout: CONNECT_TIMEOUT_MS, ...(localAddress ? { localAddress } : {}) });
          const fail = (e: Error) => {
            s.destroy();
            reject(e);
          };
          s.once('connect', () => {
            s.off('error', fail);
            s.setTimeout(0);
            resolve(s);
          });
          s.once('error', fail);
          s.once('timeout', () => fail(new Error(`connect ${this.peer.address}:${this.peer.port}: timed out after ${CONNECT_TIMEOUT_MS} ms`)));
        });
        const ttl = this.ttl();
        if (ttl !== undefined) setTtl(fdOf(sock), v6, ttl);
      }
      this.connecting = false;
      if (this.stopped || this.established) {
        sock.destroy();
        return;
      }
      this.attach(sock, true);
    } catch (e) {
      this.connecting = false;
      this.retries++;
      this.lastError = (e as Error).message;
      if (this.retries === 1 || this.retries % 10 === 0) this.log.warn('BGP peer not reachable (retrying with backoff)', { error: this.lastError, retries: this.retries });
      if (this.conns.size === 0) this.toIdleThenRetry(this.backoffMs());
    }
  }

  /** An incoming TCP connection from this peer's address (the speaker's listener routes it here). */
  accept(sock: Socket): void {
    if (this.stopped) {
      sock.end(encodeNotification(ErrCode.CEASE, CeaseSub.ADMINISTRATIVE_SHUTDOWN));
      return;
    }
    const ttl = this.ttl();
    if (ttl !== undefined) {
      try {
        setTtl(fdOf(sock), tryParseIP(this.peer.address)?.family === 6, ttl);
      } catch {
        /* the connection went already */
      }
    }
    this.attach(sock, false);
  }

  private attach(sock: Socket, outbound: boolean): void {
    sock.setNoDelay(true);
    const c: Conn = { sock, outbound, state: 'OpenSent', reader: new MessageReader(), ctx: { as4: false }, holdMs: OPEN_HOLD_MS, closed: false };
    this.conns.add(c);
    this.clearRetry();
    sock.on('data', (chunk: Buffer) => this.onData(c, chunk));
    sock.on('error', (e) => {
      if (!c.closed) this.lastError = `connection: ${e.message}`;
    });
    sock.on('close', () => void this.closeConn(c, { why: c.closed ? 'closed' : 'connection closed by the peer' }));
    sock.write(encodeOpen(this.openMessage()));
    this.armHold(c);
    this.setStateFromConns();
  }

  private openMessage(): Omit<OpenMsg, 'type'> {
    const caps: Capabilities = {
      families: this.localFamilies(),
      otherFamilies: [],
      routeRefresh: true,
      enhancedRouteRefresh: false,
      as4: this.local.asn,
      unknown: [],
      ...(this.local.gracefulRestart.enabled
        ? {
            gracefulRestart: {
              restarting: this.local.restarting,
              notification: true,
              restartTime: this.local.gracefulRestart.restartTime,
              // the kernel keeps podnet's routes while the agent is away: forwarding is preserved
              families: this.localFamilies().map((family) => ({ family, forwardingPreserved: true })),
            },
          }
        : {}),
    };
    return { version: 4, myAs: this.local.asn > 65535 ? AS_TRANS : this.local.asn, holdTime: this.peer.holdTime, bgpId: this.local.routerId, caps };
  }

  private localFamilies(): Family[] {
    return ['ipv4', 'ipv6'];
  }

  private armHold(c: Conn): void {
    if (c.holdTimer) clearTimeout(c.holdTimer);
    if (c.holdMs === 0) return;
    c.holdTimer = setTimeout(() => void this.closeConn(c, { notify: [ErrCode.HOLD_TIMER_EXPIRED, 0], why: `hold timer expired (${c.holdMs / 1000} s without a message)` }), c.holdMs);
  }

  private setStateFromConns(): void {
    const order: SessionState[] = ['Idle', 'Connect', 'Active', 'OpenSent', 'OpenConfirm', 'Established'];
    let best: SessionState | undefined;
    for (const c of this.conns) if (!best || order.indexOf(c.state) > order.indexOf(best)) best = c.state;
    if (best) this.state = best;
    this.local.changed();
  }

  // ---- messages ----------------------------------------------------------------------------

  private onData(c: Conn, chunk: Buffer): void {
    if (c.closed) return;
    try {
      for (const raw of c.reader.push(chunk)) {
        if (c.closed) return;
        this.onMessage(c, decodeMessage(raw, c.ctx));
      }
    } catch (e) {
      if (e instanceof BgpError) {
        this.log.error('malformed BGP message from peer: sending NOTIFICATION and closing the session', { code: e.code, subcode: e.subcode, error: e.message });
        void this.closeConn(c, { notify: [e.code, e.subcode, e.data], why: `sent NOTIFICATION ${e.code}/${e.subcode} (${describeNotification(e.code, e.subcode)}): ${e.message}` });
      } else {
        this.log.error('BGP message handling failed: closing the session', { error: (e as Error).stack });
        void this.closeConn(c, { notify: [ErrCode.CEASE, CeaseSub.OUT_OF_RESOURCES], why: `internal error: ${(e as Error).message}` });
      }
    }
  }

  private onMessage(c: Conn, m: BgpMessage): void {
    if (m.type === MsgType.NOTIFICATION) {
      const text = m.data.length > 0 && m.data.every((b) => b >= 0x20 && b < 0x7f) ? ` "${m.data.toString('latin1')}"` : '';
      const why = `peer sent NOTIFICATION ${m.code}/${m.subcode} (${describeNotification(m.code, m.subcode)})${text}`;
      this.lastNotification = why;
      this.log.warn('BGP peer closed the session', { code: m.code, subcode: m.subcode, reason: describeNotification(m.code, m.subcode) });
      // RFC 8538: with the N bit, only a Hard Reset ends graceful restart
      const gr = this.negotiated?.notificationGr === true && !(m.code === ErrCode.CEASE && m.subcode === CeaseSub.HARD_RESET);
      void this.closeConn(c, { why, flush: !gr });
      return;
    }
    switch (c.state) {
      case 'OpenSent':
        if (m.type !== MsgType.OPEN) throw new BgpError(ErrCode.FSM, 1, `expected OPEN in OpenSent, got message type ${m.type}`);
        this.onOpen(c, m);
        return;
      case 'OpenConfirm':
        if (m.type === MsgType.KEEPALIVE) {
          this.armHold(c);
          this.onEstablished(c);
          return;
        }
        throw new BgpError(ErrCode.FSM, 2, `expected KEEPALIVE in OpenConfirm, got message type ${m.type}`);
      case 'Established':
        this.armHold(c);
        if (m.type === MsgType.KEEPALIVE) return;
        if (m.type === MsgType.UPDATE) return this.onUpdate(m);
        if (m.type === MsgType.ROUTE_REFRESH) {
          const fam = familyOf(m.afi, m.safi);
          // RFC 2918 4: a refresh for a family not negotiated is ignored
          if (fam && this.negotiated?.families.includes(fam) && m.subtype === 0) this.resend(c, fam);
          return;
        }
        throw new BgpError(ErrCode.FSM, 3, `unexpected OPEN in Established`);
    }
  }

  private onOpen(c: Conn, m: OpenMsg): void {
    const peerAs = m.caps.as4 ?? m.myAs;
    if (m.caps.as4 !== undefined && m.myAs !== AS_TRANS && m.myAs !== m.caps.as4) {
      throw new BgpError(ErrCode.OPEN_MESSAGE, OpenSub.BAD_PEER_AS, `peer's OPEN says AS ${m.myAs} and its 4-octet AS capability ${m.caps.as4}`);
    }
    if (peerAs !== this.peer.asn) {
      this.lastError = `sent NOTIFICATION 2/2 (bad peer AS): the peer announced AS ${peerAs}, podnet is configured with AS ${this.peer.asn} for ${this.peer.address}`;
      this.log.error('BGP peer has the wrong AS: sending NOTIFICATION bad peer AS', { announced: peerAs, configured: this.peer.asn });
      const data = Buffer.alloc(2);
      data.writeUInt16BE(m.myAs & 0xffff);
      void this.closeConn(c, { notify: [ErrCode.OPEN_MESSAGE, OpenSub.BAD_PEER_AS, data], why: this.lastError, keepError: true });
      return;
    }
    if (this.ibgp && m.bgpId === this.local.routerId) throw new BgpError(ErrCode.OPEN_MESSAGE, OpenSub.BAD_BGP_IDENTIFIER, `iBGP peer has our own router ID ${m.bgpId}`);
    c.open = m;
    c.ctx = { as4: m.caps.as4 !== undefined };
    // RFC 4271 4.2: the smaller hold time; 0 means none
    const hold = Math.min(this.peer.holdTime, m.holdTime);
    c.holdMs = hold * 1000;
    c.state = 'OpenConfirm';
    if (!this.resolveCollision(c)) return;
    c.sock.write(encodeKeepalive());
    this.startKeepalives(c, hold);
    this.armHold(c);
    this.setStateFromConns();
  }

  /**
   * RFC 4271 6.8: two connections with this peer. The one opened by the speaker with the higher
   * BGP identifier survives. A peer that reconnects while our session with it is Established and
   * that has graceful restart restarted (RFC 4724 4.2): the old session goes, its routes stale.
   * Returns false when `c` itself was closed.
   */
  private resolveCollision(c: Conn): boolean {
    for (const o of this.conns) {
      if (o === c || o.closed) continue;
      if (o.state === 'Established') {
        if (c.open?.caps.gracefulRestart && this.local.gracefulRestart.enabled) {
          this.log.info('BGP peer reconnected while the session was up: it restarted (graceful restart keeps its routes)');
          void this.closeConn(o, { why: 'peer restarted (new connection while established)', flush: false });
          continue;
        }
        void this.closeConn(c, { notify: [ErrCode.CEASE, CeaseSub.CONNECTION_COLLISION_RESOLUTION], why: 'connection collision (kept the established session)', keepError: true });
        return false;
      }
      if (o.state !== 'OpenConfirm') {
        // OpenSent: the peer's identifier is not known yet on that one; decided when it gets there
        continue;
      }
      const localWins = ipv4ToNumber(this.local.routerId) > ipv4ToNumber(c.open!.bgpId);
      // the connection opened by the side with the higher identifier is kept
      const loser = (localWins ? !c.outbound : c.outbound) ? c : o;
      const lost = loser === c ? c : o;
      void this.closeConn(lost, { notify: [ErrCode.CEASE, CeaseSub.CONNECTION_COLLISION_RESOLUTION], why: 'connection collision resolved', keepError: true });
      if (lost === c) return false;
    }
    return true;
  }

  private startKeepalives(c: Conn, hold: number): void {
    if (c.keepaliveTimer) clearInterval(c.keepaliveTimer);
    if (hold === 0) return;
    c.keepaliveTimer = setInterval(() => {
      if (!c.closed) c.sock.write(encodeKeepalive());
    }, Math.max(1000, Math.floor((hold * 1000) / 3)));
  }

  private onEstablished(c: Conn): void {
    const open = c.open!;
    const offered = open.caps.families.length === 0 && open.caps.otherFamilies.length === 0 ? (['ipv4'] as Family[]) : open.caps.families;
    const families = this.localFamilies().filter((f) => offered.includes(f));
    const grPeer = open.caps.gracefulRestart;
    const grOn = this.local.gracefulRestart.enabled && grPeer !== undefined;
    this.negotiated = {
      families,
      as4: c.ctx.as4,
      holdTime: c.holdMs / 1000,
      routeRefresh: open.caps.routeRefresh,
      ...(grOn ? { peerGr: { restartTime: grPeer.restartTime, notification: grPeer.notification, preserved: grPeer.families.filter((f) => f.forwardingPreserved).map((f) => f.family) } } : {}),
      notificationGr: grOn && grPeer.notification,
      peerRouterId: open.bgpId,
    };
    // RFC 4724 4.2: routes of families the restarted peer did not preserve go now
    if (grPeer && this.restartTimer) {
      for (const [k, p] of this.ribIn) if (p.stale && !this.negotiated.peerGr?.preserved.includes(p.family)) this.ribIn.delete(k);
    }
    c.state = 'Established';
    this.established = c;
    this.upSince = Date.now();
    this.retries = 0;
    this.lastError = undefined;
    this.lastNotification = undefined;
    this.eorReceived.clear();
    this.adjRibOut.clear();
    this.log.info('BGP session established', { peerRouterId: open.bgpId, holdTime: this.negotiated.holdTime, families, as4: c.ctx.as4, gracefulRestart: grOn ? { peerRestartTime: grPeer.restartTime, notification: grPeer.notification } : false });
    this.sendAnnouncements(c, true);
    this.setStateFromConns();
  }

  private onUpdate(u: UpdateMsg): void {
    const eor = endOfRib(u);
    if (eor) {
      this.eorReceived.add(eor);
      // RFC 4724 4.2: stale routes of that family not refreshed by now go
      for (const [k, p] of this.ribIn) if (p.stale && p.family === eor) this.ribIn.delete(k);
      if ([...this.ribIn.values()].every((p) => !p.stale) && this.restartTimer) {
        clearTimeout(this.restartTimer);
        this.restartTimer = undefined;
      }
      this.local.changed();
      return;
    }
    for (const p of u.withdrawn) this.forget(p);
    if (u.mpUnreach) for (const p of u.mpUnreach.withdrawn) this.forget(p);
    if (u.nlri.length > 0) {
      if (!u.attrs.nextHop) throw new BgpError(ErrCode.UPDATE_MESSAGE, UpdateSub.MISSING_WELL_KNOWN_ATTRIBUTE, 'NEXT_HOP missing', Buffer.from([3]));
      this.learn('ipv4', u.nlri, u.attrs.nextHop, u.attrs);
    }
    if (u.mpReach && u.mpReach.nlri.length > 0) this.learn(u.mpReach.family, u.mpReach.nlri, u.mpReach.nextHops[0], u.attrs);
    this.local.changed();
  }

  private forget(p: Prefix): void {
    this.ribIn.delete(p);
    this.rejected.delete(p);
  }

  private learn(family: Family, prefixes: Prefix[], nextHop: string, a: PathAttributes): void {
    const asPath = (a.asPath ?? []).flatMap((s) => s.asns);
    if (!this.ibgp && a.asPath && a.asPath.length > 0) {
      // RFC 4271 6.3: an external peer's path starts with its own AS
      const first = a.asPath[0];
      if (first.type === 2 && first.asns[0] !== this.peer.asn) throw new BgpError(ErrCode.UPDATE_MESSAGE, UpdateSub.MALFORMED_AS_PATH, `AS_PATH from external peer AS ${this.peer.asn} starts with AS ${first.asns[0]}`);
    }
    // RFC 4271 9.1.2: a path with our own AS in it is a loop
    const loop = asPath.includes(this.local.asn);
    for (const prefix of prefixes) {
      if (loop) {
        this.ribIn.delete(prefix);
        this.rejected.add(prefix);
        continue;
      }
      this.rejected.delete(prefix);
      this.ribIn.set(prefix, { prefix, family, nextHop, asPath, origin: a.origin ?? 2, ...(a.med !== undefined ? { med: a.med } : {}), ...(a.localPref !== undefined ? { localPref: a.localPref } : {}), stale: false });
    }
  }

  /** Announces what changed since the last call (all of it after Established), then End-of-RIB the first time. */
  private sendAnnouncements(c: Conn, initial: boolean): void {
    const fams = this.negotiated?.families ?? [];
    const want = new Map<Prefix, Announcement>();
    for (const a of this.local.announcements()) if (fams.includes(a.family)) want.set(a.prefix, a);
    const withdraw = new Map<Family, Prefix[]>();
    for (const [k, a] of this.adjRibOut) if (!want.has(k)) withdraw.set(a.family, [...(withdraw.get(a.family) ?? []), k]);
    for (const [fam, ps] of withdraw) for (const m of encodeWithdrawals(fam, ps, c.ctx)) c.sock.write(m);
    // grouped by next hop: one attribute set per group
    const groups = new Map<string, Announcement[]>();
    for (const [k, a] of want) {
      const old = this.adjRibOut.get(k);
      if (old && old.nextHop === a.nextHop) continue;
      const key = `${a.family} ${a.nextHop}`;
      groups.set(key, [...(groups.get(key) ?? []), a]);
    }
    for (const g of groups.values()) {
      const attrs: PathAttributes = { origin: 0, asPath: this.ibgp ? [] : [{ type: 2, asns: [this.local.asn] }], ...(this.ibgp ? { localPref: 100 } : {}) };
      for (const m of encodeUpdates(attrs, g[0].family, g.map((a) => a.prefix), [g[0].nextHop], c.ctx)) c.sock.write(m);
    }
    this.adjRibOut = want;
    if (initial) for (const f of fams) c.sock.write(encodeEndOfRib(f));
  }

  /** The speaker's announcements changed. */
  announce(): void {
    if (this.established && !this.established.closed) this.sendAnnouncements(this.established, false);
  }

  /** ROUTE-REFRESH: everything of that family again, then End-of-RIB. */
  private resend(c: Conn, fam: Family): void {
    for (const [k, a] of this.adjRibOut) if (a.family === fam) this.adjRibOut.delete(k);
    this.sendAnnouncements(c, false);
    c.sock.write(encodeEndOfRib(fam));
  }

  // ---- teardown ----------------------------------------------------------------------------

  private closeConn(c: Conn, o: { notify?: [number, number, Buffer?]; why: string; flush?: boolean; keepError?: boolean }): Promise<void> {
    if (c.closed) return Promise.resolve();
    c.closed = true;
    if (c.holdTimer) clearTimeout(c.holdTimer);
    if (c.keepaliveTimer) clearInterval(c.keepaliveTimer);
    this.conns.delete(c);
    const done = new Promise<void>((resolve) => {
      if (c.sock.destroyed) return resolve();
      c.sock.once('close', () => resolve());
      const t = setTimeout(() => {
        c.sock.destroy();
        resolve();
      }, 1000);
      t.unref();
      if (o.notify) c.sock.end(encodeNotification(o.notify[0], o.notify[1], o.notify[2] ?? Buffer.alloc(0)));
      else c.sock.destroy();
    });
    if (o.notify && o.notify[0] !== ErrCode.CEASE) this.lastNotification = o.why;
    // closed without a word before its OPEN: the peer still holds the last refusal against us
    if (o.why === 'connection closed by the peer' && c.state === 'OpenSent' && this.lastNotification) o = { ...o, why: `connection closed by the peer before its OPEN (after: ${this.lastNotification})` };
    if (!o.keepError || !this.lastError) if (o.why !== 'closed') this.lastError = o.why;
    if (c === this.established) this.sessionDown(o.flush ?? false, o.why);
    if (this.conns.size > 0) this.setStateFromConns();
    else if (!this.stopped) {
      this.state = 'Idle';
      const wasUp = c.state === 'Established';
      if (!wasUp) this.retries++;
      this.toIdleThenRetry(wasUp ? RETRY_BASE_MS : this.backoffMs());
    }
    return done;
  }

  private sessionDown(flush: boolean, why: string): void {
    this.established = undefined;
    this.upSince = undefined;
    this.adjRibOut.clear();
    const gr = this.negotiated?.peerGr;
    this.log.warn('BGP session down', { reason: why, gracefulRestart: !flush && gr ? `keeping ${this.ribIn.size} routes for ${gr.restartTime} s` : false });
    if (!flush && gr && gr.restartTime > 0) {
      for (const p of this.ribIn.values()) p.stale = true;
      if (this.restartTimer) clearTimeout(this.restartTimer);
      this.restartTimer = setTimeout(() => {
        this.restartTimer = undefined;
        // RFC 4724 4.2: the peer did not come back within its restart time
        for (const [k, p] of this.ribIn) if (p.stale) this.ribIn.delete(k);
        this.log.warn('BGP peer did not return within its restart time: its routes are withdrawn', { restartTime: gr.restartTime });
        this.local.changed();
      }, gr.restartTime * 1000);
      this.restartTimer.unref();
    } else {
      this.ribIn.clear();
      this.rejected.clear();
    }
    this.local.changed();
  }

  /** `accepted`: how many of this peer's paths the speaker uses (best, and past the backend's filter) */
  status(accepted: number): PeerStatus {
    let stale = 0;
    for (const p of this.ribIn.values()) if (p.stale) stale++;
    return {
      address: this.peer.address,
      asn: this.peer.asn,
      state: this.state,
      ...(this.upSince !== undefined ? { uptimeSeconds: Math.round((Date.now() - this.upSince) / 1000) } : {}),
      ...(this.negotiated && this.established ? { peerRouterId: this.negotiated.peerRouterId, holdTime: this.negotiated.holdTime, families: this.negotiated.families } : {}),
      prefixes: { received: this.ribIn.size + this.rejected.size, accepted, announced: this.adjRibOut.size, stale },
      ...(this.lastError ? { lastError: this.lastError } : {}),
      ...(this.lastNotification ? { lastNotification: this.lastNotification } : {}),
      connectRetries: this.retries,
      ...(this.retryAt !== undefined ? { nextRetryInMs: Math.max(0, this.retryAt - Date.now()) } : {}),
      ...(this.negotiated?.peerGr ? { gracefulRestart: { peerRestartTime: this.negotiated.peerGr.restartTime, restarting: this.restartTimer !== undefined } } : {}),
      passive: this.peer.passive,
    };
  }
}

function ipv4ToNumber(s: string): number {
  const a = tryParseIP(s);
  return a && a.family === 4 ? Number(a.value) : 0;
}

export function describeNotification(code: number, subcode: number): string {
  const codes: Record<number, [string, Record<number, string>]> = {
    1: ['message header error', { 1: 'connection not synchronized', 2: 'bad message length', 3: 'bad message type' }],
    2: ['OPEN message error', { 1: 'unsupported version', 2: 'bad peer AS', 3: 'bad BGP identifier', 4: 'unsupported optional parameter', 6: 'unacceptable hold time', 7: 'unsupported capability' }],
    3: ['UPDATE message error', { 1: 'malformed attribute list', 2: 'unrecognized well-known attribute', 3: 'missing well-known attribute', 4: 'attribute flags error', 5: 'attribute length error', 6: 'invalid ORIGIN', 8: 'invalid NEXT_HOP', 9: 'optional attribute error', 10: 'invalid network field', 11: 'malformed AS_PATH' }],
    4: ['hold timer expired', {}],
    5: ['finite state machine error', { 1: 'unexpected message in OpenSent', 2: 'unexpected message in OpenConfirm', 3: 'unexpected message in Established' }],
    6: ['cease', { 1: 'maximum prefixes reached', 2: 'administrative shutdown', 3: 'peer de-configured', 4: 'administrative reset', 5: 'connection rejected', 6: 'other configuration change', 7: 'connection collision resolution', 8: 'out of resources', 9: 'hard reset' }],
    7: ['ROUTE-REFRESH message error', { 1: 'invalid message length' }],
  };
  const c = codes[code];
  if (!c) return `unknown error code ${code}`;
  return c[1][subcode] ? `${c[0]}: ${c[1][subcode]}` : c[0];
}
