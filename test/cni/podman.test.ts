import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { plexusctlPath, REFERENCE_PLUGINS } from '../support/plugins.js';
import { PodmanRig } from '../support/podman.js';
import { Rig } from '../support/rig.js';

const LIBCNI_CACHE = '/var/lib/cni/results';

describe('result cache compared with a libcni runtime (podman 4.3, CNI backend)', function () {
  this.timeout(120000);
  const rig = new Rig();
  let podman: PodmanRig;
  const bridge = `plxpod${process.pid % 10000}`;
  const net = `plx-podman-${process.pid}`;
  before(() => {
    rig.ownLink(bridge);
    podman = new PodmanRig(rig.dir('podman'), [REFERENCE_PLUGINS]);
    writeFileSync(
      join(podman.confDir, `${net}.conflist`),
      `${JSON.stringify({ cniVersion: '1.0.0', name: net, plugins: [{ type: 'bridge', bridge, ipam: { type: 'host-local', dataDir: join(podman.dir, 'ipam'), ranges: [[{ subnet: '10.247.0.0/24' }]] } }] })}\n`,
    );
    podman.importBusybox();
  });
  after(() => {
    podman?.cleanup();
    rig.cleanup();
  });

  it('plexusctl writes the entry podman writes: same keys in the same order, same config bytes, same result shape', () => {
    const cid = podman.podman(['run', '-d', '--name', `plxc${process.pid}`, '--network', net, PodmanRig.IMAGE, 'sleep', '600']);
    let theirs: Record<string, unknown>;
    try {
      theirs = JSON.parse(readFileSync(join(LIBCNI_CACHE, `${net}-${cid}-eth0`), 'utf8')) as Record<string, unknown>;
    } finally {
      podman.podman(['rm', '-f', '-t', '0', cid]);
    }
    assert.equal(readdirSync(LIBCNI_CACHE).filter((f) => f.startsWith(net)).length, 0, 'podman removed its entry on DEL');

    const ns = rig.netns('pod');
    const cacheDir = rig.dir('cache');
    const ctl = (cmd: string): ReturnType<typeof spawnSync> =>
      spawnSync(
        plexusctlPath,
        [
          'cni',
          cmd,
          net,
          ns.path,
          '--conf-dir',
          podman.confDir,
          '--cni-path',
          REFERENCE_PLUGINS,
          '--cache-dir',
          cacheDir,
          '--container-id',
          'plxcid1',
          '--args',
          'IgnoreUnknown=1;K8S_POD_NAME=p1',
          '--cap-args',
          '{"aliases":{"x":["y"]}}',
        ],
        { encoding: 'utf8' },
      );
    const add = ctl('add');
    assert.equal(add.status, 0, String(add.stdout));
    const ours = JSON.parse(readFileSync(join(cacheDir, 'results', `${net}-plxcid1-eth0`), 'utf8')) as Record<string, unknown>;
    try {
      // libcni 1.1 has no `netns`; newer libcni writes it right after networkName, as Plexus does.
      assert.deepEqual(
        Object.keys(ours).filter((k) => k !== 'netns'),
        Object.keys(theirs),
      );
      assert.equal(Object.keys(ours).indexOf('netns'), Object.keys(ours).indexOf('networkName') + 1);
      assert.equal(ours.kind, theirs.kind);
      assert.equal(ours.config, theirs.config, 'both cache the conflist file bytes, base64');
      assert.deepEqual(ours.cniArgs, [
        ['IgnoreUnknown', '1'],
        ['K8S_POD_NAME', 'p1'],
      ]);
      assert.deepEqual(theirs.cniArgs, [
        ['IgnoreUnknown', '1'],
        ['K8S_POD_NAME', `plxc${process.pid}`],
      ]);
      const shape = (r: unknown): unknown => {
        const res = r as { cniVersion: string; interfaces: { name: string; sandbox?: string }[]; ips: { interface: number }[] };
        return { cniVersion: res.cniVersion, interfaces: res.interfaces.map((i) => Object.keys(i).sort()), ips: res.ips.map((i) => Object.keys(i).sort()) };
      };
      assert.deepEqual(shape(ours.result), shape(theirs.result));
    } finally {
      const del = ctl('del');
      assert.equal(del.status, 0, String(del.stdout));
    }
  });
});
