import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SriovDevicePlugin } from '../../src/deviceplugin/plugin.js';
import { BindError, type NetdevUse, bindVfio, hostNetdevUse, preflight, releaseVfio } from '../../src/deviceplugin/vfio.js';
import { discover } from '../../src/sriov/discover.js';
import { FakeKernel, type FakeHostSpec } from '../../src/sim/fakekernel.js';
import { sriovHostOf } from '../../src/sim/sriov-host.js';
import { KubeletDouble } from '../../src/sim/kubelet.js';
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

const IDLE: NetdevUse = new Map();

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
    bindVfio(host, dev, inv, IDLE);
    const after = device(k, vf(0)).dev;
    assert.equal(after.driver, 'vfio-pci');
    assert.equal(after.driverOverride, 'vfio-pci');
    assert.equal(after.vfioNode, `/dev/vfio/${after.iommuGroup}`);
    releaseVfio(host, vf(0));
    const back = device(k, vf(0)).dev;
    assert.equal(back.driver, 'iavf');
    assert.equal(back.driverOverride, undefined, 'override cleared (reads "(null)")');
    assert.deepEqual(
      back.netdevs.map((n) => n.name),
      ['ens1f0v0'],
    );
  });

  it('refuses with reasons: shared IOMMU group, host NIC in use, addresses or routes, bifurcated mlx5, no IOMMU, no vfio-pci module', () => {
    const k = fresh();
    const refuse = (address: string, use: NetdevUse = IDLE) => {
      const { dev, inv } = device(k, address);
      return preflight(k.host(), dev, inv, use);
    };
    assert.match(String(refuse(vf(2))), /IOMMU group \d+ is shared with 0000:5e:02\.3 \(iavf\): not viable/);
    assert.match(String(refuse('0000:03:00.0')), /netdev eno1 is up: in use on the host/);
    assert.match(
      String(refuse(vf(1), new Map([['ens1f0v1', ['192.168.0.5/24', 'route 192.168.0.0/24']]]))),
      /netdev ens1f0v1 has addresses or routes \(192\.168\.0\.5\/24, route 192\.168\.0\.0\/24\)/,
    );
    assert.equal(refuse(vf(1), new Map([['other', ['10.0.0.1/8']]])), undefined);
    assert.match(String(refuse('0000:af:02.0')), /mlx5_core is a bifurcated driver/);
    const off = fresh({ iommu: 'off', pfs: [{ address: PF, vendor: '8086', device: '158b', numVfs: 1, netdev: 'ens1f0' }] });
    assert.match(String(preflight(off.host(), device(off, vf(0)).dev, device(off, vf(0)).inv, IDLE)), /no IOMMU group/);
    const noModule = fresh({ vfioModule: false, pfs: [{ address: PF, vendor: '8086', device: '158b', numVfs: 1, netdev: 'ens1f0' }] });
    assert.match(String(preflight(noModule.host(), device(noModule, vf(0)).dev, device(noModule, vf(0)).inv, IDLE)), /vfio-pci module is not loaded/);
    // A refusal changes nothing.
    assert.throws(() => bindVfio(k.host(), device(k, vf(2)).dev, device(k, vf(2)).inv, IDLE), BindError);
    assert.equal(device(k, vf(2)).dev.driver, 'iavf');
    assert.equal(device(k, vf(2)).dev.driverOverride, undefined);
  });

  it('asks the kernel for addresses: an IPv4 address on a down link (invisible in /proc/net/route) and an IPv6 one refuse the bind', async () => {
    const pf = `plxvt${process.pid % 1000}`;
    const k = FakeKernel.create(join(rig.dir('vfio-real'), 'host'), { realNetdevs: true, pfs: [{ address: PF, vendor: '8086', device: '158b', numVfs: 3, netdev: pf }] });
    try {
      execFileSync('ip', ['addr', 'add', '192.0.2.9/24', 'dev', `${pf}v1`]);
      execFileSync('ip', ['-6', 'addr', 'add', 'fd00:77::9/64', 'dev', `${pf}v2`, 'nodad']);
      assert.doesNotMatch(readFileSync('/proc/net/route', 'utf8'), new RegExp(`${pf}v1`), 'procfs shows no route for the down link');
      const use = await hostNetdevUse();
      const { inv } = device(k, vf(0));
      const verdict = (i: number) =>
        preflight(
          k.host(),
          inv.devices.find((d) => d.address === vf(i))!,
          inv,
          use,
        );
      assert.equal(verdict(0), undefined, 'an idle VF may be bound');
      assert.match(String(verdict(1)), new RegExp(`netdev ${pf}v1 has addresses or routes \\(192\\.0\\.2\\.9/24\\)`));
      assert.match(String(verdict(2)), /fd00:77::9\/64/);
    } finally {
      k.destroy();
    }
  });

  it('rolls back to the original driver when drivers_probe fails', () => {
    const k = fresh();
    k.injectFault('sys/bus/pci/drivers_probe', 'EIO');
    const { dev, inv } = device(k, vf(0));
    assert.throws(
      () => bindVfio(k.host(), dev, inv, IDLE),
      (e: Error) => e instanceof BindError && /restored iavf: EIO/.test(e.message),
    );
    const back = device(k, vf(0)).dev;
    assert.equal(back.driver, 'iavf');
    assert.equal(back.driverOverride, undefined);
    assert.deepEqual(
      back.netdevs.map((n) => n.name),
      ['ens1f0v0'],
    );
  });

  it('the device plugin binds a pool with bindDriver, skips what preflight refuses, and releases VFs when the pool goes', async function () {
    this.timeout(20000);
    const k = fresh();
    const kubelet = new KubeletDouble(join(rig.dir('vfk'), 'kubelet'));
    await kubelet.start();
    const configFile = join(rig.dir('vfc'), 'config.json');
    writeFileSync(configFile, JSON.stringify({ resourceList: [{ resourceName: 'dpdk', bindDriver: 'vfio-pci', selectors: [{ devices: ['154c'], drivers: ['iavf'] }] }] }));
    const logs: { msg: string; fields?: Record<string, unknown> }[] = [];
    const plugin = new SriovDevicePlugin({
      configFile,
      host: sriovHostOf(k),
      kubeletDir: kubelet.dir,
      devinfoDir: rig.dir('vfd'),
      stateDir: rig.dir('vfs'),
      resyncMs: 3_600_000,
      log: (_l, msg, fields) => logs.push({ msg, ...(fields ? { fields } : {}) }),
    });
    try {
      await plugin.start();
      const inv = discover(k.host());
      // VFs 2 and 3 share a group with each other only: both are in the pool, so they are bound as one unit.
      assert.deepEqual(
        [0, 1, 2, 3].map((i) => inv.devices.find((d) => d.address === vf(i))?.driver),
        ['vfio-pci', 'vfio-pci', 'vfio-pci', 'vfio-pci'],
      );
      // The shared group is one unit: advertised once, under its lowest address, allocated whole.
      const devices = await kubelet.waitFor('intel.com/dpdk', (d) => d.length > 0);
      assert.deepEqual(
        devices.map((d) => [d.ID, d.health]),
        [0, 1, 2].map((i) => [vf(i), 'Healthy']),
      );
      assert.deepEqual(plugin.debug().pools[0]!.devices.find((d) => d.id === vf(2))?.unit, [vf(2), vf(3)]);
      const alloc = await kubelet.admit({ namespace: 'default', name: 'unit', uid: 'unit' }, 'c', 'intel.com/dpdk', 1, [vf(2)]);
      assert.equal(alloc.response.envs.PCIDEVICE_INTEL_COM_DPDK, `${vf(2)},${vf(3)}`);
      const group = inv.devices.find((d) => d.address === vf(2))!.iommuGroup;
      assert.deepEqual(
        alloc.response.devices.map((d) => d.container_path),
        ['/dev/vfio/vfio', `/dev/vfio/${group}`],
      );
      writeFileSync(configFile, JSON.stringify({ resourceList: [] }));
      await plugin.resync();
      const released = discover(k.host());
      assert.deepEqual(
        [0, 1, 2, 3].map((i) => released.devices.find((d) => d.address === vf(i))?.driver),
        ['iavf', 'iavf', 'iavf', 'iavf'],
      );
      assert.ok(logs.some((l) => l.msg === 'released from vfio-pci'));
    } finally {
      await plugin.stop();
      await kubelet.stop();
    }
  });

  it('a pool with bindDriver advertises a VF the preflight refused as Unhealthy, with the reason, and never hands it out', async function () {
    this.timeout(20000);
    const k = fresh();
    const kubelet = new KubeletDouble(join(rig.dir('vfk2'), 'kubelet'));
    await kubelet.start();
    const configFile = join(rig.dir('vfc2'), 'config.json');
    writeFileSync(
      configFile,
      JSON.stringify({ resourceList: [{ resourceName: 'dpdk', bindDriver: 'vfio-pci', selectors: [{ devices: ['154c'], drivers: ['iavf'], pciAddresses: [vf(0), vf(1)] }] }] }),
    );
    // VF 1's netdev holds an address on the host.
    const netdevUse = async (): Promise<NetdevUse> => new Map([['ens1f0v1', ['192.0.2.1/24']]]);
    const plugin = new SriovDevicePlugin({ configFile, host: sriovHostOf(k), kubeletDir: kubelet.dir, devinfoDir: rig.dir('vfd2'), stateDir: rig.dir('vfs2'), resyncMs: 3_600_000, netdevUse });
    try {
      await plugin.start();
      const devices = await kubelet.waitFor('intel.com/dpdk', (d) => d.length === 2);
      assert.deepEqual(
        devices.map((d) => [d.ID, d.health]),
        [
          [vf(0), 'Healthy'],
          [vf(1), 'Unhealthy'],
        ],
      );
      assert.match(String(plugin.debug().pools[0]!.devices.find((d) => d.id === vf(1))?.reason), /not bound to vfio-pci \(iavf\): .*ens1f0v1 has addresses or routes \(192\.0\.2\.1\/24\)/);
      await assert.rejects(kubelet.admit({ namespace: 'default', name: 'dpdk', uid: 'dpdk' }, 'c', 'intel.com/dpdk', 1, [vf(1)]), /unhealthy/);
      const ok = await kubelet.admit({ namespace: 'default', name: 'dpdk', uid: 'dpdk' }, 'c', 'intel.com/dpdk', 1, [vf(0)]);
      assert.ok(
        ok.response.devices.some((d) => d.container_path === '/dev/vfio/vfio'),
        'the bound one comes with its vfio device nodes',
      );
    } finally {
      await plugin.stop();
      await kubelet.stop();
    }
  });
});
