/**
 * The node daemon's informer caches (client-node 1.x): its own node's pods (field selector
 * spec.nodeName) and the NetworkAttachmentDefinitions of the namespaces those pods can select from.
 * They answer the plugin core's lookups so that an ADD reads nothing from the API when the pod and its
 * NADs are known. Only those namespaces' NADs are watched (Multus's thick daemon watches every NAD of
 * the cluster on every node): the namespaces of the node's pods, those their annotations name, and
 * the always-watched ones (where clusterNetwork / defaultNetworks NADs live).
 */
import { readFileSync } from 'node:fs';
import * as k8s from '@kubernetes/client-node';
import type { ApiConfig } from '../k8s/kubeconfig.js';
import { type NetworkAttachmentDefinition, type Pod, parseNad, parsePod } from '../k8s/types.js';
import type { ObjectLookup } from '../meta/context.js';
import { DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION, parseDefaultNetworkAnnotation, parseNetworksAnnotation } from '../meta/selection.js';

const NAD = { group: 'k8s.cni.cncf.io', version: 'v1', plural: 'network-attachment-definitions' };

/** Auth provider name of a token file read at every request (see kubeConfigFor). */
const TOKEN_FILE_PROVIDER = 'plexus-token-file';

const tokenFileAuth: Parameters<k8s.KubeConfig['addAuthenticator']>[0] = {
  isAuthProvider: (user) => (user.authProvider as { name?: unknown } | undefined)?.name === TOKEN_FILE_PROVIDER,
  applyAuthentication: async (user, opts) => {
    const token = readFileSync((user.authProvider as { config: { path: string } }).config.path, 'utf8').trim();
    opts.headers = { ...opts.headers, Authorization: `Bearer ${token}` };
  },
};

/**
 * client-node's KubeConfig for exactly the server and credentials Plexus's own kubeconfig reader
 * resolved, so the informers and the per-pod client can never disagree (client-node's own reader
 * resolves relative paths from the working directory, ignores a user's `tokenFile` and falls back to
 * the first cluster or user when a context names a missing one).
 * A token file is read at every request: a projected service-account token is rotated by kubelet while
 * the daemon runs for weeks, and client-node's file-token provider keeps what it read for 60 s. The
 * informers' requests are few (a list or watch (re)start), so a watch the API server ends after the old
 * token was revoked starts again at once with the new one.
 */
export function kubeConfigFor(cfg: ApiConfig): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  const b64 = (b: Buffer) => b.toString('base64');
  if (cfg.tokenFile && !cfg.token) kc.addAuthenticator(tokenFileAuth);
  const user: k8s.User = {
    name: 'plexus',
    ...(cfg.cert && cfg.key ? { certData: b64(cfg.cert), keyData: b64(cfg.key) } : {}),
    ...(cfg.token
      ? { token: cfg.token }
      : cfg.tokenFile
        ? { authProvider: { name: TOKEN_FILE_PROVIDER, config: { path: cfg.tokenFile } } }
        : cfg.username !== undefined
          ? { username: cfg.username, password: cfg.password ?? '' }
          : {}),
  };
  // client-node refuses plain HTTP unless told to skip TLS checks: there is no TLS to check.
  const cluster: k8s.Cluster = {
    name: 'plexus',
    server: cfg.server,
    skipTLSVerify: cfg.insecureSkipTLSVerify === true || cfg.server.startsWith('http:'),
    ...(cfg.ca ? { caData: b64(cfg.ca) } : {}),
    ...(cfg.serverName ? { tlsServerName: cfg.serverName } : {}),
  };
  kc.loadFromOptions({ clusters: [cluster], users: [user], contexts: [{ name: 'plexus', cluster: 'plexus', user: 'plexus' }], currentContext: 'plexus' });
  return kc;
}

/** Whether each informer's list has come in, and the latest failure: what /readyz and the logs tell. */
export interface CacheHealth {
  synced: boolean;
  /** Informers that have not listed yet ("pods", "nads/<namespace>"). */
  unsynced: string[];
  lastError?: string;
}

type Watched<T extends k8s.KubernetesObject> = k8s.Informer<T> & k8s.ObjectCache<T>;

/** Wait before watching again after the n-th failure in a row (0-based): 1 s, doubling, at most 30 s. */
export function rewatchDelay(failuresInARow: number): number {
  return Math.min(30_000, 1000 * 2 ** Math.min(failuresInARow, 5));
}

