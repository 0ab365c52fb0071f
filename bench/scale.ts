/**
 * The scale bench (`npm run bench:scale`, not in CI; docs/benchmarks-scale.md): what one node daemon
 * costs as the cluster grows, against the real kube-apiserver + etcd of `.tools/` with KWOK keeping N
 * simulated nodes (110 pods each, 1000 namespaces with a NAD, 100 MultiNetworkPolicies, IPAM chunks of
 * every node). For M of the nodes, side by side in the same run: Plexus's node daemon as deploy/ starts
 * it, the previous build's ("before", PLEXUS_BEFORE=<a built checkout>), and the real Multus thick
 * daemon v4.3.0 (scripts/build-scale.sh builds it from its source tree). Per daemon: RSS at rest and
 * peak, CPU at rest, watches, watch events during a churn of pods on other nodes, requests per 5 minutes
 * by component, verb and resource, time to ready; per cluster: kube-apiserver CPU and memory; then an
 * apiserver restart under the daemons and how their relists spread.
 * Env: PLEXUS_SCALE_NODES (default 10,100,1000), PLEXUS_SCALE_DAEMONS (10), PLEXUS_SCALE_WINDOW_S (300).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalCluster } from '../src/sim/cluster.js';
import { kubectlFor } from '../src/sim/cluster-plexus.js';
import { repoRoot } from '../src/sim/simnode.js';
import { besidePrevious } from './history.js';
import { statusMiB } from './stats.js';
import { apiserverRestart } from './scale-restart.js';
import { KWOK, MULTUS, NAMESPACES, PODS_PER_NODE, POLICIES, ScaleRig, nodeName } from './scale-rig.js';

const STEPS = (process.env.PLEXUS_SCALE_NODES ?? '10,100,1000').split(',').map(Number);
const M = Number(process.env.PLEXUS_SCALE_DAEMONS ?? '10');
const WINDOW_S = Number(process.env.PLEXUS_SCALE_WINDOW_S ?? '300');
const CHURN_S = 60;
const CHURN_PER_S = 20;
const BEFORE = process.env.PLEXUS_BEFORE;

type Kind = 'plexus' | 'before' | 'multus';
interface Daemon {
  kind: Kind;
  node: string;
  proc: ChildProcess;
  started: number;
  ready?: number;
  metricsPort?: number;
  log: string;
  socket: string;
}
interface Sample {
  rssMiB: number;
  peakMiB: number;
  cpuPerS: number;
  readyS: number;
  watches?: number;
  /** Pod and namespace watch events (not bookmarks) during the churn: what churn elsewhere costs the daemon. */
  events?: number;
  /** Every watch event during the churn, by resource (the IPAM leader's Node watch sees KWOK's heartbeats). */
  eventsBy?: Record<string, number>;
  requests?: Record<string, number>;
}

const cpuTicks = (pid: number) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return Number(f[11]) + Number(f[12]);
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Prometheus text → { 'name{labels}': value }. */
async function scrape(port: number): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}
const sum = (m: Map<string, number>, prefix: string, test: (key: string) => boolean = () => true) => [...m].filter(([k]) => k.startsWith(prefix) && test(k)).reduce((n, [, v]) => n + v, 0);

/** Every daemon started, stopped in the end whatever happened. */
const running: Daemon[] = [];

