import assert from 'node:assert/strict';
import { NetError, NetHandle, parseCidr } from '../../src/net/netlink.js';
import { type Netns, hostNetnsPath, openNetns } from '../../src/net/netns.js';
import { Rig, ipAddresses, ipJson, linkExists, run } from '../support/rig.js';

describe('kernel layer (rtnetlink through the netlink package, setns addon)', () => {
  const rig = new Rig();
  let host: NetHandle;
  let hostNs: Netns;
  before(async () => {
    host = await NetHandle.open();
    hostNs = await openNetns(hostNetnsPath());
  });
  after(() => {
    host.close();
    hostNs.close();
    rig.cleanup();
  });

  it('moves and renames a link into a pod netns in one message, configures it, reads it back, and moves it home', async () => {
    const ns = rig.netns('nl');
    const [a] = rig.veth('n');
    const podNs = await openNetns(ns.path);
    const pod = await NetHandle.open(podNs);
    try {
      await host.moveTo(a!, podNs, 'net1');
      assert.equal(linkExists(a!), false);
      await pod.setMac('net1', '02:11:22:33:44:55');
      await pod.setMtu('net1', 1400);
      await pod.setUp('net1');
      await pod.addAddress('net1', '10.99.0.5/24');
      await pod.addAddress('net1', 'fd00:99::5/64');
      await pod.addRoute({ dst: '10.98.0.0/16', gw: '10.99.0.1', dev: 'net1' });
      await pod.addRoute({ dst: 'fd00:98::/64', gw: 'fd00:99::1', dev: 'net1' });

      // iproute2 as the oracle
      const [link] = ipJson<{ address: string; mtu: number; flags: string[] }[]>(['-n', ns.name, 'link', 'show', 'net1']);
      assert.equal(link?.address, '02:11:22:33:44:55');
      assert.equal(link?.mtu, 1400);
      assert.ok(link?.flags.includes('UP'));
      assert.deepEqual(ipAddresses(ns.name, 'net1').sort(), ['10.99.0.5/24', 'fd00:99::5/64']);
      const [v6] = ipJson<{ addr_info: { local: string; tentative?: boolean }[] }[]>(['-n', ns.name, '-6', 'addr', 'show', 'net1']);
      assert.equal(v6?.addr_info.find((x) => x.local === 'fd00:99::5')?.tentative, undefined, 'NODAD: not tentative');
      assert.ok(ipJson<{ dst: string; gateway: string }[]>(['-n', ns.name, 'route']).some((r) => r.dst === '10.98.0.0/16' && r.gateway === '10.99.0.1'));
      assert.ok(ipJson<{ dst: string; gateway: string }[]>(['-n', ns.name, '-6', 'route']).some((r) => r.dst === 'fd00:98::/64' && r.gateway === 'fd00:99::1'));

      // our own read-back agrees
      const info = await pod.link('net1');
      assert.deepEqual([info.mac, info.mtu, info.up], ['02:11:22:33:44:55', 1400, true]);
      assert.deepEqual(
        (await pod.addresses('net1'))
          .filter((x) => x.scope === 0)
          .map((x) => x.address)
          .sort(),
        ['10.99.0.5/24', 'fd00:99::5/64'],
      );
      assert.ok((await pod.routes(4)).some((r) => r.dst === '10.98.0.0/16' && r.gw === '10.99.0.1'));
      assert.ok((await pod.routes(6)).some((r) => r.dst === 'fd00:98::/64' && r.gw === 'fd00:99::1'));

      await pod.delRoute({ dst: '10.98.0.0/16', gw: '10.99.0.1', dev: 'net1' });
      await pod.delAddress('net1', '10.99.0.5/24');
      assert.deepEqual(ipAddresses(ns.name, 'net1'), ['fd00:99::5/64']);

      await pod.moveTo('net1', hostNs, a!);
      assert.ok(linkExists(a!));
      assert.equal(linkExists('net1', ns.name), false);
    } finally {
      pod.close();
      podNs.close();
    }
  });

  it('errors carry the errno name, the operation and its arguments', async () => {
    const ns = rig.netns('nle');
    const [a] = rig.veth('e');
    const pod = await NetHandle.openPath(ns.path);
    try {
      await assert.rejects(host.link('plxnosuch0'), (e: unknown) => e instanceof NetError && e.code === 'ENODEV' && /plxnosuch0/.test(e.message));
      await host.addAddress(a!, '10.97.0.1/24');
      await assert.rejects(host.addAddress(a!, '10.97.0.1/24'), (e: unknown) => e instanceof NetError && e.code === 'EEXIST' && /10\.97\.0\.1\/24/.test(e.message));
      // veth has no VFs: the kernel answers EOPNOTSUPP (the package says ENOTSUP)
      await assert.rejects(host.setVf(a!, 0, { kind: 'trust', on: true }), (e: unknown) => e instanceof NetError && e.code === 'EOPNOTSUPP');
      assert.deepEqual(await host.vfs(a!), []);
      // moving onto a taken name fails with EEXIST and leaves the link where it was
      run('ip', ['-n', ns.name, 'link', 'add', 'taken0', 'type', 'veth', 'peer', 'name', 'taken1']);
      const podNs = await openNetns(ns.path);
      await assert.rejects(host.moveTo(a!, podNs, 'taken0'), (e: unknown) => e instanceof NetError && e.code === 'EEXIST');
      podNs.close();
      assert.ok(linkExists(a!));
      assert.ok(await pod.findLink('taken0'));
      assert.equal(await pod.findLink('plxnosuch0'), undefined);
    } finally {
      pod.close();
    }
  });

  it('a handle stays bound to its netns after the main thread has switched back', async () => {
    const ns = rig.netns('bind');
    const pod = await NetHandle.openPath(ns.path);
    try {
      assert.deepEqual(
        (await pod.links()).map((l) => l.name),
        ['lo'],
      );
      assert.ok((await host.links()).some((l) => l.name === 'lo'));
      assert.ok((await host.links()).length > 1, 'host handle still sees host links');
      // fs work after a switch still happens in the host netns (threadpool warmed before the first setns)
      assert.match(run('cat', ['/proc/net/dev']), /lo:/);
    } finally {
      pod.close();
    }
  });

  it('sets a link down and deletes it', async () => {
    const [a, b] = rig.veth('d');
    await host.setUp(a!);
    assert.ok(ipJson<{ flags: string[] }[]>(['link', 'show', a!])[0]?.flags.includes('UP'));
    await host.setUp(a!, false);
    assert.ok(!ipJson<{ flags: string[] }[]>(['link', 'show', a!])[0]?.flags.includes('UP'));
    assert.equal((await host.link(a!)).up, false);
    await host.deleteLink(a!);
    assert.equal(linkExists(a!), false);
    assert.equal(linkExists(b!), false, 'the veth peer goes with it');
    await assert.rejects(host.deleteLink(a!), (e: unknown) => e instanceof NetError && e.code === 'ENODEV');
  });

  it('parseCidr validates addresses and prefixes', () => {
    assert.deepEqual(parseCidr('10.1.2.3/8').prefix, 8);
    assert.equal(parseCidr('2001:db8::1').prefix, 128);
    assert.throws(() => parseCidr('10.1.2.3/33'), /bad prefix/);
    assert.throws(() => parseCidr('nonsense/8'), /not an IP/);
    assert.throws(() => parseCidr('10.0.0.1/8x'), /bad prefix/);
  });
});
