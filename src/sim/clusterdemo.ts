/**
 * `plexusctl demo --cluster`: the demo's pods on the real node instead of the simulated one. A
 * LocalCluster comes up in a scratch dir; Plexus is put on it as a platform team does (CRDs and RBAC
 * with kubectl, a ServiceAccount token, `plexusctl install` into the runtime's CNI dirs); the device
 * plugin serves a simulated SR-IOV host's VFs to the real kubelet; the pods go through the scheduler,
 * kubelet and containerd; the same table is printed; then the pods are deleted and the node taken down.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { ApiClient } from '../k8s/client.js';
import { loadKubeconfig } from '../k8s/kubeconfig.js';
import { install } from '../meta/install.js';
import { NETWORK_STATUS_ANNOTATION } from '../meta/selection.js';
import { pollUntil } from '../util/poll.js';
import { LocalCluster } from './cluster.js';
import { kubectlFor, preparePlexus } from './cluster-plexus.js';
import { ContainerdRig, PAUSE_IMAGE } from './containerd.js';
import { DEMO_PF, DEMO_PODS, demoSriovNad, type DemoPod, SRIOV_RESOURCE, netnsNames, plexusLeftovers, reservations, showPod, tableHeader } from './demotable.js';
import { sriovHostOf } from './sriov-host.js';
import { EXAMPLE_LINKS, addExampleLinks, exampleDocs, repoRoot, simulatedSriovPlugin } from './simnode.js';
import type { FakeKernel as FakeKernelType } from './fakekernel.js';

type PodJson = { metadata: { name: string; namespace: string; annotations?: Record<string, string> }; status?: { phase?: string } };

export async function runClusterDemo(log: (line: string) => void): Promise<boolean> {
  const work = mkdtempSync(join(tmpdir(), 'plexus-demo-cluster-'));
  const cluster = new LocalCluster({ dir: join(work, 'cluster') });
  const links: string[] = [];
  const cniDir = join(work, 'plexus');
  // host-local's default data dir for the example NADs (shared with anything else on the host), and the SR-IOV NAD's own.
  const ipamDirs = [...exampleDocs('network-attachment-definitions.yaml').map((d) => `/var/lib/cni/networks/${d.metadata.name}`), join(work, 'ipam', 'sriov-a')];
  const reservedBefore = new Set(reservations(ipamDirs));
  const { FakeKernel } = await import('../sim/fakekernel.js');
  const { SriovDevicePlugin } = await import('../deviceplugin/plugin.js');
  let kernel: FakeKernelType | undefined;
  let plugin: InstanceType<typeof SriovDevicePlugin> | undefined;
  let cri: ContainerdRig | undefined;
  const started: string[] = [];
  let vfTable = '';
  const left: string[] = [];
  const kubectl = kubectlFor(cluster);
  const netnsBefore = new Set(netnsNames());
  try {
    const t0 = Date.now();
    await cluster.up();
    log(`real node up in ${((Date.now() - t0) / 1000).toFixed(1)} s: kube-apiserver ${cluster.server}, etcd, controller-manager, scheduler, kubelet on containerd (node ${cluster.nodeName})`);
    links.push(...addExampleLinks());
    const kubeconfig = await preparePlexus(cluster, kubectl, work);
    const admin = new ApiClient(await loadKubeconfig(cluster.adminKubeconfig), 10_000);
    kernel = FakeKernel.create(join(work, 'sriov-host'), { realNetdevs: true, pfs: [DEMO_PF] });
    vfTable = JSON.stringify(kernel.pfVfs(DEMO_PF.netdev));
    const devinfoDir = join(work, 'devinfo');
    plugin = new SriovDevicePlugin({
      configFile: join(repoRoot(), 'device-plugin', 'config.json'),
      host: sriovHostOf(kernel),
      kubeletDir: cluster.kubeletDir,
      devinfoDir,
      stateDir: join(work, 'device-plugin'),
      resyncMs: 3_600_000,
    });
    await plugin.start();
    install({ mode: 'oneshot', cniBinDir: cluster.cniBinDir, cniConfDir: cluster.cniConfDir, kubeconfig, cniDir, kubeletDir: cluster.kubeletDir, deviceInfoDir: devinfoDir });
    copyFileSync(simulatedSriovPlugin(join(work, 'sriov-bin'), kernel.root), join(cluster.cniBinDir, 'sriov'));
    const allocatable = await pollUntil(
      `${SRIOV_RESOURCE} on the node`,
      async () => {
        const n = (await admin.get<{ status: { allocatable: Record<string, string> } }>(`/api/v1/nodes/${cluster.nodeName}`)).status.allocatable[SRIOV_RESOURCE];
        return n && n !== '0' ? n : undefined;
      },
      60_000,
    );
    log(
      `simulated SR-IOV host ${kernel.root}: PF ${DEMO_PF.address} (${DEMO_PF.netdev}) with ${DEMO_PF.numVfs} VFs; the real kubelet advertises ${allocatable} ${SRIOV_RESOURCE} from the device plugin`,
    );
    log(
      `CRDs, RBAC and NetworkAttachmentDefinitions ${exampleDocs('network-attachment-definitions.yaml')
        .map((d) => d.metadata.name)
        .join(', ')} applied with kubectl; plexus installed one-shot into containerd's CNI dirs`,
    );
    const sriovNad = demoSriovNad(join(work, 'ipam'));
    const container = (limits?: Record<string, string>) => [{ name: 'app', image: PAUSE_IMAGE, imagePullPolicy: 'Never', ...(limits ? { resources: { limits } } : {}) }];
    const pods = [
      ...exampleDocs('pods.yaml')
        .filter((p) => DEMO_PODS.includes(p.metadata.name))
        .map((p) => ({ ...p, spec: { ...(p.spec as object), containers: container() } })),
      {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'sriov-pod', namespace: 'default', annotations: { 'k8s.v1.cni.cncf.io/networks': 'sriov-a' } },
        spec: { containers: container({ [SRIOV_RESOURCE]: '1' }) },
      },
    ];
    await kubectl(['apply', '-f', '-'], [sriovNad, ...pods].map((d) => stringify(d)).join('---\n'));
    started.push(...pods.map((p) => p.metadata.name));
    cri = ContainerdRig.attach(cluster.containerdDir, undefined);
    log('');
    tableHeader(log);
    for (const name of DEMO_PODS) {
      const pod = await pollUntil(
        `pod ${name} Running`,
        async () => {
          const p = await admin.get<PodJson>(`/api/v1/namespaces/default/pods/${name}`);
          return p.status?.phase === 'Running' && p.metadata.annotations?.[NETWORK_STATUS_ANNOTATION] ? p : undefined;
        },
        120_000,
      );
      const sandbox = await pollUntil(`the sandbox of ${name}`, async () => cri!.readySandbox('default', name), 30_000);
      const row: DemoPod = { name, namespace: 'default', netns: sandbox.netns!, sandbox: sandbox.id };
      if (name === 'sriov-pod') {
        const { podDevicesFromKubelet } = await import('../k8s/podresources.js');
        const devices = await podDevicesFromKubelet(join(cluster.kubeletDir, 'pod-resources', 'kubelet.sock'), 'default', name, 10_000);
        log(`${'default/sriov-pod'.padEnd(22)} (kubelet allocated VF ${(devices.get(SRIOV_RESOURCE) ?? []).join(', ')})`);
      }
      await showPod(log, row, pod.metadata.annotations?.[NETWORK_STATUS_ANNOTATION]);
    }
    log('');
    const events = await admin.get<{ items: unknown[] }>(`/api/v1/namespaces/default/events?fieldSelector=${encodeURIComponent('reason=AddedInterface')}`);
    log(`network-status through the real status subresource; ${events.items.length} AddedInterface Events (kubectl get events)`);
  } finally {
    if (started.length) {
      await kubectl(['delete', 'pod', ...started, '--wait=true', '--timeout=120s']).catch((e: Error) => left.push(`pods not deleted: ${e.message}`));
    }
    if (kernel) {
      const vfHome = await pollUntil('the VF back on the host', async () => (JSON.stringify(kernel!.pfVfs(DEMO_PF.netdev)) === vfTable ? true : undefined), 30_000).catch(() => false);
      if (!vfHome) left.push(`VF table of ${DEMO_PF.netdev}`);
    }
    cri?.close();
    await plugin?.stop();
    await cluster.down();
    kernel?.destroy();
    for (const l of [...links, EXAMPLE_LINKS.bridgeB]) {
      try {
        execFileSync('ip', ['link', 'del', l], { stdio: 'ignore' });
      } catch {
        /* a veth goes with its peer; a bridge may never have been made */
      }
    }
  }
  left.push(...plexusLeftovers(join(cniDir, 'attachments'), netnsBefore), ...reservations(ipamDirs).filter((r) => !reservedBefore.has(r)));
  rmSync(work, { recursive: true, force: true });
  log(
    left.length
      ? `teardown left: ${left.join(', ')}`
      : `torn down: ${started.length} pods deleted with kubectl, the VF back on the host as it was, the node down; no netns, link, IP reservation or attachment record left.`,
  );
  return left.length === 0;
}
