import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { formatIp } from '../../src/ipam/addr.js';
import { chunkOf, defaultChunkBits, geometry, pickChunk, startChunk } from '../../src/ipam/chunks.js';
import { type IpamRange, parseIpamConfig } from '../../src/ipam/config.js';
import { IpamPools } from '../../src/ipam/plugin.js';
import { type ChunkRegistry, poolName } from '../../src/ipam/registry.js';
import { NodePool } from '../../src/ipam/nodepool.js';

const rangeOf = (ipam: object) => parseIpamConfig({ type: 'whereabouts', ...ipam }).ranges[0]!;

describe('IPAM chunks', () => {
  it('chunk sizes: 4 addresses in a /24, 64 in a /16, a /8 and a /64; never more than the pool', () => {
    assert.deepEqual(
      ['10.0.0.0/24', '10.0.0.0/16', '10.0.0.0/8', '2001:db8::/64', '10.0.0.0/30', '10.0.0.0/32'].map((r) => defaultChunkBits(rangeOf({ range: r }))),
      [2, 6, 6, 6, 2, 0],
    );
  });

  it('a free chunk is found past claimed ones and over excluded spans in a /64 at once', () => {
    const r = rangeOf({ range: '2001:db8::/64', exclude: ['2001:db8::/65'] });
    const g = geometry(r);
    const i = pickChunk(g, r, new Set([chunkOf(g, 2n ** 63n + 0x20010db8000000000000000000000000n)]), 0n)!;
    assert.equal(formatIp({ family: 6, value: g.network + (i << 6n) }), '2001:db8::8000:0:0:40');
    const small = rangeOf({ range: '10.0.0.0/28', exclude: ['10.0.0.4/30'] });
    const gs = geometry(small);
    assert.equal(pickChunk(gs, small, new Set([0n]), 0n), 2n, 'chunk 1 is all excluded');
    assert.equal(pickChunk(gs, small, new Set([0n, 2n, 3n]), 0n), undefined);
    assert.equal(pickChunk(gs, small, new Set([3n]), 3n), 0n, 'wraps round');
    assert.ok(startChunk(gs, small, 'node-a') >= 0n && startChunk(gs, small, 'node-a') < 4n);
  });
});

