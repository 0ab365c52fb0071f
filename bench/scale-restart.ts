/**
 * The scale bench's apiserver restart: kube-apiserver stopped for a while and started again under the
 * node daemons. Watched from before the stop: when each daemon lists again (its list count rises),
 * and whether IPAM ADDs sent to every daemon all along (plexus-shim as `plexus-ipam`, as a delegate
 * execs it) were answered, or failed and then succeeded when tried again (as kubelet retries a
 * sandbox), or failed for good.
 */
import { spawn } from 'node:child_process';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { LocalCluster } from '../src/sim/cluster.js';
import { repoRoot } from '../src/sim/simnode.js';

export interface RestartDaemon {
  socket: string;
  /** Requests of kind `list` the daemon has made so far. */
  lists(): Promise<number>;
}

export interface RestartOutcome {
  spreadS: number;
  relisted: number;
  firstS: number;
  lastS: number;
  adds: { sent: number; answered: number; retriedOk: number; failedForGood: number; codes: Record<string, number> };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const IPAM_CONF = JSON.stringify({ cniVersion: '1.0.0', name: 'scale-restart', type: 'macvlan', master: 'eth0', ipam: { type: 'plexus-ipam', range: '10.250.0.0/16' } });

/** One IPAM ADD or DEL through plexus-shim; 0 or the CNI error code. */
function ipam(shim: string, socket: string, command: 'ADD' | 'DEL', id: string): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(shim, [], {
      env: {
        CNI_COMMAND: command,
        CNI_CONTAINERID: id,
        CNI_NETNS: '/var/run/netns/none',
        CNI_IFNAME: 'net1',
        CNI_PATH: join(shim, '..'),
        CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=${id}`,
        PLEXUS_DAEMON_SOCKET: socket,
      },
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.on('close', (status) => {
      if (status === 0) return resolve(0);
      try {
        resolve(Number((JSON.parse(out) as { code?: number }).code ?? 999));
      } catch {
        resolve(999);
      }
    });
    child.stdin.end(IPAM_CONF);
  });
}

export async function apiserverRestart(cluster: LocalCluster, ds: RestartDaemon[], work: string, downMs = 2000): Promise<RestartOutcome> {
  const bin = join(work, 'restart-bin');
  mkdirSync(bin, { recursive: true });
  const shim = join(bin, 'plexus-ipam');
  copyFileSync(join(repoRoot(), 'native', 'plexus-shim'), shim);
  // Each daemon holds a chunk of the pool before: ADDs during the restart need no API (docs/ipam.md).
  await Promise.all(ds.map((d, i) => ipam(shim, d.socket, 'ADD', `warm-${i}`)));
  const before = await Promise.all(ds.map((d) => d.lists()));
  const seen = new Map<number, number>();
  let restarting = true;
  const failed: { d: RestartDaemon; id: string }[] = [];
  const codes: Record<string, number> = {};
  let sent = 0;
  let answered = 0;
  const started = Date.now();
  // ADDs, one a second to each daemon, from the stop until every daemon listed again.
  const adding = (async () => {
    for (let n = 0; restarting; n++) {
      await Promise.all(
        ds.map(async (d, i) => {
          const id = `restart-${i}-${n}`;
          sent++;
          const code = await ipam(shim, d.socket, 'ADD', id);
          codes[String(code)] = (codes[String(code)] ?? 0) + 1;
          if (code === 0) answered++;
          else failed.push({ d, id });
        }),
      );
      await sleep(1000);
    }
  })();
  const watching = (async () => {
    const until = Date.now() + 240_000;
    while (Date.now() < until && seen.size < ds.length) {
      const now = await Promise.all(ds.map((d) => d.lists().catch(() => 0)));
      now.forEach((n, i) => {
        if (n > before[i]! && !seen.has(i)) seen.set(i, Date.now() - started);
      });
      await sleep(250);
    }
  })();
  try {
    await cluster.restartApiserver(downMs);
    await watching;
  } finally {
    restarting = false;
    await adding;
  }
  // What failed is tried again, as kubelet would, for up to a minute.
  let retriedOk = 0;
  const deadline = Date.now() + 60_000;
  for (const f of failed) {
    for (;;) {
      if ((await ipam(shim, f.d.socket, 'ADD', f.id)) === 0) {
        retriedOk++;
        break;
      }
      if (Date.now() > deadline) break;
      await sleep(1000);
    }
  }
  const times = [...seen.values()].sort((a, b) => a - b);
  return {
    spreadS: times.length ? (times.at(-1)! - times[0]!) / 1000 : 0,
    relisted: times.length,
    firstS: (times[0] ?? 0) / 1000,
    lastS: (times.at(-1) ?? 0) / 1000,
    adds: { sent, answered, retriedOk, failedForGood: failed.length - retriedOk, codes },
  };
}