/** How long a namespace's NADs stay watched once no pod on the node needs them (pods come back). */
export const NAD_NAMESPACE_LINGER_MS = 5 * 60_000;

/** Namespaces a pod's NADs can come from: its own and those its annotations name. */
function namespacesOf(pod: k8s.V1Pod, defaultNamespace: string): string[] {
  const ns = pod.metadata?.namespace ?? 'default';
  const annotations = pod.metadata?.annotations ?? {};
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

/** One namespace's NAD informer: whether its first list is in, since when no pod needs it. */
interface NadWatch {
  informer: Watched<k8s.KubernetesObject>;
  /** Its list has succeeded once (a failed first list is retried by keepWatching). */
  listed: boolean;
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
  private readonly retries = new Set<NodeJS.Timeout>();
  private readonly nads = new Map<string, NadWatch>();
  private readonly always: Set<string>;
  /** Where a default-network annotation without a namespace points (the first always-watched one). */
  private readonly defaultNamespace: string;
  private readonly lingerMs: number;
  /** Per pod of the node: the annotations its needs were read from, and the namespaces they name. */
  private readonly podNeeds = new Map<string, { source: string; namespaces: string[] }>();
  /** Pods needing each namespace. */
  private readonly users = new Map<string, number>();
  private sweep: NodeJS.Timeout | undefined;
  private podsListed = false;
  private lastError: string | undefined;

  private constructor(
    private readonly kc: k8s.KubeConfig,
    private readonly pods: Watched<k8s.V1Pod>,
    options: ClusterCacheOptions,
    /** Told of informer failures (the daemon logs them and counts them). */
    private readonly onError?: (what: string, err: Error) => void,
  ) {
    this.always = new Set(options.nadNamespaces ?? ['kube-system']);
    this.defaultNamespace = [...this.always][0] ?? 'kube-system';
    this.lingerMs = options.lingerMs ?? NAD_NAMESPACE_LINGER_MS;
  }

  /** Lists and watches; resolves once the pods and the NADs of the namespaces they need are listed. */
  static async start(api: ApiConfig, nodeName: string, options: ClusterCacheOptions = {}, onError?: (what: string, err: Error) => void): Promise<ClusterCache> {
    const kc = kubeConfigFor(api);
    const core = kc.makeApiClient(k8s.CoreV1Api);
    const selector = `spec.nodeName=${nodeName}`;
    let cache: ClusterCache | undefined;
    // makeInformer builds a ListWatch, which is also the object cache; its declared type is only Informer.
    // Its start() resolves even when the list failed: a list is known good only once it returned.
    const pods = k8s.makeInformer(kc, `/api/v1/pods?fieldSelector=${encodeURIComponent(selector)}`, async () => {
      const list = await core.listPodForAllNamespaces({ fieldSelector: selector });
      if (cache) cache.podsListed = true;
      return list;
    }) as Watched<k8s.V1Pod>;
    cache = new ClusterCache(kc, pods, options, onError);
    cache.keepWatching(pods, 'pods');
    await pods.start();
    for (const ns of cache.always) cache.watchNamespace(ns);
    for (const pod of pods.list()) cache.podSeen(pod);
    pods.on('add', (pod) => cache.podSeen(pod));
    pods.on('update', (pod) => cache.podSeen(pod));
    pods.on('delete', (pod) => cache.podSeen(pod, true));
    cache.sweep = setInterval(() => cache.letGo(), Math.max(1000, Math.min(cache.lingerMs, 60_000)));
    cache.sweep.unref();
    await Promise.all([...cache.nads.values()].map((w) => w.synced));
    return cache;
  }

  /**
   * A watch that ends or fails is restarted, until stop(): the cache must not silently go stale. Failing
   * again and again (a namespace the daemon may not read, an API server in trouble) backs off.
   */
  private keepWatching(informer: k8s.Informer<k8s.KubernetesObject> | k8s.Informer<k8s.V1Pod>, what: string, watching = () => true): void {
    let failures = 0;
    let failedNow = false;
    informer.on('error', (err: unknown) => {
      failedNow = true;
      const e = err instanceof Error ? err : new Error(String(err));
      this.lastError = `${what}: ${e.message}`;
      if (!this.stopped) this.onError?.(what, e);
      if (this.stopped || !watching()) return;
      const retry = setTimeout(() => {
        this.retries.delete(retry);
        if (this.stopped || !watching()) return;
        failedNow = false;
        void informer.start().then(
          () => void (failures = failedNow ? failures : 0),
          () => undefined,
        );
      }, rewatchDelay(failures++));
      this.retries.add(retry);
    });
  }

  /** Watches the NADs of `namespace` (if not yet). */
  private watchNamespace(namespace: string): void {
    if (this.stopped || this.nads.has(namespace)) return;
    const custom = this.kc.makeApiClient(k8s.CustomObjectsApi);
    const path = `/apis/${NAD.group}/${NAD.version}/namespaces/${encodeURIComponent(namespace)}/${NAD.plural}`;
    let entry: NadWatch | undefined;
    const informer = k8s.makeInformer(this.kc, path, async () => {
      const list = (await custom.listNamespacedCustomObject({ ...NAD, namespace })) as k8s.KubernetesListObject<k8s.KubernetesObject>;
      if (entry) entry.listed = true;
      return list;
    }) as Watched<k8s.KubernetesObject>;
    // A namespace only looked up (no pod of the node names it) lingers from the start.
    const idle = this.always.has(namespace) || this.users.has(namespace) ? undefined : Date.now();
    entry = { informer, listed: false, ready: false, synced: Promise.resolve(), ...(idle === undefined ? {} : { idleSince: idle }) };
    const watch = entry;
    this.keepWatching(informer, `nads/${namespace}`, () => this.nads.get(namespace) === watch);
    // Ready once the first list was tried (a failed one is retried by keepWatching): a NAD not in the
    // cache is read from the API, so an empty cache costs reads, never a wrong answer.
    watch.synced = informer.start().then(
      () => void (watch.ready = true),
      () => undefined,
    );
    this.nads.set(namespace, watch);
  }

  /**
   * A pod of the node appeared, changed or went: the namespaces it needs are counted, per pod, so that an
   * event costs the parse of that one pod's annotations (none when they did not change, as for the status
   * updates every ADD makes), not of every pod on the node.
   */
  private podSeen(pod: k8s.V1Pod, gone = false): void {
    if (this.stopped) return;
    const key = `${pod.metadata?.namespace ?? ''}/${pod.metadata?.name ?? ''}`;
    const annotations = pod.metadata?.annotations ?? {};
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
    const unsynced = [...(this.podsListed ? [] : ['pods']), ...[...this.nads].filter(([, w]) => !w.listed).map(([ns]) => `nads/${ns}`)];
    return { synced: unsynced.length === 0, unsynced, ...(this.lastError ? { lastError: this.lastError } : {}) };
  }

  /** What the caches hold now, by namespace/name (GET /debug/cache of the daemon). */
  contents(): { pods: string[]; nads: string[] } {
    const key = (o: k8s.KubernetesObject) => `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
    return { pods: this.pods.list().map(key).sort(), nads: [...this.nads.values()].flatMap((w) => w.informer.list().map(key)).sort() };
  }

  /** Namespaces whose NADs are watched now. */
  watchedNamespaces(): string[] {
    return [...this.nads.keys()].sort();
  }

  pod(namespace: string, name: string): Pod | undefined {
    const pod = this.pods.get(name, namespace);
    return pod ? parsePod(pod, `pod ${namespace}/${name} from the informer`) : undefined;
  }

  /** A NAD from its namespace's cache; undefined (read it from the API) while that is not listed yet. */
  nad(namespace: string, name: string): NetworkAttachmentDefinition | undefined {
    const watched = this.nads.get(namespace);
    // A namespace no pod of the node named (e.g. a conf's multusNamespace): watched from now on, for as
    // long as it is looked up at least once per linger time.
    if (!watched) this.watchNamespace(namespace);
    else if (watched.idleSince !== undefined) watched.idleSince = Date.now();
    if (!watched?.ready) return undefined;
    const nad = watched.informer.get(name, namespace);
    return nad ? parseNad(nad, `NetworkAttachmentDefinition ${namespace}/${name} from the informer`) : undefined;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.sweep);
    for (const retry of this.retries) clearTimeout(retry);
    await Promise.all([this.pods.stop(), ...[...this.nads.values()].map((w) => w.informer.stop())]);
    this.nads.clear();
  }
}
