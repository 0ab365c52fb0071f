/**
 * Cluster-wide IPAM, Plexus against whereabouts v0.9.2 (built from the Go module proxy by
 * scripts/build-whereabouts.sh), on the same real kube-apiserver (`plexusctl cluster`, control plane
 * only), in one run. Both are driven as a delegate drives its IPAM: an exec per request with the
 * delegate's conf on stdin (whereabouts: its binary; Plexus: plexus-shim installed as plexus-ipam,
 * answered by one of 10 node daemons). Figures:
 * - 8-way ADD latency and throughput over 10 nodes, then the DELs;
 * - Spiderpool's published scenario's allocation part: 1000 addresses on 10 nodes, from a pool with
 *   plenty of addresses, and from one with exactly 1000;
 * - Plexus ADD latency and throughput in pools of each size (/24, /16, /8, /64, /10), as ratios to the /24.
 * Run: npm run bench (writes docs/benchmarks-ipam.md)
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalCluster } from '../src/sim/cluster.js';
import { applyCrds, kubectlFor } from '../src/sim/cluster-plexus.js';
import { repoRoot } from '../src/sim/simnode.js';
import { type DaemonProcess, startDaemon, stopDaemon } from '../test/support/daemon.js';
import { besidePrevious } from './history.js';
import { quantile } from './stats.js';

const NODES = 10;
const CONCURRENCY = 8;
const WHEREABOUTS = join(repoRoot(), '.tools', 'whereabouts', 'v0.9.2');

interface Outcome {
  ok: number;
  failed: number;
  seconds: number;
  p50: number;
  p99: number;
  firstError?: string;
}

async function main(): Promise<void> {
  if (!existsSync(join(WHEREABOUTS, 'whereabouts'))) throw new Error('whereabouts is not built: sh scripts/build-whereabouts.sh');
  const work = mkdtempSync(join(tmpdir(), 'plexus-bench-ipam-'));
  const cluster = new LocalCluster({ dir: join(work, 'cluster'), kubelet: false });
  const kubectl = kubectlFor(cluster);
  const daemons: DaemonProcess[] = [];
  const bin = join(work, 'bin');
  const out: Record<string, Outcome> = {};
  const sizes: Record<string, Outcome> = {};
  let timing: Record<string, number> = {};
  try {
    await cluster.up();
    await applyCrds(kubectl, [join(repoRoot(), 'crds'), join(WHEREABOUTS, 'crds')], ['ipchunks.ipam.plexus.network', 'ippools.whereabouts.cni.cncf.io']);
    // The simulated nodes have Node objects: a node without one is gone for good, and its chunks reclaimed.
    await kubectl(
      ['create', '-f', '-'],
      JSON.stringify({ apiVersion: 'v1', kind: 'List', items: Array.from({ length: NODES }, (_, n) => ({ apiVersion: 'v1', kind: 'Node', metadata: { name: `bench-node-${n}` } })) }),
    );
    mkdirSync(bin);
    const flatFile = join(work, 'whereabouts.conf');
    writeFileSync(flatFile, JSON.stringify({ datastore: 'kubernetes', kubernetes: { kubeconfig: cluster.adminKubeconfig } }));
    copyFileSync(join(repoRoot(), 'native', 'plexus-shim'), join(bin, 'plexus-ipam'));
    for (let n = 0; n < NODES; n++) {
      daemons.push(await startDaemon(join(work, `n${n}.sock`), ['--kubeconfig', cluster.adminKubeconfig, '--node-name', `bench-node-${n}`, '--cni-dir', join(work, `n${n}`), '--log-level', 'error']));
    }

    /** One IPAM exec as a delegate makes it; resolves with its time in ms, or the error. */
    const exec = (which: 'plexus' | 'whereabouts', command: string, id: string, node: number, ipam: object): Promise<{ ms: number; error?: string }> =>
      new Promise((resolve) => {
        const path = which === 'plexus' ? join(bin, 'plexus-ipam') : join(WHEREABOUTS, 'whereabouts');
        // whereabouts v0.9 wants its flat file besides the NAD's keys (configuration_path).
        const conf = {
          cniVersion: '1.0.0',
          name: 'bench',
          type: 'macvlan',
          ipam: which === 'plexus' ? ipam : { ...ipam, configuration_path: flatFile, kubernetes: { kubeconfig: cluster.adminKubeconfig } },
        };
        const start = performance.now();
        const child = spawn(path, [], {
          env: {
            CNI_COMMAND: command,
            CNI_CONTAINERID: id,
            CNI_NETNS: '/var/run/netns/none',
            CNI_IFNAME: 'net1',
            CNI_PATH: bin,
            CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=${id}`,
            PLEXUS_DAEMON_SOCKET: join(work, `n${node}.sock`),
            NODENAME: `bench-node-${node}`,
            PATH: process.env.PATH ?? '/usr/bin:/bin',
          },
        });
        let stdout = '';
        child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
        child.on('close', (code) => resolve({ ms: performance.now() - start, ...(code === 0 ? {} : { error: stdout.trim().slice(0, 300) }) }));
        child.stdin.end(JSON.stringify(conf));
      });

    /** `count` requests, CONCURRENCY at a time, round the nodes. */
    const run = async (which: 'plexus' | 'whereabouts', command: string, label: string, count: number, ipam: object): Promise<Outcome> => {
      const times: number[] = [];
      let failed = 0;
      let firstError: string | undefined;
      let next = 0;
      const t0 = performance.now();
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          while (next < count) {
            const i = next++;
            const r = await exec(which, command, `${label}-${i}`, i % NODES, ipam);
            if (r.error) {
              failed++;
              firstError ??= r.error;
            } else times.push(r.ms);
          }
        }),
      );
      return {
        ok: times.length,
        failed,
        seconds: (performance.now() - t0) / 1000,
        p50: times.length ? quantile(times, 0.5) : NaN,
        p99: times.length ? quantile(times, 0.99) : NaN,
        ...(firstError ? { firstError } : {}),
      };
    };

    for (const which of ['plexus', 'whereabouts'] as const) {
      const type = which === 'plexus' ? 'plexus-ipam' : 'whereabouts';
      // Warm: the pool exists, connections and caches are up.
      await run(which, 'ADD', `${which}-warm`, 10, { type, range: '10.80.0.0/16' });
      out[`${which} ADD`] = await run(which, 'ADD', `${which}-a`, 400, { type, range: '10.80.0.0/16' });
      out[`${which} DEL`] = await run(which, 'DEL', `${which}-a`, 400, { type, range: '10.80.0.0/16' });
      out[`${which} 1000, plenty`] = await run(which, 'ADD', `${which}-plenty`, 1000, { type, range: which === 'plexus' ? '10.81.0.0/16' : '10.82.0.0/16' });
      out[`${which} 1000, exactly 1000`] = await run(which, 'ADD', `${which}-exact`, 1000, {
        type,
        range: which === 'plexus' ? '10.83.0.0/22' : '10.84.0.0/22',
        range_end: which === 'plexus' ? '10.83.3.232' : '10.84.3.232',
      });
    }
    for (const k of ['whereabouts ADD', 'whereabouts 1000, plenty']) if (!out[k]!.ok) throw new Error(`the baseline did not run: ${k}: ${out[k]!.firstError}`);
    // Pool size: 200 ADDs (a /24 holds 253) 8-way over the 10 nodes, in pools of each size.
    for (const [size, range] of [
      ['/24', '10.90.0.0/24'],
      ['/16', '10.91.0.0/16'],
      ['/8', '11.0.0.0/8'],
      ['/64', '2001:db8:90::/64'],
      ['/10 (IPv4, Spiderpool #3541)', '100.64.0.0/10'],
    ] as const) {
      sizes[size] = await run('plexus', 'ADD', `size-${range.replace(/[./:]/g, '-')}`, 200, { type: 'plexus-ipam', range });
    }
    timing = { '/24': sizes['/24']!.p50, '/8': sizes['/8']!.p50, '/64': sizes['/64']!.p50 };
  } finally {
    for (const d of daemons) await stopDaemon(d);
    await cluster.down();
    rmSync(work, { recursive: true, force: true });
  }
  const load = loadavg();
  const row = (name: string, o: Outcome) => `| ${name} | ${o.ok} | ${o.failed} | ${o.seconds.toFixed(1)} | ${(o.ok / o.seconds).toFixed(0)} | ${o.p50.toFixed(1)} | ${o.p99.toFixed(1)} |`;
  const ratio = (a: string, b: string) => (out[a]!.ok / out[a]!.seconds / (out[b]!.ok / out[b]!.seconds)).toFixed(1);
  const table = [
    `# IPAM: Plexus against whereabouts`,
    ``,
    `${new Date().toISOString().slice(0, 10)}, 2 cores, Node ${process.version}, load average ${load.map((l) => l.toFixed(2)).join(' ')}. One kube-apiserver v1.37.2 with etcd`,
    `(\`plexusctl cluster\`, control plane only); whereabouts v0.9.2 built from the Go module proxy (its default mode: a pool object`,
    `updated under a cluster-wide lease); Plexus with 10 node daemons. Each request is an exec, as a delegate makes it, ${CONCURRENCY} at a time,`,
    `round the 10 nodes. Latency is the exec's, start to exit.`,
    ``,
    `| requests | done | failed | wall (s) | per second | p50 (ms) | p99 (ms) |`,
    `|---|---|---|---|---|---|---|`,
    ...Object.entries(out).map(([k, o]) => row(k, o)),
    ``,
    `Throughput, Plexus ÷ whereabouts: ADD ${ratio('plexus ADD', 'whereabouts ADD')}×, DEL ${ratio('plexus DEL', 'whereabouts DEL')}×, 1000 with plenty ${ratio('plexus 1000, plenty', 'whereabouts 1000, plenty')}×.`,
    ...Object.entries(out)
      .filter(([, o]) => o.firstError)
      .map(([k, o]) => `First failure of "${k}": \`${o.firstError!.replace(/\s+/g, ' ')}\``),
    ``,
    `The rows "1000, …" are the IPAM part of Spiderpool's published test (1000 pods on 10 nodes; "exactly 1000": pods = IPs, where`,
    `the last addresses of the pool are lent between nodes). The whole-pod scenario, with Spiderpool's 182 s scaled to this machine,`,
    `is in docs/benchmarks-podstart.md.`,
    ``,
    `Plexus by pool size, ${CONCURRENCY}-way over the 10 nodes, 200 ADDs into a new pool of each size (chunks claimed as they fill):`,
    ``,
    `| pool | done | failed | wall (s) | per second | p50 (ms) | p99 (ms) | p50 ÷ /24 |`,
    `|---|---|---|---|---|---|---|---|`,
    ...Object.entries(sizes).map(([k, o]) => `${row(k, o)} ${(o.p50 / sizes['/24']!.p50).toFixed(2)} |`),
    ``,
    `Beside the previous run:`,
    ``,
    ...besidePrevious(
      'ipam',
      {
        'ADD throughput, Plexus ÷ whereabouts': Number(ratio('plexus ADD', 'whereabouts ADD')),
        'ADD p50 ms, Plexus': out['plexus ADD']!.p50,
        'ADD p50, /64 ÷ /24': timing['/64']! / timing['/24']!,
      },
      load,
    ),
    ``,
    `Reproduce: \`npm run bench\` (it builds whereabouts first: sh scripts/build-whereabouts.sh).`,
    ``,
  ].join('\n');
  writeFileSync(join(repoRoot(), 'docs', 'benchmarks-ipam.md'), table);
  process.stdout.write(`${table}\n`);
}

await main();
