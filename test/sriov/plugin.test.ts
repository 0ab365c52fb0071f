import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { runPlugin } from '../../src/cni/skel.js';
import { repoRoot } from '../../src/sim/simnode.js';
import { FakeKernel } from '../../src/sim/fakekernel.js';
import { sriovPluginWith } from '../../src/sriov/plugin.js';
import { simulatedSriovHost } from '../../src/sim/sriov-host.js';
import { Rig, ipAddresses, ipJson, linkExists } from '../support/rig.js';
import { waitFor } from '../support/wait.js';

const PF = '0000:5e:00.0';
const vf = (i: number) => `0000:5e:02.${i}`;
const DEFAULT_VFINFO = { mac: '00:00:00:00:00:00', vlan: 0, qos: 0, vlanProto: '802.1Q', spoofchk: true, trust: false, linkState: 'auto', minTxRate: 0, maxTxRate: 0 };

interface Run {
  code: number;
  out: Record<string, unknown>;
}

describe('sriov CNI plugin on a simulated host (veth ends stand in for VF netdevs)', function () {
  this.timeout(30000);
  const rig = new Rig();
  let kernel: FakeKernel;
  let ipamDir: string;
  let pfName: string;
  const vfName = (i: number) => `${pfName}v${i}`;
  before(() => {
    pfName = `plxpf${process.pid % 1000}`;
    kernel = FakeKernel.create(join(rig.dir('sriov'), 'host'), { realNetdevs: true, pfs: [{ address: PF, vendor: '8086', device: '158b', numVfs: 3, netdev: pfName, vfio: [2] }] });
    ipamDir = rig.dir('ipam');
  });
  after(() => {
    kernel.destroy();
    rig.cleanup();
  });

  const conf = (extra: Record<string, unknown> = {}) => ({
    cniVersion: '1.0.0',
    name: 'sriov-net',
    type: 'sriov',
    deviceID: vf(0),
    ipam: { type: 'host-local', ranges: [[{ subnet: '10.88.0.0/24' }]], dataDir: ipamDir },
    ...extra,
  });

  async function run(command: string, c: object, containerID: string, netns: string, ifName = 'net1', extraEnv: Record<string, string> = {}): Promise<Run> {
    let stdout = '';
    // As the sriov executable does: the host opened afresh for every request.
    const code = await runPlugin(
      sriovPluginWith(async () => simulatedSriovHost(kernel.root)!),
      {
        env: { ...process.env, CNI_COMMAND: command, CNI_CONTAINERID: containerID, CNI_NETNS: netns, CNI_IFNAME: ifName, CNI_PATH: '/usr/lib/cni', ...extraEnv },
        readStdin: async () => Buffer.from(JSON.stringify(c)),
        stdout: (t) => (stdout += t),
        stderr: () => undefined,
      },
    );
    return { code, out: stdout ? (JSON.parse(stdout) as Record<string, unknown>) : {} };
  }
  const vfinfo = (i: number) => {
    const { vf: _vf, ...rest } = kernel.pfVfs(pfName)[i]!;
    return rest;
  };
  const hostLink = (name: string) => ipJson<{ ifname: string; address: string; mtu: number; flags: string[] }[]>(['link', 'show', 'dev', name])[0]!;
  const leases = () => (existsSync(join(ipamDir, 'sriov-net')) ? readdirSync(join(ipamDir, 'sriov-net')).filter((f) => /^\d/.test(f)) : []);

  it('ADD puts the VF in the pod with name, MAC, MTU and IP, the PF calls match the config; DEL restores everything; DEL again succeeds', async () => {
    const ns = rig.netns('sv');
    const before = hostLink(vfName(0));
    const callsBefore = kernel.pfCalls().length;
    const logFile = join(rig.dir('slog'), 'sriov.log');
    const deviceInfo = join(rig.dir('sdi'), 'cni', 'sriov-net-c-add_net1');
    const c = conf({
      vlan: 100,
      vlanQoS: 2,
      vlanProto: '802.1ad',
      mac: '02:11:22:33:44:55',
      spoofchk: 'off',
      trust: 'on',
      link_state: 'enable',
      min_tx_rate: 10,
      max_tx_rate: 100,
      mtu: 1400,
      logFile,
      runtimeConfig: { CNIDeviceInfoFile: deviceInfo },
    });
    const add = await run('ADD', c, 'c-add', ns.path);
    assert.equal(add.code, 0, JSON.stringify(add.out));
    assert.deepEqual((add.out.interfaces as object[])[0], { name: 'net1', sandbox: ns.path, pciID: vf(0), mac: '02:11:22:33:44:55', mtu: 1400 });
    const link = ipJson<{ address: string; mtu: number; flags: string[] }[]>(['-n', ns.name, 'link', 'show', 'dev', 'net1'])[0]!;
    assert.deepEqual([link.address, link.mtu, link.flags.includes('UP')], ['02:11:22:33:44:55', 1400, true]);
    assert.equal(ipAddresses(ns.name, 'net1').length, 1);
    assert.equal(linkExists(vfName(0)), false, 'gone from the host');
    assert.deepEqual(kernel.pfCalls().slice(callsBefore), [
      `${pfName} vf 0 {"kind":"vlan","vlan":100,"qos":2,"proto":"802.1ad"}`,
      `${pfName} vf 0 {"kind":"mac","mac":"02:11:22:33:44:55"}`,
      `${pfName} vf 0 {"kind":"rate","minTxRate":10,"maxTxRate":100}`,
      `${pfName} vf 0 {"kind":"spoofchk","on":false}`,
      `${pfName} vf 0 {"kind":"trust","on":true}`,
      `${pfName} vf 0 {"kind":"linkState","state":"enable"}`,
    ]);
    assert.deepEqual(vfinfo(0), { mac: '02:11:22:33:44:55', vlan: 100, qos: 2, vlanProto: '802.1ad', spoofchk: false, trust: true, linkState: 'enable', minTxRate: 10, maxTxRate: 100 });
    assert.equal((await run('CHECK', { ...c, prevResult: add.out }, 'c-add', ns.path)).code, 0);
    assert.equal(leases().length, 1);
    assert.deepEqual(JSON.parse(readFileSync(deviceInfo, 'utf8')), { type: 'pci', version: '1.1.0', pci: { 'pci-address': vf(0), 'pf-pci-address': PF } });

    const del = await run('DEL', c, 'c-add', ns.path);
    assert.equal(existsSync(deviceInfo), false, 'the device-info file goes with the attachment');
    assert.equal(del.code, 0, JSON.stringify(del.out));
    assert.deepEqual(vfinfo(0), DEFAULT_VFINFO);
    const after = hostLink(vfName(0));
    assert.deepEqual([after.address, after.mtu, after.flags.includes('UP')], [before.address, before.mtu, false], 'name, MAC, MTU and state as before');
    assert.deepEqual(
      ipJson<{ ifname: string }[]>(['-n', ns.name, 'link', 'show']).map((l) => l.ifname),
      ['lo'],
    );
    assert.deepEqual(leases(), [], 'the IPAM lease is released');
    assert.equal((await run('DEL', c, 'c-add', ns.path)).code, 0, 'a repeated DEL succeeds');
    const logged = readFileSync(logFile, 'utf8');
    assert.match(logged, /\[info\] ADD c-add\/net1 VF 0000:5e:02\.0 .* attached as net1/);
    assert.match(logged, /\[info\] DEL c-add\/net1 VF 0000:5e:02\.0 restored and released/);
  });

  it('"vlan" absent leaves the VF VLAN alone; vlan 0 clears it', async () => {
    kernel.pfSetVf(pfName, 1, { kind: 'vlan', vlan: 7, qos: 0, proto: '802.1Q' });
    const ns = rig.netns('sl');
    const calls = kernel.pfCalls().length;
    assert.equal((await run('ADD', conf({ deviceID: vf(1) }), 'c-nv', ns.path)).code, 0);
    assert.equal(vfinfo(1).vlan, 7);
    assert.equal(kernel.pfCalls().length, calls, 'no PF call at all');
    assert.equal((await run('DEL', conf({ deviceID: vf(1) }), 'c-nv', ns.path)).code, 0);
    assert.equal((await run('ADD', conf({ deviceID: vf(1), vlan: 0 }), 'c-v0', ns.path)).code, 0);
    assert.equal(vfinfo(1).vlan, 0);
    assert.equal((await run('DEL', conf({ deviceID: vf(1), vlan: 0 }), 'c-v0', ns.path)).code, 0);
    assert.equal(vfinfo(1).vlan, 7, 'restored to what it was');
    kernel.pfSetVf(pfName, 1, { kind: 'vlan', vlan: 0, qos: 0, proto: '802.1Q' });
  });

  it('an ADD that fails half way leaves the VF exactly as it was: PF side, netdev, IPAM, state', async () => {
    kernel.setQuirks(pfName, { unsupported: ['linkState'] });
    try {
      const ns = rig.netns('sf');
      const before = hostLink(vfName(0));
      const add = await run('ADD', conf({ vlan: 5, mac: '02:aa:bb:cc:dd:ee', trust: 'on', link_state: 'disable' }), 'c-fail', ns.path);
      assert.equal(add.code, 1);
      assert.match(String(add.out.msg), /EOPNOTSUPP/);
      assert.deepEqual(vfinfo(0), DEFAULT_VFINFO);
      const after = hostLink(vfName(0));
      assert.deepEqual([after.address, after.mtu], [before.address, before.mtu]);
      assert.deepEqual(
        ipJson<{ ifname: string }[]>(['-n', ns.name, 'link', 'show']).map((l) => l.ifname),
        ['lo'],
      );
      assert.deepEqual(leases(), []);
      assert.deepEqual(readdirSync(join(kernel.root, 'var/lib/cni/plexus-sriov/vfs')), []);
    } finally {
      kernel.setQuirks(pfName, {});
    }
  });

  it('an ADD that fails after the move (IPAM) puts the netdev back in the host as it was', async () => {
    const ns = rig.netns('si');
    const before = hostLink(vfName(0));
    const add = await run('ADD', conf({ vlan: 9, mtu: 1300, ipam: { type: 'host-local', ranges: [[{ subnet: 'not-a-subnet' }]], dataDir: ipamDir } }), 'c-ipam', ns.path);
    assert.equal(add.code, 1);
    const after = hostLink(vfName(0));
    assert.deepEqual([after.address, after.mtu, after.flags.includes('UP')], [before.address, before.mtu, false]);
    assert.deepEqual(
      ipJson<{ ifname: string }[]>(['-n', ns.name, 'link', 'show']).map((l) => l.ifname),
      ['lo'],
    );
    assert.deepEqual(vfinfo(0), DEFAULT_VFINFO);
    assert.deepEqual(readdirSync(join(kernel.root, 'var/lib/cni/plexus-sriov/vfs')), []);
  });

  it('moves through a temporary netns: a pod link named like the VF host netdev is no clash; one named like ifName fails cleanly', async () => {
    const ns = rig.netns('st');
    // The pod already has a link carrying the VF's host name, and one called net2.
    execFileSync('ip', ['-n', ns.name, 'link', 'add', vfName(0), 'type', 'veth', 'peer', 'name', 'net2']);
    const add = await run('ADD', conf(), 'c-temp', ns.path);
    assert.equal(add.code, 0, JSON.stringify(add.out));
    assert.ok(ipJson<{ ifname: string }[]>(['-n', ns.name, 'link', 'show']).some((l) => l.ifname === 'net1'));
    assert.equal((await run('DEL', conf(), 'c-temp', ns.path)).code, 0);
    assert.ok(linkExists(vfName(0)), 'back home under its name although the pod has a link of that name');
    const clash = await run('ADD', conf(), 'c-clash', ns.path, 'net2');
    assert.equal(clash.code, 1);
    assert.match(String(clash.out.msg), /EEXIST/);
    assert.ok(linkExists(vfName(0)), 'not destroyed with the temporary netns: back in the host');
    assert.deepEqual(vfinfo(0), DEFAULT_VFINFO);
    assert.deepEqual(leases(), []);
  });

  it('waits for a PF driver that applies the admin MAC asynchronously (iavf)', async () => {
    kernel.setQuirks(pfName, { macDelayMs: 300 });
    try {
      const ns = rig.netns('sm');
      const add = await run('ADD', conf({ mac: '02:00:00:00:00:42' }), 'c-mac', ns.path);
      assert.equal(add.code, 0, JSON.stringify(add.out));
      assert.equal(vfinfo(0).mac, '02:00:00:00:00:42');
      assert.equal((await run('DEL', conf({ mac: '02:00:00:00:00:42' }), 'c-mac', ns.path)).code, 0);
      assert.equal(vfinfo(0).mac, '00:00:00:00:00:00');
    } finally {
      kernel.setQuirks(pfName, {});
    }
  });

  it('DPDK mode: a vfio-bound VF gets its PF-side settings and IPAM, nothing in the pod; DEL restores', async () => {
    const ns = rig.netns('sd');
    const c = conf({ deviceID: vf(2), vlan: 300, spoofchk: 'off' });
    const add = await run('ADD', c, 'c-dpdk', ns.path);
    assert.equal(add.code, 0, JSON.stringify(add.out));
    assert.equal((add.out.ips as object[]).length, 1);
    assert.deepEqual(
      ipJson<{ ifname: string }[]>(['-n', ns.name, 'link', 'show']).map((l) => l.ifname),
      ['lo'],
    );
    assert.deepEqual([vfinfo(2).vlan, vfinfo(2).spoofchk], [300, false]);
    assert.equal((await run('DEL', c, 'c-dpdk', ns.path)).code, 0);
    assert.deepEqual(vfinfo(2), DEFAULT_VFINFO);
    assert.deepEqual(leases(), []);
  });

  it('refuses a VF another live pod holds, and takes over one whose pod netns is gone', async () => {
    const ns1 = rig.netns('s1');
    const ns2 = rig.netns('s2');
    assert.equal((await run('ADD', conf({ vlan: 11 }), 'c-one', ns1.path)).code, 0);
    const second = await run('ADD', conf(), 'c-two', ns2.path);
    assert.equal(second.code, 1);
    assert.match(String(second.out.msg), /already allocated/);
    // The first pod's netns goes away without a DEL: the VF is free again, reset before reuse.
    execFileSync('ip', ['netns', 'del', ns1.name]);
    const third = await run('ADD', conf(), 'c-two', ns2.path);
    assert.equal(third.code, 0, JSON.stringify(third.out));
    assert.equal(vfinfo(0).vlan, 0, "the old pod's VLAN is gone");
    assert.equal((await run('DEL', conf(), 'c-two', ns2.path)).code, 0);
    assert.equal((await run('DEL', conf({ vlan: 11 }), 'c-one', ns1.path)).code, 0, 'the late DEL of the first pod is harmless');
    assert.deepEqual(leases(), []);
  });

  it('GC returns a VF stranded by a killed ADD to the host in its original state', async () => {
    const ns = rig.netns('sg');
    const before = hostLink(vfName(0));
    const env = { ...process.env, CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c-killed', CNI_NETNS: ns.path, CNI_IFNAME: 'net1', CNI_PATH: '/usr/lib/cni', PLEXUS_SRIOV_HOST_ROOT: kernel.root };
    // The PF applies the MAC late, so the plugin is surely mid-ADD when it is killed.
    kernel.setQuirks(pfName, { macDelayMs: 5000 });
    let child: ChildProcess | undefined;
    try {
      child = spawn(join(repoRoot(), 'bin', 'sriov'), [], { env, stdio: ['pipe', 'ignore', 'ignore'] });
      child.stdin!.end(JSON.stringify(conf({ vlan: 42, mac: '02:00:00:00:00:99', trust: 'on' })));
      await waitFor('the ADD to change the PF side', () => vfinfo(0).vlan === 42, 10000);
      const exited = new Promise((r) => child!.once('exit', r));
      child.kill('SIGKILL');
      await exited;
    } finally {
      kernel.setQuirks(pfName, {});
    }
    assert.equal(vfinfo(0).vlan, 42, 'stranded: the PF side is changed');
    const gc = await run('GC', { cniVersion: '1.1.0', name: 'sriov-net', type: 'sriov', 'cni.dev/valid-attachments': [] }, '', '');
    assert.equal(gc.code, 0, JSON.stringify(gc.out));
    assert.deepEqual(vfinfo(0), DEFAULT_VFINFO);
    const after = hostLink(vfName(0));
    assert.deepEqual([after.address, after.mtu], [before.address, before.mtu]);
    assert.deepEqual(readdirSync(join(kernel.root, 'var/lib/cni/plexus-sriov/vfs')), []);
    assert.deepEqual(leases(), []);
  });

  it('names the field of a bad config (code 7) and changes nothing', async () => {
    const ns = rig.netns('sb');
    const bad: [object, RegExp][] = [
      [conf({ deviceID: undefined }), /deviceID is required/],
      [conf({ vlan: 4095 }), /vlan must be an integer in 0\.\.4094/],
      [conf({ vlanQoS: 3 }), /vlanQoS needs vlan/],
      [conf({ vlan: 0, vlanProto: '802.1ad' }), /802\.1ad needs a non-zero vlan/],
      [conf({ link_state: 'up' }), /link_state must be auto, enable or disable/],
      [conf({ mac: 'nope' }), /mac is not a MAC address/],
      [conf({ mac: 'ff:ff:ff:ff:ff:ff' }), /mac is the broadcast address/],
      [conf({ mac: '33:33:00:00:00:01' }), /mac is a multicast address/],
      [conf({ deviceID: '0000:99:00.0' }), /PCI device 0000:99:00\.0 not found/],
      [conf({ deviceID: PF }), /is not a VF/],
    ];
    const calls = kernel.pfCalls().length;
    for (const [c, re] of bad) {
      const r = await run('ADD', c, 'c-bad', ns.path);
      assert.equal(r.code, 1);
      assert.equal(r.out.code, 7, JSON.stringify(r.out));
      assert.match(String(r.out.msg), re);
    }
    assert.equal(kernel.pfCalls().length, calls);
  });
});