async function startDaemons(rig: ScaleRig, kind: Kind, base: number): Promise<Daemon[]> {
  const out: Daemon[] = [];
  for (let i = 0; i < M; i++) {
    const node = nodeName(i);
    const { kubeconfig, token } = await rig.nodeCredential(node);
    const dir = rig.nodeDir(node, kind);
    const log = join(dir, 'log');
    let proc: ChildProcess;
    if (kind === 'multus') {
      // The thick daemon as its DaemonSet runs it: in-cluster credentials (the token and CA at the fixed
      // service-account path, in a private mount namespace), MULTUS_NODE_NAME, its config file.
      writeFileSync(join(dir, 'token'), token);
      writeFileSync(join(dir, 'ca.crt'), readFileSync(join(rig.cluster.opts.dir, 'pki', 'ca.crt')));
      writeFileSync(join(dir, '10-kwok.conf'), JSON.stringify({ cniVersion: '0.3.1', name: 'kwok', type: 'bridge' }));
      writeFileSync(
        join(dir, 'daemon-config.json'),
        JSON.stringify({ cniVersion: '0.3.1', logLevel: 'error', logToStderr: true, multusAutoconfigDir: dir, multusConfigFile: 'auto', socketDir: join(dir, 'run'), metricsPort: base + i }),
      );
      const sa = '/run/secrets/kubernetes.io/serviceaccount';
      // A private tmpfs on /run holds them: nothing is written on the host's /run.
      const script = `mount -t tmpfs none /run && mkdir -p ${sa} && cp ${dir}/token ${dir}/ca.crt ${sa}/ && exec ${join(MULTUS, 'multus-daemon')} -config ${join(dir, 'daemon-config.json')}`;
      proc = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script], {
        env: { ...process.env, MULTUS_NODE_NAME: node, KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: '16443' },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
    } else {
      const bin = kind === 'plexus' ? join(repoRoot(), 'bin', 'plexusctl') : join(BEFORE!, 'bin', 'plexusctl');
      // deploy/plexus-daemon.yaml's flags, with this machine's paths.
      const args = [
        'daemon',
        `--socket=${join(dir, 'plexus.sock')}`,
        `--node-name=${node}`,
        `--metrics-address=127.0.0.1:${base + i}`,
        `--cni-dir=${dir}/cni`,
        '--nad-namespaces=kube-system',
        '--max-rss=100',
        `--kubeconfig=${kubeconfig}`,
      ];
      proc = spawn(bin, kind === 'plexus' ? [...args, '--namespace=kube-system'] : args, { stdio: ['ignore', 'ignore', 'pipe'] });
    }
    proc.stderr!.on('data', (c: Buffer) => writeFileSync(log, c, { flag: 'a' }));
    out.push({ kind, node, proc, started: Date.now(), metricsPort: base + i, log, socket: join(dir, 'plexus.sock') });
    running.push(out.at(-1)!);
  }
  // Ready: Plexus once its caches synced and policy adopted its sandboxes (its log says so); Multus once its socket is there.
  const deadline = Date.now() + 300_000;
  for (const d of out) {
    for (;;) {
      const text = existsSync(d.log) ? readFileSync(d.log, 'utf8') : '';
      const ready =
        d.kind === 'multus'
          ? existsSync(join(rig.nodeDir(d.node, 'multus'), 'run', 'multus.sock'))
          : text.includes('informer caches of the node pods') && text.includes('sandboxes of the node adopted');
      if (ready) break;
      if (Date.now() > deadline || d.proc.exitCode !== null) throw new Error(`${d.kind} daemon of ${d.node} not ready: ${text.slice(-2000)}`);
      await sleep(100);
    }
    d.ready = Date.now();
  }
  return out;
}

async function stopDaemons(ds: Daemon[]): Promise<void> {
  await Promise.all(
    ds.map(
      (d) =>
        new Promise<void>((resolve) => {
          if (d.proc.exitCode !== null || d.proc.signalCode !== null) return resolve();
          d.proc.once('exit', () => resolve());
          d.proc.kill('SIGTERM');
        }),
    ),
  );
}

/** At rest for the window, then a churn on other nodes: what each daemon cost. */
async function measure(rig: ScaleRig, groups: Daemon[][], apiserverPid: number): Promise<{ samples: Map<Kind, Sample[]>; apiserver: { cpu: number; rssMiB: number } }> {
  await sleep(20_000);
  const all = groups.flat();
  const pidOf = (d: Daemon) => d.proc.pid!;
  const cpu0 = all.map((d) => cpuTicks(pidOf(d)));
  const api0 = cpuTicks(apiserverPid);
  const m0 = await Promise.all(all.map((d) => (d.kind === 'plexus' ? scrape(d.metricsPort!) : Promise.resolve(new Map<string, number>()))));
  const t0 = Date.now();
  await sleep(WINDOW_S * 1000);
  const seconds = (Date.now() - t0) / 1000;
  const cpu1 = all.map((d) => cpuTicks(pidOf(d)));
  const api1 = cpuTicks(apiserverPid);
  const m1 = await Promise.all(all.map((d) => (d.kind === 'plexus' ? scrape(d.metricsPort!) : Promise.resolve(new Map<string, number>()))));
  const rest = all.map((d) => statusMiB(pidOf(d), 'VmRSS:'));
  // Churn of pods no policy names, on nodes without a daemon.
  await rig.churn(CHURN_S, M, CHURN_PER_S);
  await sleep(5000);
  const m2 = await Promise.all(all.map((d) => (d.kind === 'plexus' ? scrape(d.metricsPort!) : Promise.resolve(new Map<string, number>()))));
  const samples = new Map<Kind, Sample[]>();
  all.forEach((d, i) => {
    const requests: Record<string, number> = {};
    for (const [k, v] of m1[i]!) {
      if (!k.startsWith('plexus_api_requests_total{')) continue;
      const delta = v - (m0[i]!.get(k) ?? 0);
      if (delta) requests[k.slice('plexus_api_requests_total'.length)] = Math.round((delta * 300) / seconds);
    }
    const notBookmark = (k: string) => !k.includes('type="BOOKMARK"');
    const churned = (k: string) => notBookmark(k) && (k.includes('resource="pods"') || k.includes('resource="namespaces"'));
    const eventsBy: Record<string, number> = {};
    for (const [k, v] of m2[i]!) {
      if (!k.startsWith('plexus_api_watch_events_total{') || !notBookmark(k)) continue;
      const delta = v - (m1[i]!.get(k) ?? 0);
      const resource = /resource="([^"]*)"/.exec(k)?.[1] ?? '?';
      if (delta) eventsBy[resource] = (eventsBy[resource] ?? 0) + delta;
    }
    const sample: Sample = {
      rssMiB: rest[i]!,
      peakMiB: statusMiB(pidOf(d), 'VmHWM:'),
      cpuPerS: (cpu1[i]! - cpu0[i]!) / 100 / seconds,
      readyS: (d.ready! - d.started) / 1000,
      ...(d.kind === 'plexus'
        ? {
            watches: sum(m1[i]!, 'plexus_api_watches{'),
            events: sum(m2[i]!, 'plexus_api_watch_events_total{', churned) - sum(m1[i]!, 'plexus_api_watch_events_total{', churned),
            eventsBy,
            requests,
          }
        : {}),
    };
    samples.set(d.kind, [...(samples.get(d.kind) ?? []), sample]);
  });
  return { samples, apiserver: { cpu: (api1 - api0) / 100 / seconds, rssMiB: statusMiB(apiserverPid, 'VmRSS:') } };
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

