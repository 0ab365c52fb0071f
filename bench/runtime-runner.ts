/**
 * The "container runtime" of bench/meta.ts, in its own lean process: it execs plexus (one-shot), the
 * shim and the bare delegates and times them, while the API double and the node daemon serve from
 * the bench process — as on a node, where the runtime, the daemon and the API server are different
 * processes. Input (stdin): a Job; output (stdout): the timings in ms.
 */
import { spawn } from 'node:child_process';
import { CniRuntime, type RuntimeConf } from '../src/cni/runtime.js';
import { parseNetworkConfig } from '../src/cni/conf.js';
import type { AnyResult } from '../src/cni/types.js';

export interface RunnerJob {
  runs: number;
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

function exec(path: string, env: Record<string, string>, conf: object): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(path, [], { env });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.resume();
    child.on('close', (code) => (code === 0 ? resolve(Number(process.hrtime.bigint() - t0) / 1e6) : reject(new Error(`${path} ${env.CNI_COMMAND} exited ${code}: ${out}`))));
    child.stdin.end(JSON.stringify(conf));
  });
}

async function main(): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  const job = JSON.parse(Buffer.concat(chunks).toString()) as RunnerJob;
  const runtime = new CniRuntime({ cniPath: ['/usr/lib/cni'], cacheDir: null });
  const lists = job.planned.map((p) => ({ list: parseNetworkConfig(Buffer.from(p.list)), rt: p.rt }));
  const t: RunnerTimes = { metaAdd: [], metaDel: [], shimAdd: [], shimDel: [], baseAdd: [], baseDel: [] };
  const add = { ...job.env, CNI_COMMAND: 'ADD' };
  const del = { ...job.env, CNI_COMMAND: 'DEL' };
  for (let i = 0; i < job.runs; i++) {
    t.metaAdd.push(await exec(job.oneShot.path, add, job.oneShot.conf));
    t.metaDel.push(await exec(job.oneShot.path, del, job.oneShot.conf));
    t.shimAdd.push(await exec(job.shim.path, add, job.shim.conf));
    t.shimDel.push(await exec(job.shim.path, del, job.shim.conf));
    let t0 = process.hrtime.bigint();
    const results: AnyResult[] = [];
    for (const p of lists) results.push(await runtime.addNetworkList(p.list, p.rt));
    t.baseAdd.push(Number(process.hrtime.bigint() - t0) / 1e6);
    t0 = process.hrtime.bigint();
    for (const [j, p] of [...lists.entries()].reverse()) await runtime.delNetworkList(p.list, p.rt, { prevResult: results[j] });
    t.baseDel.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  process.stdout.write(JSON.stringify(t));
}

await main();
