/**
 * The mutating side, a drop-in for network-resources-injector (same NAD annotations, same ConfigMap
 * format, same /etc/podnetinfo files) without its defects: every matching user-defined injection
 * applies, not one (NRI #94); injected networks are added to the pod's own, not put in their place
 * (#88); a NAD's nodeSelector applies whether or not it has a resourceName (#78); hugepages files are
 * per container, named and scoped by container (#45); requests the user set are kept.
 * The result is a JSON Patch of whole fields, so running it twice (reinvocation) changes nothing more.
 */
import { NETWORKS_ANNOTATION, parseNetworksAnnotation } from '../meta/selection.js';
import { isObject } from '../util/object.js';
import { type PodView, deviceCount } from './pod.js';
import { NODE_SELECTOR_ANNOTATION, type SelectedNetwork, devicesNeeded, parseNodeSelector } from './validate.js';

/** Names the containers that get the devices (comma list); by default the first container, as NRI does. */
export const RESOURCE_CONTAINERS_ANNOTATION = 'plexus.network/resource-containers';
export const PODNETINFO_VOLUME = 'podnetinfo';
export const PODNETINFO_PATH = '/etc/podnetinfo';

export interface InjectOptions {
  /** label key → annotations to add to pods carrying that label with value "true" (NRI's user-defined injections). */
  userInjections: Map<string, Record<string, string>>;
  /** The podnetinfo downward-API volume (labels, annotations) for pods that get devices. */
  podNetInfo: boolean;
  /** Hugepages requests and limits in podnetinfo, per container. */
  hugepages: boolean;
}

export interface JsonPatchOp {
  op: 'add';
  path: string;
  value: unknown;
}

