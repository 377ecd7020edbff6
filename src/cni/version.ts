// Version negotiation and result conversion. One internal shape (CniResult, 1.1.0);
// printing converts to the config's version, parsing accepts any supported one.
import { CniError, ErrCode } from './errors.js';
import type { CniInterface, CniIpConfig, CniResult, CniRoute } from './types.js';

export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
export const CURRENT_VERSION = '1.1.0';

export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return 0;
}

export function isSupported(v: string): boolean {
  return (SUPPORTED_VERSIONS as readonly string[]).includes(v);
}

export function requireSupported(v: unknown): string {
  if (typeof v !== 'string' || v === '') {
    throw new CniError(ErrCode.IncompatibleVersion, 'incompatible CNI versions: config has no cniVersion', `supported: ${SUPPORTED_VERSIONS.join(', ')}`);
  }
  if (!isSupported(v)) {
    throw new CniError(ErrCode.IncompatibleVersion, `incompatible CNI versions: config is ${JSON.stringify(v)}, plugin supports [${SUPPORTED_VERSIONS.join(' ')}]`);
  }
  return v;
}

export function versionInfo(): { cniVersion: string; supportedVersions: string[] } {
  return { cniVersion: CURRENT_VERSION, supportedVersions: [...SUPPORTED_VERSIONS] };
}

function ipFamily(address: string): '4' | '6' {
  return address.includes(':') ? '6' : '4';
}

/** Renders the internal result in the wire format of `version`. */
export function convertResult(result: CniResult, version: string): Record<string, unknown> {
  const pre1 = compareVersions(version, '1.0.0') < 0;
  const full = compareVersions(version, '1.1.0') >= 0;
  const out: Record<string, unknown> = { cniVersion: version };
  if (result.interfaces && result.interfaces.length) {
    out.interfaces = result.interfaces.map((i) => {
      const o: Record<string, unknown> = { name: i.name };
      if (i.mac) o.mac = i.mac;
      if (full && i.mtu !== undefined) o.mtu = i.mtu;
      if (i.sandbox !== undefined && i.sandbox !== '') o.sandbox = i.sandbox;
      if (full && i.socketPath) o.socketPath = i.socketPath;
      if (full && i.pciID) o.pciID = i.pciID;
      return o;
    });
  }
  if (result.ips && result.ips.length) {
    out.ips = result.ips.map((ip) => {
      const o: Record<string, unknown> = {};
      if (pre1) o.version = ipFamily(ip.address);
      if (ip.interface !== undefined) o.interface = ip.interface;
      o.address = ip.address;
      if (ip.gateway) o.gateway = ip.gateway;
      return o;
    });
  }
  if (result.routes && result.routes.length) {
    out.routes = result.routes.map((r) => {
      const o: Record<string, unknown> = { dst: r.dst };
      if (r.gw) o.gw = r.gw;
      if (full) {
        for (const k of ['mtu', 'advmss', 'priority', 'table', 'scope'] as const) {
          if (r[k] !== undefined) o[k] = r[k];
        }
      }
      return o;
    });
  }
  if (result.dns && Object.keys(result.dns).length) out.dns = result.dns;
  else out.dns = {};
  return out;
}

function asObj(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new CniError(ErrCode.DecodeFailure, `${what}: expected an object`);
  }
  return v as Record<string, unknown>;
}

function optStr(o: Record<string, unknown>, k: string, what: string): string | undefined {
  const v = o[k];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new CniError(ErrCode.DecodeFailure, `${what}.${k}: expected a string`);
  return v;
}

function optNum(o: Record<string, unknown>, k: string, what: string): number | undefined {
  const v = o[k];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new CniError(ErrCode.DecodeFailure, `${what}.${k}: expected an integer`);
  return v;
}

/** Parses a result (prevResult, or a delegate's output) of any supported version into the internal shape. */
export function parseResult(raw: unknown, fallbackVersion: string): CniResult {
  const o = asObj(raw, 'result');
  const version = optStr(o, 'cniVersion', 'result') ?? fallbackVersion;
  const res: CniResult = { cniVersion: version };
  if (o.interfaces !== undefined && o.interfaces !== null) {
    if (!Array.isArray(o.interfaces)) throw new CniError(ErrCode.DecodeFailure, 'result.interfaces: expected a list');
    res.interfaces = o.interfaces.map((x, i): CniInterface => {
      const w = `result.interfaces[${i}]`;
      const io = asObj(x, w);
      const name = optStr(io, 'name', w);
      if (!name) throw new CniError(ErrCode.DecodeFailure, `${w}.name: required`);
      const itf: CniInterface = { name };
      const mac = optStr(io, 'mac', w);
      if (mac) itf.mac = mac;
      const mtu = optNum(io, 'mtu', w);
      if (mtu !== undefined) itf.mtu = mtu;
      const sandbox = optStr(io, 'sandbox', w);
      if (sandbox) itf.sandbox = sandbox;
      const sp = optStr(io, 'socketPath', w);
      if (sp) itf.socketPath = sp;
      const pci = optStr(io, 'pciID', w);
      if (pci) itf.pciID = pci;
      return itf;
    });
  }
  if (o.ips !== undefined && o.ips !== null) {
    if (!Array.isArray(o.ips)) throw new CniError(ErrCode.DecodeFailure, 'result.ips: expected a list');
    res.ips = o.ips.map((x, i): CniIpConfig => {
      const w = `result.ips[${i}]`;
      const io = asObj(x, w);
      const address = optStr(io, 'address', w);
      if (!address) throw new CniError(ErrCode.DecodeFailure, `${w}.address: required`);
      const ip: CniIpConfig = { address };
      const gw = optStr(io, 'gateway', w);
      if (gw) ip.gateway = gw;
      const itf = optNum(io, 'interface', w);
      if (itf !== undefined) ip.interface = itf;
      return ip;
    });
  }
  if (o.routes !== undefined && o.routes !== null) {
    if (!Array.isArray(o.routes)) throw new CniError(ErrCode.DecodeFailure, 'result.routes: expected a list');
    res.routes = o.routes.map((x, i): CniRoute => {
      const w = `result.routes[${i}]`;
      const ro = asObj(x, w);
      const dst = optStr(ro, 'dst', w);
      if (!dst) throw new CniError(ErrCode.DecodeFailure, `${w}.dst: required`);
      const r: CniRoute = { dst };
      const gw = optStr(ro, 'gw', w);
      if (gw) r.gw = gw;
      for (const k of ['mtu', 'advmss', 'priority', 'table', 'scope'] as const) {
        const n = optNum(ro, k, w);
        if (n !== undefined) r[k] = n;
      }
      return r;
    });
  }
  if (o.dns !== undefined && o.dns !== null) res.dns = asObj(o.dns, 'result.dns') as CniResult['dns'];
  return res;
}
