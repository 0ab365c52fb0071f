/**
 * What the process hosting the plugin core gives it, passed in explicitly from the entry point: the
 * one-shot plugin gives nothing; the node daemon its informer caches, its in-process delegates, its
 * metrics, its own API credentials and one API client cache for all its requests.
 */
import type { InProcessPlugin } from '../cni/runtime.js';
import type { ApiClient } from '../k8s/client.js';
import type { ApiConfig } from '../k8s/kubeconfig.js';
import type { NetworkAttachmentDefinition, Pod } from '../k8s/types.js';
import type { PolicySandbox } from '../policy/model.js';

/** Where objects are looked up before asking the API (the daemon's informer caches). Only positive answers count. */
export interface ObjectLookup {
  pod(namespace: string, name: string): Pod | undefined;
  nad(namespace: string, name: string): NetworkAttachmentDefinition | undefined;
}

/** What the plugin core reports to whoever watches it: in the node daemon, its metrics. */
export interface Observer {
  /** One delegate network's ADD/DEL/CHECK, in seconds. */
  delegate(network: string, command: string, seconds: number, ok: boolean): void;
  /** One request to the API server: its method and path (with the query). */
  apiRequest(method: string, path: string): void;
  /** A pod's network-status write: stored, failed for good, or dropped as stale (the pod was replaced). */
  statusWrite?(result: 'ok' | 'failed' | 'stale', pod: string, detail?: string): void;
}

/**
 * One kubeconfig's client shared by the daemon's requests: parsed again when the file changes, and at
 * least every 10 s (the certificate or token files it names may be rotated in place).
 */
export class ApiClientCache {
  private entry: { key: string; loaded: number; client: ApiClient } | undefined;
  constructor(private readonly ttlMs = 10_000) {}

  get(key: string): ApiClient | undefined {
    return this.entry?.key === key && Date.now() - this.entry.loaded < this.ttlMs ? this.entry.client : undefined;
  }

  set(key: string, client: ApiClient): void {
    this.entry = { key, loaded: Date.now(), client };
  }
}

/** Network policy of the hosting daemon: a sandbox's rules are in place before its ADD returns. */
export interface PolicyHook {
  attached(sandbox: PolicySandbox): Promise<void>;
  detached(containerID: string): void;
}

export interface MetaContext {
  lookup?: ObjectLookup;
  /** Delegates run inside the process instead of exec'd (same code, no start-up per attachment). */
  inProcess?: Record<string, InProcessPlugin>;
  observer?: Observer;
  /**
   * The hosting process's API credentials, for confs that name no kubeconfig (a DaemonSet install):
   * a request's forwarded environment is the runtime's, which carries none and must not pick the API server.
   */
  hostApi?: ApiConfig;
  apiCache?: ApiClientCache;
  /** Set in every delegate's environment by the hosting daemon (its socket, for the IPAM shim). */
  delegateEnv?: Record<string, string>;
  policy?: PolicyHook;
}

/** Runs `work` for one delegate network and reports how long it took. */
export async function observed<T>(observer: Observer | undefined, network: string, command: string, work: () => Promise<T>): Promise<T> {
  if (!observer) return work();
  const start = process.hrtime.bigint();
  let ok = false;
  try {
    const out = await work();
    ok = true;
    return out;
  } finally {
    observer.delegate(network, command, Number(process.hrtime.bigint() - start) / 1e9, ok);
  }
}
