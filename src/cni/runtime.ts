/**
 * Runtime side of CNI (what libcni does for containerd and podman): run a network configuration
 * list's plugins for ADD / CHECK / DEL / STATUS / GC, inject per-plugin config, keep the result cache.
 */
import { type CniArgs, formatCniArgs, withIgnoreUnknown } from './args.js';
import { type AttachmentKey, DEFAULT_CACHE_DIR, deleteCacheEntry, listCacheEntries, makeCacheEntry, readCacheEntry, writeCacheEntry } from './cache.js';
import { CniError, ErrorCode } from './errors.js';
import { execPlugin, findInPath, parseResult } from './invoke.js';
import { type AnyResult, type Attachment, type CniCommand, type NetworkConfigList, type PluginConf, versionAtLeast } from './types.js';
import { convertResult } from './version.js';

/** One attachment as the runtime describes it. */
export interface RuntimeConf {
  containerID: string;
  netns: string;
  ifName: string;
  args: CniArgs;
  /** Capability arguments offered by the caller; keys are matched case-insensitively. */
  capabilityArgs: Record<string, unknown>;
}

export interface RuntimeOptions {
  cniPath: string[];
  /** libcni result cache; null when the caller keeps results itself (the meta plugin's store). */
  cacheDir?: string | null;
  /** Base environment for plugins (the caller's whole environment by default). */
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
  onStderr?: (chunk: Buffer) => void;
  /**
   * Plugin types run in this process instead of exec'd (the node daemon's own plugins): same
   * stdin and env, stdout on success, the plugin's CniError on failure. Found in the path first, as
   * an exec would need.
   */
  inProcess?: Record<string, InProcessPlugin>;
}

export type InProcessPlugin = (stdin: string, env: NodeJS.ProcessEnv) => Promise<Buffer>;

export interface PluginVersionInfo {
  type: string;
  path: string;
  cniVersion?: string;
  supportedVersions: string[];
}

// Capabilities whose values are objects with CONVENTIONS keys; runtimes differ in key case.
const CAMEL_CASE_CAPABILITIES = new Set(['portmappings', 'bandwidth', 'dns', 'ipranges']);

function lowerFirst(key: string): string {
  if (key === 'HostIP') return 'hostIP';
  return key.charAt(0).toLowerCase() + key.slice(1);
}

function camelKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(camelKeys);
  if (typeof value !== 'object' || value === null) return value;
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [lowerFirst(k), camelKeys(v)]));
}

/**
 * runtimeConfig for one plugin: each capability it declares true and the caller provides.
 * containerd capitalises keys (`PortMappings`, `HostPort`), podman does not: accept both and
 * emit the CONVENTIONS spelling.
 */
export function runtimeConfigFor(plugin: PluginConf, capabilityArgs: Record<string, unknown>): Record<string, unknown> {
  const provided = new Map(Object.entries(capabilityArgs).map(([k, v]) => [k.toLowerCase(), v] as const));
  const out: Record<string, unknown> = {};
  for (const [cap, enabled] of Object.entries(plugin.capabilities ?? {})) {
    if (!enabled) continue;
    const value = provided.get(cap.toLowerCase());
    if (value === undefined) continue;
    out[cap] = CAMEL_CASE_CAPABILITIES.has(cap.toLowerCase()) ? camelKeys(value) : value;
  }
  return out;
}

/** The config one plugin of the list receives (spec §"Deriving execution configuration"). */
export function buildPluginConf(list: NetworkConfigList, plugin: PluginConf, rt: RuntimeConf | undefined, prevResult: AnyResult | undefined): Record<string, unknown> {
  const conf: Record<string, unknown> = { ...plugin, name: list.name, cniVersion: list.cniVersion };
  delete conf.runtimeConfig;
  for (const key of Object.keys(conf)) if (key.startsWith('cni.dev/')) delete conf[key];
  if (rt) {
    const runtimeConfig = runtimeConfigFor(plugin, rt.capabilityArgs);
    if (Object.keys(runtimeConfig).length) conf.runtimeConfig = runtimeConfig;
  }
  if (prevResult) conf.prevResult = convertResult(prevResult, list.cniVersion);
  return conf;
}

/** A prevResult chosen by the caller instead of the cached one. */
export interface PrevResultOption {
  prevResult: AnyResult | undefined;
}

export class CniRuntime {
  readonly cacheDir: string | null;

  constructor(private readonly opts: RuntimeOptions) {
    this.cacheDir = opts.cacheDir === null ? null : (opts.cacheDir ?? DEFAULT_CACHE_DIR);
  }

