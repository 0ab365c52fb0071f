/**
 * Pod start with an SR-IOV VF on the real node, through DRA against through the device plugin, in one
 * run (#19): kube-apiserver, scheduler, controller-manager, kubelet on containerd 2.x (CDI applied);
 * a simulated host of 2 PFs with 8 VFs each (real netdevs); the device plugin on one PF's VFs and the
 * DRA driver on the other's, side by side; Plexus in daemon mode (the default install) runs sriov in
 * process. Each round creates 8 pods at once, each with one VF on a sriov NAD; the kinds alternate
 * over the rounds. A pod's latency is from the create request to its Ready condition seen by a watch.
 * Run: npm run bench (writes docs/benchmarks-dra.md)
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiClient } from '../src/k8s/client.js';
import { loadKubeconfig } from '../src/k8s/kubeconfig.js';
import { LocalCluster } from '../src/sim/cluster.js';
import { kubectlFor, preparePlexus } from '../src/sim/cluster-plexus.js';
import { PAUSE_IMAGE, containerd2Dir } from '../src/sim/containerd.js';
import { FakeKernel } from '../src/sim/fakekernel.js';
import { repoRoot } from '../src/sim/simnode.js';
import { startDaemon, stopDaemon } from '../test/support/daemon.js';
import { claimTemplate, deviceClass, list, resourceNad } from '../test/support/dra.js';
import { plexusctlPath } from '../test/support/plugins.js';
import { besidePrevious } from './history.js';
import { quantile } from './stats.js';

const VFS = 8;
const ROUNDS = Number(process.env.BENCH_DRA_ROUNDS ?? 3);
const PF_DP = 'plxbdp0';
const PF_DRA = 'plxbdr0';
const NAMESPACE = 'default';
type Kind = 'device plugin' | 'DRA';

type PodJson = { metadata: { name: string }; status?: { conditions?: { type: string; status: string }[] } };

function linkExists(name: string): boolean {
  try {
    execFileSync('ip', ['link', 'show', name], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** One round of `count` pods of one kind at once: each pod's create-to-Ready seconds, then all deleted and their VFs back on the host. */
