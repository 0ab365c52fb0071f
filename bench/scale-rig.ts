/**
 * The scale bench's cluster: the real control plane of `.tools/` (LocalCluster without a kubelet),
 * KWOK keeping N simulated nodes Ready and their pods Running, 1000 namespaces each with a NAD, 100
 * MultiNetworkPolicies, 110 pods a node (created straight onto their node, as the scheduler would bind
 * them) carrying network-status on the NAD's network, and IPAM chunks owned by every node. Node daemons
 * (Plexus now, Plexus "before", Multus thick) run as host processes for M of the nodes, each with its
 * own node-bound token of deploy/'s ServiceAccount.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';
import { ApiClient, ApiError } from '../src/k8s/client.js';
import { kubeadmKubeconfig } from '../src/k8s/kubeconfig-file.js';
import { loadKubeconfig } from '../src/k8s/kubeconfig.js';
import { type LocalCluster } from '../src/sim/cluster.js';
import { type Kubectl, applyCrds } from '../src/sim/cluster-plexus.js';
import { repoRoot } from '../src/sim/simnode.js';

export const NAMESPACES = 1000;
export const POLICIES = 100;
export const PODS_PER_NODE = 110;
export const KWOK = join(repoRoot(), '.tools', 'kwok', 'v0.8.0', 'kwok');
export const MULTUS = join(repoRoot(), '.tools', 'multus', 'v4.3.0');

export const nodeName = (n: number) => `scale-node-${String(n).padStart(4, '0')}`;
export const nsName = (i: number) => `scale-${String(i).padStart(4, '0')}`;

/** Runs `jobs` with at most `width` at once. */
export async function inParallel<T>(items: T[], width: number, job: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) await job(items[next++]!);
    }),
  );
}

/** A create that tolerates an object already there (a bench resumed). */
async function create(api: ApiClient, path: string, body: object): Promise<void> {
  await api.post(path, body).catch((err: unknown) => {
    if (!(err instanceof ApiError && err.status === 409)) throw err;
  });
}

export class ScaleRig {
  admin!: ApiClient;
  private kwok: ChildProcess | undefined;
  nodes = 0;

  constructor(
    readonly cluster: LocalCluster,
    readonly kubectl: Kubectl,
    readonly dir: string,
  ) {}

