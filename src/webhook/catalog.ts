/**
 * What the webhook knows of the cluster, from informers on its own lean API client: every NAD (trimmed
 * to its config and the annotations admission reads), IPAMClaims (names only), nodes' device capacity,
 * and NRI's control-switches ConfigMap. Never a pod: answers come from memory, and the API server sees
 * one list and one watch per kind, however many pods are admitted (multus-admission-controller listed
 * every pod per request and pinned API servers at 100 %).
 */
import { ApiClient } from '../k8s/client.js';
import { Informer } from '../k8s/informer.js';
import type { ApiConfig } from '../k8s/kubeconfig.js';
import { NAD_GROUP, NAD_PLURAL, type NetworkAttachmentDefinition, nadPath, parseNad } from '../k8s/types.js';
import { RESOURCE_NAME_ANNOTATION } from '../meta/selection.js';
import { isObject } from '../util/object.js';
import { type InjectOptions, parseControlSwitches } from './inject.js';
import { type Catalog, NODE_SELECTOR_ANNOTATION } from './validate.js';

export const CONTROL_SWITCHES_CONFIGMAP = 'nri-control-switches';

interface Named {
  metadata: { name: string; namespace?: string; resourceVersion?: string };
}
interface NodeDevices extends Named {
  allocatable: Record<string, number>;
}
interface Switches extends Named {
  config?: string;
}

/** A NAD as admission reads it: config, resourceName and nodeSelector; nothing else (kubectl's last-applied copy, say). */
export function admissionNad(raw: unknown): NetworkAttachmentDefinition {
  const nad = parseNad(raw, 'NetworkAttachmentDefinition from the informer');
  const { name, namespace, resourceVersion } = nad.metadata;
  const annotations: Record<string, string> = {};
  for (const k of [RESOURCE_NAME_ANNOTATION, NODE_SELECTOR_ANNOTATION]) if (nad.metadata.annotations?.[k] !== undefined) annotations[k] = nad.metadata.annotations[k];
  return {
    metadata: { name, namespace, ...(resourceVersion ? { resourceVersion } : {}), ...(Object.keys(annotations).length ? { annotations } : {}) },
    ...(nad.spec?.config !== undefined ? { spec: { config: nad.spec.config } } : {}),
  };
}

function named(raw: unknown, what: string): Named['metadata'] {
  const meta = isObject(raw) && isObject(raw.metadata) ? raw.metadata : undefined;
  if (!meta || typeof meta.name !== 'string') throw new Error(`${what} without metadata.name`);
  return {
    name: meta.name,
    ...(typeof meta.namespace === 'string' ? { namespace: meta.namespace } : {}),
    ...(typeof meta.resourceVersion === 'string' ? { resourceVersion: meta.resourceVersion } : {}),
  };
}

/** A node as admission reads it: the allocatable count of each extended resource (`<domain>/<name>`). */
function nodeDevices(raw: unknown): NodeDevices {
  const metadata = named(raw, 'node');
  const status = isObject(raw) && isObject(raw.status) ? raw.status : {};
  const allocatable: Record<string, number> = {};
  for (const [k, v] of Object.entries(isObject(status.allocatable) ? status.allocatable : {})) {
    if (k.includes('/') && typeof v === 'string' && /^\d+$/.test(v)) allocatable[k] = Number(v);
  }
  return { metadata, allocatable };
}

export interface CatalogOptions {
  /** The webhook's own namespace, where the control-switches ConfigMap lives. */
  namespace: string;
  onError?: (informer: string, err: Error) => void;
}

export class InformerCatalog implements Catalog {
  private readonly nads: Informer<NetworkAttachmentDefinition>;
  private readonly claims: Informer<Named>;
  private readonly nodes: Informer<NodeDevices>;
  private readonly switches: Informer<Switches>;
  readonly api: ApiClient;
  private readonly lookup: ApiClient;
  private readonly fetched = new Map<string, { nad: NetworkAttachmentDefinition; until: number }>();

