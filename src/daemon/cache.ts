/**
 * The node daemon's informer caches (client-node 1.x): its own node's pods (field selector
 * spec.nodeName) and NetworkAttachmentDefinitions. They answer the plugin core's lookups so that
 * an ADD reads nothing from the API when the pod and its NADs are known.
 */
import * as k8s from '@kubernetes/client-node';
import { loadKubeconfig } from '../k8s/client.js';
import type { NetworkAttachmentDefinition, Pod } from '../k8s/types.js';
import type { ObjectLookup } from '../meta/lookup.js';

const NAD = { group: 'k8s.cni.cncf.io', version: 'v1', plural: 'network-attachment-definitions' };

/**
 * client-node ignores a kubeconfig user's `tokenFile` (it reads only its own `token-file` key, once);
 * a projected service-account token is rotated by kubelet while the daemon runs for weeks. Its
 * file-token auth provider (what in-cluster config uses) re-reads the file every minute, as
 * client-go does: the current user gets that.
 */
async function rereadTokenFile(kc: k8s.KubeConfig, kubeconfig: string): Promise<void> {
  const { tokenFile } = await loadKubeconfig(kubeconfig);
  const current = kc.getCurrentUser();
  if (!tokenFile || !current || current.authProvider) return;
  kc.users = kc.users.map((user) => (user === current ? { name: user.name, authProvider: { name: 'tokenFile', config: { tokenFile } } } : user));
}

export class ClusterCache implements ObjectLookup {
  private constructor(
    private readonly pods: k8s.Informer<k8s.V1Pod> & k8s.ObjectCache<k8s.V1Pod>,
    private readonly nads: k8s.Informer<k8s.KubernetesObject> & k8s.ObjectCache<k8s.KubernetesObject>,
  ) {}

  /** Lists and watches; resolves once both caches have their first list. */
  static async start(kubeconfig: string | undefined, nodeName: string): Promise<ClusterCache> {
    const kc = new k8s.KubeConfig();
    if (kubeconfig) {
      kc.loadFromFile(kubeconfig);
      await rereadTokenFile(kc, kubeconfig);
    } else kc.loadFromCluster();
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
