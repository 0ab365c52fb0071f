/**
 * The checks of a selected network that the meta plugin makes at ADD and the admission webhook makes
 * when the pod is created: one implementation, so both give the same verdict in the same words.
 */
import { CniError, ErrorCode } from '../cni/errors.js';
import type { NetworkConfigList } from '../cni/types.js';
import { isObject } from '../util/object.js';
import type { NetworkSelection } from './selection.js';

/** Capabilities a selection may ask for, and the annotation key that asked (NPWG: fail if undeclared). */
const REQUESTED_CAPABILITIES: [keyof NetworkSelection, string, string][] = [
  ['ips', 'ips', 'ips'],
  ['mac', 'mac', 'mac'],
  ['infinibandGUID', 'infinibandGUID', 'infiniband-guid'],
  ['portMappings', 'portMappings', 'portMappings'],
  ['bandwidth', 'bandwidth', 'bandwidth'],
];

/**
 * Refused at ADD what DEL would refuse: a plugin `type` or `ipam.type` that is not a plain file name
 * (a path would choose a binary outside the CNI path, and the ADD that ran the rest would never be undone).
 */
export function checkPluginNames(list: NetworkConfigList): void {
  for (const p of list.plugins) {
    const ipamType = isObject(p.ipam) ? p.ipam.type : undefined;
    for (const [key, v] of [
      ['type', p.type],
      ['ipam.type', ipamType],
    ] as const) {
      if (key === 'ipam.type' && v === undefined) continue;
      if (typeof v !== 'string' || !v || /[/\\]/.test(v) || v === '.' || v === '..') {
        throw new CniError(ErrorCode.InvalidNetworkConfig, `invalid plugin ${key} in "${list.name}"`, `${JSON.stringify(v)} must be a plain plugin name`);
      }
    }
  }
}

/** NPWG: a requested ips/mac/guid/portMappings/bandwidth needs a plugin that declares it. */
export function checkCapabilities(list: NetworkConfigList, sel: NetworkSelection): void {
  for (const [field, capability, key] of REQUESTED_CAPABILITIES) {
    if (sel[field] !== undefined && !declares(list, capability)) {
      throw new CniError(ErrorCode.InvalidNetworkConfig, `network ${sel.namespace}/${sel.name} cannot take "${key}"`, `no plugin in "${list.name}" declares the "${capability}" capability`);
    }
  }
}

export function declares(list: NetworkConfigList, capability: string): boolean {
  return list.plugins.some((p) => p.capabilities?.[capability] === true);
}
