/**
 * The network policy probe matrix, as Kubernetes' NetworkPolicy e2e does it: a probe agent in every
 * pod netns, real TCP, UDP and ICMP from every pod to every other pod's address on each network and
 * family, and the observed matrix compared with the expected one.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';

export type ProbeKind = 'tcp80' | 'tcp81' | 'udp80' | 'icmp';
export const PROBE_KINDS: ProbeKind[] = ['tcp80', 'tcp81', 'udp80', 'icmp'];

/** A probe agent in a netns (by path, so a kubelet sandbox's netns works too). */
export class ProbeAgent {
  private readonly child: ChildProcess;
  private readonly waiting = new Map<number, (ok: boolean) => void>();
  private next = 0;
  readonly ready: Promise<void>;

  constructor(netnsPath: string) {
    this.child = spawn('nsenter', [`--net=${netnsPath}`, process.execPath, join(import.meta.dirname, 'probe-agent.js')], { stdio: ['pipe', 'pipe', 'inherit'] });
    let ready!: () => void;
    this.ready = new Promise((r) => (ready = r));
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      const msg = JSON.parse(line) as { ready?: boolean; id?: number; ok?: boolean };
      if (msg.ready) return ready();
      this.waiting.get(msg.id!)?.(msg.ok!);
      this.waiting.delete(msg.id!);
    });
    // An agent that died answers nothing: its probes fail (and the matrix says so) instead of hanging.
    this.child.on('exit', (code, signal) => {
      this.exited = `probe agent in ${netnsPath} exited (${code ?? signal})`;
      for (const resolve of this.waiting.values()) resolve(false);
      this.waiting.clear();
    });
  }

  /** Why the agent is gone, once it is. */
  exited: string | undefined;

  probe(kind: ProbeKind, addr: string): Promise<boolean> {
    const id = this.next++;
    const proto = kind === 'icmp' ? 'icmp' : kind.slice(0, 3);
    const port = kind === 'tcp81' ? 81 : 80;
    if (this.exited) return Promise.resolve(false);
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      this.child.stdin!.write(`${JSON.stringify({ id, proto, addr, port })}\n`);
    });
  }

  stop(): void {
    this.child.stdin!.end();
    this.child.kill();
  }
}

export interface MatrixPod {
  /** `ns/name`. */
  id: string;
  agent: ProbeAgent;
  /** Per network (NAD `ns/name`): its IPv4 and IPv6 address. */
  addrs: Record<string, { 4?: string; 6?: string }>;
}

export interface Probe {
  from: string;
  to: string;
  network: string;
  family: 4 | 6;
  kind: ProbeKind;
}

const probeKey = (p: Probe) => `${p.from} -> ${p.to} ${p.network} v${p.family} ${p.kind}`;

/** Every probe of the matrix: each pod to each other pod, on each network and family, each kind. */
export function allProbes(pods: MatrixPod[], networks: string[], kinds = PROBE_KINDS): Probe[] {
  const out: Probe[] = [];
  for (const from of pods)
    for (const to of pods)
      if (from !== to)
        for (const network of networks) for (const family of [4, 6] as const) for (const kind of kinds) if (to.addrs[network]?.[family]) out.push({ from: from.id, to: to.id, network, family, kind });
  return out;
}

/**
 * At most this many probes in flight: the whole matrix at once (over a thousand probes, a ping process
 * each for ICMP) starves the agents on a small machine, and a starved agent answers after the timeout,
 * which reads as "blocked".
 */
const IN_FLIGHT = 96;

/** Runs the probes, IN_FLIGHT at a time; the keys of those that got through. */
async function observe(pods: MatrixPod[], probes: Probe[]): Promise<Set<string>> {
  const byId = new Map(pods.map((p) => [p.id, p]));
  const through = new Set<string>();
  let next = 0;
  const worker = async () => {
    for (let p = probes[next++]; p; p = probes[next++]) if (await byId.get(p.from)!.agent.probe(p.kind, byId.get(p.to)!.addrs[p.network]![p.family]!)) through.add(probeKey(p));
  };
  await Promise.all(Array.from({ length: Math.min(IN_FLIGHT, probes.length) }, worker));
  return through;
}

/** The probes whose observation differs from the expectation. */
function differing(probes: Probe[], expected: (p: Probe) => boolean, through: Set<string>): Probe[] {
  return probes.filter((p) => expected(p) !== through.has(probeKey(p)));
}

/** Differences between expected and observed, one line each ("expected open" / "expected blocked"). */
function compare(probes: Probe[], expected: (p: Probe) => boolean, through: Set<string>): string[] {
  return differing(probes, expected, through).map((p) => {
    const want = expected(p);
    return `${probeKey(p)}: expected ${want ? 'open' : 'blocked'}, observed ${want ? 'blocked' : 'open'}`;
  });
}

/** Tries a differing probe gets before its difference counts: one lost datagram or late answer is not a verdict. */
const CONFIRM_TRIES = 3;

/**
 * Probes until the observed matrix is the expected one (rules follow a change within a moment, not at
 * once) or `ms` have passed; the differences that remain (none when it matched).
 *
 * Each probe is retried until it matches, not the whole matrix until one round is clean: on a loaded
 * machine a round of a thousand probes nearly always has a late answer somewhere. Once every probe has
 * matched, the whole matrix runs once more (rules that changed after a probe matched show there), and a
 * difference in that round must hold over CONFIRM_TRIES more tries to count.
 */
export async function matrixSettles(pods: MatrixPod[], probes: Probe[], expected: (p: Probe) => boolean, ms = 20_000): Promise<string[]> {
  const deadline = Date.now() + ms;
  let pending = probes;
  for (;;) {
    const through = await observe(pods, pending);
    pending = differing(pending, expected, through);
    if (!pending.length) break;
    if (Date.now() > deadline) return compare(pending, expected, through);
    await sleep(300);
  }
  let through = await observe(pods, probes);
  let still = differing(probes, expected, through);
  for (let i = 0; i < CONFIRM_TRIES && still.length; i++) {
    await sleep(300);
    through = await observe(pods, still);
    still = differing(still, expected, through);
  }
  return compare(still, expected, through);
}
