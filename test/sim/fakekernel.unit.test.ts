import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { discover } from '../../src/sriov/discover.js';
import { simulatedSriovHost } from '../../src/sim/sriov-host.js';
import { FakeKernel } from '../../src/sim/fakekernel.js';
import { Rig } from '../support/rig.js';

const PF = '0000:5e:00.0';
const vfAddr = (i: number) => `0000:5e:02.${i}`;

describe('fake kernel: sysfs layout and write semantics', () => {
  const rig = new Rig();
  after(() => rig.cleanup());
  const make = (opts: Parameters<typeof FakeKernel.create>[1]) => FakeKernel.create(join(rig.dir('fk'), 'host'), opts);

  it('lays devices out only under sys/devices, every other view a relative link as the kernel makes it', () => {
    const k = make({
      pfs: [
        { address: PF, vendor: '8086', device: '158b', numVfs: 2, netdev: 'ens1f0' },
        { address: '0000:af:00.0', vendor: '15b3', device: '1017', numVfs: 1, behindSwitch: true },
      ],
    });
    const r = (p: string) => readlinkSync(join(k.root, p));
    assert.equal(r(`sys/bus/pci/devices/${PF}`), `../../../devices/pci0000:5d/0000:5d:00.0/${PF}`);
    const pfDir = `sys/devices/pci0000:5d/0000:5d:00.0/${PF}`;
    assert.equal(r(`${pfDir}/driver`), '../../../../bus/pci/drivers/i40e');
    assert.equal(r(`${pfDir}/virtfn1`), `../${vfAddr(1)}`);
    assert.equal(r(`sys/devices/pci0000:5d/0000:5d:00.0/${vfAddr(1)}/physfn`), `../${PF}`);
    assert.equal(r('sys/class/net/ens1f0'), `../../devices/pci0000:5d/0000:5d:00.0/${PF}/net/ens1f0`);
    assert.equal(r(`${pfDir}/net/ens1f0/device`), `../../../${PF}`);
    assert.match(r(`sys/kernel/iommu_groups/${k.host().linkName(`${pfDir}/iommu_group`)}/devices/${PF}`), /^\.\.\/\.\.\/\.\.\/\.\.\/devices\/pci0000:5d\//);
    // Behind a PCIe switch (upstream + downstream port) every link climbs two more levels.
    assert.equal(r('sys/bus/pci/devices/0000:af:00.0/driver'), '../../../../../../bus/pci/drivers/mlx5_core');
    // The tree is relocatable: a copy elsewhere discovers the same devices.
    const copy = join(rig.dir('fkcopy'), 'host');
    execFileSync('cp', ['-a', k.root, copy]);
    const strip = (root: string) => discover(simulatedSriovHost(root)!.sysfs).devices.map((d) => ({ ...d }));
    assert.deepEqual(strip(copy), strip(k.root));
    assert.equal(strip(copy).find((d) => d.address === vfAddr(1))?.vfIndex, 1);
  });

  it('sriov_numvfs: ERANGE above sriov_totalvfs, EBUSY from non-zero to non-zero, 0 removes every VF and its links', () => {
    const k = make({ pfs: [{ address: PF, vendor: '8086', device: '158b', totalVfs: 4, numVfs: 2, netdev: 'ens1f0' }] });
    const host = k.host();
    const numvfs = `sys/bus/pci/devices/${PF}/sriov_numvfs`;
    assert.throws(() => host.write(numvfs, '5'), { code: 'ERANGE' });
    assert.throws(() => host.write(numvfs, '3'), { code: 'EBUSY' });
    assert.equal(host.read(numvfs), '2');
    host.write(numvfs, '0');
    assert.equal(host.read(numvfs), '0');
    assert.equal(existsSync(join(k.root, `sys/bus/pci/devices/${vfAddr(0)}`)), false);
    assert.equal(existsSync(join(k.root, 'sys/class/net/ens1f0v0')), false);
    assert.deepEqual(
      host.list(`sys/bus/pci/drivers/iavf`).filter((e) => e.startsWith('0000')),
      [],
    );
    host.write(numvfs, '4');
    assert.deepEqual(
      host.list(`sys/bus/pci/devices/${PF}`).filter((e) => e.startsWith('virtfn')),
      ['virtfn0', 'virtfn1', 'virtfn2', 'virtfn3'],
    );
    // VF routing ids: PF rid + offset (16) + i * stride (1).
    assert.equal(host.linkName(`sys/bus/pci/devices/${PF}/virtfn3`), vfAddr(3));
    assert.equal(host.linkName(`sys/bus/pci/devices/${vfAddr(3)}/driver`), 'iavf');
  });

  it('driver_override → unbind → drivers_probe binds vfio-pci and creates /dev/vfio/<group>; clearing it and probing rebinds the default driver', () => {
    const k = make({ pfs: [{ address: PF, vendor: '8086', device: '158b', numVfs: 1, netdev: 'ens1f0' }] });
    const host = k.host();
    const vf = `sys/bus/pci/devices/${vfAddr(0)}`;
    const group = host.linkName(`${vf}/iommu_group`)!;
    host.write(`${vf}/driver_override`, 'vfio-pci\n');
    assert.equal(host.read(`${vf}/driver_override`), 'vfio-pci');
    host.write(`${vf}/driver/unbind`, vfAddr(0));
    assert.equal(host.linkName(`${vf}/driver`), undefined);
    assert.deepEqual(host.list(`${vf}/net`), [], 'the netdev goes with the driver');
    host.write('sys/bus/pci/drivers_probe', vfAddr(0));
    assert.equal(host.linkName(`${vf}/driver`), 'vfio-pci');
    assert.ok(host.exists(`dev/vfio/${group}`));
    assert.throws(() => host.write('sys/bus/pci/drivers/iavf/bind', vfAddr(0)), { code: 'EBUSY' });
    host.write(`${vf}/driver_override`, '\n');
    assert.equal(host.read(`${vf}/driver_override`), '(null)');
    host.write('sys/bus/pci/drivers/vfio-pci/unbind', vfAddr(0));
    assert.equal(host.exists(`dev/vfio/${group}`), false, 'the group node goes with its last vfio member');
    host.write('sys/bus/pci/drivers_probe', vfAddr(0));
    assert.equal(host.linkName(`${vf}/driver`), 'iavf');
    assert.deepEqual(host.list(`${vf}/net`), ['ens1f0v0']);
  });

  it('refuses what the kernel refuses: vfio-pci without an IOMMU group, bind of a driver that does not match; new_id grabs every matching device', () => {
    const k = make({ iommu: 'off', pfs: [{ address: PF, vendor: '8086', device: '158b', numVfs: 3, netdev: 'ens1f0' }] });
    const host = k.host();
    const vf = `sys/bus/pci/devices/${vfAddr(0)}`;
    host.write(`${vf}/driver_override`, 'vfio-pci');
    host.write(`${vf}/driver/unbind`, vfAddr(0));
    assert.throws(() => host.write('sys/bus/pci/drivers_probe', vfAddr(0)), { code: 'EINVAL' });
    assert.equal(host.linkName(`${vf}/driver`), undefined, 'left unbound');
    assert.throws(() => host.write('sys/bus/pci/drivers/i40e/bind', vfAddr(0)), { code: 'ENODEV' });
    for (const i of [1, 2]) host.write(`sys/bus/pci/drivers/iavf/unbind`, vfAddr(i));
    host.write('sys/bus/pci/drivers/iavf/new_id', '8086 154c');
    assert.deepEqual(
      [1, 2].map((i) => host.linkName(`sys/bus/pci/devices/${vfAddr(i)}/driver`)),
      ['iavf', 'iavf'],
    );
  });

  it('another process sees the same kernel: plexusctl through PLEXUS_SRIOV_HOST_ROOT', async () => {
    const k = make({ pfs: [{ address: PF, vendor: '8086', device: '158b', numVfs: 2, netdev: 'ens1f0' }] });
    k.host().write(`sys/bus/pci/devices/${vfAddr(1)}/driver_override`, 'vfio-pci');
    const { plexusctlPath } = await import('../support/plugins.js');
    const out = JSON.parse(execFileSync(plexusctlPath, ['sriov', 'discover', '-o', 'json'], { env: { ...process.env, PLEXUS_SRIOV_HOST_ROOT: k.root } }).toString()) as {
      devices: { pciAddress: string; pool: string | null }[];
    };
    assert.equal(out.devices.find((d) => d.pciAddress === vfAddr(0))?.pool, 'intel.com/intel_sriov_netdevice');
  });
});
