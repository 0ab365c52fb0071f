/**
 * The node daemon's informer caches: its own node's pods (field selector spec.nodeName) and the
 * NetworkAttachmentDefinitions of the namespaces those pods can select from. They answer the plugin
 * core's lookups so that an ADD reads nothing from the API when the pod and its NADs are known. Only
 * those namespaces' NADs are watched (Multus's thick daemon watches every NAD of the cluster on every
 * node): the namespaces of the node's pods, those their annotations name, and the always-watched ones
 * (where clusterNetwork / defaultNetworks NADs live). Of a pod only what the plugin core reads is kept
 * (name, namespace, UID, the two network annotations): 110 pods cost kilobytes, not megabytes.
 */
import { ApiClient, type ApiTraffic } from '../k8s/client.js';
import { Informer } from '../k8s/informer.js';
import type { ApiConfig } from '../k8s/kubeconfig.js';
import { NAD_GROUP, NAD_PLURAL, type NetworkAttachmentDefinition, type Pod, parseNad, parsePod } from '../k8s/types.js';
import type { ObjectLookup } from '../meta/context.js';
import { DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION, RESOURCE_NAME_ANNOTATION, parseDefaultNetworkAnnotation, parseNetworksAnnotation } from '../meta/selection.js';

/** Only these of a pod's annotations are read by the plugin core. */
const POD_ANNOTATIONS = [NETWORKS_ANNOTATION, DEFAULT_NETWORK_ANNOTATION];

function picked(annotations: Record<string, string> | undefined, keys: string[]): Record<string, string> | undefined {
  const out: Record<string, string> = {};
  for (const k of keys) if (annotations?.[k] !== undefined) out[k] = annotations[k];
  return Object.keys(out).length ? out : undefined;
}

/** A pod as the cache keeps it: checked against the schema, then cut to what the plugin core reads. */
export function keptPod(raw: unknown): Pod {
  const pod = parsePod(raw, 'pod from the informer');
  const { name, namespace, uid, resourceVersion } = pod.metadata;
  const annotations = picked(pod.metadata.annotations, POD_ANNOTATIONS);
  const kept: Pod = { metadata: { name, namespace, ...(uid ? { uid } : {}), ...(resourceVersion ? { resourceVersion } : {}), ...(annotations ? { annotations } : {}) } };
  // DRA: the claims a NAD's device can come from (names only), and the node their slices are on.
  const claims = pod.spec?.resourceClaims;
  if (Array.isArray(claims) && claims.length) {
    kept.spec = { ...(pod.spec?.nodeName ? { nodeName: pod.spec.nodeName } : {}), resourceClaims: claims };
    const statuses = pod.status?.resourceClaimStatuses;
    if (Array.isArray(statuses)) kept.status = { resourceClaimStatuses: statuses };
  }
  return kept;
}

/** A NAD as the cache keeps it: its config and resourceName, not (say) kubectl's last-applied copy of it. */
export function keptNad(raw: unknown): NetworkAttachmentDefinition {
  const nad = parseNad(raw, 'NetworkAttachmentDefinition from the informer');
  const { name, namespace, uid, resourceVersion } = nad.metadata;
  const annotations = picked(nad.metadata.annotations, [RESOURCE_NAME_ANNOTATION]);
  return {
    metadata: { name, namespace, ...(uid ? { uid } : {}), ...(resourceVersion ? { resourceVersion } : {}), ...(annotations ? { annotations } : {}) },
    ...(nad.spec?.config !== undefined ? { spec: { config: nad.spec.config } } : {}),
  };
}

/** Whether each informer's list has come in, and the latest failure: what /readyz and the logs tell. */
export interface CacheHealth {
  synced: boolean;
  /** Informers that have not listed yet ("pods", "nads/<namespace>"). */
  unsynced: string[];
  lastError?: string;
}

/** How long a namespace's NADs stay watched once no pod on the node needs them (pods come back). */
export const NAD_NAMESPACE_LINGER_MS = 5 * 60_000;

