// iproute2 JSON (`ip -j`, `bridge -j`) → the typed objects of types.ts. Pure functions.
// iproute2 omits fields the query already pinned (e.g. "dev" under `show dev X`, "table" under
// `table main`), so callers pass those back in as defaults.
import type { Address, FdbEntry, Link, Neighbour, Route } from './types.js';

type J = Record<string, unknown>;

function parseJsonArray(text: string, what: string): J[] {
  const t = text.trim();
  if (t === '') return [];
  let v: unknown;
  try {
    v = JSON.parse(t);
  } catch (e) {
    throw new Error(`cannot parse ${what} JSON from iproute2: ${(e as Error).message}: ${t.slice(0, 200)}`);
  }
  if (!Array.isArray(v)) throw new Error(`${what}: expected a JSON array from iproute2`);
  return v.filter((x): x is J => typeof x === 'object' && x !== null);
}

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const num = (v: unknown): number | undefined => (typeof v === 'number' ? v : typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : undefined);

export function parseLink(o: J): Link {
  const flags = Array.isArray(o.flags) ? (o.flags as string[]) : [];
  const linkinfo = (o.linkinfo ?? undefined) as J | undefined;
  const l: Link = {
    index: num(o.ifindex) ?? 0,
    name: str(o.ifname) ?? '',
    mtu: num(o.mtu) ?? 0,
    mac: str(o.address) ?? '',
    up: flags.includes('UP'),
    operState: str(o.operstate) ?? 'UNKNOWN',
  };
  const kind = str(linkinfo?.info_kind);
  if (kind) l.kind = kind;
  if (str(o.master)) l.master = str(o.master);
  // Same-netns peers/parents are reported by name ("link"); others by index + netnsid.
  if (str(o.link)) l.link = str(o.link);
  if (num(o.link_index) !== undefined) l.linkIndex = num(o.link_index);
  if (num(o.link_netnsid) !== undefined) l.linkNetnsId = num(o.link_netnsid);
  if (str(o.ifalias)) l.alias = str(o.ifalias);
  // The PROMISC flag is the user-set one (what link-set promisc controls); the promiscuity counter
  // is also raised by bridges and macvlans on their ports, which is not a setting.
  l.promisc = flags.includes('PROMISC');
  if (linkinfo && str(linkinfo.info_slave_kind) === 'bridge') {
    const sd = linkinfo.info_slave_data as J | undefined;
    if (sd && typeof sd.hairpin === 'boolean') l.hairpin = sd.hairpin;
  }
  if (linkinfo && typeof linkinfo.info_data === 'object' && linkinfo.info_data !== null) l.info = { ...(linkinfo.info_data as J) };
  return l;
}

export function parseLinks(text: string): Link[] {
  return parseJsonArray(text, 'link').map(parseLink);
}

export function parseAddresses(text: string): Address[] {
  const out: Address[] = [];
  for (const l of parseJsonArray(text, 'addr')) {
    const ifname = str(l.ifname) ?? '';
    for (const a of Array.isArray(l.addr_info) ? (l.addr_info as J[]) : []) {
      const fam = str(a.family);
      if (fam !== 'inet' && fam !== 'inet6') continue;
      const address = str(a.local);
      if (!address) continue;
      out.push({ ifname, family: fam === 'inet' ? 4 : 6, address, prefixLen: num(a.prefixlen) ?? (fam === 'inet' ? 32 : 128), scope: str(a.scope) ?? 'global' });
    }
  }
  return out;
}

const TABLE_NAMES: Record<string, number> = { main: 254, local: 255, default: 253, unspec: 0 };

export function tableNumber(v: unknown): number | undefined {
  if (typeof v === 'number') return v;
  if (typeof v !== 'string') return undefined;
  if (/^\d+$/.test(v)) return Number(v);
  return TABLE_NAMES[v];
}

export interface RouteDefaults {
  family?: 4 | 6;
  dev?: string;
  table?: number;
}

export function parseRoute(o: J, d: RouteDefaults = {}): Route {
  let dst = str(o.dst) ?? 'default';
  const gateway = str(o.gateway);
  // IPv6 routes always carry RTA_PREF ("pref"); that tells a gateway-less "default" apart.
  const family: 4 | 6 = d.family ?? (dst.includes(':') || (gateway?.includes(':') ?? false) || 'pref' in o ? 6 : 4);
  if (dst !== 'default' && !dst.includes('/')) dst = `${dst}/${family === 4 ? 32 : 128}`;
  const r: Route = { family, dst };
  if (gateway) r.gateway = gateway;
  const dev = str(o.dev) ?? d.dev;
  if (dev) r.dev = dev;
  if (str(o.protocol)) r.protocol = str(o.protocol);
  if (str(o.scope)) r.scope = str(o.scope);
  const table = o.table !== undefined ? tableNumber(o.table) : d.table;
  if (table !== undefined) r.table = table;
  if (num(o.metric) !== undefined) r.metric = num(o.metric);
  if (str(o.prefsrc)) r.src = str(o.prefsrc);
  const flags = Array.isArray(o.flags) ? (o.flags as string[]) : [];
  if (flags.includes('onlink')) r.onlink = true;
  r.type = str(o.type) ?? 'unicast';
  const metrics = Array.isArray(o.metrics) ? (o.metrics as J[]) : [];
  for (const m of metrics) if (num(m.mtu) !== undefined) r.mtu = num(m.mtu);
  return r;
}

export function parseRoutes(text: string, d: RouteDefaults = {}): Route[] {
  return parseJsonArray(text, 'route').map((o) => parseRoute(o, d));
}

export function parseNeighbours(text: string, dev?: string): Neighbour[] {
  return parseJsonArray(text, 'neigh').map((o) => {
    const n: Neighbour = { dst: str(o.dst) ?? '', dev: str(o.dev) ?? dev ?? '', state: Array.isArray(o.state) ? (o.state as string[]) : [] };
    if (str(o.lladdr)) n.lladdr = str(o.lladdr);
    return n;
  });
}

export function parseFdb(text: string, dev?: string): FdbEntry[] {
  return parseJsonArray(text, 'fdb').map((o) => {
    const e: FdbEntry = { mac: str(o.mac) ?? '', dev: str(o.ifname) ?? dev ?? '', flags: Array.isArray(o.flags) ? (o.flags as string[]) : [] };
    if (str(o.dst)) e.dst = str(o.dst);
    if (str(o.master)) e.master = str(o.master);
    if (num(o.vlan) !== undefined) e.vlan = num(o.vlan);
    if (str(o.state)) e.state = str(o.state);
    return e;
  });
}
