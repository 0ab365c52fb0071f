import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { runPlugin } from '../../src/cni/skel.js';
import { sriovPlugin } from '../../src/sriov/plugin.js';
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
    const add = await runPlugin(sriovPlugin, {
      env: { ...process.env, CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'cli', CNI_NETNS: ns.path, CNI_IFNAME: 'net1', CNI_PATH: '/usr/lib/cni', PLEXUS_SRIOV_HOST_ROOT: root },
      readStdin: async () => Buffer.from(JSON.stringify({ cniVersion: '1.0.0', name: 'n', type: 'sriov', deviceID: '0000:5e:02.1', vlan: 7, trust: 'on' })),
      stdout: () => undefined,
      stderr: () => undefined,
    });
    assert.equal(add, 0);
    const tables = JSON.parse(execFileSync(plexusctlPath, ['sriov', 'vfs', '--sysfs-root', root, '-o', 'json']).toString()) as { pfNetdev: string; vfs: { vf: number; vlan: number; trust: boolean; address: string; where: string }[] }[];
    assert.equal(tables[0]!.pfNetdev, pf);
    assert.deepEqual(tables[0]!.vfs.map((v) => [v.vf, v.address, v.vlan, v.trust, v.where]), [
      [0, '0000:5e:02.0', 0, false, `${pf}v0 (host)`],
      [1, '0000:5e:02.1', 7, true, `net1 in ${ns.path}`],
    ]);
    const table = execFileSync(plexusctlPath, ['sriov', 'vfs'], { env: { ...process.env, PLEXUS_SRIOV_HOST_ROOT: root } }).toString();
    assert.match(table, new RegExp(`${pf}\\s+1\\s+0000:5e:02\\.1\\s+\\S+\\s+7/0/802\\.1Q\\s+on\\s+on\\s+auto\\s+0/0\\s+net1 in ${ns.path}`));
    execFileSync(plexusctlPath, ['sriov', 'host', 'destroy', root]);
    assert.equal(existsSync(root), false);
    assert.equal(linkExists(`${pf}v0`), false);
  });
});
