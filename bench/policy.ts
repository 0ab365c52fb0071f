/**
 * MultiNetworkPolicy enforcement on one node: a real kube-apiserver (`plexusctl cluster`, control
 * plane only), one node daemon, 1000 pods with a real netns and a macvlan secondary each (added through
 * the shim and the daemon, as a runtime adds them). Figures:
 * - a policy change to the rules in place (every selected pod's table replaced) for 1, 100 and 1000
 *   selected pods, from the API request to the daemon's last table; baseline: the same tables put
 *   into the same netns by nft alone (4 at a time, as the daemon does), in the same run;
 * - daemon CPU and memory with 1000 pods and 100 policies: creating them, then a peer's label change;
 * - ADD latency with a policy selecting the new pod against without one (baseline), in the same run.
 * Run: npm run bench (writes docs/benchmarks-policy.md)
 */
import { execFileSync, spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiClient } from '../src/k8s/client.js';
import { loadKubeconfig } from '../src/k8s/kubeconfig.js';
import { rulesForPod, worldOf } from '../src/policy/compute.js';
import { parsePolicy, parsePolicyPod } from '../src/policy/model.js';
import { applyTable, findNft, renderTable } from '../src/policy/nft.js';
import { LocalCluster } from '../src/sim/cluster.js';
import { applyCrds, kubectlFor } from '../src/sim/cluster-plexus.js';
import { repoRoot } from '../src/sim/simnode.js';
import { pollUntil } from '../src/util/poll.js';
import { type DaemonProcess, startDaemon, stopDaemon } from '../test/support/daemon.js';
import { besidePrevious } from './history.js';
import { quantile, rssMiB } from './stats.js';

const PODS = 1000;
const NODE = 'bench-node';
const NS = 'bench';
const PREFIX = 'plxbp';

