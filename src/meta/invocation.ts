/**
 * One invocation of the meta plugin: its conf, the pod it is for, the runtime that runs delegates, the
 * attachment store, and the pod, NADs and API client it reads (each at most once).
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { type CniArgs, IPAM_CLAIM_ARG, argsForDelegates, getArg } from '../cni/args.js';
import { CniError, ErrorCode } from '../cni/errors.js';
import { loadNetwork, parseNetworkConfig } from '../cni/conf.js';
import { CniRuntime, type RuntimeConf } from '../cni/runtime.js';
import type { PluginRequest } from '../cni/skel.js';
import type { NetworkConfigList, PluginConf } from '../cni/types.js';
import { ApiClient, ApiError, apiFailure } from '../k8s/client.js';
import { inClusterConfig, loadKubeconfig } from '../k8s/kubeconfig.js';
import { type NetworkAttachmentDefinition, type Pod, nadPath, parseNad, parsePod, podPath } from '../k8s/types.js';
import { isObject } from '../util/object.js';
import { type MetaConf, checkMetaConfDirs, parseMetaConf } from './conf.js';
import type { MetaContext } from './context.js';
import { loadNetworkFromPath, nadToConfList } from './nad.js';
import { DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION, type NetworkSelection, RESOURCE_NAME_ANNOTATION } from './selection.js';
import { AttachmentStore, type ClaimDeviceRef } from './store.js';
import { lineLogger } from '../util/linelog.js';

const POD_ANNOTATIONS_CAPABILITY = 'io.kubernetes.cri.pod-annotations';
const LOG_LEVELS = ['panic', 'error', 'verbose', 'debug'] as const;

export interface PodRef {
  namespace: string;
  name: string;
  uid: string;
  infraContainerID: string;
}

/** One attachment to make: a delegate network, its interface name and what it is given. */
export interface PlannedAttachment {
  network: string;
  list: NetworkConfigList;
  ifName: string;
  isDefault: boolean;
  capabilityArgs: Record<string, unknown>;
  selection?: NetworkSelection;
  resourceName?: string;
  deviceID?: string;
  /** The ResourceClaim device the deviceID came from (DRA): its network data is written after ADD. */
  claim?: ClaimDeviceRef;
  deviceInfoFile?: string;
  /** Multus `auxiliaryCNIChainName`: chained plugins run for every pod; no interface, no status entry. */
  auxiliary?: boolean;
}

export interface Plan {
  attachments: PlannedAttachment[];
  /** What could not be resolved (only collected when planning leniently, for DEL). */
  problems: string[];
  /** Of the problems, those retrying may cure (the API unreachable, anything not a config error). */
  retryable: string[];
}

export function podRefFromArgs(args: CniArgs): PodRef | undefined {
  const name = getArg(args, 'K8S_POD_NAME');
  const namespace = getArg(args, 'K8S_POD_NAMESPACE');
  if (!name || !namespace) return undefined;
  return { name, namespace, uid: getArg(args, 'K8S_POD_UID') ?? '', infraContainerID: getArg(args, 'K8S_POD_INFRA_CONTAINER_ID') ?? '' };
}

/** The runtime's runtimeConfig value for `key`, matched case-insensitively. */
function runtimeConfigValue(req: PluginRequest, key: string): unknown {
  const rc = req.conf.runtimeConfig ?? {};
  const found = Object.keys(rc).find((k) => k.toLowerCase() === key.toLowerCase());
  return found === undefined ? undefined : rc[found];
}

/** Per-invocation state of the meta plugin. */
export class MetaInvocation {
  readonly conf: MetaConf;
  readonly pod: PodRef | undefined;
  readonly runtime: CniRuntime;
  readonly store: AttachmentStore;
  private api: ApiClient | undefined | null = null;
  private podObject: Pod | undefined;
  private nads = new Map<string, NetworkAttachmentDefinition | undefined>();
  private readonly logLine: (level: (typeof LOG_LEVELS)[number], line: string) => void;

