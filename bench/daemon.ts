/**
 * Node daemon memory and throughput: 110 pods on the node (kubelet's default maximum), each a realistic
 * Pod object (containers, env, status, kubectl's last-applied annotation), ADDed and DELeted through the
 * native shim at concurrency 8 with informer caches (pod annotations are not passed by the "runtime", so
 * the pod is looked up); then a burst of 200 concurrent ADDs. Reports pairs per second, API requests per
 * ADD, and the daemon's resident memory (the daemon runs as deploy/ runs it: bin/plexusctl's flags) at
 * rest and at its peak, against Multus's own DaemonSet limit (50 Mi) and the budget (56 MiB).
 * Run: npm run bench (writes docs/benchmarks-daemon.md)
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { SimNode, podEnv, repoRoot } from '../src/sim/simnode.js';
import { startDaemon, stopDaemon } from '../test/support/daemon.js';
import { besidePrevious } from './history.js';

const NODE_PODS = 110;
const BURST = Number(process.env.BENCH_BURST ?? 200);
const CONCURRENCY = 8;
/** Steady resident memory the daemon must stay within with NODE_PODS pods (1.5× multus-daemon at rest). */
const BUDGET_MIB = 56;
/** How long the daemon is left idle after the churn before its memory at rest is read. */
const REST_MS = 30_000;

function memoryKiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`${field}:`));
  return Number(line?.split(/\s+/)[1] ?? 0);
}

