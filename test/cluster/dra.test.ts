/**
 * DRA ResourceSlices on the real API server (control plane of `plexusctl cluster`): the node's VFs of
 * a simulated SR-IOV host (2 PFs on 2 NUMA nodes) published as the device plugin discovers them; the
 * real scheduler allocates claims against them with CEL selectors.
 */
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseConfig } from '../../src/deviceplugin/config.js';
import { assignPools } from '../../src/deviceplugin/pools.js';
import { DraDriver } from '../../src/dra/driver.js';
import { DRA_DRIVER, SlicePublisher, sliceDevices } from '../../src/dra/slices.js';
import { sriovHostOf } from '../../src/sim/sriov-host.js';
import { ApiClient } from '../../src/k8s/client.js';
import { loadKubeconfig } from '../../src/k8s/kubeconfig.js';
import { LocalCluster } from '../../src/sim/cluster.js';
import { kubectlFor } from '../../src/sim/cluster-plexus.js';
import { FakeKernel } from '../../src/sim/fakekernel.js';
import { discover } from '../../src/sriov/discover.js';
import { pollUntil } from '../../src/util/poll.js';
import { TWO_NUMA_HOST } from '../support/hosts.js';
import { Rig } from '../support/rig.js';

const NODE = 'dra-node';
const CONFIG = JSON.stringify({ resourceList: [{ resourceName: 'x710', selectors: [{ vendors: ['8086'], devices: ['154c'] }] }] });

interface Slice {
  metadata: { name: string; ownerReferences?: { kind: string; name: string }[] };
  spec: { pool: { generation: number; resourceSliceCount: number }; devices: { name: string; attributes: Record<string, { string?: string; int?: number }> }[] };
}

