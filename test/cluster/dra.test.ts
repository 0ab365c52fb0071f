/**
 * DRA ResourceSlices on the real API server (control plane of `plexusctl cluster`): the node's VFs of
 * a simulated SR-IOV host (2 PFs on 2 NUMA nodes) published as the device plugin discovers them; the
 * real scheduler allocates claims against them with CEL selectors.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseConfig } from '../../src/deviceplugin/config.js';
import { assignPools } from '../../src/deviceplugin/pools.js';
import { DraDriver, type DraDriverOptions } from '../../src/dra/driver.js';
import { DRA_DRIVER, SlicePublisher, deviceName, sliceDevices } from '../../src/dra/slices.js';
import { sriovHostOf } from '../../src/sim/sriov-host.js';
import { ApiClient } from '../../src/k8s/client.js';
import { loadKubeconfig } from '../../src/k8s/kubeconfig.js';
import { LocalCluster } from '../../src/sim/cluster.js';
import { kubectlFor, preparePlexus } from '../../src/sim/cluster-plexus.js';
import { FakeKernel } from '../../src/sim/fakekernel.js';
import { discover } from '../../src/sriov/discover.js';
import { pollUntil } from '../../src/util/poll.js';
import { TWO_NUMA_HOST } from '../support/hosts.js';
import { claimTemplate, deviceClass, resourceNad } from '../support/dra.js';
import { installRecordPlugin, plexusPath } from '../support/plugins.js';
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
  /** A DRA driver on the simulated host with its files under `dir` (CONFIG's pools); `more` overrides. */
  const newDriver = async (dir: string, more: Partial<DraDriverOptions> = {}): Promise<DraDriver> => {
    writeFileSync(join(dir, 'config.json'), CONFIG);
    return new DraDriver({
      api: new ApiClient(await loadKubeconfig(cluster.adminKubeconfig), 30_000),
      nodeName: NODE,
      host: sriovHostOf(kernel),
      configFile: join(dir, 'config.json'),
      kubeletDir: join(dir, 'kubelet'),
      stateDir: join(dir, 'state'),
      cdiDir: join(dir, 'cdi'),
      devinfoDir: join(dir, 'devinfo'),
      log: () => undefined,
      ...more,
    });
  };
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
    const docs = [
      deviceClass('plexus-vf'),
      claimTemplate('numa1', 'dra', 'plexus-vf', [`device.attributes["${DRA_DRIVER}"].numaNode == 1`]),
      claimTemplate('pf-ens1f0', 'dra', 'plexus-vf', [`device.attributes["${DRA_DRIVER}"].pfName == "ens1f0"`]),
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
    const driver = () => newDriver(dir);
    const first = await driver();
    const devices = await first.prepare(claim);
    assert.equal(devices.length, 1);
    assert.deepEqual(await first.prepare(claim), devices, 'a repeated prepare gives the same answer');
    const spec = join(dir, 'cdi', `${DRA_DRIVER}-${uid}.json`);
    assert.ok(existsSync(spec));
    // A restarted driver: the claim is prepared already, by its checkpoint.
    const second = await driver();
    assert.deepEqual(second.preparedClaims()[uid]?.devices, devices);
    assert.deepEqual(await second.prepare({ ...claim, name: 'not-read-again' }), devices, 'answered from the checkpoint, no API read');
    second.unprepare(claim);
    assert.equal(existsSync(spec), false, 'the CDI spec removed');
    second.unprepare(claim);
    assert.deepEqual((await driver()).preparedClaims(), {}, 'nothing left in the checkpoint');
    await assert.rejects(second.prepare({ ...claim, uid: 'another-uid' }), /has UID .*, kubelet asked for another-uid/);
  });

  it("the meta plugin: a NAD whose resourceName is the pool takes the VF of the pod's claim; after ADD the claim has its network data and Ready; DEL needs no API", async () => {
    const pod = JSON.parse(await kubectl(['get', 'pod', '-n', 'dra', 'pod-numa1', '-o', 'json'])) as { metadata: { uid: string }; status: { resourceClaimStatuses: { resourceClaimName: string }[] } };
    const claimName = pod.status.resourceClaimStatuses[0]!.resourceClaimName;
    const claimJson = async () =>
      JSON.parse(await kubectl(['get', 'resourceclaim', '-n', 'dra', claimName, '-o', 'json'])) as {
        status: {
          allocation: { devices: { results: { driver: string; pool: string; device: string }[] } };
          devices?: { driver: string; pool: string; device: string; conditions: { type: string; status: string }[]; networkData: { interfaceName: string; ips: string[]; hardwareAddress: string } }[];
        };
      };
    const allocated = (await claimJson()).status.allocation.devices.results[0]!;
    const [slice] = await slices();
    const vf = slice!.spec.devices.find((d) => d.name === allocated.device)!.attributes.pciAddress!.string!;
    const dir = rig.dir('drameta');
    // Plexus's own RBAC (deploy/), with a token bound to the node the claim is allocated on.
    const kubeconfig = await preparePlexus(cluster, kubectl, dir, NODE);
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    installRecordPlugin(bin, 'record');
    const record = join(dir, 'record.jsonl');
    writeFileSync(join(dir, 'cluster.conf'), JSON.stringify({ cniVersion: '1.0.0', name: 'cluster', type: 'record', address: '10.1.0.2/24' }));
    await kubectl(['apply', '-f', '-'], JSON.stringify(resourceNad('vfnet', 'dra', 'intel.com/x710', { type: 'record', recordFile: record, address: '10.56.0.7/24' })));
    await kubectl(['annotate', 'pod', '-n', 'dra', 'pod-numa1', 'k8s.v1.cni.cncf.io/networks=vfnet']);
    const ns = rig.netns('drameta');
    const meta = (kube: string) => ({
      cniVersion: '1.0.0',
      name: 'plexus',
      type: 'plexus',
      kubeconfig: kube,
      clusterNetwork: join(dir, 'cluster.conf'),
      binDir: bin,
      cniDir: join(dir, 'cni'),
      deviceInfoDir: join(dir, 'devinfo'),
      // No kubelet here: the devices come from the claim alone.
      podResourcesSocket: join(dir, 'none.sock'),
      kubeletCheckpoint: join(dir, 'none-checkpoint'),
    });
    const cni = (command: string, kube: string, containerID = 'dra-meta') =>
      spawnSync(plexusPath, [], {
        input: JSON.stringify(meta(kube)),
        encoding: 'utf8',
        env: {
          CNI_COMMAND: command,
          CNI_CONTAINERID: containerID,
          CNI_NETNS: ns.path,
          CNI_IFNAME: 'eth0',
          CNI_PATH: bin,
          CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=dra;K8S_POD_NAME=pod-numa1;K8S_POD_UID=${pod.metadata.uid}`,
        },
      });
    const add = cni('ADD', kubeconfig);
    assert.equal(add.status, 0, add.stdout + add.stderr);
    const calls = readFileSync(record, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { command: string; conf: { deviceID?: string; pciBusID?: string; runtimeConfig?: { deviceID?: string } } });
    const added = calls.find((c) => c.command === 'ADD')!;
    assert.deepEqual([added.conf.deviceID, added.conf.pciBusID, added.conf.runtimeConfig?.deviceID], [vf, vf, undefined]);
    const entry = (await claimJson()).status.devices?.find((d) => d.device === allocated.device);
    assert.ok(entry, `the claim's status.devices: ${JSON.stringify((await claimJson()).status)}`);
    assert.deepEqual([entry.driver, entry.pool], [DRA_DRIVER, NODE]);
    assert.deepEqual(entry.networkData, { interfaceName: 'net1', ips: ['10.56.0.7/24'], hardwareAddress: '02:00:00:00:00:01' });
    assert.deepEqual(
      entry.conditions.map((c) => `${c.type}=${c.status}`),
      ['Ready=True'],
    );
    // DEL from the attachment record: a kubeconfig that reaches no API server changes nothing.
    writeFileSync(join(dir, 'nowhere.kubeconfig'), readFileSync(kubeconfig, 'utf8').replace(/server: .*/, 'server: https://127.0.0.1:1'));
    const del = cni('DEL', join(dir, 'nowhere.kubeconfig'));
    assert.equal(del.status, 0, del.stdout + del.stderr);
    assert.ok(readFileSync(record, 'utf8').includes('"command":"DEL"'));

    // A NAD naming the pod's claim and request (`<claim name in the pod>/<request>`) gets that request's device.
    const named = join(dir, 'named.jsonl');
    await kubectl(['apply', '-f', '-'], JSON.stringify(resourceNad('vfnet-named', 'dra', 'vf/vf', { type: 'record', recordFile: named })));
    await kubectl(['annotate', 'pod', '-n', 'dra', 'pod-numa1', '--overwrite', 'k8s.v1.cni.cncf.io/networks=vfnet-named']);
    const byName = cni('ADD', kubeconfig, 'dra-meta-named');
    assert.equal(byName.status, 0, byName.stdout + byName.stderr);
    const namedAdd = readFileSync(named, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { command: string; conf: { deviceID?: string } })
      .find((c) => c.command === 'ADD')!;
    assert.equal(namedAdd.conf.deviceID, vf);
    assert.equal(cni('DEL', kubeconfig, 'dra-meta-named').status, 0);
  });

  it("a DPDK claim (the class's opaque VfConfig asks for vfio-pci): prepare binds the VF (CDI with its vfio group), it stays in the slice while prepared, unprepare gives it back to iavf; a prepare cut short after binding is undone by a restarted driver's unprepare, or finished by its retry", async () => {
    const vfConfig = { apiVersion: `${DRA_DRIVER}/v1alpha1`, kind: 'VfConfig', driver: 'vfio-pci' };
    await kubectl(
      ['apply', '-f', '-'],
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'List',
        items: [
          deviceClass('plexus-dpdk-vf', vfConfig),
          claimTemplate('dpdk', 'dra', 'plexus-dpdk-vf'),
          ...['pod-dpdk', 'pod-dpdk-2'].map((name) => ({
            apiVersion: 'v1',
            kind: 'Pod',
            metadata: { name, namespace: 'dra' },
            spec: {
              tolerations: [{ operator: 'Exists' }],
              resourceClaims: [{ name: 'vf', resourceClaimTemplateName: 'dpdk' }],
              containers: [{ name: 'c', image: 'pause', resources: { claims: [{ name: 'vf' }] } }],
            },
          })),
        ],
      }),
    );
    const allocatedClaim = (pod: string) =>
      pollUntil(
        `the claim of ${pod} allocated`,
        async () => {
          const p = JSON.parse(await kubectl(['get', 'pod', '-n', 'dra', pod, '-o', 'json'])) as { status?: { resourceClaimStatuses?: { resourceClaimName?: string }[] } };
          const name = p.status?.resourceClaimStatuses?.[0]?.resourceClaimName;
          if (!name) return undefined;
          const claim = JSON.parse(await kubectl(['get', 'resourceclaim', '-n', 'dra', name, '-o', 'json'])) as {
            metadata: { uid: string };
            status?: { allocation?: { devices?: { results?: { device: string }[] } } };
          };
          const device = claim.status?.allocation?.devices?.results?.[0]?.device;
          return device ? { claim: { namespace: 'dra', name, uid: claim.metadata.uid }, device } : undefined;
        },
        60_000,
      );
    const dir = rig.dir('dradpdk');
    const driver = (cdiDir = join(dir, 'cdi')) => newDriver(dir, { cdiDir, netdevUse: async () => new Map() });
    const addressOf = (device: string) => discover(kernel.host()).devices.find((d) => deviceName(d.address) === device)!;

    const { claim, device } = await allocatedClaim('pod-dpdk');
    const before = addressOf(device);
    assert.equal(before.driver, 'iavf');
    const d = await driver();
    await d.prepare(claim);
    const bound = addressOf(device);
    assert.equal(bound.driver, 'vfio-pci', 'bound for the DPDK claim');
    const spec = JSON.parse(readFileSync(join(dir, 'cdi', `${DRA_DRIVER}-${claim.uid}.json`), 'utf8')) as { devices: { containerEdits: { deviceNodes: { path: string }[] } }[] };
    assert.deepEqual(
      spec.devices[0]!.containerEdits.deviceNodes.map((n) => n.path),
      ['/dev/vfio/vfio', `/dev/vfio/${bound.iommuGroup}`],
    );
    await d.rediscover();
    await pollUntil('the slice published', async () => ((await slices())[0]?.spec.devices.some((x) => x.name === device) ? true : undefined), 10_000);
    d.unprepare(claim);
    assert.equal(addressOf(device).driver, 'iavf', 'back to its kernel driver');
    d.unprepare(claim);

    // Cut short after binding: the CDI dir cannot be made (a file is in its place), prepare fails with the VF bound.
    const second = await allocatedClaim('pod-dpdk-2');
    writeFileSync(join(dir, 'blocked'), '');
    await assert.rejects((await driver(join(dir, 'blocked', 'cdi'))).prepare(second.claim));
    assert.equal(addressOf(second.device).driver, 'vfio-pci');
    assert.equal((await driver()).preparedClaims()[second.claim.uid]?.state, 'preparing', 'the checkpoint says the prepare did not finish');
    // kubelet gives up on the pod: a restarted driver's unprepare releases what the cut-short prepare bound.
    (await driver()).unprepare(second.claim);
    assert.equal(addressOf(second.device).driver, 'iavf');
    // Or kubelet retries: the restarted driver finishes it, and the answer is the full one.
    await assert.rejects((await driver(join(dir, 'blocked', 'cdi'))).prepare(second.claim));
    const retried = await (await driver()).prepare(second.claim);
    assert.deepEqual(
      retried.map((x) => x.device_name),
      [second.device],
    );
    assert.equal(addressOf(second.device).driver, 'vfio-pci');
    assert.equal((await driver()).preparedClaims()[second.claim.uid]?.state, undefined);
    (await driver()).unprepare(second.claim);
    assert.equal(addressOf(second.device).driver, 'iavf');
  });

  it("side by side with the device plugin: VFs its config's pools select are not published (it allocates them), the others are", async () => {
    const dir = rig.dir('draside');
    writeFileSync(join(dir, 'dp.json'), JSON.stringify({ resourceList: [{ resourceName: 'x710_dp', selectors: [{ vendors: ['8086'], pfNames: ['ens1f0'] }] }] }));
    const logs: string[] = [];
    const driver = await newDriver(dir, { devicePluginConfig: join(dir, 'dp.json'), log: (_level, msg) => logs.push(msg) });
    assert.equal(await driver.rediscover(), true);
    const [slice] = await slices();
    assert.deepEqual(new Set(slice!.spec.devices.map((d) => d.attributes.pfName?.string)), new Set(['ens2f0']));
    assert.equal(slice!.spec.devices.length, 4);
    assert.ok(logs.some((l) => l.includes('left to the device plugin')));
    const alone = await newDriver(rig.dir('drasidealone'));
    assert.equal(await alone.rediscover(), true);
    assert.equal((await slices())[0]!.spec.devices.length, 8, 'all 8 again without the device plugin config');
  });
});
