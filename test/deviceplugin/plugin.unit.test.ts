import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SriovDevicePlugin } from '../../src/deviceplugin/plugin.js';
import { FakeKernel, type FakeHostSpec } from '../../src/sim/fakekernel.js';
import { sriovHostOf } from '../../src/sim/sriov-host.js';
import { KubeletDouble } from '../../src/sim/kubelet.js';
import { Rig } from '../support/rig.js';
import { plexusctlPath } from '../support/plugins.js';
import { waitFor } from '../support/wait.js';
import { spawn } from 'node:child_process';

const PF_A = '0000:5e:00.0';
const PF_B = '0000:5f:00.0';
const HOST: FakeHostSpec = {
  pfs: [
    { address: PF_A, vendor: '8086', device: '158b', totalVfs: 8, numVfs: 4, netdev: 'ens1f0', numa: 0 },
    { address: PF_B, vendor: '8086', device: '158b', totalVfs: 8, numVfs: 4, netdev: 'ens1f1', numa: 1 },
    { address: '0000:af:00.0', vendor: '15b3', device: '1017', totalVfs: 8, numVfs: 2, netdev: 'ens3f0', numa: 1 },
  ],
};
const a = (i: number) => `0000:5e:02.${i}`;
const b = (i: number) => `0000:5f:02.${i}`;

interface Setup {
  kernel: FakeKernel;
  kubelet: KubeletDouble;
  plugin: SriovDevicePlugin;
  configFile: string;
  devinfo: string;
  logs: { level: string; msg: string; fields?: Record<string, unknown> }[];
}