/** A pod as kubelet and kubectl leave it: what the informer receives, most of which the daemon drops. */
function realisticPod(name: string): unknown {
  const containers = [
    {
      name: 'app',
      image: 'registry.example/app:1.2.3',
      env: Array.from({ length: 20 }, (_, i) => ({ name: `SETTING_${i}`, value: `value-${i}-`.padEnd(40, 'x') })),
      resources: { requests: { cpu: '100m', memory: '64Mi' }, limits: { cpu: '1', memory: '256Mi' } },
      volumeMounts: [{ name: 'kube-api-access', mountPath: '/var/run/secrets/kubernetes.io/serviceaccount', readOnly: true }],
    },
  ];
  return {
    metadata: {
      name,
      namespace: 'default',
      labels: { app: 'bench', 'pod-template-hash': '5d8f7c9b6' },
      annotations: { 'k8s.v1.cni.cncf.io/networks': 'macvlan-a', 'kubectl.kubernetes.io/last-applied-configuration': JSON.stringify({ spec: { containers } }) },
    },
    spec: { nodeName: 'plx-node', containers, volumes: [{ name: 'kube-api-access', projected: { sources: [{ serviceAccountToken: { path: 'token', expirationSeconds: 3607 } }] } }] },
    status: { phase: 'Running', conditions: ['Initialized', 'Ready', 'ContainersReady', 'PodScheduled'].map((type) => ({ type, status: 'True', lastTransitionTime: new Date().toISOString() })) },
  };
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
  const shim = join(repoRoot(), 'native', 'plexus-shim');
  const names = Array.from({ length: NODE_PODS }, (_, i) => `plx-b${i}`);
  const burstNetns = Array.from({ length: BURST }, (_, i) => `plx-bb${i}`);
  for (const n of names) node.api.put('v1', 'pods', realisticPod(n) as never);
  const daemon = await startDaemon(socket, ['--kubeconfig', node.kubeconfig, '--node-name', 'plx-node', '--max-concurrent', String(CONCURRENCY), '--max-queued', '256', '--log-level', 'warn']);
  const conf = node.metaConf({ type: 'plexus-shim', daemonSocket: socket });
  let rows: string[] = [];
  let figures: Record<string, number> = {};
  try {
    for (const n of [...names, ...burstNetns]) execFileSync('ip', ['netns', 'add', n]);
    await sleep(2000);
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
    const getsPerAdd = calls.filter((c) => c.verb === 'get' || c.verb === 'list').length / NODE_PODS;
    const patchesPerAdd = calls.filter((c) => c.verb === 'patch').length / NODE_PODS;
    const afterChurn = memoryKiB(daemon.pid!, 'VmHWM');
    const justAfter = memoryKiB(daemon.pid!, 'VmRSS');
    // At rest again, every pod of the node in the caches and as many ADDs served as the node has pods:
    // V8 gives back what the churn's garbage took once the process has been idle a while (~20 s here).
    await sleep(REST_MS);
    const steady = memoryKiB(daemon.pid!, 'VmRSS');

    // Burst: every sandbox at once; the daemon queues or answers "try again later", never grows without bound.
    const burst = await Promise.all(burstNetns.map((ns, i) => node.exec(podEnv('ADD', `burst-${i}`, `/var/run/netns/${ns}`, { name: names[i % NODE_PODS]!, namespace: 'default' }), conf, shim)));
    const accepted = burst.filter((r) => r.status === 0).length;
    const later = burst.filter((r) => r.json?.code === 11).length;
    const peak = memoryKiB(daemon.pid!, 'VmHWM');
    await pool(
      burstNetns.map((ns, i) => [ns, i] as const),
      CONCURRENCY,
      async ([ns, i]) => {
        await node.exec(podEnv('DEL', `burst-${i}`, `/var/run/netns/${ns}`, { name: names[i % NODE_PODS]!, namespace: 'default' }), conf, shim);
      },
    );
    const mib = (kib: number) => kib / 1024;
    rows = [
      `| churn: ${NODE_PODS} pods, ADD then DEL, concurrency ${CONCURRENCY} | ${(NODE_PODS / seconds).toFixed(1)} pairs/s (${seconds.toFixed(1)} s), ${failures.length} failures |`,
      `| API requests per ADD (caches of the node's pods and of NADs) | ${getsPerAdd.toFixed(2)} reads, ${patchesPerAdd.toFixed(2)} PATCH (inside the ADD), plus one Event per attachment |`,
      `| burst: ${BURST} concurrent ADDs | ${accepted} served, ${later} told to try again later (code 11), ${BURST - accepted - later} other |`,
      `| daemon resident memory, ${NODE_PODS} pods on the node | ${mib(idle).toFixed(1)} MiB before any ADD, ${mib(justAfter).toFixed(1)} MiB right after the churn, **${mib(steady).toFixed(1)} MiB** at rest ${REST_MS / 1000} s later (budget ${BUDGET_MIB}: ${(mib(steady) / BUDGET_MIB).toFixed(2)}×) |`,
      `| daemon peak resident memory | ${mib(afterChurn).toFixed(1)} MiB through the churn, **${mib(peak).toFixed(1)} MiB** through the burst |`,
    ];
    figures = {
      'steady RSS, MiB': mib(steady),
      'steady RSS ÷ budget (56 MiB)': mib(steady) / BUDGET_MIB,
      'steady RSS ÷ Multus DaemonSet limit (50 Mi)': mib(steady) / 50,
      'peak RSS in the burst, MiB': mib(peak),
      'churn pairs/s': NODE_PODS / seconds,
    };
  } finally {
    await stopDaemon(daemon);
    for (const n of [...names, ...burstNetns]) {
      try {
        execFileSync('ip', ['netns', 'del', n]);
      } catch {
        /* not created */
      }
    }
    await node.stop();
    rmSync(work, { recursive: true, force: true });
  }
  const load = loadavg();
  const table = [
    `# Node daemon: memory, churn and bursts`,
    ``,
    `${new Date().toISOString().slice(0, 10)}, 2 cores, Node ${process.version}, load average ${load.map((l) => l.toFixed(2)).join(' ')}. ${NODE_PODS} pods on the`,
    `node, each a full Pod object as kubelet and kubectl leave it; each ADD: the cluster network (bridge + host-local)`,
    `and macvlan-a (macvlan + host-local), through the native \`plexus-shim\` and \`plexusctl daemon --max-concurrent ${CONCURRENCY}\``,
    `started by \`bin/plexusctl\` as deploy/ starts it. The "runtime" does not pass pod annotations, so every ADD needs the`,
    `pod: it comes from the daemon's cache. Resident memory is the kernel's (VmRSS, VmHWM).`,
    ``,
    `| measure | result |`,
    `|---|---|`,
    ...rows,
    ``,
    `Beside the previous run:`,
    ``,
    ...besidePrevious('daemon', figures, load),
    ``,
    `Reproduce: \`npm run bench\`. Where the memory goes and what was cut is in docs/memory.md; per-ADD latency`,
    `against the bare delegates is in benchmarks-meta.md.`,
    ``,
  ].join('\n');
  writeFileSync(join(repoRoot(), 'docs', 'benchmarks-daemon.md'), table);
  process.stdout.write(`${table}\n`);
}

await main();