/** Namespaces a pod's NADs can come from: its own and those its annotations name. */
function namespacesOf(pod: Pod, defaultNamespace: string): string[] {
  const ns = pod.metadata.namespace;
  const annotations = pod.metadata.annotations ?? {};
  const out = [ns];
  try {
    for (const sel of parseNetworksAnnotation(annotations[NETWORKS_ANNOTATION], ns)) out.push(sel.namespace);
  } catch {
    /* an invalid annotation fails the pod's ADD; nothing to watch for it */
  }
  try {
    const sel = parseDefaultNetworkAnnotation(annotations[DEFAULT_NETWORK_ANNOTATION], defaultNamespace);
    if (sel) out.push(sel.namespace);
  } catch {
    /* as above */
  }
  return out;
}

/** One namespace's NAD informer, and since when no pod needs it. */
interface NadWatch {
  informer: Informer<NetworkAttachmentDefinition>;
  /** Resolves once its first list was tried (a failed one is retried by the informer). */
  synced: Promise<void>;
  ready: boolean;
  idleSince?: number;
}

export interface ClusterCacheOptions {
  /**
   * Namespaces whose NADs are always watched (default: kube-system); the first is the conf's
   * `multusNamespace`, where a default-network annotation without a namespace points.
   */
  nadNamespaces?: string[];
  /** See NAD_NAMESPACE_LINGER_MS. */
  lingerMs?: number;
}

export class ClusterCache implements ObjectLookup {
  private stopped = false;
  private readonly nads = new Map<string, NadWatch>();
  private readonly always: Set<string>;
  /** Where a default-network annotation without a namespace points (the first always-watched one). */
  private readonly defaultNamespace: string;
  private readonly lingerMs: number;
  /** Per pod of the node: the annotations its needs were read from, and the namespaces they name. */
  private readonly podNeeds = new Map<string, { source: string; namespaces: string[] }>();
  /** Pods needing each namespace. */
  private readonly users = new Map<string, number>();
  private readonly pods: Informer<Pod>;
  private sweep: NodeJS.Timeout | undefined;

  private constructor(
    private readonly api: ApiClient,
    nodeName: string,
    options: ClusterCacheOptions,
    /** Told of informer failures (the daemon logs them and counts them). */
    private readonly onError?: (what: string, err: Error) => void,
  ) {
    this.always = new Set(options.nadNamespaces ?? ['kube-system']);
    this.defaultNamespace = [...this.always][0] ?? 'kube-system';
    this.lingerMs = options.lingerMs ?? NAD_NAMESPACE_LINGER_MS;
    this.pods = new Informer(api, {
      path: '/api/v1/pods',
      query: { fieldSelector: `spec.nodeName=${nodeName}` },
      keep: keptPod,
      onChange: (pod, gone) => this.podSeen(pod, gone),
      onError: (err) => this.failed('pods', err),
    });
  }

  /**
   * Lists and watches; resolves once the pods and the NADs of the namespaces they need were listed (or
   * their lists tried: a failed list is retried, and until then lookups fall back to API reads).
   * `traffic` counts the informers' requests and watch events (the daemon's API metrics).
   */
  static async start(api: ApiConfig, nodeName: string, options: ClusterCacheOptions = {}, onError?: (what: string, err: Error) => void, traffic?: ApiTraffic): Promise<ClusterCache> {
    const cache = new ClusterCache(new ApiClient(api, 30_000, traffic, 'plexus-daemon/cache'), nodeName, options, onError);
    for (const ns of cache.always) cache.watchNamespace(ns);
    await cache.pods.start();
    cache.sweep = setInterval(() => cache.letGo(), Math.max(1000, Math.min(cache.lingerMs, 60_000)));
    cache.sweep.unref();
    await Promise.all([...cache.nads.values()].map((w) => w.synced));
    return cache;
  }

  private failed(what: string, err: Error): void {
    if (!this.stopped) this.onError?.(what, err);
  }

  /** Watches the NADs of `namespace` (if not yet). */
  private watchNamespace(namespace: string): void {
    if (this.stopped || this.nads.has(namespace)) return;
    const informer = new Informer<NetworkAttachmentDefinition>(this.api, {
      path: `/apis/${NAD_GROUP}/v1/namespaces/${encodeURIComponent(namespace)}/${NAD_PLURAL}`,
      keep: keptNad,
      onError: (err) => this.failed(`nads/${namespace}`, err),
    });
    // A namespace only looked up (no pod of the node names it) lingers from the start.
    const idle = this.always.has(namespace) || this.users.has(namespace) ? undefined : Date.now();
    const watch: NadWatch = { informer, ready: false, synced: Promise.resolve(), ...(idle === undefined ? {} : { idleSince: idle }) };
    // Ready once the first list was tried: a NAD not in the cache is read from the API, so an empty
    // cache costs reads, never a wrong answer.
    watch.synced = informer.start().then(() => void (watch.ready = true));
    this.nads.set(namespace, watch);
  }

