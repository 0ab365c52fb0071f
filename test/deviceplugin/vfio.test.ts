import assert from 'node:assert/strict';
import { appendFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SriovDevicePlugin } from '../../src/deviceplugin/plugin.js';
import { BindError, bindVfio, preflight, releaseVfio } from '../../src/deviceplugin/vfio.js';
import { discover } from '../../src/sriov/discover.js';
import { FakeKernel, type FakeHostSpec } from '../../src/sriov/fakekernel.js';
import { KubeletDouble } from '../../src/rig/kubelet.js';
import { Rig } from '../support/rig.js';

const PF = '0000:5e:00.0';
const vf = (i: number) => `0000:5e:02.${i}`;
const HOST: FakeHostSpec = {
  nics: [{ address: '0000:03:00.0', vendor: '8086', device: '1521', netdev: 'eno1' }],
  defaultRoutes: { v4: ['eno1'] },
  pfs: [
    { address: PF, vendor: '8086', device: '158b', numVfs: 4, netdev: 'ens1f0', sharedIommu: [[2, 3]] },
    { address: '0000:af:00.0', vendor: '15b3', device: '1017', numVfs: 1, netdev: 'ens3f0' },
  ],
};

describe('managed vfio-pci binding on the fake kernel', () => {
  const rig = new Rig();
  after(() => rig.cleanup());
  const fresh = (spec: FakeHostSpec = HOST) => FakeKernel.create(join(rig.dir('vfio'), 'host'), spec);
  const device = (k: FakeKernel, address: string) => {
    const inv = discover(k.host());
    return { dev: inv.devices.find((d) => d.address === address)!, inv };
  };

  it('binds through driver_override, unbind and drivers_probe, and release hands the VF back to iavf', () => {
    const k = fresh();
    const host = k.host();
    const { dev, inv } = device(k, vf(0));
    bindVfio(host, dev, inv);
    const after = device(k, vf(0)).dev;
    assert.equal(after.driver, 'vfio-pci');
    assert.equal(after.driverOverride, 'vfio-pci');
    assert.equal(after.vfioNode, `/dev/vfio/${after.iommuGroup}`);
    releaseVfio(host, vf(0));
    const back = device(k, vf(0)).dev;
    assert.equal(back.driver, 'iavf');
    assert.equal(back.driverOverride, undefined, 'override cleared (reads "(null)")');
    assert.deepEqual(back.netdevs.map((n) => n.name), ['ens1f0v0']);
  });

  it('refuses with reasons: shared IOMMU group, host NIC in use, addresses or routes, bifurcated mlx5, no IOMMU, no vfio-pci module', () => {
    const k = fresh();
    const refuse = (address: string) => {
      const { dev, inv } = device(k, address);
      return preflight(k.host(), dev, inv);
    };
    assert.match(String(refuse(vf(2))), /IOMMU group \d+ is shared with 0000:5e:02\.3 \(iavf\): not viable/);
    assert.match(String(refuse('0000:03:00.0')), /netdev eno1 is up: in use on the host/);
    appendFileSync(join(k.root, 'proc/net/route'), '\nens1f0v1\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0');
    assert.match(String(refuse(vf(1))), /netdev ens1f0v1 has addresses or routes/);
    writeFileSync(join(k.root, 'proc/net/if_inet6'), `fd000000000000000000000000000001 0${'3'} 40 00 80 ens1f0v0\n`);
    assert.match(String(refuse(vf(0))), /netdev ens1f0v0 has addresses or routes \(IPv4 or IPv6\)/);
    assert.match(String(refuse('0000:af:02.0')), /mlx5_core is a bifurcated driver/);
    const off = fresh({ iommu: 'off', pfs: [{ address: PF, vendor: '8086', device: '158b', numVfs: 1, netdev: 'ens1f0' }] });
    assert.match(String(preflight(off.host(), device(off, vf(0)).dev, device(off, vf(0)).inv)), /no IOMMU group/);
    const noModule = fresh({ vfioModule: false, pfs: [{ address: PF, vendor: '8086', device: '158b', numVfs: 1, netdev: 'ens1f0' }] });
    assert.match(String(preflight(noModule.host(), device(noModule, vf(0)).dev, device(noModule, vf(0)).inv)), /vfio-pci module is not loaded/);
    // A refusal changes nothing.
    assert.throws(() => bindVfio(k.host(), device(k, vf(2)).dev, device(k, vf(2)).inv), BindError);
    assert.equal(device(k, vf(2)).dev.driver, 'iavf');
    assert.equal(device(k, vf(2)).dev.driverOverride, undefined);
  });

  it('rolls back to the original driver when drivers_probe fails', () => {
    const k = fresh();
    k.injectFault('sys/bus/pci/drivers_probe', 'EIO');
    const { dev, inv } = device(k, vf(0));
    assert.throws(() => bindVfio(k.host(), dev, inv), (e: Error) => e instanceof BindError && /restored iavf: EIO/.test(e.message));
    const back = device(k, vf(0)).dev;
    assert.equal(back.driver, 'iavf');
    assert.equal(back.driverOverride, undefined);
    assert.deepEqual(back.netdevs.map((n) => n.name), ['ens1f0v0']);
  });

  it('the device plugin binds a pool with bindDriver, skips what preflight refuses, and releases VFs when the pool goes', async function () {
    this.timeout(20000);
    const k = fresh();
    const kubelet = new KubeletDouble(join(rig.dir('vfk'), 'kubelet'));
    await kubelet.start();
    const configFile = join(rig.dir('vfc'), 'config.json');
    writeFileSync(configFile, JSON.stringify({ resourceList: [{ resourceName: 'dpdk', bindDriver: 'vfio-pci', selectors: [{ devices: ['154c'], drivers: ['iavf'] }] }] }));
    const logs: { msg: string; fields?: Record<string, unknown> }[] = [];
    const plugin = new SriovDevicePlugin({ configFile, host: k.host(), kubeletDir: kubelet.dir, devinfoDir: rig.dir('vfd'), stateDir: rig.dir('vfs'), resyncMs: 3_600_000, log: (_l, msg, fields) => logs.push({ msg, ...(fields ? { fields } : {}) }) });
    try {
      await plugin.start();
      const inv = discover(k.host());
      // VFs 2 and 3 share a group with each other only: both are in the pool, so they are bound as one unit.
      assert.deepEqual([0, 1, 2, 3].map((i) => inv.devices.find((d) => d.address === vf(i))?.driver), ['vfio-pci', 'vfio-pci', 'vfio-pci', 'vfio-pci']);
      // The shared group is one unit: advertised once, under its lowest address, allocated whole.
      const devices = await kubelet.waitFor('intel.com/dpdk', (d) => d.length > 0);
      assert.deepEqual(devices.map((d) => [d.ID, d.health]), [0, 1, 2].map((i) => [vf(i), 'Healthy']));
      assert.deepEqual(plugin.debug().pools[0]!.devices.find((d) => d.id === vf(2))?.unit, [vf(2), vf(3)]);
      const alloc = await kubelet.admit({ namespace: 'default', name: 'unit', uid: 'unit' }, 'c', 'intel.com/dpdk', 1, [vf(2)]);
      assert.equal(alloc.response.envs.PCIDEVICE_INTEL_COM_DPDK, `${vf(2)},${vf(3)}`);
      const group = inv.devices.find((d) => d.address === vf(2))!.iommuGroup;
      assert.deepEqual(alloc.response.devices.map((d) => d.container_path), ['/dev/vfio/vfio', `/dev/vfio/${group}`]);
      writeFileSync(configFile, JSON.stringify({ resourceList: [] }));
      await plugin.resync();
      const released = discover(k.host());
      assert.deepEqual([0, 1, 2, 3].map((i) => released.devices.find((d) => d.address === vf(i))?.driver), ['iavf', 'iavf', 'iavf', 'iavf']);
      assert.ok(logs.some((l) => l.msg === 'released from vfio-pci'));
    } finally {
      await plugin.stop();
      await kubelet.stop();
    }
  });
});