  constructor(
    readonly req: PluginRequest,
    readonly ctx: MetaContext = {},
  ) {
    this.conf = parseMetaConf(req.conf);
    checkMetaConfDirs(this.conf);
    this.pod = podRefFromArgs(req.args);
    // binDir first, then the runtime's path (Multus order).
    const cniPath = [this.conf.binDir, ...req.path].filter((p, i, all) => p && all.indexOf(p) === i);
    this.runtime = new CniRuntime({
      cniPath,
      cacheDir: null,
      env: ctx.delegateEnv ? { ...req.env, ...ctx.delegateEnv } : req.env,
      onStderr: (c) => process.stderr.write(c),
      inProcess: ctx.inProcess ?? {},
    });
    this.store = new AttachmentStore(join(this.conf.cniDir, 'attachments'));
    this.logLine = lineLogger({
      levels: LOG_LEVELS,
      level: this.conf.logLevel,
      fallback: 'panic',
      ...(this.conf.logFile ? { file: this.conf.logFile, rotate: this.conf.logOptions ?? {} } : {}),
      ...(this.conf.logToStderr ? { stderrPrefix: 'plexus: ' } : {}),
    });
  }

  /** Multus's logging keys: `logLevel` (panic < error < verbose < debug), `logFile`, `logOptions`, `logToStderr`. */
  log(line: string, level: 'error' | 'verbose' | 'debug' = 'verbose'): void {
    this.logLine(level, `${this.req.containerID || '-'} ${line}`);
  }

  /** The API client, if a kubeconfig or in-cluster credentials exist; loaded once, lazily. */
  async apiClient(): Promise<ApiClient | undefined> {
    if (this.api !== null) return this.api;
    const path = this.conf.kubeconfig;
    const stat = path ? statSync(path, { bigint: true, throwIfNoEntry: false }) : undefined;
    const key = stat && `${path}\0${stat.ino}\0${stat.size}\0${stat.mtimeNs}\0${this.conf.apiTimeoutMs}`;
    const cached = key ? this.ctx.apiCache?.get(key) : undefined;
    if (cached) return (this.api = cached);
    // No kubeconfig in the conf: the hosting daemon's credentials, else in-cluster ones (one-shot).
    const cfg = path ? await loadKubeconfig(path) : (this.ctx.hostApi ?? inClusterConfig(this.req.env));
    this.api = cfg ? new ApiClient(cfg, this.conf.apiTimeoutMs, { request: (method, path) => this.ctx.observer?.apiRequest(method, path) }) : undefined;
    if (key && this.api) this.ctx.apiCache?.set(key, this.api);
    return this.api;
  }

  /** Pod annotations: from the runtime (no API read at all) or from the API. */
  async podAnnotations(): Promise<Record<string, string> | undefined> {
    const fromRuntime = runtimeConfigValue(this.req, POD_ANNOTATIONS_CAPABILITY);
    if (fromRuntime !== undefined && fromRuntime !== null) {
      if (!isObject(fromRuntime))
        throw new CniError(ErrorCode.InvalidNetworkConfig, `runtimeConfig "${POD_ANNOTATIONS_CAPABILITY}" must be a map of annotations`, `got ${JSON.stringify(fromRuntime).slice(0, 100)}`);
      // Annotations are strings; one Plexus reads that is something else is refused, never skipped:
      // a pod does not start with fewer networks than it asked for.
      for (const key of [NETWORKS_ANNOTATION, DEFAULT_NETWORK_ANNOTATION]) {
        const v = fromRuntime[key];
        if (v !== undefined && typeof v !== 'string')
          throw new CniError(ErrorCode.InvalidNetworkConfig, `annotation ${key} must be a string`, `runtimeConfig "${POD_ANNOTATIONS_CAPABILITY}" has ${JSON.stringify(v).slice(0, 100)}`);
      }
      return Object.fromEntries(Object.entries(fromRuntime).filter(([, v]) => typeof v === 'string')) as Record<string, string>;
    }
    // Without an API server (or a pod to ask about) there are no annotations: only the cluster network.
    const pod = await this.getPod();
    return pod?.metadata.annotations ?? {};
  }

  async getPod(): Promise<Pod | undefined> {
    if (this.podObject || !this.pod) return this.podObject;
    this.podObject = this.ctx.lookup?.pod(this.pod.namespace, this.pod.name);
    if (this.podObject) return this.checkUid(this.podObject);
    const api = await this.apiClient();
    if (!api) return undefined;
    try {
      this.podObject = parsePod(await api.get<unknown>(podPath(this.pod.namespace, this.pod.name)), `pod ${this.pod.namespace}/${this.pod.name} from the API`);
    } catch (err) {
      throw apiFailure(err, `reading pod ${this.pod.namespace}/${this.pod.name}`);
    }
    return this.checkUid(this.podObject);
  }

