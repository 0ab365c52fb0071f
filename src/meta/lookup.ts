/**
 * Where the plugin core looks objects up before asking the API: in the node daemon, its informer
 * caches. Only positive answers count; a miss is asked of the API (the object may be brand new).
 */
import type { InProcessPlugin } from '../cni/runtime.js';
import type { ApiConfig } from '../k8s/kubeconfig.js';
import type { NetworkAttachmentDefinition, Pod } from '../k8s/types.js';

export interface ObjectLookup {
  pod(namespace: string, name: string): Pod | undefined;
  nad(namespace: string, name: string): NetworkAttachmentDefinition | undefined;
}

let current: ObjectLookup | undefined;

export function useObjectLookup(lookup: ObjectLookup | undefined): void {
  current = lookup;
}

export function objectLookup(): ObjectLookup | undefined {
  return current;
}

let inProcess: Record<string, InProcessPlugin> = {};

/** Delegates the node daemon runs in-process instead of exec'ing (same code, no start-up per attachment). */
export function useInProcessDelegates(plugins: Record<string, InProcessPlugin>): void {
  inProcess = plugins;
}

export function inProcessDelegates(): Record<string, InProcessPlugin> {
  return inProcess;
}

let hostApi: ApiConfig | undefined;

/**
 * The API credentials of the process hosting the plugin core, for confs that name no kubeconfig: the
 * node daemon's own (its in-cluster ServiceAccount). A request's forwarded environment is the
 * runtime's, which carries no in-cluster credentials, and must not pick the API server anyway.
 */
export function useHostApi(cfg: ApiConfig | undefined): void {
  hostApi = cfg;
}

export function hostApiConfig(): ApiConfig | undefined {
  return hostApi;
}