async function main(): Promise<void> {
  if (!existsSync(KWOK)) throw new Error('KWOK is not built: sh scripts/build-scale.sh [multus source tree]');
  const kinds: Kind[] = ['plexus', ...(BEFORE ? (['before'] as const) : []), ...(existsSync(join(MULTUS, 'multus-daemon')) ? (['multus'] as const) : [])];
  const work = mkdtempSync(join(tmpdir(), 'plexus-bench-scale-'));
  const cluster = new LocalCluster({ dir: join(work, 'cluster'), kubelet: false });
  const rig = new ScaleRig(cluster, kubectlFor(cluster), work);
  const rows: string[] = [];
  const figures: Record<string, number> = {};
  const notes: string[] = [];
  let restart: Awaited<ReturnType<typeof apiserverRestart>> | undefined;
  try {
    await cluster.up();
    await rig.setUp();
    rig.startKwok();
    for (const n of STEPS) {
      const t = Date.now();
      try {
        await rig.growTo(n, (msg) => console.log(`N=${n}: ${msg}`));
      } catch (err) {
        notes.push(`Stopped growing at N=${rig.nodes} on the way to ${n}: ${(err as Error).message}`);
        break;
      }
      console.log(`N=${n}: cluster grown in ${Math.round((Date.now() - t) / 1000)} s; starting ${kinds.join(', ')} daemons`);
      const groups = await Promise.all(kinds.map((k, i) => startDaemons(rig, k, 19100 + 100 * i)));
      const { samples, apiserver } = await measure(rig, groups, cluster.status().components['kube-apiserver']!.pid);
      for (const k of kinds) {
        const s = samples.get(k)!;
        const reqs = s.flatMap((x) => Object.values(x.requests ?? {}));
        rows.push(
          `| ${n} | ${n * PODS_PER_NODE} | ${k} | ${mean(s.map((x) => x.rssMiB)).toFixed(1)} | ${Math.max(...s.map((x) => x.peakMiB)).toFixed(1)} | ${(mean(s.map((x) => x.cpuPerS)) * 1000).toFixed(1)} | ${mean(s.map((x) => x.readyS)).toFixed(1)} | ${k === 'plexus' ? mean(s.map((x) => x.watches ?? 0)).toFixed(1) : '–'} | ${k === 'plexus' ? mean(s.map((x) => x.events ?? 0)).toFixed(1) : '–'} | ${k === 'plexus' ? (reqs.reduce((a, b) => a + b, 0) / s.length).toFixed(1) : '–'} |`,
        );
        figures[`${k} RSS MiB at N=${n}`] = mean(s.map((x) => x.rssMiB));
        if (k === 'plexus') {
          figures[`plexus requests/5 min at N=${n}`] = reqs.reduce((a, b) => a + b, 0) / s.length;
          figures[`plexus churn events at N=${n}`] = mean(s.map((x) => x.events ?? 0));
          const eventsBy: Record<string, number> = {};
          for (const x of s) for (const [r, v] of Object.entries(x.eventsBy ?? {})) eventsBy[r] = (eventsBy[r] ?? 0) + v;
          notes.push(
            `N=${n}, watch events (not bookmarks) all Plexus daemons received during the churn, by resource: ${
              Object.entries(eventsBy)
                .map(([r, v]) => `${r} ${v}`)
                .join('; ') || 'none'
            }`,
          );
          const byKind: Record<string, number> = {};
          for (const x of s) for (const [key, v] of Object.entries(x.requests ?? {})) byKind[key] = (byKind[key] ?? 0) + v / s.length;
          notes.push(
            `N=${n}, Plexus requests per daemon per 5 min at rest: ${
              Object.entries(byKind)
                .map(([key, v]) => `${key} ${v.toFixed(1)}`)
                .join('; ') || 'none'
            }`,
          );
        }
      }
      rows.push(`| ${n} | | kube-apiserver | ${apiserver.rssMiB.toFixed(0)} | | ${(apiserver.cpu * 1000).toFixed(0)} | | | | |`);
      const last = n === STEPS.at(-1);
      if (last) {
        try {
          const lists = async (d: Daemon) => sum(await scrape(d.metricsPort!), 'plexus_api_requests_total{', (k) => k.includes('verb="list"'));
          restart = await apiserverRestart(
            cluster,
            groups[0]!.map((d) => ({ socket: d.socket, lists: () => lists(d) })),
            work,
          );
        } catch (err) {
          notes.push(`kube-apiserver restarted at N=${n} did not come back in time: ${(err as Error).message.split('\n')[0]}`);
        }
      }
      await Promise.all(groups.map(stopDaemons));
      // Written after every step: a later step that fails leaves the figures of those before it.
      report(kinds, rows, notes, figures, restart, false);
    }
  } finally {
    await stopDaemons(running);
    rig.stopKwok();
    await cluster.down().catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
  }
  report(kinds, rows, notes, figures, restart, true);
}

