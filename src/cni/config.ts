// The `podnet` plugin's network configuration: the reference bridge plugin's fields plus `mode`
// and the underlay options. Pure: parse and validate, naming the exact field on error.
import { CniError, ErrCode } from './errors.js';

export type Mode = 'bridge' | 'routed' | 'macvlan' | 'ipvlan';
const MODES: readonly Mode[] = ['bridge', 'routed', 'macvlan', 'ipvlan'];
const MACVLAN_MODES = ['bridge', 'private', 'vepa', 'passthru'] as const;

export interface PodnetConfig {
  name: string;
  cniVersion: string;
  mode: Mode;
  bridge: string;
  isGateway: boolean;
  isDefaultGateway: boolean;
  forceAddress: boolean;
  ipMasq: boolean;
  mtu?: number;
  hairpinMode: boolean;
  promiscMode: boolean;
  /** macvlan/ipvlan: the node NIC to clone; auto-detected from the default route when absent */
  master?: string;
  macvlanMode: string;
  hostReachable: boolean;
  ipam: Record<string, unknown>;
  ipamType: string;
  dns?: Record<string, unknown>;
  runtimeConfig: Record<string, unknown>;
}

const IFNAME_RE = /^[^/:\s]{1,15}$/;

function invalid(field: string, msg: string): CniError {
  return new CniError(ErrCode.InvalidConfig, `${field}: ${msg}`);
}

function bool(conf: Record<string, unknown>, key: string, dflt: boolean): boolean {
  const v = conf[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'boolean') throw invalid(key, `expected true or false, got ${JSON.stringify(v)}`);
  return v;
}

function str(conf: Record<string, unknown>, key: string): string | undefined {
  const v = conf[key];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw invalid(key, `expected a string, got ${JSON.stringify(v)}`);
  return v;
}

export function validIfname(field: string, name: string): string {
  if (!IFNAME_RE.test(name) || name === '.' || name === '..') {
    throw invalid(field, `${JSON.stringify(name)} is not a valid interface name (1-15 characters, no '/', ':' or whitespace)`);
  }
  return name;
}

export function parsePodnetConfig(conf: Record<string, unknown>): PodnetConfig {
  const modeRaw = str(conf, 'mode') ?? 'bridge';
  if (!(MODES as readonly string[]).includes(modeRaw)) {
    throw invalid('mode', `unknown mode ${JSON.stringify(modeRaw)} (expected one of ${MODES.join(', ')})`);
  }
  const mode = modeRaw as Mode;
  const isDefaultGateway = bool(conf, 'isDefaultGateway', false);
  // as the reference bridge: a default gateway is necessarily a gateway
  const isGateway = bool(conf, 'isGateway', mode === 'routed') || isDefaultGateway;
  let mtu: number | undefined;
  if (conf.mtu !== undefined && conf.mtu !== null && conf.mtu !== 0) {
    if (typeof conf.mtu !== 'number' || !Number.isInteger(conf.mtu) || conf.mtu < 68 || conf.mtu > 65535) {
      throw invalid('mtu', `expected an integer between 68 and 65535, got ${JSON.stringify(conf.mtu)}`);
    }
    mtu = conf.mtu;
  }
  const master = str(conf, 'master');
  if (master !== undefined) validIfname('master', master);
  const bridge = validIfname('bridge', str(conf, 'bridge') ?? 'cni0');
  const macvlanMode = str(conf, 'macvlanMode') ?? 'bridge';
  if (!(MACVLAN_MODES as readonly string[]).includes(macvlanMode)) {
    throw invalid('macvlanMode', `unknown macvlan mode ${JSON.stringify(macvlanMode)} (expected one of ${MACVLAN_MODES.join(', ')})`);
  }
  const ipam = conf.ipam;
  if (typeof ipam !== 'object' || ipam === null || Array.isArray(ipam)) {
    throw invalid('ipam', 'an ipam section with a "type" is required');
  }
  const ipamType = (ipam as Record<string, unknown>).type;
  if (typeof ipamType !== 'string' || ipamType === '') throw invalid('ipam.type', 'required');
  if (!/^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$/.test(ipamType)) throw invalid('ipam.type', `invalid plugin name ${JSON.stringify(ipamType)}`);
  const rc = conf.runtimeConfig;
  const runtimeConfig = typeof rc === 'object' && rc !== null && !Array.isArray(rc) ? (rc as Record<string, unknown>) : {};
  const dns = typeof conf.dns === 'object' && conf.dns !== null ? (conf.dns as Record<string, unknown>) : undefined;
  return {
    name: String(conf.name),
    cniVersion: String(conf.cniVersion),
    mode,
    bridge,
    isGateway,
    isDefaultGateway,
    forceAddress: bool(conf, 'forceAddress', false),
    ipMasq: bool(conf, 'ipMasq', false),
    mtu,
    hairpinMode: bool(conf, 'hairpinMode', false),
    promiscMode: bool(conf, 'promiscMode', false),
    master,
    macvlanMode,
    hostReachable: bool(conf, 'hostReachable', false),
    ipam: ipam as Record<string, unknown>,
    ipamType,
    dns,
    runtimeConfig,
  };
}
