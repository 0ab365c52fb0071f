/**
 * Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does it: the
 * holder renews the Lease; a candidate takes it only once it has seen the same record unchanged for a
 * whole lease duration by its own clock (no trust in other machines' clocks), with an update carrying
 * the resourceVersion it read, so of two candidates only one wins. Cluster-wide work of the node
 * daemons (IPAM housekeeping) runs in whichever daemon holds it, once for the cluster.
 *
 * Cost (docs/scale.md): the leader writes the Lease every `renewMs`; every other candidate reads it
 * from the watch cache once per `retryMs` (jittered), so at N nodes about 60 × N / mean(retryMs in s)
 * reads a minute cluster-wide, each daemon's own share constant.
 */
import { ApiError, type ApiClient } from './client.js';
import { isObject } from '../util/object.js';

export interface LeaseOptions {
  namespace: string;
  name: string;
  /** This candidate (the node name, say): written as holderIdentity. */
  identity: string;
  /** How long a holder that stopped renewing keeps it (client-go's LeaseDuration). */
  leaseSeconds: number;
  /** How often the holder renews. */
  renewMs: number;
  /** How long a candidate waits between tries: uniform in [min, max] ms. */
  retryMs: [number, number];
  onStartedLeading: () => void;
  onStoppedLeading: () => void;
  onError?: (err: Error) => void;
}

interface LeaseRecord {
  holder: string;
  renewTime: string;
  leaseSeconds: number;
  transitions: number;
  resourceVersion: string;
}

function parseLease(raw: unknown): LeaseRecord {
  const md = isObject(raw) && isObject(raw.metadata) ? raw.metadata : {};
  const spec = isObject(raw) && isObject(raw.spec) ? raw.spec : {};
  return {
    holder: typeof spec.holderIdentity === 'string' ? spec.holderIdentity : '',
    renewTime: typeof spec.renewTime === 'string' ? spec.renewTime : '',
    leaseSeconds: typeof spec.leaseDurationSeconds === 'number' ? spec.leaseDurationSeconds : 0,
    transitions: typeof spec.leaseTransitions === 'number' ? spec.leaseTransitions : 0,
    resourceVersion: typeof md.resourceVersion === 'string' ? md.resourceVersion : '',
  };
}

/** A MicroTime as the API server stores it. */
const microTime = (ms: number) => new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');

export class LeaderElection {
  private leading = false;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  /** The record last read, and when (by this machine's clock) it was first seen as it is. */
  private observed: { key: string; at: number } | undefined;
  private lastRenewed = 0;

  constructor(
    private readonly api: ApiClient,
    private readonly o: LeaseOptions,
  ) {}

  private get path(): string {
    return `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(this.o.namespace)}/leases`;
  }

  start(): void {
    this.next(0);
  }

  /** Stops; a holder gives the Lease up (holderIdentity emptied) so that another takes it at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    if (!this.leading) return;
    this.setLeading(false);
    try {
      const raw = await this.api.get<unknown>(`${this.path}/${encodeURIComponent(this.o.name)}`);
      if (parseLease(raw).holder === this.o.identity)
        await this.api.put(`${this.path}/${encodeURIComponent(this.o.name)}`, { ...(raw as object), spec: { ...this.spec(parseLease(raw), Date.now()), holderIdentity: '' } });
    } catch (err) {
      this.o.onError?.(err instanceof Error ? err : new Error(String(err)));
    }
  }

  private next(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.round(), ms);
    this.timer.unref();
  }

  private async round(): Promise<void> {
    let held = false;
    try {
      held = await this.tryAcquireOrRenew(Date.now());
    } catch (err) {
      this.o.onError?.(err instanceof Error ? err : new Error(String(err)));
    }
    if (this.stopped) return;
    if (held) this.lastRenewed = Date.now();
    // A holder that could not renew for two thirds of the lease steps down before anyone may take it.
    if (this.leading && !held && Date.now() - this.lastRenewed > (this.o.leaseSeconds * 1000 * 2) / 3) this.setLeading(false);
    else if (held && !this.leading) this.setLeading(true);
    const [min, max] = this.o.retryMs;
    this.next(this.leading ? this.o.renewMs : min + Math.random() * (max - min));
  }

  private setLeading(on: boolean): void {
    this.leading = on;
    if (on) this.o.onStartedLeading();
    else this.o.onStoppedLeading();
  }

  private spec(prev: LeaseRecord | undefined, now: number): Record<string, unknown> {
    const taking = prev?.holder !== this.o.identity;
    return {
      holderIdentity: this.o.identity,
      leaseDurationSeconds: this.o.leaseSeconds,
      renewTime: microTime(now),
      ...(taking ? { acquireTime: microTime(now), leaseTransitions: (prev?.transitions ?? -1) + 1 } : { leaseTransitions: prev.transitions }),
    };
  }

  /** One try: whether this candidate holds the Lease now. */
  private async tryAcquireOrRenew(now: number): Promise<boolean> {
    const name = encodeURIComponent(this.o.name);
    let raw: unknown;
    try {
      // A candidate reads from the watch cache; the holder reads the latest (its update needs it).
      raw = await this.api.get<unknown>(`${this.path}/${name}${this.leading ? '' : '?resourceVersion=0'}`);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) throw err;
      const body = { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: this.o.name, namespace: this.o.namespace }, spec: this.spec(undefined, now) };
      return this.api.post(this.path, body).then(
        () => true,
        (e: unknown) => {
          if (e instanceof ApiError && e.status === 409) return false;
          throw e;
        },
      );
    }
    const lease = parseLease(raw);
    const key = `${lease.holder}|${lease.renewTime}|${lease.resourceVersion}`;
    if (this.observed?.key !== key) this.observed = { key, at: now };
    const mine = lease.holder === this.o.identity;
    const expired = !lease.holder || now - this.observed.at > (lease.leaseSeconds || this.o.leaseSeconds) * 1000;
    if (!mine && !expired) return false;
    const body = { ...(raw as Record<string, unknown>), spec: this.spec(lease, now) };
    return this.api.put(`${this.path}/${name}`, body).then(
      () => true,
      (e: unknown) => {
        // Someone else wrote it since the read (another candidate, or a stale cached read): not ours now.
        if (e instanceof ApiError && e.status === 409) return false;
        throw e;
      },
    );
  }
}
