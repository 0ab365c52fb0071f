/**
 * deploy/'s node DaemonSet as a platform team applies it, with this node's paths: the real node keeps
 * the runtime's CNI dirs and the kubelet dir under its private directory, so the host paths of the
 * volumes are moved there; nothing else in the manifest changes.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';
import { repoRoot } from '../../src/rig/simnode.js';

interface Volume {
  name: string;
  hostPath?: { path: string; type?: string };
}
interface Container {
  name: string;
  imagePullPolicy?: string;
  env?: { name: string; value?: string }[];
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
}
interface Manifest {
  kind: string;
  metadata: { name: string; namespace?: string };
  spec?: { template: { spec: { containers: Container[]; initContainers?: Container[]; volumes: Volume[] } } };
}

export interface NodeLayout {
  /** Host path in deploy/ → where this node has it. */
  hostPaths: Record<string, string>;
  /** Extra environment of every container (e.g. where the API server is without kube-proxy). */
  env?: Record<string, string>;
  /** Extra read-only host mounts of the main containers, at the same path. */
  extraHostMounts?: string[];
}

/** The manifests of deploy/<file>, moved onto this node's layout, as YAML for kubectl apply. */
export function deployManifest(file: string, layout: NodeLayout, kinds?: string[]): string {
  const docs = parseAllDocuments(readFileSync(join(repoRoot(), 'deploy', file), 'utf8')).map((d) => d.toJS() as Manifest);
  const out: Manifest[] = [];
  for (const doc of docs) {
    if (kinds && !kinds.includes(doc.kind)) continue;
    const pod = doc.spec?.template.spec;
    if (pod) {
      for (const v of pod.volumes) if (v.hostPath && layout.hostPaths[v.hostPath.path]) v.hostPath.path = layout.hostPaths[v.hostPath.path]!;
      for (const [i, path] of (layout.extraHostMounts ?? []).entries()) {
        pod.volumes.push({ name: `node-extra-${i}`, hostPath: { path } });
        for (const c of pod.containers) (c.volumeMounts ??= []).push({ name: `node-extra-${i}`, mountPath: path, readOnly: true });
      }
      for (const c of [...(pod.initContainers ?? []), ...pod.containers]) {
        // No registry: the image was imported into the node's containerd.
        c.imagePullPolicy = 'Never';
        for (const [name, value] of Object.entries(layout.env ?? {})) (c.env ??= []).push({ name, value });
      }
    }
    out.push(doc);
  }
  return out.map((d) => stringify(d)).join('---\n');
}
