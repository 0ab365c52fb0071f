/**
 * deploy/'s node DaemonSet as a platform team applies it, with this node's paths: the real node keeps
 * the runtime's CNI dirs and the kubelet dir under its private directory, so the host paths of the
 * volumes are moved there; nothing else in the manifest changes.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';
import { repoRoot } from '../../src/sim/simnode.js';

interface Volume {
  name: string;
  hostPath?: { path: string; type?: string };
}
interface Container {
  name: string;
  command?: string[];
  imagePullPolicy?: string;
  env?: { name: string; value?: string }[];
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
}
interface Manifest {
  kind: string;
  metadata: { name: string; namespace?: string };
  spec?: { template?: { spec: { containers: Container[]; initContainers?: Container[]; volumes: Volume[] } } };
}

export interface NodeLayout {
  /** Host path in deploy/ → where this node has it. */
  hostPaths: Record<string, string>;
  /** Extra environment of every container (e.g. where the API server is without kube-proxy). */
  env?: Record<string, string>;
  /** Extra read-only host mounts of the main containers, at the same path. */
  extraHostMounts?: string[];
  /**
   * kubelet's root dir when not /var/lib/kubelet: mounted at the same path inside (a device plugin's
   * endpoint is a path kubelet dials on the host) and passed as --kubelet-dir.
   */
  kubeletDir?: string;
  /** The host root the device plugin reads (a simulated SR-IOV host): one volume at /host instead of /host/sys, /host/proc/net, /host/dev. */
  hostRoot?: string;
}

const STOCK_KUBELET_DIR = '/var/lib/kubelet';

/** The manifests of deploy/<file>, moved onto this node's layout, as YAML for kubectl apply. */
export function deployManifest(file: string, layout: NodeLayout, kinds?: string[]): string {
  const docs = parseAllDocuments(readFileSync(join(repoRoot(), 'deploy', file), 'utf8')).map((d) => d.toJS() as Manifest);
  const out: Manifest[] = [];
  for (const doc of docs) {
    if (kinds && !kinds.includes(doc.kind)) continue;
    const pod = doc.spec?.template?.spec;
    if (pod) {
      for (const v of pod.volumes) if (v.hostPath && layout.hostPaths[v.hostPath.path]) v.hostPath.path = layout.hostPaths[v.hostPath.path]!;
      if (layout.kubeletDir) {
        const dir = layout.kubeletDir;
        const moved = (p: string) => (p === STOCK_KUBELET_DIR || p.startsWith(`${STOCK_KUBELET_DIR}/`) ? dir + p.slice(STOCK_KUBELET_DIR.length) : p);
        for (const v of pod.volumes) if (v.hostPath) v.hostPath.path = moved(v.hostPath.path);
        for (const c of [...(pod.initContainers ?? []), ...pod.containers]) {
          for (const m of c.volumeMounts ?? []) m.mountPath = moved(m.mountPath);
          c.command = c.command?.map((a) => (a.startsWith('--kubelet-dir=') ? `--kubelet-dir=${moved(a.slice('--kubelet-dir='.length))}` : a));
        }
      }
      if (layout.hostRoot) {
        const under = new Set(pod.containers.flatMap((c) => (c.volumeMounts ?? []).filter((m) => m.mountPath.startsWith('/host/')).map((m) => m.name)));
        pod.volumes = pod.volumes.filter((v) => !under.has(v.name));
        pod.volumes.push({ name: 'node-host-root', hostPath: { path: layout.hostRoot } });
        for (const c of pod.containers) {
          const had = (c.volumeMounts ?? []).some((m) => under.has(m.name));
          c.volumeMounts = (c.volumeMounts ?? []).filter((m) => !under.has(m.name));
          if (had) c.volumeMounts.push({ name: 'node-host-root', mountPath: '/host' });
        }
      }
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
