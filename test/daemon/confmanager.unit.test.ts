import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { type DaemonProcess, startDaemon, stopDaemon } from '../support/daemon.js';
import { Rig } from '../support/rig.js';

async function until<T>(what: string, probe: () => T | undefined): Promise<T> {
  for (let i = 0; i < 60; i++) {
    const v = probe();
    if (v !== undefined) return v;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('daemon config manager', function () {
  this.timeout(60000);
  const rig = new Rig();
  let daemon: DaemonProcess | undefined;
  after(async () => {
    await stopDaemon(daemon);
    rig.cleanup();
  });

  it('writes 00-plexus.conflist once a cluster network conf appears, follows its changes, and never removes it', async () => {
    const dir = rig.dir('conf');
    const confDir = join(dir, 'net.d');
    mkdirSync(confDir);
    const socket = join(dir, 'plexus.sock');
    daemon = await startDaemon(socket, ['--cni-conf-dir', confDir, '--cni-bin-dir', '/opt/cni/bin']);
    const meta = join(confDir, '00-plexus.conflist');
    await sleep(300);
    assert.equal(existsSync(meta), false, 'no meta conf without a cluster network');

    const cluster = join(confDir, '10-flannel.conflist');
    writeFileSync(cluster, JSON.stringify({ cniVersion: '0.4.0', name: 'cbr0', plugins: [{ type: 'flannel' }, { type: 'portmap', capabilities: { portMappings: true } }] }));
    const first = await until('the meta conf', () => (existsSync(meta) ? (JSON.parse(readFileSync(meta, 'utf8')) as { cniVersion: string; plugins: Record<string, unknown>[] }) : undefined));
    assert.equal(first.cniVersion, '0.4.0');
    assert.equal(first.plugins[0]!.type, 'plexus-shim');
    assert.equal(first.plugins[0]!.daemonSocket, socket);
    assert.equal(first.plugins[0]!.clusterNetwork, cluster);
    assert.deepEqual(first.plugins[0]!.capabilities, { 'io.kubernetes.cri.pod-annotations': true, portMappings: true });

    writeFileSync(cluster, JSON.stringify({ cniVersion: '1.0.0', name: 'cbr0', plugins: [{ type: 'flannel' }, { type: 'bandwidth', capabilities: { bandwidth: true } }] }));
    const changed = await until('the rewrite', () => {
      const c = JSON.parse(readFileSync(meta, 'utf8')) as { cniVersion: string; plugins: { capabilities: Record<string, boolean> }[] };
      return c.cniVersion === '1.0.0' ? c : undefined;
    });
    assert.deepEqual(changed.plugins[0]!.capabilities, { 'io.kubernetes.cri.pod-annotations': true, bandwidth: true });

    rmSync(cluster);
    await sleep(600);
    assert.ok(existsSync(meta), 'the meta conf stays: no fallback to the cluster network alone');
    await stopDaemon(daemon);
    assert.ok(existsSync(meta), 'and stays when the daemon stops');
  });
});
