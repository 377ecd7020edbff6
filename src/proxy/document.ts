// Where services live: a JSON/YAML-free document on disk (`--services FILE`) and keys in the
// cluster store. Both carry Kubernetes-shaped objects, so `kubectl get svc,endpointslices -o json`
// output can be fed to `podnet proxy render` as is.
import type { RawEndpointSlice, RawService, ServiceState } from './model.js';

/** Store keys: one object per key, so a change to one service is one small watch event. */
export const SERVICES_PREFIX = '/podnet/services/';
export const SLICES_PREFIX = '/podnet/endpointslices/';

export function serviceStoreKey(namespace: string, name: string): string {
  return `${SERVICES_PREFIX}${namespace}/${name}`;
}
export function sliceStoreKey(namespace: string, name: string): string {
  return `${SLICES_PREFIX}${namespace}/${name}`;
}

export class DocumentError extends Error {}

/**
 * Accepts `{services: [...], endpointSlices: [...]}`, or a Kubernetes List (`{items: [...]}`)
 * whose items carry `kind: Service | EndpointSlice` (other kinds are ignored).
 */
export function parseServicesDocument(raw: unknown): ServiceState {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new DocumentError('services document: expected a JSON object');
  const o = raw as Record<string, unknown>;
  const services: RawService[] = [];
  const endpointSlices: RawEndpointSlice[] = [];
  if (o.services !== undefined || o.endpointSlices !== undefined) {
    if (o.services !== undefined && !Array.isArray(o.services)) throw new DocumentError('services document: "services" must be a list');
    if (o.endpointSlices !== undefined && !Array.isArray(o.endpointSlices)) throw new DocumentError('services document: "endpointSlices" must be a list');
    services.push(...((o.services as RawService[] | undefined) ?? []));
    endpointSlices.push(...((o.endpointSlices as RawEndpointSlice[] | undefined) ?? []));
  }
  if (o.items !== undefined) {
    if (!Array.isArray(o.items)) throw new DocumentError('services document: "items" must be a list');
    for (const it of o.items as Record<string, unknown>[]) {
      if (it?.kind === 'Service') services.push(it as RawService);
      else if (it?.kind === 'EndpointSlice') endpointSlices.push(it as RawEndpointSlice);
    }
  }
  if (o.services === undefined && o.endpointSlices === undefined && o.items === undefined) {
    throw new DocumentError('services document: expected "services" and "endpointSlices" lists, or a Kubernetes List with "items"');
  }
  return { services, endpointSlices };
}
