/**
 * `plexusctl webhook` on the host for the real-node tests and the bench, and deploy/'s webhook
 * configurations pointed at it by URL (the real node has no kube-proxy to reach the Service).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';
import { kubeadmKubeconfig } from '../../src/k8s/kubeconfig-file.js';
import type { LocalCluster } from '../../src/sim/cluster.js';
import type { Kubectl } from '../../src/sim/cluster-plexus.js';
import { repoRoot } from '../../src/sim/simnode.js';
import { plexusctlPath } from './plugins.js';

export interface Webhook {
  name: string;
  clientConfig: { service?: unknown; url?: string; caBundle?: string };
}
interface Doc {
  kind: string;
  metadata: { name: string; annotations?: Record<string, string> };
  webhooks?: Webhook[];
}

export const webhookDocs = (): Doc[] => parseAllDocuments(readFileSync(join(repoRoot(), 'deploy', 'plexus-webhook.yaml'), 'utf8')).map((d) => d.toJS() as Doc);

/** deploy/'s namespace, ServiceAccount and RBAC, as YAML for kubectl apply. */
export const webhookRbac = (): string =>
  webhookDocs()
    .filter((d) => ['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding'].includes(d.kind))
    .map((d) => stringify(d))
    .join('---\n');

/** deploy/'s RBAC applied, and a kubeconfig at `path` with a token of the webhook's ServiceAccount. */
export async function webhookCredentials(cluster: LocalCluster, kubectl: Kubectl, path: string): Promise<string> {
  await kubectl(['apply', '-f', '-'], webhookRbac());
  const token = (await kubectl(['create', 'token', 'plexus-webhook', '-n', 'plexus-system', '--duration=2h'])).trim();
  writeFileSync(path, kubeadmKubeconfig(cluster.server, readFileSync(join(cluster.opts.dir, 'pki', 'ca.crt')), 'plexus-webhook', { token }));
  return path;
}

/** deploy/'s two webhook configurations as they are, but calling `url` (…/mutate, …/validate) with this CA. */
export function webhookConfigurations(url: string, caBundle: string): string {
  const configs = webhookDocs().filter((d) => d.kind.endsWith('WebhookConfiguration'));
  for (const c of configs) {
    delete c.metadata.annotations;
    for (const w of c.webhooks!) w.clientConfig = { url: `${url}${w.name.startsWith('pods.mutate') ? '/mutate' : '/validate'}`, caBundle };
  }
  return configs.map((c) => stringify(c)).join('---\n');
}

/** Starts `plexusctl webhook`; resolves with its URL once it serves and its informers have listed. */
export async function startWebhook(args: string[], logs: string[]): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(plexusctlPath, ['webhook', '--address', '127.0.0.1:0', '--cert-check-seconds', '1', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let url: string | undefined;
  child.stderr!.on('data', (c: Buffer) => {
    for (const line of c.toString().split('\n').filter(Boolean)) {
      logs.push(line);
      const m = /"url":"([^"]+)"/.exec(line);
      if (m) url = m[1];
      if (/"msg":"informers started"/.test(line)) child.emit('listed');
    }
  });
  await new Promise<void>((resolve, reject) => {
    child.once('listed', () => resolve());
    child.once('exit', (code) => reject(new Error(`plexusctl webhook exited ${code}: ${logs.join('\n')}`)));
  });
  return { child, url: url! };
}

export async function stopWebhook(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}
