// The desired state kept incrementally: a change to one service (or its slices) re-validates and
// re-builds that service alone, and reports exactly which ServicePorts went and came. normalize()
// does the same from scratch; both must agree (test/unit/proxy-service-index.test.ts).
//
// At 10,000 services a full re-normalization is a few thousand Map operations and string keys:
// tens of milliseconds on a loaded two-core node, more than the whole 20 ms budget of a change.
import type { ProxyModel, ProxyNode, RawEndpointSlice, RawService, ServicePort, ServiceProblem, ServiceState } from './model.js';
import { SERVICE_NAME_LABEL } from './model.js';
import { type ParsedService, frontendOwners, frontends, parseCached, parseSliceCached, portsFor, resolveClashes, serviceKey } from './normalize.js';

export interface IndexBuild {
  model: ProxyModel;
  /** ports of changed services as they were / are now (unchanged services are in neither) */
  before: ServicePort[];
  after: ServicePort[];
}

function sliceKeyOf(s: RawEndpointSlice): string {
  const ns = typeof s.metadata?.namespace === 'string' && s.metadata.namespace ? s.metadata.namespace : 'default';
  return `${ns}/${typeof s.metadata?.name === 'string' ? s.metadata.name : '(unnamed)'}`;
}

function sliceService(s: RawEndpointSlice): string | undefined {
  const ns = typeof s.metadata?.namespace === 'string' && s.metadata.namespace ? s.metadata.namespace : 'default';
  const svc = s.metadata?.labels?.[SERVICE_NAME_LABEL];
  return typeof svc === 'string' && svc ? `${ns}/${svc}` : undefined;
}

export class ServiceIndex {
  private readonly services = new Map<string, RawService>();
  private readonly parsed = new Map<string, ParsedService>();
  private readonly parseProblems = new Map<string, ServiceProblem>();
  private readonly slices = new Map<string, RawEndpointSlice>();
  private readonly sliceProblems = new Map<string, ServiceProblem[]>();
  private readonly sliceOwner = new Map<string, string>();
  private readonly slicesBySvc = new Map<string, Set<string>>();
  /** frontend key -> services claiming it */
  private readonly claims = new Map<string, Set<string>>();
  private readonly contested = new Set<string>();
  /** services rejected for a clash, with the problem */
  private clashRejected = new Map<string, ServiceProblem>();
  /** accepted services' ports, in insertion order */
  private readonly ports = new Map<string, ServicePort[]>();
  /** frontend key -> the accepted service that holds it (priority in later clashes) */
  private readonly owners = new Map<string, string>();
  private readonly dirty = new Set<string>();
  private readonly duplicates = new Map<string, ServiceProblem>();
  private node?: ProxyNode;
  private flat?: ServicePort[];

  get size(): number {
    return this.services.size;
  }

  replaceAll(state: ServiceState): void {
    for (const k of [...this.services.keys()]) this.deleteServiceKey(k);
    for (const k of [...this.slices.keys()]) this.deleteSliceKey(k);
    this.duplicates.clear();
    for (const s of state.services ?? []) {
      // as normalize(): the first copy counts, a second one is a problem
      const k = serviceKey(s);
      if (this.services.has(k)) this.duplicates.set(k, { service: k, field: 'metadata.name', message: 'a service with this namespace and name is given twice' });
      else this.putService(s);
    }
    for (const s of state.endpointSlices ?? []) this.putSlice(s);
  }

  putService(raw: RawService): void {
    const k = serviceKey(raw);
    if (this.services.get(k) === raw) return;
    this.services.set(k, raw);
    this.dirty.add(k);
  }

  deleteService(namespace: string, name: string): boolean {
    return this.deleteServiceKey(`${namespace}/${name}`);
  }

  private deleteServiceKey(k: string): boolean {
    if (!this.services.delete(k)) return false;
    this.dirty.add(k);
    return true;
  }

  putSlice(raw: RawEndpointSlice): void {
    const k = sliceKeyOf(raw);
    if (this.slices.get(k) === raw) return;
    this.detachSlice(k);
    this.slices.set(k, raw);
    const pr = parseSliceCached(raw).problems;
    if (pr.length > 0) this.sliceProblems.set(k, pr);
    else this.sliceProblems.delete(k);
    const svc = sliceService(raw);
    if (svc) {
      this.sliceOwner.set(k, svc);
      let set = this.slicesBySvc.get(svc);
      if (!set) this.slicesBySvc.set(svc, (set = new Set()));
      set.add(k);
      this.dirty.add(svc);
    }
  }

  deleteSlice(namespace: string, name: string): boolean {
    return this.deleteSliceKey(`${namespace}/${name}`);
  }

  private deleteSliceKey(k: string): boolean {
    if (!this.slices.has(k)) return false;
    this.detachSlice(k);
    this.slices.delete(k);
    this.sliceProblems.delete(k);
    return true;
  }

  private detachSlice(k: string): void {
    const svc = this.sliceOwner.get(k);
    if (svc === undefined) return;
    this.sliceOwner.delete(k);
    const set = this.slicesBySvc.get(svc);
    set?.delete(k);
    if (set && set.size === 0) this.slicesBySvc.delete(svc);
    this.dirty.add(svc);
  }

