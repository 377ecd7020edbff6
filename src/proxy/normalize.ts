// Validates services and endpoint slices and turns them into ServicePorts. Pure. A service with
// any invalid field is rejected whole, with the service and field named, and every other service
// is still rendered: one bad object must never take the node's service network down.
import { canonicalIP, tryParseIP } from '../util/ip.js';
import type { Family } from '../util/ip.js';
import {
  type Endpoint,
  type ProxyModel,
  type ProxyNode,
  type Protocol,
  type RawEndpointSlice,
  type RawService,
  SERVICE_NAME_LABEL,
  type ServicePort,
  type ServiceProblem,
  type ServiceState,
} from './model.js';

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const PROTOCOLS: Record<string, Protocol> = { TCP: 'tcp', UDP: 'udp', SCTP: 'sctp' };

class Invalid extends Error {
  constructor(
    readonly field: string,
    msg: string,
  ) {
    super(msg);
  }
}

function str(v: unknown, field: string, dflt?: string): string {
  if (v === undefined || v === null || v === '') {
    if (dflt !== undefined) return dflt;
    throw new Invalid(field, 'is required');
  }
  if (typeof v !== 'string') throw new Invalid(field, `expected a string, got ${JSON.stringify(v)}`);
  return v;
}

function portNumber(v: unknown, field: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) throw new Invalid(field, `port ${JSON.stringify(v)} is out of range (1-65535)`);
  return v;
}

function ipField(v: unknown, field: string): { ip: string; family: Family } {
  if (typeof v !== 'string') throw new Invalid(field, `expected an IP address string, got ${JSON.stringify(v)}`);
  const p = tryParseIP(v);
  const c = canonicalIP(v);
  if (!p || !c) throw new Invalid(field, `${JSON.stringify(v)} is not a valid IP address`);
  return { ip: c, family: p.family };
}

function policy(v: unknown, field: string): boolean {
  if (v === undefined || v === null || v === 'Cluster') return false;
  if (v === 'Local') return true;
  throw new Invalid(field, `expected Cluster or Local, got ${JSON.stringify(v)}`);
}

interface ParsedPort {
  name: string;
  protocol: Protocol;
  port: number;
  targetPort: number | string;
  nodePort?: number;
  field: string;
}

export interface ParsedService {
  key: string;
  frontends?: Frontend[];
  created: string;
  clusterIPs: { ip: string; family: Family }[];
  externalIPs: { ip: string; family: Family }[];
  ports: ParsedPort[];
  nodePortType: boolean;
  affinitySeconds?: number;
  internalLocal: boolean;
  externalLocal: boolean;
}

export function serviceKey(s: RawService): string {
  const ns = typeof s.metadata?.namespace === 'string' && s.metadata.namespace ? s.metadata.namespace : 'default';
  const name = typeof s.metadata?.name === 'string' ? s.metadata.name : '(unnamed)';
  return `${ns}/${name}`;
}