/** Seconds of CPU (user + system) a process has used. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

async function main(): Promise<void> {
  const nft = findNft();
  if (!nft) throw new Error('nft is missing: sh scripts/setup.sh');
  const work = mkdtempSync(join(tmpdir(), 'plexus-bench-policy-'));
  const cluster = new LocalCluster({ dir: join(work, 'cluster'), kubelet: false });
  const kubectl = kubectlFor(cluster);
  const bin = join(work, 'bin');
  const master = `${PREFIX}m`;
  let daemon: DaemonProcess | undefined;
  const netns: string[] = [];
  const change: Record<string, { seconds: number; baseline: number }> = {};
  let cpu: Record<string, number> = {};
  let adds: Record<string, number> = {};
  try {
    await cluster.up();
    await applyCrds(kubectl, [join(repoRoot(), 'crds')], ['multi-networkpolicies.k8s.cni.cncf.io', 'network-attachment-definitions.k8s.cni.cncf.io']);
    const api = new ApiClient(await loadKubeconfig(cluster.adminKubeconfig), 60_000);
    execFileSync('ip', ['link', 'add', master, 'type', 'veth', 'peer', 'name', `${master}p`]);
    for (const l of [master, `${master}p`]) execFileSync('ip', ['link', 'set', l, 'up']);
    const items: object[] = [
      { apiVersion: 'v1', kind: 'Node', metadata: { name: NODE } },
      { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } },
      {
        apiVersion: 'k8s.cni.cncf.io/v1',
        kind: 'NetworkAttachmentDefinition',
        metadata: { name: 'mv', namespace: NS },
        spec: {
          config: JSON.stringify({ cniVersion: '1.0.0', name: 'mv', type: 'macvlan', master, mode: 'bridge', ipam: { type: 'host-local', subnet: '10.80.0.0/16', dataDir: join(work, 'host-local') } }),
        },
      },
    ];
    await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items }));
    await pollUntil(
      'the default service account',
      async () =>
        await kubectl(['get', 'serviceaccount', '-n', NS, 'default']).then(
          () => true,
          () => undefined,
        ),
      60_000,
    );
    const podObject = (i: number, extra: Record<string, string> = {}) => ({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: `p${i}`, namespace: NS, labels: { team: `t${i % 100}`, ...(i < 1 ? { g1: 'yes' } : {}), ...(i < 100 ? { g100: 'yes' } : {}), g1000: 'yes', ...extra } },
      spec: { nodeName: NODE, containers: [{ name: 'c', image: 'pause', ports: [{ name: 'web', containerPort: 80 }] }] },
    });
    for (let i = 0; i < PODS; i += 250) await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: Array.from({ length: 250 }, (_, j) => podObject(i + j)) }));
    mkdirSync(bin);
    copyFileSync(join(repoRoot(), 'native', 'plexus-shim'), join(bin, 'plexus-shim'));
    writeFileSync(join(work, 'loopback.conf'), JSON.stringify({ cniVersion: '1.0.0', name: 'cluster', type: 'loopback' }));
    const socket = join(work, 'daemon.sock');
    daemon = await startDaemon(socket, ['--kubeconfig', cluster.adminKubeconfig, '--node-name', NODE, '--cni-dir', join(work, 'cni'), '--log-level', 'info', '--max-rss', '1024']);
    const metricsUrl = await pollUntil('the metrics address', async () => daemon!.logs.find((l) => l.msg === 'metrics')?.url as string | undefined, 10_000);
    const syncs = async () => Number(/^plexus_policy_sync_duration_seconds_count (\d+)/m.exec(await (await fetch(metricsUrl)).text())?.[1] ?? 0);
    const add = (i: number, command = 'ADD') =>
      new Promise<number>((resolve, reject) => {
        const t0 = performance.now();
        const child = spawn(join(bin, 'plexus-shim'), [], {
          env: {
            CNI_COMMAND: command,
            CNI_CONTAINERID: `bp-${i}`,
            CNI_NETNS: `/var/run/netns/${PREFIX}${i}`,
            CNI_IFNAME: 'eth0',
            CNI_PATH: `${bin}:/usr/lib/cni`,
            CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${NS};K8S_POD_NAME=p${i}`,
          },
        });
        let out = '';
        child.stdout.on('data', (c: Buffer) => (out += c.toString()));
        child.on('close', (status) => (status === 0 ? resolve(performance.now() - t0) : reject(new Error(`${command} p${i}: ${out}`))));
        child.stdin.end(
          JSON.stringify({
            cniVersion: '1.0.0',
            name: 'plexus',
            type: 'plexus-shim',
            daemonSocket: socket,
            clusterNetwork: join(work, 'loopback.conf'),
            binDir: bin,
            cniDir: join(work, 'cni'),
            capabilities: { 'io.kubernetes.cri.pod-annotations': true },
            runtimeConfig: { 'io.kubernetes.cri.pod-annotations': { 'k8s.v1.cni.cncf.io/networks': 'mv' } },
          }),
        );
      });
    const newNetns = (i: number) => {
      execFileSync('ip', ['netns', 'add', `${PREFIX}${i}`]);
      netns.push(`${PREFIX}${i}`);
    };
    let next = 0;
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (next < PODS) {
          const i = next++;
          newNetns(i);
          await add(i);
        }
      }),
    );
    // Every pod's network-status is in the API (the peers' addresses come from it).
    const listPods = async () => (await api.get<{ items: unknown[] }>(`/api/v1/namespaces/${NS}/pods`)).items.map(parsePolicyPod);
    await pollUntil('network-status of every pod', async () => (await listPods()).filter((p) => p.networks.some((n) => n.ips.length)).length >= PODS || undefined, 120_000);

    /** Waits until the daemon has replaced `n` more tables than `before`, then until it is quiet. */
    const syncedBy = async (before: number, n: number) => pollUntil(`${n} tables`, async () => ((await syncs()) >= before + n ? performance.now() : undefined), 300_000, 5);
    const policy = (name: string, spec: object) => ({
      apiVersion: 'k8s.cni.cncf.io/v1beta2',
      kind: 'MultiNetworkPolicy',
      metadata: { name, namespace: NS, annotations: { 'k8s.v1.cni.cncf.io/policy-for': 'mv' } },
      spec,
    });
    const mnpPath = `/apis/k8s.cni.cncf.io/v1beta2/namespaces/${NS}/multi-networkpolicies`;
    // The peers of the change policies: the 10 pods of team t1.
    const changeSpec = (k: number) => ({ podSelector: { matchLabels: { [`g${k}`]: 'yes' } }, ingress: [{ from: [{ podSelector: { matchLabels: { team: 't1' } } }], ports: [{ port: 'web' }] }] });
    for (const k of [1, 100, 1000]) {
      const before = await syncs();
      const t0 = performance.now();
      await api.post(mnpPath, policy(`change-${k}`, changeSpec(k)));
      const t1 = await syncedBy(before, k);
      // Baseline: the same tables into the same netns, by nft alone, 4 at a time.
      const pods = await listPods();
      const world = worldOf([parsePolicy(policy(`change-${k}`, changeSpec(k)))], pods, [{ name: NS, labels: {} }]);
      const selected = pods.filter((p) => p.labels[`g${k}`] === 'yes');
      const tables = selected.map((p) => renderTable(rulesForPod(world, p)));
      const b0 = performance.now();
      let j = 0;
      await Promise.all(
        Array.from({ length: 4 }, async () => {
          while (j < selected.length) {
            const n = j++;
            await applyTable(nft, `/var/run/netns/${PREFIX}${selected[n]!.name.slice(1)}`, tables[n]!);
          }
        }),
      );
      change[`${k}`] = { seconds: (t1 - t0) / 1000, baseline: (performance.now() - b0) / 1000 };
      const removed = await syncs();
      await api.delete(`${mnpPath}/change-${k}`);
      await syncedBy(removed, k);
    }

    // 100 policies over the 1000 pods: each team's 10 pods take ingress from the next team and from a
    // block, and send to the pods of two teams and a block.
    const cpu0 = cpuSeconds(daemon.pid!);
    const before100 = await syncs();
    const t100 = performance.now();
    for (let t = 0; t < 100; t++) {
      await api.post(
        mnpPath,
        policy(`team-${t}`, {
          podSelector: { matchLabels: { team: `t${t}` } },
          policyTypes: ['Ingress', 'Egress'],
          ingress: [
            {
              from: [{ podSelector: { matchLabels: { team: `t${(t + 1) % 100}` } } }, { ipBlock: { cidr: '10.99.0.0/16', except: ['10.99.1.0/24'] } }],
              ports: [{ port: 'web' }, { protocol: 'UDP', port: 5000, endPort: 5100 }],
            },
          ],
          egress: [{ to: [{ podSelector: { matchExpressions: [{ key: 'team', operator: 'In', values: [`t${(t + 2) % 100}`, `t${(t + 3) % 100}`] }] } }] }],
        }),
      );
    }
    await syncedBy(before100, PODS);
    // Quiet: no table replaced for a second.
    let last = await syncs();
    for (;;) {
      await new Promise((r) => setTimeout(r, 1000));
      const now = await syncs();
      if (now === last) break;
      last = now;
    }
    const created = (performance.now() - t100) / 1000 - 1;
    const cpuCreate = cpuSeconds(daemon.pid!) - cpu0;
    // A peer's label change: pod p5 (team t5) becomes team t50; the pods whose policies name t5 or t50 follow.
    const cpu1 = cpuSeconds(daemon.pid!);
    const beforeLabel = await syncs();
    const l0 = performance.now();
    await api.patch(`/api/v1/namespaces/${NS}/pods/p5`, { metadata: { labels: { team: 't50' } } });
    const l1 = await syncedBy(beforeLabel, 1);
    await new Promise((r) => setTimeout(r, 1000));
    const labelSyncs = (await syncs()) - beforeLabel;
    const cpuLabel = cpuSeconds(daemon.pid!) - cpu1;
    const cpuIdle0 = cpuSeconds(daemon.pid!);
    await new Promise((r) => setTimeout(r, 10_000));
    const cpuIdle = (cpuSeconds(daemon.pid!) - cpuIdle0) / 10;
    cpu = { created, cpuCreate, labelMs: l1 - l0, labelSyncs, cpuLabel, cpuIdle, rss: rssMiB(daemon.pid!) };

    // ADD latency: 40 new pods no policy selects (baseline), 40 that one selects (a deny-all both ways).
    await api.post(mnpPath, policy('new-pods', { podSelector: { matchLabels: { fresh: 'with' } }, policyTypes: ['Ingress', 'Egress'] }));
    await kubectl(['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'List', items: Array.from({ length: 80 }, (_, j) => podObject(PODS + j, { fresh: j % 2 ? 'with' : 'without' })) }));
    await new Promise((r) => setTimeout(r, 2000));
    const times: { with: number[]; without: number[] } = { with: [], without: [] };
    for (let j = 0; j < 80; j++) {
      newNetns(PODS + j);
      times[j % 2 ? 'with' : 'without'].push(await add(PODS + j));
    }
    adds = { without: quantile(times.without, 0.5), with: quantile(times.with, 0.5), withP99: quantile(times.with, 0.99), withoutP99: quantile(times.without, 0.99) };
    // The selected ones really have their table.
    const t = execFileSync('ip', ['netns', 'exec', `${PREFIX}${PODS + 1}`, 'nft', 'list', 'table', 'inet', 'plexus_policy'], { encoding: 'utf8' });
    if (!t.includes('bench/new-pods')) throw new Error('a selected new pod has no table');
  } finally {
    // What the daemon complained about (nothing, in a good run): by message.
    const warnings = new Map<string, number>();
    for (const l of daemon?.logs ?? []) if (Number(l.level) >= 40) warnings.set(String(l.msg), (warnings.get(String(l.msg)) ?? 0) + 1);
    for (const [msg, n] of warnings) process.stderr.write(`daemon warning ×${n}: ${msg}\n`);
    await stopDaemon(daemon);
    await cluster.down();
    for (const n of netns) execFileSync('ip', ['netns', 'del', n], { stdio: 'ignore' });
    execFileSync('ip', ['link', 'del', master], { stdio: 'ignore' });
    rmSync(work, { recursive: true, force: true });
  }
  const load = loadavg();
  const figures: Record<string, number> = {};
  for (const [k, v] of Object.entries(change)) figures[`change → rules, ${k} pod(s), to nft alone`] = v.seconds / v.baseline;
  figures['ADD with a policy, to ADD without (p50)'] = adds.with! / adds.without!;
  const md = [
    '# MultiNetworkPolicy: time to rules, daemon CPU, ADD overhead',
    '',
    `${new Date().toISOString().slice(0, 10)}, 2 cores, Node ${process.version}, load average ${load.map((l) => l.toFixed(2)).join(' ')}. One kube-apiserver v1.37.2 with etcd`,
    '(`plexusctl cluster`, control plane only), one node daemon, 1000 pods on its node, each with a real netns and a macvlan',
    'secondary added through plexus-shim and the daemon. `npm run bench` (bench/policy.ts). How it works: [policy.md](policy.md).',
    '',
    '## A policy change to the rules in place',
    '',
    'From the API request creating a policy to the last selected pod’s table replaced (the daemon’s',
    '`plexus_policy_sync_duration_seconds` count), and as a baseline the same tables put into the same netns by nft alone,',
    '4 at a time as the daemon does. The policy takes ingress from the 10 pods of one team on a named port.',
    '',
    '| selected pods | change → rules (s) | nft alone (s) | ratio |',
    '|---|---|---|---|',
    ...Object.entries(change).map(([k, v]) => `| ${k} | ${v.seconds.toFixed(3)} | ${v.baseline.toFixed(3)} | ${(v.seconds / v.baseline).toFixed(2)} |`),
    '',
    'Each table is one nft transaction in the pod’s netns: its cost is nft’s own start-up and commit. For 1 pod the watch',
    'delivery and the API request are most of the time.',
    '',
    '## 1000 pods × 100 policies',
    '',
    'Each of 100 teams (10 pods each) gets a policy for both directions: ingress from the next team and an ipBlock with an',
    'except, on a named port and a UDP range; egress to two other teams.',
    '',
    '| | |',
    '|---|---|',
    `| 100 policies created → all 1000 tables in place | ${cpu.created!.toFixed(1)} s |`,
    `| daemon CPU for that | ${cpu.cpuCreate!.toFixed(1)} s |`,
    `| a peer’s label changed (p5: team t5 → t50) → first table replaced | ${cpu.labelMs!.toFixed(0)} ms |`,
    `| tables replaced for it (only the pods whose policies name t5 or t50, and p5) | ${cpu.labelSyncs} |`,
    `| daemon CPU for it | ${cpu.cpuLabel!.toFixed(2)} s |`,
    `| daemon CPU at rest (per second) | ${(cpu.cpuIdle! * 1000).toFixed(1)} ms |`,
    `| daemon resident memory | ${cpu.rss!.toFixed(0)} MiB |`,
    '',
    'A pod’s table holds its peers’ addresses: a pod that starts, goes or changes labels has the tables of the pods whose',
    'policies name it replaced (here the 30 pods of three teams per new pod). 1000 pods on one node is 9× kubelet’s default',
    'max-pods; the DaemonSet’s memory limit (128 MiB, `--max-rss=100`) is sized for 110.',
    '',
    '## ADD overhead',
    '',
    'The ADD of a new pod (macvlan + host-local through the shim and the daemon), 40 that a policy selects (deny-all both',
    'ways: the table is installed before the ADD returns) and 40 that none selects (no nft run at all), alternating, on the',
    'node above (1000 pods, 100 policies: each new pod is a peer whose address goes into 30 other tables meanwhile).',
    '',
    '| | p50 (ms) | p99 (ms) |',
    '|---|---|---|',
    `| no policy selects the pod | ${adds.without!.toFixed(1)} | ${adds.withoutP99!.toFixed(1)} |`,
    `| a policy selects it | ${adds.with!.toFixed(1)} | ${adds.withP99!.toFixed(1)} |`,
    `| overhead | ${(adds.with! - adds.without!).toFixed(1)} | |`,
    '',
    '## Beside the previous run',
    '',
    ...besidePrevious('policy', figures, load),
    '',
  ].join('\n');
  writeFileSync(join(repoRoot(), 'docs', 'benchmarks-policy.md'), md);
  process.stdout.write(md);
}

await main();