describe('IPAM node pool (local chunks and addresses, append-only log)', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'plexus-ipam-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('takes addresses in owned chunks only, the same one for a retried ADD, frees idempotently, survives a restart', () => {
    const r = rangeOf({ range: '10.1.0.0/24', gateway: '10.1.0.1' });
    const g = geometry(r);
    const p = new NodePool(dir, 'p1', g);
    assert.equal(p.take(r, { containerID: 'c0', ifName: 'net1' }), undefined, 'no chunk, no address');
    p.addChunk(0n);
    const got = [0, 1, 2].map((i) => p.take(r, { containerID: `c${i}`, ifName: 'net1' }));
    assert.deepEqual(
      got.map((a) => a && formatIp({ family: 4, value: a })),
      ['10.1.0.2', '10.1.0.3', undefined],
      'the network address and the gateway are never handed out; the chunk has 4',
    );
    assert.equal(p.take(r, { containerID: 'c0', ifName: 'net1' }), got[0]);
    assert.equal(p.free('c0', 'net1'), got[0]);
    assert.equal(p.free('c0', 'net1'), undefined);
    assert.throws(() => p.removeChunk(0n), /still holds addresses/);
    const again = new NodePool(dir, 'p1', g);
    assert.deepEqual([...again.chunks], [0n]);
    assert.deepEqual([...again.held.keys()], [got[1]]);
  });

  it('a chunk forgotten (reclaimed while the node was gone) keeps what it held and gives nothing more, across a restart', () => {
    const r = rangeOf({ range: '10.1.0.0/24' });
    const p = new NodePool(dir, 'p1', geometry(r));
    p.addChunk(2n);
    const a = p.take(r, { containerID: 'c1', ifName: 'net1' })!;
    p.forgetChunk(2n);
    assert.equal(p.take(r, { containerID: 'c2', ifName: 'net1' }), undefined);
    const again = new NodePool(dir, 'p1', geometry(r));
    assert.deepEqual([[...again.chunks], [...again.held.keys()]], [[], [a]]);
    assert.equal(again.free('c1', 'net1'), a);
  });

  it('GC frees only what is dead and older than the grace period; what cannot be told is kept', () => {
    const r = rangeOf({ range: '10.1.0.0/24' });
    const p = new NodePool(dir, 'p1', geometry(r));
    p.addChunk(1n);
    for (const id of ['dead', 'live', 'unknown', 'young']) p.take(r, { containerID: id, ifName: 'net1' });
    const now = Date.now();
    const aged = (id: string) => (id === 'young' ? now : now - 3_600_000);
    for (const [a, h] of p.held) p.held.set(a, { ...h, since: aged(h.containerID) });
    const freed = p.sweep((h) => (h.containerID === 'live' ? true : h.containerID === 'unknown' ? undefined : false), 60_000, now);
    assert.deepEqual(
      freed.map((f) => f.holder.containerID),
      ['dead'],
    );
    assert.deepEqual([...new NodePool(dir, 'p1', geometry(r)).held.values()].map((h) => h.containerID).sort(), ['live', 'unknown', 'young']);
  });

  it('a log line cut short by a dying writer is left out, the state before it kept, and what comes after it too', () => {
    const r = rangeOf({ range: '10.1.0.0/24' });
    const p = new NodePool(dir, 'p1', geometry(r));
    p.addChunk(5n);
    const a = p.take(r, { containerID: 'c1', ifName: 'net1' });
    appendFileSync(join(dir, 'p1.log'), readFileSync(join(dir, 'p1.log'), 'utf8').split('\n')[1]!.slice(0, 30));
    const again = new NodePool(dir, 'p1', geometry(r));
    assert.deepEqual([...again.held.keys()], [a]);
    // What is recorded after the cut line survives the next restart too (the log was rewritten clean).
    const b = again.take(r, { containerID: 'c2', ifName: 'net1' });
    assert.deepEqual([...new NodePool(dir, 'p1', geometry(r)).held.keys()], [a, b]);
    writeFileSync(join(dir, 'p1.log'), 'garbage\n');
    assert.equal(new NodePool(dir, 'p1', geometry(r)).held.size, 0);
  });

  it('property: nodes claiming chunks as the API lets them (a name is created once) never hold one address twice, across restarts and compaction', () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('claim' as const), node: fc.nat(2) }),
      fc.record({ kind: fc.constant('take' as const), node: fc.nat(2), sandbox: fc.nat(40) }),
      fc.record({ kind: fc.constant('free' as const), node: fc.nat(2), sandbox: fc.nat(40) }),
      fc.record({ kind: fc.constant('return' as const), node: fc.nat(2) }),
      fc.record({ kind: fc.constant('restart' as const), node: fc.nat(2) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 120 }), fc.constantFrom('10.2.0.0/26', '10.2.0.0/24', '2001:db8::/120'), (ops, cidr) => {
        const run = mkdtempSync(join(dir, 'run-'));
        const r = rangeOf({ range: cidr, exclude: [cidr.includes(':') ? '2001:db8::10/126' : '10.2.0.16/30'] });
        const g = geometry(r);
        const claimed = new Map<bigint, number>(); // the API's chunk objects: index → node
        // A small log limit: compaction happens within the run.
        const open = (n: number) => new NodePool(join(run, `node${n}`), 'pool', g, 2048);
        const nodes = [0, 1, 2].map(open);
        for (const o of ops) {
          const p = nodes[o.node]!;
          if (o.kind === 'claim') {
            const i = pickChunk(g, r, new Set(claimed.keys()), startChunk(g, r, `node${o.node}`));
            if (i !== undefined && !claimed.has(i)) {
              claimed.set(i, o.node);
              p.addChunk(i);
            }
          } else if (o.kind === 'take') p.take(r, { containerID: `s${o.sandbox}`, ifName: 'net1' });
          else if (o.kind === 'free') p.free(`s${o.sandbox}`, 'net1');
          else if (o.kind === 'return') {
            const empty = [...p.chunks].find((i) => !p.inChunk(i).length);
            if (empty !== undefined) {
              p.removeChunk(empty);
              claimed.delete(empty);
            }
          } else nodes[o.node] = open(o.node);
          const seen = new Set<bigint>();
          nodes.forEach((n, k) => {
            for (const [a] of n.held) {
              assert.ok(!seen.has(a), `address ${formatIp({ family: r.family, value: a })} held twice`);
              seen.add(a);
              assert.equal(claimed.get(chunkOf(g, a)), k, 'held inside a chunk this node owns');
              assert.ok(a >= r.first && a <= r.last && !r.excluded.some(([x, y]) => a >= x && a <= y));
            }
          });
        }
        rmSync(run, { recursive: true, force: true });
      }),
      { numRuns: 300 },
    );
  });
});