/** Validates one service on its own (cross-service conflicts are checked later). Undefined: not proxied (headless, ExternalName). */
function parseService(s: RawService, node: ProxyNode): ParsedService | undefined {
  if (typeof s !== 'object' || s === null) throw new Invalid('(root)', 'expected an object');
  const name = str(s.metadata?.name, 'metadata.name');
  if (!DNS_LABEL.test(name)) throw new Invalid('metadata.name', `${JSON.stringify(name)} is not a DNS label`);
  const ns = str(s.metadata?.namespace, 'metadata.namespace', 'default');
  if (!DNS_LABEL.test(ns)) throw new Invalid('metadata.namespace', `${JSON.stringify(ns)} is not a DNS label`);
  const spec = s.spec;
  if (typeof spec !== 'object' || spec === null) throw new Invalid('spec', 'is required');
  const type = str(spec.type, 'spec.type', 'ClusterIP');
  if (type === 'ExternalName') return undefined;
  if (type !== 'ClusterIP' && type !== 'NodePort') throw new Invalid('spec.type', `${JSON.stringify(type)} is not supported (ClusterIP, NodePort or ExternalName)`);
  if (spec.clusterIP === 'None') return undefined;

  const rawIPs: unknown[] = Array.isArray(spec.clusterIPs) && spec.clusterIPs.length > 0 ? spec.clusterIPs : [spec.clusterIP];
  const ipField0 = Array.isArray(spec.clusterIPs) && spec.clusterIPs.length > 0 ? 'spec.clusterIPs' : 'spec.clusterIP';
  const clusterIPs = rawIPs.map((v, i) => ipField(v, rawIPs.length > 1 || ipField0 === 'spec.clusterIPs' ? `${ipField0}[${i}]` : ipField0));
  if (clusterIPs.length > 2 || (clusterIPs.length === 2 && clusterIPs[0].family === clusterIPs[1].family)) throw new Invalid('spec.clusterIPs', 'at most one address per IP family');
  if (spec.externalIPs !== undefined && !Array.isArray(spec.externalIPs)) throw new Invalid('spec.externalIPs', 'expected a list');
  const externalIPs = ((spec.externalIPs as unknown[] | undefined) ?? []).map((v, i) => ipField(v, `spec.externalIPs[${i}]`));

  if (!Array.isArray(spec.ports) || spec.ports.length === 0) throw new Invalid('spec.ports', 'at least one port is required');
  const nodePortType = type === 'NodePort';
  const seen = new Map<string, string>();
  const names = new Set<string>();
  const ports: ParsedPort[] = spec.ports.map((p: unknown, i: number) => {
    const f = `spec.ports[${i}]`;
    if (typeof p !== 'object' || p === null) throw new Invalid(f, 'expected an object');
    const o = p as Record<string, unknown>;
    const pname = str(o.name, `${f}.name`, '');
    if (pname && !DNS_LABEL.test(pname)) throw new Invalid(`${f}.name`, `${JSON.stringify(pname)} is not a DNS label`);
    if (spec.ports && (spec.ports as unknown[]).length > 1 && !pname) throw new Invalid(`${f}.name`, 'is required when a service has several ports');
    if (names.has(pname)) throw new Invalid(`${f}.name`, `duplicate port name ${JSON.stringify(pname)}`);
    names.add(pname);
    const protoRaw = str(o.protocol, `${f}.protocol`, 'TCP');
    const protocol = PROTOCOLS[protoRaw];
    if (!protocol) throw new Invalid(`${f}.protocol`, `unknown protocol ${JSON.stringify(protoRaw)} (TCP, UDP or SCTP)`);
    const port = portNumber(o.port, `${f}.port`);
    const dup = seen.get(`${protocol}/${port}`);
    if (dup) throw new Invalid(`${f}.port`, `duplicate port ${port}/${protoRaw} (also ${dup})`);
    seen.set(`${protocol}/${port}`, f);
    let targetPort: number | string = port;
    if (o.targetPort !== undefined && o.targetPort !== null) {
      if (typeof o.targetPort === 'string' && !/^\d+$/.test(o.targetPort)) {
        if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(o.targetPort) || o.targetPort.length > 15) throw new Invalid(`${f}.targetPort`, `${JSON.stringify(o.targetPort)} is not a port name`);
        targetPort = o.targetPort;
      } else targetPort = portNumber(typeof o.targetPort === 'string' ? Number(o.targetPort) : o.targetPort, `${f}.targetPort`);
    }
    let nodePort: number | undefined;
    if (o.nodePort !== undefined && o.nodePort !== null && o.nodePort !== 0) {
      if (!nodePortType) throw new Invalid(`${f}.nodePort`, 'only a NodePort service may set nodePort');
      nodePort = portNumber(o.nodePort, `${f}.nodePort`);
      const [lo, hi] = node.nodePortRange;
      if (nodePort < lo || nodePort > hi) throw new Invalid(`${f}.nodePort`, `${nodePort} is outside the NodePort range ${lo}-${hi}`);
    } else if (nodePortType) throw new Invalid(`${f}.nodePort`, 'a NodePort service needs a nodePort on every port (podnet does not allocate them)');
    return { name: pname, protocol, port, targetPort, nodePort, field: f };
  });

  const aff = str(spec.sessionAffinity, 'spec.sessionAffinity', 'None');
  let affinitySeconds: number | undefined;
  if (aff === 'ClientIP') {
    const t = spec.sessionAffinityConfig?.clientIP?.timeoutSeconds;
    affinitySeconds = 10800;
    if (t !== undefined && t !== null) {
      if (typeof t !== 'number' || !Number.isInteger(t) || t < 1 || t > 86400) throw new Invalid('spec.sessionAffinityConfig.clientIP.timeoutSeconds', `expected 1-86400, got ${JSON.stringify(t)}`);
      affinitySeconds = t;
    }
  } else if (aff !== 'None') throw new Invalid('spec.sessionAffinity', `expected None or ClientIP, got ${JSON.stringify(aff)}`);

  return {
    key: `${ns}/${name}`,
    created: typeof s.metadata?.creationTimestamp === 'string' ? s.metadata.creationTimestamp : '',
    clusterIPs,
    externalIPs,
    ports,
    nodePortType,
    affinitySeconds,
    internalLocal: policy(spec.internalTrafficPolicy, 'spec.internalTrafficPolicy'),
    externalLocal: policy(spec.externalTrafficPolicy, 'spec.externalTrafficPolicy'),
  };
}

