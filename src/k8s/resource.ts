/**
 * What Plexus reads of DRA objects (resource.k8s.io/v1): a pod's claim names, a claim's allocation,
 * and the two attributes of a ResourceSlice device that tie it to a NAD (Multus's DRA contract:
 * `k8s.cni.cncf.io/deviceID` and `k8s.cni.cncf.io/resourceName`). Explicit parsers: these objects come
 * from the API server, and a field of the wrong type is said, not cast.
 */
import { CniError, ErrorCode } from '../cni/errors.js';
import { isObject } from '../util/object.js';
import type { Pod } from './types.js';

export const RESOURCE_API = '/apis/resource.k8s.io/v1';
/** The slice attributes a NAD's `k8s.v1.cni.cncf.io/resourceName` is matched against (Multus #1492). */
export const DEVICE_ID_ATTRIBUTE = 'k8s.cni.cncf.io/deviceID';
export const RESOURCE_NAME_ATTRIBUTE = 'k8s.cni.cncf.io/resourceName';

export function claimPath(namespace: string, name: string): string {
  return `${RESOURCE_API}/namespaces/${encodeURIComponent(namespace)}/resourceclaims/${encodeURIComponent(name)}`;
}

/** One allocated device of a claim: `<driver>/<pool>/<device>` for `request`. */
export interface ClaimResult {
  request: string;
  driver: string;
  pool: string;
  device: string;
  shareID?: string;
}

/** An opaque device config of the allocation (the class's first, then the claim's: a later one wins). */
export interface ClaimConfig {
  /** The requests it applies to; empty: all of them. */
  requests: string[];
  driver: string;
  parameters: unknown;
}

export interface ResourceClaim {
  namespace: string;
  name: string;
  uid: string;
  /** Undefined while the claim is not allocated. */
  results: ClaimResult[] | undefined;
  config: ClaimConfig[];
}

function bad(what: string, why: string): CniError {
  return new CniError(ErrorCode.InvalidNetworkConfig, `${what} cannot be read`, why);
}

export function parseResourceClaim(raw: unknown, what: string): ResourceClaim {
  if (!isObject(raw) || !isObject(raw.metadata)) throw bad(what, 'not an object with metadata');
  const { name, namespace, uid } = raw.metadata;
  if (typeof name !== 'string' || typeof namespace !== 'string' || typeof uid !== 'string') throw bad(what, 'metadata.name, namespace and uid must be strings');
  const status = raw.status === undefined ? {} : raw.status;
  if (!isObject(status)) throw bad(what, 'status must be an object');
  if (status.allocation === undefined || status.allocation === null) return { namespace, name, uid, results: undefined, config: [] };
  const devices = isObject(status.allocation) ? status.allocation.devices : undefined;
  const list = isObject(devices) ? (devices.results ?? []) : undefined;
  if (!Array.isArray(list)) throw bad(what, 'status.allocation.devices.results must be a list');
  const results = list.map((r, i): ClaimResult => {
    if (!isObject(r) || typeof r.request !== 'string' || typeof r.driver !== 'string' || typeof r.pool !== 'string' || typeof r.device !== 'string')
      throw bad(what, `status.allocation.devices.results[${i}] needs string request, driver, pool and device`);
    const out: ClaimResult = { request: r.request, driver: r.driver, pool: r.pool, device: r.device };
    if (typeof r.shareID === 'string') out.shareID = r.shareID;
    return out;
  });
  const configs = isObject(devices) ? (devices.config ?? []) : [];
  if (!Array.isArray(configs)) throw bad(what, 'status.allocation.devices.config must be a list');
  const config = configs.flatMap((c, i): ClaimConfig[] => {
    if (!isObject(c)) throw bad(what, `status.allocation.devices.config[${i}] must be an object`);
    const requests = c.requests ?? [];
    if (!Array.isArray(requests) || !requests.every((r): r is string => typeof r === 'string')) throw bad(what, `status.allocation.devices.config[${i}].requests must be a list of names`);
    if (!isObject(c.opaque)) return [];
    if (typeof c.opaque.driver !== 'string') throw bad(what, `status.allocation.devices.config[${i}].opaque.driver must be a string`);
    return [{ requests, driver: c.opaque.driver, parameters: c.opaque.parameters }];
  });
  return { namespace, name, uid, results, config };
}

/**
 * The pod's ResourceClaims, in `spec.resourceClaims` order: each entry's name in the pod (`ref`) and
 * the claim's own name, a claim named directly or the one made from a template
 * (`status.resourceClaimStatuses`). A template whose claim is not made yet is left out (the pod is not
 * scheduled then, so no sandbox exists for it); a claim two entries name is listed once.
 */
export function podClaims(pod: Pod): { ref: string; claim: string }[] {
  const spec = isObject(pod.spec) && Array.isArray(pod.spec.resourceClaims) ? pod.spec.resourceClaims : [];
  const statuses = isObject(pod.status) && Array.isArray(pod.status.resourceClaimStatuses) ? pod.status.resourceClaimStatuses : [];
  const made = new Map<string, string>();
  for (const s of statuses) if (isObject(s) && typeof s.name === 'string' && typeof s.resourceClaimName === 'string') made.set(s.name, s.resourceClaimName);
  const out: { ref: string; claim: string }[] = [];
  for (const c of spec) {
    if (!isObject(c) || typeof c.name !== 'string') continue;
    const claim = typeof c.resourceClaimName === 'string' ? c.resourceClaimName : made.get(c.name);
    if (claim && !out.some((o) => o.claim === claim)) out.push({ ref: c.name, claim });
  }
  return out;
}

/** The Multus attributes of one slice device. */
export interface SliceDeviceIds {
  deviceID?: string;
  resourceName?: string;
}

/** `<driver>/<pool>/<device>` → its Multus attributes, from a ResourceSlice list. Devices without either are kept (and skipped by the caller). */
export function sliceDeviceIds(list: unknown, what: string): Map<string, SliceDeviceIds> {
  const items = isObject(list) && Array.isArray(list.items) ? list.items : undefined;
  if (!items) throw bad(what, 'not a list with items');
  const out = new Map<string, SliceDeviceIds>();
  for (const slice of items) {
    const spec = isObject(slice) && isObject(slice.spec) ? slice.spec : undefined;
    const pool = spec && isObject(spec.pool) ? spec.pool.name : undefined;
    if (!spec || typeof spec.driver !== 'string' || typeof pool !== 'string' || !Array.isArray(spec.devices)) continue;
    for (const d of spec.devices) {
      if (!isObject(d) || typeof d.name !== 'string') continue;
      const attrs = isObject(d.attributes) ? d.attributes : {};
      const str = (key: string): string | undefined => {
        const a = attrs[key];
        return isObject(a) && typeof a.string === 'string' ? a.string : undefined;
      };
      const ids: SliceDeviceIds = {};
      const deviceID = str(DEVICE_ID_ATTRIBUTE);
      const resourceName = str(RESOURCE_NAME_ATTRIBUTE);
      if (deviceID) ids.deviceID = deviceID;
      if (resourceName) ids.resourceName = resourceName;
      out.set(`${spec.driver}/${pool}/${d.name}`, ids);
    }
  }
  return out;
}
