/** The parts of Kubernetes objects Plexus reads, and their parsers (src/k8s/schemas.ts). */
import { ErrorCode } from '../cni/errors.js';
import { validate } from '../cni/validate.js';

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
}

export interface Pod {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta & { namespace: string };
  spec?: { nodeName?: string; [key: string]: unknown };
  status?: Record<string, unknown>;
}

export interface NetworkAttachmentDefinition {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta & { namespace: string };
  spec?: { config?: string };
}

/** A pod as the API server (or a cache of it) gave it: checked, not cast; `what` names it in the error. */
export function parsePod(value: unknown, what: string): Pod {
  return validate<Pod>('pod', value, ErrorCode.InvalidNetworkConfig, what);
}

export function parseNad(value: unknown, what: string): NetworkAttachmentDefinition {
  return validate<NetworkAttachmentDefinition>('nad', value, ErrorCode.InvalidNetworkConfig, what);
}

export const NAD_GROUP = 'k8s.cni.cncf.io';
export const NAD_PLURAL = 'network-attachment-definitions';

export function podPath(namespace: string, name: string): string {
  return `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`;
}

export function nadPath(namespace: string, name: string): string {
  return `/apis/${NAD_GROUP}/v1/namespaces/${encodeURIComponent(namespace)}/${NAD_PLURAL}/${encodeURIComponent(name)}`;
}
