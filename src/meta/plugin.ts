/**
 * The meta CNI plugin `plexus`. Data path, top to bottom:
 *   stdin → meta conf → pod annotations (runtimeConfig, else API) → plan (cluster network, default
 *   networks, selected NADs, devices) → store record → delegates in order → default route →
 *   network-status + events → the cluster network's result, in the runtime's version.
 * DEL, CHECK, STATUS and GC work from the store record, so they need no API server.
 */
import { appendFileSync, existsSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { type CniArgs, argsForDelegates, getArg } from '../cni/args.js';
import { CniError, ErrorCode } from '../cni/errors.js';
import { CniRuntime, type RuntimeConf } from '../cni/runtime.js';
import type { Plugin, PluginRequest } from '../cni/skel.js';
import { type AnyResult, type Attachment, type NetworkConfigList, type PluginConf, SUPPORTED_VERSIONS, versionAtLeast } from '../cni/types.js';
import { confFiles, parseNetworkConfig } from '../cni/conf.js';
import { nativeAddon } from '../util/native.js';
import { ipFamily, toCanonical } from '../cni/version.js';
import { ApiClient, ApiError, apiFailure } from '../k8s/client.js';
import { inClusterConfig, loadKubeconfig } from '../k8s/kubeconfig.js';
import { podDevicesFromCheckpoint, podDevicesFromKubelet, type PodDevices } from '../k8s/podresources.js';
import { type NetworkAttachmentDefinition, type Pod, nadPath, podPath } from '../k8s/types.js';
import { type LogOptions, type MetaConf, checkNamespaceAllowed, parseMetaConf } from './conf.js';
import { cniDeviceInfoPath, copyDpDeviceInfo, readDeviceInfo, removeDeviceInfo } from './deviceinfo.js';
import { hostApiConfig, inProcessDelegates, objectLookup } from './lookup.js';
import { observed, observer } from './observe.js';
import { waitForAddsInFlight } from './orphans.js';
import { inlineDelegate, loadNetworkFromPath, nadToConfList } from './nad.js';
import { loadNetwork } from '../cni/conf.js';
import {
  DEFAULT_NETWORK_ANNOTATION,
  NETWORKS_ANNOTATION,
  type NetworkSelection,
  RESOURCE_NAME_ANNOTATION,
  parseDefaultNetworkAnnotation,
  parseNetworksAnnotation,
} from './selection.js';
import { type NetworkStatusEntry, chooseGateways, defaultGateways, statusEntry, writeNetworkStatus } from './status.js';
import { type AttachmentRecord, AttachmentStore, type StoredAttachment } from './store.js';

const POD_ANNOTATIONS_CAPABILITY = 'io.kubernetes.cri.pod-annotations';
const LOG_LEVELS = ['panic', 'error', 'verbose', 'debug'] as const;

/**
 * The node daemon serves many invocations with one kubeconfig: it is parsed again when the file changes,
 * and at least every 10 s (the certificate or token files it names may be rotated in place).
 */
let sharedApi: { key: string; loaded: number; client: ApiClient } | undefined;
const SHARED_API_TTL_MS = 10_000;

/** Capabilities a selection may ask for, and the annotation key that asked (NPWG: fail if undeclared). */
const REQUESTED_CAPABILITIES: [keyof NetworkSelection, string, string][] = [
  ['ips', 'ips', 'ips'],
  ['mac', 'mac', 'mac'],
  ['infinibandGUID', 'infinibandGUID', 'infiniband-guid'],
  ['portMappings', 'portMappings', 'portMappings'],
  ['bandwidth', 'bandwidth', 'bandwidth'],
];

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

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Multus `logOptions` rotation by size: past `maxSize` MB (default 100) the file becomes `.1`, older
 * ones shift up, at most `maxBackups` (default 5) are kept. `maxAge` and `compress` are not applied.
 */
export function rotateLog(file: string, opts: LogOptions = {}): void {
  const size = statSync(file, { throwIfNoEntry: false })?.size ?? 0;
  if (size < (opts.maxSize ?? 100) * 1024 * 1024) return;
  const backups = Math.max(opts.maxBackups ?? 5, 0);
  rmSync(`${file}.${backups}`, { force: true });
  for (let i = backups - 1; i >= 1; i--) if (existsSync(`${file}.${i}`)) renameSync(`${file}.${i}`, `${file}.${i + 1}`);
  if (backups > 0) renameSync(file, `${file}.1`);
  else rmSync(file, { force: true });
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

  constructor(readonly req: PluginRequest) {
    this.conf = parseMetaConf(req.conf);
    this.pod = podRefFromArgs(req.args);
    // binDir first, then the runtime's path (Multus order).
    const cniPath = [this.conf.binDir, ...req.path].filter((p, i, all) => p && all.indexOf(p) === i);
    this.runtime = new CniRuntime({ cniPath, cacheDir: null, env: req.env, onStderr: (c) => process.stderr.write(c), inProcess: inProcessDelegates() });
    this.store = new AttachmentStore(join(this.conf.cniDir, 'attachments'));
  }

  /** Multus's logging keys: `logLevel` (panic < error < verbose < debug), `logFile`, `logToStderr`. */
  log(line: string, level: 'error' | 'verbose' | 'debug' = 'verbose'): void {
    if (LOG_LEVELS.indexOf(level) > LOG_LEVELS.indexOf(this.conf.logLevel as (typeof LOG_LEVELS)[number])) return;
    const text = `${new Date().toISOString()} [${level}] ${this.req.containerID || '-'} ${line}\n`;
    if (this.conf.logToStderr) process.stderr.write(`plexus: ${text}`);
    if (this.conf.logFile) {
      try {
        rotateLog(this.conf.logFile, this.conf.logOptions);
        appendFileSync(this.conf.logFile, text);
      } catch {
        /* logging must never fail an attachment */
      }
    }
  }

  /** The API client, if a kubeconfig or in-cluster credentials exist; loaded once, lazily. */
  async apiClient(): Promise<ApiClient | undefined> {
    if (this.api !== null) return this.api;
    const path = this.conf.kubeconfig;
    const stat = path ? statSync(path, { bigint: true, throwIfNoEntry: false }) : undefined;
    const key = stat && `${path}\0${stat.ino}\0${stat.size}\0${stat.mtimeNs}\0${this.conf.apiTimeoutMs}`;
    if (key && sharedApi?.key === key && Date.now() - sharedApi.loaded < SHARED_API_TTL_MS) return (this.api = sharedApi.client);
    // No kubeconfig in the conf: the hosting daemon's credentials, else in-cluster ones (one-shot).
    const cfg = path ? await loadKubeconfig(path) : (hostApiConfig() ?? inClusterConfig(this.req.env));
    this.api = cfg ? new ApiClient(cfg, this.conf.apiTimeoutMs, (verb) => observer()?.apiRequest(verb)) : undefined;
    if (key && this.api) sharedApi = { key, loaded: Date.now(), client: this.api };
    return this.api;
  }

  /** Pod annotations: from the runtime (no API read at all) or from the API. */
  async podAnnotations(): Promise<Record<string, string> | undefined> {
    const fromRuntime = runtimeConfigValue(this.req, POD_ANNOTATIONS_CAPABILITY);
    if (fromRuntime !== undefined && fromRuntime !== null) {
      if (!isObject(fromRuntime)) throw new CniError(ErrorCode.InvalidNetworkConfig, `runtimeConfig "${POD_ANNOTATIONS_CAPABILITY}" must be a map of annotations`, `got ${JSON.stringify(fromRuntime).slice(0, 100)}`);
      // Annotations are strings; one Plexus reads that is something else is refused, never skipped:
      // a pod does not start with fewer networks than it asked for.
      for (const key of [NETWORKS_ANNOTATION, DEFAULT_NETWORK_ANNOTATION]) {
        const v = fromRuntime[key];
        if (v !== undefined && typeof v !== 'string') throw new CniError(ErrorCode.InvalidNetworkConfig, `annotation ${key} must be a string`, `runtimeConfig "${POD_ANNOTATIONS_CAPABILITY}" has ${JSON.stringify(v).slice(0, 100)}`);
      }
      return Object.fromEntries(Object.entries(fromRuntime).filter(([, v]) => typeof v === 'string')) as Record<string, string>;
    }
    // Without an API server (or a pod to ask about) there are no annotations: only the cluster network.
    const pod = await this.getPod();
    return pod?.metadata.annotations ?? {};
  }

  async getPod(): Promise<Pod | undefined> {
    if (this.podObject || !this.pod) return this.podObject;
    this.podObject = objectLookup()?.pod(this.pod.namespace, this.pod.name);
    if (this.podObject) return this.checkUid(this.podObject);
    const api = await this.apiClient();
    if (!api) return undefined;
    try {
      this.podObject = await api.get<Pod>(podPath(this.pod.namespace, this.pod.name));
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
    let nad = objectLookup()?.nad(namespace, name);
    const api = nad ? undefined : await this.apiClient();
    if (api) {
      try {
        nad = await api.get<NetworkAttachmentDefinition>(nadPath(namespace, name));
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

  /** What to attach, in order. `lenient` collects problems instead of failing (DEL reconstruction). */
  async plan(lenient = false): Promise<Plan> {
    const problems: string[] = [];
    const retryable: string[] = [];
    const attempt = async <T>(what: string, fn: () => Promise<T>): Promise<T | undefined> => {
      try {
        return await fn();
      } catch (err) {
        if (!lenient) throw err;
        const text = `${what}: ${(err as Error).message}`;
        problems.push(text);
        // A config that does not decode or is invalid stays so; anything else (API, I/O) may pass.
        if (!(err instanceof CniError && (err.code === ErrorCode.DecodingFailure || err.code === ErrorCode.InvalidNetworkConfig))) retryable.push(text);
        return undefined;
      }
    };
    const podNamespace = this.pod?.namespace ?? 'default';
    // An API failure here leaves the secondaries unknown; attempt() reports it when reconstructing.
    const annotations = await attempt('pod annotations (secondary networks cannot be reconstructed)', () => this.podAnnotations());
    const selections = (await attempt('networks annotation', async () => parseNetworksAnnotation(annotations?.[NETWORKS_ANNOTATION], podNamespace))) ?? [];
    const defaultOverride = await attempt('default-network annotation', async () => parseDefaultNetworkAnnotation(annotations?.[DEFAULT_NETWORK_ANNOTATION], this.conf.multusNamespace));

    const attachments: PlannedAttachment[] = [];
    // The cluster network: the pod's default-network override, inline delegates, or clusterNetwork.
    const cluster = await attempt('cluster network', async () => {
      if (defaultOverride) {
        checkNamespaceAllowed(this.conf, podNamespace, defaultOverride.namespace, defaultOverride.name);
        const { list } = await this.resolveSelection(defaultOverride);
        return { display: `${defaultOverride.namespace}/${defaultOverride.name}`, list, ifName: defaultOverride.interface ?? this.req.ifName };
      }
      if (this.conf.delegates) {
        const list = inlineDelegate(this.conf.delegates[0]!, 0, this.conf);
        return { display: list.name, list, ifName: this.req.ifName };
      }
      return { ...(await this.resolveNamed(this.conf.clusterNetwork!)), ifName: this.req.ifName };
    });
    if (cluster) {
      // NPWG §7.5: the runtime's own runtimeConfig goes to the cluster network only, all of it.
      attachments.push({ network: cluster.display, list: cluster.list, ifName: cluster.ifName, isDefault: true, capabilityArgs: { ...(this.req.conf.runtimeConfig ?? {}) } });
    }
    const extraDelegates = (this.conf.delegates ?? []).slice(1).map((d, i) => inlineDelegate(d, i + 1, this.conf));
    const defaultNetworks = this.conf.systemNamespaces.includes(podNamespace) ? [] : this.conf.defaultNetworks;
    for (const list of extraDelegates) attachments.push({ network: list.name, list, ifName: `net${attachments.length}`, isDefault: false, capabilityArgs: {} });
    for (const name of defaultNetworks) {
      const resolved = await attempt(`default network ${name}`, () => this.resolveNamed(name));
      if (resolved) attachments.push({ network: resolved.display, list: resolved.list, ifName: `net${attachments.length}`, isDefault: false, capabilityArgs: {} });
    }
    for (const sel of selections) {
      const index = attachments.length;
      const planned = await attempt(`network ${sel.namespace}/${sel.name}`, async () => {
        checkNamespaceAllowed(this.conf, podNamespace, sel.namespace, sel.name);
        const { list, resourceName } = await this.resolveSelection(sel)
          .then((r) => (checkPluginNames(r.list), r))
          .catch((err: unknown) => {
            // A NAD that does not parse: which one, and for which interface (NAD errors name only the field).
            const e = CniError.from(err);
            const where = `network ${sel.namespace}/${sel.name} (NAD) as ${sel.interface ?? `net${index}`}`;
            throw new CniError(e.code, e.msg, e.details ? `${e.details}; ${where}` : where);
          });
        checkCapabilities(list, sel);
        const att: PlannedAttachment = { network: `${sel.namespace}/${sel.name}`, list, ifName: sel.interface ?? `net${index}`, isDefault: false, capabilityArgs: selectionCapabilityArgs(sel), selection: sel };
        if (resourceName) att.resourceName = resourceName;
        if (sel.deviceID) att.deviceID = sel.deviceID;
        return att;
      });
      if (planned) attachments.push(planned);
    }
    const aux = await attempt('auxiliary chain', async () => this.auxiliaryChain(attachments[0]?.list.cniVersion));
    if (aux) attachments.push({ network: aux.name, list: aux, ifName: `net${attachments.length}`, isDefault: false, capabilityArgs: {}, auxiliary: true });
    const seen = new Map<string, string>();
    for (const a of attachments) {
      const other = seen.get(a.ifName);
      if (other !== undefined) {
        const err = new CniError(ErrorCode.InvalidNetworkConfig, 'duplicate interface name', `"${a.ifName}" is requested by ${other} and ${a.network}`);
        if (!lenient) throw err;
        problems.push(err.message);
      }
      seen.set(a.ifName, a.network);
    }
    await attempt('devices', () => this.assignDevices(attachments));
    for (const a of attachments) {
      if (a.deviceID) a.capabilityArgs.deviceID = a.deviceID;
      a.deviceInfoFile = cniDeviceInfoPath(this.conf.deviceInfoDir, a.network, this.req.containerID, a.ifName);
      if (declares(a.list, 'CNIDeviceInfoFile')) a.capabilityArgs.CNIDeviceInfoFile = a.deviceInfoFile;
    }
    return { attachments, problems, retryable };
  }

  /**
   * Multus `auxiliaryCNIChainName`: the plugins in `<dir of clusterNetwork>/<chain>/*.conf`, run for
   * every pod after its networks. Multus puts its `passthru` plugin first to give them an empty
   * prevResult; as the runtime, Plexus hands them that empty result directly.
   */
  private auxiliaryChain(cniVersion = '1.0.0'): NetworkConfigList | undefined {
    const chain = this.conf.auxiliaryCNIChainName;
    if (!chain) return undefined;
    const dir = join(dirname(this.conf.clusterNetwork!), chain);
    const plugins = confFiles(dir, ['.conf']).map((f) => parseNetworkConfig(readFileSync(f), f).plugins[0]!);
    if (!plugins.length) return undefined;
    return parseNetworkConfig(Buffer.from(JSON.stringify({ cniVersion, name: chain, plugins })), `auxiliary chain ${dir}`);
  }

  /** resourceName → the pod's device IDs from kubelet; the Nth network of a resource takes the Nth ID. */
  private async assignDevices(attachments: PlannedAttachment[]): Promise<void> {
    const needing = attachments.filter((a) => a.resourceName && !a.deviceID);
    if (!needing.length || !this.pod) return;
    let devices: PodDevices;
    if (existsSync(this.conf.podResourcesSocket)) {
      try {
        devices = await podDevicesFromKubelet(this.conf.podResourcesSocket, this.pod.namespace, this.pod.name, this.conf.apiTimeoutMs);
      } catch (err) {
        throw new CniError(ErrorCode.TryAgainLater, 'kubelet PodResources failed', (err as Error).message);
      }
    } else if (existsSync(this.conf.kubeletCheckpoint)) {
      devices = podDevicesFromCheckpoint(this.conf.kubeletCheckpoint, this.pod.uid);
    } else {
      throw new CniError(ErrorCode.InvalidNetworkConfig, 'no source of device allocations', `neither ${this.conf.podResourcesSocket} nor ${this.conf.kubeletCheckpoint} exists`);
    }
    const taken = new Map<string, number>();
    for (const a of needing) {
      const ids = devices.get(a.resourceName!) ?? [];
      const n = taken.get(a.resourceName!) ?? 0;
      const id = ids[n];
      if (!id) throw new CniError(ErrorCode.InvalidNetworkConfig, `no ${a.resourceName} device left for ${a.network}`, `the pod was allocated ${ids.length} (${ids.join(', ') || 'none'}); request one per network`);
      taken.set(a.resourceName!, n + 1);
      a.deviceID = id;
    }
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
    const rewritten = Array.isArray(raw.plugins)
      ? { ...raw, plugins: a.list.plugins.map(inject), ...(appended ? { loadOnlyInlinedPlugins: true } : {}) }
      : inject(raw as PluginConf);
    return parseNetworkConfig(Buffer.from(JSON.stringify(rewritten)), a.network);
  }

  runtimeConf(ifName: string, capabilityArgs: Record<string, unknown>): RuntimeConf {
    return { containerID: this.req.containerID, netns: this.req.netns, ifName, args: argsForDelegates(this.req.args), capabilityArgs };
  }
}

/**
 * Refused at ADD what DEL would refuse: a plugin `type` or `ipam.type` that is not a plain file name
 * (a path would choose a binary outside the CNI path, and the ADD that ran the rest would never be undone).
 */
function checkPluginNames(list: NetworkConfigList): void {
  for (const p of list.plugins) {
    const ipamType = isObject(p.ipam) ? p.ipam.type : undefined;
    for (const [key, v] of [['type', p.type], ['ipam.type', ipamType]] as const) {
      if (key === 'ipam.type' && v === undefined) continue;
      if (typeof v !== 'string' || !v || /[/\\]/.test(v) || v === '.' || v === '..') {
        throw new CniError(ErrorCode.InvalidNetworkConfig, `invalid plugin ${key} in "${list.name}"`, `${JSON.stringify(v)} must be a plain plugin name`);
      }
    }
  }
}

/** NPWG: a requested ips/mac/guid/portMappings/bandwidth needs a plugin that declares it. */
function checkCapabilities(list: NetworkConfigList, sel: NetworkSelection): void {
  for (const [field, capability, key] of REQUESTED_CAPABILITIES) {
    if (sel[field] !== undefined && !declares(list, capability)) {
      throw new CniError(ErrorCode.InvalidNetworkConfig, `network ${sel.namespace}/${sel.name} cannot take "${key}"`, `no plugin in "${list.name}" declares the "${capability}" capability`);
    }
  }
}

function declares(list: NetworkConfigList, capability: string): boolean {
  return list.plugins.some((p) => p.capabilities?.[capability] === true);
}

function selectionCapabilityArgs(sel: NetworkSelection): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (sel.ips) out.ips = sel.ips;
  if (sel.mac) out.mac = sel.mac;
  if (sel.infinibandGUID) out.infinibandGUID = sel.infinibandGUID;
  if (sel.portMappings) out.portMappings = sel.portMappings;
  if (sel.bandwidth) out.bandwidth = sel.bandwidth;
  return out;
}

/** Names of the interfaces in the pod netns, read there by the addon in one call (no netlink module). */
function interfacesInNetns(netns: string): Set<string> {
  try {
    return new Set(nativeAddon().linkNames(netns));
  } catch (err) {
    throw new CniError(ErrorCode.UnknownContainer, 'cannot open the pod network namespace', `${netns}: ${(err as Error).message}`);
  }
}

function toStored(a: PlannedAttachment, list: NetworkConfigList): StoredAttachment {
  const s: StoredAttachment = { network: a.network, ifName: a.ifName, config: list.bytes.toString(), capabilityArgs: a.capabilityArgs, isDefault: a.isDefault, state: 'planned' };
  if (a.deviceID) s.deviceID = a.deviceID;
  if (a.deviceInfoFile) s.deviceInfoFile = a.deviceInfoFile;
  if (a.selection?.defaultRoute) s.defaultRoute = a.selection.defaultRoute;
  if (a.auxiliary) s.auxiliary = true;
  return s;
}

function storedList(s: StoredAttachment): NetworkConfigList {
  return parseNetworkConfig(Buffer.from(s.config), s.network);
}

/** Moves the default route onto the attachment that asked for it (NPWG `default-route`). */
async function applyDefaultRoute(netns: string, carrier: StoredAttachment, others: StoredAttachment[]): Promise<string[]> {
  const gateways = chooseGateways(carrier.defaultRoute ?? [], carrier.result);
  if (!gateways.length) return [];
  const { NetHandle } = await import('../net/netlink.js');
  const pod = await NetHandle.openPath(netns);
  try {
    for (const family of [...new Set(gateways.map(ipFamily))]) {
      const fam = family === '4' ? 4 : 6;
      const dst = fam === 4 ? '0.0.0.0/0' : '::/0';
      for (const route of await pod.routes(fam)) {
        if (route.dst !== dst || route.table !== 254 || route.ifindex === undefined) continue;
        const dev = (await pod.links()).find((l) => l.index === route.ifindex)?.name;
        if (dev && dev !== carrier.ifName && others.some((o) => o.ifName === dev)) await pod.delRoute({ dst, dev, ...(route.gw ? { gw: route.gw } : {}) });
      }
      for (const gw of gateways.filter((g) => ipFamily(g) === family)) await pod.replaceRoute({ dst, gw, dev: carrier.ifName });
    }
  } finally {
    pod.close();
  }
  return gateways;
}

function statusEntries(record: AttachmentRecord, compat: boolean): NetworkStatusEntry[] {
  const carrier = record.attachments.find((a) => a.defaultRoute !== undefined);
  return record.attachments.filter((a) => !a.auxiliary).map((a) => {
    let defaultRoute: string[] | undefined;
    if (carrier) defaultRoute = a === carrier ? chooseGateways(a.defaultRoute ?? [], a.result) : undefined;
    else if (a.isDefault && a.result) defaultRoute = defaultGateways(toCanonical(a.result));
    const deviceInfo = readDeviceInfo(a.deviceInfoFile);
    return statusEntry({ network: a.network, isDefault: a.isDefault, ...(defaultRoute?.length ? { defaultRoute } : {}), ...(a.result ? { result: a.result } : {}), ...(deviceInfo ? { deviceInfo } : {}) }, a.ifName, compat);
  });
}

/**
 * network-status and one AddedInterface event per attachment, sent together: the pod waits for the
 * slowest, not for their sum. Nothing about reporting (not even a broken kubeconfig) fails the ADD.
 * After the reply (node daemon) the PATCH is retried a few times; a 404 means the pod is gone.
 */
async function reportAdd(inv: MetaInvocation, record: AttachmentRecord, status: string, attempts = 1): Promise<boolean> {
  const api = await inv.apiClient().catch((err: Error) => {
    inv.log(`no API client for network-status: ${err.message}`, 'error');
    if (inv.pod) observer()?.statusWrite?.('failed', `${inv.pod.namespace}/${inv.pod.name}`, err.message);
    return undefined;
  });
  if (!api || !inv.pod) return false;
  const pod = inv.pod;
  const podName = `${pod.namespace}/${pod.name}`;
  const patch = async (): Promise<boolean> => {
    for (let attempt = 1; ; attempt++) {
      try {
        const written = await writeNetworkStatus(api, pod, status);
        if (written === 'stale') inv.log(`network-status of ${podName} dropped: the pod is gone or was replaced`, 'verbose');
        observer()?.statusWrite?.(written, podName);
        return true;
      } catch (err) {
        if (attempt >= attempts) {
          inv.log(`writing network-status of ${podName} failed: ${(err as Error).message}`, 'error');
          observer()?.statusWrite?.('failed', podName, (err as Error).message);
          return false;
        }
        await new Promise((resolve) => setTimeout(resolve, 200 * 4 ** (attempt - 1)));
      }
    }
  };
  const events = record.attachments.filter((a) => !a.auxiliary).map((a) => {
    const ips = a.result ? (toCanonical(a.result).ips ?? []).map((i) => i.address) : [];
    return event(inv, 'Normal', 'AddedInterface', `Add ${a.ifName} [${ips.join(',')}] from ${a.network}`);
  });
  const [written] = await Promise.all([patch(), ...events]);
  return written;
}

async function event(inv: MetaInvocation, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
  const api = await inv.apiClient().catch(() => undefined);
  if (!api || !inv.pod) return;
  const now = new Date().toISOString();
  try {
    await api.post(`/api/v1/namespaces/${encodeURIComponent(inv.pod.namespace)}/events`, {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { generateName: `${inv.pod.name}.`, namespace: inv.pod.namespace },
      involvedObject: { apiVersion: 'v1', kind: 'Pod', name: inv.pod.name, namespace: inv.pod.namespace, ...(inv.pod.uid ? { uid: inv.pod.uid } : {}) },
      reason,
      message,
      type,
      source: { component: 'plexus' },
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    });
  } catch {
    /* events are best effort */
  }
}

function readinessCheck(conf: MetaConf): void {
  if (conf.readinessindicatorfile && !existsSync(conf.readinessindicatorfile)) {
    throw new CniError(ErrorCode.TryAgainLater, 'cluster network not ready', `readiness indicator ${conf.readinessindicatorfile} does not exist yet`);
  }
}

/** A record of this sandbox with nothing attached (yet, or any more). */
function emptyRecord(inv: MetaInvocation): AttachmentRecord {
  const { req, pod } = inv;
  return { containerID: req.containerID, netns: req.netns, ifName: req.ifName, args: req.args, podNamespace: pod?.namespace ?? '', podName: pod?.name ?? '', podUID: pod?.uid ?? '', cniVersion: req.conf.cniVersion, attachments: [] };
}

/** How long a record that lists nothing stays, so that a repeated DEL is still exact. */
const EMPTY_RECORD_TTL_MS = 24 * 3600 * 1000;
const EMPTY_RECORD_PRUNE_EVERY_MS = 3600 * 1000;
/** Longest wait of a DEL for delegates an interrupted ADD of the sandbox left running. */
const ORPHAN_WAIT_MS = 10_000;

/**
 * Runs work after the plugin has answered the runtime. The node daemon passes one (it outlives the
 * request and orders the work before the sandbox's next operation); the one-shot plugin awaits instead.
 */
export type DeferredRunner = (containerID: string, work: () => Promise<void>) => void;

export async function cmdAdd(req: PluginRequest, runner?: DeferredRunner): Promise<AnyResult> {
  const inv = new MetaInvocation(req);
  const record = emptyRecord(inv);
  let attachments: PlannedAttachment[];
  let lists: NetworkConfigList[];
  try {
    if (req.argsError) throw req.argsError;
    readinessCheck(inv.conf);
    attachments = (await inv.plan()).attachments;
    lists = attachments.map((a) => inv.delegateList(a));
  } catch (err) {
    // Nothing was attached. The record says so, so that the DEL the runtime sends after every failed
    // ADD is exact and cheap instead of reconstructing from config that may be what is broken.
    inv.store.write(record);
    throw err;
  }
  record.attachments = attachments.map((a, i) => toStored(a, lists[i]!));
  // Written before the first delegate runs: a crash from here on leaves DEL everything it needs.
  inv.store.write(record);
  let tried = 0;
  try {
    const existing = interfacesInNetns(req.netns);
    for (const [i, a] of attachments.entries()) {
      if (existing.has(a.ifName)) throw new CniError(ErrorCode.InvalidNetworkConfig, `interface "${a.ifName}" already exists in the pod`, `requested for ${a.network} in ${req.netns}`);
      if (a.deviceID && a.resourceName && a.deviceInfoFile) copyDpDeviceInfo(inv.conf.deviceInfoDir, a.resourceName, a.deviceID, a.deviceInfoFile);
      tried = i + 1;
      const chained = a.auxiliary ? { prevResult: { cniVersion: lists[i]!.cniVersion, interfaces: [], ips: [] } } : undefined;
      const result = await observed(a.network, 'ADD', () => inv.runtime.addNetworkList(lists[i]!, inv.runtimeConf(a.ifName, a.capabilityArgs), chained)).catch((err: unknown) => {
        // The delegate's code and message, and which attachment it was: the runtime shows only this.
        const e = CniError.from(err);
        const where = `network ${a.network} (${a.isDefault ? 'the cluster network' : 'NAD'}) as ${a.ifName}`;
        throw new CniError(e.code, e.msg, e.details ? `${e.details}; ${where}` : where);
      });
      record.attachments[i] = { ...record.attachments[i]!, state: 'added', result };
      existing.add(a.ifName);
      inv.log(`ADD ${req.containerID} ${a.network} as ${a.ifName}: ok`);
    }
    const carrier = record.attachments.find((s) => s.defaultRoute !== undefined);
    if (carrier) await applyDefaultRoute(req.netns, carrier, record.attachments.filter((s) => s !== carrier));
  } catch (err) {
    const failing = record.attachments[tried - 1];
    if (failing && failing.state === 'planned') record.attachments[tried - 1] = { ...failing, state: 'failed' };
    inv.log(`ADD failed, rolling back ${tried} attachment(s): ${(err as Error).message}`, 'error');
    await rollback(inv, record, lists, tried);
    await event(inv, 'Warning', 'NetworkAttachFailed', (err as Error).message);
    throw err;
  }
  const status = JSON.stringify(statusEntries(record, inv.conf.multusStatusCompat));
  if (runner && inv.pod && (await inv.apiClient().catch(() => undefined))) {
    // Node daemon: answer now, report right after. The record says the status is owed, so a
    // daemon that dies before the API acknowledges it sends it again when it starts.
    record.pendingStatus = status;
    inv.store.write(record);
    runner(req.containerID, async () => {
      if (await reportAdd(inv, record, status, 3)) inv.store.settlePendingStatus(req.containerID, status);
    });
  } else {
    inv.store.write(record);
    await reportAdd(inv, record, status);
  }
  const cluster = record.attachments[0]?.result;
  if (!cluster) throw new CniError(ErrorCode.Internal, 'cluster network returned no result');
  // In the delegate's version: the skel prints it in the runtime's, as for any plugin.
  return cluster;
}

/**
 * Partial ADD failure: DEL the attachments that were tried, in reverse (the failing one too: it may
 * have done part of its work). The record keeps only what could not be undone, so the runtime's
 * DEL that follows a failed ADD retries exactly that, without reconstructing anything.
 */
async function rollback(inv: MetaInvocation, record: AttachmentRecord, lists: NetworkConfigList[], tried: number): Promise<void> {
  const left: StoredAttachment[] = [];
  for (let i = tried - 1; i >= 0; i--) {
    const s = record.attachments[i]!;
    try {
      await inv.runtime.delNetworkList(lists[i]!, inv.runtimeConf(s.ifName, s.capabilityArgs), { prevResult: s.result });
      removeDeviceInfo(s.deviceInfoFile);
    } catch (err) {
      left.unshift(s);
      inv.log(`rollback DEL of ${s.network} (${s.ifName}) failed: ${(err as Error).message}`, 'error');
    }
  }
  for (const s of record.attachments.slice(tried)) removeDeviceInfo(s.deviceInfoFile);
  inv.store.write({ ...record, attachments: left });
}

export async function cmdDel(req: PluginRequest): Promise<void> {
  const inv = new MetaInvocation(req);
  const read = inv.store.read(req.containerID);
  if (read.kind === 'ok') {
    await delRecord(inv, read.record);
    inv.store.pruneEmpty(EMPTY_RECORD_TTL_MS, EMPTY_RECORD_PRUNE_EVERY_MS);
    return;
  }
  // No usable record: rebuild the plan from config and annotations, DEL every delegate it yields.
  // A delegate whose DEL fails fails this DEL (the runtime retries). What cannot be rebuilt at all (a
  // NAD gone, an annotation that does not parse: most often an ADD refused before it recorded
  // anything) cannot get better by retrying: said in the log and an Event, and the DEL converges.
  const { attachments, problems, retryable } = await inv.plan(true);
  const errors: string[] = [...retryable];
  for (const a of [...attachments].reverse()) {
    try {
      await inv.runtime.delNetworkList(inv.delegateList(a), inv.runtimeConf(a.ifName, a.capabilityArgs), { prevResult: undefined });
      removeDeviceInfo(a.deviceInfoFile);
    } catch (err) {
      errors.push(`DEL ${a.network} (${a.ifName}): ${(err as Error).message}`);
    }
  }
  if (!errors.length) {
    if (problems.length) {
      const message = `DEL without ${read.kind === 'corrupt' ? 'a readable' : 'an'} attachment record: could not rebuild ${problems.join('; ')}; whatever an earlier ADD attached for them is left as it is`;
      inv.log(message, 'error');
      await event(inv, 'Warning', 'NetworkAttachmentAbandoned', message);
    }
    inv.store.write(emptyRecord(inv));
    return;
  }
  errors.push(...problems.filter((p) => !retryable.includes(p)));
  const why = read.kind === 'corrupt' ? `the attachment record is corrupt (${read.reason})` : 'there is no attachment record';
  throw new CniError(ErrorCode.Internal, `DEL: ${why}; deleted ${attachments.length} reconstructed attachment(s), could not clean everything`, errors.join('; '));
}

async function delRecord(inv: MetaInvocation, record: AttachmentRecord): Promise<void> {
  if (record.attachments.some((a) => a.state === 'planned')) {
    // An ADD that never finished: delegates its dead invocation started may still be running.
    const left = await waitForAddsInFlight(record.containerID, ORPHAN_WAIT_MS);
    if (left.length) inv.log(`DEL: processes still adding ${record.containerID} after ${ORPHAN_WAIT_MS} ms: ${left.join(', ')}; deleting anyway`, 'error');
  }
  const errors: string[] = [];
  const abandoned: NonNullable<AttachmentRecord['abandoned']> = [];
  const kept: StoredAttachment[] = [];
  for (const s of [...record.attachments].reverse()) {
    try {
      const rt: RuntimeConf = { containerID: record.containerID, netns: inv.req.netns, ifName: s.ifName, args: argsForDelegates(inv.req.args), capabilityArgs: s.capabilityArgs };
      await observed(s.network, 'DEL', () => inv.runtime.delNetworkList(storedList(s), rt, { prevResult: s.result }));
      removeDeviceInfo(s.deviceInfoFile);
    } catch (err) {
      const reason = (err as Error).message;
      if (s.state === 'failed') {
        // Its ADD failed, the rollback's DEL failed and the runtime's DEL fails the same way: the reason
        // (a config its plugin refuses, a master or netns gone) will not change. Given up on, said where.
        abandoned.push({ network: s.network, ifName: s.ifName, reason, at: new Date().toISOString() });
        inv.log(`DEL: abandoned ${s.network} (${s.ifName}) of ${record.containerID}, whose ADD failed: its DEL keeps failing (${reason}); what it may have left is in netns ${record.netns || '(gone)'} and its plugin's state`, 'error');
        continue;
      }
      kept.unshift(s);
      errors.push(`DEL ${s.network} (${s.ifName}): ${reason}`);
    }
  }
  if (abandoned.length) {
    await event(inv, 'Warning', 'NetworkAttachmentAbandoned', abandoned.map((a) => `${a.network} (${a.ifName}): its ADD failed and its DEL keeps failing: ${a.reason}`).join('; '));
  }
  // NPWG §7.2: try every attachment, then return a final error; the record keeps what to retry.
  if (errors.length) {
    inv.store.write({ ...record, attachments: kept, abandoned: [...(record.abandoned ?? []), ...abandoned] });
    throw new CniError(ErrorCode.Internal, `DEL failed for ${errors.length} of ${record.attachments.length} attachments`, errors.join('; '));
  }
  // The record stays, listing nothing, so that a repeated DEL (containerd sends them) is exact.
  // A status still owed to a pod that is being torn down is owed no more.
  const { pendingStatus: _dropped, ...rest } = record;
  if (record.attachments.length || _dropped !== undefined) inv.store.write({ ...rest, attachments: [], ...(abandoned.length ? { abandoned: [...(record.abandoned ?? []), ...abandoned] } : {}) });
}

export async function cmdCheck(req: PluginRequest): Promise<void> {
  if (req.argsError) throw req.argsError;
  const inv = new MetaInvocation(req);
  const read = inv.store.read(req.containerID);
  if (read.kind !== 'ok') throw new CniError(ErrorCode.UnknownContainer, 'no attachment record for this container', read.kind === 'corrupt' ? read.reason : req.containerID);
  for (const s of read.record.attachments) {
    const list = storedList(s);
    if (list.disableCheck || !versionAtLeast(list.cniVersion, '0.4.0')) continue;
    if (s.state !== 'added') throw new CniError(ErrorCode.UnknownContainer, `${s.network} (${s.ifName}) was never added`);
    await observed(s.network, 'CHECK', () => inv.runtime.checkNetworkList(list, inv.runtimeConf(s.ifName, s.capabilityArgs), { prevResult: s.result }));
  }
}

/** Every network in use: the cluster network plus each distinct delegate config in the store. */
function networksInUse(inv: MetaInvocation, records: AttachmentRecord[]): Map<string, { list: NetworkConfigList; valid: Attachment[] }> {
  const out = new Map<string, { list: NetworkConfigList; valid: Attachment[] }>();
  for (const r of records) {
    for (const s of r.attachments) {
      const entry = out.get(s.config) ?? { list: storedList(s), valid: [] };
      entry.valid.push({ containerID: r.containerID, ifname: s.ifName });
      out.set(s.config, entry);
    }
  }
  return out;
}

function readRecords(inv: MetaInvocation): AttachmentRecord[] {
  return inv.store
    .list()
    .map((id) => inv.store.read(id))
    .flatMap((r) => (r.kind === 'ok' ? [r.record] : []));
}

export async function cmdStatus(req: PluginRequest): Promise<void> {
  const inv = new MetaInvocation(req);
  try {
    readinessCheck(inv.conf);
  } catch (err) {
    throw new CniError(ErrorCode.PluginNotAvailable, 'cluster network not ready', (err as CniError).details);
  }
  const lists = [...networksInUse(inv, readRecords(inv)).values()].map((n) => n.list);
  const clusterNetwork = inv.conf.delegates ? inlineDelegate(inv.conf.delegates[0]!, 0, inv.conf) : (await inv.resolveNamed(inv.conf.clusterNetwork!)).list;
  const seen = new Set<string>();
  for (const list of [clusterNetwork, ...lists]) {
    const key = list.bytes.toString();
    if (seen.has(key)) continue;
    seen.add(key);
    await inv.runtime.statusNetworkList(list);
  }
}

export async function cmdGc(req: PluginRequest): Promise<void> {
  const inv = new MetaInvocation(req);
  const valid = (req.conf['cni.dev/valid-attachments'] ?? []) as Attachment[];
  const keep = new Set(valid.map((a) => `${a.containerID}\u0000${a.ifname}`));
  const errors: string[] = [];
  const kept: AttachmentRecord[] = [];
  for (const id of inv.store.list()) {
    const read = inv.store.read(id);
    if (read.kind !== 'ok') {
      errors.push(`record ${id}: ${read.kind === 'corrupt' ? read.reason : 'vanished'}`);
      continue;
    }
    if (keep.has(`${read.record.containerID}\u0000${read.record.ifName}`)) {
      kept.push(read.record);
      continue;
    }
    try {
      // Stale attachment: usually its netns is gone and plugins release what they hold without it;
      // if the netns is still there, DEL inside it so its interfaces go too.
      const netns = read.record.netns && existsSync(read.record.netns) ? read.record.netns : '';
      const gcInv = new MetaInvocation({ ...req, command: 'DEL', containerID: read.record.containerID, netns, ifName: read.record.ifName, args: read.record.args });
      await delRecord(gcInv, read.record);
      inv.store.delete(id);
    } catch (err) {
      errors.push(`DEL ${id}: ${(err as Error).message}`);
    }
  }
  for (const { list, valid: delegateValid } of networksInUse(inv, kept).values()) {
    try {
      await inv.runtime.gcNetworkList(list, delegateValid);
    } catch (err) {
      errors.push(`GC ${list.name}: ${(err as Error).message}`);
    }
  }
  if (errors.length) throw new CniError(ErrorCode.Internal, `GC had ${errors.length} error(s)`, errors.join('; '));
}

export const metaPlugin: Plugin = {
  refusesBadArgs: true,
  about: 'Plexus meta CNI plugin (NPWG multi-network)',
  supportedVersions: SUPPORTED_VERSIONS,
  add: (req) => cmdAdd(req),
  del: (req) => cmdDel(req),
  check: (req) => cmdCheck(req),
  status: (req) => cmdStatus(req),
  gc: (req) => cmdGc(req),
};