async function round(api: ApiClient, kubectl: ReturnType<typeof kubectlFor>, kind: Kind, label: string, count: number): Promise<number[]> {
  const pods = Array.from({ length: count }, (_, i) => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: `${label}-${i}`, namespace: NAMESPACE, labels: { bench: label }, annotations: { 'k8s.v1.cni.cncf.io/networks': kind === 'DRA' ? 'bench-dra' : 'bench-dp' } },
    spec: {
      terminationGracePeriodSeconds: 0,
      ...(kind === 'DRA' ? { resourceClaims: [{ name: 'vf', resourceClaimTemplateName: 'bench-vf' }] } : {}),
      containers: [
        {
          name: 'c',
          image: PAUSE_IMAGE,
          imagePullPolicy: 'Never',
          resources: kind === 'DRA' ? { claims: [{ name: 'vf' }] } : { limits: { 'intel.com/x710_dp': '1' } },
        },
      ],
    },
  }));
  const ready = new Map<string, number>();
  const listed = await api.get<{ metadata: { resourceVersion: string } }>(`/api/v1/namespaces/${NAMESPACE}/pods?labelSelector=bench%3D${label}`);
  const watch = api.watch(`/api/v1/namespaces/${NAMESPACE}/pods?watch=1&labelSelector=bench%3D${label}&resourceVersion=${listed.metadata.resourceVersion}&timeoutSeconds=600`, (e) => {
    const pod = e.object as PodJson;
    if (!ready.has(pod.metadata.name) && pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')) ready.set(pod.metadata.name, performance.now());
  });
  const t0 = performance.now();
  await kubectl(['create', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: pods }));
  const deadline = Date.now() + 300_000;
  while (ready.size < count && Date.now() < deadline) await sleep(50);
  watch.abort();
  if (ready.size < count) throw new Error(`${label}: only ${ready.size} of ${count} pods Ready after 5 min`);
  await kubectl(['delete', 'pods', '-n', NAMESPACE, '-l', `bench=${label}`, '--wait=true', '--timeout=300s']);
  const pf = kind === 'DRA' ? PF_DRA : PF_DP;
  for (let i = 0; i < 600 && !Array.from({ length: VFS }, (_, v) => linkExists(`${pf}v${v}`)).every(Boolean); i++) await sleep(100);
  return [...ready.values()].map((t) => (t - t0) / 1000);
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'plexus-bench-dra-'));
  const kernel = FakeKernel.create(join(work, 'host'), {
    realNetdevs: true,
    pfs: [
      { address: '0000:3b:00.0', vendor: '8086', device: '158b', totalVfs: VFS, numVfs: VFS, netdev: PF_DP, numa: 0 },
      { address: '0000:af:00.0', vendor: '8086', device: '158b', totalVfs: VFS, numVfs: VFS, netdev: PF_DRA, numa: 1 },
    ],
  });
  const cdi = join(work, 'cdi');
  const cluster = new LocalCluster({ dir: join(work, 'cluster'), containerd2: { binDir: containerd2Dir(), cdiSpecDirs: [cdi] } });
  const kubectl = kubectlFor(cluster);
  const procs: ChildProcess[] = [];
  let daemon: ChildProcess | undefined;
  const latencies: Record<Kind, number[]> = { 'device plugin': [], DRA: [] };
  try {
    await cluster.up();
    const kubeconfig = await preparePlexus(cluster, kubectl, work);
    const dpConfig = join(work, 'dp.json');
    const draConfig = join(work, 'dra.json');
    writeFileSync(dpConfig, JSON.stringify({ resourceList: [{ resourceName: 'x710_dp', selectors: [{ vendors: ['8086'], devices: ['154c'], pfNames: [PF_DP] }] }] }));
    writeFileSync(draConfig, JSON.stringify({ resourceList: [{ resourceName: 'x710_dra', selectors: [{ vendors: ['8086'], devices: ['154c'], pfNames: [PF_DRA] }] }] }));
    const devinfo = join(work, 'devinfo');
    const common = ['--sysfs-root', kernel.root, '--kubelet-dir', cluster.kubeletDir, '--devinfo-dir', devinfo, '--log-level', 'warn'];
    // Side by side, as deploy/ runs them: the DRA driver leaves the device plugin's VFs alone.
    procs.push(spawn(plexusctlPath, ['device-plugin', '--config', dpConfig, '--state-dir', join(work, 'dp-state'), '--metrics-address', '127.0.0.1:19092', ...common], { stdio: 'ignore' }));
    procs.push(
      spawn(
        plexusctlPath,
        [
          'dra-driver',
          ...['--node-name', cluster.nodeName, '--kubeconfig', cluster.adminKubeconfig, '--config', draConfig, '--device-plugin-config', dpConfig],
          ...['--state-dir', join(work, 'dra-state'), '--cdi-dir', cdi, '--rediscover-seconds', '1', ...common],
        ],
        { stdio: 'ignore' },
      ),
    );
    const socket = join(work, 'plexus.sock');
    const cniDir = join(work, 'plexus');
    daemon = await startDaemon(socket, [
      ...['--kubeconfig', kubeconfig, '--node-name', cluster.nodeName, '--cni-dir', cniDir, '--kubelet-dir', cluster.kubeletDir, '--sriov-host-root', kernel.root, '--log-level', 'warn'],
    ]);
    execFileSync(plexusctlPath, [
      'install',
      ...['--cni-bin-dir', cluster.cniBinDir, '--cni-conf-dir', cluster.cniConfDir, '--kubeconfig', kubeconfig, '--cni-dir', cniDir],
      ...['--daemon-socket', socket, '--kubelet-dir', cluster.kubeletDir, '--device-info-dir', devinfo],
    ]);
    const sriov = { type: 'sriov', vlan: 10, ipam: { type: 'static', addresses: [{ address: '10.81.0.5/24' }] } };
    await kubectl(
      ['apply', '-f', '-'],
      list([
        resourceNad('bench-dp', NAMESPACE, 'intel.com/x710_dp', sriov),
        resourceNad('bench-dra', NAMESPACE, 'intel.com/x710_dra', sriov),
        deviceClass('bench-vf'),
        claimTemplate('bench-vf', NAMESPACE, 'bench-vf'),
      ]),
    );
    const api = new ApiClient(await loadKubeconfig(cluster.adminKubeconfig), 30_000);
    // Both resources advertised (kubelet's allocatable, the driver's slice) before anything is timed.
    for (let i = 0; i < 600; i++) {
      const node = JSON.parse(await kubectl(['get', 'node', cluster.nodeName, '-o', 'json'])) as { status: { allocatable: Record<string, string> } };
      const slices = JSON.parse(await kubectl(['get', 'resourceslices', '-o', 'json'])) as { items: { spec: { devices?: unknown[] } }[] };
      if (node.status.allocatable['intel.com/x710_dp'] === String(VFS) && slices.items.flatMap((s) => s.spec.devices ?? []).length === VFS) break;
      await sleep(100);
    }
    // One pod of each through first: images and caches warm for both kinds.
    await round(api, kubectl, 'device plugin', 'warm-dp', 1);
    await round(api, kubectl, 'DRA', 'warm-dra', 1);
    for (let r = 0; r < ROUNDS; r++) {
      // Alternating which goes first: neither kind always runs on a node just busier.
      const order: Kind[] = r % 2 === 0 ? ['device plugin', 'DRA'] : ['DRA', 'device plugin'];
      for (const kind of order) latencies[kind].push(...(await round(api, kubectl, kind, `r${r}-${kind === 'DRA' ? 'dra' : 'dp'}`, VFS)));
    }
  } finally {
    await kubectl(['delete', 'pods', '--all', '-n', NAMESPACE, '--wait=true', '--timeout=300s']).catch(() => undefined);
    await stopDaemon(daemon);
    for (const p of procs) p.kill('SIGTERM');
    await cluster.down();
    kernel.destroy();
    rmSync(work, { recursive: true, force: true });
  }
  const load = loadavg();
  const p = (kind: Kind, q: number) => quantile(latencies[kind], q);
  const row = (kind: Kind) => `| ${kind} | ${latencies[kind].length} | ${p(kind, 0.5).toFixed(2)} | ${p(kind, 0.9).toFixed(2)} | ${p(kind, 1).toFixed(2)} |`;
  const table = [
    `# Pod start with an SR-IOV VF: DRA against the device plugin`,
    ``,
    `${new Date().toISOString().slice(0, 10)}, 2 cores, Node ${process.version}, load average ${load.map((l) => l.toFixed(2)).join(' ')}. The real node of \`plexusctl cluster\``,
    `(Kubernetes v1.37.2, kubelet on containerd 2.x so that CDI devices are applied); a simulated host of 2 PFs with ${VFS} VFs each (real`,
    `netdevs): the device plugin's pool is one PF's VFs, the DRA driver's the other's, both running. Plexus in daemon mode (sriov in`,
    `process), one sriov NAD per kind. ${ROUNDS} rounds of ${VFS} pods created at once per kind, alternating which kind goes first; a pod's`,
    `latency is from the create request to its Ready condition seen by a watch.`,
    ``,
    `| kind | pods | ready p50 (s) | ready p90 (s) | slowest (s) |`,
    `|---|---|---|---|---|`,
    row('device plugin'),
    row('DRA'),
    ``,
    `DRA ÷ device plugin: p50 ${(p('DRA', 0.5) / p('device plugin', 0.5)).toFixed(2)}×, p90 ${(p('DRA', 0.9) / p('device plugin', 0.9)).toFixed(2)}×.`,
    ``,
    `What differs on the way: with DRA the scheduler allocates the claim (the claim controller makes it from the template first),`,
    `kubelet calls NodePrepareResources (the claim read from the API, the CDI spec and device-info written, a checkpoint), and the`,
    `meta plugin reads the claim and the node's slices to give the NAD its VF; with the device plugin kubelet calls Allocate and the meta`,
    `plugin asks PodResources. After the ADD the DRA claim also gets its network data (after the reply: not in the pod's start).`,
    ``,
    `Beside the previous run:`,
    ``,
    ...besidePrevious('dra', { 'ready p50, DRA ÷ device plugin': p('DRA', 0.5) / p('device plugin', 0.5), 'ready p90, DRA ÷ device plugin': p('DRA', 0.9) / p('device plugin', 0.9) }, load),
    ``,
    `Reproduce: \`npm run bench\` (BENCH_DRA_ROUNDS to change the rounds).`,
    ``,
  ].join('\n');
  writeFileSync(join(repoRoot(), 'docs', 'benchmarks-dra.md'), table);
  process.stdout.write(`${table}\n`);
}

await main();
