/**
 * The optional self-managed CA (for clusters without cert-manager): a CA and a serving certificate in
 * a directory of the webhook's own (made once, kept across restarts), and the CA written into the
 * `caBundle` of the webhook's own configurations, again whenever someone re-applies them without it.
 * Uses the openssl CLI as src/k8s/pki.ts does.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type ApiClient, ApiError } from '../k8s/client.js';
import { Pki } from '../k8s/pki.js';

export interface SelfManagedCert {
  certFile: string;
  keyFile: string;
  caPem: string;
}

export function selfManagedCertificate(dir: string, dnsNames: string[], ips: string[]): SelfManagedCert {
  const pki = new Pki(dir, 'plexus-webhook-ca');
  const certFile = join(dir, 'serving.crt');
  const keyFile = join(dir, 'serving.key');
  if (!existsSync(certFile) || !existsSync(keyFile)) pki.issue({ name: 'serving', cn: dnsNames[0] ?? ips[0] ?? 'plexus-webhook', dnsNames, ips, usage: 'server' });
  return { certFile, keyFile, caPem: readFileSync(pki.ca.cert, 'utf8') };
}

/** `mutating/<name>` or `validating/<name>` → the configuration's API path. */
export function webhookConfigPath(ref: string): string {
  const [kind, name] = ref.split('/');
  if ((kind !== 'mutating' && kind !== 'validating') || !name) throw new Error(`"${ref}" is not mutating/<name> or validating/<name>`);
  const plural = kind === 'mutating' ? 'mutatingwebhookconfigurations' : 'validatingwebhookconfigurations';
  return `/apis/admissionregistration.k8s.io/v1/${plural}/${encodeURIComponent(name)}`;
}

interface WebhookConfiguration {
  metadata: { resourceVersion?: string };
  webhooks?: { clientConfig?: { caBundle?: string } }[];
}

/** Sets every webhook's caBundle of each configuration; true when one was changed. A conflict is retried. */
export async function publishCaBundle(api: ApiClient, caPem: string, refs: string[]): Promise<boolean> {
  const bundle = Buffer.from(caPem).toString('base64');
  let changed = false;
  for (const ref of refs) {
    const path = webhookConfigPath(ref);
    for (let attempt = 0; attempt < 5; attempt++) {
      const cfg = await api.get<WebhookConfiguration>(path);
      const hooks = cfg.webhooks ?? [];
      if (hooks.every((w) => w.clientConfig?.caBundle === bundle)) break;
      for (const w of hooks) (w.clientConfig ??= {}).caBundle = bundle;
      try {
        await api.put(path, cfg);
        changed = true;
        break;
      } catch (err) {
        if (!(err instanceof ApiError && err.status === 409)) throw err;
      }
    }
  }
  return changed;
}
