// `podnet lab service add|del|ls` and `lab endpoints set`: the lab as the cluster's API server
// and endpoint controller for podnet's proxy. Each writes Kubernetes-shaped objects (see
// services.ts) to the lab's cluster store, one object per key, after the proxy's own validation
// accepted them, under the lab's lock (two `service add` never get the same cluster IP or
// NodePort). The lab state keeps a copy of what it wrote; the store is what `service ls` shows.
import { SERVICES_PREFIX, SLICES_PREFIX } from '../proxy/document.js';
import type { RawEndpointSlice, RawService } from '../proxy/model.js';
import { openLabStore, type LabKv, type LabStore } from './labstore.js';
import {
  allocateClusterIP,
  allocateNodePort,
  buildService,
  buildSlice,
  checkClusterIP,
  parseIntOption,
  parsePodList,
  problemLine,
  serviceViews,
  servicePorts,
  storeKeys,
  usedClusterIPs,
  usedNodePorts,
  validateService,
  SERVICE_NAMESPACE,
  type EndpointPod,
  type ServicePortSpec,
  type ServiceSpec,
  type ServiceView,
  type TrafficPolicy,
} from './services.js';
import { DEFAULT_SERVICE_CIDR, requireState, saveState, withLabLock, type LabService, type LabState } from './state.js';

export interface ServiceAddOptions {
  name: string;
  /** --port, repeatable: 80, 80/tcp, 53/udp */
  ports: string[];
  /** --target: once, or once per port */
  targets?: string[];
  /** --node-port: once per port, in order */
  nodePorts?: string[];
  type?: 'ClusterIP' | 'NodePort';
  /** --pods a,b,c ('' or absent: no endpoints) */
  pods?: string;
  clusterIP?: string;
  affinity?: 'None' | 'ClientIP';
  affinityTimeout?: string;
  externalTrafficPolicy?: TrafficPolicy;
  internalTrafficPolicy?: TrafficPolicy;
}

/** The pod names of a slice's endpoints (targetRef). */
export function slicePods(slice: Record<string, unknown> | RawEndpointSlice): string[] {
  const eps = Array.isArray(slice.endpoints) ? (slice.endpoints as { targetRef?: { name?: unknown } }[]) : [];
  return eps.map((e) => e?.targetRef?.name).filter((n): n is string => typeof n === 'string');
}

/** The lab's pods as endpoints: each must exist and have its IPv4 address. */
function endpointPods(s: LabState, names: string[]): EndpointPod[] {
  return names.map((p) => {
    const pod = s.pods[p];
    if (!pod) throw new Error(`--pods: lab ${s.name} has no pod ${p} (pods: ${Object.keys(s.pods).join(', ') || 'none'})`);
    const ip = pod.ips.find((a) => !a.includes(':'));
    if (!pod.ready || !ip) throw new Error(`--pods: pod ${p} has no IPv4 address (yet)`);
    return { name: p, ip, node: pod.node };
  });
}

function parseJson<T>(kv: LabKv): T | undefined {
  try {
    return JSON.parse(kv.value) as T;
  } catch {
    return undefined;
  }
}

async function storedObjects(store: LabStore): Promise<{ services: RawService[]; slices: RawEndpointSlice[]; serviceKeys: Set<string> }> {
  const [svcKvs, sliceKvs] = await Promise.all([store.list(SERVICES_PREFIX), store.list(SLICES_PREFIX)]);
  const services = svcKvs.map((kv) => parseJson<RawService>(kv)).filter((x): x is RawService => !!x && typeof x === 'object');
  const slices = sliceKvs.map((kv) => parseJson<RawEndpointSlice>(kv)).filter((x): x is RawEndpointSlice => !!x && typeof x === 'object');
  return { services, slices, serviceKeys: new Set(svcKvs.map((kv) => kv.key)) };
}

/** Runs fn on the state under the lab's lock with the store open; saves the state when fn returns. */
async function withServices<T>(lab: string, fn: (s: LabState, store: LabStore) => Promise<T>): Promise<T> {
  return withLabLock(lab, async () => {
    const s = requireState(lab);
    s.services ??= {};
    const store = openLabStore(s);
    try {
      return await fn(s, store);
    } finally {
      await store.close();
    }
  });
}

function clusterCidrs(s: LabState): string[] {
  return [s.network];
}

