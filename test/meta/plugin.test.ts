import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { hostLocalReservations } from '../../src/sim/hostlocal.js';
import { installShellPlugin } from '../support/plugins.js';
import { useSimNode } from '../support/simnode.js';
import { Rig, ipAddresses, ipJson, linkExists } from '../support/rig.js';
import { EXAMPLE_LINKS, podEnv } from '../../src/sim/simnode.js';

const NETWORKS = 'k8s.v1.cni.cncf.io/networks';

const reservations = hostLocalReservations;

describe('meta plugin `plexus` executed as a runtime does', function () {
  this.timeout(60000);
  const rig = new Rig();
  const node = useSimNode(rig, 'meta');
  after(() => rig.cleanup());

  const runtimeConf = (annotations: Record<string, string>, extra: Record<string, unknown> = {}) => node.podConf(annotations, extra);
  const hostState = (): string =>
    JSON.stringify({
      links: ipJson<{ ifname: string }[]>(['link', 'show'])
        .map((l) => l.ifname)
        .sort(),
      ips: [...reservations(join(node.dir, 'ipam')), ...reservations('/var/lib/cni/networks/macvlan-a')].sort(),
      store: node.attachments().active(),
      devinfo: existsSync(join(node.deviceInfoDir, 'cni')) ? readdirSync(join(node.deviceInfoDir, 'cni')) : [],
    });

  it('attaches the cluster network and two secondaries from runtime-provided annotations, with no API read', async () => {
    const ns = rig.netns('m');
    const pod = node.addExamplePod('two-nets');
    const annotations = (pod.metadata as unknown as { annotations: Record<string, string> }).annotations;
    const before = node.api.requests.length;
    const macvlanBefore = reservations('/var/lib/cni/networks/macvlan-a');
    const add = await node.exec(podEnv('ADD', 'sandbox1', ns.path, pod.metadata), runtimeConf(annotations));
    assert.equal(add.status, 0, add.stdout + add.stderr);
    assert.equal(add.json?.cniVersion, '1.0.0');
    const ifaces = (add.json?.interfaces as { name: string; sandbox?: string }[]).filter((i) => i.sandbox);
    assert.deepEqual(
      ifaces.map((i) => i.name),
      ['eth0'],
      'the runtime gets the cluster network result',
    );
    assert.deepEqual(ipAddresses(ns.name, 'eth0'), ['10.76.0.2/24']);
    assert.equal(ipAddresses(ns.name, 'net1').length, 1);
    assert.match(ipAddresses(ns.name, 'net1')[0]!, /^10\.77\.1\./);
    assert.deepEqual(ipAddresses(ns.name, 'data0'), ['10.77.0.9/24']);

    const calls = node.api.requests.slice(before);
    assert.equal(calls.filter((r) => r.resource === 'pods' && r.verb === 'get').length, 0, 'no pod GET: annotations came from the runtime');
    assert.equal(calls.filter((r) => r.resource === 'network-attachment-definitions').length, 2);
    assert.equal(calls.filter((r) => r.verb === 'patch').length, 1, 'one PATCH for network-status');
    const status = JSON.parse(node.api.get('v1', 'pods', 'default', 'two-nets')!.metadata.annotations!['k8s.v1.cni.cncf.io/network-status']!) as Record<string, unknown>[];
    assert.equal(status.length, 3);
    assert.deepEqual(status[0], { name: 'cluster', interface: 'eth0', ips: ['10.76.0.2'], mac: status[0]!.mac, default: true, 'default-route': ['10.76.0.1'] });
    assert.deepEqual(
      status.map((s) => [s.name, s.interface, s.default]),
      [
        ['cluster', 'eth0', true],
        ['default/macvlan-a', 'net1', false],
        ['default/bridge-b', 'data0', false],
      ],
    );
    assert.deepEqual(status[2]!.ips, ['10.77.0.9']);
    const events = node.api.list('v1', 'events').filter((e) => (e as { reason?: string }).reason === 'AddedInterface');
    assert.equal(events.length, 3);

    const check = await node.exec(podEnv('CHECK', 'sandbox1', ns.path, pod.metadata), runtimeConf(annotations));
    assert.equal(check.status, 0, check.stdout + check.stderr);

    const del = await node.exec(podEnv('DEL', 'sandbox1', ns.path, pod.metadata), runtimeConf(annotations));
    assert.equal(del.status, 0, del.stdout + del.stderr);
    assert.deepEqual(
      ipJson<{ ifname: string }[]>(['-n', ns.name, 'link', 'show']).map((l) => l.ifname),
      ['lo'],
    );
    assert.deepEqual(reservations(join(node.dir, 'ipam')), []);
    assert.deepEqual(reservations('/var/lib/cni/networks/macvlan-a'), macvlanBefore);
    const store = node.attachments();
    const afterDel = store.read('sandbox1');
    assert.deepEqual(afterDel.kind === 'ok' && afterDel.record.attachments, [], 'the record stays, listing nothing');
    const requestsBefore = node.api.requests.length;
    // a repeated DEL, even without the annotations or the API, is exact: nothing to reconstruct
    const again = await node.exec(podEnv('DEL', 'sandbox1', ns.path, pod.metadata), node.metaConf({ kubeconfig: '/nonexistent' }));
    assert.equal(again.status, 0, `a repeated DEL succeeds: ${again.stdout}`);
    assert.equal(node.api.requests.length, requestsBefore);
    // empty records are pruned once old: a day later nothing of the sandbox is left
    store.pruneEmpty(24 * 3600 * 1000, 3600 * 1000, Date.now() + 25 * 3600 * 1000);
    assert.equal(existsSync(store.path('sandbox1')), false);
  });

  const twoNets = (): { annotations: Record<string, string>; meta: { name: string; namespace: string } } => {
    const pod = node.addExamplePod('two-nets');
    return { annotations: (pod.metadata as unknown as { annotations: Record<string, string> }).annotations, meta: pod.metadata };
  };

  it('an injected failure of the second secondary delegate fails ADD with its message and leaves nothing', async () => {
    const ns = rig.netns('f');
    installShellPlugin(node.binDir, 'plx-failing', `[ "$CNI_COMMAND" = ADD ] || exit 0; echo '{"code":117,"msg":"second secondary exploded"}'; exit 1`);
    node.api.put('k8s.cni.cncf.io/v1', 'network-attachment-definitions', {
      metadata: { name: 'broken-c', namespace: 'default' },
      spec: { config: '{"cniVersion":"1.0.0","name":"broken-c","type":"plx-failing"}' },
    } as never);
    const { meta } = twoNets();
    const before = hostState();
    const annotations = { [NETWORKS]: '[{"name":"macvlan-a"},{"name":"broken-c"}]' };
    const add = await node.exec(podEnv('ADD', 'sandbox-f', ns.path, meta), runtimeConf(annotations));
    assert.equal(add.status, 1);
    assert.equal(add.json?.code, 117);
    assert.equal(add.json?.msg, 'second secondary exploded');
    assert.deepEqual(
      ipJson<{ ifname: string }[]>(['-n', ns.name, 'link', 'show']).map((l) => l.ifname),
      ['lo'],
    );
    const warning = node.api.list('v1', 'events').find((e) => (e as { reason?: string }).reason === 'NetworkAttachFailed');
    assert.match(String((warning as { message?: string })?.message), /second secondary exploded/);
    // the runtime's DEL after a failed ADD finds the rolled-back record and has nothing left to do
    const apiCalls = node.api.requests.length;
    const del = await node.exec(podEnv('DEL', 'sandbox-f', ns.path, meta), runtimeConf(annotations));
    assert.equal(del.status, 0, del.stdout);
    assert.equal(node.api.requests.length, apiCalls, 'no reconstruction needed');
    assert.equal(hostState(), before, 'no link, IP, store entry or device-info file left');
  });

  it("the cluster network's default-route in network-status is the pod's actual default route when the route has no gw (host-local's usual form)", async () => {
    const ns = rig.netns('g');
    const bridge = 'plx-nogw-br';
    rig.ownLink(bridge);
    const cluster = {
      cniVersion: '1.0.0',
      name: 'cluster-nogw',
      type: 'bridge',
      bridge,
      ipam: {
        type: 'host-local',
        dataDir: join(node.dir, 'ipam-nogw'),
        ranges: [[{ subnet: '10.74.0.0/24', gateway: '10.74.0.1' }], [{ subnet: 'fd74::/64', gateway: 'fd74::1' }]],
        routes: [{ dst: '0.0.0.0/0' }, { dst: '::/0' }],
      },
    };
    const conf = runtimeConf({}, { clusterNetwork: undefined, delegates: [cluster] });
    const env = podEnv('ADD', 'sb-nogw', ns.path, { name: 'nogw', namespace: 'default' });
    node.api.put('v1', 'pods', { metadata: { name: 'nogw', namespace: 'default', uid: 'uid-nogw' }, spec: { nodeName: 'plx-node' } } as never);
    const add = await node.exec(env, conf);
    assert.equal(add.status, 0, add.stdout + add.stderr);
    const actual = [4, 6].map((f) => ipJson<{ gateway?: string }[]>(['-n', ns.name, `-${f}`, 'route', 'show', 'default'])[0]?.gateway);
    assert.deepEqual(actual, ['10.74.0.1', 'fd74::1'], 'the delegate installed the default routes via the ranges’ gateways');
    const status = JSON.parse(node.api.get('v1', 'pods', 'default', 'nogw')!.metadata.annotations!['k8s.v1.cni.cncf.io/network-status']!) as { name: string; 'default-route'?: string[] }[];
    assert.deepEqual(status[0]!['default-route'], actual);
    assert.equal((await node.exec({ ...env, CNI_COMMAND: 'DEL' }, conf)).status, 0);
  });

  describe('Multus drop-in: Multus confs and inputs work by changing only the type', () => {
    it('inline delegates without name or cniVersion, a CNI_ARGS value holding "=", and delegate IPs without an interface index', async () => {
      const ns = rig.netns('md');
      const bridge = 'plx-mdrop-br';
      rig.ownLink(bridge);
      // A delegate whose result's IPs carry no interface index (as Calico's do).
      installShellPlugin(
        node.binDir,
        'plx-noindex',
        `[ "$CNI_COMMAND" = ADD ] || exit 0; echo '{"cniVersion":"1.0.0","interfaces":[{"name":"net1","sandbox":"'$CNI_NETNS'"}],"ips":[{"address":"10.66.0.5/24"}]}'`,
      );
      node.api.put('k8s.cni.cncf.io/v1', 'network-attachment-definitions', {
        metadata: { name: 'noindex-net', namespace: 'default' },
        spec: { config: '{"cniVersion":"1.0.0","type":"plx-noindex"}' },
      } as never);
      node.api.put('v1', 'pods', { metadata: { name: 'mdrop', namespace: 'default', uid: 'uid-mdrop' }, spec: { nodeName: 'plx-node' } } as never);
      // As in Multus's own examples: {"type": ...} alone.
      const delegate = { type: 'bridge', bridge, ipam: { type: 'host-local', dataDir: join(node.dir, 'ipam-mdrop'), ranges: [[{ subnet: '10.73.0.0/24' }]] } };
      const conf = runtimeConf({ [NETWORKS]: 'noindex-net' }, { clusterNetwork: undefined, delegates: [delegate] });
      const env = podEnv('ADD', 'sb-mdrop', ns.path, { name: 'mdrop', namespace: 'default', uid: 'uid-mdrop' });
      env.CNI_ARGS = `${env.CNI_ARGS};SELECTOR=app=web`;
      const add = await node.exec(env, conf);
      assert.equal(add.status, 0, add.stdout + add.stderr);
      assert.match(ipAddresses(ns.name, 'eth0')[0] ?? '', /^10\.73\.0\./);
      const status = JSON.parse(node.api.get('v1', 'pods', 'default', 'mdrop')!.metadata.annotations!['k8s.v1.cni.cncf.io/network-status']!) as { name: string; interface: string; ips?: string[] }[];
      assert.deepEqual(
        status.map((e) => [e.name, e.interface]),
        [
          ['plexus', 'eth0'],
          ['default/noindex-net', 'net1'],
        ],
        'the nameless delegate is named after the meta conf',
      );
      assert.deepEqual(status[1]!.ips, ['10.66.0.5'], 'IPs without an index belong to the attachment');
      assert.ok(existsSync(join(node.dir, 'ipam-mdrop', 'plexus')), "the delegate's IPAM state is keyed by that name");
      assert.equal((await node.exec({ ...env, CNI_COMMAND: 'DEL' }, conf)).status, 0);
      assert.deepEqual(reservations(join(node.dir, 'ipam-mdrop', 'plexus')), []);
    });

    it('"delegates": [] beside clusterNetwork is no delegates list', async () => {
      const ns = rig.netns('me');
      const env = podEnv('ADD', 'sb-mempty', ns.path, { name: 'mempty', namespace: 'default' });
      const add = await node.exec(env, runtimeConf({}, { delegates: [] }));
      assert.equal(add.status, 0, add.stdout + add.stderr);
      assert.match(ipAddresses(ns.name, 'eth0')[0] ?? '', /^10\.76\.0\./, 'the clusterNetwork conf attached eth0');
      assert.equal((await node.exec({ ...env, CNI_COMMAND: 'DEL' }, runtimeConf({}, { delegates: [] }))).status, 0);
    });
  });

  it('DEL works with the API server stopped', async () => {
    const ns = rig.netns('d');
    const { meta } = twoNets();
    const before = hostState();
    // annotations from the API this time: the store must carry everything for DEL
    const add = await node.exec(podEnv('ADD', 'sandbox-d', ns.path, meta), node.metaConf());
    assert.equal(add.status, 0, add.stdout + add.stderr);
    assert.ok(linkExists('data0', ns.name));
    await node.api.stop();
    try {
      const del = await node.exec(podEnv('DEL', 'sandbox-d', ns.path, meta), node.metaConf());
      assert.equal(del.status, 0, del.stdout + del.stderr);
      assert.equal(hostState(), before);
    } finally {
      await node.api.start();
      // the restarted double listens on a new port
      writeFileSync(node.kubeconfig, node.api.kubeconfig());
    }
  });

  it('DEL with the store deleted: what cannot be rebuilt for a config reason is said in an Event and DEL converges; an unreachable API fails it until it answers', async () => {
    const ns = rig.netns('s');
    const { meta } = twoNets();
    const before = hostState();
    const macvlanBefore = reservations('/var/lib/cni/networks/macvlan-a');
    const add = await node.exec(podEnv('ADD', 'sandbox-s', ns.path, meta), node.metaConf());
    assert.equal(add.status, 0, add.stdout + add.stderr);
    const recordPath = node.attachments().path('sandbox-s');
    const record = readFileSync(recordPath);
    rmSync(recordPath);
    // The API cannot be asked for the pod's annotations: retrying may help, so DEL fails.
    await node.api.stop();
    try {
      const del = await node.exec(podEnv('DEL', 'sandbox-s', ns.path, meta), node.metaConf());
      assert.equal(del.status, 1, 'never success while the API might still tell what was attached');
      assert.match(String(del.json?.msg), /no attachment record/);
      assert.match(String(del.json?.details), /pod annotations/);
    } finally {
      await node.api.start();
      writeFileSync(node.kubeconfig, node.api.kubeconfig());
    }
    assert.ok(linkExists('data0', ns.name), 'nothing was deleted on a guess');
    writeFileSync(recordPath, record);
    assert.equal((await node.exec(podEnv('DEL', 'sandbox-s', ns.path, meta), node.metaConf())).status, 0);
    assert.equal(hostState(), before);

    // Again, and now the second secondary's NAD no longer fits the annotation: a config error that
    // retrying cannot cure. DEL deletes what it can rebuild and says what it could not.
    assert.equal((await node.exec(podEnv('ADD', 'sandbox-s', ns.path, meta), node.metaConf())).status, 0);
    rmSync(recordPath);
    const bridgeB = node.api.get('k8s.cni.cncf.io/v1', 'network-attachment-definitions', 'default', 'bridge-b')!;
    node.api.put('k8s.cni.cncf.io/v1', 'network-attachment-definitions', {
      metadata: { name: 'bridge-b', namespace: 'default' },
      spec: { config: '{"cniVersion":"1.0.0","name":"bridge-b","type":"no-such-plugin"}' },
    } as never);
    try {
      const del = await node.exec(podEnv('DEL', 'sandbox-s', ns.path, meta), node.metaConf());
      assert.equal(del.status, 0, del.stdout + del.stderr);
      assert.equal(linkExists('eth0', ns.name), false, 'the cluster network was deleted');
      assert.equal(linkExists('net1', ns.name), false, 'macvlan-a was deleted');
      assert.deepEqual(reservations('/var/lib/cni/networks/macvlan-a'), macvlanBefore);
      const warning = node.api
        .list('v1', 'events')
        .filter((e) => (e as { reason?: string }).reason === 'NetworkAttachmentAbandoned')
        .at(-1) as { message?: string } | undefined;
      assert.match(String(warning?.message), /could not rebuild network default\/bridge-b: .*cannot take "ips"/);
    } finally {
      node.api.put('k8s.cni.cncf.io/v1', 'network-attachment-definitions', bridgeB);
    }
    // What bridge-b attached stays until the runtime destroys the netns (its veth; its IP lease).
    execFileSync('ip', ['-n', ns.name, 'link', 'del', 'data0']);
  });

  it('namespaceIsolation refuses a NAD of another namespace with a clear error', async () => {
    const ns = rig.netns('i');
    node.api.put('v1', 'pods', { metadata: { name: 'iso', namespace: 'tenant-a' }, spec: { nodeName: 'plx-node' } } as never);
    node.api.put('k8s.cni.cncf.io/v1', 'network-attachment-definitions', {
      metadata: { name: 'private', namespace: 'tenant-b' },
      spec: { config: '{"cniVersion":"1.0.0","name":"private","type":"macvlan","master":"plx-mv-master"}' },
    } as never);
    const before = hostState();
    const add = await node.exec(podEnv('ADD', 'sandbox-i', ns.path, { name: 'iso', namespace: 'tenant-a' }), runtimeConf({ [NETWORKS]: 'tenant-b/private' }, { namespaceIsolation: true }));
    assert.equal(add.status, 1);
    assert.equal(add.json?.code, 7);
    assert.match(`${String(add.json?.msg)} ${String(add.json?.details)}`, /namespaceIsolation.*tenant-a.*tenant-b\/private/s);
    const del = await node.exec(podEnv('DEL', 'sandbox-i', ns.path, { name: 'iso', namespace: 'tenant-a' }), runtimeConf({ [NETWORKS]: 'tenant-b/private' }, { namespaceIsolation: true }));
    assert.equal(del.status, 0, del.stdout);
    assert.equal(hostState(), before);
  });

  it('injects the device of a NAD resourceName (kubelet checkpoint) and copies its device-info file', async () => {
    const ns = rig.netns('v');
    const deviceID = '0000:5e:02.3';
    node.api.put('k8s.cni.cncf.io/v1', 'network-attachment-definitions', {
      metadata: { name: 'sriov-like', namespace: 'default', annotations: { 'k8s.v1.cni.cncf.io/resourceName': 'plexus.dev/vf' } },
      // macvlan ignores the injected deviceID/pciBusID (host-device would look the PCI device up in sysfs)
      spec: { config: `{"cniVersion":"1.0.0","name":"sriov-like","type":"macvlan","master":"${EXAMPLE_LINKS.macvlanMaster}","capabilities":{"CNIDeviceInfoFile":true}}` },
    } as never);
    node.api.put('v1', 'pods', { metadata: { name: 'vf-pod', namespace: 'default', uid: 'uid-vf' }, spec: { nodeName: 'plx-node' } } as never);
    writeFileSync(
      node.metaConf().kubeletCheckpoint as string,
      JSON.stringify({ Data: { PodDeviceEntries: [{ PodUID: 'uid-vf', ContainerName: 'app', ResourceName: 'plexus.dev/vf', DeviceIDs: { '0': [deviceID] } }] } }),
    );
    const dp = join(node.deviceInfoDir, 'dp');
    mkdirSync(dp, { recursive: true });
    const info = { type: 'pci', version: '1.1.0', pci: { 'pci-address': deviceID, 'pf-pci-address': '0000:5e:00.0' } };
    writeFileSync(join(dp, `plexus.dev-vf-${deviceID}-device.json`), JSON.stringify(info));
    const env = podEnv('ADD', 'sandbox-v', ns.path, { name: 'vf-pod', namespace: 'default', uid: 'uid-vf' });
    const add = await node.exec(env, runtimeConf({ [NETWORKS]: 'sriov-like@vf0' }));
    assert.equal(add.status, 0, add.stdout + add.stderr);
    assert.ok(linkExists('vf0', ns.name));
    const record = node.attachments().read('sandbox-v');
    assert.equal(record.kind, 'ok');
    if (record.kind === 'ok') {
      const att = record.record.attachments[1]!;
      assert.equal(att.deviceID, deviceID);
      assert.deepEqual(JSON.parse(att.config).deviceID, deviceID, 'deviceID injected into the delegate config');
      assert.deepEqual(JSON.parse(att.config).pciBusID, deviceID);
      assert.equal(att.capabilityArgs.CNIDeviceInfoFile, att.deviceInfoFile);
      assert.equal(att.capabilityArgs.deviceID, deviceID, 'offered as runtimeConfig to plugins that declare deviceID');
      assert.ok(existsSync(att.deviceInfoFile!));
    }
    const status = JSON.parse(node.api.get('v1', 'pods', 'default', 'vf-pod')!.metadata.annotations!['k8s.v1.cni.cncf.io/network-status']!) as Record<string, unknown>[];
    assert.deepEqual(status[1]!['device-info'], info);
    const del = await node.exec({ ...env, CNI_COMMAND: 'DEL' }, runtimeConf({ [NETWORKS]: 'sriov-like@vf0' }));
    assert.equal(del.status, 0, del.stdout + del.stderr);
    assert.equal(linkExists('vf0', ns.name), false);
    assert.deepEqual(readdirSync(join(node.deviceInfoDir, 'cni')), [], 'device-info file removed on DEL');
  });

  it('a broken kubeconfig fails an ADD that must read NADs, but not one that only writes its status', async () => {
    const ns = rig.netns('k');
    const env = podEnv('ADD', 'sandbox-k', ns.path, { name: 'k', namespace: 'default' });
    const kubeconfig = join(node.dir, 'missing-kubeconfig');
    const needsNad = await node.exec(env, runtimeConf({ [NETWORKS]: 'macvlan-a' }, { kubeconfig }));
    assert.equal(needsNad.json?.code, 7, needsNad.stdout);
    assert.deepEqual(
      ipJson<{ ifname: string }[]>(['-n', ns.name, 'link', 'show']).map((l) => l.ifname),
      ['lo'],
    );
    assert.equal((await node.exec({ ...env, CNI_COMMAND: 'DEL' }, runtimeConf({ [NETWORKS]: 'macvlan-a' }, { kubeconfig }))).status, 0);
    // Only the cluster network: the attachment is made, only its network-status cannot be written.
    const broken = runtimeConf({}, { kubeconfig });
    const add = await node.exec(env, broken);
    assert.equal(add.status, 0, add.stdout + add.stderr);
    assert.ok(linkExists('eth0', ns.name));
    assert.equal((await node.exec({ ...env, CNI_COMMAND: 'DEL' }, broken)).status, 0);
  });

  describe('bad input: precise CNI errors; nothing attached, and once the runtime’s DEL ran, no change on the node', () => {
    const cases: [string, () => Record<string, string>, number, RegExp][] = [
      ['malformed JSON annotation', () => ({ [NETWORKS]: '[{"name":' }), 6, /decode/],
      ['unknown NAD', () => ({ [NETWORKS]: 'no-such-net' }), 7, /default\/no-such-net not found/],
      ['duplicate interface names', () => ({ [NETWORKS]: 'macvlan-a@dup0,bridge-b@dup0' }), 7, /duplicate interface name.*dup0/],
      ['interface name over 15 characters', () => ({ [NETWORKS]: '[{"name":"macvlan-a","interface":"abcdefghijklmnop"}]' }), 7, /15 bytes/],
      ['invalid MAC', () => ({ [NETWORKS]: '[{"name":"macvlan-a","mac":"02:00:zz:00:00:01"}]' }), 7, /mac is not a 6-byte MAC/],
      ['invalid IP', () => ({ [NETWORKS]: '[{"name":"bridge-b","ips":["10.1.2.300/24"]}]' }), 7, /ips\[0\] is not an IP/],
      ['capability not declared', () => ({ [NETWORKS]: '[{"name":"macvlan-a","ips":["10.77.1.50/24"]}]' }), 7, /cannot take "ips".*"ips" capability/],
      ['an empty item in a comma list', () => ({ [NETWORKS]: 'macvlan-a,,bridge-b' }), 7, /element 1: element is empty/],
      ['two default-route elements', () => ({ [NETWORKS]: '[{"name":"macvlan-a","default-route":[]},{"name":"bridge-b","default-route":[]}]' }), 7, /at most one/],
      ['a name that already exists in the pod', () => ({ [NETWORKS]: 'macvlan-a@lo' }), 7, /"lo" already exists/],
      ['an IPv6 zone in ips', () => ({ [NETWORKS]: '[{"name":"bridge-b","ips":["fe80::1%eth0/64"]}]' }), 7, /ips\[0\] is not an IP/],
      ['a multicast mac', () => ({ [NETWORKS]: '[{"name":"macvlan-a","mac":"01:00:5e:00:00:01"}]' }), 7, /mac is a multicast address/],
      [
        'a NAD with a cniVersion Plexus does not implement',
        () => {
          node.api.put('k8s.cni.cncf.io/v1', 'network-attachment-definitions', {
            metadata: { name: 'future-net', namespace: 'default' },
            spec: { config: '{"cniVersion":"9.9.9","name":"future-net","type":"macvlan","master":"plx-mv-master"}' },
          } as never);
          return { [NETWORKS]: 'future-net' };
        },
        1,
        /9\.9\.9.*network default\/future-net \(NAD\) as net1/,
      ],
    ];
    for (const [what, annotations, code, cause] of cases) {
      it(`${what} → code ${code}`, async () => {
        const ns = rig.netns('b');
        node.api.put('v1', 'pods', { metadata: { name: 'bad', namespace: 'default' }, spec: { nodeName: 'plx-node' } } as never);
        const before = hostState();
        const add = await node.exec(podEnv('ADD', 'sandbox-b', ns.path, { name: 'bad', namespace: 'default' }), runtimeConf(annotations()));
        assert.equal(add.status, 1, add.stdout + add.stderr);
        assert.equal(add.json?.code, code, add.stdout);
        assert.match(`${String(add.json?.msg)}: ${String(add.json?.details)}`, cause);
        assert.deepEqual(
          ipJson<{ ifname: string }[]>(['-n', ns.name, 'link', 'show']).map((l) => l.ifname),
          ['lo'],
        );
        const record = node.attachments().read('sandbox-b');
        assert.deepEqual(record.kind === 'ok' && record.record.attachments, [], 'only a record that nothing is attached');
        const del = await node.exec(podEnv('DEL', 'sandbox-b', ns.path, { name: 'bad', namespace: 'default' }), runtimeConf(annotations()));
        assert.equal(del.status, 0, del.stdout + del.stderr);
        assert.equal(hostState(), before);
      });
    }

    it('a container ID too long to name a file → code 4; cniDir that is a file → code 7 naming the key; nothing written', async () => {
      const ns = rig.netns('e');
      const long = await node.exec(podEnv('ADD', 'c'.repeat(300), ns.path, { name: 'bad', namespace: 'default' }), runtimeConf({}));
      assert.equal(long.json?.code, 4, long.stdout);
      assert.match(String(long.json?.details), /300 characters; at most 200/);
      const file = join(rig.dir('cnidir-file'), 'a-file');
      writeFileSync(file, '');
      const add = await node.exec(podEnv('ADD', 'sandbox-f', ns.path, { name: 'bad', namespace: 'default' }), runtimeConf({}, { cniDir: file }));
      assert.equal(add.json?.code, 7, add.stdout);
      assert.match(String(add.json?.details), /"cniDir" .*a-file exists and is not a directory/);
      assert.deepEqual(
        ipJson<{ ifname: string }[]>(['-n', ns.name, 'link', 'show']).map((l) => l.ifname),
        ['lo'],
      );
    });

    it('a pod netns that does not exist → code 3, no delegate ran, and the DEL after it is exact', async () => {
      const before = hostState();
      const missing = '/var/run/netns/plx-gone';
      const env = podEnv('ADD', 'sandbox-gone', missing, { name: 'bad', namespace: 'default' });
      const add = await node.exec(env, runtimeConf({ [NETWORKS]: 'macvlan-a' }));
      assert.equal(add.json?.code, 3, add.stdout);
      assert.match(String(add.json?.details), /plx-gone.*ENOENT|plx-gone.*No such file/);
      const record = node.attachments().read('sandbox-gone');
      assert.deepEqual(record.kind === 'ok' && record.record.attachments, [], 'the record says nothing is attached');
      assert.equal((await node.exec({ ...env, CNI_COMMAND: 'DEL' }, runtimeConf({ [NETWORKS]: 'macvlan-a' }))).status, 0);
      assert.equal(hostState(), before);
    });
  });

  it('network-status carries the pod UID as a precondition: a same-name pod created since does not get the old sandbox status', async () => {
    const ns = rig.netns('u');
    // The API has the new incarnation of the pod; the runtime is still setting up the old one.
    node.api.put('v1', 'pods', { metadata: { name: 'reborn', namespace: 'default', uid: 'uid-new-incarnation' }, spec: { nodeName: 'plx-node' } } as never);
    const env = podEnv('ADD', 'sb-reborn', ns.path, { name: 'reborn', namespace: 'default', uid: 'uid-old-incarnation' });
    const add = await node.exec(env, runtimeConf({}));
    assert.equal(add.status, 0, add.stdout + add.stderr);
    const patches = node.api.requests.filter((r) => r.verb === 'patch' && r.path.includes('/pods/reborn/status'));
    assert.equal(patches.length, 1, 'the status was sent once, and refused');
    assert.equal(node.api.get('v1', 'pods', 'default', 'reborn')?.metadata.annotations?.['k8s.v1.cni.cncf.io/network-status'], undefined);
    assert.equal((await node.exec({ ...env, CNI_COMMAND: 'DEL' }, runtimeConf({}))).status, 0);
    // With the matching UID it is written.
    const env2 = podEnv('ADD', 'sb-reborn2', ns.path, { name: 'reborn', namespace: 'default', uid: 'uid-new-incarnation' });
    assert.equal((await node.exec(env2, runtimeConf({}))).status, 0);
    assert.ok(node.api.get('v1', 'pods', 'default', 'reborn')?.metadata.annotations?.['k8s.v1.cni.cncf.io/network-status']);
    assert.equal((await node.exec({ ...env2, CNI_COMMAND: 'DEL' }, runtimeConf({}))).status, 0);
  });

  it('a networks annotation that is not a string in runtimeConfig fails the ADD naming it, instead of a pod with only eth0', async () => {
    const ns = rig.netns('n');
    const before = hostState();
    const conf = node.podConf({ [NETWORKS]: ['macvlan-a'] });
    const add = await node.exec(podEnv('ADD', 'sb-nonstring', ns.path, { name: 'x', namespace: 'default' }), conf);
    assert.equal(add.status, 1);
    assert.equal(add.json?.code, 7);
    assert.match(String(add.json?.msg), /annotation k8s\.v1\.cni\.cncf\.io\/networks must be a string/);
    assert.deepEqual(
      ipJson<{ ifname: string }[]>(['-n', ns.name, 'link', 'show']).map((l) => l.ifname),
      ['lo'],
      'not even eth0',
    );
    assert.equal((await node.exec(podEnv('DEL', 'sb-nonstring', ns.path, { name: 'x', namespace: 'default' }), conf)).status, 0);
    assert.equal(hostState(), before);
  });
});
