/**
 * DRA end to end on the real node, with kubelet on containerd 2.x (which applies CDI devices; Debian's
 * 1.6 ignores them): the driver registers with kubelet's plugin watcher and publishes the VFs of a
 * simulated SR-IOV host (2 PFs on 2 NUMA nodes, real netdevs), the scheduler allocates a pod's claim
 * by CEL, kubelet calls NodePrepareResources, containerd puts the CDI edits in the container, plexus
 * gives the claimed VF to the NAD of that pool and sriov moves it in; the claim shows the network data.
 * Deleting the pod gives the VF back as it was. Then kubelet and the driver are restarted mid-prepare.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { copyFileSync, existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DRA_DRIVER } from '../../src/dra/slices.js';
import { LocalCluster } from '../../src/sim/cluster.js';
import { ContainerdRig, PAUSE_IMAGE, containerd2Dir } from '../../src/sim/containerd.js';
import { kubectlFor, preparePlexus } from '../../src/sim/cluster-plexus.js';
import { FakeKernel } from '../../src/sim/fakekernel.js';
import { simulatedSriovPlugin } from '../../src/sim/simnode.js';
import { discover } from '../../src/sriov/discover.js';
import { pollUntil } from '../../src/util/poll.js';
import { claimTemplate, deviceClass, list, resourceNad } from '../support/dra.js';
import { plexusctlPath } from '../support/plugins.js';
import { Rig, ipAddresses, ipJson, linkExists } from '../support/rig.js';

const RESOURCE = 'intel.com/x710';
const PF_A = `plxka${process.pid % 100}`;
const PF_B = `plxkb${process.pid % 100}`;

interface Claim {
  metadata: { name: string; uid: string };
  status?: {
    allocation?: { devices: { results: { driver: string; pool: string; device: string }[] } };
    devices?: { device: string; conditions: { type: string; status: string }[]; networkData: { interfaceName: string; ips: string[]; hardwareAddress: string } }[];
  };
}

describe('DRA end to end through the real kubelet on containerd 2.x: slices, CEL allocation, prepare, CDI in the container, plexus → sriov with the claimed VF, network data in the claim', function () {
  this.timeout(1_800_000);
  const rig = new Rig();
  let dir: string;
  let cluster: LocalCluster;
  let kubectl: ReturnType<typeof kubectlFor>;
  let kernel: FakeKernel;
  let cri: ContainerdRig;
  let driver: ChildProcess | undefined;
  let logs = '';
  const cdiDir = () => join(dir, 'cdi');
  const checkpoint = () => (JSON.parse(readFileSync(join(dir, 'state', 'checkpoint.json'), 'utf8')) as { claims: Record<string, { state?: string; devices: { device_name: string }[] }> }).claims;
  const vfNames = () => [PF_A, PF_B].flatMap((pf) => [0, 1].map((i) => `${pf}v${i}`));

  const startDriver = () => {
    driver = spawn(
      plexusctlPath,
      [
        'dra-driver',
        ...['--node-name', cluster.nodeName, '--kubeconfig', cluster.adminKubeconfig, '--config', join(dir, 'config.json'), '--sysfs-root', kernel.root],
        ...[
          '--kubelet-dir',
          cluster.kubeletDir,
          '--state-dir',
          join(dir, 'state'),
          '--cdi-dir',
          cdiDir(),
          '--devinfo-dir',
          join(dir, 'devinfo'),
          '--rediscover-seconds',
          '1',
          '--metrics-address',
          '127.0.0.1:0',
        ],
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    driver.stderr!.on('data', (c: Buffer) => (logs += c.toString()));
  };
  const claimOf = async (pod: string): Promise<Claim | undefined> => {
    const p = JSON.parse(await kubectl(['get', 'pod', pod, '-o', 'json'])) as { status?: { resourceClaimStatuses?: { resourceClaimName?: string }[] } };
    const name = p.status?.resourceClaimStatuses?.[0]?.resourceClaimName;
    return name ? (JSON.parse(await kubectl(['get', 'resourceclaim', name, '-o', 'json'])) as Claim) : undefined;
  };
  const podPhase = async (pod: string) => kubectl(['get', 'pod', pod, '-o', 'jsonpath={.status.phase}']).catch(() => '');
  /** Why pods of `prefix` do not run: their events and claims, kubelet's lines about them, the driver's last logs. */
  const whyNot = async (prefix = 'dra-pod') => {
    const events = (await kubectl(['get', 'events', '-o', 'jsonpath={range .items[*]}{.involvedObject.name}: {.reason} {.message}{"\\n"}{end}'])).split('\n').filter((l) => l.startsWith(prefix));
    const kubelet = readFileSync(join(dir, 'cluster', 'logs', 'kubelet.log'), 'utf8')
      .split('\n')
      .filter((l) => l.includes(prefix) || /dra|DRA|plugin/.test(l));
    const claims = await kubectl(['get', 'resourceclaims', '-o', 'yaml']);
    return `events:\n${events.join('\n')}\nkubelet:\n${kubelet.slice(-40).join('\n')}\nclaims:\n${claims}\ndriver logs: ${logs.slice(-3000)}`;
  };
  const vfPod = (name: string, template: string) => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'default', annotations: { 'k8s.v1.cni.cncf.io/networks': 'dra-sriov' } },
    spec: {
      terminationGracePeriodSeconds: 1,
      resourceClaims: [{ name: 'vf', resourceClaimTemplateName: template }],
      containers: [{ name: 'app', image: PAUSE_IMAGE, imagePullPolicy: 'Never', resources: { claims: [{ name: 'vf' }] } }],
    },
  });
  /** The VF (PCI address) a pod's claim was allocated, by its slice device name. */
  const vfOf = (claim: Claim) => discover(kernel.host()).devices.find((d) => `pci-${d.address.replace(/[:.]/g, '-')}` === claim.status!.allocation!.devices.results[0]!.device)!;

  before(async () => {
    dir = rig.dir('drak');
    kernel = FakeKernel.create(join(dir, 'host'), {
      realNetdevs: true,
      pfs: [
        { address: '0000:3b:00.0', vendor: '8086', device: '158b', numVfs: 2, netdev: PF_A, numa: 0 },
        { address: '0000:af:00.0', vendor: '8086', device: '158b', numVfs: 2, netdev: PF_B, numa: 1 },
      ],
    });
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ resourceList: [{ resourceName: 'x710', selectors: [{ vendors: ['8086'], devices: ['154c'] }] }] }));
    cluster = new LocalCluster({ dir: join(dir, 'cluster'), containerd2: { binDir: containerd2Dir(), cdiSpecDirs: [cdiDir()] } });
    await cluster.up();
    kubectl = kubectlFor(cluster);
    const kubeconfig = await preparePlexus(cluster, kubectl, dir);
    execFileSync(plexusctlPath, [
      'install',
      ...['--mode', 'oneshot', '--cni-bin-dir', cluster.cniBinDir, '--cni-conf-dir', cluster.cniConfDir, '--kubeconfig', kubeconfig],
      ...['--cni-dir', join(dir, 'plexus'), '--kubelet-dir', cluster.kubeletDir, '--device-info-dir', join(dir, 'devinfo')],
    ]);
    copyFileSync(simulatedSriovPlugin(join(dir, 'sriov-launcher'), kernel.root), join(cluster.cniBinDir, 'sriov'));
    cri = ContainerdRig.attach(cluster.containerdDir, undefined);
    startDriver();
    await kubectl(
      ['apply', '-f', '-'],
      list([
        deviceClass('plexus-vf'),
        claimTemplate('numa1-vf', 'default', 'plexus-vf', [`device.attributes["${DRA_DRIVER}"].numaNode == 1`]),
        claimTemplate('any-vf', 'default', 'plexus-vf'),
        resourceNad('dra-sriov', 'default', RESOURCE, { type: 'sriov', vlan: 7, ipam: { type: 'static', addresses: [{ address: '10.80.0.5/24' }] } }),
      ]),
    );
  });

  after(async () => {
    driver?.kill('SIGTERM');
    cri?.close();
    await kubectl?.(['delete', 'pods', '--all', '-n', 'default', '--wait=true', '--timeout=60s']).catch(() => undefined);
    await cluster?.down();
    kernel?.destroy();
    rig.cleanup();
  });

  it('a pod asking for a VF on NUMA node 1: prepared, the CDI env in its container (containerd 2.x), the VF in the pod as net1, the network data and Ready in the claim; deleted: the VF back as it was, the claim gone, unprepared', async () => {
    await pollUntil('kubelet registered the driver', async () => (logs.includes('registered with kubelet') ? true : undefined), 60_000).catch((err: Error) => {
      throw new Error(`${err.message}; driver logs: ${logs}`);
    });
    await pollUntil('the slice', async () => ((await kubectl(['get', 'resourceslices', '-o', 'name'])).includes(cluster.nodeName) ? true : undefined), 30_000);
    const before = new Map(vfNames().map((n) => [n, ipJson<{ address: string; mtu: number }[]>(['-j', 'link', 'show', n])[0]!]));
    const pfBefore = kernel.pfVfs(PF_B);
    await kubectl(['apply', '-f', '-'], JSON.stringify(vfPod('dra-pod', 'numa1-vf')));
    await pollUntil('dra-pod Running', async () => ((await podPhase('dra-pod')) === 'Running' ? true : undefined), 120_000).catch(async (err: Error) => {
      throw new Error(`${err.message}: ${await whyNot()}`);
    });
    const claim = (await claimOf('dra-pod'))!;
    const vf = vfOf(claim);
    assert.equal(vf.pf, '0000:af:00.0', 'the NUMA node 1 PF');
    const [prepared] = Object.values(checkpoint());
    assert.deepEqual(
      prepared?.devices.map((d) => d.device_name),
      [claim.status!.allocation!.devices.results[0]!.device],
    );
    // containerd 2.x applied the CDI spec kubelet named: the device plugin's env is in the container.
    const sandbox = (await cri.readySandbox('default', 'dra-pod'))!;
    const env = await cri.containerEnv(sandbox.id);
    assert.ok(env.app?.includes(`PCIDEVICE_INTEL_COM_X710=${vf.address}`), `the CDI env in the container: ${JSON.stringify(env.app)}`);
    // plexus gave the claimed VF to the NAD of its pool; sriov moved it in.
    const ns = sandbox.netns!.split('/').pop()!;
    assert.deepEqual(ipAddresses(ns, 'net1'), ['10.80.0.5/24']);
    const vfName = `${PF_B}v${vf.vfIndex}`;
    assert.equal(linkExists(vfName), false, 'the VF left the host');
    assert.equal(kernel.pfVfs(PF_B)[vf.vfIndex!]?.vlan, 7);
    const mac = ipJson<{ address: string }[]>(['-n', ns, '-j', 'link', 'show', 'net1'])[0]!.address;
    const written = await pollUntil('the network data in the claim', async () => (await claimOf('dra-pod'))?.status?.devices?.[0], 30_000);
    assert.deepEqual(written.networkData, { interfaceName: 'net1', ips: ['10.80.0.5/24'], hardwareAddress: mac });
    assert.deepEqual(
      written.conditions.map((c) => `${c.type}=${c.status}`),
      ['Ready=True'],
    );

    await kubectl(['delete', 'pod', 'dra-pod', '--wait=true', '--timeout=120s']);
    await pollUntil('the VF back on the host', async () => linkExists(vfName) || undefined, 60_000);
    const back = ipJson<{ address: string; mtu: number }[]>(['-j', 'link', 'show', vfName])[0]!;
    assert.deepEqual([back.address, back.mtu], [before.get(vfName)!.address, before.get(vfName)!.mtu], 'MAC and MTU as they were');
    assert.deepEqual(kernel.pfVfs(PF_B), pfBefore, 'the PF side as it was');
    await pollUntil('the claim gone with its pod', async () => ((await kubectl(['get', 'resourceclaims', '-o', 'name'])).trim() === '' ? true : undefined), 60_000);
    await pollUntil('the claim unprepared', async () => (readdirSync(cdiDir()).length === 0 && Object.keys(checkpoint()).length === 0 ? true : undefined), 60_000);
    // The driver's metrics say so too.
    const url = /"metrics":"(http:[^"]+)"/.exec(logs)![1]!;
    const metrics = await (await fetch(`${url}/metrics`)).text();
    assert.match(metrics, /plexus_dra_call_duration_seconds_count\{call="prepare",result="ok"\} [1-9]/);
    assert.match(metrics, /plexus_dra_call_duration_seconds_count\{call="unprepare",result="ok"\} [1-9]/);
    assert.match(metrics, /plexus_dra_published_devices\{pool="intel.com\/x710"\} 4/);
    assert.match(metrics, /plexus_dra_claims\{state="prepared"\} 0/);
  });

  it('kubelet and the driver restarted mid-prepare, 20 trials of two pods: every pod starts with its own VF, none is given twice, all come back after', async () => {
    /** Trials whose restart came before both prepares had finished. */
    let cut = 0;
    for (let trial = 0; trial < 20; trial++) {
      const pods = [`t${trial}-a`, `t${trial}-b`];
      await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: pods.map((p) => vfPod(p, 'any-vf')) }));
      // A random moment of the pods' start: before, during or after the prepares.
      await sleep(Math.floor(Math.random() ** 2 * 1500));
      const preparedBefore = existsSync(join(dir, 'state', 'checkpoint.json')) ? Object.values(checkpoint()).filter((c) => !c.state).length : 0;
      if (preparedBefore < 2) cut++;
      if (trial % 2 === 0) {
        driver!.kill('SIGKILL');
        await new Promise((resolve) => driver!.once('exit', resolve));
        startDriver();
      } else {
        await cluster.restartKubelet();
      }
      for (const p of pods)
        await pollUntil(`trial ${trial}: ${p} Running`, async () => ((await podPhase(p)) === 'Running' ? true : undefined), 180_000).catch(async (err: Error) => {
          throw new Error(`${err.message}: ${await whyNot(`t${trial}-`)}`);
        });
      // kubelet wipes the node's slices when it starts: the driver writes them again, all 4 VFs.
      await pollUntil(
        `trial ${trial}: the slice back with every VF`,
        async () => {
          const slices = JSON.parse(await kubectl(['get', 'resourceslices', '-o', 'json'])) as { items: { spec: { devices?: unknown[] } }[] };
          return slices.items.flatMap((sl) => sl.spec.devices ?? []).length === 4 ? true : undefined;
        },
        30_000,
      );
      const vfs = await Promise.all(pods.map(async (p) => vfOf((await claimOf(p))!).address));
      assert.equal(new Set(vfs).size, 2, `trial ${trial}: two VFs, not one twice: ${vfs.join(', ')}`);
      for (const p of pods) {
        const sandbox = (await cri.readySandbox('default', p))!;
        assert.deepEqual(ipAddresses(sandbox.netns!.split('/').pop()!, 'net1'), ['10.80.0.5/24'], `trial ${trial}: ${p} has its VF`);
      }
      const prepared = Object.values(checkpoint());
      assert.deepEqual(
        prepared.map((c) => c.state),
        [undefined, undefined],
        `trial ${trial}: both claims prepared to the end`,
      );
      await kubectl(['delete', 'pod', ...pods, '--wait=true', '--timeout=120s']);
      await pollUntil(`trial ${trial}: all VFs back on the host`, async () => (vfNames().every((n) => linkExists(n)) ? true : undefined), 60_000);
      await pollUntil(`trial ${trial}: unprepared`, async () => (Object.keys(checkpoint()).length === 0 && readdirSync(cdiDir()).length === 0 ? true : undefined), 60_000);
    }
    process.stderr.write(`      restarts before both claims were prepared: ${cut} of 20 trials\n`);
  });
});
