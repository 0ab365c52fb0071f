import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SriovDevicePlugin } from '../../src/deviceplugin/plugin.js';
import { podDevicesFromKubelet } from '../../src/k8s/podresources.js';
import { ContainerdRig } from '../../src/sim/containerd.js';
import { KubeletDouble } from '../../src/sim/kubelet.js';
import { sriovHostOf } from '../../src/sim/sriov-host.js';
import { SimNode, repoRoot, simulatedSriovPlugin } from '../../src/sim/simnode.js';
import { FakeKernel } from '../../src/sim/fakekernel.js';
import { startDaemon, stopDaemon } from '../support/daemon.js';
import { installShellPlugin } from '../support/plugins.js';
import { Rig, ipAddresses, ipJson, linkExists, listNetns } from '../support/rig.js';
import { waitFor } from '../support/wait.js';

const PF = '0000:5e:00.0';
const RESOURCE = 'intel.com/intel_sriov_netdevice';

for (const mode of ['one-shot', 'node daemon'] as const)
  describe(`SR-IOV end to end on the simulated node: device plugin → kubelet → containerd → plexus → sriov (${mode})`, function () {
    this.timeout(120000);
    let daemon: ChildProcess | undefined;
    const rig = new Rig();
    let node: SimNode;
    let kernel: FakeKernel;
    let kubelet: KubeletDouble;
    let plugin: SriovDevicePlugin;
    let cri: ContainerdRig;
    const pfName = 'plxe2epf';
    before(async () => {
      node = new SimNode(rig.dir('sre2e'));
      await node.start();
      kernel = FakeKernel.create(join(node.dir, 'host'), { realNetdevs: true, pfs: [{ address: PF, vendor: '8086', device: '158b', numVfs: 2, netdev: pfName }] });
      // kubelet's directory is the node's: the meta plugin reads PodResources where the double serves it.
      kubelet = new KubeletDouble(node.dir);
      await kubelet.start();
      plugin = new SriovDevicePlugin({
        configFile: join(repoRoot(), 'device-plugin', 'config.json'),
        host: sriovHostOf(kernel),
        kubeletDir: node.dir,
        devinfoDir: node.deviceInfoDir,
        stateDir: join(node.dir, 'dp-state'),
        resyncMs: 3_600_000,
      });
      await plugin.start();
      await kubelet.waitFor(RESOURCE, (d) => d.length === 2);
      node.api.put('k8s.cni.cncf.io/v1', 'network-attachment-definitions', {
        metadata: { name: 'sriov-a', namespace: 'default', annotations: { 'k8s.v1.cni.cncf.io/resourceName': RESOURCE } },
        spec: {
          config: JSON.stringify({
            cniVersion: '1.0.0',
            name: 'sriov-a',
            type: 'sriov',
            vlan: 100,
            spoofchk: 'on',
            capabilities: { CNIDeviceInfoFile: true },
            ipam: { type: 'host-local', ranges: [[{ subnet: '10.99.0.0/24' }]], dataDir: join(node.dir, 'ipam') },
          }),
        },
      } as never);
      let extra = {};
      // The operator picks the simulated host (the plugin's environment, the daemon's flag), never the NAD.
      let plugins: Record<string, string> = { plexus: join(repoRoot(), 'bin', 'plexus'), sriov: simulatedSriovPlugin(join(node.dir, 'sriov-bin'), kernel.root) };
      if (mode === 'node daemon') {
        const socket = join(node.dir, 'plexus.sock');
        daemon = await startDaemon(socket, ['--sriov-host-root', kernel.root]);
        extra = { type: 'plexus-shim', daemonSocket: socket };
        // The daemon runs sriov in-process: an exec of this one would fail the pod.
        plugins = {
          'plexus-shim': join(repoRoot(), 'bin', 'plexus-shim'),
          sriov: installShellPlugin(node.binDir, 'sriov', `echo '{"code":999,"msg":"sriov was exec\'d instead of run in the daemon"}'; exit 1`),
        };
      }
      cri = await ContainerdRig.start(join(node.dir, 'containerd'), plugins);
      writeFileSync(join(cri.confDir, '00-plexus.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'plexus', plugins: [node.metaConf(extra)] }));
      await cri.waitReady();
    });
    after(async () => {
      await cri?.stop();
      await stopDaemon(daemon);
      await plugin?.stop();
      await kubelet?.stop();
      kernel?.destroy();
      await node?.stop();
      rig.cleanup();
    });

    it('a pod gets the VF kubelet allocated as net1, network-status carries its device-info, and teardown leaves nothing', async () => {
      const vfinfoBefore = kernel.pfVfs(pfName);
      const netnsBefore = listNetns();
      const pod = { name: 'sriov-pod', namespace: 'default', uid: 'uid-sriov-pod' };
      const annotations = { 'k8s.v1.cni.cncf.io/networks': 'sriov-a' };
      node.api.put('v1', 'pods', {
        metadata: { ...pod, annotations },
        spec: { nodeName: 'plx-node', containers: [{ name: 'app', image: 'pause', resources: { limits: { [RESOURCE]: '1' } } }] },
      } as never);
      // Pod admission: kubelet picks the VF and the device plugin answers Allocate.
      const alloc = await kubelet.admit(pod, 'app', RESOURCE, 1);
      const vfAddr = alloc.ids[0]!;
      const vfNetdev = `${pfName}v${vfAddr.slice(-1)}`;
      assert.equal(alloc.response.envs.PCIDEVICE_INTEL_COM_INTEL_SRIOV_NETDEVICE, vfAddr);
      assert.deepEqual([...(await podDevicesFromKubelet(kubelet.podResourcesSocket, 'default', 'sriov-pod', 5000))], [[RESOURCE, [vfAddr]]], 'PodResources reports it');
      const mac = ipJson<{ address: string }[]>(['link', 'show', 'dev', vfNetdev])[0]!.address;

      const id = await cri.runPod({ ...pod, annotations });
      const netns = (await cri.podStatus(id)).netns!;
      const nsName = netns.split('/').pop()!;
      assert.equal(linkExists(vfNetdev), false, 'the VF netdev left the host');
      assert.equal(ipJson<{ address: string }[]>(['-n', nsName, 'link', 'show', 'dev', 'net1'])[0]!.address, mac, 'net1 in the sandbox is that VF');
      assert.equal(ipAddresses(nsName, 'net1').length, 1);
      assert.equal(kernel.pfVfs(pfName)[Number(vfAddr.slice(-1))]!.vlan, 100);
      const status = JSON.parse(await waitFor('network-status', () => node.api.get('v1', 'pods', 'default', 'sriov-pod')?.metadata.annotations?.['k8s.v1.cni.cncf.io/network-status'])) as {
        name: string;
        interface?: string;
        'device-info'?: { pci: Record<string, string> };
      }[];
      const entry = status.find((e) => e.name === 'default/sriov-a');
      assert.equal(entry?.interface, 'net1');
      assert.deepEqual(entry?.['device-info'], { type: 'pci', version: '1.1.0', pci: { 'pci-address': vfAddr, 'pf-pci-address': PF } });

      await cri.removePod(id);
      kubelet.release('default', 'sriov-pod');
      assert.ok(linkExists(vfNetdev), 'the VF netdev is back in the host');
      assert.equal(ipJson<{ address: string }[]>(['link', 'show', 'dev', vfNetdev])[0]!.address, mac);
      assert.deepEqual(kernel.pfVfs(pfName), vfinfoBefore, 'PF side as before');
      assert.deepEqual(listNetns().sort(), netnsBefore.sort(), 'no netns left');
      assert.deepEqual(readdirSync(join(kernel.root, 'var/lib/cni/plexus-sriov/vfs')), []);
      assert.deepEqual(node.attachments().active(), []);
      assert.deepEqual(existsSync(join(node.deviceInfoDir, 'cni')) ? readdirSync(join(node.deviceInfoDir, 'cni')) : [], []);
      assert.deepEqual(
        readdirSync(join(node.dir, 'ipam', 'sriov-a')).filter((f) => /^\d/.test(f)),
        [],
        'IP released',
      );
    });
  });