function report(kinds: Kind[], rows: string[], notes: string[], figures: Record<string, number>, restart: Awaited<ReturnType<typeof apiserverRestart>> | undefined, last: boolean): void {
  const all = [...notes];
  if (restart) {
    figures['apiserver restart: relist spread s'] = restart.spreadS;
    all.push(
      `kube-apiserver restarted (2 s down) under ${M} daemons: ${restart.relisted} listed again, the first ${restart.firstS.toFixed(1)} s and the last ${restart.lastS.toFixed(1)} s after the restart began (spread ${restart.spreadS.toFixed(1)} s).`,
      `IPAM ADDs sent to each daemon once a second from the stop until all had listed again: ${restart.adds.sent} sent, ${restart.adds.answered} answered at once, ${restart.adds.retriedOk} failed and then succeeded when tried again, ${restart.adds.failedForGood} failed for good (answers by code: ${Object.entries(
        restart.adds.codes,
      )
        .map(([c, v]) => `${c}: ${v}`)
        .join(', ')}).`,
    );
  }
  const la = loadavg();
  const md = [
    '# Scale: what one node daemon costs as the cluster grows',
    '',
    `Run by \`npm run bench:scale\` (bench/scale.ts) on ${new Date().toISOString().slice(0, 10)}: the real kube-apiserver v1.37.2 + etcd of .tools/, KWOK v0.8.0 keeping the nodes Ready and their pods Running, ${PODS_PER_NODE} pods a node, ${NAMESPACES} namespaces with a NAD each, ${POLICIES} MultiNetworkPolicies, 4 IPAM chunks a node. ${M} daemons of each kind for the first ${M} nodes, side by side: ${kinds.join(', ')}. At rest for ${WINDOW_S} s, then ${CHURN_S} s of churn (${CHURN_PER_S} pods/s created and deleted on other nodes, labels no policy names). Load average at the end: ${la.map((l) => l.toFixed(2)).join(' ')}.`,
    '',
    '| nodes | cluster pods | daemon | RSS at rest MiB (mean) | peak MiB (max) | CPU at rest (ms/s) | ready after start (s) | watches | churn events received | requests / 5 min |',
    '|---|---|---|---|---|---|---|---|---|---|',
    ...rows,
    '',
    ...all.map((n) => `- ${n}`),
    '',
    ...(last ? ['## Beside the previous run', '', ...besidePrevious('scale', figures, la, 1), ''] : []),
  ].join('\n');
  writeFileSync(join(repoRoot(), 'docs', 'benchmarks-scale.md'), md);
  if (last) console.log(md);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