interface SliceEndpoints {
  family: Family;
  ports: { name: string; port: number; protocol: Protocol }[];
  endpoints: { ip: string; nodeName?: string; ready: boolean; serving: boolean; terminating: boolean }[];
}

function parseSlice(sl: RawEndpointSlice, problems: ServiceProblem[]): { service: string; data: SliceEndpoints } | undefined {
  const ns = typeof sl.metadata?.namespace === 'string' && sl.metadata.namespace ? sl.metadata.namespace : 'default';
  const sliceName = typeof sl.metadata?.name === 'string' ? sl.metadata.name : '(unnamed)';
  const svc = sl.metadata?.labels?.[SERVICE_NAME_LABEL];
  const who = `${ns}/${typeof svc === 'string' ? svc : '?'} (EndpointSlice ${sliceName})`;
  const bad = (field: string, message: string) => problems.push({ service: who, field, message });
  if (typeof svc !== 'string' || !svc) {
    bad(`metadata.labels["${SERVICE_NAME_LABEL}"]`, 'is required');
    return undefined;
  }
  const at = sl.addressType ?? 'IPv4';
  if (at !== 'IPv4' && at !== 'IPv6') {
    if (at !== 'FQDN') bad('addressType', `expected IPv4 or IPv6, got ${JSON.stringify(at)}`);
    return undefined;
  }
  const family: Family = at === 'IPv4' ? 4 : 6;
  const ports: SliceEndpoints['ports'] = [];
  for (const [i, p] of (Array.isArray(sl.ports) ? sl.ports : []).entries()) {
    const o = (p ?? {}) as Record<string, unknown>;
    try {
      const protoRaw = str(o.protocol, `ports[${i}].protocol`, 'TCP');
      const protocol = PROTOCOLS[protoRaw];
      if (!protocol) throw new Invalid(`ports[${i}].protocol`, `unknown protocol ${JSON.stringify(protoRaw)}`);
      ports.push({ name: str(o.name, `ports[${i}].name`, ''), port: portNumber(o.port, `ports[${i}].port`), protocol });
    } catch (e) {
      if (!(e instanceof Invalid)) throw e;
      bad(e.field, e.message);
    }
  }
  const endpoints: SliceEndpoints['endpoints'] = [];
  for (const [i, ep] of (Array.isArray(sl.endpoints) ? sl.endpoints : []).entries()) {
    const o = (ep ?? {}) as Record<string, unknown>;
    const cond = (o.conditions ?? {}) as Record<string, unknown>;
    const ready = cond.ready !== false;
    const serving = cond.serving === undefined ? ready : cond.serving !== false;
    const terminating = cond.terminating === true;
    for (const [j, a] of (Array.isArray(o.addresses) ? o.addresses : []).entries()) {
      try {
        const p = ipField(a, `endpoints[${i}].addresses[${j}]`);
        if (p.family !== family) throw new Invalid(`endpoints[${i}].addresses[${j}]`, `${p.ip} is not an ${at} address`);
        endpoints.push({ ip: p.ip, nodeName: typeof o.nodeName === 'string' ? o.nodeName : undefined, ready, serving, terminating });
      } catch (e) {
        if (!(e instanceof Invalid)) throw e;
        bad(e.field, e.message);
      }
    }
  }
  return { service: `${ns}/${svc}`, data: { family, ports, endpoints } };
}

