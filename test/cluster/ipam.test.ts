/**
 * Plexus IPAM against the real kube-apiserver (control plane of `plexusctl cluster`): several node
 * daemons, each with its own node name, state and socket, share pools through IPPool/IPChunk objects.
 * Requests reach them as a delegate's IPAM exec reaches them: plexus-shim installed as `plexus-ipam` /
 * `whereabouts`, with PLEXUS_DAEMON_SOCKET set; and once end to end through the meta plugin and a real
 * macvlan delegate in a netns.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseIp } from '../../src/ipam/addr.js';
import { LocalCluster } from '../../src/sim/cluster.js';
import { kubectlFor } from '../../src/sim/cluster-plexus.js';
import { repoRoot } from '../../src/sim/simnode.js';
import { pollUntil } from '../../src/util/poll.js';
import { type DaemonProcess, startDaemon, stopDaemon } from '../support/daemon.js';
import { Rig, ipAddresses } from '../support/rig.js';

interface Reply {
  status: number | null;
  out: { ips?: { address: string }[]; code?: number; msg?: string; details?: string };
}

describe('Plexus IPAM on the real API server: node daemons sharing pools through IPChunks', function () {
  this.timeout(300_000);
  const rig = new Rig();
  let dir: string;
  let cluster: LocalCluster;
  let bin: string;
  const daemons: { proc: DaemonProcess; socket: string }[] = [];
  const NODES = 3;

  /** One IPAM request as a delegate makes it: the shim under an IPAM name, the delegate's conf on stdin. */
  const ipam = (node: number, command: string, containerID: string, conf: object, as = 'plexus-ipam'): Promise<Reply> =>
    new Promise((resolve) => {
      const child = spawn(join(bin, as), [], {
        env: {
          CNI_COMMAND: command,
          CNI_CONTAINERID: containerID,
          CNI_NETNS: '/var/run/netns/none',
          CNI_IFNAME: 'net1',
          CNI_PATH: bin,
          CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=${containerID}`,
          PLEXUS_DAEMON_SOCKET: daemons[node]!.socket,
        },
      });
      let stdout = '';
      child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
      child.on('close', (status) => resolve({ status, out: stdout ? (JSON.parse(stdout) as Reply['out']) : {} }));
      child.stdin.end(JSON.stringify(conf));
    });
  const netConf = (ipamSection: object) => ({ cniVersion: '1.0.0', name: 'ipam-test', type: 'macvlan', master: 'eth0', ipam: ipamSection });

  before(async () => {
    dir = rig.dir('ipam');
    cluster = new LocalCluster({ dir: join(dir, 'cluster'), kubelet: false });
    await cluster.up();
    const kubectl = kubectlFor(cluster);
    await kubectl(['apply', '-f', join(repoRoot(), 'crds')]);
    await kubectl(['wait', '--for=condition=Established', 'crd/ipchunks.ipam.plexus.network', 'crd/ippools.ipam.plexus.network', '--timeout=60s']);
    // Established is not yet served: the API server answers 429 "storage is (re)initializing" a moment longer.
    await pollUntil(
      'IPChunks served',
      async () =>
        await kubectl(['get', 'ipchunks.ipam.plexus.network']).then(
          () => true,
          () => undefined,
        ),
      30_000,
    );
    bin = join(dir, 'bin');
    mkdirSync(bin);
    for (const name of ['plexus-ipam', 'whereabouts']) copyFileSync(join(repoRoot(), 'native', 'plexus-shim'), join(bin, name));
    for (let n = 0; n < NODES; n++) {
      const socket = join(dir, `n${n}.sock`);
      const proc = await startDaemon(socket, ['--kubeconfig', cluster.adminKubeconfig, '--node-name', `ipam-node-${n}`, '--cni-dir', join(dir, `n${n}`), '--log-level', 'warn']);
      daemons.push({ proc, socket });
    }
  });

  after(async () => {
    for (const d of daemons) await stopDaemon(d.proc);
    await cluster?.down();
    rig.cleanup();
  });

  it('8-way ADDs on 3 nodes over one /26 until it is full and beyond: no address twice, exhaustion is a clear code 7, all DELs free everything', async () => {
    const conf = netConf({ type: 'plexus-ipam', range: '10.60.0.0/26', gateway: '10.60.0.1' });
    const capacity = 64 - 2 - 1;
    const total = capacity + 12;
    const results: Reply[] = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < total) {
          const i = next++;
          results[i] = await ipam(i % NODES, 'ADD', `fill-${i}`, conf);
        }
      }),
    );
    const given = results.filter((r) => r.status === 0).map((r) => r.out.ips![0]!.address);
    assert.equal(new Set(given).size, given.length, 'no address given twice');
    assert.ok(!given.includes('10.60.0.1/26') && !given.includes('10.60.0.0/26') && !given.includes('10.60.0.63/26'), 'never the gateway, network or broadcast address');
    const refused = results.filter((r) => r.status !== 0);
    assert.ok(refused.length >= total - capacity, `${refused.length} refused`);
    for (const r of refused) assert.match(`${r.out.code} ${r.out.msg}`, /^7 pool 10\.60\.0\.0\/26 is exhausted/);
    // Chunks are spread: every node owns some, and the addresses a node gave are in its chunks only.
    const kubectl = kubectlFor(cluster);
    const chunks = JSON.parse(await kubectl(['get', 'ipchunks.ipam.plexus.network', '-o', 'json'])) as { items: { spec: { node: string; cidr: string } }[] };
    assert.deepEqual([...new Set(chunks.items.map((c) => c.spec.node))].sort(), ['ipam-node-0', 'ipam-node-1', 'ipam-node-2']);
    // A retried ADD gets the same address; DEL frees it (twice is fine); the freed address is handed out again.
    const first = results.findIndex((r) => r.status === 0);
    assert.deepEqual((await ipam(first % NODES, 'ADD', `fill-${first}`, conf)).out.ips, results[first]!.out.ips);
    for (let i = 0; i < total; i++) assert.equal((await ipam(i % NODES, 'DEL', `fill-${i}`, conf)).status, 0);
    assert.equal((await ipam(first % NODES, 'DEL', `fill-${first}`, conf)).status, 0);
    const again = await ipam(first % NODES, 'ADD', 'after', conf);
    assert.equal(again.status, 0, JSON.stringify(again.out));
    await ipam(first % NODES, 'DEL', 'after', conf);
  });

  it('end to end: the meta plugin (shim → daemon) runs a real macvlan, which execs plexus-ipam; the address is in the pod netns; DEL gives it back', async () => {
    const kubectl = kubectlFor(cluster);
    const [master] = rig.veth('im');
    execFileSync('ip', ['link', 'set', master!, 'up']);
    const nad = {
      apiVersion: 'k8s.cni.cncf.io/v1',
      kind: 'NetworkAttachmentDefinition',
      metadata: { name: 'ipam-mv', namespace: 'default' },
      spec: { config: JSON.stringify({ cniVersion: '1.0.0', name: 'ipam-mv', type: 'macvlan', master, mode: 'bridge', ipam: { type: 'plexus-ipam', range: '10.61.0.0/24', gateway: '10.61.0.1' } }) },
    };
    await kubectl(['apply', '-f', '-'], JSON.stringify(nad));
    const clusterConf = join(dir, 'loopback.conf');
    writeFileSync(clusterConf, JSON.stringify({ cniVersion: '1.0.0', name: 'cluster', type: 'loopback' }));
    copyFileSync(join(repoRoot(), 'native', 'plexus-shim'), join(bin, 'plexus-shim'));
    const ns = rig.netns('ipam');
    const meta = {
      cniVersion: '1.0.0',
      name: 'plexus',
      type: 'plexus-shim',
      daemonSocket: daemons[1]!.socket,
      clusterNetwork: clusterConf,
      binDir: bin,
      cniDir: join(dir, 'n1'),
      capabilities: { 'io.kubernetes.cri.pod-annotations': true },
      runtimeConfig: { 'io.kubernetes.cri.pod-annotations': { 'k8s.v1.cni.cncf.io/networks': 'ipam-mv' } },
    };
    const run = (command: string) =>
      spawnSync(join(bin, 'plexus-shim'), [], {
        input: JSON.stringify(meta),
        encoding: 'utf8',
        env: {
          CNI_COMMAND: command,
          CNI_CONTAINERID: 'e2e-ipam',
          CNI_NETNS: ns.path,
          CNI_IFNAME: 'eth0',
          CNI_PATH: `${bin}:/usr/lib/cni`,
          CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=e2e-ipam;K8S_POD_UID=u-1',
        },
      });
    const add = run('ADD');
    assert.equal(add.status, 0, add.stdout + add.stderr);
    const [addr] = ipAddresses(ns.name, 'net1');
    assert.match(addr!, /^10\.61\.0\.\d+\/24$/);
    assert.notEqual(addr, '10.61.0.1/24');
    assert.equal(run('DEL').status, 0);
    // Handed out again after the DEL: the same node's next ADD starts from the lowest free address of its chunk.
    const again = await ipam(1, 'ADD', 'after-e2e', netConf({ type: 'plexus-ipam', range: '10.61.0.0/24', gateway: '10.61.0.1' }));
    assert.equal(again.out.ips?.[0]?.address, addr);
    await ipam(1, 'DEL', 'after-e2e', netConf({ type: 'plexus-ipam', range: '10.61.0.0/24', gateway: '10.61.0.1' }));
  });

  it('a whereabouts conf works unchanged (type whereabouts, its kubeconfig key ignored), IPv4 and IPv6 at once', async () => {
    const conf = netConf({
      type: 'whereabouts',
      range: '192.168.20.225-192.168.20.230/28',
      ipRanges: [{ range: '2001:db8:5::/64' }],
      kubernetes: { kubeconfig: '/etc/cni/net.d/whereabouts.d/whereabouts.kubeconfig' },
    });
    const r = await ipam(0, 'ADD', 'wb-1', conf, 'whereabouts');
    assert.equal(r.status, 0, JSON.stringify(r.out));
    const [v4, v6] = r.out.ips!.map((i) => i.address);
    assert.match(v4!, /^192\.168\.20\.22[5-9]\/28$|^192\.168\.20\.230\/28$/);
    const [a6, p6] = v6!.split('/');
    assert.equal(p6, '64');
    assert.equal(parseIp(a6!)!.value >> 64n, parseIp('2001:db8:5::')!.value >> 64n, `${v6} is in 2001:db8:5::/64`);
    assert.equal((await ipam(0, 'CHECK', 'wb-1', conf, 'whereabouts')).status, 0);
    assert.equal((await ipam(0, 'DEL', 'wb-1', conf, 'whereabouts')).status, 0);
    assert.notEqual((await ipam(0, 'CHECK', 'wb-1', conf, 'whereabouts')).status, 0, 'CHECK after DEL finds nothing held');
  });
});
