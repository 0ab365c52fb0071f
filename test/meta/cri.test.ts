import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { ContainerdRig } from '../../src/sim/containerd.js';
import { startDaemon, stopDaemon } from '../support/daemon.js';
import { installShellPlugin, repoRoot } from '../support/plugins.js';
import { Rig, ipAddresses, ipJson, listNetns } from '../support/rig.js';
import { waitFor } from '../support/wait.js';
import { hostLocalReservations } from '../../src/sim/hostlocal.js';
import { SimNode } from '../../src/sim/simnode.js';

for (const mode of ['one-shot plexus', 'plexus-shim and the node daemon'] as const)
  describe(`meta plugin under containerd 1.6 (CRI): ${mode}`, function () {
    this.timeout(120000);
    const rig = new Rig();
    let node: SimNode;
    let cri: ContainerdRig;
    let daemon: ChildProcess | undefined;
    const type = mode === 'one-shot plexus' ? 'plexus' : 'plexus-shim';
    before(async () => {
      node = new SimNode(rig.dir('crimeta'));
      await node.start();
      const failing = installShellPlugin(node.binDir, 'plx-failing', `[ "$CNI_COMMAND" = ADD ] || exit 0; echo '{"code":117,"msg":"second secondary exploded","details":"injected"}'; exit 1`);
      cri = await ContainerdRig.start(join(node.dir, 'containerd'), { [type]: join(repoRoot, 'bin', type), 'plx-failing': failing });
      let extra: Record<string, unknown> = {};
      if (type === 'plexus-shim') {
        const socket = join(node.dir, 'plexus.sock');
        daemon = await startDaemon(socket);
        extra = { type, daemonSocket: socket };
      }
      writeFileSync(join(cri.confDir, '00-plexus.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'plexus', plugins: [node.metaConf(extra)] }));
      await cri.waitReady();
    });
    after(async () => {
      await cri?.stop();
      await stopDaemon(daemon);
      await node?.stop();
      rig.cleanup();
    });

    const leftovers = (): string =>
      JSON.stringify({
        links: ipJson<{ ifname: string }[]>(['link', 'show'])
          .map((l) => l.ifname)
          .filter((l) => !l.startsWith('plx-cluster') && l !== 'plx-br-b')
          .sort(),
        netns: listNetns().sort(),
        ips: hostLocalReservations('/var/lib/cni/networks/macvlan-a'),
        clusterIps: hostLocalReservations(join(node.dir, 'ipam', 'cluster')),
        store: node.attachments().active(),
        devinfo: existsSync(join(node.deviceInfoDir, 'cni')) ? readdirSync(join(node.deviceInfoDir, 'cni')) : [],
      });

    it('gives an annotated pod eth0, net1 and data0 with the right addresses, network-status in the API, and a clean teardown', async () => {
      const before = leftovers();
      const pod = node.addExamplePod('two-nets');
      const annotations = (pod.metadata as unknown as { annotations: Record<string, string> }).annotations;
      const id = await cri.runPod({ name: 'two-nets', namespace: 'default', uid: 'uid-two-nets', annotations });
      const status = await cri.podStatus(id);
      const ns = basename(status.netns!);
      assert.deepEqual(ipAddresses(ns, 'eth0'), [`${status.network?.ip}/24`]);
      assert.match(status.network!.ip, /^10\.76\.0\./);
      assert.match(ipAddresses(ns, 'net1')[0] ?? '', /^10\.77\.1\.\d+\/24$/);
      assert.deepEqual(ipAddresses(ns, 'data0'), ['10.77.0.9/24']);
      // In daemon mode too network-status is written before the reply.
      const networkStatus = JSON.parse(await waitFor('network-status', () => node.api.get('v1', 'pods', 'default', 'two-nets')?.metadata.annotations?.['k8s.v1.cni.cncf.io/network-status'])) as {
        name: string;
        interface: string;
        ips: string[];
        default: boolean;
      }[];
      assert.deepEqual(
        networkStatus.map((e) => [e.name, e.interface, e.default]),
        [
          ['cluster', 'eth0', true],
          ['default/macvlan-a', 'net1', false],
          ['default/bridge-b', 'data0', false],
        ],
      );
      assert.deepEqual(networkStatus[2]!.ips, ['10.77.0.9'], 'bare addresses, as Multus writes them');
      await cri.removePod(id);
      assert.equal(leftovers(), before, 'no link, netns, IP allocation, store entry or device-info file left');
    });

    it('fails RunPodSandbox with the second secondary delegate’s message, and leaves nothing', async () => {
      node.api.put('k8s.cni.cncf.io/v1', 'network-attachment-definitions', {
        metadata: { name: 'broken-c', namespace: 'default' },
        spec: { config: '{"cniVersion":"1.0.0","name":"broken-c","type":"plx-failing"}' },
      } as never);
      const before = leftovers();
      await assert.rejects(cri.runPod({ name: 'doomed', namespace: 'default', annotations: { 'k8s.v1.cni.cncf.io/networks': '[{"name":"macvlan-a"},{"name":"broken-c"}]' } }), (e: Error) =>
        new RegExp(`plugin type="${type}" name="plexus" failed \\(add\\): second secondary exploded; injected`).test(e.message),
      );
      assert.deepEqual(await cri.listPods(), []);
      assert.equal(leftovers(), before);
    });

    if (mode === 'plexus-shim and the node daemon') {
      it("while the daemon is down RunPodSandbox fails with 'try again later'; kubelet's later cleanup leaves nothing", async () => {
        const socket = join(node.dir, 'plexus.sock');
        await stopDaemon(daemon);
        const before = leftovers();
        try {
          await assert.rejects(cri.runPod({ name: 'while-down', namespace: 'default' }), (e: Error) =>
            /plugin type="plexus-shim" name="plexus" failed \(add\): plexus daemon is not reachable/.test(e.message),
          );
        } finally {
          daemon = await startDaemon(socket);
        }
        // containerd's DEL after the failed ADD got "try again later" too (never a pretended success),
        // so it keeps the sandbox NOT READY; kubelet's cleanup (Stop + Remove) then succeeds.
        const [left] = await cri.listPods();
        assert.equal((left as { state?: string } | undefined)?.state, 'SANDBOX_NOTREADY');
        await cri.removePod(left!.id);
        assert.deepEqual(await cri.listPods(), []);
        assert.equal(leftovers(), before);
      });
    }
  });