describe('IPAM pools of a node: chunks given back', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'plexus-ipam-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /** The API's chunk objects as a map (the real API server's behaviour is tested in test/cluster/ipam.test.ts). */
  function registryOver(objects: Map<bigint, string>, node: string, range: IpamRange): ChunkRegistry {
    const ref = { name: poolName('', range.cidr), geometry: geometry(range) };
    return {
      node,
      pool: async () => ref,
      poolByName: async () => ref,
      owned: async () => new Map([...objects].map(([i, n]) => [i, { node: n }])),
      claim: async (_p: unknown, index: bigint) => (objects.has(index) ? objects.get(index) === node : (objects.set(index, node), true)),
      release: async (_p: unknown, index: bigint) => void (objects.get(index) === node && objects.delete(index)),
    } as unknown as ChunkRegistry;
  }

  it('an empty chunk goes back after the idle time, never one holding an address; the next ADD claims again', async () => {
    const range = rangeOf({ range: '10.3.0.0/24' });
    const conf = parseIpamConfig({ type: 'plexus-ipam', range: '10.3.0.0/24' });
    const objects = new Map<bigint, string>();
    const pools = new IpamPools({ stateDir: dir, registry: registryOver(objects, 'a', range) });
    await pools.take(conf, range, { containerID: 'c1', ifName: 'net1' });
    await pools.take(conf, range, { containerID: 'c2', ifName: 'net1' });
    assert.equal(objects.size, 1);
    const t0 = Date.now();
    assert.equal(await pools.returnIdle(60_000, t0), 0, 'holds addresses');
    await pools.free(conf, 'c1', 'net1');
    await pools.free(conf, 'c2', 'net1');
    assert.equal(await pools.returnIdle(60_000, t0), 0, 'empty, but not for long');
    assert.equal(await pools.returnIdle(60_000, t0 + 61_000), 1);
    assert.equal(objects.size, 0, 'the API object deleted');
    await pools.take(conf, range, { containerID: 'c3', ifName: 'net1' });
    assert.equal(objects.size, 1, 'claimed again');
  });

  it('after a restart, a chunk holding addresses is never taken for empty (pools opened for GC have no chunk size of their own)', async () => {
    const range = rangeOf({ range: '10.4.0.0/24' });
    const conf = parseIpamConfig({ type: 'plexus-ipam', range: '10.4.0.0/24' });
    const objects = new Map<bigint, string>();
    await new IpamPools({ stateDir: dir, registry: registryOver(objects, 'a', range) }).take(conf, range, { containerID: 'c1', ifName: 'net1' });
    const restarted = new IpamPools({ stateDir: dir, registry: registryOver(objects, 'a', range) });
    // The daemon's first GC opens every pool's log by name, before any ADD gives it its geometry.
    assert.deepEqual(
      restarted.sweep(() => true, 0),
      [],
    );
    const t0 = Date.now();
    await restarted.returnIdle(60_000, t0);
    assert.equal(await restarted.returnIdle(60_000, t0 + 3_600_000), 0);
    assert.equal(objects.size, 1, 'the chunk is still owned');
    assert.equal(restarted.holding(conf, range, 'c1', 'net1') !== undefined, true);
  });
});
