import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Ajv from 'ajv';
import { execFileSync } from 'node:child_process';
import { parseConfig } from '../../src/deviceplugin/config.js';
import { assignPools } from '../../src/deviceplugin/pools.js';
import { discover } from '../../src/sriov/discover.js';
import { FakeKernel, type FakeHostSpec } from '../../src/sriov/fakekernel.js';
import { repoRoot } from '../../src/rig/simnode.js';
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
});
