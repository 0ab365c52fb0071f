import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { lineLogger } from '../../src/util/linelog.js';

describe("the exec'd plugins' line log", () => {
  const dir = mkdtempSync(join(tmpdir(), 'plx-linelog-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const levels = ['panic', 'error', 'warning', 'info', 'debug'] as const;
  const lines = (file: string) => readFileSync(file, 'utf8').trim().split('\n');

  it('writes the levels up to the threshold, each line timestamped with its level', () => {
    const file = join(dir, 'a.log');
    const log = lineLogger({ levels, level: 'warning', fallback: 'info', file });
    for (const l of levels) log(l, `at ${l}`);
    assert.deepEqual(
      lines(file).map((l) => l.replace(/^\S+ /, '')),
      ['[panic] at panic', '[error] at error', '[warning] at warning'],
    );
    assert.match(lines(file)[0]!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z /);
  });

  it('an unknown threshold is the fallback; a missing directory is created only when asked; writing never throws', () => {
    const file = join(dir, 'sub', 'b.log');
    lineLogger({ levels, level: 'loud', fallback: 'info', file })('info', 'dropped: no directory');
    assert.throws(() => readFileSync(file));
    const log = lineLogger({ levels, level: 'loud', fallback: 'info', file, createDir: true });
    log('info', 'kept');
    log('debug', 'filtered');
    assert.deepEqual(
      lines(file).map((l) => l.replace(/^\S+ /, '')),
      ['[info] kept'],
    );
    lineLogger({ levels, level: 'info', fallback: 'info', file: join(file, 'not-a-dir', 'c.log'), createDir: true })('info', 'x');
  });

  it('rotates by size before a write', () => {
    const file = join(dir, 'r.log');
    writeFileSync(file, 'x'.repeat(1024 * 1024 + 1));
    lineLogger({ levels, level: 'info', fallback: 'info', file, rotate: { maxSize: 1, maxBackups: 1 } })('info', 'fresh');
    assert.equal(readFileSync(`${file}.1`, 'utf8').length, 1024 * 1024 + 1);
    assert.deepEqual(
      lines(file).map((l) => l.replace(/^\S+ /, '')),
      ['[info] fresh'],
    );
  });
});
