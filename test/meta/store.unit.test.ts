import assert from 'node:assert/strict';
import fc from 'fast-check';
import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type AttachmentRecord, AttachmentStore, COMPACT_AT } from '../../src/meta/store.js';
import { Rig } from '../support/rig.js';

const record = (containerID: string, networks: string[]): AttachmentRecord => ({
  containerID,
  netns: '/var/run/netns/x',
  ifName: 'eth0',
  args: [],
  podNamespace: 'default',
  podName: 'p',
  podUID: 'u',
  cniVersion: '1.0.0',
  attachments: networks.map((network, i) => ({ network, ifName: `net${i}`, config: '{}', capabilityArgs: {}, isDefault: i === 0, state: 'planned' })),
});

describe('attachment store', () => {
  const rig = new Rig();
  after(() => rig.cleanup());

  it("a rewrite appends to the sandbox's log: one file, the newest record read", () => {
    const store = new AttachmentStore(rig.dir('store'));
    store.write(record('c1', ['a']));
    store.write(record('c1', ['a', 'b']));
    assert.deepEqual(readdirSync(store.dir), ['c1.jsonl']);
    assert.equal(readFileSync(store.path('c1'), 'utf8').split('\n').length, 3, 'two lines, each ended');
    const read = store.read('c1');
    assert.equal(read.kind === 'ok' && read.record.attachments.length, 2);
    store.delete('c1');
    assert.deepEqual(readdirSync(store.dir), []);
    assert.equal(store.read('c1').kind, 'missing');
  });

  it('a write cut short by a dying writer: the record before it is read, and the next write starts a line of its own', () => {
    const store = new AttachmentStore(rig.dir('store'));
    store.write(record('c2', ['old']));
    const whole = readFileSync(store.path('c2'), 'utf8');
    store.write(record('c2', ['new']));
    const torn = readFileSync(store.path('c2'), 'utf8').slice(0, whole.length + 40);
    writeFileSync(store.path('c2'), torn);
    const read = store.read('c2');
    assert.equal(read.kind === 'ok' && read.record.attachments[0]?.network, 'old');
    assert.deepEqual(store.active(), ['c2']);
    store.write(record('c2', ['newer']));
    const again = store.read('c2');
    assert.equal(again.kind === 'ok' && again.record.attachments[0]?.network, 'newer');
  });

  it('a log holding no whole record is corrupt, an empty one missing', () => {
    const store = new AttachmentStore(rig.dir('store'));
    writeFileSync(join(store.dir, 'c3.jsonl'), '{"schemaVersion":1,');
    assert.equal(store.read('c3').kind, 'corrupt');
    store.write(record('c4', ['a']));
    writeFileSync(store.path('c4'), readFileSync(store.path('c4'), 'utf8').replace('"a"', '"b"'));
    const tampered = store.read('c4');
    assert.equal(tampered.kind === 'corrupt' && tampered.reason, 'checksum mismatch');
    writeFileSync(join(store.dir, 'c5.jsonl'), '');
    assert.equal(store.read('c5').kind, 'missing');
  });

  it('a log grown past its limit is rewritten as its last record', () => {
    const store = new AttachmentStore(rig.dir('store'));
    const big = record(
      'c6',
      Array.from({ length: 40 }, (_, i) => `network-${i}`),
    );
    const lineBytes = Buffer.byteLength(readFileSync((store.write(big), store.path('c6')), 'utf8'));
    const writes = Math.ceil(COMPACT_AT / lineBytes) + 1;
    for (let i = 0; i < writes; i++) store.write(record('c6', [`n${i}`, ...big.attachments.map((a) => a.network)]));
    assert.ok(statSync(store.path('c6')).size <= COMPACT_AT, 'bounded');
    const read = store.read('c6');
    assert.equal(read.kind === 'ok' && read.record.attachments[0]?.network, `n${writes - 1}`);
  });

  it('property: whatever a log holds and wherever its last write was cut, the last whole record is read', () => {
    const store = new AttachmentStore(rig.dir('store'));
    fc.assert(
      fc.property(fc.array(fc.array(fc.string({ minLength: 1, maxLength: 12 }), { maxLength: 3 }), { minLength: 1, maxLength: 5 }), fc.nat(), (writes, cut) => {
        store.delete('p');
        const sizes: number[] = [];
        for (const networks of writes) {
          store.write(record('p', networks));
          sizes.push(statSync(store.path('p')).size);
        }
        const before = sizes.length > 1 ? sizes[sizes.length - 2]! : 0;
        const last = sizes[sizes.length - 1]!;
        // Cut anywhere inside the last write (keeping at least its first byte), or not at all.
        const keep = before + 1 + (cut % (last - before));
        writeFileSync(store.path('p'), readFileSync(store.path('p')).subarray(0, keep));
        const read = store.read('p');
        // Only its newline lost: the record itself is whole.
        const expected = keep >= last - 1 ? writes[writes.length - 1] : writes[writes.length - 2];
        if (expected === undefined) return read.kind === 'corrupt';
        return read.kind === 'ok' && JSON.stringify(read.record.attachments.map((a) => a.network)) === JSON.stringify(expected);
      }),
    );
  });

  it('prunes old records that list nothing, at most once per interval (it reads them all)', () => {
    const store = new AttachmentStore(rig.dir('store'));
    const day = 24 * 3600 * 1000;
    const hour = 3600 * 1000;
    const now = Date.now();
    store.write(record('empty1', []));
    store.write(record('busy', ['a']));
    store.pruneEmpty(day, hour, now + 2 * day);
    assert.deepEqual(store.list().sort(), ['busy']);
    store.write(record('empty2', []));
    store.pruneEmpty(day, hour, now + 2 * day + 60_000);
    assert.deepEqual(store.list().sort(), ['busy', 'empty2'], 'not again within the hour');
    store.pruneEmpty(day, hour, now + 3 * day);
    assert.deepEqual(store.list().sort(), ['busy']);
  });
});
