/** A hostile or broken NAD must never end the node daemon: every in-process failure path is driven through the shim. */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { SimNode, podEnv } from '../../src/sim/simnode.js';
import { FakeKernel } from '../../src/sim/fakekernel.js';
import { type DaemonProcess, startDaemon, stopDaemon } from '../support/daemon.js';
import { installShellPlugin, shimPath } from '../support/plugins.js';
import { Rig, linkExists } from '../support/rig.js';

const PF = '0000:5e:00.0';
const VF0 = '0000:5e:02.0';

describe('node daemon: hostile NADs through the in-process sriov plugin', function () {
  this.timeout(120000);
  const rig = new Rig();
  let node: SimNode;
  let kernel: FakeKernel;
  let daemon: DaemonProcess;
  let socket: string;
  const pfName = `plxhp${process.pid % 1000}`;
  before(async () => {
    node = new SimNode(rig.dir('hostile'));
    await node.start();
    kernel = FakeKernel.create(join(node.dir, 'host'), { realNetdevs: true, pfs: [{ address: PF, vendor: '8086', device: '158b', numVfs: 1, netdev: pfName }] });
    socket = join(node.dir, 'plexus.sock');
    // The daemon runs sriov in-process: an exec of the binary would fail the pod.
    installShellPlugin(node.binDir, 'sriov', `echo '{"code":999,"msg":"sriov was exec\'d instead of run in the daemon"}'; exit 1`);
    daemon = await startDaemon(socket, ['--sriov-host-root', kernel.root]);
  });
  after(async () => {
    await stopDaemon(daemon);
    kernel.destroy();
    await node.stop();
    rig.cleanup();
  });

  const nad = (name: string, config: Record<string, unknown>) =>
    node.api.put('k8s.cni.cncf.io/v1', 'network-attachment-definitions', {
      metadata: { name, namespace: 'default' },
      spec: { config: JSON.stringify({ cniVersion: '1.0.0', name, type: 'sriov', ...config }) },
    } as never);
  const ipam = () => ({ type: 'host-local', ranges: [[{ subnet: '10.98.0.0/24' }]], dataDir: join(node.dir, 'ipam') });

  const cases: [string, () => Record<string, unknown>, RegExp, string?][] = [
    ['broadcast MAC (refused before the VF moves)', () => ({ mac: 'ff:ff:ff:ff:ff:ff', ipam: ipam() }), /mac is the broadcast address/],
    ['multicast MAC', () => ({ mac: '01:00:5e:00:00:01', ipam: ipam() }), /mac is a multicast address/],
    ['IPAM subnet that does not parse (fails after the VF moved)', () => ({ ipam: { type: 'host-local', ranges: [[{ subnet: 'nonsense' }]], dataDir: join(node.dir, 'ipam') } }), /CIDR|nonsense/],
    ['ipam as a string', () => ({ ipam: 'host-local' }), /ipam/],
    ['hostRoot in the NAD (a tenant choosing the host root)', () => ({ hostRoot: '/', ipam: ipam() }), /hostRoot is not a network configuration key/],
    ['ipam.type that is a path (refused at ADD as at DEL)', () => ({ ipam: { type: '../../usr/bin/true' } }), /must be a plain plugin name/],
    ['a deviceID that is not a VF', () => ({ ipam: ipam() }), /is not a VF/, PF],
  ];
  for (const [i, [what, config, message, deviceID]] of cases.entries()) {
    it(`${what}: a JSON CNI error, the VF as it was, DEL converges, and the daemon keeps serving`, async () => {
      const name = `hostile-${i}`;
      nad(name, config());
      const before = JSON.stringify(kernel.pfVfs(pfName));
      const ns = rig.netns('h');
      const conf = node.shimConf(socket, { 'k8s.v1.cni.cncf.io/networks': JSON.stringify([{ name, deviceID: deviceID ?? VF0 }]) });
      const env = podEnv('ADD', `sb-hostile-${i}`, ns.path, { name: `p${i}`, namespace: 'default' });
      const add = await node.exec(env, conf, shimPath);
      assert.equal(add.status, 1, add.stdout + add.stderr);
      assert.equal(typeof add.json?.code, 'number', `a CNI error on stdout: ${add.stdout}`);
      assert.match(`${String(add.json?.msg)} ${String(add.json?.details ?? '')}`, message);
      assert.match(String(add.json?.details), new RegExp(`network default/${name} \\(NAD\\) as net1`), 'the error names the network, NAD and interface');
      assert.equal(daemon.exitCode, null, `the daemon is alive: ${JSON.stringify(daemon.logs.slice(-3))}`);
      assert.equal(daemon.signalCode, null);
      const del = await node.exec({ ...env, CNI_COMMAND: 'DEL' }, conf, shimPath);
      assert.equal(del.status, 0, del.stdout);
      assert.equal(JSON.stringify(kernel.pfVfs(pfName)), before, 'the PF side as it was');
      assert.ok(linkExists(`${pfName}v0`), 'the VF netdev is back on the host');
    });
  }

  it('a macvlan NAD whose master does not exist: ADD fails naming it, and the DEL after it converges (recorded as abandoned)', async () => {
    node.api.put('k8s.cni.cncf.io/v1', 'network-attachment-definitions', {
      metadata: { name: 'no-master', namespace: 'default' },
      spec: {
        config: JSON.stringify({
          cniVersion: '1.0.0',
          name: 'no-master',
          type: 'macvlan',
          master: 'plxnosuchlink',
          ipam: { type: 'host-local', ranges: [[{ subnet: '10.97.0.0/24' }]], dataDir: join(node.dir, 'ipam') },
        }),
      },
    } as never);
    const ns = rig.netns('m');
    const conf = node.shimConf(socket, { 'k8s.v1.cni.cncf.io/networks': 'no-master' });
    const env = podEnv('ADD', 'sb-nomaster', ns.path, { name: 'nomaster', namespace: 'default' });
    const add = await node.exec(env, conf, shimPath);
    assert.equal(add.status, 1);
    assert.match(String(add.json?.details), /network default\/no-master \(NAD\) as net1/);
    // Every DEL the runtime sends succeeds; it used to answer "DEL failed for 1 of 1 attachments" forever.
    for (let i = 0; i < 2; i++) {
      const del = await node.exec({ ...env, CNI_COMMAND: 'DEL' }, conf, shimPath);
      assert.equal(del.status, 0, del.stdout);
    }
    const record = node.attachments().read('sb-nomaster');
    assert.ok(record.kind === 'ok');
    assert.deepEqual(record.record.attachments, []);
    assert.deepEqual(
      record.record.abandoned?.map((a) => [a.network, a.ifName]),
      [['default/no-master', 'net1']],
    );
    const warnings = node.api.list('v1', 'events').filter((e) => (e as { reason?: string }).reason === 'NetworkAttachmentAbandoned');
    assert.ok(
      warnings.some((w) => /default\/no-master \(net1\): its ADD failed/.test(String((w as { message?: string }).message))),
      'a Warning event says what was given up',
    );
  });

  it('after all of them the daemon still serves a good ADD and its DEL, and logged no unhandled error', async () => {
    nad('good', { ipam: ipam() });
    const ns = rig.netns('g');
    const conf = node.shimConf(socket, { 'k8s.v1.cni.cncf.io/networks': JSON.stringify([{ name: 'good', deviceID: VF0 }]) });
    const env = podEnv('ADD', 'sb-good', ns.path, { name: 'good', namespace: 'default' });
    const add = await node.exec(env, conf, shimPath);
    assert.equal(add.status, 0, add.stdout);
    assert.equal((await node.exec({ ...env, CNI_COMMAND: 'DEL' }, conf, shimPath)).status, 0);
    assert.deepEqual(
      daemon.logs.filter((l) => /unhandled|uncaught/i.test(String(l.msg))),
      [],
    );
  });
});
