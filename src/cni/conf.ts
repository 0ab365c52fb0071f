/** Network configuration: parse `.conf` / `.conflist` bytes and find networks in a conf dir (libcni rules). */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { CniError, ErrorCode } from './errors.js';
import { validate } from './validate.js';
import { type NetworkConfigList, type PluginConf, SUPPORTED_VERSIONS, compareVersions, isSupportedVersion } from './types.js';
import { isObject } from '../util/object.js';

/** JSON.parse with the spec's decode error (code 6). */
export function decodeJson(bytes: Buffer | string, what: string): unknown {
  try {
    return JSON.parse(bytes.toString());
  } catch (err) {
    throw new CniError(ErrorCode.DecodingFailure, `failed to decode ${what}`, (err as Error).message);
  }
}

function bool(v: unknown): boolean {
  return v === true || (typeof v === 'string' && v.toLowerCase() === 'true');
}

/**
 * The version a runtime uses for a list: the highest of `cniVersion` and `cniVersions` that it
 * implements (newer ones are ignored, as libcni does); code 1 if none is implemented.
 */
export function selectVersion(cniVersion: string, cniVersions: readonly string[] = []): string {
  const candidates = [cniVersion, ...cniVersions].filter(isSupportedVersion);
  if (!candidates.length) {
    throw new CniError(
      ErrorCode.IncompatibleVersion,
      'incompatible CNI versions',
      `config supports ${JSON.stringify([cniVersion, ...cniVersions])}, Plexus supports ${JSON.stringify(SUPPORTED_VERSIONS)}`,
    );
  }
  return candidates.sort(compareVersions).at(-1)!;
}

/** Parses a conflist, or a legacy single conf wrapped into a one-plugin list. */
export function parseNetworkConfig(bytes: Buffer, source = 'network configuration'): NetworkConfigList {
  const raw = decodeJson(bytes, source);
  if (!isObject(raw)) throw new CniError(ErrorCode.InvalidNetworkConfig, `invalid ${source}`, 'not a JSON object');
  if ('plugins' in raw) {
    const list = validate<Record<string, unknown> & { name: string; plugins: PluginConf[] }>('confList', raw, ErrorCode.InvalidNetworkConfig, source);
    const loadOnlyInlinedPlugins = bool(list.loadOnlyInlinedPlugins);
    if (loadOnlyInlinedPlugins && list.plugins.length === 0) {
      throw new CniError(ErrorCode.InvalidNetworkConfig, `invalid ${source}`, 'loadOnlyInlinedPlugins is set but "plugins" is empty');
    }
    const declared = typeof list.cniVersion === 'string' ? list.cniVersion : '0.1.0';
    const versions = Array.isArray(list.cniVersions) ? (list.cniVersions as string[]) : undefined;
    const out: NetworkConfigList = {
      cniVersion: selectVersion(declared, versions),
      name: list.name,
      disableCheck: bool(list.disableCheck),
      disableGC: bool(list.disableGC),
      loadOnlyInlinedPlugins,
      plugins: list.plugins,
      bytes,
    };
    if (versions) out.cniVersions = versions;
    return out;
  }
  const conf = validate<PluginConf & { name: string; cniVersion?: string }>('singleConf', raw, ErrorCode.InvalidNetworkConfig, source);
  const version = selectVersion(conf.cniVersion ?? '0.1.0');
  return {
    cniVersion: version,
    name: conf.name,
    disableCheck: false,
    disableGC: false,
    loadOnlyInlinedPlugins: true,
    plugins: [conf],
    bytes,
  };
}

/** libcni ConfFiles: files with the given extensions, in lexical order. */
export function confFiles(dir: string, extensions = ['.conf', '.conflist', '.json']): string[] {
  let names: string[];
  // Mostly asked of a directory that is not there (libcni's `<dir>/<network>/`): no exception for that.
  if (!existsSync(dir)) return [];
  try {
    names = readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new CniError(ErrorCode.IOFailure, `cannot read conf dir ${dir}`, (err as Error).message);
  }
  return names
    .filter((n) => extensions.some((e) => n.endsWith(e)))
    .sort()
    .map((n) => join(dir, n))
    .filter((p) => statSync(p, { throwIfNoEntry: false })?.isFile());
}

/**
 * Finds network `name` in `dir`: conflists first, then `.conf`/`.json` (libcni LoadConfList).
 * Unlike libcni, one broken file does not hide the others; it is named if `name` is not found.
 */
export function loadNetwork(dir: string, name: string): NetworkConfigList {
  const broken: string[] = [];
  const tryFiles = (exts: string[]): NetworkConfigList | undefined => {
    for (const file of confFiles(dir, exts)) {
      let list: NetworkConfigList;
      try {
        list = parseNetworkConfig(readFileSync(file), file);
      } catch (err) {
        // The network asked for, but broken: its own error is the precise one.
        if (nameOf(file) === name) throw err;
        broken.push(`${file}: ${(err as Error).message}`);
        continue;
      }
      if (list.name === name) return list;
    }
    return undefined;
  };
  const list = tryFiles(['.conflist']) ?? tryFiles(['.conf', '.json']);
  if (!list) {
    const why = broken.length ? `; unreadable files: ${broken.join('; ')}` : '';
    throw new CniError(ErrorCode.InvalidNetworkConfig, `no network "${name}" found in ${dir}`, why ? why.slice(2) : undefined);
  }
  return appendSubdirPlugins(dir, list);
}

function nameOf(file: string): unknown {
  try {
    return (JSON.parse(readFileSync(file, 'utf8')) as { name?: unknown }).name;
  } catch {
    return undefined;
  }
}

/** Plugins in `<dir>/<name>/*.conf` are appended unless `loadOnlyInlinedPlugins` (spec 1.1.0). */
export function appendSubdirPlugins(dir: string, list: NetworkConfigList): NetworkConfigList {
  if (list.loadOnlyInlinedPlugins) return list;
  const extra = confFiles(join(dir, list.name), ['.conf']).map((file) => {
    const raw = decodeJson(readFileSync(file), file);
    return validate<PluginConf>('pluginFile', raw, ErrorCode.InvalidNetworkConfig, file);
  });
  return extra.length ? { ...list, plugins: [...list.plugins, ...extra] } : list;
}
