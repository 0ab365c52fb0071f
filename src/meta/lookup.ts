/**
 * Where the plugin core looks objects up before asking the API: in the node daemon, its informer
 * caches. Only positive answers count; a miss is asked of the API (the object may be brand new).
 */
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