export async function serviceAdd(lab: string, o: ServiceAddOptions): Promise<ServiceView> {
  const type = o.type ?? 'ClusterIP';
  if (type !== 'ClusterIP' && type !== 'NodePort') throw new Error(`--type must be ClusterIP or NodePort, not ${JSON.stringify(type)}`);
  const ports = servicePorts(o.ports, o.targets ?? [], o.nodePorts ?? []);
  if (type !== 'NodePort' && o.externalTrafficPolicy === 'Local') throw new Error('--external-traffic-policy Local needs --type NodePort (a ClusterIP service has no external frontend)');
  const affinity = o.affinity ?? 'None';
  if (affinity !== 'None' && affinity !== 'ClientIP') throw new Error(`--affinity must be None or ClientIP, not ${JSON.stringify(affinity)}`);
  if (o.affinityTimeout !== undefined && affinity !== 'ClientIP') throw new Error('--affinity-timeout needs --affinity ClientIP');
  const timeout = o.affinityTimeout !== undefined ? parseIntOption(o.affinityTimeout, '--affinity-timeout') : undefined;
  const podNames = parsePodList(o.pods ?? '');

  return withServices(lab, async (s, store) => {
    const { serviceKey, sliceKey } = storeKeys(o.name);
    if (s.services[o.name]) throw new Error(`lab ${lab} has a service ${o.name} already (${(s.services[o.name].service.spec as { clusterIP?: string })?.clusterIP}): \`podnet lab service del ${o.name}\` first`);
    const eps = endpointPods(s, podNames);
    const stored = await storedObjects(store);
    if (stored.serviceKeys.has(serviceKey)) throw new Error(`the store has a service ${SERVICE_NAMESPACE}/${o.name} already (${serviceKey}), not written by this lab`);
    const cidr = s.serviceCidr ?? DEFAULT_SERVICE_CIDR;
    const usedIPs = [...usedClusterIPs(stored.services), ...usedClusterIPs(Object.values(s.services).map((x) => x.service as RawService))];
    const clusterIP = o.clusterIP ? checkClusterIP(cidr, o.clusterIP, usedIPs) : allocateClusterIP(cidr, usedIPs);
    let withNodePorts: ServicePortSpec[] = ports;
    if (type === 'NodePort') {
      const used = new Set([...usedNodePorts(stored.services), ...usedNodePorts(Object.values(s.services).map((x) => x.service as RawService)), ...ports.map((p) => p.nodePort).filter((n): n is number => n !== undefined)]);
      withNodePorts = ports.map((p) => {
        if (p.nodePort !== undefined) return p;
        const n = allocateNodePort(used);
        used.add(n);
        return { ...p, nodePort: n };
      });
    }
    const spec: ServiceSpec = {
      name: o.name,
      type,
      clusterIP,
      ports: withNodePorts,
      ...(affinity === 'ClientIP' ? { affinity: { timeoutSeconds: timeout } } : {}),
      ...(o.externalTrafficPolicy ? { externalTrafficPolicy: o.externalTrafficPolicy } : {}),
      ...(o.internalTrafficPolicy ? { internalTrafficPolicy: o.internalTrafficPolicy } : {}),
      createdAt: new Date().toISOString(),
    };
    const service = buildService(spec);
    const slice = buildSlice(spec, eps);
    // the proxy's own validation, before anything is written: one line naming service and field
    const problems = validateService(service, slice, stored.services, clusterCidrs(s));
    if (problems.length > 0) throw new Error(problems.map(problemLine).join('; '));

    const rec: LabService = { name: o.name, namespace: SERVICE_NAMESPACE, serviceKey, sliceKey, service, slice };
    // intent first, so `service del` finds what a crash half-way left
    s.services[o.name] = rec;
    saveState(s);
    try {
      // the slice before the service: the proxy never sees the service without its endpoints
      await store.put(sliceKey, JSON.stringify(slice));
      await store.put(serviceKey, JSON.stringify(service));
    } catch (e) {
      await store.del(serviceKey).catch(() => false);
      await store.del(sliceKey).catch(() => false);
      delete s.services[o.name];
      saveState(s);
      throw e;
    }
    return viewsOf(s, [service], [slice])[0];
  });
}

