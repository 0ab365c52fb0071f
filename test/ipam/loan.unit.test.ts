import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { formatIp } from '../../src/ipam/addr.js';
import { geometry } from '../../src/ipam/chunks.js';
import { type IpamRange, parseIpamConfig } from '../../src/ipam/config.js';
import { NodePool } from '../../src/ipam/nodepool.js';
import { IpamPools } from '../../src/ipam/plugin.js';
import { type ChunkRegistry, type Loan, parseLoan, poolName, rangeSpec } from '../../src/ipam/registry.js';

const confOf = (ipam: object) => parseIpamConfig({ type: 'plexus-ipam', ...ipam });
const loanObject = (spec: object, status?: object) => ({ metadata: { name: 'p-1-l-ab', creationTimestamp: '2026-12-06T10:00:00Z' }, spec, ...(status ? { status } : {}) });

describe('IPAM loans (the tail of a pool)', () => {
  it('a loan carries its range whole: excluded spans, first and last come back as they went, IPv4 and IPv6', () => {
    for (const ipam of [
      { range: '10.9.0.0/24', range_start: '10.9.0.10', exclude: ['10.9.0.32/28'], gateway: '10.9.0.1' },
      { range: '2001:db8::/64', exclude: ['2001:db8::/65'] },
    ]) {
      const range = confOf(ipam).ranges[0]!;
      const loan = parseLoan(loanObject({ pool: 'p-1', lender: 'a', borrower: 'b', ...rangeSpec(range) }, { address: '10.9.0.12' }));
      assert.deepEqual(loan.range, range);
      assert.equal(loan.address, '10.9.0.12');
      assert.equal(loan.created, Date.parse('2026-12-06T10:00:00Z'));
    }
  });

  it('property: any object is a loan whose range lies in its subnet, or an Error saying it is not an IPLoan', () => {
    const ip = fc.oneof(fc.ipV4(), fc.ipV6(), fc.string(), fc.jsonValue());
    const spec = fc.record(
      {
        pool: fc.oneof(fc.constant('p-1'), fc.jsonValue()),
        lender: fc.oneof(fc.constant('a'), fc.jsonValue()),
        borrower: fc.oneof(fc.constant('b'), fc.jsonValue()),
        cidr: fc.oneof(fc.constantFrom('10.0.0.0/24', '2001:db8::/120', '10.0.0.1/24'), fc.string()),
        first: ip,
        last: ip,
        excluded: fc.oneof(
          fc.array(
            fc.oneof(
              fc.tuple(fc.ipV4(), fc.ipV4()).map(([a, b]) => `${a}-${b}`),
              fc.string(),
            ),
            { maxLength: 3 },
          ),
          fc.jsonValue(),
        ),
        network: fc.oneof(fc.string(), fc.jsonValue()),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(
        fc.oneof(
          spec.map((s) => loanObject(s)),
          fc.jsonValue(),
        ),
        (raw) => {
          let loan: Loan;
          try {
            loan = parseLoan(raw);
          } catch (err) {
            assert.match((err as Error).message, /^not an IPLoan: /);
            return;
          }
          const r = loan.range;
          assert.ok(r.network <= r.first && r.first <= r.last && r.last <= r.broadcast);
          for (const [a, b] of r.excluded) assert.ok(r.network <= a && a <= b && b <= r.broadcast);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('a node lends what its chunks hold free, keeps it out of GC and across a restart, and frees it when the loan goes', () => {
    const dir = mkdtempSync(join(tmpdir(), 'plexus-loan-'));
    try {
      const r = confOf({ range: '10.1.0.0/24' }).ranges[0]!;
      const p = new NodePool(dir, 'p1', geometry(r));
      assert.equal(p.lend(r, 'l1'), undefined, 'nothing to lend without a chunk');
      p.addChunk(1n);
      const lent = p.lend(r, 'l1')!;
      assert.equal(p.lend(r, 'l1'), lent, 'the same loan gets the same address');
      assert.equal(p.sweep(() => false, 0, Date.now() + 3_600_000).length, 0, 'GC never frees a lent address');
      const again = new NodePool(dir, 'p1', geometry(r));
      assert.equal(again.held.get(lent)?.lent, 'l1');
      assert.equal(again.unlend('l1'), lent);
      assert.equal(again.unlend('l1'), undefined);
      const b = new NodePool(join(dir, 'b'), 'p1', geometry(r));
      b.borrow(lent, { containerID: 'c1', ifName: 'net1', loan: 'l1' });
      assert.throws(() => b.borrow(lent, { containerID: 'c2', ifName: 'net1', loan: 'l2' }), /already held/);
      assert.equal(new NodePool(join(dir, 'b'), 'p1', geometry(r)).holder('c1', 'net1')?.loan, 'l1');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  describe('between two nodes (the API as a map; the real API server: test/cluster/ipam.test.ts)', () => {
    let dir: string;
    beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'plexus-loan-'))));
    afterEach(() => rmSync(dir, { recursive: true, force: true }));

    /** Chunk objects and loan objects shared by the nodes; a loan is answered by its lender's onLoan, as the daemon's informer does. */
    function api(range: IpamRange) {
      const chunks = new Map<bigint, string>();
      const loans = new Map<string, Loan>();
      const nodes = new Map<string, IpamPools>();
      const ref = { name: poolName('', range.cidr), geometry: geometry(range) };
      let n = 0;
      const registry = (node: string) =>
        ({
          node,
          pool: async () => ref,
          poolByName: async () => ref,
          owned: async () => new Map([...chunks].map(([i, n]) => [i, { node: n }])),
          claim: async (_p: unknown, index: bigint) => (chunks.has(index) ? chunks.get(index) === node : (chunks.set(index, node), true)),
          release: async () => undefined,
          requestLoan: async (_p: unknown, network: string, r: IpamRange, lender: string) => {
            const loan = parseLoan(loanObject({ pool: ref.name, network, lender, borrower: node, ...rangeSpec(r) }));
            loan.name = `l${n++}`;
            loans.set(loan.name, loan);
            void nodes.get(lender)?.onLoan(loan, false);
            return loan.name;
          },
          loan: async (name: string) => loans.get(name),
          answerLoan: async (name: string, answer: object) => void Object.assign(loans.get(name)!, answer),
          dropLoan: async (name: string) => {
            const loan = loans.get(name);
            loans.delete(name);
            if (loan) await nodes.get(loan.lender)?.onLoan(loan, true);
          },
          borrowed: async () => [...loans.values()].filter((l) => l.borrower === node),
        }) as unknown as ChunkRegistry;
      const node = (name: string) => {
        const pools = new IpamPools({ stateDir: join(dir, name), registry: registry(name) }, 200);
        nodes.set(name, pools);
        return pools;
      };
      return { node, loans, chunks };
    }

    it("a node with no chunk left borrows the pool's last addresses from the owners; a DEL gives them back; a loan not held is settled", async () => {
      // A /29 without its network and broadcast address: 6 addresses, 2 chunks of 4.
      const conf = confOf({ range: '10.7.0.0/29' });
      const range = conf.ranges[0]!;
      const world = api(range);
      const [a, b, c] = ['a', 'b', 'c'].map(world.node) as [IpamPools, IpamPools, IpamPools];
      const text = (v: bigint) => formatIp({ family: 4, value: v });
      const own = [text(await a.take(conf, range, { containerID: 'a1', ifName: 'net1' })), text(await b.take(conf, range, { containerID: 'b1', ifName: 'net1' }))];
      assert.deepEqual(own.sort(), ['10.7.0.1', '10.7.0.4'], 'a chunk each');
      // c owns nothing and no chunk is left: it borrows, from a and from b.
      const got: string[] = [];
      for (let i = 0; i < 4; i++) got.push(text(await c.take(conf, range, { containerID: `c${i}`, ifName: 'net1' })));
      assert.deepEqual([...got].sort(), ['10.7.0.2', '10.7.0.3', '10.7.0.5', '10.7.0.6']);
      await assert.rejects(c.take(conf, range, { containerID: 'c9', ifName: 'net1' }), /is exhausted.*no other node had one to lend/s);
      await assert.rejects(a.take(conf, range, { containerID: 'a2', ifName: 'net1' }), /is exhausted/);
      assert.equal(world.loans.size, 4, 'refused loans are deleted');
      // What the Prometheus gauges show: c borrowed 4, a and b lent 2 each besides their own.
      const usage = [a, b, c].map((n) => n.usage().map(({ chunks, used, lent, borrowed }) => [chunks, used, lent, borrowed]));
      assert.deepEqual(usage, [[[1, 1, 2, 0]], [[1, 1, 2, 0]], [[0, 0, 0, 4]]]);
      // A retried ADD gets the same borrowed address; its DEL gives it back to its lender.
      assert.equal(text(await c.take(conf, range, { containerID: 'c0', ifName: 'net1' })), got[0]);
      await c.free(conf, 'c0', 'net1');
      await new Promise((r) => setImmediate(r));
      assert.equal(world.loans.size, 3);
      const next = await a.take(conf, range, { containerID: 'a2', ifName: 'net1' });
      assert.equal(text(next), got[0], 'the freed address is usable again');
      // A loan its borrower does not hold (a crash before it recorded the answer) is deleted by settling.
      const leftover = [...world.loans.values()].find((l) => l.borrower === 'c')!;
      world.loans.set('stray', { ...leftover, name: 'stray', address: '10.7.0.9' });
      assert.equal(await c.settleBorrowed(60_000, leftover.created + 1000), 0, 'not before the grace period');
      assert.equal(await c.settleBorrowed(0), 1);
      assert.ok(!world.loans.has('stray'));
    });

    it('an owner that does not answer makes the ADD "try again" (code 11), not "exhausted": it may have room', async () => {
      const conf = confOf({ range: '10.7.0.0/29' });
      const range = conf.ranges[0]!;
      const world = api(range);
      const a = world.node('a');
      await a.take(conf, range, { containerID: 'a1', ifName: 'net1' });
      // The other chunk belongs to a node whose daemon is down.
      for (const i of [0n, 1n]) if (!world.chunks.has(i)) world.chunks.set(i, 'down');
      for (let i = 2; i <= 3; i++) await a.take(conf, range, { containerID: `a${i}`, ifName: 'net1' });
      await assert.rejects(a.take(conf, range, { containerID: 'a4', ifName: 'net1' }), (err: Error & { code?: number }) => err.code === 11 && /1 of its owners did not answer/.test(err.message));
      assert.equal(world.loans.size, 0, 'the unanswered loan is deleted');
    });
  });
});
