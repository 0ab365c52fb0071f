import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { runPlugin } from '../../src/cni/skel.js';
import { sriovPluginWith } from '../../src/sriov/plugin.js';
import { simulatedSriovHost } from '../../src/sim/sriov-host.js';
import { plexusctlPath } from '../support/plugins.js';
import { Rig, linkExists } from '../support/rig.js';

describe('plexusctl sriov host create | vfs | host destroy', function () {
  this.timeout(30000);
  const rig = new Rig();
  after(() => rig.cleanup());

  it('builds a simulated host with real VF netdevs, shows the VF tables with where each netdev is, and removes it all', async () => {
    const root = join(rig.dir('cli'), 'host');
    const pf = `plxc${process.pid % 1000}`;
    execFileSync(plexusctlPath, ['sriov', 'host', 'create', root, '--pf', `0000:5e:00.0:8086:158b:2:${pf}`]);
    assert.ok(linkExists(`${pf}v0`) && linkExists(`${pf}v1`), 'VF netdevs are real links');
    const ns = rig.netns('cv');
    const add = await runPlugin(
      sriovPluginWith(async () => simulatedSriovHost(root)!),
      {
        env: { ...process.env, CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'cli', CNI_NETNS: ns.path, CNI_IFNAME: 'net1', CNI_PATH: '/usr/lib/cni' },
        readStdin: async () => Buffer.from(JSON.stringify({ cniVersion: '1.0.0', name: 'n', type: 'sriov', deviceID: '0000:5e:02.1', vlan: 7, trust: 'on' })),
        stdout: () => undefined,
        stderr: () => undefined,
      },
    );
    assert.equal(add, 0);
    const tables = JSON.parse(execFileSync(plexusctlPath, ['sriov', 'vfs', '--sysfs-root', root, '-o', 'json']).toString()) as {
      pfNetdev: string;
      vfs: { vf: number; vlan: number; trust: boolean; address: string; where: string }[];
    }[];
    assert.equal(tables[0]!.pfNetdev, pf);
    assert.deepEqual(
      tables[0]!.vfs.map((v) => [v.vf, v.address, v.vlan, v.trust, v.where]),
      [
        [0, '0000:5e:02.0', 0, false, `${pf}v0 (host)`],
        [1, '0000:5e:02.1', 7, true, `net1 in ${ns.path}`],
      ],
    );
    const table = execFileSync(plexusctlPath, ['sriov', 'vfs'], { env: { ...process.env, PLEXUS_SRIOV_HOST_ROOT: root } }).toString();
    assert.match(table, new RegExp(`${pf}\\s+1\\s+0000:5e:02\\.1\\s+\\S+\\s+7/0/802\\.1Q\\s+on\\s+on\\s+auto\\s+0/0\\s+net1 in ${ns.path}`));
    execFileSync(plexusctlPath, ['sriov', 'host', 'destroy', root]);
    assert.equal(existsSync(root), false);
    assert.equal(linkExists(`${pf}v0`), false);
  });

  it('two PFs on one bus get disjoint VFs, each PF its NUMA node, a PF netdev can be a real link; destroy leaves no link', () => {
    const root = join(rig.dir('cli2'), 'host');
    const [p0, p1] = [`plxd${process.pid % 1000}a`, `plxd${process.pid % 1000}b`];
    execFileSync(plexusctlPath, ['sriov', 'host', 'create', root, '--pf', `0000:5e:00.0:8086:158b:2:${p0},numa=0,real-pf`, `0000:5e:00.1:8086:158b:2:${p1},numa=1`]);
    try {
      const report = JSON.parse(execFileSync(plexusctlPath, ['sriov', 'discover', '--sysfs-root', root, '-o', 'json']).toString()) as {
        devices: { pciAddress: string; pf: string | null; numaNode: number; netdevs: string[] }[];
      };
      const vfs = report.devices.filter((d) => d.pf).map((d) => [d.pciAddress, d.pf, d.numaNode, d.netdevs.join()]);
      assert.deepEqual(vfs, [
        ['0000:5e:02.0', '0000:5e:00.0', 0, `${p0}v0`],
        ['0000:5e:02.1', '0000:5e:00.0', 0, `${p0}v1`],
        ['0000:5e:03.0', '0000:5e:00.1', 1, `${p1}v0`],
        ['0000:5e:03.1', '0000:5e:00.1', 1, `${p1}v1`],
      ]);
      assert.ok(linkExists(p0), 'real-pf: the PF netdev is a real link');
      assert.equal(linkExists(p1), false);
      for (const l of [`${p0}v0`, `${p0}v1`, `${p1}v0`, `${p1}v1`]) assert.ok(linkExists(l), l);
    } finally {
      execFileSync(plexusctlPath, ['sriov', 'host', 'destroy', root]);
    }
    for (const l of [p0, `${p0}v0`, `${p0}v1`, `${p1}v0`, `${p1}v1`]) assert.equal(linkExists(l), false, `${l} removed`);
  });

  it('VFs that would land on another function are refused (EBUSY) instead of replacing it', () => {
    const root = join(rig.dir('cli3'), 'host');
    const r = spawnSync(plexusctlPath, ['sriov', 'host', 'create', root, '--pf', '0000:5e:00.0:8086:158b:4:plxe0', '0000:5e:00.1:8086:158b:4:plxe1,offset=16'], { encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /VF address 0000:5e:02\.1 of 0000:5e:00\.1 is taken by another function/);
    const bad = spawnSync(plexusctlPath, ['sriov', 'host', 'create', join(rig.dir('cli4'), 'host'), '--pf', '0000:5e:00.0:8086:158b:4:plxe0,numa=x'], { encoding: 'utf8' });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /"numa=x" is not one of numa=N/);
  });
});