const escapePointer = (s: string): string => s.replace(/~/g, '~0').replace(/\//g, '~1');

/** Annotation values an injection adds: the networks annotation is merged into the pod's, others set if absent. */
export function applyUserInjections(pod: PodView, injections: Map<string, Record<string, string>>): Record<string, string> {
  const out = { ...pod.annotations };
  for (const [label, annotations] of [...injections].sort(([a], [b]) => a.localeCompare(b))) {
    if (pod.labels[label] !== 'true') continue;
    for (const [key, value] of Object.entries(annotations)) {
      if (key === NETWORKS_ANNOTATION && out[key]) out[key] = mergeNetworks(out[key], value, pod.namespace);
      else if (out[key] === undefined) out[key] = value;
    }
  }
  return out;
}

/** Two networks annotations as one, in JSON form when either is; a network already selected is not added again. */
export function mergeNetworks(existing: string, added: string, namespace: string): string {
  let a: unknown[];
  let b: unknown[];
  try {
    const asJson = (text: string): unknown[] => {
      const t = text.trim();
      if (/^[[{]/.test(t)) {
        const v = JSON.parse(t) as unknown;
        return Array.isArray(v) ? v : [v];
      }
      return parseNetworksAnnotation(t, namespace).map((s) => ({ name: s.name, namespace: s.namespace, ...(s.interface ? { interface: s.interface } : {}) }));
    };
    a = asJson(existing);
    b = asJson(added);
  } catch {
    return existing; // the validating side denies the pod's own annotation, saying why
  }
  const key = (el: unknown) => (isObject(el) ? `${String(el.namespace ?? namespace)}/${String(el.name)}@${String(el.interface ?? '')}` : JSON.stringify(el));
  const have = new Set(a.map(key));
  const merged = [...a, ...b.filter((el) => !have.has(key(el)))];
  if (merged.length === a.length) return existing;
  return JSON.stringify(merged);
}

interface MutableContainer {
  name: string;
  resources?: { requests?: Record<string, unknown>; limits?: Record<string, unknown> };
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
  env?: { name: string; value?: string }[];
}

/** The patch for a pod whose networks are `networks` (a conflicting nodeSelector is left for the validating side to deny). */
export function mutatePod(pod: PodView, annotations: Record<string, string>, networks: SelectedNetwork[], opts: InjectOptions): { patch: JsonPatchOp[]; injected: Record<string, number> } {
  const patch: JsonPatchOp[] = [];
  const spec = (isObject(pod.raw.spec) ? pod.raw.spec : {}) as { containers?: MutableContainer[]; volumes?: Record<string, unknown>[]; nodeSelector?: Record<string, string> };
  const containers = structuredClone(spec.containers ?? []);
  const before = JSON.stringify(containers);
  const injected: Record<string, number> = {};

  if (JSON.stringify(annotations) !== JSON.stringify(pod.annotations)) patch.push({ op: 'add', path: '/metadata/annotations', value: annotations });

  // Devices: what the pod's networks need beyond what its containers already ask for.
  const targets = targetContainers(pod, annotations);
  for (const [resource, count] of devicesNeeded(networks)) {
    const have = pod.containers.reduce((n, c) => n + deviceCount(c, resource), 0);
    for (let i = 0; i < count - have; i++) {
      const c = containers[targets[i % targets.length]!];
      if (!c) break;
      const res = (c.resources ??= {});
      const current = deviceCount({ name: c.name, requests: stringy(res.requests), limits: stringy(res.limits) }, resource);
      (res.requests ??= {})[resource] = String(current + 1);
      (res.limits ??= {})[resource] = String(current + 1);
      injected[resource] = (injected[resource] ?? 0) + 1;
    }
  }

  // Node selectors of every selected NAD, resourceName or not.
  const nodeSelector = { ...(spec.nodeSelector ?? {}) };
  for (const n of networks) {
    const text = n.nad?.metadata.annotations?.[NODE_SELECTOR_ANNOTATION];
    if (!text) continue;
    const sel = parseNodeSelector(text);
    if (typeof sel === 'string') continue; // the NAD's own validation names it
    for (const [k, v] of Object.entries(sel)) {
      if (nodeSelector[k] === undefined) nodeSelector[k] = v;
    }
  }
  if (JSON.stringify(nodeSelector) !== JSON.stringify(spec.nodeSelector ?? {})) patch.push({ op: 'add', path: '/spec/nodeSelector', value: nodeSelector });

  // podnetinfo: labels and annotations (and hugepages per container) for pods that get devices.
  const volumes = structuredClone(spec.volumes ?? []);
  const hasDevices = devicesNeeded(networks).size > 0;
  if (opts.podNetInfo && hasDevices && !volumes.some((v) => v.name === PODNETINFO_VOLUME)) {
    const items: Record<string, unknown>[] = [
      { path: 'labels', fieldRef: { fieldPath: 'metadata.labels' } },
      { path: 'annotations', fieldRef: { fieldPath: 'metadata.annotations' } },
    ];
    if (opts.hugepages) items.push(...hugepageItems(pod));
    volumes.push({ name: PODNETINFO_VOLUME, downwardAPI: { items } });
    for (const c of containers) {
      const mounts = (c.volumeMounts ??= []);
      if (!mounts.some((m) => m.name === PODNETINFO_VOLUME)) mounts.push({ name: PODNETINFO_VOLUME, mountPath: PODNETINFO_PATH, readOnly: true });
      if (opts.hugepages && items.length > 2 && !(c.env ?? []).some((e) => e.name === 'CONTAINER_NAME')) (c.env ??= []).push({ name: 'CONTAINER_NAME', value: c.name });
    }
    patch.push({ op: 'add', path: '/spec/volumes', value: volumes });
  }
  if (JSON.stringify(containers) !== before) {
    containers.forEach((c, i) => {
      const was = spec.containers?.[i];
      for (const field of ['resources', 'volumeMounts', 'env'] as const) {
        if (JSON.stringify(c[field]) !== JSON.stringify(was?.[field])) patch.push({ op: 'add', path: `/spec/containers/${i}/${escapePointer(field)}`, value: c[field] });
      }
    });
  }
  return { patch, injected };
}

function stringy(v: Record<string, unknown> | undefined): Record<string, string> {
  return Object.fromEntries(Object.entries(v ?? {}).map(([k, x]) => [k, String(x)]));
}

/** Indices of the containers that take devices: those the annotation names (in its order), else the first. */
function targetContainers(pod: PodView, annotations: Record<string, string>): number[] {
  const named = (annotations[RESOURCE_CONTAINERS_ANNOTATION] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const indices = named.map((n) => pod.containers.findIndex((c) => c.name === n)).filter((i) => i >= 0);
  return indices.length ? indices : [0];
}

/** Names of unknown containers in the resource-containers annotation (a denial: devices would go elsewhere). */
export function unknownResourceContainers(pod: PodView): string[] {
  const named = (pod.annotations[RESOURCE_CONTAINERS_ANNOTATION] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  return named.filter((n) => !pod.containers.some((c) => c.name === n));
}

/** NRI's file names, one per container and size, each scoped to its container (NRI #45). */
function hugepageItems(pod: PodView): Record<string, unknown>[] {
  const items: Record<string, unknown>[] = [];
  for (const c of pod.containers) {
    for (const [size, short] of [
      ['1Gi', '1G'],
      ['2Mi', '2M'],
    ] as const) {
      const resource = `hugepages-${size}`;
      if (c.requests[resource] === undefined && c.limits[resource] === undefined) continue;
      for (const kind of ['request', 'limit'] as const) {
        items.push({ path: `hugepages_${short}_${kind}_${c.name}`, resourceFieldRef: { containerName: c.name, resource: `${kind}s.${resource}`, divisor: '1Mi' } });
      }
    }
  }
  return items;
}

/** The nri-control-switches ConfigMap's config.json: feature switches and user-defined injections. */
export function parseControlSwitches(text: string): { features: Partial<Pick<InjectOptions, 'hugepages'>>; injections: Map<string, Record<string, string>>; problems: string[] } {
  const problems: string[] = [];
  const injections = new Map<string, Record<string, string>>();
  const features: Partial<Pick<InjectOptions, 'hugepages'>> = {};
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return { features, injections, problems: [`config.json is not JSON: ${(err as Error).message}`] };
  }
  if (!isObject(raw)) return { features, injections, problems: ['config.json is not an object'] };
  if (isObject(raw.features) && typeof raw.features.enableHugePageDownApi === 'boolean') features.hugepages = raw.features.enableHugePageDownApi;
  const udi = raw['user-defined-injections'];
  if (udi !== undefined && !isObject(udi)) problems.push('"user-defined-injections" is not an object');
  for (const [label, op] of Object.entries(isObject(udi) ? udi : {})) {
    if (!isObject(op) || op.op !== 'add' || op.path !== '/metadata/annotations' || !isObject(op.value) || !Object.values(op.value).every((v) => typeof v === 'string')) {
      problems.push(`user-defined injection ${JSON.stringify(label)}: only {"op": "add", "path": "/metadata/annotations", "value": {<string annotations>}} is supported`);
      continue;
    }
    injections.set(label, op.value as Record<string, string>);
  }
  return { features, injections, problems };
}
