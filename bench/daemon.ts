/**
 * Node daemon under churn: 200 pods ADDed and DELeted through the native shim at concurrency 8,
 * with informer caches (pod annotations are not passed by the "runtime", so the pod is looked up),
 * then a burst of 200 concurrent ADDs. Reports pairs per second, API requests per ADD, and the
 * daemon's resident memory idle and at its peak. Run: npm run bench (writes docs/benchmarks-daemon.md)
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { SimNode, podEnv, repoRoot } from '../src/sim/simnode.js';
import { startDaemon, stopDaemon } from '../test/support/daemon.js';

const PODS = Number(process.env.BENCH_PODS ?? 200);
const CONCURRENCY = 8;

function memoryKiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${field}:`));
  return Number(line?.split(/\s+/)[1] ?? 0);
}

async function pool<T>(items: T[], n: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (next < items.length) await work(items[next++]!);
    }),
  );
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'plexus-bench-daemon-'));
  const node = new SimNode(join(work, 'node'));
  await node.start();
  const socket = join(work, 'plexus.sock');
  const daemon = await startDaemon(socket, ['--kubeconfig', node.kubeconfig, '--node-name', 'plx-node', '--max-concurrent', String(CONCURRENCY), '--max-queued', '256', '--log-level', 'warn']);
  const shim = join(repoRoot(), 'native', 'plexus-shim');
  const conf = node.metaConf({ type: 'plexus-shim', daemonSocket: socket });
  const names = Array.from({ length: PODS }, (_, i) => `plx-b${i}`);
  let rows: string[] = [];
  try {
    for (const n of names) {
      execFileSync('ip', ['netns', 'add', n]);
      node.api.put('v1', 'pods', { metadata: { name: n, namespace: 'default', annotations: { 'k8s.v1.cni.cncf.io/networks': 'macvlan-a' } }, spec: { nodeName: 'plx-node' } } as never);
    }
    await sleep(1000);
    const idle = memoryKiB(daemon.pid!, 'VmRSS');
    const reads = node.api.requests.length;
    const failures: string[] = [];
    const t0 = process.hrtime.bigint();
    await pool(names, CONCURRENCY, async (n) => {
      const env = podEnv('ADD', `churn-${n}`, `/var/run/netns/${n}`, { name: n, namespace: 'default' });
      const add = await node.exec(env, conf, shim);
      if (add.status !== 0) failures.push(add.stdout);
      const del = await node.exec({ ...env, CNI_COMMAND: 'DEL' }, conf, shim);
      if (del.status !== 0) failures.push(del.stdout);
    });
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const calls = node.api.requests.slice(reads);
    const getsPerAdd = calls.filter((c) => c.verb === 'get' || c.verb === 'list').length / PODS;
    const patchesPerAdd = calls.filter((c) => c.verb === 'patch').length / PODS;
    const afterChurn = memoryKiB(daemon.pid!, 'VmHWM');

    // Burst: every pod at once; the daemon queues or answers "try again later", never grows without bound.
    const burst = await Promise.all(names.map((n) => node.exec(podEnv('ADD', `burst-${n}`, `/var/run/netns/${n}`, { name: n, namespace: 'default' }), conf, shim)));
    const accepted = burst.filter((r) => r.status === 0).length;
    const later = burst.filter((r) => r.json?.code === 11).length;
    const peak = memoryKiB(daemon.pid!, 'VmHWM');
    await pool(names, CONCURRENCY, async (n) => {
      await node.exec(podEnv('DEL', `burst-${n}`, `/var/run/netns/${n}`, { name: n, namespace: 'default' }), conf, shim);
    });
    rows = [
      `| churn: ${PODS} pods, ADD then DEL, concurrency ${CONCURRENCY} | ${(PODS / seconds).toFixed(1)} pairs/s (${seconds.toFixed(1)} s), ${failures.length} failures |`,
      `| API requests per ADD (caches of the node's pods and of NADs) | ${getsPerAdd.toFixed(2)} reads, ${patchesPerAdd.toFixed(2)} PATCH, plus one Event per attachment |`,
      `| burst: ${PODS} concurrent ADDs | ${accepted} served, ${later} told to try again later (code 11), ${PODS - accepted - later} other |`,
      `| daemon resident memory | ${(idle / 1024).toFixed(0)} MiB idle, ${(afterChurn / 1024).toFixed(0)} MiB peak after churn, ${(peak / 1024).toFixed(0)} MiB peak after the burst |`,
    ];
  } finally {
    await stopDaemon(daemon);
    for (const n of names) {
      try {
        execFileSync('ip', ['netns', 'del', n]);
      } catch {
        /* not created */
      }
    }
    await node.stop();
    rmSync(work, { recursive: true, force: true });
  }
  const table = [
    `# Node daemon under churn and bursts`,
    ``,
    `${new Date().toISOString().slice(0, 10)}, 2 cores, Node ${process.version}. Each pod: the cluster network (bridge + host-local) and`,
    `macvlan-a (macvlan + host-local), through the native \`plexus-shim\` and \`plexusctl daemon --max-concurrent ${CONCURRENCY}\`. The`,
    `"runtime" does not pass pod annotations, so every ADD needs the pod: it comes from the daemon's cache.`,
    ``,
    `| measure | result |`,
    `|---|---|`,
    ...rows,
    ``,
    `Reproduce: \`npm run bench\`. Per-ADD latency against the bare delegates is in benchmarks-meta.md.`,
    ``,
  ].join('\n');
  writeFileSync(join(repoRoot(), 'docs', 'benchmarks-daemon.md'), table);
  process.stdout.write(`${table}\n`);
}

await main();
