import assert from 'node:assert/strict';
import { join } from 'node:path';
import { parseConfig } from '../../src/deviceplugin/config.js';
import { assignPools } from '../../src/deviceplugin/pools.js';
import { DEVICES_PER_SLICE, deviceName, sliceDevices, sliceObjects } from '../../src/dra/slices.js';
import { FakeKernel } from '../../src/sim/fakekernel.js';
import { discover } from '../../src/sriov/discover.js';
import { TWO_NUMA_HOST } from '../support/hosts.js';
import { Rig } from '../support/rig.js';

const CONFIG = JSON.stringify({ resourceList: [{ resourceName: 'x710', selectors: [{ vendors: ['8086'], devices: ['154c'] }] }] });

describe('DRA ResourceSlices from the device plugin discovery', () => {
  const rig = new Rig();
  let k: FakeKernel;
  before(() => {
    k = FakeKernel.create(join(rig.dir('dra'), 'host'), TWO_NUMA_HOST);
  });
  after(() => {
    k.destroy();
    rig.cleanup();
  });

  it('one device per pooled VF, with PCI, PF, NUMA, link speed, pool and the Multus DRA keys as attributes', () => {
    const inv = discover(k.host());
    const devices = sliceDevices(inv, assignPools(inv, parseConfig(CONFIG).pools));
    assert.equal(devices.length, 8);
    const first = devices[0]!;
    const vf = inv.devices.find((d) => d.pf === '0000:3b:00.0' && d.vfIndex === 0)!;
    assert.equal(first.name, deviceName(vf.address));
    assert.match(first.name, /^pci-[0-9a-f-]+$/);
    assert.deepEqual(first.attributes.pciAddress, { string: vf.address });
    assert.deepEqual(first.attributes.pfPciAddress, { string: '0000:3b:00.0' });
    assert.deepEqual(first.attributes.pfName, { string: 'ens1f0' });
    assert.deepEqual(first.attributes.linkSpeedMbps, { int: 25000 }, "the PF's link speed");
    assert.deepEqual(first.attributes.numaNode, { int: 0 });
    assert.deepEqual(first.attributes.vfIndex, { int: 0 });
    assert.deepEqual(first.attributes.pool, { string: 'intel.com/x710' });
    assert.deepEqual(first.attributes['k8s.cni.cncf.io/deviceID'], { string: vf.address });
    assert.deepEqual(first.attributes['k8s.cni.cncf.io/resourceName'], { string: 'intel.com/x710' });
    assert.deepEqual(first.attributes.dpdk, { bool: false });
    assert.deepEqual(
      devices.map((d) => d.attributes.numaNode),
      [...Array<{ int: number }>(4).fill({ int: 0 }), ...Array<{ int: number }>(4).fill({ int: 1 })],
    );
  });

  it('a VF whose PF lost its carrier is not published (it is not healthy)', () => {
    k.setCarrier('0000:af:00.0', false);
    try {
      const inv = discover(k.host());
      const devices = sliceDevices(inv, assignPools(inv, parseConfig(CONFIG).pools));
      assert.deepEqual(
        devices.map((d) => (d.attributes.pfPciAddress as { string: string }).string),
        Array<string>(4).fill('0000:3b:00.0'),
      );
    } finally {
      k.setCarrier('0000:af:00.0', true);
    }
  });

  it('slices of at most 128 devices, one pool per node whose slice count and generation they share; none is still one (empty) slice', () => {
    const many = Array.from({ length: 300 }, (_, i) => ({ name: `d${i}`, attributes: {} }));
    const slices = sliceObjects({ name: 'node-a', uid: 'u1' }, many, 7);
    assert.equal(slices.length, 3);
    for (const s of slices) {
      const spec = s.spec as { nodeName: string; pool: { name: string; generation: number; resourceSliceCount: number }; devices: unknown[] };
      assert.deepEqual([spec.nodeName, spec.pool], ['node-a', { name: 'node-a', generation: 7, resourceSliceCount: 3 }]);
      assert.ok(spec.devices.length <= DEVICES_PER_SLICE);
    }
    assert.equal(new Set(slices.map((s) => s.metadata.name)).size, 3);
    assert.deepEqual((sliceObjects({ name: 'node-a' }, [], 1)[0]!.spec as { devices: unknown[] }).devices, []);
  });
});