  /**
   * A pod of the node appeared, changed or went: the namespaces it needs are counted, per pod, so that an
   * event costs the parse of that one pod's annotations (none when they did not change, as for the status
   * updates every ADD makes), not of every pod on the node.
   */
  private podSeen(pod: Pod, gone: boolean): void {
    if (this.stopped) return;
    const key = `${pod.metadata.namespace}/${pod.metadata.name}`;
    const annotations = pod.metadata.annotations ?? {};
    const source = gone ? undefined : `${annotations[NETWORKS_ANNOTATION] ?? ''}\0${annotations[DEFAULT_NETWORK_ANNOTATION] ?? ''}`;
    const before = this.podNeeds.get(key);
    if (before?.source === source) return;
    const namespaces = source === undefined ? [] : [...new Set(namespacesOf(pod, this.defaultNamespace))];
    if (source === undefined) this.podNeeds.delete(key);
    else this.podNeeds.set(key, { source, namespaces });
    for (const ns of before?.namespaces ?? []) {
      const left = (this.users.get(ns) ?? 1) - 1;
      if (left > 0) this.users.set(ns, left);
      else {
        this.users.delete(ns);
        const entry = this.nads.get(ns);
        if (entry && !this.always.has(ns)) entry.idleSince = Date.now();
      }
    }
    for (const ns of namespaces) {
      this.users.set(ns, (this.users.get(ns) ?? 0) + 1);
      this.watchNamespace(ns);
      delete this.nads.get(ns)?.idleSince;
    }
  }

  /** Stops watching the namespaces no pod has needed for lingerMs (nor looked up since). */
  private letGo(now = Date.now()): void {
    for (const [ns, entry] of this.nads) {
      if (entry.idleSince === undefined || now - entry.idleSince < this.lingerMs) continue;
      this.nads.delete(ns);
      void entry.informer.stop();
    }
  }

  health(): CacheHealth {
    const unsynced = [...(this.pods.listed ? [] : ['pods']), ...[...this.nads].filter(([, w]) => !w.informer.listed).map(([ns]) => `nads/${ns}`)];
    const lastError = [this.pods.lastError && `pods: ${this.pods.lastError}`, ...[...this.nads].map(([ns, w]) => w.informer.lastError && `nads/${ns}: ${w.informer.lastError}`)].find(Boolean);
    return { synced: unsynced.length === 0, unsynced, ...(lastError ? { lastError } : {}) };
  }

  /** What the caches hold now, by namespace/name (GET /debug/cache of the daemon). */
  contents(): { pods: string[]; nads: string[] } {
    const key = (o: { metadata: { namespace?: string; name: string } }) => `${o.metadata.namespace ?? ''}/${o.metadata.name}`;
    return { pods: this.pods.list().map(key).sort(), nads: [...this.nads.values()].flatMap((w) => w.informer.list().map(key)).sort() };
  }

  /** Namespaces whose NADs are watched now. */
  watchedNamespaces(): string[] {
    return [...this.nads.keys()].sort();
  }

  pod(namespace: string, name: string): Pod | undefined {
    return this.pods.get(namespace, name);
  }

  /** A NAD from its namespace's cache; undefined (read it from the API) while that is not listed yet. */
  nad(namespace: string, name: string): NetworkAttachmentDefinition | undefined {
    const watched = this.nads.get(namespace);
    // A namespace no pod of the node named (e.g. a conf's multusNamespace): watched from now on, for as
    // long as it is looked up at least once per linger time.
    if (!watched) this.watchNamespace(namespace);
    else if (watched.idleSince !== undefined) watched.idleSince = Date.now();
    if (!watched?.ready) return undefined;
    return watched.informer.get(namespace, name);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.sweep);
    await Promise.all([this.pods.stop(), ...[...this.nads.values()].map((w) => w.informer.stop())]);
    this.nads.clear();
  }
}
