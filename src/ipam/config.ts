// The `ipam` section, read the way host-local reads it, so a host-local config works unchanged.
// Every validation error names the field path that is wrong.
import { isAbsolute, join } from 'node:path';
import { CniError, ErrCode } from '../cni/errors.js';
import type { CniDns, CniRoute } from '../cni/types.js';
import { NAME_RE } from '../cni/env.js';
import { compare, formatCidr, formatIP, masked, tryParseCidr, tryParseIP, type IP } from '../util/ip.js';
import { invalid, isObj, parseIPField, parseRange, rangesOverlap, describeRange, type Obj, type RangeSet } from './range.js';
import { readSubnetFile } from './subnetfile.js';

export const DEFAULT_DATA_DIR = '/var/lib/cni/networks';

export type { IpamRange, RangeSet } from './range.js';
export { describeRange, describeRangeSet } from './range.js';

export interface RequestedIP {
  ip: IP;
  /** where the request came from, for error messages */
  field: string;
}

export interface StoreConfig {
  network: string;
  /** the directory holding the reservations: <dataDir>/<network>, as host-local lays it out */
  storeDir: string;
}

export interface IpamConfig extends StoreConfig {
  rangeSets: RangeSet[];
  routes: CniRoute[];
  dns?: CniDns;
  resolvConf?: string;
  subnetFile?: string;
  requested: RequestedIP[];
}



function optString(o: Obj, key: string, field: string): string | undefined {
  const v = o[key];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw invalid(`${field}.${key}`, `expected a string, got ${JSON.stringify(v)}`);
  return v;
}

function ipamSection(conf: Obj): Obj {
  const ipam = conf.ipam;
  if (!isObj(ipam)) throw invalid('ipam', ipam === undefined ? 'missing' : 'expected an object');
  return ipam;
}

/** Only what DEL, CHECK and GC need: they must work even when the ranges cannot be resolved. */
export function loadStoreConfig(conf: Obj): StoreConfig {
  const name = conf.name;
  if (typeof name !== 'string' || !NAME_RE.test(name)) throw invalid('name', `invalid network name ${JSON.stringify(name)}`);
  const ipam = ipamSection(conf);
  const dataDir = optString(ipam, 'dataDir', 'ipam') ?? DEFAULT_DATA_DIR;
  if (!isAbsolute(dataDir)) throw invalid('ipam.dataDir', `must be an absolute path, got ${JSON.stringify(dataDir)}`);
  return { network: name, storeDir: join(dataDir, name) };
}


function parseRangeSet(raw: unknown, field: string): RangeSet {
  if (!Array.isArray(raw)) throw invalid(field, 'expected a list of ranges');
  if (raw.length === 0) throw invalid(field, 'empty range set');
  const ranges = raw.map((r, i) => parseRange(r, `${field}[${i}]`));
  const family = ranges[0].subnet.family;
  ranges.forEach((r, i) => {
    if (r.subnet.family !== family) {
      throw invalid(`${field}[${i}].subnet`, `${formatCidr(r.subnet)} is IPv${r.subnet.family}, but ${field} is IPv${family} (a range set holds one family; put each family in its own set)`);
    }
    for (let j = 0; j < i; j++) {
      if (rangesOverlap(ranges[j], r)) throw invalid(`${field}[${i}]`, `${describeRange(r)} overlaps ${field}[${j}] ${describeRange(ranges[j])}`);
    }
  });
  return { family, ranges };
}

function parseRangeSets(raw: unknown, field: string): { sets: RangeSet[]; fields: string[] } {
  if (!Array.isArray(raw)) throw invalid(field, 'expected a list of range sets (a list of lists of ranges)');
  return { sets: raw.map((s, i) => parseRangeSet(s, `${field}[${i}]`)), fields: raw.map((_, i) => `${field}[${i}]`) };
}