describe('SR-IOV device plugin through the kubelet double', function () {
  this.timeout(30000);
  const rig = new Rig();
  const running: Setup[] = [];
  after(() => rig.cleanup());
  afterEach(async () => {
    for (const s of running.splice(0)) {
      await s.plugin.stop();
      await s.kubelet.stop();
    }
  });

  async function setup(config: object, opts: { watcher?: boolean; host?: FakeHostSpec; state?: string; cdiDir?: string } = {}): Promise<Setup> {
    const dir = rig.dir('dp');
    const kernel = FakeKernel.create(join(dir, 'host'), opts.host ?? HOST);
    const kubelet = new KubeletDouble(join(dir, 'kubelet'), { watcher: opts.watcher ?? false });
    await kubelet.start();
    const configFile = join(dir, 'config.json');
    writeFileSync(configFile, JSON.stringify(config));
    const devinfo = join(dir, 'devinfo');
    const logs: Setup['logs'] = [];
    const plugin = new SriovDevicePlugin({
      configFile,
      host: sriovHostOf(kernel),
      kubeletDir: kubelet.dir,
      devinfoDir: devinfo,
      stateDir: opts.state ?? join(dir, 'state'),
      ...(opts.cdiDir ? { cdiDir: opts.cdiDir } : {}),
      resyncMs: 3_600_000,
      log: (level, msg, fields) => logs.push({ level, msg, ...(fields ? { fields } : {}) }),
    });
    await plugin.start();
    const s = { kernel, kubelet, plugin, configFile, devinfo, logs };
    running.push(s);
    return s;
  }

  const intel = { resourceName: 'intel_sriov_netdevice', selectors: [{ vendors: ['8086'], devices: ['154c'], drivers: ['iavf'] }] };
  const empty = { resourceName: 'nothing_here', selectors: [{ vendors: ['1af4'] }] };
  const healthy = (ds: { health: string }[]) => ds.filter((d) => d.health === 'Healthy').length;

  it('legacy mode: serves before Register, advertises every pool (an empty one as zero) with NUMA topology', async () => {
    const { kubelet, plugin } = await setup({ resourceList: [intel, empty] });
    assert.equal(plugin.mode, 'legacy');
    assert.deepEqual(
      kubelet.registrations.map((r) => [r.mode, r.resource]),
      [
        ['legacy', 'intel.com/intel_sriov_netdevice'],
        ['legacy', 'intel.com/nothing_here'],
      ],
    );
    const devices = await kubelet.waitFor('intel.com/intel_sriov_netdevice', (d) => d.length === 8);
    assert.deepEqual(
      devices.find((d) => d.ID === b(0)),
      { ID: b(0), health: 'Healthy', topology: { nodes: [{ ID: '1' }] } },
    );
    assert.deepEqual(await kubelet.waitFor('intel.com/nothing_here', () => true), []);
    assert.ok(existsSync(join(kubelet.devicePluginDir, 'intel.com_intel_sriov_netdevice.sock')));
  });

  it('ListAndWatch follows the host: new VFs appear, vanished ones and those of a PF without carrier go Unhealthy with a reason', async () => {
    const { kernel, kubelet, plugin } = await setup({ resourceList: [intel] });
    const res = 'intel.com/intel_sriov_netdevice';
    await kubelet.waitFor(res, (d) => d.length === 8);
    const host = kernel.host();
    host.write(`sys/bus/pci/devices/${PF_A}/sriov_numvfs`, '0');
    host.write(`sys/bus/pci/devices/${PF_A}/sriov_numvfs`, '2');
    host.write(`sys/bus/pci/devices/${PF_B}/sriov_numvfs`, '0');
    host.write(`sys/bus/pci/devices/${PF_B}/sriov_numvfs`, '6');
    await plugin.resync();
    let devices = await kubelet.waitFor(res, (d) => d.length === 10);
    assert.deepEqual(
      devices.filter((d) => d.health === 'Unhealthy').map((d) => d.ID),
      [a(2), a(3)],
    );
    assert.ok(
      devices.some((d) => d.ID === b(5) && d.health === 'Healthy'),
      'a new VF appears',
    );
    const dbg = plugin.debug().pools[0]!.devices.find((d) => d.id === a(2));
    assert.match(String(dbg?.reason), /vanished/);
    kernel.setCarrier(PF_B, false);
    await plugin.resync();
    devices = await kubelet.waitFor(res, (d) => d.filter((x) => x.ID.startsWith('0000:5f') && x.health === 'Unhealthy').length === 6);
    assert.equal(healthy(devices), 2);
    assert.match(String(plugin.debug().pools[0]!.devices.find((d) => d.id === b(0))?.reason), /PF netdev ens1f1 has no carrier/);
    assert.ok(plugin.debug().pools[0]!.devices.every((d) => d.healthy || d.reason));
  });

  it('Allocate: PCIDEVICE env and _INFO exactly as sriov-network-device-plugin writes them, vfio device nodes, device-info files', async () => {
    const dpdk = { resourceName: 'intel-dpdk', bindDriver: 'vfio-pci', selectors: [{ vendors: ['8086'], devices: ['154c'], pfNames: ['ens1f1'] }], additionalInfo: { '*': { site: 'a' } } };
    const { kubelet, devinfo } = await setup({ resourceList: [dpdk, intel] });
    const pod = { namespace: 'default', name: 'dpdk-app', uid: 'u1' };
    await kubelet.waitFor('intel.com/intel-dpdk', (d) => healthy(d) === 4);
    const alloc = await kubelet.admit(pod, 'app', 'intel.com/intel-dpdk', 1);
    const id = alloc.ids[0]!;
    const group = JSON.parse(alloc.response.envs.PCIDEVICE_INTEL_COM_INTEL_DPDK_INFO!)[id].vfio['dev-mount'].split('/').pop() as string;
    assert.equal(alloc.response.envs['PCIDEVICE_INTEL_COM_INTEL-DPDK'], id, "DP's own name: only '.' replaced");
    assert.equal(alloc.response.envs.PCIDEVICE_INTEL_COM_INTEL_DPDK, id, 'and a shell-safe one');
    assert.equal(
      alloc.response.envs.PCIDEVICE_INTEL_COM_INTEL_DPDK_INFO,
      `{"${id}":{"extra":{"site":"a"},"generic":{"deviceID":"${id}"},"vfio":{"dev-mount":"/dev/vfio/${group}","mount":"/dev/vfio/vfio"}}}`,
    );
    assert.deepEqual(alloc.response.devices, [
      { container_path: '/dev/vfio/vfio', host_path: '/dev/vfio/vfio', permissions: 'rw' },
      { container_path: `/dev/vfio/${group}`, host_path: `/dev/vfio/${group}`, permissions: 'rw' },
    ]);
    const file = join(devinfo, 'dp', `intel.com-intel-dpdk-${id}-device.json`);
    assert.deepEqual(JSON.parse(readFileSync(file, 'utf8')), { type: 'pci', version: '1.1.0', pci: { 'pci-address': id, 'pf-pci-address': PF_B } });
    assert.equal(statSync(file).mode & 0o777, 0o444);
    const kernelVf = await kubelet.admit({ namespace: 'default', name: 'k', uid: 'u2' }, 'app', 'intel.com/intel_sriov_netdevice', 1);
    assert.deepEqual(kernelVf.response.devices, [], 'a kernel-netdev VF needs no device nodes');
  });

  it('CDI mode: Allocate names CDI devices (field and a per-pool annotation) and the spec carries the device nodes', async () => {
    const cdiDir = join(rig.dir('cdi'), 'cdi');
    const dpdk = { resourceName: 'dpdk', bindDriver: 'vfio-pci', selectors: [{ devices: ['154c'], pfNames: ['ens1f1'] }] };
    const { kubelet, plugin } = await setup({ resourceList: [dpdk] }, { cdiDir });
    await kubelet.waitFor('intel.com/dpdk', (d) => healthy(d) === 4);
    const alloc = await kubelet.admit({ namespace: 'default', name: 'cdi', uid: 'cdi' }, 'c', 'intel.com/dpdk', 1);
    const id = alloc.ids[0]!;
    assert.deepEqual(alloc.response.devices, []);
    assert.deepEqual(alloc.response.cdi_devices, [{ name: `intel.com/net-pci=${id}` }]);
    assert.deepEqual(alloc.response.annotations, { 'cdi.k8s.io/plexus_intel.com_dpdk': `intel.com/net-pci=${id}` });
    const spec = JSON.parse(readFileSync(join(cdiDir, 'plexus-intel.com_dpdk.json'), 'utf8')) as { kind: string; devices: { name: string; containerEdits: { deviceNodes: { path: string }[] } }[] };
    assert.equal(spec.kind, 'intel.com/net-pci');
    assert.deepEqual(spec.devices.find((d) => d.name === id)?.containerEdits.deviceNodes.map((n) => n.path)[0], '/dev/vfio/vfio');
    await plugin.stop();
    assert.equal(existsSync(join(cdiDir, 'plexus-intel.com_dpdk.json')), false, 'specs go with the plugin');
  });

  it('GetPreferredAllocation per pool policy: pack-pf, spread-pf, numa', async () => {
    const pools = (['pack-pf', 'spread-pf', 'numa'] as const).map((p) => ({
      resourceName: p.replace('-', '_'),
      allocationPolicy: p,
      selectors: [{ devices: ['154c'], pfNames: p === 'numa' ? ['ens1f0', 'ens1f1'] : ['ens1f0#0-1', 'ens1f1#0-3'] }],
    }));
    // First match wins across pools: give each policy the whole set by evaluating them one at a time.
    for (const pool of pools) {
      const { kubelet } = await setup({ resourceList: [pool] });
      const res = `intel.com/${pool.resourceName}`;
      await kubelet.waitFor(res, (d) => d.length > 0);
      const alloc = await kubelet.admit({ namespace: 'default', name: pool.resourceName, uid: pool.resourceName }, 'c', res, 2);
      const pfs = alloc.ids.map((id) => id.slice(0, 7));
      if (pool.allocationPolicy === 'pack-pf') assert.deepEqual(pfs, ['0000:5f', '0000:5f'], `pack-pf fills the fuller PF: ${alloc.ids.join(',')}`);
      if (pool.allocationPolicy === 'spread-pf') assert.deepEqual(new Set(pfs).size, 2, `spread-pf: one per PF: ${alloc.ids.join(',')}`);
      if (pool.allocationPolicy === 'numa') {
        const more = await kubelet.admit({ namespace: 'default', name: 'numa2', uid: 'n2' }, 'c', res, 2, [b(3)]);
        assert.deepEqual(
          more.ids.map((id) => id.slice(0, 7)),
          ['0000:5f', '0000:5f'],
          `numa stays on the node of the must-include device: ${more.ids.join(',')}`,
        );
      }
      const done = running.pop()!;
      await done.plugin.stop();
      await done.kubelet.stop();
    }
  });

  it('re-registers when kubelet restarts and wipes its socket directory', async () => {
    const { kubelet, plugin } = await setup({ resourceList: [intel] });
    await kubelet.waitFor('intel.com/intel_sriov_netdevice', (d) => d.length === 8);
    await kubelet.restart();
    assert.equal(kubelet.endpoints.size, 0);
    await plugin.resync();
    await kubelet.waitFor('intel.com/intel_sriov_netdevice', (d) => d.length === 8);
    assert.equal(kubelet.registrations.length, 2);
  });

  it('plugin-watcher mode: kubelet finds the socket in plugins_registry, GetInfo, then NotifyRegistrationStatus', async () => {
    const { kubelet, plugin, logs } = await setup({ resourceList: [intel] }, { watcher: true });
    assert.equal(plugin.mode, 'watcher');
    await kubelet.waitFor('intel.com/intel_sriov_netdevice', (d) => d.length === 8);
    assert.deepEqual(kubelet.registrations, [{ mode: 'watcher', resource: 'intel.com/intel_sriov_netdevice' }]);
    assert.ok(existsSync(join(kubelet.registryDir, 'intel.com_intel_sriov_netdevice.sock')));
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(logs.some((l) => l.msg === 'registered with kubelet'));
  });

  it('reloads its config without a restart: a bad one is reported and the last good one kept; a removed pool deregisters', async () => {
    const { kubelet, plugin, configFile } = await setup({ resourceList: [intel] });
    writeFileSync(configFile, JSON.stringify({ resourceList: [{ resourceName: 'bad name!' }] }));
    await plugin.resync();
    assert.match(String(plugin.debug().configError), /resourceList\.0\.resourceName/);
    assert.deepEqual(
      plugin.debug().pools.map((p) => p.resource),
      ['intel.com/intel_sriov_netdevice'],
    );
    writeFileSync(configFile, JSON.stringify({ resourceList: [{ resourceName: 'mlnx', resourcePrefix: 'nvidia.com', selectors: [{ vendors: ['15b3'], isRdma: true }] }] }));
    await plugin.resync();
    assert.equal(plugin.debug().configError, undefined);
    assert.deepEqual(
      plugin.debug().pools.map((p) => p.resource),
      ['nvidia.com/mlnx'],
    );
    assert.equal(existsSync(join(kubelet.devicePluginDir, 'intel.com_intel_sriov_netdevice.sock')), false);
    await kubelet.waitFor('nvidia.com/mlnx', (d) => d.length === 2);
    const alloc = await kubelet.admit({ namespace: 'default', name: 'r', uid: 'r' }, 'c', 'nvidia.com/mlnx', 1);
    assert.deepEqual(Object.keys(JSON.parse(alloc.response.envs.PCIDEVICE_NVIDIA_COM_MLNX_INFO!)[alloc.ids[0]!]), ['generic', 'rdma']);
    assert.ok(alloc.response.devices.some((d) => d.host_path === '/dev/infiniband/rdma_cm'));
  });

  /** a(1)'s netdev goes into a pod netns (sysfs shows none, so linkTypes no longer matches it), then a new plugin process on the same host and state dir. */
  async function restartWithNetdevInPod(first: Setup): Promise<SriovDevicePlugin> {
    first.kernel.moveNetdev(a(1), 'ens1f0v1', true);
    await first.plugin.stop();
    const plugin = new SriovDevicePlugin({
      configFile: first.configFile,
      host: sriovHostOf(first.kernel),
      kubeletDir: first.kubelet.dir,
      devinfoDir: first.devinfo,
      stateDir: join(first.kernel.root, '..', 'state'),
      resyncMs: 3_600_000,
    });
    await plugin.start();
    running.push({ ...first, plugin });
    return plugin;
  }

  it('a VF whose netdev is inside a pod keeps its pool across a restart (persisted inventory)', async () => {
    const byLink = { resourceName: 'ether_vfs', selectors: [{ devices: ['154c'], linkTypes: ['ether'] }] };
    const first = await setup({ resourceList: [byLink] });
    await first.kubelet.waitFor('intel.com/ether_vfs', (d) => d.length === 8);
    await restartWithNetdevInPod(first);
    const devices = await first.kubelet.waitFor('intel.com/ether_vfs', (d) => d.length === 8);
    assert.equal(devices.find((d) => d.ID === a(1))?.health, 'Healthy');
  });

  it('a VF in use by a pod keeps its pool when another pool also selects it: across a restart and a config reload', async () => {
    const byLink = { resourceName: 'ether_vfs', selectors: [{ devices: ['154c'], linkTypes: ['ether'] }] };
    const catchAll = { resourceName: 'any_vf', selectors: [{ vendors: ['8086'], devices: ['154c'] }] };
    const first = await setup({ resourceList: [byLink, catchAll] });
    await first.kubelet.waitFor('intel.com/ether_vfs', (d) => d.length === 8);
    const plugin = await restartWithNetdevInPod(first);
    const ether = await first.kubelet.waitFor('intel.com/ether_vfs', (d) => d.length === 8);
    assert.equal(ether.find((d) => d.ID === a(1))?.health, 'Healthy', 'still in its pool');
    const any = await first.kubelet.waitFor('intel.com/any_vf', () => true);
    assert.equal(
      any.find((d) => d.ID === a(1)),
      undefined,
      'not advertised free in the catch-all pool',
    );
    const saved = () => (JSON.parse(readFileSync(join(first.kernel.root, '..', 'state', 'inventory.json'), 'utf8')) as { devices: Record<string, { pool: string }> }).devices[a(1)]?.pool;
    assert.equal(saved(), 'intel.com/ether_vfs');
    // Reloaded with the catch-all first: the free VFs move to it, the one in use stays.
    writeFileSync(first.configFile, JSON.stringify({ resourceList: [catchAll, byLink] }));
    await plugin.resync();
    const anyNow = await first.kubelet.waitFor('intel.com/any_vf', (d) => d.length === 7);
    assert.equal(
      anyNow.find((d) => d.ID === a(1)),
      undefined,
    );
    assert.deepEqual(
      (await first.kubelet.waitFor('intel.com/ether_vfs', (d) => d.length === 1)).map((d) => [d.ID, d.health]),
      [[a(1), 'Healthy']],
    );
    assert.equal(saved(), 'intel.com/ether_vfs');
  });

  it('a device kubelet has allocated (PodResources List) keeps its pool when sysfs no longer selects it', async () => {
    const byLink = { resourceName: 'ether_vfs', selectors: [{ devices: ['154c'], linkTypes: ['ether'] }] };
    const { kernel, kubelet, plugin } = await setup({ resourceList: [byLink] });
    await kubelet.waitFor('intel.com/ether_vfs', (d) => d.length === 8);
    const alloc = await kubelet.admit({ namespace: 'default', name: 'p', uid: 'p' }, 'c', 'intel.com/ether_vfs', 1);
    assert.ok(alloc.ids[0]!.startsWith('0000:5e'), alloc.ids[0]);
    // The port under PF A now reports another link layer: its VFs no longer match linkTypes.
    writeFileSync(join(kernel.root, `sys/bus/pci/devices/${PF_A}/net/ens1f0/type`), '32\n');
    await plugin.resync();
    const ids = (await kubelet.waitFor('intel.com/ether_vfs', (d) => d.length < 8)).map((d) => d.ID);
    const expected = [...new Set([alloc.ids[0]!, b(0), b(1), b(2), b(3)])].sort();
    assert.deepEqual(ids, expected);
  });

  it('plexusctl device-plugin: registers, explains health on /debug and /metrics, and removes its sockets on SIGTERM', async () => {
    const dir = rig.dir('cli');
    const kernel = FakeKernel.create(join(dir, 'host'), HOST);
    const kubelet = new KubeletDouble(join(dir, 'kubelet'));
    await kubelet.start();
    const configFile = join(dir, 'config.json');
    writeFileSync(configFile, JSON.stringify({ resourceList: [intel] }));
    const child = spawn(
      plexusctlPath,
      [
        'device-plugin',
        '--config',
        configFile,
        '--sysfs-root',
        kernel.root,
        '--kubelet-dir',
        kubelet.dir,
        '--devinfo-dir',
        join(dir, 'devinfo'),
        '--state-dir',
        join(dir, 'state'),
        '--metrics-address',
        '127.0.0.1:0',
        '--resync-seconds',
        '1',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    try {
      await kubelet.waitFor('intel.com/intel_sriov_netdevice', (d) => d.length === 8);
      const url = await waitFor('the serving log line', () => /"url":"(http:[^"]+)"/.exec(stderr)?.[1]);
      kernel.setCarrier(PF_A, false);
      await kubelet.waitFor('intel.com/intel_sriov_netdevice', (d) => healthy(d) === 4);
      const debug = (await (await fetch(`${url}/debug`)).json()) as { mode: string; pools: { devices: { id: string; reason?: string }[] }[] };
      assert.equal(debug.mode, 'legacy');
      assert.match(String(debug.pools[0]!.devices.find((d) => d.id === a(0))?.reason), /no carrier/);
      const metrics = await (await fetch(`${url}/metrics`)).text();
      assert.match(metrics, /plexus_dp_devices\{resource="intel.com\/intel_sriov_netdevice",health="Unhealthy"\} 4/);
      assert.match(metrics, /plexus_dp_unhealthy_device\{resource="intel.com\/intel_sriov_netdevice",device="0000:5e:02.0",reason="PF netdev ens1f0 has no carrier"\} 1/);
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
      assert.equal(existsSync(join(kubelet.devicePluginDir, 'intel.com_intel_sriov_netdevice.sock')), false);
    } finally {
      child.kill('SIGKILL');
      await kubelet.stop();
    }
  });
});