  private unclaim(k: string): void {
    const old = this.parsed.get(k);
    if (!old) return;
    for (const f of frontends(old)) {
      const c = this.claims.get(f.key);
      if (!c) continue;
      c.delete(k);
      if (c.size === 0) this.claims.delete(f.key);
      if (c.size <= 1) this.contested.delete(f.key);
    }
    this.parsed.delete(k);
  }

  private claim(k: string, p: ParsedService): void {
    this.parsed.set(k, p);
    for (const f of frontends(p)) {
      let c = this.claims.get(f.key);
      if (!c) this.claims.set(f.key, (c = new Set()));
      c.add(k);
      if (c.size > 1) this.contested.add(f.key);
    }
  }

  /** Applies pending changes; returns the model and which ports changed since the last build. */
  build(node: ProxyNode): IndexBuild {
    if (this.node !== node && (this.node === undefined || JSON.stringify(this.node) !== JSON.stringify(node))) {
      for (const k of this.services.keys()) this.dirty.add(k);
      for (const k of this.ports.keys()) this.dirty.add(k);
    }
    this.node = node;
    // 1. re-parse what changed, and move its frontend claims
    for (const k of this.dirty) {
      const raw = this.services.get(k);
      const old = this.parsed.get(k);
      const out = raw ? parseCached(raw, node) : undefined;
      const now = out && 'ok' in out ? out.ok : undefined;
      if (old !== now) {
        this.unclaim(k);
        if (now) this.claim(k, now);
      }
      if (out && 'err' in out) this.parseProblems.set(k, out.err);
      else this.parseProblems.delete(k);
    }
    // 2. clashes: only services sharing a frontend are ordered; acceptance changes make them dirty
    const rejectedNow = new Map<string, ServiceProblem>();
    if (this.contested.size > 0) {
      const involved = new Set<string>();
      for (const f of this.contested) for (const k of this.claims.get(f) ?? []) involved.add(k);
      const list = [...involved].map((k) => this.parsed.get(k)!).filter(Boolean);
      for (const [p, problem] of resolveClashes(list, (fkey) => this.owners.get(fkey))) rejectedNow.set(p.key, problem);
    }
    for (const k of this.clashRejected.keys()) if (!rejectedNow.has(k)) this.dirty.add(k);
    for (const k of rejectedNow.keys()) if (!this.clashRejected.has(k)) this.dirty.add(k);
    this.clashRejected = rejectedNow;
    // 3. rebuild the ports of dirty services
    const before: ServicePort[] = [];
    const after: ServicePort[] = [];
    for (const k of this.dirty) {
      const old = this.ports.get(k);
      const p = this.parsed.get(k);
      let now: ServicePort[] | undefined;
      if (p && !rejectedNow.has(k)) {
        const raws = [...(this.slicesBySvc.get(k) ?? [])].map((sk) => this.slices.get(sk)!);
        now = keepSlots(old, portsFor(p, raws, node));
      }
      if (old === now) continue;
      if (old) {
        for (const x of old) before.push(x);
        for (const f of frontendOwners({ ports: old, problems: [] }).keys()) if (this.owners.get(f) === k) this.owners.delete(f);
      }
      if (now && p) {
        for (const x of now) after.push(x);
        for (const f of frontends(p)) this.owners.set(f.key, k);
        this.ports.set(k, now);
      } else this.ports.delete(k);
      this.flat = undefined;
    }
    this.dirty.clear();
    if (!this.flat) {
      this.flat = [];
      for (const ps of this.ports.values()) for (const x of ps) this.flat.push(x);
    }
    return { model: { ports: this.flat, problems: this.problems() }, before, after };
  }

  private problems(): ServiceProblem[] {
    const out: ServiceProblem[] = [...this.parseProblems.values(), ...this.duplicates.values(), ...this.clashRejected.values()];
    for (const ps of this.sliceProblems.values()) for (const p of ps) out.push(p);
    return out;
  }
}

/**
 * Endpoints keep the position they had: an engine maps positions to slots (ClientIP affinity pins
 * a client to a slot), so an endpoint added or removed must not move the others. Survivors stay
 * where they were, newcomers fill the holes in sorted order. Ports without a predecessor are
 * returned as they are (sorted).
 */
export function keepSlots(old: ServicePort[] | undefined, now: ServicePort[]): ServicePort[] {
  if (!old) return now;
  let changed = false;
  const out = now.map((p) => {
    const prev = old.find((o) => o.id === p.id);
    if (!prev || prev === p) return p;
    const key = (e: { ip: string; port: number }) => `${e.ip}/${e.port}`;
    const want = new Map(p.endpoints.map((e) => [key(e), e]));
    const n = p.endpoints.length;
    const slots: (typeof p.endpoints)[number][] = new Array(n);
    const placed = new Set<string>();
    prev.endpoints.forEach((e, i) => {
      const k = key(e);
      const cur = want.get(k);
      if (i < n && cur) {
        slots[i] = cur;
        placed.add(k);
      }
    });
    // a survivor whose old position is beyond the new count moves into a hole
    const rest = p.endpoints.filter((e) => !placed.has(key(e)));
    for (let i = 0, j = 0; i < n; i++) if (!slots[i]) slots[i] = rest[j++];
    if (slots.every((e, i) => e === p.endpoints[i])) return p;
    changed = true;
    return { ...p, endpoints: slots };
  });
  return changed ? out : now;
}
