/**
 * Meta plugin overhead: ADD and DEL of a pod with 0, 1 and 3 secondaries through `plexus`, against
 * the same delegate lists exec'd directly (as a runtime would run them), alternating in one run.
 * Reports medians and their difference, and the API requests of one ADD counted by the API double.
 * Run: npm run bench  (writes docs/benchmarks-meta.md)
 */
import { execFileSync, spawn } from 'node:child_process';
import type { RunnerJob, RunnerTimes } from './runtime-runner.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import type { PluginRequest, PluginStdinConf } from '../src/cni/skel.js';
import { ClusterCache } from '../src/daemon/cache.js';
import { loadKubeconfig } from '../src/k8s/kubeconfig.js';
import { CniDaemon, DEFAULT_LIMITS } from '../src/daemon/server.js';
import type { Observer } from '../src/meta/context.js';
import { MetaInvocation } from '../src/meta/invocation.js';
import { planAttachments } from '../src/meta/plan.js';
import { SimNode, podEnv, repoRoot } from '../src/sim/simnode.js';
import { spawnCollect } from '../src/util/native.js';
import { besidePrevious } from './history.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 150);
/** The one-shot plugin (~120 ms per exec) is measured in the first this many runs only. */
const ONE_SHOT_RUNS = Math.min(RUNS, Number(process.env.BENCH_ONE_SHOT_RUNS ?? 40));
/** Unrecorded runs first, per pod shape: the daemon's caches and JIT, the page cache. */
const WARMUP = 10;
const POD_LIFE_MS = 50;
const SCENARIOS: [string, string][] = [
  ['0 secondaries', ''],
  ['1 secondary', 'macvlan-a'],
  ['3 secondaries', '[{"name":"macvlan-a"},{"name":"bridge-b","interface":"data0","ips":["10.77.0.9/24"]},{"name":"macvlan-a","interface":"mv2"}]'],
];

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
/** 95% bootstrap interval of the median (seeded: the same data give the same interval). */
function medianInterval(xs: number[], resamples = 2000): [number, number] {
  let seed = 0x9e3779b9;
  const random = () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let r = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    r = (r + Math.imul(r ^ (r >>> 7), 61 | r)) ^ r;
    return ((r ^ (r >>> 14)) >>> 0) / 4294967296;
  };
  const medians = Array.from({ length: resamples }, () => median(xs.map(() => xs[Math.floor(random() * xs.length)]!))).sort((a, b) => a - b);
  return [medians[Math.floor(resamples * 0.025)]!, medians[Math.ceil(resamples * 0.975) - 1]!];
}
/** "a-b", or one value when both print alike. */
const range = (a: number, b: number, digits: number): string => (a.toFixed(digits) === b.toFixed(digits) ? a.toFixed(digits) : `${a.toFixed(digits)}-${b.toFixed(digits)}`);
const ms = (t0: bigint): number => Number(process.hrtime.bigint() - t0) / 1e6;

