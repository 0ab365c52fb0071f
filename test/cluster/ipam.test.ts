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
import { setTimeout as sleep } from 'node:timers/promises';
import { formatIp, parseIp } from '../../src/ipam/addr.js';
import { type Geometry, defaultChunkBits, geometry } from '../../src/ipam/chunks.js';
import { parseIpamConfig } from '../../src/ipam/config.js';
import { NodePool } from '../../src/ipam/nodepool.js';
import { IpamPools } from '../../src/ipam/plugin.js';
import { ClusterSweeps } from '../../src/ipam/cluster-sweeps.js';
import { ChunkRegistry, poolName } from '../../src/ipam/registry.js';
import { ApiClient } from '../../src/k8s/client.js';
import { loadKubeconfig } from '../../src/k8s/kubeconfig.js';
import { LocalCluster } from '../../src/sim/cluster.js';
import { applyCrds, kubectlFor } from '../../src/sim/cluster-plexus.js';
import { repoRoot } from '../../src/sim/simnode.js';
import { pollUntil } from '../../src/util/poll.js';
import { type DaemonProcess, startDaemon, stopDaemon } from '../support/daemon.js';
import { plexusctlPath } from '../support/plugins.js';
import { Rig, ipAddresses, linkExists } from '../support/rig.js';

interface Reply {
  status: number | null;
  out: { ips?: { address: string }[]; code?: number; msg?: string; details?: string };
}

