/**
 * Plexus IPAM's background work in the node daemon, as two services (docs/ipam.md, docs/scale.md):
 * - `IpamNodeService`, on every node, about this node only: chunk status a second behind the log, loans
 *   addressed to this node (one watch filtered on spec.lender), the local GC, its own chunks checked
 *   against the API (one list filtered on spec.node), its loans settled, idle chunks given back.
 * - `IpamLeaderService`, once in the cluster: whichever daemon holds the `plexus-ipam-housekeeping`
 *   Lease runs the cluster-wide sweeps (cluster-sweeps.ts).
 * Requests per node daemon per 5 minutes at rest, whatever the cluster's size: 2 lists (own chunks,
 * own loans), the loans watch renewed every 5-10 min, 3-5 Lease reads; status PATCHes only for chunks
 * whose addresses changed.
 */
import { type ApiClient } from '../k8s/client.js';
import { Informer } from '../k8s/informer.js';
import { LeaderElection } from '../k8s/lease.js';
import { type Log, type Service, every } from '../util/service.js';
import { ClusterSweeps } from './cluster-sweeps.js';
import type { Holder } from './nodepool.js';
import type { IpamPools } from './plugin.js';
import { IPAM_API, type Loan, parseLoan } from './registry.js';

/** How old a held address must be before the GC may free it, and how often the housekeeping runs. */
export const IPAM_GC_GRACE_MS = 10 * 60_000;
export const IPAM_GC_EVERY_MS = 5 * 60_000;
/** How long a chunk stays empty before the node gives it back. */
export const IPAM_CHUNK_IDLE_MS = 10 * 60_000;

export interface IpamNodeOptions {
  pools: IpamPools;
  api: ApiClient;
  nodeName: string;
  log: Log;
  /**
   * The GC's verdict on an address's holder: true (alive), false (dead: freed once older than the
   * grace), undefined (cannot tell now: kept). `reason` is told for each one found dead.
   */
  live: (h: Holder) => boolean | undefined;
  deadReason?: (h: Holder) => string;
  reclaimed?: (reason: string) => void;
  everyMs?: number;
}

/** The housekeeping of this node's own chunks, addresses and loans. */
export class IpamNodeService implements Service {
  readonly name = 'ipam-node';
  private loans: Informer<{ metadata: { name: string }; loan: Loan }> | undefined;
  private readonly timers: { stop(): void }[] = [];

  constructor(private readonly o: IpamNodeOptions) {}

  async start(): Promise<void> {
    const { pools, log } = this.o;
    // Loans addressed to this node (the tail of a full pool): answered as they come, their addresses
    // freed as they go; those deleted while the daemon was down are freed once listed.
    this.loans = new Informer(this.o.api, {
      path: `${IPAM_API}/iploans`,
      query: { fieldSelector: `spec.lender=${this.o.nodeName}` },
      keep: (raw) => {
        const loan = parseLoan(raw);
        return { metadata: { name: loan.name }, loan };
      },
      onChange: ({ loan }, gone) => void pools.onLoan(loan, gone).catch((err: Error) => log.warn({ loan: loan.name, error: err.message }, 'IPAM loan not answered')),
      onError: (err) => log.warn({ informer: 'iploans', error: err.message }, 'informer list/watch failed'),
    });
    // Not awaited: the daemon serves (DEL needs no API) while the API server is away at start.
    void this.loans.start().then(() => this.settleLent());
    void this.forgetLost();
    // What each owned chunk holds, into its IPChunk's status, a second behind the log at most.
    this.timers.push(every(1000, 0, () => pools.reflect().then(undefined, (err: Error) => log.warn({ error: err.message }, 'IPAM chunk status not written'))));
    this.timers.push(every(this.o.everyMs ?? IPAM_GC_EVERY_MS, 0.5, () => this.tick()));
    return Promise.resolve();
  }

  async stop(): Promise<void> {
    for (const t of this.timers.splice(0)) t.stop();
    await this.loans?.stop();
  }

  private async tick(): Promise<void> {
    const { pools, log } = this.o;
    this.sweep();
    this.settleLent();
    await this.forgetLost();
    await report(log, pools.settleBorrowed(IPAM_GC_GRACE_MS), 'loans', 'IPAM loans no longer used deleted', 'IPAM loans not settled');
    await report(log, pools.returnIdle(IPAM_CHUNK_IDLE_MS), 'chunks', 'IPAM chunks given back', 'IPAM chunks not given back');
  }