  private env(command: CniCommand, rt?: RuntimeConf): NodeJS.ProcessEnv {
    return {
      ...(this.opts.env ?? process.env),
      CNI_COMMAND: command,
      CNI_CONTAINERID: rt?.containerID ?? '',
      CNI_NETNS: rt?.netns ?? '',
      CNI_ARGS: rt ? formatCniArgs(withIgnoreUnknown(rt.args)) : '',
      CNI_IFNAME: rt?.ifName ?? '',
      CNI_PATH: this.opts.cniPath.join(':'),
    };
  }

  private exec(plugin: PluginConf, command: CniCommand, conf: Record<string, unknown>, rt?: RuntimeConf): Promise<Buffer> {
    const path = findInPath(plugin.type, this.opts.cniPath);
    const inProcess = this.opts.inProcess?.[plugin.type];
    if (inProcess) return inProcess(JSON.stringify(conf), this.env(command, rt));
    return execPlugin(path, JSON.stringify(conf), this.env(command, rt), {
      timeoutMs: this.opts.timeoutMs ?? 0,
      ...(this.opts.onStderr ? { onStderr: this.opts.onStderr } : {}),
    });
  }

  private key(list: NetworkConfigList, rt: RuntimeConf): AttachmentKey {
    return { networkName: list.name, containerId: rt.containerID, ifName: rt.ifName };
  }

  /** The final ADD result cached for this attachment, in the list's version (undefined if none). */
  cachedResult(list: NetworkConfigList, rt: RuntimeConf): AnyResult | undefined {
    if (this.cacheDir === null) return undefined;
    const read = readCacheEntry(this.cacheDir, this.key(list, rt));
    switch (read.kind) {
      case 'entry':
        return read.entry.result ? convertResult(read.entry.result, list.cniVersion) : undefined;
      case 'legacy':
        return convertResult(read.result, list.cniVersion);
      case 'missing':
        return undefined;
      case 'corrupt':
        throw new CniError(ErrorCode.DecodingFailure, `failed to get network "${list.name}" cached result`, read.reason);
    }
  }

  /**
   * ADD: plugins in order, each given the previous result; the final result is cached. On failure
   * the attachment is deleted again (the spec's "DEL after a failed ADD"), then the error is returned.
   */
  async addNetworkList(list: NetworkConfigList, rt: RuntimeConf, given?: PrevResultOption): Promise<AnyResult> {
    // A caller may chain the list onto an existing result (the first plugin then gets it as prevResult).
    let prev: AnyResult | undefined = given?.prevResult;
    let attempted = 0;
    try {
      for (const plugin of list.plugins) {
        const conf = buildPluginConf(list, plugin, rt, prev);
        attempted += 1;
        const stdout = await this.exec(plugin, 'ADD', conf, rt);
        prev = parseResult(stdout, plugin.type);
      }
      if (!prev) throw new CniError(ErrorCode.InvalidNetworkConfig, `network "${list.name}" has no plugins`);
      const result = convertResult(prev, list.cniVersion);
      if (this.cacheDir !== null) {
        writeCacheEntry(this.cacheDir, makeCacheEntry(this.key(list, rt), list.bytes, { netns: rt.netns, cniArgs: rt.args, capabilityArgs: rt.capabilityArgs, result }));
      }
      return result;
    } catch (err) {
      await this.cleanupFailedAdd(list, rt, prev, attempted);
      throw err;
    }
  }

  /**
   * Undo of a failed ADD: DEL every plugin that was run (the failing one included, it may have
   * done part of its work), in reverse, continuing past errors so one stubborn plugin cannot
   * strand what the others made.
   */
  private async cleanupFailedAdd(list: NetworkConfigList, rt: RuntimeConf, prev: AnyResult | undefined, attempted: number): Promise<void> {
    const withPrev = prev && versionAtLeast(list.cniVersion, '0.4.0') ? prev : undefined;
    for (const plugin of list.plugins.slice(0, attempted).reverse()) {
      try {
        await this.exec(plugin, 'DEL', buildPluginConf(list, plugin, rt, withPrev), rt);
      } catch (cleanup) {
        const note = `plexus: DEL of ${plugin.type} after a failed ADD also failed: ${(cleanup as Error).message}\n`;
        (this.opts.onStderr ?? ((c: Buffer) => process.stderr.write(c)))(Buffer.from(note));
      }
    }
  }

