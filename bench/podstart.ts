/**
 * Pod start as users see it, on the real node (kube-apiserver, scheduler, kubelet, containerd): N pods
 * created at once (kube-burner node-density style), each with two secondary networks through Plexus in
 * daemon mode (the default install: plexus-shim + `plexusctl daemon`), against the same pods with no
 * secondaries, in one run. Reports pod-ready latency p50/p99 (from the create request to the Ready
 * condition seen by a watch), the node daemon's CPU time and resident memory over each round.
 * Run: npm run bench (after sh scripts/build-cluster.sh; writes docs/benchmarks-podstart.md)
 */
import { type ChildProcess, execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiClient } from '../src/k8s/client.js';
import { loadKubeconfig } from '../src/k8s/kubeconfig.js';
import { LocalCluster } from '../src/sim/cluster.js';
import { applyCrds, kubectlFor, preparePlexus } from '../src/sim/cluster-plexus.js';
import { PAUSE_IMAGE } from '../src/sim/containerd.js';
import { addExampleLinks, repoRoot } from '../src/sim/simnode.js';
import { startDaemon, stopDaemon } from '../test/support/daemon.js';
import { plexusctlPath } from '../test/support/plugins.js';
import { besidePrevious } from './history.js';
import { quantile, rssMiB } from './stats.js';

const PODS = Number(process.env.BENCH_PODSTART_PODS ?? 100);
const CORES = cpus().length;
/** The second octet of the pods = IPs pools (10.<n>.0.1 up to PODS addresses). */
const EXACT_NET = 79;
const WHEREABOUTS = join(repoRoot(), '.tools', 'whereabouts', 'v0.9.2');
/** Spiderpool's published seconds for 1000 pods on 30 cores, as core-seconds per pod. */
const spider = (seconds: number): string => ((seconds * 30) / 1000).toFixed(2);
const NAMESPACE = 'default';

type PodJson = { metadata: { name: string }; status?: { conditions?: { type: string; status: string }[] } };

