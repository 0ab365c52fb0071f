/**
 * The "container runtime" of bench/meta.ts, in its own lean process: it execs plexus (one-shot), the
 * shim and the bare delegates and times them, while the API double and the node daemon serve from
 * the bench process — as on a node, where the runtime, the daemon and the API server are different
 * processes. Input (stdin): a Job; output (stdout): the timings in ms.
 */
import { CniRuntime, type RuntimeConf } from '../src/cni/runtime.js';
import { parseNetworkConfig } from '../src/cni/conf.js';
import type { AnyResult } from '../src/cni/types.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { spawnCollect } from '../src/util/native.js';

export interface RunnerJob {
  runs: number;
  /** The first this many runs also exec the one-shot plugin (slow: it is measured in fewer runs). */
  oneShotRuns: number;
  /** Runs of the shim and the bare delegates before the measured ones, not recorded (caches, JIT). */
  warmup: number;
  /** Pause between a sandbox's ADD and its DEL. */
  podLifeMs: number;
  env: Record<string, string>;
  oneShot: { path: string; conf: object };
  shim: { path: string; conf: object };
  /** The delegate lists plexus plans for the pod (conflist JSON) with their runtime conf. */
  planned: { list: string; rt: RuntimeConf }[];
}

export interface RunnerTimes {
  metaAdd: number[];
  metaDel: number[];
  shimAdd: number[];
  shimDel: number[];
  baseAdd: number[];
  baseDel: number[];
}

/** One exec as a Go runtime does it (vfork-style, through the addon), timed to the child's exit. */
async function exec(path: string, env: Record<string, string>, conf: object): Promise<number> {
  const t0 = process.hrtime.bigint();
  const r = await spawnCollect(path, env, JSON.stringify(conf));
  if (r.status !== 0) throw new Error(`${path} ${env.CNI_COMMAND} exited ${r.status}: ${r.stdout.toString()}`);
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

async function main(): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  const job = JSON.parse(Buffer.concat(chunks).toString()) as RunnerJob;
  const runtime = new CniRuntime({ cniPath: ['/usr/lib/cni'], cacheDir: null });
  const lists = job.planned.map((p) => ({ list: parseNetworkConfig(Buffer.from(p.list)), rt: p.rt }));
  const t: RunnerTimes = { metaAdd: [], metaDel: [], shimAdd: [], shimDel: [], baseAdd: [], baseDel: [] };
  // A pod lives a moment between its ADD and its DEL (the daemon reports the ADD meanwhile).
  const podLife = () => sleep(job.podLifeMs);
  const viaShim = async (i: number) => {
    const shim = { ...job.env, CNI_CONTAINERID: `${job.env.CNI_CONTAINERID}-shim-${i}` };
    const add = await exec(job.shim.path, { ...shim, CNI_COMMAND: 'ADD' }, job.shim.conf);
    await podLife();
    const del = await exec(job.shim.path, { ...shim, CNI_COMMAND: 'DEL' }, job.shim.conf);
    if (i >= 0) (t.shimAdd.push(add), t.shimDel.push(del));
  };
  const bare = async (i: number) => {
    let t0 = process.hrtime.bigint();
    const results: AnyResult[] = [];
    for (const p of lists) results.push(await runtime.addNetworkList(p.list, p.rt));
    const add = Number(process.hrtime.bigint() - t0) / 1e6;
    await podLife();
    t0 = process.hrtime.bigint();
    for (const [j, p] of [...lists.entries()].reverse()) await runtime.delNetworkList(p.list, p.rt, { prevResult: results[j] });
    if (i >= 0) (t.baseAdd.push(add), t.baseDel.push(Number(process.hrtime.bigint() - t0) / 1e6));
  };
  for (let i = -job.warmup; i < job.runs; i++) {
    // A new sandbox each time, as on a node: container IDs are never reused.
    if (i >= 0 && i < job.oneShotRuns) {
      const oneShot = { ...job.env, CNI_CONTAINERID: `${job.env.CNI_CONTAINERID}-oneshot-${i}` };
      t.metaAdd.push(await exec(job.oneShot.path, { ...oneShot, CNI_COMMAND: 'ADD' }, job.oneShot.conf));
      await podLife();
      t.metaDel.push(await exec(job.oneShot.path, { ...oneShot, CNI_COMMAND: 'DEL' }, job.oneShot.conf));
    }
    // Which goes first alternates: neither always follows the other's tail.
    if (i % 2) {
      await bare(i);
      await viaShim(i);
    } else {
      await viaShim(i);
      await bare(i);
    }
  }
  process.stdout.write(JSON.stringify(t));
}

await main();
