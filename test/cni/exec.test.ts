import assert from 'node:assert/strict';
import { readlinkSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CniError } from '../../src/cni/errors.js';
import { execPlugin } from '../../src/cni/invoke.js';
import { inNetnsSync, openNetns } from '../../src/net/netns.js';
import { spawnCollect } from '../../src/util/native.js';
import { installShellPlugin } from '../support/plugins.js';
import { Rig } from '../support/rig.js';

/** The plugin exec (posix_spawn in the addon) as the runtime side relies on it. */
describe('plugin exec through the addon', () => {
  const rig = new Rig();
  after(() => rig.cleanup());

  it('feeds stdin and collects stdout and stderr larger than a pipe buffer, with the exit status', async () => {
    const input = 'x'.repeat(300_000);
    const cat = await spawnCollect('/bin/cat', {}, input);
    assert.equal(cat.stdout.toString(), input);
    const bin = rig.dir('bin');
    const loud = installShellPlugin(bin, 'loud', 'head -c 200000 /dev/zero | tr "\\0" e >&2; printf "%s" "$CNI_COMMAND"; exit 3');
    const out = await spawnCollect(loud, { CNI_COMMAND: 'ADD', PATH: '/usr/bin:/bin' }, '{}');
    assert.deepEqual([out.status, out.signal, out.stdout.toString(), out.stderr.length], [3, null, 'ADD', 200_000]);
  });

  it('the child gets exactly the env it is given and default signal handling (Node ignores SIGPIPE)', async () => {
    const bin = rig.dir('bin');
    const probe = installShellPlugin(bin, 'probe', 'env | sort; grep -E "^Sig(Ign|Blk)" /proc/self/status');
    const r = await spawnCollect(probe, { ONLY: 'this', PATH: '/usr/bin:/bin' }, '');
    const lines = r.stdout.toString().trim().split('\n');
    assert.deepEqual(
      lines.filter((l) => /^[A-Z_]+=/.test(l) && !/^(PWD|SHLVL|_)=/.test(l)),
      ['ONLY=this', 'PATH=/usr/bin:/bin'],
    );
    assert.ok(lines.includes('SigBlk:\t0000000000000000'), lines.join('\n'));
    // Signals 1-31 at their defaults; glibc's posix_spawn leaves its two internal signals (32, 33) ignored.
    const ignored = BigInt(`0x${lines.find((l) => l.startsWith('SigIgn:'))?.split('\t')[1] ?? 'f'}`);
    assert.equal(ignored & 0x7fffffffn, 0n, lines.join('\n'));
  });

  it('kills at the deadline, also a child that closed its stdout and stderr first; a daemonizing grandchild holds nothing up', async () => {
    const slow = await spawnCollect('/bin/sh', {}, 'exec >&- 2>&-; sleep 1');
    assert.equal(slow.status, 0, 'no deadline: waits for it');
    const hung = await spawnCollect('/bin/sh', {}, 'exec >&- 2>&-; sleep 5', 200);
    assert.deepEqual([hung.timedOut, hung.signal, hung.status], [true, 9, null]);
    // The grandchild sleeps far past mocha's timeout and holds the pipes: the result must not wait for it.
    const forked = await spawnCollect('/bin/sh', {}, 'sleep 600 & echo $!');
    const grandchild = Number(forked.stdout.toString().trim());
    assert.ok(grandchild > 0, forked.stdout.toString());
    try {
      assert.doesNotThrow(() => process.kill(grandchild, 0), 'the result came while the grandchild still runs');
    } finally {
      process.kill(grandchild, 'SIGKILL');
    }
  }).timeout(10_000);

  it('a plugin that cannot start rejects with the errno name; execPlugin turns a timeout into code 11', async () => {
    await assert.rejects(spawnCollect('/nonexistent/plugin', {}, ''), { code: 'ENOENT' });
    const bin = rig.dir('bin');
    const notExecutable = join(bin, 'conf');
    writeFileSync(notExecutable, '{}', { mode: 0o644 });
    await assert.rejects(spawnCollect(notExecutable, {}, ''), { code: 'EACCES' });
    await assert.rejects(execPlugin('/nonexistent/plugin', '', {}), (e: unknown) => e instanceof CniError && e.code === 999);
    const sleeper = installShellPlugin(bin, 'sleeper', 'sleep 5');
    await assert.rejects(execPlugin(sleeper, '{}', { PATH: '/usr/bin:/bin' }, { timeoutMs: 100 }), (e: unknown) => e instanceof CniError && e.code === 11);
    const killed = installShellPlugin(bin, 'killed', 'kill -TERM $$');
    await assert.rejects(execPlugin(killed, '{}', {}, { onStderr: () => undefined }), (e: unknown) => e instanceof CniError && /signal SIGTERM/.test(e.message));
  }).timeout(10_000);

  it('starts the child in the netns of the calling thread, as a libuv child would', async () => {
    const ns = rig.netns('ex');
    const podNetns = `net:[${statSync(ns.path).ino}]`;
    const handle = await openNetns(ns.path);
    try {
      // Started inside the switch; it finishes after the main thread is back in the host netns.
      const r = await inNetnsSync(handle, () => spawnCollect('/bin/sh', {}, 'readlink /proc/self/ns/net'));
      assert.equal(r.stdout.toString().trim(), podNetns);
    } finally {
      handle.close();
    }
    const host = await spawnCollect('/bin/sh', {}, 'readlink /proc/self/ns/net');
    assert.equal(host.stdout.toString().trim(), readlinkSync('/proc/self/ns/net'));
    assert.notEqual(host.stdout.toString().trim(), podNetns);
  });
});
