import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { plexusctlPath } from '../support/plugins.js';
import { listNetns } from '../support/rig.js';

describe('plexusctl demo --cluster (the demo pods on the real node)', function () {
  this.timeout(300_000);

  it('runs the example pods through scheduler, kubelet and containerd (one with a VF the real kubelet allocated), prints the demo table, and leaves nothing', async () => {
    const netnsBefore = listNetns().sort();
    // Asynchronous: the demo runs for ~a minute, the test's own timers keep running.
    const r = await new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(plexusctlPath, ['demo', '--cluster']);
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      child.on('close', (status) => resolve({ status, stdout, stderr }));
    });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /real node up in [\d.]+ s: kube-apiserver https:\/\/127\.0\.0\.1:16443/);
    // The rows of plexusctl demo, from the real node.
    assert.match(r.stdout, /default\/two-nets\s+data0\s+\S+\s+10\.77\.0\.9\/24/);
    assert.match(r.stdout, /network-status: net1 ← default\/macvlan-a/);
    assert.match(r.stdout, /network-status: eth0 ← cluster \(default\) 10\.244\.0\.\d+/);
    assert.match(r.stdout, /default\/vf-stand-in\s+vf0\s+\S+\s+10\.77\.3\.10\/24/);
    assert.match(r.stdout, /default\/comma-list\s+net1/);
    assert.match(r.stdout, /kubelet allocated VF 0000:5e:02\.\d/);
    assert.match(r.stdout, /default\/sriov-pod\s+net1\s+\S+\s+10\.99\.0\.\d+\/24/);
    assert.match(r.stdout, /network-status: net1 ← default\/sriov-a/);
    assert.match(r.stdout, /\d+ AddedInterface Events/);
    assert.match(r.stdout, /torn down: 4 pods deleted with kubectl, the VF back on the host as it was, the node down; no netns, link, IP reservation or attachment record left\./);
    assert.deepEqual(listNetns().sort(), netnsBefore);
  });
});
