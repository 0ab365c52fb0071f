/**
 * `plexusctl demo`: a simulated node. The API server double holds the example NADs and pods;
 * containerd (CRI) runs the example pods as sandboxes with `plexus` as the node's CNI; each pod's
 * interfaces are read back over netlink and its network-status is shown; then everything is torn
 * down and checked gone. One pod gets an SR-IOV VF of a simulated host through the device plugin
 * (via a kubelet double) and the sriov plugin. Without containerd the pods are plain netns.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ContainerdRig } from './containerd.js';
import { SimNode, exampleDocs, podEnv, repoRoot, simulatedSriovPlugin } from './simnode.js';
import { sriovHostOf } from './sriov-host.js';
import { DEMO_PF, DEMO_PODS, demoSriovNad, type DemoPod, SRIOV_RESOURCE, netnsNames, plexusLeftovers, reservations, showPod, tableHeader } from './demotable.js';

/**
 * The SR-IOV part of the node: a simulated host (a PF with two VFs whose netdevs are veth ends),
 * the device plugin serving its pools to a kubelet double, and a NAD that asks for one VF.
 */
async function startSriov(node: SimNode, work: string, log: (l: string) => void) {
  const { FakeKernel } = await import('./fakekernel.js');
  const { KubeletDouble } = await import('./kubelet.js');
  const { SriovDevicePlugin } = await import('../deviceplugin/plugin.js');
  const kernel = FakeKernel.create(join(work, 'sriov-host'), { realNetdevs: true, pfs: [DEMO_PF] });
  const kubelet = new KubeletDouble(node.dir);
  await kubelet.start();
  const plugin = new SriovDevicePlugin({
    configFile: join(repoRoot(), 'device-plugin', 'config.json'),
    host: sriovHostOf(kernel),
    kubeletDir: node.dir,
    devinfoDir: node.deviceInfoDir,
    stateDir: join(work, 'device-plugin'),
    resyncMs: 3_600_000,
  });
  await plugin.start();
  const devices = await kubelet.waitFor(SRIOV_RESOURCE, (d) => d.length > 0);
  node.api.put('k8s.cni.cncf.io/v1', 'network-attachment-definitions', demoSriovNad(join(node.dir, 'ipam')) as never);
  node.api.put('v1', 'pods', {
    metadata: { name: 'sriov-pod', namespace: 'default', uid: 'uid-sriov-pod', annotations: { 'k8s.v1.cni.cncf.io/networks': 'sriov-a' } },
    spec: { nodeName: 'plx-node', containers: [{ name: 'app', image: 'localhost/plexus-pause:1', resources: { limits: { [SRIOV_RESOURCE]: '1' } } }] },
  } as never);
  log(`simulated SR-IOV host ${kernel.root}: PF 0000:5e:00.0 (plxdemopf) with 2 VFs; the device plugin advertises ${devices.length} ${SRIOV_RESOURCE} to the kubelet double`);
  const vfinfo = JSON.stringify(kernel.pfVfs('plxdemopf'));
  const vfLinks = (): string =>
    execFileSync('ip', ['-br', 'link', 'show'], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => l.startsWith('plxdemopfv'))
      .map((l) =>
        l
          .split(/\s+/)
          .filter((_, i) => i !== 1)
          .join(' '),
      )
      .sort()
      .join('; ');
  const linksBefore = vfLinks();
  return {
    /** The operator's sriov plugin for this simulated host. */
    plugin: simulatedSriovPlugin(join(work, 'sriov-bin'), kernel.root),
    /** What differs from before the pods ran: the VF table, the VF netdevs in the host (name, MAC, flags). */
    changes: (): string[] => [...(JSON.stringify(kernel.pfVfs('plxdemopf')) !== vfinfo ? ['VF table of plxdemopf'] : []), ...(vfLinks() !== linksBefore ? [`VF netdevs: ${vfLinks()}`] : [])],
    /** Pod admission: kubelet allocates the VF (Allocate), PodResources reports it to plexus. */
    admit: async () => (await kubelet.admit({ namespace: 'default', name: 'sriov-pod', uid: 'uid-sriov-pod' }, 'app', SRIOV_RESOURCE, 1)).ids[0]!,
    stop: async () => {
      await plugin.stop();
      await kubelet.stop();
      kernel.destroy();
    },
  };
}