  /** GC: an address whose holder is dead (the daemon's verdict) is freed, ten minutes after it was handed out at the earliest. */
  private sweep(): void {
    for (const f of this.o.pools.sweep(this.o.live, IPAM_GC_GRACE_MS)) {
      const reason = this.o.deadReason?.(f.holder) ?? 'unknown';
      this.o.reclaimed?.(reason);
      this.o.log.info({ pool: f.pool, containerID: f.holder.containerID, ifname: f.holder.ifName, pod: f.holder.pod, reason }, 'IPAM address reclaimed');
    }
  }

  private settleLent(): void {
    if (!this.loans?.listed) return;
    const freed = this.o.pools.settleLent(new Set(this.loans.list().map((l) => l.metadata.name)));
    if (freed) this.o.log.info({ addresses: freed }, 'IPAM addresses lent under deleted loans freed');
  }

  /** Chunks reclaimed while this node was gone (its Node object deleted) are not handed out of again. */
  private forgetLost(): Promise<void> {
    return report(
      this.o.log,
      this.o.pools.forgetLostChunks(),
      'chunks',
      'IPAM chunks in the log that the API says are not this node any more: nothing more taken from them',
      'IPAM chunks not checked against the API',
      'warn',
    );
  }
}

export interface IpamLeaderOptions {
  api: ApiClient;
  /** Where the Lease lives: the daemon's own namespace. */
  namespace: string;
  identity: string;
  log: Log;
  everyMs?: number;
  /** Lease timings (defaults: 60 s lease, renewed every 20 s, candidates retry every 60-120 s). */
  leaseSeconds?: number;
  renewMs?: number;
  retryMs?: [number, number];
}

export const IPAM_HOUSEKEEPING_LEASE = 'plexus-ipam-housekeeping';

/** The cluster-wide sweeps, in the one daemon holding the Lease. */
export class IpamLeaderService implements Service {
  readonly name = 'ipam-leader';
  private readonly election: LeaderElection;
  private sweeps: ClusterSweeps | undefined;
  private timer: { stop(): void } | undefined;

  constructor(private readonly o: IpamLeaderOptions) {
    this.election = new LeaderElection(o.api, {
      namespace: o.namespace,
      name: IPAM_HOUSEKEEPING_LEASE,
      identity: o.identity,
      leaseSeconds: o.leaseSeconds ?? 60,
      renewMs: o.renewMs ?? 20_000,
      retryMs: o.retryMs ?? [60_000, 120_000],
      onStartedLeading: () => this.lead(),
      onStoppedLeading: () => this.follow(),
      onError: (err) => o.log.warn({ lease: IPAM_HOUSEKEEPING_LEASE, error: err.message }, 'IPAM housekeeping lease not read or written'),
    });
  }

  start(): Promise<void> {
    this.election.start();
    return Promise.resolve();
  }

  async stop(): Promise<void> {
    this.follow();
    await this.election.stop();
  }

  private lead(): void {
    const { log } = this.o;
    log.info({ lease: `${this.o.namespace}/${IPAM_HOUSEKEEPING_LEASE}` }, 'IPAM housekeeping: this daemon leads the cluster-wide sweeps');
    const sweeps = new ClusterSweeps(this.o.api, (err) => log.warn({ informer: 'nodes', error: err.message }, 'informer list/watch failed'));
    this.sweeps = sweeps;
    void sweeps.start();
    this.timer = every(this.o.everyMs ?? IPAM_GC_EVERY_MS, 0.2, async () => {
      await report(log, sweeps.reclaimFromGoneNodes(IPAM_GC_GRACE_MS), 'chunks', 'IPAM chunks of nodes gone for good (no Node object) reclaimed', 'IPAM chunks of gone nodes not reclaimed');
      await report(log, sweeps.sweepShadows(IPAM_GC_GRACE_MS), 'chunks', 'IPAM shadow chunks whose chunk is gone deleted', 'IPAM shadow chunks not swept');
      await report(log, sweeps.sweepLeases(IPAM_GC_GRACE_MS), 'leases', 'IPAMClaim leases released (claim deleted, or never bound)', 'IPAMClaim leases not swept');
    });
  }

  private follow(): void {
    this.timer?.stop();
    this.timer = undefined;
    void this.sweeps?.stop();
    this.sweeps = undefined;
  }
}

/** Awaits a housekeeping task: logged when it did something (a count or a list), a failure logged as a warning. */
async function report(log: Log, task: Promise<number | string[]>, what: string, done: string, failed: string, level: 'info' | 'warn' = 'info'): Promise<void> {
  try {
    const r = await task;
    if (typeof r === 'number' ? r : r.length) log[level]({ [what]: r }, done);
  } catch (err) {
    log.warn({ error: err instanceof Error ? err.message : String(err) }, failed);
  }
}
