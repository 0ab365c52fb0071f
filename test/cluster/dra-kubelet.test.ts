/**
 * The DRA driver through the real kubelet (`plexusctl cluster` with its kubelet and containerd): the
 * driver registers with kubelet's plugin watcher, publishes the VFs of a simulated SR-IOV host (2 PFs
 * on 2 NUMA nodes), the scheduler allocates a claim of a pod's ResourceClaimTemplate by CEL, kubelet
 * calls NodePrepareResources before the pod starts and NodeUnprepareResources after it is deleted.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DRA_DRIVER } from '../../src/dra/slices.js';
import { LocalCluster } from '../../src/sim/cluster.js';
import { PAUSE_IMAGE } from '../../src/sim/containerd.js';
import { kubectlFor } from '../../src/sim/cluster-plexus.js';
import { FakeKernel } from '../../src/sim/fakekernel.js';
import { pollUntil } from '../../src/util/poll.js';
import { TWO_NUMA_HOST } from '../support/hosts.js';
import { plexusctlPath } from '../support/plugins.js';
import { Rig } from '../support/rig.js';

describe('the DRA driver through the real kubelet: registration, slices, prepare before the pod starts, unprepare after', function () {
  this.timeout(600_000);
  const rig = new Rig();
  let dir: string;
  let cluster: LocalCluster;
  let kubectl: ReturnType<typeof kubectlFor>;
  let kernel: FakeKernel;
  let driver: ChildProcess | undefined;
  let logs = '';
  const cdiDir = () => join(dir, 'cdi');

  before(async () => {
    dir = rig.dir('drak');
    kernel = FakeKernel.create(join(dir, 'host'), TWO_NUMA_HOST);
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ resourceList: [{ resourceName: 'x710', selectors: [{ vendors: ['8086'], devices: ['154c'] }] }] }));
    cluster = new LocalCluster({ dir: join(dir, 'cluster') });
    await cluster.up();
    kubectl = kubectlFor(cluster);
    driver = spawn(
      plexusctlPath,
      [
        'dra-driver',
        ...['--node-name', cluster.nodeName, '--kubeconfig', cluster.adminKubeconfig, '--config', join(dir, 'config.json'), '--sysfs-root', join(dir, 'host')],
        ...['--kubelet-dir', cluster.kubeletDir, '--state-dir', join(dir, 'state'), '--cdi-dir', cdiDir(), '--devinfo-dir', join(dir, 'devinfo'), '--rediscover-seconds', '1'],
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    driver.stderr!.on('data', (c: Buffer) => (logs += c.toString()));
  });

  after(async () => {
    driver?.kill('SIGTERM');
    await kubectl?.(['delete', 'pods', '--all', '-n', 'default', '--wait=true', '--timeout=60s']).catch(() => undefined);
    await cluster?.down();
    kernel?.destroy();
    rig.cleanup();
  });

  it('kubelet registers the driver; a pod asking for a VF on NUMA node 1 starts after its claim is prepared (CDI spec with the device plugin env); deleting it unprepares', async () => {
    await pollUntil('kubelet registered the driver', async () => (logs.includes('registered with kubelet') ? true : undefined), 60_000).catch((err: Error) => {
      throw new Error(`${err.message}; driver logs: ${logs}`);
    });
    await pollUntil('the slice', async () => ((await kubectl(['get', 'resourceslices', '-o', 'name'])).includes(cluster.nodeName) ? true : undefined), 30_000);
    await pollUntil(
      'the default service account',
      async () =>
        kubectl(['get', 'serviceaccount', 'default']).then(
          () => true,
          () => undefined,
        ),
      60_000,
    );
    const cel = (expression: string) => ({ cel: { expression } });
    await kubectl(
      ['apply', '-f', '-'],
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'List',
        items: [
          { apiVersion: 'resource.k8s.io/v1', kind: 'DeviceClass', metadata: { name: 'plexus-vf' }, spec: { selectors: [cel(`device.driver == "${DRA_DRIVER}"`)] } },
          {
            apiVersion: 'resource.k8s.io/v1',
            kind: 'ResourceClaimTemplate',
            metadata: { name: 'numa1-vf', namespace: 'default' },
            spec: { spec: { devices: { requests: [{ name: 'vf', exactly: { deviceClassName: 'plexus-vf', selectors: [cel(`device.attributes["${DRA_DRIVER}"].numaNode == 1`)] } }] } } },
          },
          {
            apiVersion: 'v1',
            kind: 'Pod',
            metadata: { name: 'dra-pod', namespace: 'default' },
            spec: {
              resourceClaims: [{ name: 'vf', resourceClaimTemplateName: 'numa1-vf' }],
              containers: [{ name: 'app', image: PAUSE_IMAGE, imagePullPolicy: 'Never', resources: { claims: [{ name: 'vf' }] } }],
            },
          },
        ],
      }),
    );
    await pollUntil('dra-pod Running', async () => ((await kubectl(['get', 'pod', 'dra-pod', '-o', 'jsonpath={.status.phase}'])) === 'Running' ? true : undefined), 120_000).catch(
      async (err: Error) => {
        throw new Error(`${err.message}: ${await kubectl(['get', 'events', '-o', 'jsonpath={range .items[*]}{.involvedObject.name}: {.reason} {.message}{"\\n"}{end}'])}; driver logs: ${logs}`);
      },
    );
    const checkpoint = JSON.parse(readFileSync(join(dir, 'state', 'checkpoint.json'), 'utf8')) as { claims: Record<string, { devices: { device_name: string; cdi_device_ids: string[] }[] }> };
    const [claimUid, prepared] = Object.entries(checkpoint.claims)[0]!;
    const device = prepared.devices[0]!;
    assert.deepEqual(device.cdi_device_ids, [`${DRA_DRIVER}/vf=${device.device_name}`]);
    // The VF the scheduler chose is on NUMA node 1 (the second PF's), and the CDI spec carries the device plugin's env for it.
    const spec = JSON.parse(readFileSync(join(cdiDir(), `${DRA_DRIVER}-${claimUid}.json`), 'utf8')) as { kind: string; devices: { name: string; containerEdits: { env: string[] } }[] };
    assert.equal(spec.kind, `${DRA_DRIVER}/vf`);
    const address = spec.devices[0]!.containerEdits.env.find((e) => e.startsWith('PCIDEVICE_INTEL_COM_X710='))!.split('=')[1]!;
    assert.match(address, /^0000:af:/, `the NUMA node 1 PF's VF: ${address}`);
    assert.ok(existsSync(join(dir, 'devinfo', 'dp')), 'device-info written');
    await kubectl(['delete', 'pod', 'dra-pod', '--wait=true', '--timeout=120s']);
    await pollUntil('the claim unprepared', async () => (readdirSync(cdiDir()).length === 0 ? true : undefined), 60_000);
    const after = JSON.parse(readFileSync(join(dir, 'state', 'checkpoint.json'), 'utf8')) as { claims: object };
    assert.deepEqual(after.claims, {});
  });
});