function hasCommand(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export async function runDemo(log: (line: string) => void, opts: { cri?: boolean } = {}): Promise<boolean> {
  const work = mkdtempSync(join(tmpdir(), 'plexus-demo-'));
  const node = new SimNode(join(work, 'node'));
  let cri: ContainerdRig | undefined;
  const pods: DemoPod[] = [];
  const withCri = opts.cri !== false && hasCommand('containerd') && hasCommand('runc') && existsSync('/usr/bin/catatonit');
  // host-local's default data dir for the example NADs without one (shared with anything else on the
  // host), and the cluster network's: only reservations that appear during the demo are its own.
  const ipamDirs = [join(node.dir, 'ipam'), join(node.dir, 'ipam', 'sriov-a'), ...exampleDocs('network-attachment-definitions.yaml').map((d) => `/var/lib/cni/networks/${d.metadata.name}`)];
  const reservedBefore = new Set(reservations(ipamDirs));
  const netnsBefore = new Set(netnsNames());
  let sriov: Awaited<ReturnType<typeof startSriov>> | undefined;
  let sriovLeft: string[] = [];
  try {
    await node.start();
    sriov = await startSriov(node, work, log);
    symlinkSync(sriov.plugin, join(node.binDir, 'sriov'));
    log(
      `API server double at ${node.api.url} with NetworkAttachmentDefinitions ${exampleDocs('network-attachment-definitions.yaml')
        .map((d) => d.metadata.name)
        .join(', ')}`,
    );
    if (withCri) {
      cri = await ContainerdRig.start(join(work, 'containerd'), { plexus: join(repoRoot(), 'bin', 'plexus'), sriov: sriov.plugin });
      writeFileSync(join(cri.confDir, '00-plexus.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'plexus', plugins: [node.metaConf()] }));
      await cri.waitReady();
      log('containerd 1.6 (CRI) runs the pods; its CNI is plexus, the cluster network a bridge');
    } else {
      log('containerd not found: the pods are plain network namespaces, and plexus is called as a runtime would call it');
    }
    log('');
    tableHeader(log);
    for (const name of DEMO_PODS) {
      if (name === 'sriov-pod') log(`${'default/sriov-pod'.padEnd(22)} (kubelet allocated VF ${await sriov.admit()})`);
      const doc = name === 'sriov-pod' ? (node.api.get('v1', 'pods', 'default', name) as unknown as ReturnType<SimNode['addExamplePod']>) : node.addExamplePod(name);
      const annotations = (doc.metadata as unknown as { annotations?: Record<string, string> }).annotations ?? {};
      const meta = { name, namespace: doc.metadata.namespace, uid: `uid-${name}` };
      let pod: DemoPod;
      if (cri) {
        const sandbox = await cri.runPod({ ...meta, annotations });
        pod = { name, namespace: meta.namespace, sandbox, netns: (await cri.podStatus(sandbox)).netns! };
      } else {
        const ns = `plx-demo-${name}`;
        execFileSync('ip', ['netns', 'add', ns]);
        pod = { name, namespace: meta.namespace, sandbox: `demo-${name}`, netns: `/var/run/netns/${ns}` };
        const add = await node.exec(podEnv('ADD', pod.sandbox, pod.netns, meta), { ...node.metaConf(), runtimeConfig: { 'io.kubernetes.cri.pod-annotations': annotations } });
        if (add.status !== 0) throw new Error(`ADD of ${name} failed: ${add.stdout}`);
      }
      pods.push(pod);
      await showPod(log, pod, node.api.get('v1', 'pods', meta.namespace, name)?.metadata.annotations?.['k8s.v1.cni.cncf.io/network-status']);
    }
    log('');
    log(
      `API requests while the pods started: ${node.api.countRequests((r) => r.verb === 'get')} GET, ${node.api.countRequests((r) => r.verb === 'patch')} PATCH (network-status), ${node.api.countRequests((r) => r.verb === 'post')} POST (events)`,
    );
  } finally {
    for (const pod of pods.reverse()) {
      if (cri) await cri.removePod(pod.sandbox);
      else {
        await node.exec(podEnv('DEL', pod.sandbox, pod.netns, { name: pod.name, namespace: pod.namespace }), node.metaConf());
        execFileSync('ip', ['netns', 'del', `plx-demo-${pod.name}`]);
      }
    }
    await cri?.stop();
    sriovLeft = sriov?.changes() ?? [];
    await sriov?.stop();
    await node.stop();
  }
  const left = [...sriovLeft, ...plexusLeftovers(join(node.cniDir, 'attachments'), netnsBefore), ...reservations(ipamDirs).filter((r) => !reservedBefore.has(r))];
  rmSync(work, { recursive: true, force: true });
  log(left.length ? `teardown left: ${left.join(', ')}` : `torn down: ${pods.length} pods removed, the VF back on the host as it was; no netns, link, IP reservation or attachment record left.`);
  return left.length === 0;
}