describe('DRA ResourceSlices on the real API server, allocated by the real scheduler with CEL', function () {
  this.timeout(300_000);
  const rig = new Rig();
  let cluster: LocalCluster;
  let kubectl: ReturnType<typeof kubectlFor>;
  let kernel: FakeKernel;
  let publisher: SlicePublisher;
  const slices = async (): Promise<Slice[]> => (JSON.parse(await kubectl(['get', 'resourceslices', '--field-selector', `spec.nodeName=${NODE}`, '-o', 'json'])) as { items: Slice[] }).items;
  const publish = () => {
    const inv = discover(kernel.host());
    return publisher.publish(sliceDevices(inv, assignPools(inv, parseConfig(CONFIG).pools)));
  };

  before(async () => {
    const dir = rig.dir('dra');
    kernel = FakeKernel.create(join(dir, 'host'), TWO_NUMA_HOST);
    cluster = new LocalCluster({ dir: join(dir, 'cluster'), kubelet: false });
    await cluster.up();
    kubectl = kubectlFor(cluster);
    await kubectl(['create', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: NODE, labels: { 'kubernetes.io/hostname': NODE } } }));
    const api = new ApiClient(await loadKubeconfig(cluster.adminKubeconfig), 30_000);
    // Room for pods, as a kubelet would report it (the scheduler fits pods against allocatable).
    const room = { pods: '110', cpu: '4', memory: '8Gi' };
    await api.patch(`/api/v1/nodes/${NODE}/status`, { status: { capacity: room, allocatable: room } });
    publisher = new SlicePublisher(api, NODE);
  });

  after(async () => {
    await cluster?.down();
    kernel?.destroy();
    rig.cleanup();
  });

  it('the VFs as one pool of the node: attributes accepted by the API server, owned by the Node; unchanged discovery writes nothing', async () => {
    assert.equal(await publish(), true);
    const [slice] = await slices();
    assert.ok(slice);
    assert.deepEqual(
      slice.metadata.ownerReferences?.map((o) => `${o.kind}/${o.name}`),
      [`Node/${NODE}`],
    );
    assert.deepEqual([slice.spec.pool.generation, slice.spec.pool.resourceSliceCount, slice.spec.devices.length], [1, 1, 8]);
    assert.deepEqual(new Set(slice.spec.devices.map((d) => d.attributes.numaNode?.int)), new Set([0, 1]));
    assert.equal(await publish(), false, 'nothing changed, nothing written');
  });

  it('a VF made unhealthy (its PF without carrier) leaves the slice at the next rediscovery, and comes back', async () => {
    kernel.setCarrier('0000:af:00.0', false);
    assert.equal(await publish(), true);
    let [slice] = await slices();
    assert.deepEqual([slice!.spec.pool.generation, slice!.spec.devices.length], [2, 4]);
    assert.ok(slice!.spec.devices.every((d) => d.attributes.pfPciAddress?.string === '0000:3b:00.0'));
    kernel.setCarrier('0000:af:00.0', true);
    assert.equal(await publish(), true);
    [slice] = await slices();
    assert.deepEqual([slice!.spec.pool.generation, slice!.spec.devices.length], [3, 8]);
  });

  it('the scheduler allocates by CEL: a VF on NUMA node 1, a VF of PF ens1f0', async () => {
    await kubectl(['create', 'namespace', 'dra']);
    await pollUntil(
      'the default service account',
      async () =>
        kubectl(['get', 'serviceaccount', '-n', 'dra', 'default']).then(
          () => true,
          () => undefined,
        ),
      60_000,
    );
    const cel = (expression: string) => ({ cel: { expression } });
    const docs = [
      { apiVersion: 'resource.k8s.io/v1', kind: 'DeviceClass', metadata: { name: 'plexus-vf' }, spec: { selectors: [cel(`device.driver == "${DRA_DRIVER}"`)] } },
      ...[
        ['numa1', `device.attributes["${DRA_DRIVER}"].numaNode == 1`],
        ['pf-ens1f0', `device.attributes["${DRA_DRIVER}"].pfName == "ens1f0"`],
      ].map(([name, expr]) => ({
        apiVersion: 'resource.k8s.io/v1',
        kind: 'ResourceClaimTemplate',
        metadata: { name, namespace: 'dra' },
        spec: { spec: { devices: { requests: [{ name: 'vf', exactly: { deviceClassName: 'plexus-vf', selectors: [cel(expr!)] } }] } } },
      })),
      ...['numa1', 'pf-ens1f0'].map((template) => ({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: `pod-${template}`, namespace: 'dra' },
        spec: {
          // The node has no kubelet: its not-ready taints are tolerated, the pod is only scheduled.
          tolerations: [{ operator: 'Exists' }],
          resourceClaims: [{ name: 'vf', resourceClaimTemplateName: template }],
          containers: [{ name: 'c', image: 'pause', resources: { claims: [{ name: 'vf' }] } }],
        },
      })),
    ];
    await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: docs }));
    const [slice] = await slices();
    const byName = new Map(slice!.spec.devices.map((d) => [d.name, d]));
    for (const [template, check] of [
      ['numa1', (d: Slice['spec']['devices'][number]) => d.attributes.numaNode?.int === 1],
      ['pf-ens1f0', (d: Slice['spec']['devices'][number]) => d.attributes.pfName?.string === 'ens1f0'],
    ] as const) {
      const device = await pollUntil(
        `the claim of pod-${template} allocated`,
        async () => {
          // The claim made from the template is named in the pod's status.
          const pod = JSON.parse(await kubectl(['get', 'pod', '-n', 'dra', `pod-${template}`, '-o', 'json'])) as { status?: { resourceClaimStatuses?: { resourceClaimName?: string }[] } };
          const name = pod.status?.resourceClaimStatuses?.[0]?.resourceClaimName;
          if (!name) return undefined;
          const claim = JSON.parse(await kubectl(['get', 'resourceclaim', '-n', 'dra', name, '-o', 'json'])) as {
            status?: { allocation?: { devices?: { results?: { driver: string; pool: string; device: string }[] } } };
          };
          return claim.status?.allocation?.devices?.results?.[0];
        },
        60_000,
      ).catch(async (err: Error) => {
        const why = await kubectl(['get', 'events', '-n', 'dra', '-o', 'jsonpath={range .items[*]}{.involvedObject.name}: {.reason} {.message}{"\\n"}{end}']);
        const claims = await kubectl(['get', 'resourceclaims', '-n', 'dra', '-o', 'yaml']);
        throw new Error(`${err.message}\n${why}\n${claims}`);
      });
      assert.equal(device.driver, DRA_DRIVER);
      assert.equal(device.pool, NODE);
      assert.ok(check(byName.get(device.device)!), `${template}: ${device.device} ${JSON.stringify(byName.get(device.device)?.attributes)}`);
      const pod = JSON.parse(await kubectl(['get', 'pod', '-n', 'dra', `pod-${template}`, '-o', 'json'])) as { spec: { nodeName?: string } };
      assert.equal(pod.spec.nodeName, NODE);
    }
  });

  it('prepare and unprepare of an allocated claim are idempotent and checkpointed: a driver restarted between them answers from its checkpoint', async () => {
    const pod = JSON.parse(await kubectl(['get', 'pod', '-n', 'dra', 'pod-numa1', '-o', 'json'])) as { status: { resourceClaimStatuses: { resourceClaimName: string }[] } };
    const name = pod.status.resourceClaimStatuses[0]!.resourceClaimName;
    const uid = (await kubectl(['get', 'resourceclaim', '-n', 'dra', name, '-o', 'jsonpath={.metadata.uid}'])).trim();
    const claim = { namespace: 'dra', name, uid };
    const dir = rig.dir('drastate');
    writeFileSync(join(dir, 'config.json'), CONFIG);
    const api = new ApiClient(await loadKubeconfig(cluster.adminKubeconfig), 30_000);
    const driver = () =>
      new DraDriver({
        api,
        nodeName: NODE,
        host: sriovHostOf(kernel),
        configFile: join(dir, 'config.json'),
        kubeletDir: join(dir, 'kubelet'),
        stateDir: join(dir, 'state'),
        cdiDir: join(dir, 'cdi'),
        devinfoDir: join(dir, 'devinfo'),
        log: () => undefined,
      });
    const first = driver();
    const devices = await first.prepare(claim);
    assert.equal(devices.length, 1);
    assert.deepEqual(await first.prepare(claim), devices, 'a repeated prepare gives the same answer');
    const spec = join(dir, 'cdi', `${DRA_DRIVER}-${uid}.json`);
    assert.ok(existsSync(spec));
    // A restarted driver: the claim is prepared already, by its checkpoint.
    const second = driver();
    assert.deepEqual(second.preparedClaims()[uid]?.devices, devices);
    assert.deepEqual(await second.prepare({ ...claim, name: 'not-read-again' }), devices, 'answered from the checkpoint, no API read');
    second.unprepare(claim);
    assert.equal(existsSync(spec), false, 'the CDI spec removed');
    second.unprepare(claim);
    assert.deepEqual(driver().preparedClaims(), {}, 'nothing left in the checkpoint');
    await assert.rejects(second.prepare({ ...claim, uid: 'another-uid' }), /has UID .*, kubelet asked for another-uid/);
  });
});
