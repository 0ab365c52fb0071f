/**
 * Plexus put on the real node (LocalCluster) as a platform team puts it on a cluster: the CRDs and the
 * RBAC of deploy/ with kubectl, a token of Plexus's ServiceAccount in a YAML kubeconfig, the example
 * NADs. Shared by the real-node tests and `plexusctl demo --cluster`.
 */
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pollUntil } from '../util/poll.js';
import { parseAllDocuments, stringify } from 'yaml';
import { kubeadmKubeconfig } from '../k8s/kubeconfig-file.js';
import { type LocalCluster, componentsDir } from './cluster.js';
import { repoRoot } from './simnode.js';

export type Kubectl = (args: string[], input?: string) => Promise<string>;

/** The built kubectl as the cluster's admin; stdin from `input`, stdout as the result, stderr in the error. */
export function kubectlFor(cluster: LocalCluster): Kubectl {
  const bin = join(componentsDir(), 'kubectl');
  return (args, input) =>
    new Promise((resolve, reject) => {
      const child = execFile(bin, args, { env: { ...process.env, KUBECONFIG: cluster.adminKubeconfig }, maxBuffer: 64 << 20 }, (err, stdout, stderr) =>
        err ? reject(new Error(`kubectl ${args.join(' ')}: ${stderr || err.message}`)) : resolve(stdout),
      );
      if (input !== undefined) child.stdin!.end(input);
    });
}

/**
 * Applies CRD manifests (files or directories) and waits until `resources` (plural.group, comma-joined
 * as kubectl takes them) are served: Established is not yet served, the API server answers 429
 * "storage is (re)initializing" a moment longer.
 */
export async function applyCrds(kubectl: Kubectl, manifests: string[], resources: string[]): Promise<void> {
  for (const m of manifests) await kubectl(['apply', '-f', m]);
  const served = () =>
    kubectl(['get', resources.join(',')]).then(
      () => true,
      () => undefined,
    );
  await pollUntil(`${resources.join(', ')} served`, served, 60_000);
}

/**
 * CRDs, deploy/'s ServiceAccount, ClusterRole, Lease Role and their bindings, a token of that ServiceAccount written to
 * `<dir>/plexus.kubeconfig` (YAML, as kubeadm lays it out), and examples/network-attachment-definitions.yaml.
 * Returns the kubeconfig's path.
 */
export async function preparePlexus(cluster: LocalCluster, kubectl: Kubectl, dir: string, node = cluster.nodeName): Promise<string> {
  await kubectl(['apply', '-f', join(repoRoot(), 'crds')]);
  const rbac = parseAllDocuments(readFileSync(join(repoRoot(), 'deploy', 'plexus-daemon.yaml'), 'utf8'))
    .map((d) => d.toJS() as { kind: string })
    .filter((d) => ['ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding'].includes(d.kind));
  await kubectl(['apply', '-f', '-'], rbac.map((d) => stringify(d)).join('---\n'));
  await kubectl(['wait', '--for=condition=Established', 'crd/network-attachment-definitions.k8s.cni.cncf.io', '--timeout=60s']);
  // Bound to the node, as the DaemonSet's projected token is to its pod on the node: DRA status writes
  // are allowed only for claims allocated on the caller's node (associated-node).
  const token = (await kubectl(['create', 'token', 'plexus', '-n', 'kube-system', '--duration=2h', '--bound-object-kind=Node', `--bound-object-name=${node}`])).trim();
  const kubeconfig = join(dir, 'plexus.kubeconfig');
  writeFileSync(kubeconfig, kubeadmKubeconfig(cluster.server, readFileSync(join(cluster.opts.dir, 'pki', 'ca.crt')), 'plexus', { token }));
  await kubectl(['apply', '-f', join(repoRoot(), 'examples', 'network-attachment-definitions.yaml')]);
  // Pods are admitted only once the controller-manager has made the namespace's default ServiceAccount.
  for (let i = 0; !(await kubectl(['get', 'serviceaccount', 'default', '-n', 'default', '-o', 'name']).catch(() => '')); i++) {
    if (i > 240) throw new Error('the default ServiceAccount of namespace default never appeared: is kube-controller-manager running?');
    await sleep(250);
  }
  return kubeconfig;
}