export async function serviceDel(lab: string, name: string): Promise<{ name: string; deleted: string[] }> {
  return withServices(lab, async (s, store) => {
    const rec = s.services[name];
    const { serviceKey, sliceKey } = rec ?? storeKeys(name);
    // the service first: the proxy stops answering before its endpoints vanish
    const deleted: string[] = [];
    if (await store.del(serviceKey)) deleted.push(serviceKey);
    if (await store.del(sliceKey)) deleted.push(sliceKey);
    if (!rec && deleted.length === 0) throw new Error(`lab ${lab} has no service ${name}`);
    delete s.services[name];
    saveState(s);
    return { name, deleted };
  });
}

/** Rewrites the service's EndpointSlice with these pods (none: scaled to zero). */
export async function endpointsSet(lab: string, name: string, pods: string): Promise<ServiceView> {
  const podNames = parsePodList(pods);
  return withServices(lab, async (s, store) => {
    const { serviceKey, sliceKey } = s.services[name] ?? storeKeys(name);
    const stored = await storedObjects(store);
    // the service as stored is the truth (it may not be one the lab wrote)
    const service = stored.services.find((x) => x.metadata?.namespace === SERVICE_NAMESPACE && x.metadata?.name === name) ?? (s.services[name]?.service as RawService | undefined);
    if (!service) throw new Error(`lab ${lab} has no service ${name} (${serviceKey} is not in the store)`);
    const ports: ServicePortSpec[] = (Array.isArray(service.spec?.ports) ? (service.spec.ports as Record<string, unknown>[]) : []).map((p) => ({
      name: typeof p.name === 'string' ? p.name : '',
      protocol: p.protocol === 'UDP' ? 'UDP' : 'TCP',
      port: Number(p.port),
      targetPort: typeof p.targetPort === 'number' ? p.targetPort : Number(p.targetPort ?? p.port),
    }));
    const slice = buildSlice({ name, ports }, endpointPods(s, podNames));
    const problems = validateService(service, slice, stored.services, clusterCidrs(s));
    if (problems.length > 0) throw new Error(problems.map(problemLine).join('; '));
    await store.put(sliceKey, JSON.stringify(slice));
    if (s.services[name]) {
      s.services[name].slice = slice;
      saveState(s);
    }
    return viewsOf(s, [service], [slice])[0];
  });
}

/**
 * Removes deleted pods from the endpoints of every service the lab wrote (the lab plays
 * Kubernetes' endpoint controller). Never throws: a store that cannot be written (etcd stopped)
 * leaves warnings, and the pods' addresses in the slices until the next `endpoints set`.
 */
export async function dropPodsFromServices(lab: string, pods: string[]): Promise<string[]> {
  const warnings: string[] = [];
  try {
    await withServices(lab, async (s, store) => {
      for (const rec of Object.values(s.services)) {
        const had = slicePods(rec.slice);
        if (!had.some((p) => pods.includes(p))) continue;
        const eps = Array.isArray(rec.slice.endpoints) ? (rec.slice.endpoints as { targetRef?: { name?: unknown } }[]) : [];
        const slice = { ...rec.slice, endpoints: eps.filter((e) => !pods.includes(e?.targetRef?.name as string)) };
        try {
          await store.put(rec.sliceKey, JSON.stringify(slice));
          rec.slice = slice;
          saveState(s);
        } catch (e) {
          warnings.push(`service ${rec.name} still lists ${had.filter((p) => pods.includes(p)).join(', ')}: ${(e as Error).message}`);
        }
      }
    });
  } catch (e) {
    warnings.push(`endpoints not updated: ${(e as Error).message}`);
  }
  return warnings;
}

function viewsOf(s: LabState, services: RawService[], slices: RawEndpointSlice[]): ServiceView[] {
  const podByIp = new Map<string, string>();
  for (const p of Object.values(s.pods)) for (const ip of p.ips) podByIp.set(ip, p.name);
  return serviceViews(services, slices, podByIp, clusterCidrs(s));
}

/** The services as the proxy sees them: read from the store. */
export async function serviceList(s: LabState): Promise<ServiceView[]> {
  const store = openLabStore(s);
  try {
    const stored = await storedObjects(store);
    return viewsOf(s, stored.services, stored.slices);
  } finally {
    await store.close();
  }
}

/** The services as the lab last wrote them (its state), when the store cannot be read. */
export function serviceListFromState(s: LabState): ServiceView[] {
  const recs = Object.values(s.services ?? {});
  return viewsOf(
    s,
    recs.map((r) => r.service as RawService),
    recs.map((r) => r.slice as RawEndpointSlice),
  );
}
