import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { addsInFlight, waitForAddsInFlight } from '../../src/meta/orphans.js';
import type { AttachmentRecord } from '../../src/meta/store.js';
import { podEnv, repoRoot } from '../../src/sim/simnode.js';
import { installShellPlugin } from '../support/plugins.js';
import { useSimNode } from '../support/simnode.js';
import { Rig, ipJson, linkExists } from '../support/rig.js';

const NETWORKS = 'k8s.v1.cni.cncf.io/networks';

describe('meta plugin lifecycle: STATUS, GC, CHECK, default route, Multus-style confs', function () {
  this.timeout(60000);
  const rig = new Rig();
  const node = useSimNode(rig, 'life');
  after(() => rig.cleanup());

  const conf = (annotations: Record<string, string>, extra: Record<string, unknown> = {}, version = '1.1.0') => node.podConf(annotations, extra, version);
  const pod = { name: 'life', namespace: 'default' };
  const records = (): string[] => node.attachments().active().sort();
  const storedRecord = (id: string): AttachmentRecord => {
    const read = node.attachments().read(id);
    assert.equal(read.kind, 'ok');
    return (read as { record: AttachmentRecord }).record;
  };

  it('STATUS answers 50 while the readiness indicator is missing, then asks every network in use', async () => {
    const indicator = join(node.dir, 'cluster-ready');
    const notReady = await node.exec({ CNI_COMMAND: 'STATUS' }, conf({}, { readinessindicatorfile: indicator }));
    assert.equal(notReady.status, 1);
    assert.equal(notReady.json?.code, 50);
    assert.match(String(notReady.json?.details), /cluster-ready/);
    // and ADD while not ready is "try again later", never a fallback
    const ns = rig.netns('r');
    const add = await node.exec(podEnv('ADD', 'sb-ready', ns.path, pod), conf({}, { readinessindicatorfile: indicator }));
    assert.equal(add.json?.code, 11);
    await node.exec(podEnv('DEL', 'sb-ready', ns.path, pod), conf({}, { readinessindicatorfile: indicator }));
    writeFileSync(indicator, '');
    const ready = await node.exec({ CNI_COMMAND: 'STATUS' }, conf({}, { readinessindicatorfile: indicator }));
    assert.equal(ready.status, 0, ready.stdout + ready.stderr);
  });

  it('GC deletes attachments of sandboxes that are not valid and keeps the valid ones', async () => {
    const a = rig.netns('ga');
    const b = rig.netns('gb');
    const annotations = { [NETWORKS]: 'macvlan-a' };
    assert.equal((await node.exec(podEnv('ADD', 'sb-keep', a.path, pod), conf(annotations))).status, 0);
    const gone = await node.exec(podEnv('ADD', 'sb-stale', b.path, pod), conf(annotations));
    assert.equal(gone.status, 0, gone.stdout);
    assert.deepEqual(records(), ['sb-keep', 'sb-stale']);
    const gc = await node.exec({ CNI_COMMAND: 'GC', CNI_PATH: '/usr/lib/cni' }, { ...conf({}), 'cni.dev/valid-attachments': [{ containerID: 'sb-keep', ifname: 'eth0' }] });
    assert.equal(gc.status, 0, gc.stdout + gc.stderr);
    assert.deepEqual(records(), ['sb-keep']);
    assert.deepEqual(node.attachments().list(), ['sb-keep'], 'GC removes the records of invalid sandboxes, empty ones too');
    assert.equal(linkExists('net1', b.name), false, 'the stale sandbox lost its attachments');
    assert.ok(linkExists('net1', a.name), 'the valid one kept them');
    assert.equal((await node.exec(podEnv('DEL', 'sb-keep', a.path, pod), conf(annotations))).status, 0);
  });

  it('CHECK verifies every attachment against its stored result and fails when one is broken', async () => {
    const ns = rig.netns('c');
    const annotations = { [NETWORKS]: '[{"name":"bridge-b","interface":"data0","ips":["10.77.0.9/24"]}]' };
    assert.equal((await node.exec(podEnv('ADD', 'sb-check', ns.path, pod), conf(annotations))).status, 0);
    const ok = await node.exec(podEnv('CHECK', 'sb-check', ns.path, pod), conf(annotations));
    assert.equal(ok.status, 0, ok.stdout + ok.stderr);
    ipJson(['-n', ns.name, 'addr', 'flush', 'dev', 'data0']);
    const broken = await node.exec(podEnv('CHECK', 'sb-check', ns.path, pod), conf(annotations));
    assert.equal(broken.status, 1, 'the address is gone');
    assert.equal((await node.exec(podEnv('DEL', 'sb-check', ns.path, pod), conf(annotations))).status, 0);
    const unknown = await node.exec(podEnv('CHECK', 'sb-never', ns.path, pod), conf(annotations));
    assert.equal(unknown.json?.code, 3);
  });

  it('moves the default route onto the attachment that asks for it, and reports it in network-status', async () => {
    const ns = rig.netns('g');
    node.api.put('v1', 'pods', { metadata: { name: 'gw', namespace: 'default' }, spec: { nodeName: 'plx-node' } } as never);
    const annotations = { [NETWORKS]: '[{"name":"bridge-b","interface":"data0","ips":["10.77.0.9/24"],"default-route":["10.77.0.1"]}]' };
    const add = await node.exec(podEnv('ADD', 'sb-gw', ns.path, { name: 'gw', namespace: 'default' }), conf(annotations));
    assert.equal(add.status, 0, add.stdout + add.stderr);
    const defaults = ipJson<{ dst: string; gateway?: string; dev: string }[]>(['-n', ns.name, 'route', 'show', 'default']);
    assert.deepEqual(
      defaults.map((r) => [r.gateway, r.dev]),
      [['10.77.0.1', 'data0']],
    );
    const status = JSON.parse(node.api.get('v1', 'pods', 'default', 'gw')!.metadata.annotations!['k8s.v1.cni.cncf.io/network-status']!) as Record<string, unknown>[];
    assert.equal(status[0]!['default-route'], undefined, 'the cluster network no longer carries it');
    assert.deepEqual(status[1]!['default-route'], ['10.77.0.1']);
    assert.equal((await node.exec(podEnv('DEL', 'sb-gw', ns.path, { name: 'gw', namespace: 'default' }), conf(annotations))).status, 0);
  });

  it('works with a Multus thin-style conf: inline delegates, no kubeconfig, NADs as files in confDir', async () => {
    const ns = rig.netns('t');
    writeFileSync(
      join(node.multusConfDir, 'files-net.conf'),
      JSON.stringify({ cniVersion: '0.4.0', name: 'files-net', type: 'macvlan', master: 'plx-mv-master', ipam: { type: 'static', addresses: [{ address: '10.77.5.5/24' }] } }),
    );
    const cluster = {
      cniVersion: '0.4.0',
      name: 'inline-cluster',
      type: 'bridge',
      bridge: node.clusterBridge,
      ipam: { type: 'host-local', dataDir: join(node.dir, 'ipam'), ranges: [[{ subnet: '10.76.0.0/24' }]] },
    };
    const { kubeconfig: _kubeconfig, clusterNetwork: _cluster, ...rest } = node.metaConf({}, '0.4.0');
    const multusStyle = { ...rest, delegates: [cluster], runtimeConfig: { 'io.kubernetes.cri.pod-annotations': { [NETWORKS]: 'files-net' } } };
    const add = await node.exec(podEnv('ADD', 'sb-thin', ns.path, pod), multusStyle);
    assert.equal(add.status, 0, add.stdout + add.stderr);
    assert.equal(add.json?.cniVersion, '0.4.0', 'the result comes back in the runtime version');
    assert.ok(linkExists('net1', ns.name));
    assert.equal((await node.exec(podEnv('DEL', 'sb-thin', ns.path, pod), multusStyle)).status, 0);
    assert.equal(linkExists('eth0', ns.name), false);
  });

  it('keeps the plugins libcni appends from <dir>/<name>/*.conf in the executed and stored config', async () => {
    const ns = rig.netns('x');
    const dir = join(node.dir, 'chained');
    mkdirSync(join(dir, 'chained'), { recursive: true });
    writeFileSync(
      join(dir, '10-chained.conflist'),
      JSON.stringify({
        cniVersion: '1.0.0',
        name: 'chained',
        plugins: [{ type: 'bridge', bridge: node.clusterBridge, ipam: { type: 'host-local', dataDir: join(node.dir, 'ipam'), ranges: [[{ subnet: '10.76.0.0/24' }]] } }],
      }),
    );
    writeFileSync(join(dir, 'chained', '50-mtu.conf'), JSON.stringify({ type: 'tuning', mtu: 1300 }));
    const chainedConf = { ...conf({}, { clusterNetwork: join(dir, '10-chained.conflist') }) };
    const add = await node.exec(podEnv('ADD', 'sb-chain', ns.path, pod), chainedConf);
    assert.equal(add.status, 0, add.stdout + add.stderr);
    assert.equal(ipJson<{ mtu: number }[]>(['-n', ns.name, 'link', 'show', 'eth0'])[0]?.mtu, 1300, 'the appended tuning plugin ran');
    const stored = storedRecord('sb-chain');
    assert.deepEqual(
      (JSON.parse(stored.attachments[0]!.config) as { plugins: { type: string }[] }).plugins.map((p) => p.type),
      ['bridge', 'tuning'],
    );
    assert.equal((await node.exec(podEnv('DEL', 'sb-chain', ns.path, pod), chainedConf)).status, 0);
    assert.equal(linkExists('eth0', ns.name), false);
  });

  it('runs the Multus auxiliary chain (<dir of clusterNetwork>/<chain>/*.conf) for every pod, after its networks', async () => {
    const ns = rig.netns('a');
    const dir = join(node.dir, 'aux');
    mkdirSync(join(dir, 'vendor-chain'), { recursive: true });
    writeFileSync(join(dir, '10-cluster.conflist'), readFileSync(node.clusterConflist));
    // tuning as the vendor's chained plugin: it works on the prevResult it is given (here empty)
    writeFileSync(join(dir, 'vendor-chain', '10-sysctl.conf'), JSON.stringify({ cniVersion: '1.1.0', name: 'ignored', type: 'tuning' }));
    const auxConf = conf({ [NETWORKS]: 'macvlan-a' }, { clusterNetwork: join(dir, '10-cluster.conflist'), auxiliaryCNIChainName: 'vendor-chain' }, '1.0.0');
    node.api.put('v1', 'pods', { metadata: { name: 'aux', namespace: 'default' }, spec: { nodeName: 'plx-node' } } as never);
    const env = podEnv('ADD', 'sb-aux', ns.path, { name: 'aux', namespace: 'default' });
    const add = await node.exec(env, auxConf);
    assert.equal(add.status, 0, add.stdout + add.stderr);
    const stored = storedRecord('sb-aux');
    assert.deepEqual(
      stored.attachments.map((a) => [a.network, a.auxiliary === true, a.state]),
      [
        ['cluster', false, 'added'],
        ['default/macvlan-a', false, 'added'],
        ['vendor-chain', true, 'added'],
      ],
    );
    const status = JSON.parse(node.api.get('v1', 'pods', 'default', 'aux')!.metadata.annotations!['k8s.v1.cni.cncf.io/network-status']!) as { name: string }[];
    assert.deepEqual(
      status.map((e) => e.name),
      ['cluster', 'default/macvlan-a'],
      'no status entry for the chain',
    );
    assert.equal((await node.exec({ ...env, CNI_COMMAND: 'DEL' }, auxConf)).status, 0);
    assert.deepEqual(
      records().filter((r) => r === 'sb-aux'),
      [],
    );
  });

  it('rotates the log file by size (logOptions maxSize / maxBackups)', async () => {
    const { rotateLog } = await import('../../src/util/linelog.js');
    const file = join(node.dir, 'rot.log');
    writeFileSync(file, 'x'.repeat(2 * 1024 * 1024));
    writeFileSync(`${file}.1`, 'older');
    rotateLog(file, { maxSize: 1, maxBackups: 2 });
    assert.equal(existsSync(file), false);
    assert.equal(readFileSync(`${file}.2`, 'utf8'), 'older');
    assert.equal(readFileSync(`${file}.1`).length, 2 * 1024 * 1024);
    writeFileSync(file, 'small');
    rotateLog(file, { maxSize: 1, maxBackups: 2 });
    assert.equal(readFileSync(file, 'utf8'), 'small', 'under maxSize nothing moves');
  });

  it('a DEL after an ADD whose process was killed waits for the delegates it left running, then undoes what they made', async () => {
    const ns = rig.netns('o');
    const marks = rig.dir('orphan-marks');
    // A delegate that takes a while and leaves a mark of its work, which its DEL removes.
    installShellPlugin(
      node.binDir,
      'plx-slow',
      `cat >/dev/null; case "$CNI_COMMAND" in
ADD) touch ${marks}/started; sleep 1; touch ${marks}/made-$CNI_CONTAINERID; echo '{"cniVersion":"1.0.0","interfaces":[],"ips":[]}' ;;
DEL) rm -f ${marks}/made-$CNI_CONTAINERID ;;
esac`,
    );
    node.api.put('k8s.cni.cncf.io/v1', 'network-attachment-definitions', {
      metadata: { name: 'slow-x', namespace: 'default' },
      spec: { config: '{"cniVersion":"1.0.0","name":"slow-x","type":"plx-slow"}' },
    } as never);
    const slowConf = conf({ [NETWORKS]: 'slow-x' });
    const env = { PATH: process.env.PATH ?? '', CNI_PATH: '/usr/lib/cni', ...podEnv('ADD', 'sb-orphan', ns.path, pod) };
    const plexus = spawn(join(repoRoot(), 'bin', 'plexus'), [], { env, stdio: ['pipe', 'ignore', 'ignore'] });
    plexus.stdin.end(JSON.stringify(slowConf));
    while (!existsSync(join(marks, 'started')) && plexus.exitCode === null) await sleep(10);
    assert.ok(existsSync(join(marks, 'started')), 'plexus got as far as the slow delegate');
    plexus.kill('SIGKILL');
    await new Promise((resolve) => plexus.once('exit', resolve));
    // The runtime's DEL comes at once, while the delegate is still at work.
    const del = await node.exec(podEnv('DEL', 'sb-orphan', ns.path, pod), slowConf);
    assert.equal(del.status, 0, del.stdout + del.stderr);
    assert.deepEqual(addsInFlight('sb-orphan'), [], 'DEL returned only once the orphaned delegate was done');
    assert.equal(existsSync(join(marks, 'made-sb-orphan')), false, 'what the orphan made is undone');
    assert.equal(linkExists('eth0', ns.name), false);
    assert.deepEqual(records(), []);
  });

  it('finds processes adding a sandbox by their CNI environment, not by name', async () => {
    const sleeper = spawn('/bin/sleep', ['30'], { env: { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'sb-env-probe' } });
    const deleting = spawn('/bin/sleep', ['30'], { env: { CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'sb-env-probe' } });
    // Until a child has exec'd, its environ is this process's.
    const started = (pid: number | undefined) => existsSync(`/proc/${pid}/environ`) && readFileSync(`/proc/${pid}/environ`, 'latin1').includes('CNI_CONTAINERID=sb-env-probe');
    try {
      while (!started(sleeper.pid) || !started(deleting.pid)) await sleep(10);
      assert.deepEqual(addsInFlight('sb-env-probe'), [sleeper.pid]);
      assert.deepEqual(addsInFlight('sb-env-prob'), [], 'the whole ID, not a prefix');
      sleeper.kill('SIGKILL');
      assert.deepEqual(await waitForAddsInFlight('sb-env-probe', 5000), []);
    } finally {
      sleeper.kill('SIGKILL');
      deleting.kill('SIGKILL');
    }
  });
});
