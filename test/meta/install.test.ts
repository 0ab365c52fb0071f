import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { basename, join } from 'node:path';
import { AttachmentStore } from '../../src/meta/store.js';
import { ContainerdRig } from '../../src/sim/containerd.js';
import { plexusctlPath } from '../support/plugins.js';
import { Rig, ipAddresses, listNetns } from '../support/rig.js';

function plexusctl(args: string[]): { status: number | null; json: Record<string, unknown> } {
  const r = spawnSync(plexusctlPath, args, { encoding: 'utf8' });
  return { status: r.status, json: JSON.parse(r.stdout) as Record<string, unknown> };
}

describe('plexusctl install (one-shot mode)', function () {
  this.timeout(120000);
  const rig = new Rig();
  let bin: string;
  let confDir: string;
  const bridge = 'plx-inst-br0';
  beforeEach(() => {
    const d = rig.dir('install');
    bin = join(d, 'bin');
    confDir = join(d, 'net.d');
    mkdirSync(bin);
    mkdirSync(confDir);
  });
  after(() => {
    rig.ownLink(bridge);
    rig.cleanup();
  });
  const clusterConf = (): string => {
    const file = join(confDir, '10-cluster.conflist');
    writeFileSync(
      file,
      JSON.stringify({
        cniVersion: '1.0.0',
        name: 'cluster',
        plugins: [
          { type: 'bridge', bridge, ipam: { type: 'host-local', dataDir: join(confDir, '..', 'ipam'), ranges: [[{ subnet: '10.75.0.0/24' }]] } },
          { type: 'portmap', capabilities: { portMappings: true } },
        ],
      }),
    );
    return file;
  };
  const args = (): string[] => ['install', '--mode', 'oneshot', '--cni-bin-dir', bin, '--cni-conf-dir', confDir, '--cni-dir', join(confDir, '..', 'plexus')];

  it('refuses to install before the cluster network conf exists, and writes nothing', () => {
    const r = plexusctl(args());
    assert.equal(r.status, 1);
    assert.equal(r.json.code, 11);
    assert.deepEqual(readdirSync(bin), []);
    assert.deepEqual(readdirSync(confDir), []);
  });

  it("writes 00-plexus.conflist with the cluster network's version and capabilities, and a self-contained plugin", () => {
    const cluster = clusterConf();
    const r = plexusctl(args());
    assert.equal(r.status, 0, JSON.stringify(r.json));
    const conf = JSON.parse(readFileSync(join(confDir, '00-plexus.conflist'), 'utf8')) as { cniVersion: string; plugins: Record<string, unknown>[] };
    assert.equal(conf.cniVersion, '1.0.0');
    assert.deepEqual(conf.plugins[0], {
      type: 'plexus',
      clusterNetwork: cluster,
      binDir: bin,
      capabilities: { 'io.kubernetes.cri.pod-annotations': true, portMappings: true },
      cniDir: join(confDir, '..', 'plexus'),
    });
    // runs from anywhere: nothing of the repository (node_modules, native/) is needed
    // A runtime's NODE_EXTRA_CA_CERTS (~80 ms per Node start) is dropped by the launcher: node would warn of a missing file.
    const version = spawnSync(join(bin, 'plexus'), [], { cwd: '/', env: { PATH: '/usr/bin:/bin', CNI_COMMAND: 'VERSION', NODE_EXTRA_CA_CERTS: '/nonexistent/ca.pem' }, input: '', encoding: 'utf8' });
    assert.equal(version.status, 0, version.stderr);
    assert.equal(version.stderr, '');
    assert.match(version.stdout, /"supportedVersions"/);
    assert.ok(existsSync(join(bin, 'plexus.d', String(r.json.version), 'node_modules', 'netlink', 'prebuilds')));
    // The SR-IOV plugin comes with it, as type "sriov".
    const sriov = spawnSync(join(bin, 'sriov'), [], { cwd: '/', env: { PATH: '/usr/bin:/bin' }, input: '', encoding: 'utf8' });
    assert.equal(sriov.status, 0, sriov.stderr);
    assert.match(sriov.stderr, /Plexus SR-IOV CNI plugin/);
  });

  it('daemon mode, the default, installs the static shim and writes type plexus-shim with the daemon socket', () => {
    clusterConf();
    const r = plexusctl(['install', '--cni-bin-dir', bin, '--cni-conf-dir', confDir, '--cni-dir', join(confDir, '..', 'plexus'), '--daemon-socket', '/run/plexus-test.sock']);
    assert.equal(r.status, 0, JSON.stringify(r.json));
    assert.equal(r.json.plugin, join(bin, 'plexus-shim'));
    const conf = JSON.parse(readFileSync(join(confDir, '00-plexus.conflist'), 'utf8')) as { plugins: Record<string, unknown>[] };
    assert.equal(conf.plugins[0]!.type, 'plexus-shim');
    assert.equal(conf.plugins[0]!.daemonSocket, '/run/plexus-test.sock');
    const version = spawnSync(join(bin, 'plexus-shim'), [], { env: { CNI_COMMAND: 'VERSION' }, input: '{"cniVersion":"0.4.0"}', encoding: 'utf8' });
    assert.equal(JSON.parse(version.stdout).cniVersion, '0.4.0');
    assert.equal(plexusctl([...args(), '--mode', 'sideways']).json.code, 4);
  });

  it("--kubelet-dir and --device-info-dir put kubelet's sockets and the device-info root of this node in the conf", () => {
    clusterConf();
    assert.equal(plexusctl([...args(), '--kubelet-dir', '/var/lib/k0s/kubelet', '--device-info-dir', '/run/devinfo']).status, 0);
    const plugin = (JSON.parse(readFileSync(join(confDir, '00-plexus.conflist'), 'utf8')) as { plugins: Record<string, unknown>[] }).plugins[0]!;
    assert.equal(plugin.podResourcesSocket, '/var/lib/k0s/kubelet/pod-resources/kubelet.sock');
    assert.equal(plugin.kubeletCheckpoint, '/var/lib/k0s/kubelet/device-plugins/kubelet_internal_checkpoint');
    assert.equal(plugin.deviceInfoDir, '/run/devinfo');
  });

  it('replaces the plugin by rename while an old instance runs, and keeps only the previous version', async () => {
    clusterConf();
    assert.equal(plexusctl(args()).status, 0);
    const launcher = join(bin, 'plexus');
    const before = statSync(launcher).ino;
    // An instance of the installed plugin that is running (it waits for its stdin).
    const running = spawn(launcher, [], { env: { PATH: '/usr/bin:/bin', CNI_COMMAND: 'VERSION' } });
    const output = new Promise<string>((resolve) => {
      let out = '';
      running.stdout.on('data', (c: Buffer) => (out += c.toString()));
      running.on('close', () => resolve(out));
    });
    await new Promise((r) => setTimeout(r, 300));
    for (const stale of ['aaaaaaaaaaaa', 'bbbbbbbbbbbb']) mkdirSync(join(bin, 'plexus.d', stale));
    const again = plexusctl(args());
    assert.equal(again.status, 0, JSON.stringify(again.json));
    assert.notEqual(statSync(launcher).ino, before, 'a new file renamed over the old one, never written in place');
    running.stdin.end('{"cniVersion":"1.0.0"}');
    assert.match(await output, /"cniVersion":"1.0.0"/, 'the running instance finished normally');
    const versions = readdirSync(join(bin, 'plexus.d'));
    assert.equal(versions.length, 2, `current and one previous: ${versions.join(', ')}`);
    assert.ok(versions.includes(String(again.json.version)));
  });

  it('containerd runs pods through the installed plugin and the generated conf', async () => {
    clusterConf();
    const cri = await ContainerdRig.start(join(confDir, '..', 'containerd'));
    try {
      // the rig's own conf and bin dirs: install into them as a node install would
      writeFileSync(join(cri.confDir, '10-cluster.conflist'), readFileSync(join(confDir, '10-cluster.conflist')));
      const r = plexusctl(['install', '--mode', 'oneshot', '--cni-bin-dir', cri.binDir, '--cni-conf-dir', cri.confDir, '--cni-dir', join(confDir, '..', 'plexus')]);
      assert.equal(r.status, 0, JSON.stringify(r.json));
      await cri.waitReady();
      const netnsBefore = listNetns();
      const id = await cri.runPod({ name: 'installed', namespace: 'default' });
      const status = await cri.podStatus(id);
      assert.deepEqual(ipAddresses(basename(status.netns!), 'eth0'), [`${status.network?.ip}/24`]);
      assert.ok(existsSync(join(confDir, '..', 'plexus', 'attachments', `${id}.jsonl`)), 'the installed plexus handled it');
      await cri.removePod(id);
      assert.deepEqual(listNetns(), netnsBefore);
      assert.deepEqual(new AttachmentStore(join(confDir, '..', 'plexus', 'attachments')).active(), []);

      // Uninstalled, the runtime's next pod gets the cluster network from its own conf, without Plexus.
      const un = plexusctl([
        'uninstall',
        '--cni-bin-dir',
        cri.binDir,
        '--cni-conf-dir',
        cri.confDir,
        '--cni-dir',
        join(confDir, '..', 'plexus'),
        '--daemon-socket',
        join(confDir, '..', 'no-daemon.sock'),
      ]);
      assert.equal(un.status, 0, JSON.stringify(un.json));
      assert.equal(un.json.clusterNetwork, join(cri.confDir, '10-cluster.conflist'));
      await new Promise((r) => setTimeout(r, 3000));
      const after = await cri.runPod({ name: 'uninstalled', namespace: 'default' });
      const st = await cri.podStatus(after);
      assert.deepEqual(ipAddresses(basename(st.netns!), 'eth0'), [`${st.network?.ip}/24`]);
      assert.equal(existsSync(join(confDir, '..', 'plexus', 'attachments', `${after}.jsonl`)), false, 'plexus no longer runs');
      await cri.removePod(after);
      assert.deepEqual(listNetns(), netnsBefore);
    } finally {
      await cri.stop();
    }
  });

  describe('plexusctl uninstall', () => {
    const uninstallArgs = (extra: string[] = []): string[] => [
      'uninstall',
      '--cni-bin-dir',
      bin,
      '--cni-conf-dir',
      confDir,
      '--cni-dir',
      join(confDir, '..', 'plexus'),
      '--daemon-socket',
      join(confDir, '..', 'plexus.sock'),
      ...extra,
    ];
    const SRIOV_CNI = '#!/bin/sh\n# stands in for sriov-cni\necho sriov-cni\n';

    it('removes the meta conf, shim and launchers, and puts back the sriov binary install replaced', () => {
      const cluster = clusterConf();
      writeFileSync(join(bin, 'sriov'), SRIOV_CNI, { mode: 0o755 });
      writeFileSync(join(bin, 'bridge'), 'not ours');
      assert.equal(plexusctl([...args(), '--mode', 'daemon', '--daemon-socket', join(confDir, '..', 'plexus.sock')]).status, 0);
      assert.notEqual(readFileSync(join(bin, 'sriov'), 'utf8'), SRIOV_CNI, 'install put its own sriov there');
      const r = plexusctl(uninstallArgs());
      assert.equal(r.status, 0, JSON.stringify(r.json));
      assert.deepEqual(readdirSync(confDir), [basename(cluster)]);
      assert.deepEqual(readdirSync(bin).sort(), ['bridge', 'sriov']);
      assert.equal(readFileSync(join(bin, 'sriov'), 'utf8'), SRIOV_CNI);
      assert.equal(statSync(join(bin, 'sriov')).mode & 0o777, 0o755);
      assert.equal(r.json.clusterNetwork, cluster);
      assert.deepEqual(r.json.restored, [join(bin, 'sriov')]);
      // Again: nothing left to do, and it says so by removing nothing.
      const again = plexusctl(uninstallArgs());
      assert.equal(again.status, 0);
      assert.deepEqual(again.json.removed, []);
    });

    it('refuses while pods are attached through Plexus (code 11, naming them) and changes nothing; --force goes ahead and lists them', () => {
      clusterConf();
      assert.equal(plexusctl(args()).status, 0);
      const store = new AttachmentStore(join(confDir, '..', 'plexus', 'attachments'));
      store.write({
        containerID: 'sandbox-attached',
        netns: '/run/netns/x',
        ifName: 'eth0',
        args: [],
        podNamespace: 'default',
        podName: 'p',
        podUID: 'u',
        cniVersion: '1.0.0',
        attachments: [{ network: 'default/a', ifName: 'net1', config: '{}', capabilityArgs: {}, isDefault: false, state: 'added' }],
      });
      const before = [readdirSync(bin).sort(), readdirSync(confDir).sort()];
      const r = plexusctl(uninstallArgs());
      assert.equal(r.status, 1);
      assert.equal(r.json.code, 11);
      assert.match(String(r.json.details), /1 sandbox\(es\) on this node \(sandbox-attached\); drain the node first/);
      assert.deepEqual([readdirSync(bin).sort(), readdirSync(confDir).sort()], before);
      const forced = plexusctl(uninstallArgs(['--force']));
      assert.equal(forced.status, 0, JSON.stringify(forced.json));
      assert.deepEqual(forced.json.abandoned, ['sandbox-attached']);
      assert.equal(existsSync(join(confDir, '00-plexus.conflist')), false);
    });

    it('refuses while a node daemon serves its socket, and leaves a 00-plexus.conflist it did not write', async () => {
      clusterConf();
      assert.equal(plexusctl(args()).status, 0);
      const socket = join(confDir, '..', 'plexus.sock');
      const server = createServer().listen(socket);
      await once(server, 'listening');
      try {
        const r = plexusctl(uninstallArgs());
        assert.equal(r.status, 1);
        assert.match(String(r.json.details), /plexus\.sock and would write the meta conf again/);
      } finally {
        server.close();
      }
      writeFileSync(join(confDir, '00-plexus.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'someone-else', plugins: [{ type: 'bridge' }] }));
      const foreign = plexusctl(uninstallArgs());
      assert.equal(foreign.status, 1);
      assert.equal(foreign.json.code, 7);
      assert.ok(existsSync(join(confDir, '00-plexus.conflist')));
    });
  });
});
