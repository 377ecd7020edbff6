// The agent's subnet lease, flannel style (/run/podnet/subnet.env). PODNET_SUBNET carries the
// gateway and the prefix (10.244.1.1/24), so the range is its network and the gateway its address.
import { readFileSync } from 'node:fs';
import { CniError, ErrCode } from '../cni/errors.js';
import type { CniRoute } from '../cni/types.js';
import { formatCidr, formatIP, hasHostBits, masked, tryParseCidr } from '../util/ip.js';
import { parseRange, type IpamRange, type RangeSet } from './range.js';

export function parseEnvFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    let v = line.slice(eq + 1).trim();
    if (v.length >= 2 && (v[0] === '"' || v[0] === "'") && v[v.length - 1] === v[0]) v = v.slice(1, -1);
    out[line.slice(0, eq).trim()] = v;
  }
  return out;
}

export function subnetFileMissing(path: string): CniError {
  return new CniError(
    ErrCode.TryAgainLater,
    `the podnet agent has not written its subnet lease yet: ${path} does not exist (is the podnet agent running on this node?)`,
  );
}

function leaseRange(value: string, key: string, path: string): IpamRange {
  const c = tryParseCidr(value);
  const field = `ipam.subnetFile (${path}) ${key}`;
  if (!c) throw new CniError(ErrCode.InvalidConfig, `${field}: invalid CIDR ${JSON.stringify(value)}`);
  const gateway = hasHostBits(c) ? formatIP(c.addr) : undefined;
  return parseRange({ subnet: formatCidr(masked(c)), gateway }, field);
}

/** Reads the lease; a missing file is transient (code 11), a malformed one is a config error (7). */
export function readSubnetFile(path: string): { sets: RangeSet[]; routes: CniRoute[] } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') throw subnetFileMissing(path);
    throw new CniError(ErrCode.IoFailure, `ipam.subnetFile: cannot read ${path}: ${err.message}`);
  }
  const env = parseEnvFile(text);
  const sets: RangeSet[] = [];
  const routes: CniRoute[] = [];
  for (const [subnetKey, networkKey] of [
    ['PODNET_SUBNET', 'PODNET_NETWORK'],
    ['PODNET_IPV6_SUBNET', 'PODNET_IPV6_NETWORK'],
  ] as const) {
    const sub = env[subnetKey];
    if (!sub) continue;
    const r = leaseRange(sub, subnetKey, path);
    sets.push({ family: r.subnet.family, ranges: [r] });
    const net = env[networkKey];
    if (net) {
      const n = tryParseCidr(net);
      if (!n) throw new CniError(ErrCode.InvalidConfig, `ipam.subnetFile (${path}) ${networkKey}: invalid CIDR ${JSON.stringify(net)}`);
      routes.push({ dst: formatCidr(masked(n)) });
    }
  }
  if (sets.length === 0) {
    throw new CniError(ErrCode.InvalidConfig, `ipam.subnetFile (${path}): neither PODNET_SUBNET nor PODNET_IPV6_SUBNET is set`);
  }
  return { sets, routes };
}
