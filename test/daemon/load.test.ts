import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { SimNode, podEnv } from '../../src/sim/simnode.js';
import { startDaemon, stopDaemon } from '../support/daemon.js';
import { installShellPlugin, shimPath } from '../support/plugins.js';
import { Rig } from '../support/rig.js';

describe('node daemon under load: bounded concurrency, DEL first, explicit overload', function () {
  this.timeout(120000);
  const rig = new Rig();
  let node: SimNode;
  let daemon: ChildProcess;
  let socket: string;
  let conf: Record<string, unknown>;
  before(async () => {
    node = new SimNode(rig.dir('load'));
    await node.start();
    // A cluster network that takes 300 ms per ADD and creates nothing: the load is the daemon's own.
    installShellPlugin(
      node.binDir,
      'plx-slow',
      `[ "$CNI_COMMAND" = ADD ] || exit 0; sleep 0.3; echo "{\\"cniVersion\\":\\"1.0.0\\",\\"interfaces\\":[{\\"name\\":\\"$CNI_IFNAME\\",\\"sandbox\\":\\"$CNI_NETNS\\"}],\\"ips\\":[]}"`,
    );
    const slow = join(node.dir, 'slow.conf');
    writeFileSync(slow, JSON.stringify({ cniVersion: '1.0.0', name: 'slow', type: 'plx-slow' }));
    socket = join(node.dir, 'plexus.sock');
    daemon = await startDaemon(socket, ['--max-concurrent', '2', '--max-queued', '4']);
    conf = node.shimConf(socket, {}, { clusterNetwork: slow });
  });
  after(async () => {
    await stopDaemon(daemon);
    await node.stop();
    rig.cleanup();
  });

  it('a burst of 200 concurrent ADDs: each succeeds or gets code 11, never anything else', async () => {
    const ns = rig.netns('ld');
    const runs = await Promise.all(Array.from({ length: 200 }, (_, i) => node.exec(podEnv('ADD', `burst-${i}`, ns.path, { name: `p${i}`, namespace: 'default' }), conf, shimPath)));
    const ok = runs.filter((r) => r.status === 0).length;
    const later = runs.filter((r) => r.status === 1 && r.json?.code === 11 && /overloaded/.test(String(r.json?.details))).length;
    assert.equal(
      ok + later,
      200,
      runs
        .filter((r) => r.status !== 0 && r.json?.code !== 11)
        .map((r) => r.stdout)
        .join('\n'),
    );
    assert.ok(ok >= 6, `at least the running and queued ones succeed (${ok})`);
    assert.ok(later > 0, 'the rest are told to try again later');
  });

  it('a DEL sent into a full queue of ADDs is served before them', async () => {
    const ns = rig.netns('lp');
    const finished: string[] = [];
    const adds = Array.from({ length: 6 }, (_, i) =>
      node.exec(podEnv('ADD', `queued-${i}`, ns.path, { name: `q${i}`, namespace: 'default' }), conf, shimPath).then((r) => {
        finished.push(`add ${r.status}`);
      }),
    );
    await sleep(100);
    const del = node.exec(podEnv('DEL', 'burst-0', ns.path, { name: 'p0', namespace: 'default' }), conf, shimPath).then((r) => {
      finished.push(`del ${r.status}`);
    });
    await Promise.all([...adds, del]);
    const position = finished.indexOf('del 0');
    assert.ok(position >= 0, finished.join(', '));
    assert.ok(position <= 2, `DEL finished ${position + 1}th of 7, behind at most the two running ADDs: ${finished.join(', ')}`);
  });

  it('over its memory budget (--max-rss) ADD gets code 11 naming the budget, and DEL still runs', async () => {
    // A budget below what any Node process takes: every ADD is over it.
    const tight = join(node.dir, 'tight.sock');
    const budgeted = await startDaemon(tight, ['--max-rss', '32']);
    try {
      const ns = rig.netns('lm');
      const tightConf = node.shimConf(tight, {}, { clusterNetwork: join(node.dir, 'slow.conf') });
      const env = podEnv('ADD', 'over-budget', ns.path, { name: 'm0', namespace: 'default' });
      const add = await node.exec(env, tightConf, shimPath);
      assert.equal(add.json?.code, 11, add.stdout);
      assert.match(String(add.json?.details), /memory budget: \d+ MiB resident, budget 32 MiB/);
      const del = await node.exec({ ...env, CNI_COMMAND: 'DEL' }, tightConf, shimPath);
      assert.equal(del.status, 0, del.stdout);
      assert.ok(budgeted.logs.some((l) => l.reason === 'memory' && l.command === 'ADD'));
    } finally {
      await stopDaemon(budgeted);
    }
  });
});