function cmpEndpoint(a: Endpoint, b: Endpoint): number {
  return a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : a.port - b.port;
}

/** Endpoints of one service port: ready ones, or serving-and-terminating ones when none is ready. */
function endpointsFor(slices: SliceEndpoints[], family: Family, port: ParsedPort, node: ProxyNode): Endpoint[] {
  // an address may be listed by several slices (during a rollover): the best condition wins, so
  // the result does not depend on the order of the slices
  const best = new Map<string, { ep: Endpoint; rank: number }>();
  for (const sl of slices) {
    if (sl.family !== family) continue;
    let target: number | undefined;
    const named = sl.ports.find((p) => p.name === port.name && p.protocol === port.protocol);
    if (named) target = named.port;
    else if (sl.ports.length === 0) target = typeof port.targetPort === 'number' ? port.targetPort : undefined;
    if (target === undefined) continue;
    for (const e of sl.endpoints) {
      const rank = e.ready ? 2 : e.serving && e.terminating ? 1 : 0;
      const k = `${e.ip}/${target}`;
      const had = best.get(k);
      if (had && had.rank >= rank) continue;
      best.set(k, { rank, ep: { ip: e.ip, port: target, nodeName: e.nodeName, local: e.nodeName !== undefined && e.nodeName === node.name } });
    }
  }
  const ready: Endpoint[] = [];
  const terminating: Endpoint[] = [];
  for (const { ep, rank } of best.values()) {
    if (rank === 2) ready.push(ep);
    else if (rank === 1) terminating.push(ep);
  }
  return (ready.length > 0 ? ready : terminating).sort(cmpEndpoint);
}

export interface NormalizeOptions {
  /** who held each frontend (`ip/proto/port` or `nodeport/proto/port`) before, so a newcomer cannot take it over */
  priorOwners?: ReadonlyMap<string, string>;
}

// The proxier normalizes the whole state on every change; unchanged objects keep their identity
// between calls, so parsing and port building are memoized per object. Unchanged ServicePorts come
// back as the same objects, which lets the engines skip them by identity.
export type ParseOutcome = { ok: ParsedService | undefined } | { err: ServiceProblem };
const parseCache = new WeakMap<RawService, { range: string; out: ParseOutcome }>();
const sliceCache = new WeakMap<RawEndpointSlice, { out: ReturnType<typeof parseSlice>; problems: ServiceProblem[] }>();
const portsCache = new WeakMap<ParsedService, { node: ProxyNode; slices: RawEndpointSlice[]; ports: ServicePort[] }>();

export function parseCached(raw: RawService, node: ProxyNode): ParseOutcome {
  const range = node.nodePortRange.join('-');
  const hit = typeof raw === 'object' && raw !== null ? parseCache.get(raw) : undefined;
  if (hit && hit.range === range) return hit.out;
  let out: ParseOutcome;
  try {
    out = { ok: parseService(raw, node) };
  } catch (e) {
    if (!(e instanceof Invalid)) throw e;
    out = { err: { service: serviceKey(raw), field: e.field, message: e.message } };
  }
  if (typeof raw === 'object' && raw !== null) parseCache.set(raw, { range, out });
  return out;
}