/** Runs the timing loop in bench/runtime-runner (asynchronously: the daemon and the API double serve from here). */
function runRunner(job: RunnerJob): Promise<RunnerTimes> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(repoRoot(), 'build', 'bench', 'runtime-runner.js')], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.on('close', (code) => (code === 0 ? resolve(JSON.parse(out) as RunnerTimes) : reject(new Error(`runtime-runner exited ${code}`))));
    child.stdin.end(JSON.stringify(job));
  });
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'plexus-bench-'));
  const node = new SimNode(join(work, 'node'));
  await node.start();
  // The daemon's own time per ADD (admission to reply), to split the overhead into core work and the hop.
  let served: number[] = [];
  // ...and, within it, the time of its delegates: what is left is plexus's own work (the runs are sequential).
  let delegatesMs = 0;
  let ownWork: number[] = [];
  const observer: Observer = { delegate: (_network, command, seconds) => void (command === 'ADD' && (delegatesMs += seconds * 1000)), apiRequest: () => undefined };
  const onServed = (command: string, seconds: number) => {
    if (command !== 'ADD') return;
    served.push(seconds * 1000);
    ownWork.push(seconds * 1000 - delegatesMs);
    delegatesMs = 0;
  };
  // As `plexusctl daemon` runs it: pods and NADs from informer caches.
  const cache = await ClusterCache.start(await loadKubeconfig(node.kubeconfig), 'plx-node');
  const daemon = new CniDaemon(join(work, 'plexus.sock'), DEFAULT_LIMITS, { served: (command, _exit, _code, seconds) => onServed(command, seconds) }, { observer, lookup: cache });
  await daemon.start();

  const shim = join(repoRoot(), 'native', 'plexus-shim');
  const netns = 'plx-bench';
  execFileSync('ip', ['netns', 'add', netns]);
  const nsPath = `/var/run/netns/${netns}`;
  const pod = { name: 'bench', namespace: 'default' };
  node.api.put('v1', 'pods', { metadata: pod, spec: { nodeName: 'plx-node' } } as never);
  // The daemon's cache lists the NADs of the pod's namespace once it sees the pod: before any request is counted.
  while (!cache.nad('default', 'macvlan-a')) await sleep(10);
  const rows: string[] = [];
  /** Per scenario: the shim's exec + round trip to the daemon + the runtime seeing the exit (median). */
  const hops: number[] = [];
  const figures: Record<string, number> = {};
  try {
    for (const [label, networks] of SCENARIOS) {
      const shimConf = {
        ...node.metaConf({ type: 'plexus-shim', daemonSocket: daemon.socket }),
        runtimeConfig: { 'io.kubernetes.cri.pod-annotations': networks ? { 'k8s.v1.cni.cncf.io/networks': networks } : {} },
      };
      const conf = { ...node.metaConf(), runtimeConfig: { 'io.kubernetes.cri.pod-annotations': networks ? { 'k8s.v1.cni.cncf.io/networks': networks } : {} } };
      // The baseline runs exactly the delegate lists plexus plans for this pod.
      const env = podEnv('ADD', 'bench-sandbox', nsPath, pod);
      const req: PluginRequest = {
        command: 'ADD',
        containerID: 'bench-base',
        netns: nsPath,
        ifName: 'eth0',
        args: [
          ['K8S_POD_NAMESPACE', 'default'],
          ['K8S_POD_NAME', 'bench'],
        ],
        path: ['/usr/lib/cni'],
        stdin: Buffer.alloc(0),
        conf: conf as unknown as PluginStdinConf,
        env: process.env,
      };
      const inv = new MetaInvocation(req);
      const planned = (await planAttachments(inv)).attachments.map((a) => ({ list: inv.delegateList(a), rt: inv.runtimeConf(a.ifName, a.capabilityArgs) }));
      // The API cost of one ADD, counted by the API double.
      const before = node.api.requests.length;
      const probe = await node.exec(env, conf);
      if (probe.status !== 0) throw new Error(`plexus ADD failed: ${probe.stdout}${probe.stderr}`);
      const calls = node.api.requests.slice(before);
      await node.exec({ ...env, CNI_COMMAND: 'DEL' }, conf);
      // The same through the daemon (network-status inside the ADD, Events after the reply).
      const beforeDaemon = node.api.requests.length;
      const shimEnv = { ...env, CNI_CONTAINERID: 'bench-probe' };
      const viaDaemon = await node.exec(shimEnv, shimConf, shim);
      if (viaDaemon.status !== 0) throw new Error(`shim ADD failed: ${viaDaemon.stdout}${viaDaemon.stderr}`);
      await sleep(500);
      const daemonCalls = node.api.requests.slice(beforeDaemon);
      await node.exec({ ...shimEnv, CNI_COMMAND: 'DEL' }, shimConf, shim);
      const count = (cs: typeof calls) =>
        `${cs.filter((c) => c.verb === 'get' || c.verb === 'list').length} GET, ${cs.filter((c) => c.verb === 'patch').length} PATCH, ${cs.filter((c) => c.verb === 'post').length} POST`;
      const apiPerAdd = `${count(calls)} / ${count(daemonCalls)}`;
      served = [];
      ownWork = [];
      // The runtime is its own process, as on a node: this one only serves (API double, daemon).
      const job: RunnerJob = {
        runs: RUNS,
        oneShotRuns: ONE_SHOT_RUNS,
        warmup: WARMUP,
        podLifeMs: POD_LIFE_MS,
        env: { PATH: process.env.PATH ?? '', CNI_PATH: '/usr/lib/cni', ...env },
        oneShot: { path: join(repoRoot(), 'bin', 'plexus'), conf },
        shim: { path: shim, conf: shimConf },
        planned: planned.map((p) => ({ list: p.list.bytes.toString(), rt: p.rt })),
      };
      const t = await runRunner(job);
      if (served.length !== WARMUP + RUNS) throw new Error(`the daemon served ${served.length} ADDs, expected ${WARMUP + RUNS}`);
      served = served.slice(WARMUP);
      ownWork = ownWork.slice(WARMUP);
      const [ma, md, ba, bd, sa, sd] = [median(t.metaAdd), median(t.metaDel), median(t.baseAdd), median(t.baseDel), median(t.shimAdd), median(t.shimDel)];
      // Overheads are medians of the differences within each run (the runs alternate, so drift cancels).
      const over = (xs: number[], base: number[]) => median(xs.map((x, i) => x - base[i]!)).toFixed(1);
      const shimOver = t.shimAdd.map((x, i) => x - t.baseAdd[i]!);
      const [lo, hi] = medianInterval(shimOver);
      const own = median(ownWork);
      const hop = median(t.shimAdd.map((x, i) => x - served[i]!));
      hops.push(hop);
      figures[`${label}: ADD one-shot ÷ delegates`] = ma / ba;
      figures[`${label}: ADD shim+daemon (status stored) ÷ delegates`] = sa / ba;
      figures[`${label}: DEL shim+daemon ÷ delegates`] = sd / bd;
      rows.push(
        `| ${label} | ${ba.toFixed(1)} | ${ma.toFixed(1)} | **${over(t.metaAdd, t.baseAdd)}** | ${sa.toFixed(1)} | **${median(shimOver).toFixed(1)}** (${lo.toFixed(1)} to ${hi.toFixed(1)}) | **${(own + hop).toFixed(1)}** (${own.toFixed(1)} + ${hop.toFixed(1)}) | ${bd.toFixed(1)} | ${md.toFixed(1)} | **${over(t.metaDel, t.baseDel)}** | ${sd.toFixed(1)} | **${over(t.shimDel, t.baseDel)}** | ${apiPerAdd} |`,
      );
      process.stderr.write(`${label}: done\n`);
    }
  } finally {
    execFileSync('ip', ['netns', 'del', netns]);
    await daemon.stop();
    await cache.stop();
    await node.stop();
    rmSync(work, { recursive: true, force: true });
  }
  // Exec'd as the runner does (vfork-style): what a Go runtime pays.
  const execMs = async (path: string, env: NodeJS.ProcessEnv, args: string[] = []): Promise<number> => {
    const times: number[] = [];
    for (let i = 0; i < 15; i++) {
      const t0 = process.hrtime.bigint();
      const r = await spawnCollect(path, env, '', 0, args);
      if (r.status !== 0) throw new Error(`${path} VERSION exited ${r.status}`);
      times.push(ms(t0));
    }
    return median(times);
  };
  const goVersion = await execMs('/usr/lib/cni/loopback', { CNI_COMMAND: 'VERSION' });
  const shimVersion = await execMs(shim, { CNI_COMMAND: 'VERSION' });
  const nodeShimVersion = await execMs(process.execPath, { CNI_COMMAND: 'VERSION' }, [join(repoRoot(), 'dist', 'plexus-shim.mjs')]);
  const node0 = await execMs(process.execPath, {}, ['-e', '0']);
  // One-shot start: what every runtime's VERSION probe and every one-shot exec pays before any work.
  const plexusVersion = await execMs(process.execPath, { CNI_COMMAND: 'VERSION' }, [join(repoRoot(), 'dist', 'plexus.cjs')]);
  const sriovVersion = await execMs(process.execPath, { CNI_COMMAND: 'VERSION' }, [join(repoRoot(), 'dist', 'sriov.cjs')]);
  const launchedVersion = await execMs(join(repoRoot(), 'bin', 'plexus'), { CNI_COMMAND: 'VERSION', PATH: process.env.PATH ?? '' });
  const table = [
    `# Meta plugin overhead`,
    ``,
    `${RUNS} runs after ${WARMUP} unrecorded ones (the one-shot plugin in the first ${ONE_SHOT_RUNS}) on ${new Date().toISOString().slice(0, 10)} (2 cores, Node ${process.version}, load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}), milliseconds.`,
    `A separate lean "runtime" process (bench/runtime-runner.ts) execs everything, alternating (the shim and the bare`,
    `delegates swap places every run), while this process only serves (the API double and`,
    `the node daemon), as on a node. It execs as containerd's Go runtime does, vfork-style (posix_spawn through the`,
    `addon), so an exec costs the same whoever makes it. Each run is a new sandbox (container IDs are never reused) that`,
    `lives ${POD_LIFE_MS} ms between its ADD and its DEL.`,
    `"delegates" = the same delegate lists plexus plans, exec'd by that runtime directly; "one-shot" = \`plexus\` exec'd`,
    `as containerd would (pod annotations in runtimeConfig, NADs from the API double, network-status PATCH and events`,
    `included). Times are medians; overheads are medians of the per-run differences (runs alternate, so drift cancels).`,
    `For scale: \`node -e 0\` (without NODE_EXTRA_CA_CERTS) takes ${node0.toFixed(1)} ms here; an exec of a Go plugin`,
    `(\`/usr/lib/cni/loopback\` VERSION) ${goVersion.toFixed(1)} ms; of the native \`plexus-shim\` ${shimVersion.toFixed(1)} ms (${(shimVersion / goVersion).toFixed(2)}× the Go`,
    `plugin, the one shipped); of the same shim in Node (\`dist/plexus-shim.mjs\`) ${nodeShimVersion.toFixed(1)} ms (${(nodeShimVersion / goVersion).toFixed(1)}×).`,
    `The native shim's exec + round trip to the daemon (ADD, less the daemon's time) takes ${range(Math.min(...hops), Math.max(...hops), 1)} ms:`,
    `${range(Math.min(...hops) / goVersion, Math.max(...hops) / goVersion, 2)}× the Go plugin's bare exec.`,
    `"shim+daemon" = the native shim forwarding to the node daemon, which runs the same core in-process with its`,
    `informer caches, as \`plexusctl daemon\` does. Its ADD overhead is given twice: against the bare delegates (the`,
    `median of per-run differences, with its 95% bootstrap interval: delegates alone vary by several ms from run to run),`,
    `and measured within each run, free of that noise: plexus's own work (the daemon's time from admission`,
    `to reply less the time of the delegates it ran) + the hop (the shim's exec, the HTTP round trip and the runtime`,
    `seeing the exit).`,
    `The daemon answers ADD once the attachments are in place and recorded and network-status is stored by the API server`,
    `(one PATCH, inside the ADD: these times are until the status is stored); the Events follow once the shim has the`,
    `reply, ahead of the sandbox's next operation. A status the API did not take is owed: retried after the reply, and`,
    `resent by the next daemon if this one dies first.`,
    `One-shot start: \`plexus\` VERSION ${plexusVersion.toFixed(1)} ms under node (**${(plexusVersion / node0).toFixed(2)}× \`node -e 0\`**), through the`,
    `repository's launcher (sh + readlink + dirname + node) ${launchedVersion.toFixed(1)} ms; \`sriov\` VERSION ${sriovVersion.toFixed(1)} ms (${(sriovVersion / node0).toFixed(2)}×). The launchers`,
    `exec a CommonJS front (dist/plexus.cjs, 2 KB: no ESM loader to start) that answers VERSION with plain reads and`,
    `writes; any other command goes on in the ESM bundle, which loads the skel, validators and plugin core.`,
    ``,
    `| pod | ADD delegates | ADD one-shot | overhead | ADD shim+daemon | overhead | overhead measured within (own + hop) | DEL delegates | DEL one-shot | overhead | DEL shim+daemon | overhead | API requests per ADD (one-shot / daemon) |`,
    `|---|---|---|---|---|---|---|---|---|---|---|---|---|`,
    ...rows,
    ``,
    `Beside the previous run:`,
    ``,
    ...besidePrevious('meta', { ...figures, 'plexus VERSION ÷ node -e 0': plexusVersion / node0, 'sriov VERSION ÷ node -e 0': sriovVersion / node0 }, loadavg()),
    ``,
    `Reproduce: \`npm run bench\`. API requests: the one-shot plugin reads each NAD from the API; the daemon reads`,
    `nothing (informer caches of its node's pods and of NADs, as \`plexusctl daemon\` runs). Both send one PATCH of`,
    `network-status and one Event per attachment; no pod read, since containerd passes the annotations.`,
    ``,
    `Where the one-shot overhead goes (CPU profile of one ADD): Node start-up and module loading (~40-60 ms`,
    `including the sh launcher), two writes of the attachment record, and the API round trips (sent`,
    `concurrently). What grows with the number of networks is small (one NAD read and one Event each). JSON`,
    `Schemas are compiled at build time: compiling them at run time cost ~100 ms per exec.`,
    `What the daemon's share came down by: plugin execs through posix_spawn (libuv's fork() costs 5 ms in a process of`,
    `120 MB, growing with its memory); the shim done at Content-Length rather than at the daemon's close; Events`,
    `after the shim has the reply; attachment records without fsync (~1 ms each; they guard against a dead process, a`,
    `node crash takes the pod netns with it), kept as one append-only log per sandbox (no rename, no exception for a`,
    `missing file: 0.5 → 0.2 ms per write); the cluster network's file parsed again only when its bytes change, a NAD's`,
    `config once per informer object (0.3 → 0.1 ms); the pod netns's interface names read by the addon in one call.`,
    `Where an ADD with no secondaries spends it (one traced bench run, medians): in the daemon ~1.4 ms (conf and plan`,
    `~0.4, the two record writes ~0.45, the netns check ~0.12, preparing the delegate and reading its result ~0.3,`,
    `status entries ~0.1); the hop ~2.3 ms, of which the shim's exec ~0.8 (any static binary's exec costs as much here),`,
    `its connect and request until the daemon has it ~0.6, the reply until the runtime has seen the shim exit ~0.7.`,
    `This 2-vCPU VM has noisy neighbours: between bench runs the bare delegates' medians move by up to 50%, and with them`,
    `the overhead against them (hence its interval); the overhead measured within each run moves far less.`,
    ``,
  ].join('\n');
  writeFileSync(join(repoRoot(), 'docs', 'benchmarks-meta.md'), table);
  process.stdout.write(`${table}\n`);
}

await main();