function checkSetsDisjoint(sets: RangeSet[], fields: string[]): void {
  for (let i = 0; i < sets.length; i++) {
    for (let j = 0; j < i; j++) {
      for (const a of sets[i].ranges) {
        for (const b of sets[j].ranges) {
          if (rangesOverlap(a, b)) throw invalid(fields[i], `${describeRange(a)} overlaps ${fields[j]} ${describeRange(b)}`);
        }
      }
    }
  }
}

function parseRoutes(raw: unknown): CniRoute[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw invalid('ipam.routes', 'expected a list of {dst, gw?}');
  return raw.map((r, i): CniRoute => {
    const field = `ipam.routes[${i}]`;
    if (!isObj(r)) throw invalid(field, 'expected an object {dst, gw?}');
    const dst = typeof r.dst === 'string' ? tryParseCidr(r.dst) : undefined;
    if (!dst) throw invalid(`${field}.dst`, r.dst === undefined ? 'missing' : `invalid CIDR ${JSON.stringify(r.dst)}`);
    const route: CniRoute = { dst: formatCidr(masked(dst)) };
    if (r.gw !== undefined && r.gw !== null && r.gw !== '') {
      const gw = parseIPField(r.gw, `${field}.gw`);
      if (gw.family !== dst.family) throw invalid(`${field}.gw`, `${r.gw} is IPv${gw.family}, but dst ${r.dst} is IPv${dst.family}`);
      route.gw = formatIP(gw);
    }
    for (const k of ['mtu', 'advmss', 'priority', 'table', 'scope'] as const) {
      const v = r[k];
      if (v === undefined || v === null) continue;
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw invalid(`${field}.${k}`, `expected a non-negative integer, got ${JSON.stringify(v)}`);
      route[k] = v;
    }
    return route;
  });
}

function stringList(o: Obj, key: string, field: string): string[] | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw invalid(`${field}.${key}`, 'expected a list of strings');
  return v as string[];
}

function parseDns(raw: unknown): CniDns | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (!isObj(raw)) throw invalid('ipam.dns', 'expected an object {nameservers, domain, search, options}');
  const dns: CniDns = {};
  const ns = stringList(raw, 'nameservers', 'ipam.dns');
  if (ns) {
    ns.forEach((s, i) => parseIPField(s, `ipam.dns.nameservers[${i}]`));
    dns.nameservers = ns;
  }
  const domain = optString(raw, 'domain', 'ipam.dns');
  if (domain) dns.domain = domain;
  const search = stringList(raw, 'search', 'ipam.dns');
  if (search) dns.search = search;
  const options = stringList(raw, 'options', 'ipam.dns');
  if (options) dns.options = options;
  return dns;
}

/** An address with or without a prefix length; the prefix is ignored, as host-local does. */
function parseRequested(v: unknown, field: string, code: number): IP {
  if (typeof v === 'string') {
    const a = tryParseIP(v) ?? tryParseCidr(v)?.addr;
    if (a) return a;
  }
  throw new CniError(code, `${field}: invalid IP address ${JSON.stringify(v)}`);
}

function requestedIPs(conf: Obj, cniArgs: Record<string, string>): RequestedIP[] {
  const out: RequestedIP[] = [];
  const push = (ip: IP, field: string) => {
    if (!out.some((r) => compare(r.ip, ip) === 0)) out.push({ ip, field });
  };
  if (cniArgs.IP) {
    cniArgs.IP.split(',')
      .map((s) => s.trim())
      .filter(Boolean)
      .forEach((s) => push(parseRequested(s, 'CNI_ARGS IP', ErrCode.InvalidEnv), 'CNI_ARGS IP'));
  }
  const args = conf.args;
  if (isObj(args) && isObj(args.cni) && args.cni.ips !== undefined && args.cni.ips !== null) {
    const ips = args.cni.ips;
    if (!Array.isArray(ips)) throw invalid('args.cni.ips', 'expected a list of IP addresses');
    ips.forEach((s, i) => push(parseRequested(s, `args.cni.ips[${i}]`, ErrCode.InvalidConfig), `args.cni.ips[${i}]`));
  }
  const rc = conf.runtimeConfig;
  if (isObj(rc) && rc.ips !== undefined && rc.ips !== null) {
    if (!Array.isArray(rc.ips)) throw invalid('runtimeConfig.ips', 'expected a list of IP addresses');
    rc.ips.forEach((s, i) => push(parseRequested(s, `runtimeConfig.ips[${i}]`, ErrCode.InvalidConfig), `runtimeConfig.ips[${i}]`));
  }
  return out;
}