function sameList<T>(a: T[], b: T[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Validates and normalizes; ports come in the order of the services given. */
export function normalize(state: ServiceState, node: ProxyNode, opts: NormalizeOptions = {}): ProxyModel {
  const problems: ServiceProblem[] = [];
  const parsed: ParsedService[] = [];
  const keys = new Set<string>();
  for (const raw of state.services ?? []) {
    const key = serviceKey(raw);
    if (keys.has(key)) {
      problems.push({ service: key, field: 'metadata.name', message: 'a service with this namespace and name is given twice' });
      continue;
    }
    keys.add(key);
    const r = parseCached(raw, node);
    if ('err' in r) problems.push(r.err);
    else if (r.ok) parsed.push(r.ok);
  }

  // Frontends (an address or node port with a protocol and port) belong to one service: the one
  // that held it before, else the oldest, else the first by name. The others are rejected whole.
  // Only services that share a frontend are ordered; the common case (no clash) stays linear.
  const prior = opts.priorOwners ?? new Map<string, string>();
  const claims = new Map<string, ParsedService | ParsedService[]>();
  let clashing = false;
  for (const svc of parsed) {
    for (const f of frontends(svc)) {
      const c = claims.get(f.key);
      if (c === undefined) claims.set(f.key, svc);
      else if (c !== svc) {
        clashing = true;
        if (Array.isArray(c)) c.push(svc);
        else claims.set(f.key, [c, svc]);
      }
    }
  }
  let accepted = parsed;
  if (clashing) {
    const involved = new Set<ParsedService>();
    for (const c of claims.values()) if (Array.isArray(c)) for (const x of c) involved.add(x);
    const rejected = resolveClashes([...involved], (fkey) => prior.get(fkey));
    for (const pr of rejected.values()) problems.push(pr);
    accepted = parsed.filter((x) => !rejected.has(x));
  }

  const slicesBySvc = new Map<string, RawEndpointSlice[]>();
  for (const raw of state.endpointSlices ?? []) {
    const hit = parseSliceCached(raw);
    for (const pr of hit.problems) problems.push(pr);
    if (!hit.out) continue;
    const l = slicesBySvc.get(hit.out.service);
    if (l) l.push(raw);
    else slicesBySvc.set(hit.out.service, [raw]);
  }

  const ports: ServicePort[] = [];
  for (const s of accepted) for (const p of portsFor(s, slicesBySvc.get(s.key) ?? [], node)) ports.push(p);
  return { ports, problems };
}

export function parseSliceCached(raw: RawEndpointSlice): { out: ReturnType<typeof parseSlice>; problems: ServiceProblem[] } {
  let hit = typeof raw === 'object' && raw !== null ? sliceCache.get(raw) : undefined;
  if (!hit) {
    const ps: ServiceProblem[] = [];
    hit = { out: parseSlice(raw, ps), problems: ps };
    if (typeof raw === 'object' && raw !== null) sliceCache.set(raw, hit);
  }
  return hit;
}

/** The ServicePorts of an accepted service given its slices; the same objects while nothing changed. */
export function portsFor(s: ParsedService, sliceRaws: RawEndpointSlice[], node: ProxyNode): ServicePort[] {
  const memo = portsCache.get(s);
  if (memo && memo.node === node && sameList(memo.slices, sliceRaws)) return memo.ports;
  const data: SliceEndpoints[] = [];
  for (const raw of sliceRaws) {
    const out = parseSliceCached(raw).out;
    if (out) data.push(out.data);
  }
  const ports = buildPorts(s, data, node);
  portsCache.set(s, { node, slices: sliceRaws, ports });
  return ports;
}

/**
 * Services that share a frontend: the one that held it before wins, else the oldest, else the
 * first by name; the others are rejected whole. Returns the rejected ones with their problem.
 */
export function resolveClashes(involved: ParsedService[], priorOwner: (frontendKey: string) => string | undefined): Map<ParsedService, ServiceProblem> {
  const rejected = new Map<ParsedService, ServiceProblem>();
  const claimants = new Map<string, Set<string>>();
  for (const s of involved) for (const f of frontends(s)) (claimants.get(f.key) ?? claimants.set(f.key, new Set()).get(f.key)!).add(s.key);
  // a frontend stays with the service that held it, as long as that service still claims it
  for (const s of involved) {
    const lost = frontends(s).find((f) => {
      const holder = priorOwner(f.key);
      return holder !== undefined && holder !== s.key && claimants.get(f.key)!.has(holder);
    });
    if (lost) rejected.set(s, { service: s.key, field: lost.field, message: `${lost.what} is already taken by service ${priorOwner(lost.key)}` });
  }
  const order = involved
    .filter((s) => !rejected.has(s))
    .sort((a, b) => {
      if (a.created !== b.created) return a.created === '' ? 1 : b.created === '' ? -1 : a.created < b.created ? -1 : 1;
      return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
    });
  const owners = new Map<string, string>();
  for (const s of order) {
    const fr = frontends(s);
    const clash = fr.find((f) => owners.has(f.key));
    if (clash) {
      rejected.set(s, { service: s.key, field: clash.field, message: `${clash.what} is already taken by service ${owners.get(clash.key)}` });
      continue;
    }
    for (const f of fr) owners.set(f.key, s.key);
  }
  return rejected;
}

function buildPorts(s: ParsedService, slices: SliceEndpoints[], node: ProxyNode): ServicePort[] {
  const ports: ServicePort[] = [];
  {
    for (const cip of s.clusterIPs) {
      for (const p of s.ports) {
        const portName = p.name || String(p.port);
        ports.push({
          id: `${s.key}:${portName}${s.clusterIPs.length > 1 ? `/v${cip.family}` : ''}`,
          service: s.key,
          portName,
          family: cip.family,
          protocol: p.protocol,
          port: p.port,
          clusterIPs: [cip.ip],
          externalIPs: s.externalIPs.filter((e) => e.family === cip.family).map((e) => e.ip),
          nodePort: p.nodePort,
          affinitySeconds: s.affinitySeconds,
          internalLocal: s.internalLocal,
          externalLocal: s.externalLocal,
          endpoints: endpointsFor(slices, cip.family, p, node),
        });
      }
    }
  }
  return ports;
}

export interface Frontend {
  key: string;
  field: string;
  what: string;
}

export function frontends(s: ParsedService): Frontend[] {
  if (s.frontends) return s.frontends;
  const out: Frontend[] = [];
  for (const p of s.ports) {
    for (const [i, c] of s.clusterIPs.entries()) out.push({ key: `${c.ip}/${p.protocol}/${p.port}`, field: s.clusterIPs.length > 1 ? `spec.clusterIPs[${i}]` : 'spec.clusterIP', what: `${c.ip} port ${p.port}/${p.protocol.toUpperCase()}` });
    for (const [i, c] of s.externalIPs.entries()) out.push({ key: `${c.ip}/${p.protocol}/${p.port}`, field: `spec.externalIPs[${i}]`, what: `${c.ip} port ${p.port}/${p.protocol.toUpperCase()}` });
    if (p.nodePort !== undefined) out.push({ key: `nodeport/${p.protocol}/${p.nodePort}`, field: `${p.field}.nodePort`, what: `NodePort ${p.nodePort}/${p.protocol.toUpperCase()}` });
  }
  s.frontends = out;
  return out;
}


/** The frontend owners of an accepted model, to pass as priorOwners next time. */
export function frontendOwners(model: ProxyModel): Map<string, string> {
  const m = new Map<string, string>();
  for (const p of model.ports) {
    for (const ip of [...p.clusterIPs, ...p.externalIPs]) m.set(`${ip}/${p.protocol}/${p.port}`, p.service);
    if (p.nodePort !== undefined) m.set(`nodeport/${p.protocol}/${p.nodePort}`, p.service);
  }
  return m;
}
