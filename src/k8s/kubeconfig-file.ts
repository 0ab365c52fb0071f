/**
 * Kubeconfig files as kubeadm writes them (YAML, one cluster, one user with embedded credentials, one
 * context): for the API double and plexusctl cluster. Tooling only; the reader is kubeconfig.ts.
 */
import { stringify } from 'yaml';

/** A kubeconfig as kubeadm writes it: one cluster, one user with embedded credentials, one context. */
export function kubeadmKubeconfig(server: string, caPem: Buffer, user: string, creds: { cert: Buffer; key: Buffer } | { token: string }, clusterName = 'plexus'): string {
  const u = 'token' in creds ? { token: creds.token } : { 'client-certificate-data': creds.cert.toString('base64'), 'client-key-data': creds.key.toString('base64') };
  // Laid out as kubeadm (Go yaml) does: lists not indented under their key, long base64 on one line.
  return stringify(
    {
      apiVersion: 'v1',
      clusters: [{ cluster: { 'certificate-authority-data': caPem.toString('base64'), server }, name: clusterName }],
      contexts: [{ context: { cluster: clusterName, user }, name: `${user}@${clusterName}` }],
      'current-context': `${user}@${clusterName}`,
      kind: 'Config',
      preferences: {},
      users: [{ name: user, user: u }],
    },
    { indentSeq: false, lineWidth: 0 },
  );
}
