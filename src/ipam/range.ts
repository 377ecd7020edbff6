// One allocatable range (host-local's Range) and range sets: parsing, defaults and naming.
import { CniError, ErrCode } from '../cni/errors.js';
import {
  BITS,
  broadcast,
  compare,
  contains,
  formatCidr,
  formatIP,
  hasHostBits,
  masked,
  network,
  next,
  prev,
  tryParseCidr,
  tryParseIP,
  type Cidr,
  type Family,
  type IP,
} from '../util/ip.js';

export interface IpamRange {
  /** network address form (host bits cleared) */
  subnet: Cidr;
  rangeStart: IP;
  rangeEnd: IP;
  gateway: IP;
}

export interface RangeSet {
  family: Family;
  ranges: IpamRange[];
}

export type Obj = Record<string, unknown>;

export function invalid(field: string, msg: string): CniError {
  return new CniError(ErrCode.InvalidConfig, `${field}: ${msg}`);
}

export function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function parseIPField(v: unknown, field: string, family?: Family): IP {
  const a = typeof v === 'string' ? tryParseIP(v) : undefined;
  if (!a) throw invalid(field, `invalid IP address ${JSON.stringify(v)}`);
  if (family && a.family !== family) throw invalid(field, `${v} is IPv${a.family}, but the subnet is IPv${family}`);
  return a;
}

/** Host-local's Range.Canonicalize, plus checks it leaves to allocation time. */
export function parseRange(raw: unknown, field: string): IpamRange {
  if (!isObj(raw)) throw invalid(field, 'expected an object {subnet, rangeStart?, rangeEnd?, gateway?}');
  if (raw.subnet === undefined || raw.subnet === '') throw invalid(`${field}.subnet`, 'missing');
  const given = typeof raw.subnet === 'string' ? tryParseCidr(raw.subnet) : undefined;
  if (!given) throw invalid(`${field}.subnet`, `invalid CIDR ${JSON.stringify(raw.subnet)}`);
  const family = given.family;
  if (hasHostBits(given)) {
    throw invalid(`${field}.subnet`, `${raw.subnet} has host bits set; the network address for /${given.prefix} is ${formatIP(network(given))}`);
  }
  if (given.prefix > BITS[family] - 2) {
    throw invalid(`${field}.subnet`, `network ${formatCidr(given)} is too small to allocate from (at most /${BITS[family] - 2})`);
  }
  const subnet = masked(given);
  const first = next(network(subnet))!;
  const gateway = raw.gateway === undefined || raw.gateway === null || raw.gateway === '' ? first : parseIPField(raw.gateway, `${field}.gateway`, family);
  const inSubnet = (v: unknown, key: string): IP | undefined => {
    if (v === undefined || v === null || v === '') return undefined;
    const a = parseIPField(v, `${field}.${key}`, family);
    if (!contains(subnet, a)) throw invalid(`${field}.${key}`, `${v} is outside subnet ${formatCidr(subnet)}`);
    return a;
  };
  const rangeStart = inSubnet(raw.rangeStart, 'rangeStart') ?? first;
  const last = broadcast(subnet);
  const rangeEnd = inSubnet(raw.rangeEnd, 'rangeEnd') ?? (family === 4 ? prev(last)! : last);
  if (compare(rangeStart, rangeEnd) > 0) {
    throw invalid(`${field}.rangeEnd`, `${formatIP(rangeEnd)} is before rangeStart ${formatIP(rangeStart)}`);
  }
  return { subnet, rangeStart, rangeEnd, gateway };
}

export function rangesOverlap(a: IpamRange, b: IpamRange): boolean {
  return a.subnet.family === b.subnet.family && compare(a.rangeStart, b.rangeEnd) <= 0 && compare(b.rangeStart, a.rangeEnd) <= 0;
}

export function describeRange(r: IpamRange): string {
  const s = formatCidr(r.subnet);
  const defStart = next(network(r.subnet))!;
  const last = broadcast(r.subnet);
  const defEnd = r.subnet.family === 4 ? prev(last)! : last;
  if (compare(r.rangeStart, defStart) === 0 && compare(r.rangeEnd, defEnd) === 0) return s;
  return `${s} [${formatIP(r.rangeStart)}-${formatIP(r.rangeEnd)}]`;
}

export function describeRangeSet(set: RangeSet): string {
  return set.ranges.map(describeRange).join(',');
}

