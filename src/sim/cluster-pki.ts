import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { kubeadmKubeconfig } from '../k8s/kubeconfig-file.js';
import { type KeyPair, Pki } from '../k8s/pki.js';

/** The cluster's PKI as kubeadm lays it out, and a kubeconfig per component (admin, controller-manager, scheduler, kubelet). */
export function clusterPki(dir: string, nodeName: string, server: string): { ca: string; apiserver: KeyPair; apiserverKubelet: KeyPair; kubeletServing: KeyPair } {
  const pki = new Pki(join(dir, 'pki'), 'kubernetes');
  const caPem = readFileSync(pki.ca.cert);
  const apiserver = pki.issue({
    name: 'apiserver',
    cn: 'kube-apiserver',
    dnsNames: ['localhost', 'kubernetes', 'kubernetes.default', 'kubernetes.default.svc', 'kubernetes.default.svc.cluster.local'],
    ips: ['127.0.0.1', '10.96.0.1'],
    usage: 'server',
  });
  const apiserverKubelet = pki.issue({ name: 'apiserver-kubelet-client', cn: 'kube-apiserver-kubelet-client', orgs: ['system:masters'], usage: 'client' });
  const kubeletServing = pki.issue({ name: 'kubelet', cn: nodeName, dnsNames: [nodeName, 'localhost'], ips: ['127.0.0.1'], usage: 'server' });
  pki.keyPair('sa');
  const users: [string, string, string, string[]][] = [
    ['admin.conf', 'kubernetes-admin', 'kubernetes-admin', ['system:masters']],
    ['controller-manager.conf', 'system:kube-controller-manager', 'system:kube-controller-manager', []],
    ['scheduler.conf', 'system:kube-scheduler', 'system:kube-scheduler', []],
    ['kubelet.conf', `system:node:${nodeName}`, `system:node:${nodeName}`, ['system:nodes']],
  ];
  for (const [file, user, cn, orgs] of users) {
    const kp = pki.issue({ name: file.replace('.conf', ''), cn, orgs, usage: 'client' });
    writeFileSync(join(dir, file), kubeadmKubeconfig(server, caPem, user, { cert: readFileSync(kp.cert), key: readFileSync(kp.key) }), { mode: 0o600 });
  }
  return { ca: pki.ca.cert, apiserver, apiserverKubelet, kubeletServing };
}