  /** CHECK: only for 0.4.0+, never when disabled, and only for an attachment that was added. */
  async checkNetworkList(list: NetworkConfigList, rt: RuntimeConf, given?: PrevResultOption): Promise<void> {
    if (!versionAtLeast(list.cniVersion, '0.4.0')) {
      throw new CniError(ErrorCode.IncompatibleVersion, 'configuration version does not allow CHECK', `network "${list.name}" is ${list.cniVersion}`);
    }
    if (list.disableCheck) throw new CniError(ErrorCode.InvalidNetworkConfig, `network "${list.name}" disables CHECK`);
    const prev = given ? given.prevResult : this.cachedResult(list, rt);
    if (!prev) throw new CniError(ErrorCode.UnknownContainer, 'no cached result for this attachment', `${rt.containerID}/${rt.ifName} on "${list.name}" was not added`);
    for (const plugin of list.plugins) await this.exec(plugin, 'CHECK', buildPluginConf(list, plugin, rt, prev), rt);
  }

  /** DEL: plugins in reverse, each given the cached ADD result (0.4.0+); the entry goes last. */
  async delNetworkList(list: NetworkConfigList, rt: RuntimeConf, given?: PrevResultOption): Promise<void> {
    const known = given ? given.prevResult : this.cachedResult(list, rt);
    const prev = known && versionAtLeast(list.cniVersion, '0.4.0') ? known : undefined;
    for (const plugin of [...list.plugins].reverse()) {
      await this.exec(plugin, 'DEL', buildPluginConf(list, plugin, rt, prev), rt);
    }
    // Only after every plugin succeeded: a failed DEL must be retryable with the same prevResult.
    if (this.cacheDir !== null) deleteCacheEntry(this.cacheDir, this.key(list, rt));
  }

  /** STATUS (1.1.0+; older lists are ready by definition): the first plugin error, unchanged. */
  async statusNetworkList(list: NetworkConfigList): Promise<void> {
    if (!versionAtLeast(list.cniVersion, '1.1.0')) return;
    for (const plugin of list.plugins) await this.exec(plugin, 'STATUS', buildPluginConf(list, plugin, undefined, undefined));
  }

  /**
   * GC: DEL every cached attachment of the network that is not in `valid`, then (1.1.0+) send GC with
   * the valid list to every plugin. Continues past errors and reports them all.
   */
  async gcNetworkList(list: NetworkConfigList, valid: Attachment[]): Promise<void> {
    if (list.disableGC) return;
    const keep = new Set(valid.map((a) => `${a.containerID}\u0000${a.ifname}`));
    const errors: string[] = [];
    for (const entry of this.cacheDir === null ? [] : listCacheEntries(this.cacheDir, list.name)) {
      if (keep.has(`${entry.containerId}\u0000${entry.ifName}`)) continue;
      const rt: RuntimeConf = {
        containerID: entry.containerId,
        netns: entry.netns ?? '',
        ifName: entry.ifName,
        args: entry.cniArgs ?? [],
        capabilityArgs: entry.capabilityArgs ?? {},
      };
      try {
        await this.delNetworkList(list, rt);
      } catch (err) {
        errors.push(`DEL ${entry.containerId}/${entry.ifName}: ${(err as Error).message}`);
      }
    }
    if (versionAtLeast(list.cniVersion, '1.1.0')) {
      const attachments = valid.map(({ containerID, ifname }) => ({ containerID, ifname }));
      for (const plugin of list.plugins) {
        const conf = { ...buildPluginConf(list, plugin, undefined, undefined), 'cni.dev/valid-attachments': attachments, 'cni.dev/attachments': attachments };
        try {
          await this.exec(plugin, 'GC', conf);
        } catch (err) {
          errors.push(`GC ${plugin.type}: ${(err as Error).message}`);
        }
      }
    }
    if (errors.length) throw new CniError(ErrorCode.Internal, `garbage collection of "${list.name}" had ${errors.length} error(s)`, errors.join('; '));
  }

  /** VERSION of every plugin in the list, with a dummy env as podman sends. */
  async versionInfo(list: NetworkConfigList): Promise<PluginVersionInfo[]> {
    const out: PluginVersionInfo[] = [];
    for (const plugin of list.plugins) {
      const path = findInPath(plugin.type, this.opts.cniPath);
      const stdout = await execPlugin(path, JSON.stringify({ cniVersion: list.cniVersion }), { ...this.env('VERSION'), CNI_PATH: this.opts.cniPath.join(':') });
      const reply = JSON.parse(stdout.toString()) as { cniVersion?: string; supportedVersions?: string[] };
      out.push({ type: plugin.type, path, ...(reply.cniVersion ? { cniVersion: reply.cniVersion } : {}), supportedVersions: reply.supportedVersions ?? [] });
    }
    return out;
  }
}