/** CPU seconds (user + system) a process has used so far. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** One round: PODS pods created in one request, each Ready time from a watch; then deleted and waited gone. */
async function round(
  api: ApiClient,
  kubectl: ReturnType<typeof kubectlFor>,
  label: string,
  networks: string | undefined,
  daemon: ChildProcess,
  count = PODS,
  mustAll = true,
): Promise<Record<string, number>> {
  const pods = Array.from({ length: count }, (_, i) => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: `ps-${label}-${i}`, namespace: NAMESPACE, labels: { bench: label }, ...(networks ? { annotations: { 'k8s.v1.cni.cncf.io/networks': networks } } : {}) },
    spec: { terminationGracePeriodSeconds: 0, containers: [{ name: 'c', image: PAUSE_IMAGE, imagePullPolicy: 'Never' }] },
  }));
  const ready = new Map<string, number>();
  const listed = await api.get<{ metadata: { resourceVersion: string } }>(`/api/v1/namespaces/${NAMESPACE}/pods?labelSelector=bench%3D${label}`);
  const watch = api.watch(`/api/v1/namespaces/${NAMESPACE}/pods?watch=1&labelSelector=bench%3D${label}&resourceVersion=${listed.metadata.resourceVersion}&timeoutSeconds=600`, (e) => {
    const pod = e.object as PodJson;
    if (!ready.has(pod.metadata.name) && pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')) ready.set(pod.metadata.name, performance.now());
  });
  const cpu0 = cpuSeconds(daemon.pid!);
  let peak = rssMiB(daemon.pid!);
  const sampler = setInterval(() => (peak = Math.max(peak, rssMiB(daemon.pid!))), 200);
  const t0 = performance.now();
  await kubectl(['create', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: pods }));
  const deadline = Date.now() + 600_000;
  while (ready.size < count && Date.now() < deadline) await sleep(100);
  const allReady = performance.now() - t0;
  const cpu = cpuSeconds(daemon.pid!) - cpu0;
  clearInterval(sampler);
  watch.abort();
  if (ready.size < count && mustAll) throw new Error(`${label}: only ${ready.size} of ${count} pods Ready after 10 min`);
  const latencies = [...ready.values()].map((t) => (t - t0) / 1000);
  const d0 = performance.now();
  await kubectl(['delete', 'pods', '-n', NAMESPACE, '-l', `bench=${label}`, '--wait=true', '--timeout=600s']);
  const deleted = (performance.now() - d0) / 1000;
  return { p50: quantile(latencies, 0.5), p99: quantile(latencies, 0.99), all: ready.size < count ? NaN : allReady / 1000, ready: ready.size, cpu, peak, deleted };
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'plexus-bench-podstart-'));
  const cluster = new LocalCluster({ dir: join(work, 'cluster') });
  const kubectl = kubectlFor(cluster);
  const links: string[] = [];
  let daemon: ChildProcess | undefined;
  let plain: Record<string, number> | undefined;
  let multi: Record<string, number> | undefined;
  const ipamRounds: Record<string, Record<string, number>> = {};
  let rssAtRest = 0;
  try {
    await cluster.up();
    links.push(...addExampleLinks());
    const kubeconfig = await preparePlexus(cluster, kubectl, work);
    // Two secondaries on one macvlan network with its own IPAM state (the host's is left alone).
    await kubectl(
      ['apply', '-f', '-'],
      JSON.stringify({
        apiVersion: 'k8s.cni.cncf.io/v1',
        kind: 'NetworkAttachmentDefinition',
        metadata: { name: 'bench-mv', namespace: NAMESPACE },
        spec: {
          config: JSON.stringify({
            cniVersion: '1.0.0',
            name: 'bench-mv',
            type: 'macvlan',
            master: 'plx-mv-master',
            mode: 'bridge',
            ipam: { type: 'host-local', dataDir: join(work, 'ipam'), ranges: [[{ subnet: '10.78.0.0/22' }]] },
          }),
        },
      }),
    );
    // Spiderpool's scenario: one macvlan secondary per pod, its address from Plexus IPAM or from
    // whereabouts (the real binary, v0.9.2, exec'd by macvlan from the runtime's CNI dir), in a pool of
    // exactly PODS addresses (pods = IPs) and in a /16 (plenty).
    await applyCrds(kubectl, [join(repoRoot(), 'crds'), join(WHEREABOUTS, 'crds')], ['ipchunks.ipam.plexus.network', 'iploans.ipam.plexus.network', 'ippools.whereabouts.cni.cncf.io']);
    copyFileSync(join(WHEREABOUTS, 'whereabouts'), join(cluster.cniBinDir, 'whereabouts'));
    const flatFile = join(work, 'whereabouts.conf');
    writeFileSync(flatFile, JSON.stringify({ datastore: 'kubernetes', kubernetes: { kubeconfig: cluster.adminKubeconfig } }));
    const last = `10.${EXACT_NET}.${Math.floor(PODS / 256)}.${PODS % 256}`;
    for (const [name, ipam] of [
      ['bench-pi-exact', { type: 'plexus-ipam', range: `10.${EXACT_NET}.0.0/16`, range_end: last, network_name: 'bench-pi-exact' }],
      ['bench-pi-plenty', { type: 'plexus-ipam', range: '10.76.0.0/16' }],
      ['bench-wa-exact', { type: 'whereabouts', range: `10.${EXACT_NET}.0.0/16`, range_end: last, network_name: 'bench-wa-exact', configuration_path: flatFile }],
      ['bench-wa-plenty', { type: 'whereabouts', range: '10.74.0.0/16', configuration_path: flatFile }],
    ] as const) {
      await kubectl(
        ['apply', '-f', '-'],
        JSON.stringify({
          apiVersion: 'k8s.cni.cncf.io/v1',
          kind: 'NetworkAttachmentDefinition',
          metadata: { name, namespace: NAMESPACE },
          spec: { config: JSON.stringify({ cniVersion: '1.0.0', name, type: 'macvlan', master: 'plx-mv-master', mode: 'bridge', ipam }) },
        }),
      );
    }
    const socket = join(work, 'plexus.sock');
    const cniDir = join(work, 'plexus');
    // The default install: the shim in the runtime's dirs, the node daemon serving it.
    daemon = await startDaemon(socket, ['--kubeconfig', kubeconfig, '--node-name', cluster.nodeName, '--cni-dir', cniDir, '--kubelet-dir', cluster.kubeletDir, '--log-level', 'warn']);
    execFileSync(plexusctlPath, [
      'install',
      '--cni-bin-dir',
      cluster.cniBinDir,
      '--cni-conf-dir',
      cluster.cniConfDir,
      '--kubeconfig',
      kubeconfig,
      '--cni-dir',
      cniDir,
      '--daemon-socket',
      socket,
      '--kubelet-dir',
      cluster.kubeletDir,
    ]);
    const api = new ApiClient(await loadKubeconfig(cluster.adminKubeconfig), 30_000);
    // One pod through first: the image is in the page cache and the node's caches are warm for both rounds.
    await round(api, kubectl, 'warm', 'bench-mv', daemon, 1);
    plain = await round(api, kubectl, 'plain', undefined, daemon);
    multi = await round(api, kubectl, 'multi', '[{"name":"bench-mv","interface":"net1"},{"name":"bench-mv","interface":"net2"}]', daemon);
    for (const [label, nad] of [
      ['plexus-ipam, pods = IPs', 'bench-pi-exact'],
      ['plexus-ipam, plenty', 'bench-pi-plenty'],
      ['whereabouts, pods = IPs', 'bench-wa-exact'],
      ['whereabouts, plenty', 'bench-wa-plenty'],
    ] as const) {
      await round(api, kubectl, `warm-${nad}`, nad, daemon, 1);
      // A baseline that cannot start every pod is reported as it is (Spiderpool's whereabouts failed at 845 of 1000).
      ipamRounds[label] = await round(api, kubectl, nad, nad, daemon, PODS, false);
    }
    // At rest: V8 gives back what the rounds' garbage took once the process has been idle a while.
    await sleep(30_000);
    rssAtRest = rssMiB(daemon.pid!);
  } finally {
    // Pods go while the daemon still serves their DELs.
    await kubectl(['delete', 'pods', '--all', '-n', NAMESPACE, '--wait=true', '--timeout=300s']).catch(() => undefined);
    await stopDaemon(daemon);
    await cluster.down();
    for (const l of links) {
      try {
        execFileSync('ip', ['link', 'del', l]);
      } catch {
        /* gone with its peer */
      }
    }
    rmSync(work, { recursive: true, force: true });
  }
  const load = loadavg();
  const row = (label: string, r: Record<string, number>) =>
    `| ${label} | ${r.p50!.toFixed(2)} | ${r.p99!.toFixed(2)} | ${r.all!.toFixed(1)} | ${r.deleted!.toFixed(1)} | ${r.cpu!.toFixed(2)} | ${r.peak!.toFixed(1)} |`;
  const table = [
    `# Pod start on the real node`,
    ``,
    `${new Date().toISOString().slice(0, 10)}, 2 cores, Node ${process.version}, load average ${load.map((l) => l.toFixed(2)).join(' ')}. The real node of \`plexusctl cluster\``,
    `(kube-apiserver, etcd, scheduler, controller-manager, kubelet on containerd 1.6, Kubernetes v1.37.2); Plexus installed as`,
    `by default: \`plexus-shim\` in the runtime's CNI dirs, \`plexusctl daemon\` (bin/plexusctl, deploy/'s flags) serving it.`,
    `${PODS} pods created in one request, node-density style; a pod's latency is from the create request to its Ready condition`,
    `seen by a watch. "2 secondaries": each pod also gets two macvlan interfaces (host-local IPAM), network-status written.`,
    `CPU and peak memory are the node daemon's over the round (create, start, until all Ready).`,
    ``,
    `| ${PODS} pods | ready p50 (s) | ready p99 (s) | all Ready (s) | all deleted (s) | daemon CPU (s) | daemon peak RSS (MiB) |`,
    `|---|---|---|---|---|---|---|`,
    row('no secondaries', plain!),
    row('2 secondaries each', multi!),
    ...Object.entries(ipamRounds).map(([label, r]) => row(`1 secondary, ${label}`, r)),
    ``,
    `2 secondaries ÷ none: p50 ${(multi!.p50! / plain!.p50!).toFixed(2)}×, p99 ${(multi!.p99! / plain!.p99!).toFixed(2)}×. The daemon at rest 30 s after the last round: ${rssAtRest.toFixed(1)} MiB.`,
    ``,
    `**Spiderpool's scenario.** Its published IPAM test creates 1000 pods at once on 10 nodes of 3 cores (30 cores) and times them`,
    `until all are Running: Spiderpool 182 s with plenty of addresses, 207 s with pods = IPs; whereabouts failed at 845 pods with pods = IPs`,
    `and took 2529 s with plenty. Scaled to this machine's work by core-seconds per pod (all Ready × cores ÷ pods: the same pods cost`,
    `the same CPU wherever they run; here the control plane shares the 2 cores, there it had 3 more nodes), Spiderpool's figures are`,
    `${spider(182)} and ${spider(207)} core-s per pod. Here, ${PODS} pods (this kubelet's max-pods is 110) with one secondary each on one node:`,
    ``,
    `| ${PODS} pods, 1 secondary | all Ready (s) | core-s per pod | ÷ Spiderpool's (${spider(182)} plenty, ${spider(207)} pods = IPs) |`,
    `|---|---|---|---|`,
    ...Object.entries(ipamRounds).map(([label, r]) => {
      const perPod = (r.all! * CORES) / PODS;
      if (Number.isNaN(perPod)) return `| ${label} | only ${r.ready} of ${PODS} Ready in 10 min | – | – |`;
      return `| ${label} | ${r.all!.toFixed(1)} | ${perPod.toFixed(3)} | ${(perPod / Number(spider(label.includes('pods = IPs') ? 207 : 182))).toFixed(3)} |`;
    }),
    ``,
    `The IPAM part of the same scenario on 10 simulated nodes (1000 addresses, 8-way) is in docs/benchmarks-ipam.md. This node is one`,
    `node: here every chunk is its own, so no loan is needed; loans between nodes are in that benchmark and in test/cluster/ipam.test.ts.`,
    `Multus thick could not run beside it here: the Go module proxy does not serve Multus (README, Speed).`,
    ``,
    `Beside the previous run:`,
    ``,
    ...besidePrevious(
      'podstart',
      {
        'ready p50, 2 secondaries ÷ none': multi!.p50! / plain!.p50!,
        'ready p99, 2 secondaries ÷ none': multi!.p99! / plain!.p99!,
        'daemon CPU s per pod with 2 secondaries': multi!.cpu! / PODS,
        'daemon peak RSS MiB': multi!.peak!,
        'all Ready, plexus-ipam pods = IPs ÷ whereabouts pods = IPs': ipamRounds['plexus-ipam, pods = IPs']!.all! / ipamRounds['whereabouts, pods = IPs']!.all!,
      },
      load,
      3,
    ),
    ``,
    `Reproduce: \`npm run bench\` (BENCH_PODSTART_PODS to change the count).`,
    ``,
  ].join('\n');
  writeFileSync(join(repoRoot(), 'docs', 'benchmarks-podstart.md'), table);
  process.stdout.write(`${table}\n`);
}

await main();
