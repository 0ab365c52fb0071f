import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Ajv from 'ajv';
import { execFileSync } from 'node:child_process';
import { parseConfig } from '../../src/deviceplugin/config.js';
import { assignPools } from '../../src/deviceplugin/pools.js';
import { containerResponse, writeDpDeviceInfo } from '../../src/deviceplugin/allocate.js';
import { addDdpProfiles, devlinkSource } from '../../src/sriov/ddp.js';
import { discover } from '../../src/sriov/discover.js';
import { FakeKernel, type FakeHostSpec } from '../../src/sim/fakekernel.js';
import { sriovHostOf } from '../../src/sim/sriov-host.js';
import { repoRoot } from '../../src/sim/simnode.js';
import { plexusctlPath } from '../support/plugins.js';
import { Rig } from '../support/rig.js';

/** Two vendors, a VF on vfio-pci, a shared IOMMU group, a PF with 0 VFs, default-route NICs (v4 and v6-only), a VF in a pod, a PCIe switch. */
export const MIXED_HOST: FakeHostSpec = {
  nics: [
    { address: '0000:03:00.0', vendor: '8086', device: '1521', netdev: 'eno1' },
    { address: '0000:04:00.0', vendor: '8086', device: '1521', netdev: 'eno2' },
  ],
  defaultRoutes: { v4: ['eno1'], v6: ['eno2'] },
  pfs: [
    // VF 1's netdev is in a pod; VF 3 is on vfio-pci and shares its IOMMU group with VF 2 (no ACS).
    { address: '0000:5e:00.0', vendor: '8086', device: '158b', totalVfs: 8, numVfs: 4, netdev: 'ens1f0', inPod: [1], vfio: [3], sharedIommu: [[2, 3]] },
    { address: '0000:86:00.0', vendor: '8086', device: '158b', totalVfs: 8, numVfs: 0, netdev: 'ens2f0', numa: 1 },
    { address: '0000:af:00.0', vendor: '15b3', device: '1017', totalVfs: 8, numVfs: 2, netdev: 'ens3f0', numa: 1, behindSwitch: true, vfNaming: 'slot' },
  ],
};

const CONFIG = JSON.stringify({
  resourceList: [
    // Hex with 0x and upper case, a VF range, case-insensitive keys (as Go decodes them).
    { resourceName: 'intel_kernel', selectors: [{ Vendors: ['0x8086'], devices: ['154C'], drivers: ['iavf'], pfNames: ['ens1f0#0-2'] }] },
    { resourceName: 'intel_dpdk', selectors: { drivers: ['vfio-pci'] } },
    { resourceName: 'mlnx_rdma', resourcePrefix: 'nvidia.com', selectors: [{ vendors: ['15b3'], isRdma: true, numaNodes: [1] }] },
    { resourceName: 'spare_ports', selectors: [{ vendors: ['8086'], devices: ['158b'] }] },
    { resourceName: 'never', selectors: [{ vendors: ['8086'], devices: ['154c'], numaNodes: [7] }] },
  ],
});