  async setUp(): Promise<void> {
    this.admin = new ApiClient(await loadKubeconfig(this.cluster.adminKubeconfig), 60_000);
    await applyCrds(this.kubectl, [join(repoRoot(), 'crds')], ['network-attachment-definitions.k8s.cni.cncf.io', 'multi-networkpolicies.k8s.cni.cncf.io', 'ipchunks.ipam.plexus.network']);
    // deploy/'s RBAC for the daemons (not its DaemonSet: the daemons run as host processes here).
    const rbac = parseAllDocuments(readFileSync(join(repoRoot(), 'deploy', 'plexus-daemon.yaml'), 'utf8'))
      .map((d) => d.toJS() as { kind: string })
      .filter((d) => ['ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding'].includes(d.kind));
    await this.kubectl(['apply', '-f', '-'], rbac.map((d) => stringify(d)).join('---\n'));
    await inParallel(
      Array.from({ length: NAMESPACES }, (_, i) => i),
      16,
      async (i) => {
        await create(this.admin, '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: nsName(i), labels: { team: `t${i % 10}` } } });
        const config = JSON.stringify({ cniVersion: '1.0.0', name: 'data', type: 'macvlan', master: 'eth1', ipam: { type: 'plexus-ipam', range: `10.${100 + (i % 100)}.0.0/16` } });
        await create(this.admin, `/apis/k8s.cni.cncf.io/v1/namespaces/${nsName(i)}/network-attachment-definitions`, {
          apiVersion: 'k8s.cni.cncf.io/v1',
          kind: 'NetworkAttachmentDefinition',
          metadata: { name: 'data', namespace: nsName(i) },
          spec: { config },
        });
      },
    );
    // 100 policies, in the first 100 namespaces: app=a pods take ingress on `data` from app=b pods of
    // their namespace, and from app=c pods of the namespaces of their team.
    await inParallel(
      Array.from({ length: POLICIES }, (_, i) => i),
      16,
      (i) =>
        create(this.admin, `/apis/k8s.cni.cncf.io/v1beta1/namespaces/${nsName(i)}/multi-networkpolicies`, {
          apiVersion: 'k8s.cni.cncf.io/v1beta1',
          kind: 'MultiNetworkPolicy',
          metadata: { name: 'ingress-a', namespace: nsName(i), annotations: { 'k8s.v1.cni.cncf.io/policy-for': 'data' } },
          spec: {
            podSelector: { matchLabels: { app: 'a' } },
            ingress: [{ from: [{ podSelector: { matchLabels: { app: 'b' } } }, { namespaceSelector: { matchLabels: { team: `t${i % 10}` } }, podSelector: { matchLabels: { app: 'c' } } }] }],
          },
        }),
    );
    // Pods are admitted once the controller-manager has made each namespace's default ServiceAccount.
    for (let i = 0; ; i++) {
      const sas = await this.admin.get<{ items: unknown[] }>('/api/v1/serviceaccounts?fieldSelector=metadata.name%3Ddefault&resourceVersion=0');
      if (sas.items.length >= NAMESPACES) break;
      if (i > 600) throw new Error(`only ${sas.items.length} namespaces have their default ServiceAccount`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  /** KWOK, managing the nodes this rig creates (annotated kwok.x-k8s.io/node=fake). */
  startKwok(): void {
    const log = join(this.dir, 'kwok.log');
    this.kwok = spawn(
      KWOK,
      [
        // First: kwok reads --config before its other flags and stops at the first flag it does not know there.
        `--config=${join(KWOK, '..', 'stages.yaml')}`,
        '--kubeconfig',
        this.cluster.adminKubeconfig,
        '--manage-all-nodes=false',
        '--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake',
        '--cidr=10.0.0.0/8',
        '--node-ip=127.0.0.2',
        '--node-lease-duration-seconds=40',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    this.kwok.stderr!.on('data', (c: Buffer) => writeFileSync(log, c, { flag: 'a' }));
  }

  stopKwok(): void {
    this.kwok?.kill('SIGTERM');
  }

  kwokPid(): number | undefined {
    return this.kwok?.pid;
  }

  /** Grows the cluster to `n` nodes, each with its 110 pods and a chunk of its namespace's pool. */
  async growTo(n: number, onProgress: (msg: string) => void): Promise<void> {
    const fresh = Array.from({ length: Math.max(0, n - this.nodes) }, (_, i) => this.nodes + i);
    await inParallel(fresh, 16, (k) =>
      create(this.admin, '/api/v1/nodes', {
        apiVersion: 'v1',
        kind: 'Node',
        metadata: { name: nodeName(k), annotations: { 'kwok.x-k8s.io/node': 'fake', 'node.alpha.kubernetes.io/ttl': '0' }, labels: { type: 'kwok', 'kubernetes.io/hostname': nodeName(k) } },
        spec: { taints: [{ key: 'kwok.x-k8s.io/node', value: 'fake', effect: 'NoSchedule' }] },
        status: { allocatable: { cpu: '64', memory: '256Gi', pods: '110' }, capacity: { cpu: '64', memory: '256Gi', pods: '110' } },
      }),
    );
    const pods = fresh.flatMap((k) => Array.from({ length: PODS_PER_NODE }, (_, j) => ({ k, j })));
    let done = 0;
    const started = Date.now();
    await inParallel(pods, 48, async ({ k, j }) => {
      const i = k * PODS_PER_NODE + j;
      const ns = nsName(i % NAMESPACES);
      const ip = `10.${100 + ((i % NAMESPACES) % 100)}.${(i >> 8) & 255}.${i & 255}`;
      await create(this.admin, `/api/v1/namespaces/${ns}/pods`, podObject(ns, `p-${k}-${j}`, nodeName(k), ['a', 'b', 'c', 'd'][j % 4]!, ip));
      if (++done % 5000 === 0) onProgress(`${done} of ${pods.length} pods created (${Math.round(done / ((Date.now() - started) / 1000))}/s)`);
    });
    // One chunk per node of each of 4 pools: the IPAM housekeeping's lists grow with the cluster.
    await inParallel(fresh, 16, async (k) => {
      for (let p = 0; p < 4; p++) {
        await create(this.admin, '/apis/ipam.plexus.network/v1alpha1/ipchunks', {
          apiVersion: 'ipam.plexus.network/v1alpha1',
          kind: 'IPChunk',
          metadata: { name: `p-scale${p}-${k.toString(16)}`, labels: { 'ipam.plexus.network/pool': `p-scale${p}` } },
          spec: { pool: `p-scale${p}`, index: String(k), node: nodeName(k), cidr: `10.${200 + p}.${k >> 4}.${(k & 15) * 16}/28` },
        });
      }
    });
    this.nodes = Math.max(this.nodes, n);
  }

  /** A kubeconfig with a token of deploy/'s ServiceAccount bound to the node, as the DaemonSet's projected token is. */
  async nodeCredential(node: string): Promise<{ kubeconfig: string; token: string }> {
    const token = (await this.kubectl(['create', 'token', 'plexus', '-n', 'kube-system', '--duration=6h', '--bound-object-kind=Node', `--bound-object-name=${node}`])).trim();
    const kubeconfig = join(this.dir, `${node}.kubeconfig`);
    writeFileSync(kubeconfig, kubeadmKubeconfig(this.cluster.server, readFileSync(join(this.cluster.opts.dir, 'pki', 'ca.crt')), 'plexus', { token }));
    return { kubeconfig, token };
  }

  /** Churn on nodes without a daemon: pods no policy names (app=churn) created and deleted. */
  async churn(seconds: number, firstNode: number, podsPerSecond: number): Promise<number> {
    const end = Date.now() + seconds * 1000;
    let made = 0;
    while (Date.now() < end) {
      const tick = Date.now();
      const batch = Array.from({ length: podsPerSecond }, () => made++);
      await inParallel(batch, 16, async (i) => {
        const ns = nsName(i % NAMESPACES);
        const node = nodeName(firstNode + (i % Math.max(1, this.nodes - firstNode)));
        await create(this.admin, `/api/v1/namespaces/${ns}/pods`, podObject(ns, `churn-${i}`, node, 'churn', `10.99.${(i >> 8) & 255}.${i & 255}`));
        if (i >= podsPerSecond) await this.admin.delete(`/api/v1/namespaces/${nsName((i - podsPerSecond) % NAMESPACES)}/pods/churn-${i - podsPerSecond}`).catch(() => undefined);
      });
      await new Promise((r) => setTimeout(r, Math.max(0, 1000 - (Date.now() - tick))));
    }
    return made;
  }

  /** Where a daemon of the rig keeps its files. */
  nodeDir(node: string, which: string): string {
    const d = join(this.dir, which, node);
    mkdirSync(d, { recursive: true });
    return d;
  }
}

function podObject(ns: string, name: string, node: string, app: string, ip: string): object {
  const status = [
    { name: 'kwok', interface: 'eth0', ips: [ip.replace(/^10\.\d+/, '10.244')], default: true },
    { name: `${ns}/data`, interface: 'net1', ips: [ip] },
  ];
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: ns, labels: { app }, annotations: { 'k8s.v1.cni.cncf.io/networks': 'data', 'k8s.v1.cni.cncf.io/network-status': JSON.stringify(status) } },
    spec: {
      nodeName: node,
      automountServiceAccountToken: false,
      tolerations: [{ operator: 'Exists' }],
      containers: [{ name: 'c', image: 'registry.invalid/fake:1', ports: [{ name: 'web', containerPort: 8080 }] }],
    },
  };
}
