import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFileSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type AttachmentRecord, AttachmentStore } from '../../src/meta/store.js';
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

const checksumOf = (r: AttachmentRecord) => `sha256:${createHash('sha256').update(JSON.stringify(r)).digest('hex')}`;

describe('attachment store', () => {
  const rig = new Rig();
  after(() => rig.cleanup());

  it('a rewrite leaves only the newest record', () => {
    const store = new AttachmentStore(rig.dir('store'));
    store.write(record('c1', ['a']));
    store.write(record('c1', ['a', 'b']));
    assert.deepEqual(readdirSync(store.dir), ['c1.json']);
    const read = store.read('c1');
    assert.equal(read.kind === 'ok' && read.record.attachments.length, 2);
  });

  it('a process that died between the renames left the previous record aside: it is read, listed and deleted', () => {
    const store = new AttachmentStore(rig.dir('store'));
    store.write(record('c2', ['a']));
    renameSync(store.path('c2'), `${store.path('c2')}.prev`);
    const read = store.read('c2');
    assert.equal(read.kind === 'ok' && read.record.attachments[0]?.network, 'a');
    assert.deepEqual(store.list(), ['c2']);
    assert.deepEqual(store.active(), ['c2']);
    store.write(record('c2', []));
    assert.deepEqual(readdirSync(store.dir), ['c2.json'], 'the next write takes its place');
    store.delete('c2');
    assert.deepEqual(readdirSync(store.dir), []);
    assert.equal(store.read('c2').kind, 'missing');
  });

  it('a process that died before dropping the aside copy: the record is read, the next write drops the copy; a torn record is corrupt, not missing', () => {
    const store = new AttachmentStore(rig.dir('store'));
    store.write(record('c3', ['old']));
    copyFileSync(store.path('c3'), `${store.path('c3')}.prev`);
    writeFileSync(store.path('c3'), readFileSync(store.path('c3')).toString().replace('"old"', '"new"').replace(/"checksum":"[^"]*"/, `"checksum":"${checksumOf(record('c3', ['new']))}"`));
    const read = store.read('c3');
    assert.equal(read.kind === 'ok' && read.record.attachments[0]?.network, 'new');
    store.write(record('c3', []));
    assert.deepEqual(readdirSync(store.dir), ['c3.json']);
    writeFileSync(join(store.dir, 'c4.json'), '{"schemaVersion":1,');
    assert.equal(store.read('c4').kind, 'corrupt');
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
