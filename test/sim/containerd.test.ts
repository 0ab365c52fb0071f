import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { ContainerdRig } from '../../src/sim/containerd.js';
import { hostLocalReservations } from '../../src/sim/hostlocal.js';
import { Rig, ipAddresses, ipJson, listNetns } from '../support/rig.js';

describe('containerd 1.6 CRI rig with the reference bridge plugin', function () {
  this.timeout(120000);
  const rig = new Rig();
  let cri: ContainerdRig;
  let ipam: string;
  const bridge = `plxcri${process.pid % 10000}`;
  before(async () => {
    const dir = rig.dir('cri');
    ipam = join(dir, 'ipam');
    rig.ownLink(bridge);
    cri = await ContainerdRig.start(join(dir, 'containerd'));
    writeFileSync(
      join(cri.confDir, '10-plx-cri.conflist'),
      JSON.stringify({
        cniVersion: '1.0.0',
        name: 'plx-cri',
        plugins: [
          {
            type: 'bridge',
            bridge,
            isGateway: false,
            ipam: { type: 'host-local', dataDir: ipam, ranges: [[{ subnet: '10.249.0.0/24', gateway: '10.249.0.1' }]], routes: [{ dst: '10.248.0.0/16', gw: '10.249.0.1' }] },
          },
        ],
      }),
    );
    await cri.waitReady();
  });
  after(async () => {
    await cri?.stop();
    rig.cleanup();
  });

  it('runs a pod sandbox on the conflist and tears it down leaving no link, netns or IP allocation', async () => {
    const version = await cri.call<{ runtime_name: string; runtime_api_version: string }>('Version', { version: 'v1' });
    assert.equal(version.runtime_name, 'containerd');
    assert.equal(version.runtime_api_version, 'v1');
    const linksBefore = ipJson<{ ifname: string }[]>(['link', 'show'])
      .map((l) => l.ifname)
      .filter((n) => n !== bridge);
    const netnsBefore = listNetns();

    const id = await cri.runPod({ name: 'plx-cri-pod', annotations: { 'k8s.v1.cni.cncf.io/networks': '[]' } });
    const status = await cri.podStatus(id);
    assert.equal(status.state, 'SANDBOX_READY');
    assert.ok(status.netns, 'containerd reports the sandbox netns');
    const nsName = basename(status.netns!);
    assert.ok(listNetns().includes(nsName));
    assert.deepEqual(ipAddresses(nsName, 'eth0'), [`${status.network?.ip}/24`]);
    assert.equal(hostLocalReservations(join(ipam, 'plx-cri')).length, 1);

    await cri.removePod(id);
    assert.deepEqual(await cri.listPods(), []);
    assert.equal(existsSync(status.netns!), false, 'netns removed');
    assert.deepEqual(listNetns(), netnsBefore);
    assert.deepEqual(hostLocalReservations(join(ipam, 'plx-cri')), [], 'IP released');
    assert.deepEqual(
      ipJson<{ ifname: string }[]>(['link', 'show'])
        .map((l) => l.ifname)
        .filter((n) => n !== bridge),
      linksBefore,
      'host veth removed',
    );
  });
});