  private checkUid(pod: Pod): Pod {
    if (this.pod?.uid && pod.metadata.uid && this.pod.uid !== pod.metadata.uid) {
      throw new CniError(ErrorCode.UnknownContainer, 'pod was replaced', `${this.pod.namespace}/${this.pod.name} has UID ${pod.metadata.uid}, the runtime asked for ${this.pod.uid}`);
    }
    return pod;
  }

  /** A NAD from the API (cached per invocation); undefined when there is no API or it does not exist. */
  async getNad(namespace: string, name: string): Promise<NetworkAttachmentDefinition | undefined> {
    const key = `${namespace}/${name}`;
    if (this.nads.has(key)) return this.nads.get(key);
    let nad = this.ctx.lookup?.nad(namespace, name);
    const api = nad ? undefined : await this.apiClient();
    if (api) {
      try {
        nad = parseNad(await api.get<unknown>(nadPath(namespace, name)), `NetworkAttachmentDefinition ${key} from the API`);
      } catch (err) {
        if (!(err instanceof ApiError && err.status === 404)) throw apiFailure(err, `reading NetworkAttachmentDefinition ${key}`);
      }
    }
    this.nads.set(key, nad);
    return nad;
  }

  /** A selected network: its NAD (spec order), or without an API server, a conf file of that name. */
  async resolveSelection(sel: NetworkSelection): Promise<{ list: NetworkConfigList; resourceName?: string }> {
    const nad = await this.getNad(sel.namespace, sel.name);
    if (nad) {
      const resourceName = nad.metadata.annotations?.[RESOURCE_NAME_ANNOTATION];
      return { list: nadToConfList(nad, this.conf.confDir), ...(resourceName ? { resourceName } : {}) };
    }
    if (await this.apiClient()) {
      throw new CniError(ErrorCode.InvalidNetworkConfig, `NetworkAttachmentDefinition ${sel.namespace}/${sel.name} not found`, 'the pod selects a network that does not exist');
    }
    return { list: loadNetwork(this.conf.confDir, sel.name) };
  }

  /** Multus `clusterNetwork` / `defaultNetworks` entry: a path, or a NAD name, or a conf name. */
  async resolveNamed(value: string): Promise<{ display: string; list: NetworkConfigList }> {
    if (value.includes('/') && (value.startsWith('/') || existsSync(value))) {
      const list = loadNetworkFromPath(value);
      return { display: list.name, list };
    }
    const nad = await this.getNad(this.conf.multusNamespace, value);
    if (nad) return { display: `${this.conf.multusNamespace}/${value}`, list: nadToConfList(nad, this.conf.confDir) };
    const list = loadNetwork(this.conf.confDir, value);
    return { display: list.name, list };
  }

  /**
   * The delegate config exactly as executed and stored: self-contained (plugins libcni appended from
   * `<dir>/<name>/*.conf` are written in), with deviceID/pciBusID and cni-args injected.
   */
  delegateList(a: PlannedAttachment): NetworkConfigList {
    const cniArgs = a.selection?.cniArgs;
    const raw = JSON.parse(a.list.bytes.toString()) as Record<string, unknown>;
    const appended = Array.isArray(raw.plugins) && raw.plugins.length !== a.list.plugins.length;
    if (!a.deviceID && !cniArgs && !appended) return a.list;
    const inject = (p: PluginConf): PluginConf => {
      const out: PluginConf = { ...p };
      if (a.deviceID) Object.assign(out, { deviceID: a.deviceID, pciBusID: a.deviceID });
      if (cniArgs) {
        const args = isObject(p.args) ? p.args : {};
        out.args = { ...args, cni: { ...(isObject(args.cni) ? args.cni : {}), ...cniArgs } };
      }
      return out;
    };
    const rewritten = Array.isArray(raw.plugins) ? { ...raw, plugins: a.list.plugins.map(inject), ...(appended ? { loadOnlyInlinedPlugins: true } : {}) } : inject(raw as PluginConf);
    return parseNetworkConfig(Buffer.from(JSON.stringify(rewritten)), a.network);
  }

  runtimeConf(ifName: string, capabilityArgs: Record<string, unknown>): RuntimeConf {
    const claim = capabilityArgs[IPAM_CLAIM_ARG];
    const args = argsForDelegates(this.req.args);
    return { containerID: this.req.containerID, netns: this.req.netns, ifName, args: typeof claim === 'string' ? [...args, [IPAM_CLAIM_ARG, claim]] : args, capabilityArgs };
  }
}
