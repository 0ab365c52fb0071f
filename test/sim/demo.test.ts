import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { plexusctlPath } from '../support/plugins.js';
import { listNetns } from '../support/rig.js';

describe('plexusctl demo (the simulated node of the README quick start)', function () {
  this.timeout(120000);

  for (const [mode, args] of [
    ['through containerd', []],
    ['with plain netns (--no-cri)', ['--no-cri']],
  ] as const) {
    it(`runs the example pods (one with an SR-IOV VF) ${mode}, shows their interfaces and network-status, and leaves nothing`, () => {
      const r = spawnSync(plexusctlPath, ['demo', ...args], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stdout + r.stderr);
      assert.match(r.stdout, mode === 'through containerd' ? /containerd 1\.6 \(CRI\) runs the pods/ : /plain network namespaces/);
      assert.match(r.stdout, /default\/two-nets\s+data0\s+\S+\s+10\.77\.0\.9\/24/);
      assert.match(r.stdout, /network-status: net1 ← default\/macvlan-a/);
      assert.match(r.stdout, /default\/vf-stand-in\s+vf0\s+\S+\s+10\.77\.3\.10\/24/);
      assert.match(r.stdout, /default\/comma-list\s+net1/);
      assert.match(r.stdout, /kubelet allocated VF 0000:5e:02\.\d/);
      assert.match(r.stdout, /default\/sriov-pod\s+net1\s+02:00:5e:1\d:00:01\s+10\.99\.0\.\d+\/24/);
      assert.match(r.stdout, /network-status: net1 ← default\/sriov-a/);
      assert.match(r.stdout, /torn down: 4 pods removed, the VF back on the host as it was; no netns, link, IP reservation or attachment record left\./);
      assert.deepEqual(
        listNetns().filter((n) => n.startsWith('plx')),
        [],
      );
    });
  }
});
