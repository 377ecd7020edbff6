// Pure allocation: no files, no clock. The store feeds it what is reserved; it answers which
// addresses to take. Search order is host-local's: from last_reserved_ip+1 through the ranges of
// the set, wrapping around, so a just-released address is not handed out again at once.
import { CniError, ErrCode } from '../cni/errors.js';
import { broadcast, compare, equal, formatIP, network, next, span, tryParseIP, type IP } from '../util/ip.js';
import { describeRangeSet, type IpamRange, type RangeSet, type RequestedIP } from './config.js';

export interface AllocInput {
  rangeSets: RangeSet[];
  /** canonical text of every reserved address (any owner, including the caller) */
  reserved: ReadonlySet<string>;
  /** per range set index, the last address handed out there */
  lastReserved?: ReadonlyArray<IP | undefined>;
  requested?: RequestedIP[];
  /** addresses already reserved by this (containerID, ifname): reused instead of allocating again */
  owned?: IP[];
}

export interface Allocation {
  rangeSetIndex: number;
  range: IpamRange;
  ip: IP;
  /** false when the address was already reserved by the caller */
  isNew: boolean;
}

export function inRange(r: IpamRange, a: IP): boolean {
  return a.family === r.subnet.family && compare(r.rangeStart, a) <= 0 && compare(a, r.rangeEnd) <= 0;
}

export function findRange(set: RangeSet, a: IP): number {
  return set.ranges.findIndex((r) => inRange(r, a));
}

/** Gateways are excluded in every set: a range of one set may cover another set's gateway. */
function gatewaysOf(sets: RangeSet[]): IP[] {
  return sets.flatMap((s) => s.ranges.map((r) => r.gateway));
}

/** Why an address inside a range can never be handed out, or undefined when it can. */
function unusable(r: IpamRange, a: IP, gateways: IP[]): string | undefined {
  if (equal(a, network(r.subnet))) return 'the network address';
  if (r.subnet.family === 4 && equal(a, broadcast(r.subnet))) return 'the broadcast address';
  if (gateways.some((g) => equal(g, a))) return 'a gateway';
  return undefined;
}

/** How many addresses of the set are still free. */
export function freeCount(set: RangeSet, reserved: ReadonlySet<string>, gateways: IP[] = gatewaysOf([set])): bigint {
  let free = 0n;
  for (const r of set.ranges) {
    free += span(r.rangeStart, r.rangeEnd);
    const taken = new Set<string>();
    for (const a of [network(r.subnet), broadcast(r.subnet), ...gateways]) {
      if (inRange(r, a) && unusable(r, a, gateways)) taken.add(formatIP(a));
    }
    for (const s of reserved) {
      if (taken.has(s)) continue;
      const a = parseReserved(s);
      if (a && inRange(r, a)) taken.add(s);
    }
    free -= BigInt(taken.size);
  }
  return free;
}

// reserved sets are re-scanned per range on every call; parsing each name once keeps STATUS cheap
const parsedCache = new Map<string, IP | undefined>();
function parseReserved(s: string): IP | undefined {
  if (!parsedCache.has(s)) {
    if (parsedCache.size > 100_000) parsedCache.clear();
    parsedCache.set(s, tryParseIP(s));
  }
  return parsedCache.get(s);
}

export function exhausted(set: RangeSet): CniError {
  return new CniError(ErrCode.IpamExhausted, `no IP addresses available in range set ${describeRangeSet(set)}`);
}

/** Host-local's RangeIter: the address after `last` (or the first of the set), wrapping. */
function searchFree(set: RangeSet, reserved: ReadonlySet<string>, gateways: IP[], last: IP | undefined): IP | undefined {
  if (freeCount(set, reserved, gateways) <= 0n) return undefined;
  const ranges = set.ranges;
  let ri = last ? findRange(set, last) : -1;
  let cur: IP;
  let skipFirst = true;
  if (ri < 0) {
    ri = 0;
    cur = ranges[0].rangeStart;
    skipFirst = false;
  } else {
    cur = last!;
  }
  // a free address exists, so the walk ends within |reserved| + |unusable| + 1 steps
  for (;;) {
    if (skipFirst) {
      skipFirst = false;
    } else if (!reserved.has(formatIP(cur)) && !unusable(ranges[ri], cur, gateways)) {
      return cur;
    }
    if (equal(cur, ranges[ri].rangeEnd)) {
      ri = (ri + 1) % ranges.length;
      cur = ranges[ri].rangeStart;
    } else {
      cur = next(cur)!;
    }
  }
}

function placeRequested(sets: RangeSet[], requested: RequestedIP[], gateways: IP[]): Map<number, RequestedIP> {
  const bySet = new Map<number, RequestedIP>();
  for (const req of requested) {
    const si = sets.findIndex((s) => findRange(s, req.ip) >= 0);
    if (si < 0) {
      const all = sets.map(describeRangeSet).join('; ');
      throw new CniError(ErrCode.InvalidConfig, `${req.field}: requested IP ${formatIP(req.ip)} is not in any configured range (${all})`);
    }
    const other = bySet.get(si);
    if (other) {
      throw new CniError(
        ErrCode.InvalidConfig,
        `${req.field}: requested IP ${formatIP(req.ip)} and ${formatIP(other.ip)} (${other.field}) are both in range set ${describeRangeSet(sets[si])}; one address per range set`,
      );
    }
    const r = sets[si].ranges[findRange(sets[si], req.ip)];
    const why = unusable(r, req.ip, gateways);
    if (why) throw new CniError(ErrCode.InvalidConfig, `${req.field}: requested IP ${formatIP(req.ip)} is ${why} of ${describeRangeSet(sets[si])}`);
    bySet.set(si, req);
  }
  return bySet;
}

/**
 * One address per range set, in set order. Throws CniError 102 when a set is exhausted or a
 * requested address belongs to someone else, and 7 when a request fits no range.
 */
export function allocate(input: AllocInput): Allocation[] {
  const { rangeSets: sets, reserved } = input;
  const gateways = gatewaysOf(sets);
  const requested = placeRequested(sets, input.requested ?? [], gateways);
  const owned = input.owned ?? [];
  return sets.map((set, si): Allocation => {
    const req = requested.get(si);
    if (req) {
      const ri = findRange(set, req.ip);
      const mine = owned.some((o) => equal(o, req.ip));
      if (!mine && reserved.has(formatIP(req.ip))) {
        throw new CniError(ErrCode.IpamExhausted, `${req.field}: requested IP ${formatIP(req.ip)} is already reserved in range set ${describeRangeSet(set)}`);
      }
      return { rangeSetIndex: si, range: set.ranges[ri], ip: req.ip, isNew: !mine };
    }
    const have = owned.find((o) => findRange(set, o) >= 0);
    if (have) return { rangeSetIndex: si, range: set.ranges[findRange(set, have)], ip: have, isNew: false };
    const ip = searchFree(set, reserved, gateways, input.lastReserved?.[si]);
    if (!ip) throw exhausted(set);
    return { rangeSetIndex: si, range: set.ranges[findRange(set, ip)], ip, isNew: true };
  });
}
