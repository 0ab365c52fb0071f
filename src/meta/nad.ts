/** NetworkAttachmentDefinition → delegate network configuration, in the NPWG spec's order. */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { CniError, ErrorCode } from '../cni/errors.js';
import { confFiles, decodeJson, loadNetwork, parseNetworkConfig } from '../cni/conf.js';
import type { NetworkConfigList } from '../cni/types.js';
import type { NetworkAttachmentDefinition } from '../k8s/types.js';

/**
 * 1. `spec.config` (conf or conflist; `name` injected when missing);
 * 2. an on-disk conflist named like the NAD; 3. an on-disk conf; 4. otherwise fail.
 */
export function nadToConfList(nad: NetworkAttachmentDefinition, confDir: string): NetworkConfigList {
  const where = `${nad.metadata.namespace}/${nad.metadata.name}`;
  const text = nad.spec?.config?.trim();
  if (text) {
    const raw = decodeJson(text, `spec.config of NetworkAttachmentDefinition ${where}`);
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
      throw new CniError(ErrorCode.InvalidNetworkConfig, `invalid spec.config of NetworkAttachmentDefinition ${where}`, 'not a JSON object');
    }
    const obj = raw as Record<string, unknown>;
    const bytes = obj.name ? Buffer.from(text) : Buffer.from(JSON.stringify({ ...obj, name: nad.metadata.name }));
    return parseNetworkConfig(bytes, `spec.config of NetworkAttachmentDefinition ${where}`);
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
  if (!existsSync(path)) throw new CniError(ErrorCode.InvalidNetworkConfig, 'network configuration not found', path);
  const file = statSync(path).isDirectory() ? confFiles(path, ['.conf', '.conflist'])[0] : path;
  if (!file) throw new CniError(ErrorCode.InvalidNetworkConfig, 'no network configuration in directory', path);
  const list = parseNetworkConfig(readFileSync(file), file);
  // A conflist file gets libcni's sibling-directory plugins, as loadNetwork does.
  return file.endsWith('.conflist') && !list.loadOnlyInlinedPlugins ? loadNetwork(file.slice(0, file.lastIndexOf('/')), list.name) : list;
}

/** An inline delegate of a Multus-style `delegates` list. */
export function inlineDelegate(value: Record<string, unknown>, index: number): NetworkConfigList {
  return parseNetworkConfig(Buffer.from(JSON.stringify(value)), `delegates[${index}]`);
}
