/**
 * MultiNetworkPolicy on the real API server (control plane of `plexusctl cluster`), enforced by two
 * node daemons in the pods' netns. Pods a, b, c in namespaces x, y, z, each with a bridge (net1) and a
 * macvlan (net2) secondary, dual stack; probe agents in every pod netns; for each policy case the whole
 * TCP/UDP/ICMP matrix over both networks and families, expected vs observed.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parse } from 'yaml';
import { ApiClient } from '../../src/k8s/client.js';
import { kubeconfigToApiConfig, loadKubeconfig } from '../../src/k8s/kubeconfig.js';
import { ApiServerDouble } from '../../src/sim/apiserver.js';
import { LocalCluster } from '../../src/sim/cluster.js';
import { applyCrds, kubectlFor } from '../../src/sim/cluster-plexus.js';
import { repoRoot } from '../../src/sim/simnode.js';
import { pollUntil } from '../../src/util/poll.js';
import { type DaemonProcess, startDaemon, stopDaemon } from '../support/daemon.js';
import { installRecordPlugin, plexusctlPath } from '../support/plugins.js';
import { type MatrixPod, type Probe, ProbeAgent, allProbes, matrixSettles } from '../support/probes.js';
import { Rig, ipJson } from '../support/rig.js';
import { metadataOnlyContract } from '../support/metadata-contract.js';
import { selectorContract } from '../support/selector-contract.js';

const BRIDGE = 'default/pol-bridge';
const MACVLAN = 'default/pol-macvlan';
const NAMESPACES = ['x', 'y', 'z'];
const NAMES = ['a', 'b', 'c'];

describe('MultiNetworkPolicy on the real API server: the probe matrix over bridge and macvlan, IPv4 and IPv6, TCP/UDP/ICMP', function () {
  this.timeout(600_000);
  const rig = new Rig();
  let dir: string;
  let bin: string;
  let cluster: LocalCluster;
  let kubectl: ReturnType<typeof kubectlFor>;
  const daemons: { proc?: DaemonProcess; socket: string; node: string }[] = [0, 1].map((n) => ({ socket: '', node: `policy-node-${n}` }));
  const pods: (MatrixPod & { netns: { name: string; path: string }; node: number; uid: string })[] = [];
  let probes: Probe[];
  let bridgeName: string;

  const startNode = async (n: number) => {
    daemons[n]!.socket = join(dir, `n${n}.sock`);
    daemons[n]!.proc = await startDaemon(daemons[n]!.socket, ['--kubeconfig', cluster.adminKubeconfig, '--node-name', daemons[n]!.node, '--cni-dir', join(dir, `n${n}`), '--log-level', 'info']);
  };
  const metaConf = (node: number, networks = `${BRIDGE}, ${MACVLAN}`) => ({
    cniVersion: '1.0.0',
    name: 'plexus',
    type: 'plexus-shim',
    daemonSocket: daemons[node]!.socket,
    clusterNetwork: join(dir, 'loopback.conf'),
    binDir: bin,
    cniDir: join(dir, `n${node}`),
    capabilities: { 'io.kubernetes.cri.pod-annotations': true },
    runtimeConfig: { 'io.kubernetes.cri.pod-annotations': { 'k8s.v1.cni.cncf.io/networks': networks } },
  });
  /** The meta plugin as the runtime calls it: shim → this pod's node daemon. */
  const cni = (pod: { id: string; netns: { path: string }; node: number; uid: string }, command: string, networks?: string) => {
    const [ns, name] = pod.id.split('/');
    return spawnSync(join(bin, 'plexus-shim'), [], {
      input: JSON.stringify(metaConf(pod.node, networks)),
      encoding: 'utf8',
      env: {
        CNI_COMMAND: command,
        CNI_CONTAINERID: `sb-${ns}-${name}`,
        CNI_NETNS: pod.netns.path,
        CNI_IFNAME: 'eth0',
        CNI_PATH: `${bin}:/usr/lib/cni`,
        CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${ns};K8S_POD_NAME=${name};K8S_POD_UID=${pod.uid}`,
      },
    });
  };
  const podObject = (ns: string, name: string) => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: ns, labels: { pod: name } },
    spec: {
      nodeName: daemons[(NAMES.indexOf(name) + NAMESPACES.indexOf(ns)) % 2]!.node,
      containers: [
        {
          name: 'c',
          image: 'pause',
          ports: [
            { name: 'web', containerPort: 80 },
            { name: 'alt', containerPort: 81 },
            { name: 'echo', containerPort: 80, protocol: 'UDP' },
          ],
        },
      ],
    },
  });
  const policy = (ns: string, name: string, spec: object, networks = 'pol-bridge') => ({
    apiVersion: 'k8s.cni.cncf.io/v1beta2',
    kind: 'MultiNetworkPolicy',
    metadata: { name, namespace: ns, annotations: { 'k8s.v1.cni.cncf.io/policy-for': networks.includes('/') ? networks : `default/${networks}` } },
    spec,
  });
  const apply = (...objs: object[]) => kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objs }));
  const removePolicies = () => kubectl(['delete', 'multi-networkpolicies.k8s.cni.cncf.io', '--all', '--all-namespaces', '--wait=true']);
  /** The whole matrix settles to what `expected` says; a failure lists the probes that differ. */
  const expectMatrix = async (what: string, expected: (p: Probe) => boolean) => {
    const diff = await matrixSettles(pods, probes, expected);
    assert.deepEqual(
      pods.flatMap((p) => p.agent.exited ?? []),
      [],
      'every probe agent is alive',
    );
    assert.deepEqual(diff.slice(0, 30), [], `${what}: ${diff.length} probes differ`);
  };
  /** A pod's IPv4 and IPv6 address on each network, as its netns has them. */
  const addressesIn = (netnsName: string): MatrixPod['addrs'] => {
    const addrs: MatrixPod['addrs'] = {};
    for (const [network, ifname] of [
      [BRIDGE, 'net1'],
      [MACVLAN, 'net2'],
    ] as const) {
      const [link] = ipJson<{ addr_info: { family: string; local: string; scope: string }[] }[]>(['-n', netnsName, 'addr', 'show', 'dev', ifname]);
      const global = (link?.addr_info ?? []).filter((a) => a.scope === 'global');
      addrs[network] = { 4: global.find((a) => a.family === 'inet')?.local, 6: global.find((a) => a.family === 'inet6')?.local };
    }
    return addrs;
  };
  const addrOf = (id: string, network: string, family: 4 | 6) => pods.find((p) => p.id === id)!.addrs[network]![family]!;

  before(async () => {
    dir = rig.dir('policy');
    cluster = new LocalCluster({ dir: join(dir, 'cluster'), kubelet: false });
    await cluster.up();
    kubectl = kubectlFor(cluster);
    await applyCrds(kubectl, [join(repoRoot(), 'crds')], ['multi-networkpolicies.k8s.cni.cncf.io', 'network-attachment-definitions.k8s.cni.cncf.io']);
    bin = join(dir, 'bin');
    mkdirSync(bin);
    copyFileSync(join(repoRoot(), 'native', 'plexus-shim'), join(bin, 'plexus-shim'));
    writeFileSync(join(dir, 'loopback.conf'), JSON.stringify({ cniVersion: '1.0.0', name: 'cluster', type: 'loopback' }));
    // The macvlan's master: a veth with both ends up (a master without carrier leaves the macvlans down).
    const [master, peer] = rig.veth('pm');
    for (const l of [master!, peer!]) execFileSync('ip', ['link', 'set', l, 'up']);
    bridgeName = `plxpolbr${process.pid % 1000}`;
    rig.ownLink(bridgeName);
    const ranges = (v4: string, v6: string) => ({ type: 'host-local', ranges: [[{ subnet: v4 }], [{ subnet: v6 }]], dataDir: join(dir, 'host-local') });
    const nad = (name: string, config: object) => ({
      apiVersion: 'k8s.cni.cncf.io/v1',
      kind: 'NetworkAttachmentDefinition',
      metadata: { name, namespace: 'default' },
      spec: { config: JSON.stringify({ cniVersion: '1.0.0', name, ...config }) },
    });
    await apply(
      nad('pol-bridge', { type: 'bridge', bridge: bridgeName, ipam: ranges('10.73.0.0/24', 'fd73::/64') }),
      nad('pol-macvlan', { type: 'macvlan', master, mode: 'bridge', ipam: ranges('10.74.0.0/24', 'fd74::/64') }),
      ...NAMESPACES.map((ns) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns, labels: { ns } } })),
      // The simulated nodes are nodes to the API: the pod GC deletes pods bound to a node that does not exist.
      ...daemons.map((d) => ({ apiVersion: 'v1', kind: 'Node', metadata: { name: d.node } })),
    );
    // The controller-manager gives each new namespace its default ServiceAccount a moment later.
    await pollUntil(
      'service accounts',
      async () => ((await kubectl(['get', 'serviceaccounts', '-A', '-o', 'name'])).split('\n').filter((l) => l === 'serviceaccount/default').length >= 4 ? true : undefined),
      60_000,
    );
    await apply(...NAMESPACES.flatMap((ns) => NAMES.map((name) => podObject(ns, name))));
    for (const n of [0, 1]) await startNode(n);
    for (const ns of NAMESPACES) {
      for (const name of NAMES) {
        const uid = (await kubectl(['get', 'pod', '-n', ns, name, '-o', 'jsonpath={.metadata.uid}'])).trim();
        const netns = rig.netns(`p${ns}${name}`);
        // No DAD: the addresses are usable at once (the matrix is about policy, not DAD).
        execFileSync('ip', ['netns', 'exec', netns.name, 'sysctl', '-qw', 'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0']);
        const pod = { id: `${ns}/${name}`, netns, node: podObject(ns, name).spec.nodeName === daemons[0]!.node ? 0 : 1, uid };
        const add = cni(pod, 'ADD');
        assert.equal(add.status, 0, add.stdout + add.stderr);
        pods.push({ ...pod, addrs: addressesIn(netns.name), agent: new ProbeAgent(netns.path) });
      }
    }
    await Promise.all(pods.map((p) => p.agent.ready));
    probes = allProbes(pods, [BRIDGE, MACVLAN]);
  });

  after(async () => {
    for (const p of pods) p.agent.stop();
    for (const p of pods) cni(p, 'DEL');
    for (const d of daemons) await stopDaemon(d.proc);
    await cluster?.down();
    rig.cleanup();
  });

  afterEach(async function () {
    if (this.currentTest?.state === 'failed')
      for (const d of daemons)
        process.stderr.write(
          `      ${d.node} logs:\n${(d.proc?.logs ?? [])
            .filter((l) => l.msg !== 'ADD done' && l.msg !== 'DEL done')
            .slice(-40)
            .map((l) => `        ${JSON.stringify(l)}`)
            .join('\n')}\n`,
        );
    await removePolicies();
  });

  const open = () => true;
  /** Expected: blocked where `blocked` says, on the bridge network only (policy-for it), open elsewhere. */
  const onBridge = (blocked: (p: Probe) => boolean) => (p: Probe) => p.network !== BRIDGE || !blocked(p);

  /** A contract run against the real API server, then against the API double: the double must agree with the real thing. */
  const onRealServerAndDouble = async (contract: (api: ApiClient) => Promise<void>) => {
    await contract(new ApiClient(await loadKubeconfig(cluster.adminKubeconfig), 10_000));
    const double = new ApiServerDouble();
    await double.start();
    try {
      await contract(new ApiClient(kubeconfigToApiConfig(parse(double.kubeconfig()), 'the double'), 10_000));
    } finally {
      await double.stop();
    }
  };

  it('the label selectors of peer watches select on the real API server what the engine expects, and the API double agrees', async () => {
    await kubectl(['create', 'namespace', 'plx-sel']);
    await onRealServerAndDouble((api) => selectorContract(api, 'plx-sel'));
  });

  it('metadata-only lists and watches (the Node and namespace informers) get PartialObjectMetadata from the real API server, and from the double alike', async () => {
    await onRealServerAndDouble((api) => metadataOnlyContract(api, 'plx-meta-node'));
  });

  it('no policy: every probe gets through (the matrix itself works)', async () => {
    await expectMatrix('open', open);
  });

  it('deny-all ingress in x: nothing reaches x on the bridge; x still reaches out; the macvlan (not in policy-for) stays open', async () => {
    await apply(policy('x', 'deny-all', { podSelector: {}, policyTypes: ['Ingress'] }));
    await expectMatrix(
      'deny-all ingress',
      onBridge((p) => p.to.startsWith('x/')),
    );
  });

  it('allow from a podSelector: only x/b reaches x/a', async () => {
    await apply(policy('x', 'a-from-b', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }] }] }));
    await expectMatrix(
      'podSelector',
      onBridge((p) => p.to === 'x/a' && p.from !== 'x/b'),
    );
  });

  it('allow from a namespaceSelector: every pod of y reaches x/a, no one else', async () => {
    await apply(policy('x', 'a-from-y', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }] }] }));
    await expectMatrix(
      'namespaceSelector',
      onBridge((p) => p.to === 'x/a' && !p.from.startsWith('y/')),
    );
  });

  it('podSelector and namespaceSelector in one peer (AND): only b of y and z reach x/a', async () => {
    await apply(
      policy('x', 'a-from-b-yz', {
        podSelector: { matchLabels: { pod: 'a' } },
        ingress: [{ from: [{ namespaceSelector: { matchExpressions: [{ key: 'ns', operator: 'In', values: ['y', 'z'] }] }, podSelector: { matchLabels: { pod: 'b' } } }] }],
      }),
    );
    await expectMatrix(
      'pod AND namespace',
      onBridge((p) => p.to === 'x/a' && p.from !== 'y/b' && p.from !== 'z/b'),
    );
  });

  it('two peers (OR) and two policies stacked (OR): x/c, every pod of z, and y/a reach x/a', async () => {
    await apply(
      policy('x', 'a-from-c-or-z', {
        podSelector: { matchLabels: { pod: 'a' } },
        ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'c' } } }, { namespaceSelector: { matchLabels: { ns: 'z' } } }] }],
      }),
      policy('x', 'a-from-ya', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'y' } }, podSelector: { matchLabels: { pod: 'a' } } }] }] }),
    );
    await expectMatrix(
      'OR',
      onBridge((p) => p.to === 'x/a' && !['x/c', 'z/a', 'z/b', 'z/c', 'y/a'].includes(p.from)),
    );
  });

  it('ipBlock with except (IPv4): the bridge /24 but y/b reaches x/a; IPv6 is not in the block', async () => {
    await apply(
      policy('x', 'a-from-block', {
        podSelector: { matchLabels: { pod: 'a' } },
        ingress: [{ from: [{ ipBlock: { cidr: '10.73.0.0/24', except: [`${addrOf('y/b', BRIDGE, 4)}/32`] } }] }],
      }),
    );
    await expectMatrix(
      'ipBlock',
      onBridge((p) => p.to === 'x/a' && (p.family === 6 || p.from === 'y/b')),
    );
  });

  it('ipBlock (IPv6): the bridge /64 reaches x/a over IPv6 only', async () => {
    await apply(policy('x', 'a-from-v6', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ ipBlock: { cidr: 'fd73::/64' } }] }] }));
    await expectMatrix(
      'ipBlock v6',
      onBridge((p) => p.to === 'x/a' && p.family === 4),
    );
  });

  it('a named port: x/a takes TCP on its port "web" (80) from anyone, nothing else', async () => {
    await apply(policy('x', 'a-web', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ ports: [{ port: 'web' }] }] }));
    await expectMatrix(
      'named port',
      onBridge((p) => p.to === 'x/a' && p.kind !== 'tcp80'),
    );
  });

  it('endPort: TCP 81-85 to x/a passes, TCP 80 and UDP do not', async () => {
    await apply(policy('x', 'a-range', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ ports: [{ protocol: 'TCP', port: 81, endPort: 85 }] }] }));
    await expectMatrix(
      'endPort',
      onBridge((p) => p.to === 'x/a' && p.kind !== 'tcp81'),
    );
  });

  it('a protocol without a port: any UDP to x/a passes, TCP and ICMP do not', async () => {
    await apply(policy('x', 'a-udp', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ ports: [{ protocol: 'UDP' }] }] }));
    await expectMatrix(
      'protocol only',
      onBridge((p) => p.to === 'x/a' && p.kind !== 'udp80'),
    );
  });

  it('egress deny-all for x/a: x/a reaches no one on the bridge; everyone still reaches x/a (replies pass: stateful)', async () => {
    await apply(policy('x', 'a-no-egress', { podSelector: { matchLabels: { pod: 'a' } }, policyTypes: ['Egress'] }));
    await expectMatrix(
      'egress deny',
      onBridge((p) => p.from === 'x/a'),
    );
  });

  it('egress allow: x/a reaches only z/c, and only on TCP 80 (its named port "web")', async () => {
    await apply(
      policy('x', 'a-to-zc', {
        podSelector: { matchLabels: { pod: 'a' } },
        policyTypes: ['Egress'],
        egress: [{ to: [{ namespaceSelector: { matchLabels: { ns: 'z' } }, podSelector: { matchLabels: { pod: 'c' } } }], ports: [{ port: 'web' }] }],
      }),
    );
    await expectMatrix(
      'egress allow',
      onBridge((p) => p.from === 'x/a' && !(p.to === 'z/c' && p.kind === 'tcp80')),
    );
  });

  it('ingress and egress in one policy: y/b takes only from y, sends only to z', async () => {
    await apply(
      policy('y', 'b-both', {
        podSelector: { matchLabels: { pod: 'b' } },
        ingress: [{ from: [{ podSelector: {} }] }],
        egress: [{ to: [{ namespaceSelector: { matchLabels: { ns: 'z' } } }] }],
      }),
    );
    await expectMatrix(
      'both directions',
      onBridge((p) => (p.to === 'y/b' && !p.from.startsWith('y/')) || (p.from === 'y/b' && !p.to.startsWith('z/'))),
    );
  });

  it('policy-for the macvlan: x is closed there and open on the bridge', async () => {
    await apply(policy('x', 'deny-mv', { podSelector: {}, policyTypes: ['Ingress'] }, 'pol-macvlan'));
    await expectMatrix('policy-for', (p) => !(p.network === MACVLAN && p.to.startsWith('x/')));
  });

  it('policy-for both networks, then the policy deleted: closed on both, then open again', async () => {
    await apply(policy('z', 'deny-both', { podSelector: { matchLabels: { pod: 'c' } }, policyTypes: ['Ingress'] }, 'default/pol-bridge, default/pol-macvlan'));
    await expectMatrix('both networks', (p) => p.to !== 'z/c');
    await removePolicies();
    await expectMatrix('deleted', open);
  });

  it('labels change, rules follow: a peer labelled in, a namespace labelled in, the selected pod labelled out', async () => {
    await apply(
      policy('x', 'a-from-friends', {
        podSelector: { matchLabels: { pod: 'a' } },
        ingress: [{ from: [{ namespaceSelector: {}, podSelector: { matchLabels: { role: 'friend' } } }, { namespaceSelector: { matchLabels: { team: 'blue' } } }] }],
      }),
    );
    await expectMatrix(
      'no friends',
      onBridge((p) => p.to === 'x/a'),
    );
    await kubectl(['label', 'pod', '-n', 'z', 'c', 'role=friend']);
    await expectMatrix(
      'z/c a friend',
      onBridge((p) => p.to === 'x/a' && p.from !== 'z/c'),
    );
    await kubectl(['label', 'namespace', 'y', 'team=blue']);
    await expectMatrix(
      'y blue',
      onBridge((p) => p.to === 'x/a' && p.from !== 'z/c' && !p.from.startsWith('y/')),
    );
    await kubectl(['label', 'pod', '-n', 'x', 'a', 'pod=a-renamed', '--overwrite']);
    await expectMatrix('x/a not selected', open);
    await kubectl(['label', 'pod', '-n', 'x', 'a', 'pod=a', '--overwrite']);
    await kubectl(['label', 'pod', '-n', 'z', 'c', 'role-']);
    await kubectl(['label', 'namespace', 'y', 'team-']);
  });

  it("each daemon's watches and requests (cache, policy, IPAM, leader) share one HTTP/2 connection to kube-apiserver", async () => {
    await apply(policy('x', 'a-from-b', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }] }] }));
    await expectMatrix(
      'podSelector',
      onBridge((p) => p.to === 'x/a' && p.from !== 'x/b'),
    );
    for (const d of daemons) {
      const url = d.proc!.logs.find((l) => l.msg === 'metrics')?.url;
      assert.equal(typeof url, 'string', `${d.node} logs its metrics address`);
      const metrics = await (await fetch(new URL('/metrics', String(url)))).text();
      const watches = metrics
        .split('\n')
        .filter((l) => l.startsWith('plexus_api_watches{'))
        .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
      assert.ok(watches >= 5, `${d.node}: ${watches} watches open`);
      const debug = (await (await fetch(new URL('/debug', String(url)))).json()) as { apiConnections?: { open: number; opened: number } };
      assert.deepEqual(debug.apiConnections, { open: 1, opened: 1 }, `${d.node}: ${watches} watches over one connection, opened once`);
    }
  });

  it('the tables are one per pod netns, named by policy; plexusctl policy explain says which policy put each rule', async () => {
    await apply(policy('x', 'a-from-b', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'b' } } }], ports: [{ port: 80 }] }] }));
    const a = pods.find((p) => p.id === 'x/a')!;
    const b = addrOf('x/b', BRIDGE, 4);
    const table = await pollUntil(
      'x/a table',
      async () => {
        const t = execFileSync('ip', ['netns', 'exec', a.netns.name, 'nft', 'list', 'table', 'inet', 'plexus_policy'], { encoding: 'utf8' });
        return t.includes(b) ? t : undefined;
      },
      20_000,
    );
    assert.match(table, new RegExp(`iifname "net1" jump`));
    assert.match(table, new RegExp(`ip saddr ${b.replace(/\./g, '\\.')} tcp dport 80 accept comment "x/a-from-b ingress\\[0\\]"`));
    assert.doesNotMatch(table, /net2/, 'the macvlan is not filtered');
    const explained = execFileSync(plexusctlPath, ['policy', 'explain', 'x/a', '--kubeconfig', cluster.adminKubeconfig], { encoding: 'utf8' });
    assert.match(explained, /net1 \(default\/pol-bridge\)/);
    assert.match(explained, /ingress: isolated by x\/a-from-b/);
    assert.match(explained, new RegExp(`x/a-from-b ingress\\[0\\].*${b.replace(/\./g, '\\.')}`));
    assert.match(explained, /net2 \(default\/pol-macvlan\): open/);
    const json = JSON.parse(
      execFileSync(plexusctlPath, ['policy', 'explain', 'x/a', '--network', 'default/pol-bridge', '--kubeconfig', cluster.adminKubeconfig, '-o', 'json'], { encoding: 'utf8' }),
    ) as {
      interfaces: { ifName: string }[];
    };
    assert.deepEqual(
      json.interfaces.map((i) => i.ifName),
      ['net1'],
    );
  });

  it('a new pod a policy selects has its rules before its ADD returns', async () => {
    await apply(policy('x', 'deny-new', { podSelector: { matchLabels: { pod: 'new' } }, policyTypes: ['Ingress', 'Egress'] }));
    await apply({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'new', namespace: 'x', labels: { pod: 'new' } },
      spec: { nodeName: daemons[0]!.node, containers: [{ name: 'c', image: 'pause' }] },
    });
    const uid = (await kubectl(['get', 'pod', '-n', 'x', 'new', '-o', 'jsonpath={.metadata.uid}'])).trim();
    const fresh = { id: 'x/new', netns: rig.netns('pxnew'), node: 0, uid };
    // Nothing orders a policy's arrival at a node before a pod's ADD (in any implementation): the
    // daemon's watch is given a moment to bring it.
    await sleep(2000);
    const add = cni(fresh, 'ADD');
    assert.equal(add.status, 0, add.stdout + add.stderr);
    // Straight after the ADD: the table is there.
    const table = execFileSync('ip', ['netns', 'exec', fresh.netns.name, 'nft', 'list', 'table', 'inet', 'plexus_policy'], { encoding: 'utf8' });
    assert.match(table, /iifname "net1" jump/);
    assert.match(table, /oifname "net1" jump/);
    assert.doesNotMatch(table, /net2/);
    assert.equal(cni(fresh, 'DEL').status, 0);
    await kubectl(['delete', 'pod', '-n', 'x', 'new', '--wait=false']);
  });

  it('an interface that cannot be filtered (no kernel interface in the pod, as a DPDK VF): the ADD goes on, the policy gets a Warning Event naming pod and interface', async () => {
    // The record plugin answers ADD with an interface it never creates: what a DPDK (vfio) VF looks like to the pod netns.
    installRecordPlugin(bin, 'dpdk-standin');
    await apply(
      {
        apiVersion: 'k8s.cni.cncf.io/v1',
        kind: 'NetworkAttachmentDefinition',
        metadata: { name: 'pol-dpdk', namespace: 'default' },
        spec: { config: JSON.stringify({ cniVersion: '1.0.0', name: 'pol-dpdk', type: 'dpdk-standin', address: '10.75.0.2/24' }) },
      },
      policy('x', 'dpdk-deny', { podSelector: { matchLabels: { pod: 'dpdk' } }, policyTypes: ['Ingress'] }, 'pol-dpdk'),
      { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'dpdk', namespace: 'x', labels: { pod: 'dpdk' } }, spec: { nodeName: daemons[1]!.node, containers: [{ name: 'c', image: 'pause' }] } },
    );
    const uid = (await kubectl(['get', 'pod', '-n', 'x', 'dpdk', '-o', 'jsonpath={.metadata.uid}'])).trim();
    const sandbox = { id: 'x/dpdk', netns: rig.netns('pxdpdk'), node: 1, uid };
    await sleep(2000);
    const add = cni(sandbox, 'ADD', 'default/pol-dpdk');
    assert.equal(add.status, 0, add.stdout + add.stderr);
    const events = await pollUntil(
      'the PolicyNotEnforced Event',
      async () => {
        const list = JSON.parse(await kubectl(['get', 'events', '-n', 'x', '--field-selector', 'reason=PolicyNotEnforced,involvedObject.name=dpdk-deny', '-o', 'json'])) as {
          items: { type: string; message: string }[];
        };
        return list.items.length ? list.items : undefined;
      },
      20_000,
    );
    assert.equal(events[0]!.type, 'Warning');
    assert.match(events[0]!.message, /pod x\/dpdk interface net1 \(node policy-node-1\): no kernel interface net1 in the pod/);
    assert.equal(cni(sandbox, 'DEL', 'default/pol-dpdk').status, 0);
    await kubectl(['delete', 'pod', '-n', 'x', 'dpdk', '--grace-period=0', '--force']);
  });

  it('daemon restart: the rules stay while it is down; changes made meanwhile (a policy deleted, a peer pod deleted) are reconciled when it is back', async () => {
    await apply(
      policy('x', 'a-from-y', { podSelector: { matchLabels: { pod: 'a' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: 'y' } } }] }] }),
      policy('y', 'deny-c', { podSelector: { matchLabels: { pod: 'c' } }, policyTypes: ['Ingress'] }),
    );
    const expected = onBridge((p) => (p.to === 'x/a' && !p.from.startsWith('y/')) || p.to === 'y/c');
    await expectMatrix('before', expected);
    const a = pods.find((p) => p.id === 'x/a')!;
    const nodeOfA = a.node;
    const nodeOfYc = pods.find((p) => p.id === 'y/c')!.node;
    for (const d of daemons) d.proc!.kill('SIGKILL');
    await Promise.all(daemons.map((d) => new Promise((r) => (d.proc!.exitCode !== null || d.proc!.signalCode !== null ? r(undefined) : d.proc!.once('exit', r)))));
    // Rules are kernel state: enforced with no daemon.
    await expectMatrix('daemons down', expected);
    await kubectl(['delete', 'multi-networkpolicy', '-n', 'y', 'deny-c']);
    // y/b's pod object deleted while the daemons are down: x/a must not keep admitting its address.
    const ybAddr = addrOf('y/b', BRIDGE, 4);
    const yb = pods.find((p) => p.id === 'y/b')!;
    await kubectl(['delete', 'pod', '-n', 'y', 'b', '--grace-period=0', '--force']);
    await pollUntil('y/b gone', async () => ((await kubectl(['get', 'pods', '-n', 'y', '-o', 'name'])).includes('pod/b') ? undefined : true), 30_000);
    await startNode(nodeOfA);
    if (nodeOfYc !== nodeOfA) await startNode(nodeOfYc);
    for (const n of [0, 1]) if (!daemons[n]!.proc || daemons[n]!.proc!.exitCode !== null || daemons[n]!.proc!.signalCode !== null) await startNode(n);
    await expectMatrix(
      'after restart',
      onBridge((p) => p.to === 'x/a' && (!p.from.startsWith('y/') || p.from === 'y/b')),
    );
    const table = execFileSync('ip', ['netns', 'exec', a.netns.name, 'nft', 'list', 'table', 'inet', 'plexus_policy'], { encoding: 'utf8' });
    assert.ok(!table.includes(ybAddr), `y/b's address is gone from x/a's rules:\n${table}`);
    // y/b back (its pod object recreated, same sandbox): admitted again.
    await apply(podObject('y', 'b'));
    const uid = (await kubectl(['get', 'pod', '-n', 'y', 'b', '-o', 'jsonpath={.metadata.uid}'])).trim();
    assert.equal(cni(yb, 'DEL').status, 0);
    yb.uid = uid;
    const again = cni(yb, 'ADD');
    assert.equal(again.status, 0, again.stdout + again.stderr);
    yb.addrs = addressesIn(yb.netns.name);
    await expectMatrix(
      'y/b back',
      onBridge((p) => p.to === 'x/a' && !p.from.startsWith('y/')),
    );
  });
});
