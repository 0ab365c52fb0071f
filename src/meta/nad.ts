/** NetworkAttachmentDefinition → delegate network configuration, in the NPWG spec's order. */
import { readFileSync, statSync } from 'node:fs';
import { CniError, ErrorCode } from '../cni/errors.js';
import { dirname } from 'node:path';
import { appendSubdirPlugins, confFiles, decodeJson, loadNetwork, parseNetworkConfig } from '../cni/conf.js';
import type { NetworkConfigList } from '../cni/types.js';
import type { NetworkAttachmentDefinition } from '../k8s/types.js';

/** NADs' spec.config, parsed (a NAD object is never changed in place: informers replace it). */
const parsedNads = new WeakMap<NetworkAttachmentDefinition, NetworkConfigList>();

/**
 * 1. `spec.config` (conf or conflist; `name` injected when missing);
 * 2. an on-disk conflist named like the NAD; 3. an on-disk conf; 4. otherwise fail.
 */
export function nadToConfList(nad: NetworkAttachmentDefinition, confDir: string): NetworkConfigList {
  const where = `${nad.metadata.namespace}/${nad.metadata.name}`;
  const text = nad.spec?.config?.trim();
  if (text) {
    // The node daemon's informer hands out the same object until the NAD changes: parsed once.
    const parsed = parsedNads.get(nad);
    if (parsed) return parsed;
    const raw = decodeJson(text, `spec.config of NetworkAttachmentDefinition ${where}`);
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
      throw new CniError(ErrorCode.InvalidNetworkConfig, `invalid spec.config of NetworkAttachmentDefinition ${where}`, 'not a JSON object');
    }
    const obj = raw as Record<string, unknown>;
    const bytes = obj.name ? Buffer.from(text) : Buffer.from(JSON.stringify({ ...obj, name: nad.metadata.name }));
    const list = parseNetworkConfig(bytes, `spec.config of NetworkAttachmentDefinition ${where}`);
    parsedNads.set(nad, list);
    return list;
  }
  try {
    return loadNetwork(confDir, nad.metadata.name);
  } catch (err) {
    const e = err as CniError;
    throw new CniError(ErrorCode.InvalidNetworkConfig, `NetworkAttachmentDefinition ${where} has no spec.config and no file in ${confDir} names it`, e.details ?? e.msg);
  }
}

/**
 * A network given by path (Multus `clusterNetwork` with a "/"): a file, or a directory whose
 * alphabetically first .conf/.conflist is used.
 */
export function loadNetworkFromPath(path: string): NetworkConfigList {
  const stat = statSync(path, { throwIfNoEntry: false });
  if (!stat) throw new CniError(ErrorCode.InvalidNetworkConfig, 'network configuration not found', path);
  const file = stat.isDirectory() ? confFiles(path, ['.conf', '.conflist'])[0] : path;
  if (!file) throw new CniError(ErrorCode.InvalidNetworkConfig, 'no network configuration in directory', path);
  const bytes = readFileSync(file);
  // The node daemon reads the cluster network's file for every pod: parsed again only when it changed.
  let list = parsedFiles.get(file);
  if (!list || !list.bytes.equals(bytes)) {
    list = parseNetworkConfig(bytes, file);
    parsedFiles.set(file, list);
  }
  // A conflist file gets libcni's sibling-directory plugins (`<dir>/<name>/*.conf`), read every time.
  return file.endsWith('.conflist') ? appendSubdirPlugins(dirname(file), list) : list;
}

/** Conf files parsed, by path, with the bytes they were parsed from. */
const parsedFiles = new Map<string, NetworkConfigList>();

/**
 * An inline delegate of a Multus-style `delegates` list. Multus's own examples leave out `name` and
 * `cniVersion` (`{"type": "weave-net"}`): the name defaults to the meta conf's (`<name>-<index>` after
 * the first), which also keys the delegate's IPAM and cache state, and the version to the meta conf's.
 */
export function inlineDelegate(value: Record<string, unknown>, index: number, meta: { name: string; cniVersion: string }): NetworkConfigList {
  const defaults: Record<string, unknown> = {};
  if (value.name === undefined || value.name === '') defaults.name = index === 0 ? meta.name : `${meta.name}-${index}`;
  if (value.cniVersion === undefined || value.cniVersion === '') defaults.cniVersion = meta.cniVersion;
  return parseNetworkConfig(Buffer.from(JSON.stringify({ ...value, ...defaults })), `delegates[${index}]`);
}
