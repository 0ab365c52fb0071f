/** The node daemon's Prometheus metrics (prom-client) and the observer that feeds them. */
import { type ApiTraffic, requestKind } from '../k8s/client.js';
import type { Server } from 'node:http';
import { serveMetrics } from '../util/metrics-http.js';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Observer } from '../meta/context.js';

const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export class DaemonMetrics implements Observer {
  readonly registry = new Registry();
  readonly requests = new Histogram({
    name: 'plexus_cni_request_duration_seconds',
    help: 'CNI requests served, by command and CNI code (0 = success)',
    labelNames: ['command', 'code'],
    buckets: BUCKETS,
    registers: [this.registry],
  });
  readonly errors = new Counter({ name: 'plexus_cni_errors_total', help: 'CNI requests that failed, by command and CNI error code', labelNames: ['command', 'code'], registers: [this.registry] });
  readonly inFlight = new Gauge({ name: 'plexus_cni_requests_in_flight', help: 'CNI requests admitted and not yet answered', registers: [this.registry] });
  readonly overloaded = new Counter({
    name: 'plexus_cni_overload_rejections_total',
    help: 'requests answered "try again later" because the daemon was at its limits, by reason (queue: too many waiting; memory: over --max-rss)',
    labelNames: ['command', 'reason'],
    registers: [this.registry],
  });
  readonly delegates = new Histogram({
    name: 'plexus_delegate_duration_seconds',
    help: 'delegate network operations, by network (NAD) and command',
    labelNames: ['network', 'command', 'result'],
    buckets: BUCKETS,
    registers: [this.registry],
  });
  readonly ipamReclaimed = new Counter({
    name: 'plexus_ipam_reclaimed_total',
    help: 'addresses the IPAM garbage collection freed, by reason (no sandbox on the node and no such pod; pod replaced: another UID)',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  /** Each IPAM pool this node has state of, read at each scrape (unset: no IPAM here, no sample). */
  ipamUsage: (() => { pool: string; chunks: number; used: number; lent: number; borrowed: number }[]) | undefined;
  readonly ipamAddresses = new Gauge({
    name: 'plexus_ipam_addresses',
    help: "addresses of an IPAM pool on this node, by state (used: by this node's sandboxes from its chunks; lent: to other nodes; borrowed: from them)",
    labelNames: ['pool', 'state'],
    registers: [this.registry],
    collect: () => {
      this.ipamAddresses.reset();
      for (const u of this.ipamUsage?.() ?? []) for (const state of ['used', 'lent', 'borrowed'] as const) this.ipamAddresses.set({ pool: u.pool, state }, u[state]);
    },
  });
  readonly ipamChunks = new Gauge({
    name: 'plexus_ipam_chunks',
    help: 'chunks of an IPAM pool this node owns',
    labelNames: ['pool'],
    registers: [this.registry],
    collect: () => {
      this.ipamChunks.reset();
      for (const u of this.ipamUsage?.() ?? []) this.ipamChunks.set({ pool: u.pool }, u.chunks);
    },
  });
  readonly informerErrors = new Counter({
    name: 'plexus_informer_errors_total',
    help: 'list/watch failures of the informer caches, by informer (pods, nads)',
    labelNames: ['informer'],
    registers: [this.registry],
  });
  /** Whether the informer caches have listed, read at each scrape (unset: no caches, no sample). */
  cachesSynced: (() => boolean) | undefined;
  readonly cacheSynced = new Gauge({
    name: 'plexus_informer_caches_synced',
    help: '1 when every informer cache has listed, 0 while ADDs fall back to API reads',
    registers: [this.registry],
    collect: () => {
      if (this.cachesSynced) this.cacheSynced.set(this.cachesSynced() ? 1 : 0);
    },
  });
  readonly statusWrites = new Counter({
    name: 'plexus_network_status_writes_total',
    help: 'network-status PATCHes of pods, by result (ok, failed, stale: the pod was replaced)',
    labelNames: ['result'],
    registers: [this.registry],
  });
  readonly escapedErrors = new Counter({
    name: 'plexus_daemon_escaped_errors_total',
    help: 'errors that escaped their request (unhandled rejections, uncaught exceptions): bugs, logged; the daemon keeps serving',
    labelNames: ['kind'],
    registers: [this.registry],
  });
  readonly policySync = new Histogram({
    name: 'plexus_policy_sync_duration_seconds',
    help: "time from a change (policy, pod, namespace, or the pod's ADD) to the pod's nftables table replaced",
    buckets: [0.001, 0.0025, ...BUCKETS],
    registers: [this.registry],
  });
  readonly policyRules = new Gauge({
    name: 'plexus_policy_rules',
    help: 'accept rules in a pod netns (both directions, all filtered interfaces), by pod',
    labelNames: ['pod'],
    registers: [this.registry],
  });
  readonly policyErrors = new Counter({ name: 'plexus_policy_sync_errors_total', help: "pods' tables that could not be replaced (retried)", registers: [this.registry] });
  readonly policyUnfilterable = new Counter({
    name: 'plexus_policy_unfilterable_total',
    help: 'interfaces selected by a policy that cannot be filtered (no kernel interface: DPDK/vfio), reported as Warning Events on the policy',
    registers: [this.registry],
  });
  readonly api = new Counter({
    name: 'plexus_api_requests_total',
    help: "every request of the daemon to the Kubernetes API server, by the component making it and the request's verb and resource as the API server names them",
    labelNames: ['component', 'verb', 'resource'],
    registers: [this.registry],
  });

  readonly watchEvents = new Counter({
    name: 'plexus_api_watch_events_total',
    help: "watch events the daemon received, by the component whose watch it was, the resource and the event type (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR): what the cluster's churn costs this node",
    labelNames: ['component', 'resource', 'type'],
    registers: [this.registry],
  });

  readonly watches = new Gauge({
    name: 'plexus_api_watches',
    help: 'watches of the daemon open on the API server now, by component and resource',
    labelNames: ['component', 'resource'],
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }

  delegate(network: string, command: string, seconds: number, ok: boolean): void {
    this.delegates.observe({ network, command, result: ok ? 'ok' : 'error' }, seconds);
  }

  /** A request of the plugin core (an ADD/DEL reading a pod or a NAD, writing network-status). */
  apiRequest(method: string, path: string): void {
    this.api.inc({ component: 'cni', ...requestKind(method, path) });
  }

  /** The traffic counters of one component of the daemon (`cni`, `cache`, `policy`, `ipam`, …), for its ApiClient. */
  apiRequests(component: string): ApiTraffic {
    return {
      request: (method, path) => this.api.inc({ component, ...requestKind(method, path) }),
      watchEvent: (path, type) => this.watchEvents.inc({ component, resource: requestKind('GET', path).resource, type }),
      watching: (path, delta) => this.watches.inc({ component, resource: requestKind('GET', path).resource }, delta),
    };
  }

  /** What GET /debug answers (JSON): set by the daemon once its parts exist. */
  debug: (() => unknown) | undefined;

  /** GET /metrics and /debug on host:port; resolves with the address it listens on. */
  async serve(address: string): Promise<{ server: Server; url: string }> {
    const { server, base } = await serveMetrics(this.registry, address, () => this.debug?.() ?? {});
    return { server, url: `${base}/metrics` };
  }
}