describe('device plugin: discovery and pools on a simulated host', () => {
  const rig = new Rig();
  let k: FakeKernel;
  before(() => {
    k = FakeKernel.create(join(rig.dir('pools'), 'host'), MIXED_HOST);
  });
  after(() => rig.cleanup());

  it('puts each device in the first pool that selects it and says why every other one is left out', () => {
    const { pools, verdicts } = assignPools(discover(k.host()), parseConfig(CONFIG).pools);
    const verdict = Object.fromEntries(verdicts.map((v) => [v.device.address, v.pool ?? v.reason]));
    assert.deepEqual(Object.fromEntries(pools.map((p) => [p.pool.resourceName, p.devices])), {
      intel_kernel: ['0000:5e:02.0', '0000:5e:02.1', '0000:5e:02.2'],
      intel_dpdk: [],
      mlnx_rdma: ['0000:af:02.0', '0000:af:02.1'],
      spare_ports: ['0000:86:00.0'],
      never: [],
    });
    assert.equal(verdict['0000:03:00.0'], 'holds the default route (eno1)');
    assert.equal(verdict['0000:04:00.0'], 'holds the default route (eno2)', 'an IPv6-only default route excludes the NIC too');
    assert.equal(verdict['0000:5e:00.0'], 'PF with 4 VFs (its VFs are pooled instead)');
    assert.equal(verdict['0000:5e:02.1'], 'intel.com/intel_kernel', 'a VF whose netdev is in a pod keeps its pool');
    assert.match(String(verdict['0000:5e:02.3']), /^shares IOMMU group \d+ with 0000:5e:02\.2 outside the pool$/);
    assert.equal(verdict['0000:af:00.0'], 'PF with 2 VFs (its VFs are pooled instead)');
    // The VF range ens1f0#0-2 leaves VF 3 out of intel_kernel, whatever its driver.
    const sel = verdicts.find((v) => v.device.address === '0000:5e:02.3')!.device;
    assert.equal(sel.vfIndex, 3);
  });

  it('names the selector and the field a device failed on', () => {
    const config = parseConfig(JSON.stringify({ resourceList: [{ resourceName: 'a', selectors: [{ vendors: ['15b3'] }, { vendors: ['8086'], drivers: ['ice'] }] }] }));
    const { verdicts } = assignPools(discover(k.host()), config.pools);
    assert.equal(verdicts.find((v) => v.device.address === '0000:5e:02.0')?.reason, 'no selector matched: a selector 0: vendors (8086); a selector 1: drivers (iavf)');
  });

  it('excludes vfio devices when the host has no IOMMU, with the reason', () => {
    const noIommu = FakeKernel.create(join(rig.dir('noiommu'), 'host'), { iommu: 'off', pfs: [{ address: '0000:5e:00.0', vendor: '8086', device: '158b', numVfs: 2, netdev: 'ens1f0' }] });
    const config = parseConfig(JSON.stringify({ resourceList: [{ resourceName: 'dpdk', bindDriver: 'vfio-pci', selectors: [{ devices: ['154c'] }] }] }));
    const { pools, verdicts } = assignPools(discover(noIommu.host()), config.pools);
    assert.deepEqual(pools[0]!.devices, []);
    assert.match(String(verdicts.find((v) => v.device.address === '0000:5e:02.0')?.reason), /^no IOMMU \(IOMMU groups are empty/);
  });

  it('plexusctl sriov discover -o json follows its documented schema; -o table shows pools and reasons', () => {
    const configFile = join(rig.dir('cfg'), 'config.json');
    execFileSync('sh', ['-c', `cat > ${configFile}`], { input: CONFIG });
    const json = execFileSync(plexusctlPath, ['sriov', 'discover', '--sysfs-root', k.root, '--config', configFile, '-o', 'json']).toString();
    const schema = JSON.parse(readFileSync(join(repoRoot(), 'device-plugin', 'discover.schema.json'), 'utf8')) as object;
    const validate = new Ajv.default({ strict: true }).compile(schema);
    const report = JSON.parse(json) as unknown;
    assert.ok(validate(report), JSON.stringify(validate.errors));
    const table = execFileSync(plexusctlPath, ['sriov', 'discover', '--sysfs-root', k.root, '--config', configFile]).toString();
    assert.match(table, /0000:5e:02\.3 .*✗ shares IOMMU group/);
    assert.match(table, /intel\.com\/intel_kernel \(netDevice\): 3 device\(s\)/);
  });

  it('pKeys and vdpaType select by the IB pkey and the vDPA driver; a vhost vDPA device gets its char device and a vdpa device-info', () => {
    const host = FakeKernel.create(join(rig.dir('vdpa'), 'host'), {
      pfs: [{ address: '0000:af:00.0', vendor: '15b3', device: '101b', numVfs: 3, netdev: 'ens3f0', pkey: '0x8001', vdpa: { 0: 'vhost', 1: 'virtio' } }],
    });
    const config = parseConfig(
      JSON.stringify({
        resourceList: [
          { resourceName: 'vdpa_vhost', resourcePrefix: 'nvidia.com', selectors: [{ vendors: ['15b3'], vdpaType: 'vhost' }] },
          { resourceName: 'vdpa_virtio', resourcePrefix: 'nvidia.com', selectors: [{ vdpaType: 'virtio' }] },
          { resourceName: 'ib_8001', resourcePrefix: 'nvidia.com', selectors: [{ pKeys: ['0X8001'], isRdma: true }] },
        ],
      }),
    );
    const inv = discover(host.host());
    const { pools, verdicts } = assignPools(inv, config.pools);
    assert.deepEqual(
      pools.map((p) => [p.pool.resourceName, p.devices]),
      [
        ['vdpa_vhost', ['0000:af:02.0']],
        ['vdpa_virtio', ['0000:af:02.1']],
        ['ib_8001', ['0000:af:02.2']],
      ],
    );
    assert.match(String(verdicts.find((v) => v.device.address === '0000:af:00.0')?.reason), /PF with 3 VFs/);
    const vhost = inv.devices.find((d) => d.address === '0000:af:02.0')!;
    const res = containerResponse(pools[0]!.pool, [vhost], false);
    assert.ok(res.devices.some((d) => d.host_path === '/dev/vhost-vdpa-0'));
    assert.deepEqual(JSON.parse(res.envs.PCIDEVICE_NVIDIA_COM_VDPA_VHOST_INFO!)['0000:af:02.0'].vdpa, { mount: '/dev/vhost-vdpa-0' });
    const devinfo = rig.dir('vdpa-devinfo');
    const file = writeDpDeviceInfo(devinfo, pools[0]!.pool, vhost);
    assert.deepEqual(JSON.parse(readFileSync(file!, 'utf8')), {
      type: 'vdpa',
      version: '1.1.0',
      vdpa: { 'parent-device': 'vdpa0', driver: 'vhost', path: '/dev/vhost-vdpa-0', 'pci-address': '0000:af:02.0', 'pf-pci-address': '0000:af:00.0' },
    });
    const virtio = inv.devices.find((d) => d.address === '0000:af:02.1')!;
    assert.equal((JSON.parse(readFileSync(writeDpDeviceInfo(devinfo, pools[1]!.pool, virtio)!, 'utf8')) as { vdpa: Record<string, string> }).vdpa.path, undefined, 'virtio has no char device');
  });

  it('auxNetDevice pools take sub-functions by auxTypes, pfNames and rootDevices; Allocate hands out their names', () => {
    const host = FakeKernel.create(join(rig.dir('aux'), 'host'), { pfs: [{ address: '0000:af:00.0', vendor: '15b3', device: '101b', numVfs: 1, netdev: 'ens3f0', subfunctions: 2 }] });
    const config = parseConfig(
      JSON.stringify({
        resourceList: [
          { resourceName: 'sf_one', resourcePrefix: 'nvidia.com', deviceType: 'auxNetDevice', selectors: [{ auxTypes: ['sf'], pfNames: ['ens3f0'], rootDevices: ['0000:af:00.0'], isRdma: true }] },
          { resourceName: 'vfs', resourcePrefix: 'nvidia.com', selectors: [{ vendors: ['15b3'] }] },
        ],
      }),
    );
    const { pools, verdicts } = assignPools(discover(host.host()), config.pools);
    assert.deepEqual(
      pools.map((p) => [p.pool.resourceName, p.devices]),
      [
        ['sf_one', ['mlx5_core.sf.1', 'mlx5_core.sf.2']],
        ['vfs', ['0000:af:02.0']],
      ],
    );
    assert.equal(verdicts.find((v) => v.device.address === 'mlx5_core.sf.1')?.device.aux?.parent, '0000:af:00.0');
    const sf = verdicts.find((v) => v.device.address === 'mlx5_core.sf.2')!.device;
    const res = containerResponse(pools[0]!.pool, [sf], false);
    assert.equal(res.envs.PCIDEVICE_NVIDIA_COM_SF_ONE, 'mlx5_core.sf.2');
    assert.ok(
      res.devices.some((d) => d.host_path.startsWith('/dev/infiniband/uverbs')),
      'its RDMA device nodes',
    );
    assert.equal(writeDpDeviceInfo(rig.dir('aux-devinfo'), pools[0]!.pool, sf), undefined, 'no device-info type exists for auxiliary devices');
  });

  it('ddpProfiles selects the VFs of PFs running that DDP package (devlink fw.app.name); the real devlink answers without one', async () => {
    const host = FakeKernel.create(join(rig.dir('ddp'), 'host'), {
      pfs: [
        { address: '0000:3b:00.0', vendor: '8086', device: '1592', numVfs: 2, netdev: 'ens2f0', ddpProfile: 'ICE COMMS Package' },
        { address: '0000:3c:00.0', vendor: '8086', device: '1592', numVfs: 2, netdev: 'ens3f0', ddpProfile: 'ICE OS Default Package' },
      ],
    });
    const config = parseConfig(JSON.stringify({ resourceList: [{ resourceName: 'comms', selectors: [{ devices: ['1889'], ddpProfiles: ['ICE COMMS Package'] }] }] }));
    const inv = discover(host.host());
    await addDdpProfiles(sriovHostOf(host).openDdp(), inv);
    const { pools, verdicts } = assignPools(inv, config.pools);
    assert.deepEqual(pools[0]!.devices, ['0000:3b:02.0', '0000:3b:02.1']);
    assert.match(String(verdicts.find((v) => v.device.address === '0000:3c:02.0')?.reason), /ddpProfiles \(ICE OS Default Package\)/);
    // The real host: generic netlink to devlink; no Intel PF here, so no package (and no exception).
    const real = devlinkSource();
    try {
      assert.equal(await real.profile('0000:00:00.0'), undefined);
    } finally {
      real.close();
    }
  });

  it('one unreadable device is reported as such and hides none of the others', () => {
    const host = FakeKernel.create(join(rig.dir('broken'), 'host'), { pfs: [{ address: '0000:5e:00.0', vendor: '8086', device: '158b', numVfs: 3, netdev: 'ens1f0' }] });
    // VF 1's identity files are garbage (ghw would return nothing for the whole host).
    const vf1 = join(host.root, 'sys/bus/pci/devices/0000:5e:02.1');
    for (const f of ['uevent', 'vendor', 'device', 'class']) writeFileSync(join(vf1, f), 'garbage\n');
    const config = parseConfig(JSON.stringify({ resourceList: [{ resourceName: 'vfs', selectors: [{ devices: ['154c'] }] }] }));
    const { pools, verdicts } = assignPools(discover(host.host()), config.pools);
    assert.deepEqual(pools[0]!.devices, ['0000:5e:02.0', '0000:5e:02.2']);
    assert.match(String(verdicts.find((v) => v.device.address === '0000:5e:02.1')?.reason), /^unreadable: /);
  });
});
