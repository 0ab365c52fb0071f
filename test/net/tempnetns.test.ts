import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { NetHandle } from '../../src/net/netlink.js';
import { createTempNetns, hostNetnsPath } from '../../src/net/netns.js';

describe('temporary netns (unshare, no name, no mount)', () => {
  it('is a fresh netns with only lo, distinct from the host, gone when closed; the main thread stays home', async () => {
    const hostIno = statSync(hostNetnsPath()).ino;
    const temp = await createTempNetns();
    let h: NetHandle | undefined;
    try {
      assert.notEqual(statSync(temp.path).ino, hostIno);
      assert.equal(statSync('/proc/thread-self/ns/net').ino, hostIno, 'the main thread switched back');
      h = await NetHandle.open(temp);
      assert.deepEqual(
        (await h.links()).map((l) => l.name),
        ['lo'],
      );
    } finally {
      h?.close();
      temp.close();
    }
    assert.throws(() => statSync(temp.path), 'its fd is closed');
  });
});
