/** The parts of Kubernetes objects Plexus reads. */

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

export const NAD_GROUP = 'k8s.cni.cncf.io';
export const NAD_PLURAL = 'network-attachment-definitions';

export function podPath(namespace: string, name: string): string {
  return `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`;
}

export function nadPath(namespace: string, name: string): string {
  return `/apis/${NAD_GROUP}/v1/namespaces/${encodeURIComponent(namespace)}/${NAD_PLURAL}/${encodeURIComponent(name)}`;
}
