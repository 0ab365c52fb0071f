/**
 * The node daemon's informer caches (client-node 1.x): its own node's pods (field selector
 * spec.nodeName) and NetworkAttachmentDefinitions. They answer the plugin core's lookups so that
 * an ADD reads nothing from the API when the pod and its NADs are known.
 */
import { readFileSync } from 'node:fs';
import * as k8s from '@kubernetes/client-node';
import { loadKubeconfig } from '../k8s/client.js';
import type { NetworkAttachmentDefinition, Pod } from '../k8s/types.js';
import type { ObjectLookup } from '../meta/lookup.js';

const NAD = { group: 'k8s.cni.cncf.io', version: 'v1', plural: 'network-attachment-definitions' };

/** Auth provider name of a token file read at every request (see useTokenFile). */
const TOKEN_FILE_PROVIDER = 'plexus-token-file';

const tokenFileAuth: Parameters<k8s.KubeConfig['addAuthenticator']>[0] = {
  isAuthProvider: (user) => (user.authProvider as { name?: unknown } | undefined)?.name === TOKEN_FILE_PROVIDER,
  applyAuthentication: async (user, opts) => {
    const token = readFileSync((user.authProvider as { config: { path: string } }).config.path, 'utf8').trim();
    opts.headers = { ...opts.headers, Authorization: `Bearer ${token}` };
  },
};

/**
 * A projected service-account token is rotated by kubelet while the daemon runs for weeks. client-node
 * ignores a kubeconfig user's `tokenFile` (it reads only its own `token-file` key, once), and its own
 * file-token provider (in-cluster config) keeps what it read for 60 s, one token for all users. The
 * informers' requests are few (a list or watch (re)start), so the file is read at each: a watch the
 * API server ends after the old token was revoked starts again at once with the new one.
 */
async function useTokenFile(kc: k8s.KubeConfig, kubeconfig: string | undefined): Promise<void> {
  const current = kc.getCurrentUser();
  const inCluster = (current?.authProvider as { name?: unknown; config?: { tokenFile?: unknown } } | undefined)?.config?.tokenFile;
  const tokenFile = kubeconfig ? (await loadKubeconfig(kubeconfig)).tokenFile : typeof inCluster === 'string' ? inCluster : undefined;
  if (!tokenFile || !current) return;
  kc.addAuthenticator(tokenFileAuth);
  // The user keeps its other credentials (a client certificate), not a token read once.
  const { token: _once, ...rest } = current;
  kc.users = kc.users.map((user) => (user === current ? { ...rest, authProvider: { name: TOKEN_FILE_PROVIDER, config: { path: tokenFile } } } : user));
}

export class ClusterCache implements ObjectLookup {
  private constructor(
    private readonly pods: k8s.Informer<k8s.V1Pod> & k8s.ObjectCache<k8s.V1Pod>,
    private readonly nads: k8s.Informer<k8s.KubernetesObject> & k8s.ObjectCache<k8s.KubernetesObject>,
  ) {}

  /** Lists and watches; resolves once both caches have their first list. */
  static async start(kubeconfig: string | undefined, nodeName: string): Promise<ClusterCache> {
    const kc = new k8s.KubeConfig();
    if (kubeconfig) kc.loadFromFile(kubeconfig);
    else kc.loadFromCluster();
    await useTokenFile(kc, kubeconfig);
    const core = kc.makeApiClient(k8s.CoreV1Api);
    const custom = kc.makeApiClient(k8s.CustomObjectsApi);
    const selector = `spec.nodeName=${nodeName}`;
    const pods = k8s.makeInformer(kc, `/api/v1/pods?fieldSelector=${encodeURIComponent(selector)}`, () => core.listPodForAllNamespaces({ fieldSelector: selector }));
    const nads = k8s.makeInformer(kc, `/apis/${NAD.group}/${NAD.version}/${NAD.plural}`, () => custom.listClusterCustomObject(NAD) as Promise<k8s.KubernetesListObject<k8s.KubernetesObject>>);
    // makeInformer builds a ListWatch, which is also the object cache; its declared type is only Informer.
    const cache = new ClusterCache(pods as typeof pods & k8s.ObjectCache<k8s.V1Pod>, nads as typeof nads & k8s.ObjectCache<k8s.KubernetesObject>);
    // A watch that ends or fails is restarted, until stop(): the cache must not silently go stale.
    for (const informer of [pods, nads] as k8s.Informer<k8s.KubernetesObject>[]) {
      informer.on('error', () => {
        if (cache.stopped) return;
        const retry = setTimeout(() => {
          cache.retries.delete(retry);
          if (!cache.stopped) void informer.start().catch(() => undefined);
        }, 1000);
        cache.retries.add(retry);
      });
    }
    await Promise.all([pods.start(), nads.start()]);
    return cache;
  }

  private stopped = false;
  private readonly retries = new Set<NodeJS.Timeout>();

  pod(namespace: string, name: string): Pod | undefined {
    return this.pods.get(name, namespace) as Pod | undefined;
  }

  nad(namespace: string, name: string): NetworkAttachmentDefinition | undefined {
    return this.nads.get(name, namespace) as NetworkAttachmentDefinition | undefined;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const retry of this.retries) clearTimeout(retry);
    await Promise.all([this.pods.stop(), this.nads.stop()]);
  }
}