describe('Plexus IPAM on the real API server: 10 node daemons sharing pools through IPChunks', function () {
  this.timeout(300_000);
  const rig = new Rig();
  let dir: string;
  let cluster: LocalCluster;
  let bin: string;
  const daemons: { proc: DaemonProcess; socket: string }[] = [];
  const NODES = 10;

  /** One IPAM request as a delegate makes it: the shim under an IPAM name, the delegate's conf on stdin. */
  const ipam = (node: number, command: string, containerID: string, conf: object, as = 'plexus-ipam', extraArgs = ''): Promise<Reply> =>
    new Promise((resolve) => {
      const child = spawn(join(bin, as), [], {
        env: {
          CNI_COMMAND: command,
          CNI_CONTAINERID: containerID,
          CNI_NETNS: '/var/run/netns/none',
          CNI_IFNAME: 'net1',
          CNI_PATH: bin,
          CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=${containerID}${extraArgs}`,
          PLEXUS_DAEMON_SOCKET: daemons[node]!.socket,
        },
      });
      let stdout = '';
      child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
      child.on('close', (status) => resolve({ status, out: stdout ? (JSON.parse(stdout) as Reply['out']) : {} }));
      child.stdin.end(JSON.stringify(conf));
    });
  /**
   * ADD as a runtime does it: code 11 (try again: the owners asked for a loan had nothing, others are
   * asked next time, docs/scale.md) is tried again, as kubelet retries a sandbox.
   */
  const addRetrying = async (node: number, containerID: string, conf: object): Promise<Reply> => {
    for (let attempt = 0; ; attempt++) {
      const r = await ipam(node, 'ADD', containerID, conf);
      if (r.out.code !== 11 || attempt === 30) return r;
      await sleep(200);
    }
  };
  const startNode = (n: number): Promise<DaemonProcess> =>
    startDaemon(join(dir, `n${n}.sock`), ['--kubeconfig', cluster.adminKubeconfig, '--node-name', `ipam-node-${n}`, '--cni-dir', join(dir, `n${n}`), '--log-level', 'warn']);
  /**
   * Every address the nodes' logs say is held, with its node: read as a restarted daemon reads them. An
   * address lent is counted once, at its borrower (the lender holds it for the loan, not for a sandbox);
   * `lent` lists what lenders hold for loans.
   */
  const heldEverywhere = (pool: string, g: Geometry, which: 'used' | 'lent' = 'used'): { node: number; addr: bigint }[] =>
    daemons.flatMap((_, n) => [...new NodePool(join(dir, `n${n}`, 'ipam', 'pools'), pool, g).held].filter(([, h]) => (which === 'lent') === Boolean(h.lent)).map(([addr]) => ({ node: n, addr })));
  const nodeObject = (n: number) => ({ apiVersion: 'v1', kind: 'Node', metadata: { name: `ipam-node-${n}` } });
  const netConf = (ipamSection: object) => ({ cniVersion: '1.0.0', name: 'ipam-test', type: 'macvlan', master: 'eth0', ipam: ipamSection });

  before(async () => {
    dir = rig.dir('ipam');
    cluster = new LocalCluster({ dir: join(dir, 'cluster'), kubelet: false });
    await cluster.up();
    const kubectl = kubectlFor(cluster);
    await applyCrds(kubectl, [join(repoRoot(), 'crds')], ['ipchunks.ipam.plexus.network', 'iploans.ipam.plexus.network', 'ipleases.ipam.plexus.network']);
    // The simulated nodes are nodes to the API too: a node without its Node object is one gone for good.
    await kubectl(['create', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: Array.from({ length: NODES }, (_, n) => nodeObject(n)) }));
    bin = join(dir, 'bin');
    mkdirSync(bin);
    for (const name of ['plexus-ipam', 'whereabouts']) copyFileSync(join(repoRoot(), 'native', 'plexus-shim'), join(bin, name));
    for (let n = 0; n < NODES; n++) daemons.push({ proc: await startNode(n), socket: join(dir, `n${n}.sock`) });
  });

  after(async () => {
    for (const d of daemons) await stopDaemon(d.proc);
    await cluster?.down();
    rig.cleanup();
  });

  it('8-way ADDs on 10 nodes over one /24 until it is full and beyond: no address twice, exhaustion is a clear code 7, all DELs free everything', async () => {
    const conf = netConf({ type: 'plexus-ipam', range: '10.60.0.0/24', gateway: '10.60.0.1' });
    const capacity = 256 - 2 - 1;
    const total = capacity + 12;
    const results: Reply[] = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < total) {
          const i = next++;
          results[i] = await addRetrying(i % NODES, `fill-${i}`, conf);
        }
      }),
    );
    const given = results.filter((r) => r.status === 0).map((r) => r.out.ips![0]!.address);
    assert.equal(new Set(given).size, given.length, 'no address given twice');
    assert.ok(!given.includes('10.60.0.1/24') && !given.includes('10.60.0.0/24') && !given.includes('10.60.0.255/24'), 'never the gateway, network or broadcast address');
    // Every address of the pool is used: its tail, left in chunks of nodes that had no more ADDs, is lent.
    const refused = results.filter((r) => r.status !== 0);
    assert.equal(given.length, capacity, `${given.length} given, ${refused.length} refused`);
    const range = parseIpamConfig({ type: 'plexus-ipam', range: '10.60.0.0/24' }).ranges[0]!;
    const pool = poolName('', range.cidr);
    const g = geometry(range, defaultChunkBits(range));
    const lent = heldEverywhere(pool, g, 'lent');
    assert.ok(lent.length > 0, 'some addresses were lent');
    assert.deepEqual(
      heldEverywhere(pool, g)
        .map((h) => h.addr)
        .sort((a, b) => (a < b ? -1 : 1)),
      given.map((a) => parseIp(a.split('/')[0]!)!.value).sort((a, b) => (a < b ? -1 : 1)),
      'the nodes hold exactly what was given, each address once',
    );
    for (const r of refused) assert.match(`${r.out.code} ${r.out.msg}`, /^7 pool 10\.60\.0\.0\/24 is exhausted/);
    // Chunks are spread: every node owns some, and the addresses a node gave are in its chunks only.
    const kubectl = kubectlFor(cluster);
    const chunks = JSON.parse(await kubectl(['get', 'ipchunks.ipam.plexus.network', '-o', 'json'])) as { items: { spec: { node: string; cidr: string } }[] };
    assert.equal(new Set(chunks.items.map((c) => c.spec.node)).size, NODES, 'every node owns chunks');
    // plexusctl ipam: the pool with its chunks over the nodes, and who holds an address.
    const ctl = (args: string[]) => JSON.parse(execFileSync(plexusctlPath, ['ipam', ...args, '--kubeconfig', cluster.adminKubeconfig, '-o', 'json'], { encoding: 'utf8' })) as unknown;
    const listed = (ctl(['pools']) as { cidr: string; chunkSize: number; chunks: number; nodes: number }[]).find((p) => p.cidr === '10.60.0.0/24')!;
    assert.deepEqual([listed.chunkSize, listed.chunks, listed.nodes], [4, chunks.items.length, NODES]);
    // The owners write what their chunks hold into the IPChunks' status, a second behind: who holds an
    // address is answered from the API alone, a lent one too (with its loan).
    await pollUntil('chunk status written', async () => (ctl(['pools']) as { cidr: string; used: number }[]).find((p) => p.cidr === '10.60.0.0/24')?.used === capacity || undefined, 30_000);
    const lentAddr = formatIp({ family: 4, value: lent[0]!.addr });
    const lentWho = ctl(['who', lentAddr]) as { node: string; holder?: { loan?: string; pod?: string } }[];
    assert.equal(lentWho[0]?.node, `ipam-node-${lent[0]!.node}`, 'the lender owns the chunk');
    assert.match(lentWho[0]?.holder?.loan ?? '', /-l-[0-9a-f]{16}$/);
    assert.match(lentWho[0]?.holder?.pod ?? '', /^default\/fill-\d+$/, "the borrower's pod");
    const sample = results.findIndex((r) => r.status === 0);
    const addr = results[sample]!.out.ips![0]!.address.split('/')[0]!;
    for (const stateDir of [[], ['--state-dir', join(dir, `n${sample % NODES}`, 'ipam')]]) {
      const who = ctl(['who', addr, ...stateDir]) as { node: string; holder?: { containerID: string; pod?: string } }[];
      assert.equal(who[0]?.node, `ipam-node-${sample % NODES}`);
      assert.equal(who[0]?.holder?.containerID, `fill-${sample}`);
      assert.equal(who[0]?.holder?.pod, `default/fill-${sample}`);
    }
    // A retried ADD gets the same address; DEL frees it (twice is fine); the freed address is handed out again.
    const first = results.findIndex((r) => r.status === 0);
    assert.deepEqual((await ipam(first % NODES, 'ADD', `fill-${first}`, conf)).out.ips, results[first]!.out.ips);
    for (let i = 0; i < total; i++) assert.equal((await ipam(i % NODES, 'DEL', `fill-${i}`, conf)).status, 0);
    assert.equal((await ipam(first % NODES, 'DEL', `fill-${first}`, conf)).status, 0);
    const again = await ipam(first % NODES, 'ADD', 'after', conf);
    assert.equal(again.status, 0, JSON.stringify(again.out));
    await ipam(first % NODES, 'DEL', 'after', conf);
    // Loans go with the DELs of their borrowers, and their lenders free what they lent.
    await pollUntil('loans returned', async () => (heldEverywhere(pool, g, 'lent').length === 0 && !(await kubectl(['get', 'iploans.ipam.plexus.network', '-o', 'name'])).trim()) || undefined, 30_000);
    assert.deepEqual(heldEverywhere(pool, g), [], 'nothing held after every DEL');
  });

  interface Churned {
    /** sandbox → address, what is held at the end. */
    held: Map<string, string>;
    /** [time, CNI code (0 = success)] of every ADD. */
    adds: [number, number][];
  }

  /**
   * ADD/DEL churn, 8 at a time round the nodes, until `disturb` is done and `minOps` ran. A failed ADD
   * is DELeted, as a runtime does. Checked all along: no address given while another sandbox holds it.
   */
  async function churn(conf: object, sandboxes: number, minOps: number, disturb: () => Promise<void>): Promise<Churned> {
    const held = new Map<string, string>();
    const adds: [number, number][] = [];
    let next = 0;
    let disturbed = false;
    // One operation at a time per sandbox, as a runtime runs them (an ADD and a DEL of one sandbox at
    // once would leave the bookkeeping here, not the IPAM, unable to say who holds what).
    const busy = new Set<string>();
    const step = async (id: string, node: number): Promise<void> => {
      if (held.has(id)) {
        // Out of the book before the DEL is sent: once the daemon has freed the address another
        // sandbox may get it, before this worker has read the DEL's answer.
        held.delete(id);
        await delUntilDone(node, id, conf);
        return;
      }
      const add = await ipam(node, 'ADD', id, conf);
      adds.push([Date.now(), add.status === 0 ? 0 : (add.out.code ?? -1)]);
      if (add.status === 0) {
        const addr = add.out.ips![0]!.address;
        for (const [other, a] of held) assert.notEqual(a, addr, `${addr} given to ${id} while ${other} holds it`);
        held.set(id, addr);
      } else {
        assert.ok([7, 11].includes(add.out.code ?? -1), `ADD ${id}: ${JSON.stringify(add.out)}`);
        await delUntilDone(node, id, conf);
      }
    };
    const work = Array.from({ length: 8 }, async () => {
      while (!disturbed || next < minOps) {
        const i = next++;
        const id = `churn-${i % sandboxes}`;
        const node = (i % sandboxes) % NODES;
        if (busy.has(id)) continue;
        busy.add(id);
        try {
          await step(id, node);
        } finally {
          busy.delete(id);
        }
      }
    });
    await Promise.all([...work, disturb().finally(() => (disturbed = true))]);
    return { held, adds };
  }

  /**
   * DEL as a runtime does it: again until it succeeds (a daemon killed mid-DEL may have freed the
   * address or not; only a DEL that answered says which).
   */
  async function delUntilDone(node: number, id: string, conf: object): Promise<void> {
    for (let i = 0; ; i++) {
      const del = await ipam(node, 'DEL', id, conf);
      if (del.status === 0) return;
      if (i > 300) assert.fail(`DEL ${id} never succeeded: ${JSON.stringify(del.out)}`);
      await sleep(100);
    }
  }

  const nodeOf = (id: string) => Number(id.split('-')[1]) % NODES;

  it('kill -9 of a node daemon at random points of the churn, 50 trials: no address twice, and after the DELs nothing is left held', async () => {
    const cidr = '10.62.0.0/24';
    const range = parseIpamConfig({ type: 'plexus-ipam', range: cidr }).ranges[0]!;
    const conf = netConf({ type: 'plexus-ipam', range: cidr });
    const { held } = await churn(conf, 120, 1000, async () => {
      for (let trial = 0; trial < 50; trial++) {
        await sleep(Math.random() * 80);
        const n = Math.floor(Math.random() * NODES);
        daemons[n]!.proc.kill('SIGKILL');
        await new Promise((r) => daemons[n]!.proc.once('exit', r));
        daemons[n]!.proc = await startNode(n);
      }
    });
    const before = heldEverywhere(poolName('', range.cidr), geometry(range, defaultChunkBits(range)));
    assert.equal(new Set(before.map((h) => h.addr)).size, before.length, 'no address held by two nodes');
    for (const [id] of held) assert.equal((await ipam(nodeOf(id), 'DEL', id, conf)).status, 0);
    // Every sandbox of the churn DELeted (a runtime DELs each one it ever ADDed): nothing leaked.
    for (let i = 0; i < 120; i++) await ipam(nodeOf(`churn-${i}`), 'DEL', `churn-${i}`, conf);
    assert.deepEqual(heldEverywhere(poolName('', range.cidr), geometry(range, defaultChunkBits(range))), [], 'nothing held after every DEL');
  });

  it('a pool sized exactly to its pods: every address is used from any node (the tail lent), also with daemons killed mid-loan, 20 trials: no address twice, nothing left after the DELs', async () => {
    // A /27: 30 addresses in 8 chunks of 4, for 10 nodes: two nodes never own a chunk and borrow everything.
    const cidr = '10.66.0.0/27';
    const conf = netConf({ type: 'plexus-ipam', range: cidr });
    const range = parseIpamConfig({ type: 'plexus-ipam', range: cidr }).ranges[0]!;
    const pool = poolName('', range.cidr);
    const g = geometry(range, defaultChunkBits(range));
    const fill = await Promise.all(Array.from({ length: 30 }, (_, i) => addRetrying(i % NODES, `exact-${i}`, conf)));
    assert.deepEqual(
      fill.filter((r) => r.status !== 0).map((r) => r.out),
      [],
      'all 30 addresses given',
    );
    assert.equal(new Set(fill.map((r) => r.out.ips![0]!.address)).size, 30);
    const over = await addRetrying(3, 'exact-over', conf);
    assert.match(`${over.out.code} ${over.out.msg}`, /^7 pool 10\.66\.0\.0\/27 is exhausted/);
    await ipam(3, 'DEL', 'exact-over', conf);
    for (let i = 0; i < 30; i++) assert.equal((await ipam(i % NODES, 'DEL', `exact-${i}`, conf)).status, 0);
    // Churn over the same pool with more sandboxes than addresses, lenders and borrowers killed at random.
    const { held } = await churn(conf, 40, 400, async () => {
      for (let trial = 0; trial < 20; trial++) {
        await sleep(50 + Math.random() * 300);
        const n = Math.floor(Math.random() * NODES);
        daemons[n]!.proc.kill('SIGKILL');
        await new Promise((r) => daemons[n]!.proc.once('exit', r));
        daemons[n]!.proc = await startNode(n);
      }
    });
    const during = heldEverywhere(pool, g);
    assert.equal(new Set(during.map((h) => h.addr)).size, during.length, 'no address held by two nodes');
    for (const [id] of held) assert.equal((await ipam(nodeOf(id), 'DEL', id, conf)).status, 0);
    for (let i = 0; i < 40; i++) await ipam(nodeOf(`churn-${i}`), 'DEL', `churn-${i}`, conf);
    // A borrower killed between the lender's answer and its own record (or before its DEL's delete of
    // the loan went out) leaves a loan it does not hold: its daemon deletes those at its periodic
    // settling, done here at once with no grace (nothing is being added any more).
    const kubeApi = new ApiClient(await loadKubeconfig(cluster.adminKubeconfig), 10_000);
    for (let n = 0; n < NODES; n++) await new IpamPools({ stateDir: join(dir, `n${n}`, 'ipam'), registry: new ChunkRegistry(kubeApi, `ipam-node-${n}`) }).settleBorrowed(0);
    const kubectl = kubectlFor(cluster);
    await pollUntil('loans returned', async () => (heldEverywhere(pool, g, 'lent').length === 0 && !(await kubectl(['get', 'iploans.ipam.plexus.network', '-o', 'name'])).trim()) || undefined, 30_000);
    assert.deepEqual(heldEverywhere(pool, g), [], 'nothing held after every DEL');
  });

  it('overlapping ranges of one network (whereabouts enable_overlapping_ranges, its default): a /16 and a /24 inside it, 8-way on 10 nodes, never give one address twice; with it false they are separate pools', async () => {
    const wide = netConf({ type: 'plexus-ipam', range: '10.67.0.0/16', range_start: '10.67.1.0', range_end: '10.67.1.255' });
    const narrow = netConf({ type: 'plexus-ipam', range: '10.67.1.0/24' });
    const confOf = (i: number) => (i % 2 ? wide : narrow);
    // The pools come one after the other (the later takes the earlier's chunk size), then 8-way past the 256 addresses they share.
    const results: Reply[] = [await ipam(0, 'ADD', 'ovl-0', narrow), await ipam(1, 'ADD', 'ovl-1', wide)];
    const total = 320;
    let next = 2;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < total) {
          const i = next++;
          results[i] = await addRetrying(i % NODES, `ovl-${i}`, confOf(i));
        }
      }),
    );
    const given = results.filter((r) => r.status === 0).map((r) => r.out.ips![0]!.address.split('/')[0]!);
    assert.equal(new Set(given).size, given.length, 'no address given in both pools');
    assert.ok(given.length >= 200, `${given.length} of the 256 shared addresses given`);
    for (const r of results.filter((x) => x.status !== 0)) assert.match(`${r.out.code} ${r.out.msg}`, /^7 pool 10\.67\.[01]\.0\/(16|24) is exhausted/);
    const ctl = (args: string[]) => JSON.parse(execFileSync(plexusctlPath, ['ipam', ...args, '--kubeconfig', cluster.adminKubeconfig, '-o', 'json'], { encoding: 'utf8' })) as unknown;
    const sizes = (ctl(['pools']) as { cidr: string; chunkSize: number }[]).filter((p) => p.cidr.startsWith('10.67.')).map((p) => p.chunkSize);
    assert.deepEqual(sizes, [4, 4], 'the /16 took the chunk size of the /24 it overlaps');
    const shown = ctl(['show', '10.67.0.0/16']) as { chunks: { shadowOf?: string }[] };
    assert.ok(
      shown.chunks.some((c) => c.shadowOf),
      'chunks of the /24 are shadowed in the /16',
    );
    for (let i = 0; i < total; i++) assert.equal((await ipam(i % NODES, 'DEL', `ovl-${i}`, confOf(i))).status, 0);
    // enable_overlapping_ranges: false, as in whereabouts: the ranges do not look at each other.
    const separate = [
      netConf({ type: 'plexus-ipam', range: '10.68.1.0/24', range_end: '10.68.1.3', enable_overlapping_ranges: false }),
      netConf({ type: 'plexus-ipam', range: '10.68.0.0/16', range_start: '10.68.1.1', range_end: '10.68.1.3', enable_overlapping_ranges: false }),
    ];
    const [a, b] = [await ipam(0, 'ADD', 'sep-a', separate[0]!), await ipam(0, 'ADD', 'sep-b', separate[1]!)];
    assert.deepEqual([a.out.ips?.[0]?.address, b.out.ips?.[0]?.address], ['10.68.1.1/24', '10.68.1.1/16'], 'the same address in both, as whereabouts gives it');
    await ipam(0, 'DEL', 'sep-a', separate[0]!);
    await ipam(0, 'DEL', 'sep-b', separate[1]!);
  });

  it('the API server away for 30 s mid-churn: nodes go on from their own chunks, new chunks wait (code 11), no address twice', async () => {
    const cidr = '10.63.0.0/24';
    const conf = netConf({ type: 'plexus-ipam', range: cidr });
    const elsewhere = netConf({ type: 'plexus-ipam', range: '10.64.0.0/24' });
    let away: [number, number] = [0, 0];
    let probe: Reply | undefined;
    const { held, adds } = await churn(conf, 200, 400, async () => {
      await sleep(500);
      const t0 = Date.now();
      await Promise.all([
        cluster.restartApiserver(30_000),
        // A pool no node has a chunk of yet: its first ADD needs the API.
        sleep(5000).then(async () => (probe = await ipam(0, 'ADD', 'probe', elsewhere))),
      ]);
      away = [t0, Date.now()];
    });
    const during = adds.filter(([t]) => t > away[0] + 1000 && t < away[1] - 5000);
    assert.ok(during.filter(([, code]) => code === 0).length > 50, 'ADDs answered from owned chunks while the API server was away');
    assert.equal(probe?.out.code, 11, `a new chunk waits for the API: ${JSON.stringify(probe?.out)}`);
    await ipam(0, 'DEL', 'probe', elsewhere);
    const range = parseIpamConfig({ type: 'plexus-ipam', range: cidr }).ranges[0]!;
    const all = heldEverywhere(poolName('', range.cidr), geometry(range, defaultChunkBits(range)));
    assert.equal(new Set(all.map((h) => h.addr)).size, all.length, 'no address held by two nodes');
    assert.equal(all.length, held.size, 'the nodes hold exactly what the churn was given');
    for (let i = 0; i < 200; i++) await ipam(nodeOf(`churn-${i}`), 'DEL', `churn-${i}`, conf);
  });

  it('an IPAMClaim keeps its address across its pod gone and back on another node; two nodes asking at once get the same one; status.ips written', async () => {
    const kubectl = kubectlFor(cluster);
    await kubectl(
      ['apply', '-f', '-'],
      JSON.stringify({ apiVersion: 'k8s.cni.cncf.io/v1alpha1', kind: 'IPAMClaim', metadata: { name: 'vm-1', namespace: 'default' }, spec: { network: 'ipam-test', interface: 'net1' } }),
    );
    const conf = netConf({ type: 'plexus-ipam', range: '10.65.0.0/24' });
    const claimed = ';K8S_IPAM_CLAIM=default/vm-1';
    // Two pods of one claim at once on two nodes (a VM migrating): one address.
    const [a, b] = await Promise.all([ipam(2, 'ADD', 'vm-a', conf, 'plexus-ipam', claimed), ipam(7, 'ADD', 'vm-b', conf, 'plexus-ipam', claimed)]);
    assert.equal(a.status, 0, JSON.stringify(a.out));
    assert.deepEqual(b.out.ips, a.out.ips);
    const addr = a.out.ips![0]!.address;
    // The first pod goes (its DEL leaves the claim's address alone); the claim's next pod, elsewhere, gets it again.
    assert.equal((await ipam(2, 'DEL', 'vm-a', conf, 'plexus-ipam', claimed)).status, 0);
    assert.equal((await ipam(2, 'DEL', 'vm-b', conf, 'plexus-ipam', claimed)).status, 0);
    assert.deepEqual((await ipam(5, 'ADD', 'vm-c', conf, 'plexus-ipam', claimed)).out.ips?.[0]?.address, addr);
    // Nodes' own addresses never land on it.
    const others = await Promise.all(Array.from({ length: 30 }, (_, i) => ipam(i % NODES, 'ADD', `plain-${i}`, conf)));
    assert.ok(others.every((r) => r.status === 0 && r.out.ips![0]!.address !== addr));
    const status = JSON.parse(await kubectl(['get', 'ipamclaims.k8s.cni.cncf.io', 'vm-1', '-o', 'json'])) as { status?: { ips?: string[]; ownerPod?: { name: string } } };
    assert.deepEqual(status.status?.ips, [addr]);
    assert.equal(status.status?.ownerPod?.name, 'vm-c');
    // The claim deleted: its leases go at the next sweep (any node's), and its address is free again.
    await kubectl(['delete', 'ipamclaims.k8s.cni.cncf.io', 'vm-1']);
    const sweeps = new ClusterSweeps(new ApiClient(await loadKubeconfig(cluster.adminKubeconfig), 10_000));
    const gone = await sweeps.sweepLeases(120_000);
    assert.equal(gone.length, 2, `binding and address lease of vm-1: ${gone.join(', ')}`);
    assert.deepEqual(await sweeps.sweepLeases(120_000), []);
    const missing = await ipam(5, 'ADD', 'vm-x', conf, 'plexus-ipam', ';K8S_IPAM_CLAIM=default/nope');
    assert.match(`${missing.out.code} ${missing.out.msg}`, /^7 IPAMClaim default\/nope does not exist/);
    for (let i = 0; i < 30; i++) await ipam(i % NODES, 'DEL', `plain-${i}`, conf);
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
    const meta: { runtimeConfig: { 'io.kubernetes.cri.pod-annotations': Record<string, string> } } & Record<string, unknown> = {
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
    // With ipam-claim-reference in the selection, the meta plugin hands the claim to the IPAM: the pod
    // gets the claim's address, the one any node gives that claim.
    meta.runtimeConfig['io.kubernetes.cri.pod-annotations']['k8s.v1.cni.cncf.io/networks'] = '[{"name": "ipam-mv", "ipam-claim-reference": "vm-2"}]';
    await kubectl(
      ['apply', '-f', '-'],
      JSON.stringify({ apiVersion: 'k8s.cni.cncf.io/v1alpha1', kind: 'IPAMClaim', metadata: { name: 'vm-2', namespace: 'default' }, spec: { network: 'ipam-mv', interface: 'net1' } }),
    );
    const claimedAdd = run('ADD');
    assert.equal(claimedAdd.status, 0, claimedAdd.stdout + claimedAdd.stderr);
    const [claimedAddr] = ipAddresses(ns.name, 'net1');
    const elsewhere = await ipam(6, 'ADD', 'vm-2-next', netConf({ type: 'plexus-ipam', range: '10.61.0.0/24', gateway: '10.61.0.1' }), 'plexus-ipam', ';K8S_IPAM_CLAIM=default/vm-2');
    assert.equal(elsewhere.out.ips?.[0]?.address, claimedAddr);
    assert.equal(run('DEL').status, 0);
  });

  it('pods on 10 nodes through the meta plugin and a real macvlan, 8-way past the end of a /26: every pod netns has its own address, the pool is used whole, an exhausted ADD leaves no interface, the DELs free it all', async () => {
    const kubectl = kubectlFor(cluster);
    const [master] = rig.veth('ip26');
    execFileSync('ip', ['link', 'set', master!, 'up']);
    const ipamConf = { type: 'plexus-ipam', range: '10.69.0.0/26', gateway: '10.69.0.1' };
    const nad = {
      apiVersion: 'k8s.cni.cncf.io/v1',
      kind: 'NetworkAttachmentDefinition',
      metadata: { name: 'ipam-mv26', namespace: 'default' },
      spec: { config: JSON.stringify({ cniVersion: '1.0.0', name: 'ipam-mv26', type: 'macvlan', master, mode: 'bridge', ipam: ipamConf }) },
    };
    await kubectl(['apply', '-f', '-'], JSON.stringify(nad));
    const clusterConf = join(dir, 'loopback26.conf');
    writeFileSync(clusterConf, JSON.stringify({ cniVersion: '1.0.0', name: 'cluster', type: 'loopback' }));
    copyFileSync(join(repoRoot(), 'native', 'plexus-shim'), join(bin, 'plexus-shim'));
    const capacity = 64 - 3;
    const pods = Array.from({ length: capacity + 9 }, (_, i) => ({ id: `pod26-${i}`, node: i % NODES, ns: rig.netns(`p26${i}`) }));
    const run = (pod: (typeof pods)[number], command: string) =>
      new Promise<{ status: number | null; stdout: string }>((resolve) => {
        const child = spawn(join(bin, 'plexus-shim'), [], {
          env: {
            CNI_COMMAND: command,
            CNI_CONTAINERID: pod.id,
            CNI_NETNS: pod.ns.path,
            CNI_IFNAME: 'eth0',
            CNI_PATH: `${bin}:/usr/lib/cni`,
            CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=${pod.id};K8S_POD_UID=u-${pod.id}`,
          },
        });
        let stdout = '';
        child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
        child.on('close', (status) => resolve({ status, stdout }));
        child.stdin.end(
          JSON.stringify({
            cniVersion: '1.0.0',
            name: 'plexus',
            type: 'plexus-shim',
            daemonSocket: daemons[pod.node]!.socket,
            clusterNetwork: clusterConf,
            binDir: bin,
            cniDir: join(dir, `n${pod.node}`),
            capabilities: { 'io.kubernetes.cri.pod-annotations': true },
            runtimeConfig: { 'io.kubernetes.cri.pod-annotations': { 'k8s.v1.cni.cncf.io/networks': 'ipam-mv26' } },
          }),
        );
      });
    const added = new Map<string, { status: number | null; stdout: string }>();
    let next = 0;
    // As kubelet does: a sandbox whose ADD failed for now (code 11: an owner of the pool's last chunks
    // did not answer a loan, its watch still coming back after the API server test) is DELeted and tried again.
    const addAsKubelet = async (pod: (typeof pods)[number]) => {
      for (let attempt = 0; ; attempt++) {
        const r = await run(pod, 'ADD');
        if (r.status === 0 || /is exhausted/.test(r.stdout) || attempt === 60) return r;
        await run(pod, 'DEL');
        await sleep(1000);
      }
    };
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < pods.length) {
          const pod = pods[next++]!;
          added.set(pod.id, await addAsKubelet(pod));
        }
      }),
    );
    const inNetns = new Map<string, string>();
    for (const pod of pods) {
      const r = added.get(pod.id)!;
      if (r.status === 0) inNetns.set(pod.id, ipAddresses(pod.ns.name, 'net1')[0]!);
      else {
        assert.match(r.stdout, /pool 10\.69\.0\.0\/26 is exhausted/, `${pod.id}: ${r.stdout}`);
        assert.ok(!linkExists('net1', pod.ns.name), `${pod.id}: a failed ADD leaves no interface`);
      }
    }
    const addrs = [...inNetns.values()];
    assert.equal(new Set(addrs).size, addrs.length, 'no address in two pod netns');
    assert.equal(
      addrs.length,
      capacity,
      `the pool used whole: ${[...added.values()]
        .filter((r) => r.status !== 0)
        .map((r) => r.stdout)
        .join(' ')}`,
    );
    assert.ok(addrs.every((a) => /^10\.69\.0\.\d+\/26$/.test(a) && a !== '10.69.0.1/26'));
    // What the netns have is what the nodes' logs hold (a lent address counted at its borrower).
    const range = parseIpamConfig(ipamConf).ranges[0]!;
    const held = heldEverywhere(poolName('', range.cidr), geometry(range, defaultChunkBits(range))).map((h) => `${formatIp({ family: 4, value: h.addr })}/26`);
    assert.deepEqual(held.sort(), [...addrs].sort());
    for (const pod of pods) assert.equal((await run(pod, 'DEL')).status, 0);
    await pollUntil('loans returned', async () => heldEverywhere(poolName('', range.cidr), geometry(range, defaultChunkBits(range)), 'lent').length === 0 || undefined, 30_000);
    assert.deepEqual(heldEverywhere(poolName('', range.cidr), geometry(range, defaultChunkBits(range))), [], 'nothing held after the DELs');
  });

  it('a node gone for good (its Node object deleted): the others reclaim its chunks; its daemon, back with its old log, takes nothing more from them', async () => {
    const kubectl = kubectlFor(cluster);
    const conf = netConf({ type: 'plexus-ipam', range: '10.71.0.0/24' });
    const range = parseIpamConfig({ type: 'plexus-ipam', range: '10.71.0.0/24' }).ranges[0]!;
    const pool = poolName('', range.cidr);
    assert.equal((await ipam(9, 'ADD', 'gone-1', conf)).status, 0);
    const adminApi = new ApiClient(await loadKubeconfig(cluster.adminKubeconfig), 10_000);
    const registry = new ChunkRegistry(adminApi, 'ipam-node-0');
    const sweeps = new ClusterSweeps(adminApi);
    await sweeps.start();
    const ownedBy9 = async () => [...(await registry.owned(pool))].filter(([, o]) => o.node === 'ipam-node-9').map(([i]) => i);
    const lost = await ownedBy9();
    assert.ok(lost.length > 0);
    assert.deepEqual(await sweeps.reclaimFromGoneNodes(0), [], 'a node with its Node object keeps its chunks');
    await kubectl(['delete', 'node', 'ipam-node-9']);
    // Once the sweeps' Node informer has seen the deletion, the node's chunks are reclaimed (a grace of 0 here).
    const reclaimed = await pollUntil(
      "the gone node's chunks reclaimed",
      async () => {
        const r = await sweeps.reclaimFromGoneNodes(0);
        return r.length ? r : undefined;
      },
      10_000,
    );
    await sweeps.stop();
    assert.ok(
      lost.every((i) => reclaimed.includes(`${pool}-${i.toString(16)}`)),
      `reclaimed ${reclaimed.join(', ')}`,
    );
    assert.deepEqual(await ownedBy9(), []);
    // The node comes back (its daemon restarted, its log still listing the chunks): it forgets them.
    await kubectl(['create', '-f', '-'], JSON.stringify(nodeObject(9)));
    daemons[9]!.proc.kill('SIGKILL');
    await new Promise((r) => daemons[9]!.proc.once('exit', r));
    daemons[9]!.proc = await startNode(9);
    const log = () => [...new NodePool(join(dir, 'n9', 'ipam', 'pools'), pool, geometry(range, defaultChunkBits(range))).chunks];
    await pollUntil('the lost chunks forgotten', async () => log().every((i) => !lost.includes(i)) || undefined, 30_000);
    const again = await ipam(9, 'ADD', 'gone-2', conf);
    assert.equal(again.status, 0, JSON.stringify(again.out));
    // Whatever it holds now comes from chunks the API says are its own.
    const mine = await ownedBy9();
    assert.ok(
      log().every((i) => mine.includes(i)),
      `log ${log().join(',')} vs API ${mine.join(',')}`,
    );
    await ipam(9, 'DEL', 'gone-2', conf);
    await ipam(9, 'DEL', 'gone-1', conf);
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
