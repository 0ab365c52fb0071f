import assert from 'node:assert/strict';
import fc from 'fast-check';
import { KeyedQueue } from '../../src/util/keyed-queue.js';

const tick = () => new Promise((r) => setImmediate(r));

describe('KeyedQueue', () => {
  it('runs of one key one after the other, of two keys side by side; a failure does not stop the next; the key goes when idle', async () => {
    const q = new KeyedQueue();
    const log: string[] = [];
    let release!: () => void;
    const a1 = q.run('a', async () => {
      log.push('a1 start');
      await new Promise<void>((r) => (release = r));
      log.push('a1 end');
      throw new Error('a1 failed');
    });
    const a2 = q.run('a', async () => {
      log.push('a2');
      return 2;
    });
    const b1 = q.run('b', async () => {
      log.push('b1');
      return 1;
    });
    await tick();
    assert.deepEqual(log, ['a1 start', 'b1'], 'b ran while a1 held a; a2 waits');
    assert.equal(q.size, 1);
    release();
    await assert.rejects(a1, /a1 failed/);
    assert.equal(await a2, 2);
    assert.equal(await b1, 1);
    assert.deepEqual(log, ['a1 start', 'b1', 'a1 end', 'a2']);
    await tick();
    assert.equal(q.size, 0);
  });

  it('property: whatever the keys and outcomes, no two runs of a key overlap, each key runs in the order queued, and drain waits for all', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.record({ key: fc.constantFrom('a', 'b', 'c'), fails: fc.boolean(), waits: fc.nat(3) }), { maxLength: 30 }), async (jobs) => {
        const q = new KeyedQueue();
        const running = new Set<string>();
        const order: Record<string, number[]> = {};
        let done = 0;
        jobs.forEach((j, i) => {
          void q
            .run(j.key, async () => {
              assert.ok(!running.has(j.key), `two runs of ${j.key} at once`);
              running.add(j.key);
              (order[j.key] ??= []).push(i);
              for (let w = 0; w < j.waits; w++) await tick();
              running.delete(j.key);
              done++;
              if (j.fails) throw new Error('failed');
            })
            .catch(() => undefined);
        });
        await q.drain();
        assert.equal(done, jobs.length);
        for (const [k, idx] of Object.entries(order))
          assert.deepEqual(
            idx,
            jobs.flatMap((j, i) => (j.key === k ? [i] : [])),
          );
        await tick();
        assert.equal(q.size, 0);
      }),
    );
  });
});
