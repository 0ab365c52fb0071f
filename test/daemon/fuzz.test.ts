/**
 * Fuzz: hostile NADs, pod annotations and CNI args driven through the shim into the node daemon.
 * Every ADD succeeds or answers a JSON CNI error, every DEL converges (the pod netns is left with only
 * `lo`, nothing stays recorded), the daemon never dies, and the host keeps exactly its links.
 * PLEXUS_FUZZ_RUNS sets the number of cases (default 10 000); a failure prints fast-check's seed.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { EXAMPLE_LINKS, SimNode, podEnv } from '../../src/sim/simnode.js';
import { FakeKernel } from '../../src/sim/fakekernel.js';
import { nativeAddon } from '../../src/util/native.js';
import { type DaemonProcess, startDaemon, stopDaemon } from '../support/daemon.js';
import { installShellPlugin, shimPath } from '../support/plugins.js';
import { Rig } from '../support/rig.js';

const RUNS = Number(process.env.PLEXUS_FUZZ_RUNS ?? 10_000);
const BATCH = 8;
const PF = '0000:5e:00.0';
const VF0 = '0000:5e:02.0';
const NETWORKS = 'k8s.v1.cni.cncf.io/networks';

// Bridges a bridge delegate makes stay on the host by design (the bridge plugin never deletes one).
const BRIDGES = new Set(['plx-fz-br', EXAMPLE_LINKS.bridgeB]);
const hostLinks = (): string[] =>
  readdirSync('/sys/class/net')
    .filter((l) => !BRIDGES.has(l))
    .sort();

describe(`node daemon fuzz: ${RUNS} hostile ADD/DEL pairs through the shim`, function () {
  this.timeout(3_600_000);
  const rig = new Rig();
  let node: SimNode;
  let kernel: FakeKernel;
  let daemon: DaemonProcess;
  let socket: string;
  const base = rig.dir('fuzz');
  const ipamDir = join(base, 'ipam');
  const pfName = `plxfz${process.pid % 1000}`;
  before(async () => {
    node = new SimNode(base);
    await node.start();
    kernel = FakeKernel.create(join(node.dir, 'host'), { realNetdevs: true, pfs: [{ address: PF, vendor: '8086', device: '158b', numVfs: 2, netdev: pfName }] });
    socket = join(node.dir, 'plexus.sock');
    installShellPlugin(node.binDir, 'sriov', `echo '{"code":999,"msg":"sriov was exec\'d instead of run in the daemon"}'; exit 1`);
    daemon = await startDaemon(socket, ['--sriov-host-root', kernel.root, '--log-level', 'warn']);
  });
  after(async () => {
    await stopDaemon(daemon);
    kernel.destroy();
    await node.stop();
    rig.cleanup();
  });

  // ---- generators: what a tenant can write -------------------------------------------------
  // Mostly well-formed, so that about half the cases get past parsing to the delegates and back; a
  // hostile value where it is not.
  const mostly = <T, U>(good: fc.Arbitrary<T>, bad: fc.Arbitrary<U>, goodWeight = 25) => fc.oneof({ weight: goodWeight, arbitrary: good }, { weight: 1, arbitrary: bad });
  const absentOr = <T>(hostile: fc.Arbitrary<T>, absentWeight = 25) => fc.oneof({ weight: absentWeight, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: hostile });
  const junk = fc.oneof(fc.string({ maxLength: 12 }), fc.integer(), fc.constant(null), fc.boolean(), fc.array(fc.string({ maxLength: 4 }), { maxLength: 2 }));
  const subnet = mostly(
    fc.integer({ min: 0, max: 255 }).map((n) => `10.${200 + (n % 50)}.${n}.0/24`),
    fc.constantFrom('nonsense', '10.0.0.0/33', 'fe80::/64', '', '0.0.0.0/0'),
  );
  const ipam = mostly(
    fc.record({ type: fc.constant('host-local'), ranges: fc.tuple(fc.tuple(fc.record({ subnet }))), dataDir: fc.constant(ipamDir) }),
    fc.constantFrom(undefined, 'host-local', 7, { type: '../../usr/bin/true' }, { type: 'static', addresses: [{ address: '10.199.0.5/24' }] }, { type: 'static', addresses: 'x' }, { type: '' }, {}),
  );
  const badMac = fc.oneof(fc.constantFrom('ff:ff:ff:ff:ff:ff', '01:00:5e:00:00:01', '00:00:00:00:00:00', 'zz', ''), junk);
  const mac = fc.oneof({ weight: 8, arbitrary: fc.constant(undefined) }, fc.constant('02:00:00:00:00:42'), badMac);
  const nadConfig = (name: string) =>
    fc
      .record(
        {
          cniVersion: mostly(fc.constantFrom('1.0.0', '0.4.0', '0.3.1', '1.1.0'), fc.oneof(fc.constantFrom('9.9.9', ''), junk)),
          type: mostly(fc.constantFrom('macvlan', 'bridge', 'sriov'), fc.oneof(fc.constantFrom('tuning', 'loopback', 'host-local', 'plx-nosuch', '../../bin/sh', '/bin/true', 'sriov/../x', ''), junk)),
          master: mostly(fc.constant(EXAMPLE_LINKS.macvlanMaster), fc.oneof(fc.constantFrom('plxnosuchlink', '', 'lo'), junk)),
          // Never empty: the bridge plugin would make `cni0` on the host (see the notes).
          bridge: mostly(fc.constant('plx-fz-br'), fc.constantFrom('lo', EXAMPLE_LINKS.macvlanMaster)),
          ipam,
          mac,
          deviceID: mostly(fc.constantFrom(VF0, '0000:5e:02.1'), fc.oneof(fc.constantFrom(PF, '0000:99:00.0', '../../../etc'), junk)),
          vlan: fc.oneof({ weight: 10, arbitrary: fc.constant(undefined) }, { weight: 10, arbitrary: fc.integer({ min: 0, max: 4094 }) }, fc.constantFrom(-1, 4095, 5000), junk),
          hostRoot: absentOr(fc.constant('/')),
          capabilities: fc.oneof(
            { weight: 10, arbitrary: fc.constant(undefined) },
            { weight: 4, arbitrary: fc.dictionary(fc.constantFrom('ips', 'mac'), fc.boolean()) },
            fc.dictionary(fc.constantFrom('ips', 'mac', 'portMappings', 'bandwidth', 'x'), fc.oneof(fc.boolean(), junk)),
          ),
        },
        { requiredKeys: ['cniVersion', 'type', 'master', 'bridge', 'ipam', 'deviceID'] },
      )
      .map((c) => JSON.stringify({ name, ...c }))
      .chain((text) => mostly(fc.constant(text), fc.oneof(fc.constantFrom('{', '[]', 'null', '"x"', '{"type":5}'), fc.string({ maxLength: 20 }))));
  const selection = (names: string[]) =>
    fc
      .record({
        name: mostly(fc.constantFrom(...names), fc.oneof(fc.constantFrom('no-such', 'UPPER', '../x', ''), junk)),
        namespace: fc.oneof({ weight: 20, arbitrary: fc.constantFrom(undefined, 'default') }, fc.constantFrom('kube-system', 'other'), junk),
        interface: fc.oneof({ weight: 20, arbitrary: fc.constantFrom(undefined, 'net5', 'data0') }, fc.constantFrom('eth0', 'lo', 'a/b', 'abcdefghijklmnop', ''), junk),
        ips: absentOr(fc.oneof(fc.constant(['10.199.0.9/24']), fc.array(fc.constantFrom('fe80::1%eth0/64', '10.1.2.300/24', 'x', '2001:db8::5/64'), { maxLength: 2 }), junk)),
        mac: absentOr(fc.oneof(fc.constant('02:00:00:00:00:43'), badMac)),
        'default-route': absentOr(fc.oneof(fc.constant(['10.199.0.1']), fc.array(fc.constantFrom('fe80::1%lo', 'nope'), { maxLength: 1 }), junk)),
        'cni-args': fc.oneof({ weight: 20, arbitrary: fc.constant(undefined) }, { weight: 4, arbitrary: fc.dictionary(fc.string({ maxLength: 6 }), junk, { maxKeys: 3 }) }, junk),
        deviceID: absentOr(fc.oneof(fc.constantFrom(VF0, PF, '../../x'), junk)),
        portMappings: absentOr(fc.oneof(fc.constant([{ hostPort: 0, containerPort: 80 }]), junk)),
        bandwidth: absentOr(fc.oneof(fc.constant({ ingressBurst: 1 }), junk)),
        'x.unknown': absentOr(junk, 60),
      })
      .map((sel) => Object.fromEntries(Object.entries(sel).filter(([, v]) => v !== undefined)));
  const networksAnnotation = (names: string[]) =>
    mostly(
      fc.oneof(
        fc.array(selection(names), { minLength: 1, maxLength: 3 }).map((a) => JSON.stringify(a)),
        fc
          .array(
            fc.tuple(
              mostly(fc.constant(''), fc.constantFrom('default/', 'other/', 'a/b/')),
              mostly(fc.constantFrom(...names), fc.constant('no-such')),
              mostly(fc.constant(''), fc.constantFrom('@net1', '@eth0', '@', '@a@b'), 4),
            ),
            { minLength: 1, maxLength: 3 },
          )
          .map((a) => a.map((p) => p.join('')).join(',')),
      ),
      fc.oneof(fc.string({ maxLength: 30 }), fc.constantFrom('[{"name":', '', ',,', '[]', '{}', 'null'), fc.array(fc.string(), { maxLength: 2 })),
    );
  const annotations = (names: string[]) =>
    fc.record({
      [NETWORKS]: networksAnnotation(names),
      'v1.multus-cni.io/default-network': absentOr(fc.oneof(fc.constantFrom('a,b', 'no-such', 'kube-system/x', ''), fc.string({ maxLength: 10 }))),
    });
  const cniArgsExtra = mostly(
    fc.constant(''),
    fc.oneof(
      fc
        .array(fc.tuple(fc.constantFrom('IP', 'MAC', 'K8S_POD_NAME', 'X', 'IgnoreUnknown', ''), fc.constantFrom('10.199.0.7', 'ff:ff:ff:ff:ff:ff', 'a=b', '', 'false', ';')), {
          minLength: 1,
          maxLength: 3,
        })
        .map((a) => `;${a.map(([k, v]) => `${k}=${v}`).join(';')}`),
      fc.string({ maxLength: 16 }).map((x) => `;${x}`),
    ),
  );
  const oneCase = fc.integer({ min: 1, max: 3 }).chain((count) => {
    const names = Array.from({ length: count }, (_, i) => `fz-${i}`);
    return fc.record({ nads: fc.tuple(...names.map((name) => nadConfig(name))), annotations: annotations(names), extraArgs: cniArgsExtra });
  });

  type Case = typeof oneCase extends fc.Arbitrary<infer T> ? T : never;

  it('0 crashes; every ADD succeeds or answers a JSON CNI error; every DEL converges; the host keeps its links', async () => {
    // Four sandboxes at a time, as a node starts pods: each its own netns.
    const slots = Array.from({ length: BATCH }, (_, i) => rig.netns(`fz${i}`));
    rig.ownLink('plx-fz-br');
    const store = node.attachments();
    const outcomes = new Map<string, number>();
    let n = 0;
    // The first cases make the bridge a bridge delegate leaves on the host; links are compared from then.
    let linksBefore: string[] | undefined;
    const runCase = async (slot: number, { nads, annotations: podAnnotations, extraArgs }: Case): Promise<void> => {
      const ns = slots[slot]!;
      const id = `fz-${n++}`;
      // Names unique to the case: no API state of an earlier case can answer for this one.
      nads.forEach((config, i) =>
        node.api.put('k8s.cni.cncf.io/v1', 'network-attachment-definitions', {
          metadata: { name: `${id}-${i}`, namespace: 'default' },
          spec: { config: config.split(`"fz-${i}"`).join(`"${id}-${i}"`) },
        } as never),
      );
      const ann: Record<string, unknown> = { ...podAnnotations };
      if (typeof ann[NETWORKS] === 'string') ann[NETWORKS] = (ann[NETWORKS] as string).replace(/fz-(\d)/g, `${id}-$1`);
      // The cluster network is not what is fuzzed: loopback keeps each case cheap.
      const conf = node.shimConf(socket, ann, { clusterNetwork: undefined, delegates: [{ cniVersion: '1.0.0', name: 'fz-cluster', type: 'loopback' }] });
      const env = podEnv('ADD', id, ns.path, { name: id, namespace: 'default', uid: `uid-${id}` });
      env.CNI_ARGS += extraArgs;
      const add = await node.exec(env, conf, shimPath);
      const context = () => `case ${id}: ${JSON.stringify({ nads, annotations: ann, extraArgs })}\nADD: ${add.status} ${add.stdout}`;
      assert.ok(add.json, `a JSON answer on stdout; ${context()}`);
      if (add.status === 0) assert.equal(typeof add.json.cniVersion, 'string', context());
      else {
        assert.equal(add.status, 1, context());
        assert.equal(typeof add.json.code, 'number', context());
        assert.equal(typeof add.json.msg, 'string', context());
      }
      const attached =
        add.status === 0
          ? nativeAddon()
              .linkNames(ns.path)
              .filter((l) => l !== 'lo').length
          : 0;
      const key = add.status === 0 ? (attached ? 'attached secondaries' : 'cluster network only') : `code ${String(add.json.code)}`;
      outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
      assert.equal(daemon.exitCode, null, `the daemon is alive; ${context()}`);
      const del = await node.exec({ ...env, CNI_COMMAND: 'DEL' }, conf, shimPath);
      assert.equal(del.status, 0, `DEL converges; ${context()}\nDEL: ${del.stdout}`);
      // Only this case's record: reading them all per case would make the run quadratic.
      const read = store.read(id);
      assert.deepEqual(read.kind === 'ok' ? read.record.attachments : [], [], `nothing recorded as attached; ${context()}`);
      assert.notEqual(read.kind, 'corrupt', context());
      // What a delegate could not undo for a reason that cannot change (its config) is recorded as
      // abandoned: it may stay in the pod netns, which the runtime destroys next.
      const abandoned = read.kind === 'ok' ? (read.record.abandoned ?? []).map((a) => a.ifName) : [];
      const left = nativeAddon()
        .linkNames(ns.path)
        .filter((l) => l !== 'lo');
      assert.deepEqual(
        left.filter((l) => !abandoned.includes(l)),
        [],
        `the pod netns is left with lo and what was recorded as abandoned only; ${context()}`,
      );
      if (abandoned.length) outcomes.set('abandoned', (outcomes.get('abandoned') ?? 0) + 1);
      for (const l of left) execFileSync('ip', ['-n', ns.name, 'link', 'del', l]);
    };
    await fc.assert(
      fc.asyncProperty(fc.array(oneCase, { minLength: BATCH, maxLength: BATCH }), async (batch) => {
        await Promise.all(batch.map((c, slot) => runCase(slot, c)));
        linksBefore ??= hostLinks();
      }),
      { numRuns: Math.ceil(RUNS / BATCH), endOnFailure: true },
    );
    assert.equal(daemon.exitCode, null);
    assert.deepEqual(hostLinks(), linksBefore, 'the host has exactly its links');
    const escaped = daemon.logs.filter((l) => String(l.msg).includes('escaped its request'));
    assert.deepEqual(escaped, [], 'no error escaped a request');
    process.stderr.write(`      ${n} cases: ${JSON.stringify(Object.fromEntries([...outcomes].sort((a, b) => b[1] - a[1])))}\n`);
    assert.ok((outcomes.get('attached secondaries') ?? 0) > n / 10, 'a good share of the cases reach the delegates and attach');
  });
});