  constructor(cfg: ApiConfig, opts: CatalogOptions) {
    this.api = new ApiClient(cfg, 30_000, undefined, 'plexus-webhook');
    // Inside an admission request, whose whole budget is the webhook timeout (a few seconds).
    this.lookup = new ApiClient(cfg, 1000, undefined, 'plexus-webhook');
    const onError = (name: string) => (err: Error) => opts.onError?.(name, err);
    this.nads = new Informer(this.api, { path: `/apis/${NAD_GROUP}/v1/${NAD_PLURAL}`, keep: admissionNad, onError: onError('nads') });
    this.claims = new Informer(this.api, { path: `/apis/${NAD_GROUP}/v1alpha1/ipamclaims`, keep: (raw) => ({ metadata: named(raw, 'IPAMClaim') }), onError: onError('ipamclaims') });
    this.nodes = new Informer(this.api, { path: '/api/v1/nodes', keep: nodeDevices, onError: onError('nodes') });
    this.switches = new Informer(this.api, {
      path: `/api/v1/namespaces/${encodeURIComponent(opts.namespace)}/configmaps`,
      query: { fieldSelector: `metadata.name=${CONTROL_SWITCHES_CONFIGMAP}` },
      keep: (raw) => {
        const data = isObject(raw) && isObject(raw.data) ? raw.data : {};
        return { metadata: named(raw, 'ConfigMap'), ...(typeof data['config.json'] === 'string' ? { config: data['config.json'] } : {}) };
      },
      onError: onError('configmap'),
    });
  }

  /** Starts every informer; resolves once each has tried its first list. */
  async start(): Promise<void> {
    await Promise.all([this.nads.start(), this.claims.start(), this.nodes.start(), this.switches.start()]);
  }

  async stop(): Promise<void> {
    await Promise.all([this.nads.stop(), this.claims.stop(), this.nodes.stop(), this.switches.stop()]);
  }

  /** Ready to answer: the NADs are listed (without them every pod with networks would be judged wrongly). */
  get ready(): boolean {
    return this.nads.listed;
  }

  get nadCount(): number {
    return this.nads.list().length;
  }

  /** Objects cached, by kind (the webhook's metrics). */
  sizes(): Record<string, number> {
    return { nads: this.nads.list().length, ipamclaims: this.claims.list().length, nodes: this.nodes.list().length };
  }

  nad(namespace: string, name: string): NetworkAttachmentDefinition | undefined {
    return this.nads.get(namespace, name) ?? this.fetched.get(`${namespace}/${name}`)?.nad;
  }

  /**
   * A NAD applied together with the pod that selects it may reach the pod's admission before the
   * watch brings it: a miss is asked for by name (one GET, never a list), and remembered briefly.
   */
  async fetchNad(namespace: string, name: string): Promise<void> {
    const key = `${namespace}/${name}`;
    const now = Date.now();
    for (const [k, v] of this.fetched) if (v.until < now) this.fetched.delete(k);
    if (this.fetched.has(key)) return;
    try {
      const nad = admissionNad(await this.lookup.get<unknown>(nadPath(namespace, name)));
      this.fetched.set(key, { nad, until: now + 30_000 });
    } catch {
      /* absent (404) or unreachable: the cache's answer stands */
    }
  }

  ipamClaim(namespace: string, name: string): boolean | undefined {
    return this.claims.listed ? this.claims.get(namespace, name) !== undefined : undefined;
  }

  largestAllocatable(resource: string): number | undefined {
    if (!this.nodes.listed) return undefined;
    return Math.max(0, ...this.nodes.list().map((n) => n.allocatable[resource] ?? 0));
  }

  /** The injection options with the ConfigMap's switches and injections over the command line's. */
  injectOptions(base: InjectOptions): InjectOptions & { problems: string[] } {
    const text = this.switches.list()[0]?.config;
    if (!text) return { ...base, problems: [] };
    const { features, injections, problems } = parseControlSwitches(text);
    return { ...base, ...features, userInjections: new Map([...base.userInjections, ...injections]), problems };
  }
}