/** Ranges in host-local's order: legacy top-level range first, then `ranges`; runtime ipRanges replace both. */
function collectRanges(conf: Obj, ipam: Obj, subnetFile: string | undefined): { sets: RangeSet[]; routes?: CniRoute[] } {
  const rc = conf.runtimeConfig;
  if (isObj(rc) && Array.isArray(rc.ipRanges) && rc.ipRanges.length > 0) {
    const { sets, fields } = parseRangeSets(rc.ipRanges, 'runtimeConfig.ipRanges');
    checkSetsDisjoint(sets, fields);
    return { sets };
  }
  const sets: RangeSet[] = [];
  const fields: string[] = [];
  const hasLegacy = ipam.subnet !== undefined && ipam.subnet !== null && ipam.subnet !== '';
  const hasRanges = Array.isArray(ipam.ranges) ? ipam.ranges.length > 0 : ipam.ranges !== undefined && ipam.ranges !== null;
  if (subnetFile) {
    if (hasLegacy) throw invalid('ipam.subnet', 'cannot be combined with ipam.subnetFile (the ranges come from the subnet file)');
    if (hasRanges) throw invalid('ipam.ranges', 'cannot be combined with ipam.subnetFile (the ranges come from the subnet file)');
    return readSubnetFile(subnetFile);
  }
  if (hasLegacy) {
    const r = parseRange({ subnet: ipam.subnet, rangeStart: ipam.rangeStart, rangeEnd: ipam.rangeEnd, gateway: ipam.gateway }, 'ipam');
    sets.push({ family: r.subnet.family, ranges: [r] });
    fields.push('ipam.subnet');
  } else {
    for (const k of ['rangeStart', 'rangeEnd', 'gateway']) {
      if (ipam[k] !== undefined && ipam[k] !== null && ipam[k] !== '') throw invalid(`ipam.${k}`, 'set without ipam.subnet (use ipam.ranges)');
    }
  }
  if (hasRanges) {
    const parsed = parseRangeSets(ipam.ranges, 'ipam.ranges');
    sets.push(...parsed.sets);
    fields.push(...parsed.fields);
  }
  if (sets.length === 0) throw invalid('ipam', 'no IP ranges specified (set ipam.ranges, ipam.subnet or ipam.subnetFile)');
  checkSetsDisjoint(sets, fields);
  return { sets };
}

/**
 * The full configuration for ADD and STATUS. `cniArgs` is the parsed CNI_ARGS. Throws
 * CniError 7 for invalid config and 11 when subnetFile is configured but not written yet.
 */
export function loadIpamConfig(conf: Obj, cniArgs: Record<string, string> = {}): IpamConfig {
  const store = loadStoreConfig(conf);
  const ipam = ipamSection(conf);
  const subnetFile = optString(ipam, 'subnetFile', 'ipam');
  if (subnetFile !== undefined && !isAbsolute(subnetFile)) throw invalid('ipam.subnetFile', `must be an absolute path, got ${JSON.stringify(subnetFile)}`);
  const resolvConf = optString(ipam, 'resolvConf', 'ipam');
  const routes = parseRoutes(ipam.routes);
  const dns = parseDns(ipam.dns);
  const requested = requestedIPs(conf, cniArgs);
  const collected = collectRanges(conf, ipam, subnetFile);
  const explicitRoutes = ipam.routes !== undefined && ipam.routes !== null;
  return {
    ...store,
    rangeSets: collected.sets,
    // like flannel: without configured routes, the cluster network is reached through the gateway
    routes: explicitRoutes ? routes : (collected.routes ?? routes),
    dns,
    resolvConf,
    subnetFile,
    requested,
  };
}
