/**
 * The parts of a Pod the webhook reads and changes, parsed from the AdmissionReview's object. The
 * object itself is kept as sent: the mutating answer is a JSON Patch against it, so fields Plexus
 * does not know (and the API server's defaults) pass through untouched.
 */
import { isObject } from '../util/object.js';

export type Quantities = Record<string, string>;

export interface ContainerView {
  name: string;
  requests: Quantities;
  limits: Quantities;
}

export interface PodView {
  /** Empty for a pod created with generateName only. */
  name: string;
  namespace: string;
  annotations: Record<string, string>;
  labels: Record<string, string>;
  containers: ContainerView[];
  nodeSelector: Record<string, string>;
  /** The object as it came, for the patch. */
  raw: Record<string, unknown>;
}

export class PodShapeError extends Error {}

function stringMap(v: unknown, where: string): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (!isObject(v)) throw new PodShapeError(`${where} must be a map of strings`);
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries(v)) {
    if (typeof x !== 'string') throw new PodShapeError(`${where}.${k} must be a string`);
    out[k] = x;
  }
  return out;
}

/** Quantities may come as numbers from a hand-written object; the API server always sends strings. */
function quantities(v: unknown, where: string): Quantities {
  if (v === undefined || v === null) return {};
  if (!isObject(v)) throw new PodShapeError(`${where} must be a map of quantities`);
  const out: Quantities = {};
  for (const [k, x] of Object.entries(v)) {
    if (typeof x !== 'string' && typeof x !== 'number') throw new PodShapeError(`${where}.${k} must be a quantity`);
    out[k] = String(x);
  }
  return out;
}

export function parsePodView(raw: unknown, namespace: string | undefined): PodView {
  if (!isObject(raw)) throw new PodShapeError('the pod is not an object');
  const meta = isObject(raw.metadata) ? raw.metadata : {};
  const spec = isObject(raw.spec) ? raw.spec : {};
  const containers = Array.isArray(spec.containers) ? spec.containers : [];
  return {
    name: typeof meta.name === 'string' ? meta.name : '',
    namespace: (typeof meta.namespace === 'string' && meta.namespace) || namespace || 'default',
    annotations: stringMap(meta.annotations, 'metadata.annotations'),
    labels: stringMap(meta.labels, 'metadata.labels'),
    nodeSelector: stringMap(spec.nodeSelector, 'spec.nodeSelector'),
    containers: containers.map((c: unknown, i) => {
      if (!isObject(c) || typeof c.name !== 'string') throw new PodShapeError(`spec.containers[${i}] has no name`);
      const res = isObject(c.resources) ? c.resources : {};
      return { name: c.name, requests: quantities(res.requests, `spec.containers[${i}].resources.requests`), limits: quantities(res.limits, `spec.containers[${i}].resources.limits`) };
    }),
    raw,
  };
}

/** How many of an extended resource (whole devices) a container asks for: its limit, else its request. */
export function deviceCount(c: ContainerView, resource: string): number {
  const v = c.limits[resource] ?? c.requests[resource];
  const n = v === undefined ? 0 : Number(v);
  return Number.isInteger(n) && n > 0 ? n : 0;
}
