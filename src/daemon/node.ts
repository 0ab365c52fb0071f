/**
 * The node daemon put together: the CNI endpoint (server.ts) with the plugin core's context, and the
 * background services of each component (IPAM housekeeping and leadership, network policy, owed
 * network-status, the meta conf) registered with one runner. Heavy modules are loaded here, in the
 * daemon only, never by the per-pod executables.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { ApiConfig } from '../k8s/kubeconfig.js';
import type { Holder } from '../ipam/nodepool.js';
import type { MetaContext } from '../meta/context.js';
import type { PolicySandbox } from '../policy/model.js';
import type { PolicyEngine } from '../policy/engine.js';
import type { SriovHost } from '../sriov/backend.js';
import type { ClusterCache } from './cache.js';
import type { CniReply, CniRequestBody } from './protocol.js';
import { ServiceRunner } from './runner.js';
import type { DaemonLimits } from './server.js';

export interface NodeDaemonOptions {
  socket: string;
  limits: DaemonLimits;
  api?: ApiConfig;
  /** Whose pods are cached, whose IPAM chunks and policy tables this is; nothing of it without one. */
  nodeName?: string;
  /** Where the daemon runs (its Leases live there). */
  namespace: string;
  metricsAddress: string;
  logLevel: string;
  cniDir: string;
  cniConfDir?: string;
  cniBinDir: string;
  kubeconfig?: string;
  kubeletDir?: string;
  deviceInfoDir?: string;
  nadNamespaces: string[];
  /** Delegate types run in-process (only Plexus's own: sriov), on the SR-IOV host this opens (chosen by the entry point). */
  inProcess: string[];
  openSriovHost: () => Promise<SriovHost>;
  networkPolicy: boolean;
  nft?: string;
}

/** The node's sandboxes with NAD attachments, from the attachment store: network policy adopts them at start. */
async function sandboxesInStore(cniDir: string): Promise<PolicySandbox[]> {
  const { AttachmentStore } = await import('../meta/store.js');
  const { policyNetworks } = await import('../meta/report.js');
  const store = new AttachmentStore(join(cniDir, 'attachments'));
  const out: PolicySandbox[] = [];
  for (const id of store.list()) {
    const read = store.read(id);
    if (read.kind !== 'ok') continue;
    const r = read.record;
    if (!r.attachments.length || !r.podName || !r.netns || !existsSync(r.netns)) continue;
    out.push({ containerID: r.containerID, netns: r.netns, namespace: r.podNamespace, name: r.podName, ...(r.podUID ? { uid: r.podUID } : {}), networks: policyNetworks(r) });
  }
  return out;
}

export async function runNodeDaemon(o: NodeDaemonOptions): Promise<{ stop(): Promise<void> }> {
  const pino = (await import('pino')).default;
  const { DaemonMetrics } = await import('./metrics.js');
  const { ApiClient } = await import('../k8s/client.js');
  const { ApiClientCache } = await import('../meta/context.js');
  const { AttachmentStore } = await import('../meta/store.js');
  const { coreObserver } = await import('./hooks.js');
  const log = pino({ level: o.logLevel, base: { component: 'plexus-daemon' } }, pino.destination(2));
  const metrics = new DaemonMetrics();
  // Nothing a request carries may end the daemon: every pod of the node depends on it. An error that
  // escaped its request (a bug) is logged and counted, and the daemon keeps serving.
  const escaped = (kind: string) => (err: unknown) => {
    metrics.escapedErrors.inc({ kind });
    log.error({ kind, error: err instanceof Error ? (err.stack ?? err.message) : String(err) }, `${kind}: an error escaped its request (a bug); the daemon keeps serving`);
  };
  process.on('unhandledRejection', escaped('unhandledRejection'));
  process.on('uncaughtException', escaped('uncaughtException'));
  const { nodeName } = o;
  // Every client of the daemon shares HTTP/2 connections: its watches are streams, not sockets (docs/scale.md).
  const { Http2Connections } = await import('../k8s/http2.js');
  const connections = o.api?.server.startsWith('https:') ? new Http2Connections(o.api) : undefined;
  const api = o.api && connections ? { ...o.api, transport: connections.transport } : o.api;
  /** An API client of one component: its requests counted under its name, its user agent saying which it is. */
  const client = (component: string, timeoutMs = 30_000) => new ApiClient(api!, timeoutMs, metrics.apiRequests(component), `plexus-daemon/${component}`);
  const services = new ServiceRunner(log);
  const store = new AttachmentStore(join(o.cniDir, 'attachments'));

  let inProcess: MetaContext['inProcess'];
  for (const t of o.inProcess) if (t !== 'sriov') throw new Error(`--in-process: only Plexus's own plugins can run in-process (sriov), not "${t}"`);
  if (o.inProcess.length) {
    const { inProcessPlugin } = await import('../cni/skel.js');
    const { sriovPluginWith } = await import('../sriov/plugin.js');
    // The daemon's own choice of host, whatever the forwarded request environment says.
    inProcess = { sriov: inProcessPlugin(sriovPluginWith(o.openSriovHost)) };
  }
  const served = await metrics.serve(o.metricsAddress);
  log.info({ url: served.url }, 'metrics');

  let cache: ClusterCache | undefined;
  if (nodeName && api) {
    const { ClusterCache } = await import('./cache.js');
    const onError = (what: string, err: Error) => {
      metrics.informerErrors.inc({ informer: what.split('/')[0]! });
      log.warn({ informer: what, error: err.message }, 'informer list/watch failed: lookups fall back to API reads until it recovers');
    };
    const started = await ClusterCache.start(api, nodeName, { nadNamespaces: o.nadNamespaces }, onError, metrics.apiRequests('cache'));
    cache = started;
    metrics.cachesSynced = () => started.health().synced;
    const health = started.health();
    if (health.synced) log.info({ node: nodeName, nadNamespaces: started.watchedNamespaces() }, 'informer caches of the node pods and of NADs synced');
    else log.warn({ node: nodeName, ...health }, 'informer caches NOT synced: every ADD reads the pod and its NADs from the API until they are');
  }

  // Plexus IPAM in the daemon: one event loop holds the node's pools (docs/ipam.md).
  let ipam: ((body: CniRequestBody) => Promise<CniReply>) | undefined;
  if (nodeName && api) {
    const { IpamPools, ipamPluginWith } = await import('../ipam/plugin.js');
    const { ChunkRegistry } = await import('../ipam/registry.js');
    const { IpamNodeService, IpamLeaderService } = await import('../ipam/housekeeping.js');
    const { runPluginCaptured } = await import('../cni/skel.js');
    const pools = new IpamPools({ stateDir: join(o.cniDir, 'ipam'), registry: new ChunkRegistry(client('ipam', 10_000), nodeName) });
    // GC: an address whose sandbox the node no longer knows and whose pod the API no longer has (or has
    // again under another UID) is dead; while the pod cache is not synced nothing is.
    const podOf = (h: Holder) => {
      const [ns = '', name = ''] = (h.pod ?? '').split('/');
      return cache!.pod(ns, name);
    };
    const live = (h: Holder): boolean | undefined => {
      if (store.read(h.containerID).kind !== 'missing') return true;
      if (cache?.health().synced !== true || !h.pod) return undefined;
      const pod = podOf(h);
      return pod !== undefined && (!h.podUID || !pod.metadata.uid || pod.metadata.uid === h.podUID);
    };
    const deadReason = (h: Holder) => (podOf(h) ? 'pod replaced' : 'no sandbox, no pod');
    services.add(new IpamNodeService({ pools, api: client('ipam'), nodeName, log, live, deadReason, reclaimed: (reason) => metrics.ipamReclaimed.inc({ reason }) }));
    services.add(new IpamLeaderService({ api: client('ipam-leader'), namespace: o.namespace, identity: nodeName, log }));
    metrics.ipamUsage = () => pools.usage();
    const plugin = ipamPluginWith(pools);
    ipam = (body) => runPluginCaptured(plugin, body.env, Buffer.from(body.stdin, 'base64'));
  }
  // MultiNetworkPolicy, enforced in each pod's netns (docs/policy.md).
  let policy: PolicyEngine | undefined;
  if (nodeName && api && o.networkPolicy) {
    const { PolicyEngine } = await import('../policy/engine.js');
    const { PolicyService } = await import('../policy/service.js');
    const { findNft } = await import('../policy/nft.js');
    const { policyObserver } = await import('./hooks.js');
    const nft = findNft(o.nft);
    if (!nft) log.warn({ nft: o.nft ?? '/usr/sbin/nft' }, 'nft not found: pods a MultiNetworkPolicy selects fail their ADD until it is installed');
    policy = new PolicyEngine({ api, nodeName, nft: nft ?? o.nft ?? '/usr/sbin/nft', observer: policyObserver(metrics, log), traffic: metrics.apiRequests('policy') });
    services.add(new PolicyService(policy, () => sandboxesInStore(o.cniDir), log));
  }
  if (api) {
    const { owedStatusService } = await import('./recovery.js');
    services.add(owedStatusService(store, client('recovery', 10_000), log));
  }
  if (o.cniConfDir) {
    const { ConfManager } = await import('./confmanager.js');
    const manager = new ConfManager(
      o.cniConfDir,
      {
        mode: 'daemon',
        daemonSocket: o.socket,
        binDir: o.cniBinDir,
        cniDir: o.cniDir,
        ...(o.kubeconfig ? { kubeconfig: o.kubeconfig } : {}),
        ...(o.kubeletDir ? { kubeletDir: o.kubeletDir } : {}),
        ...(o.deviceInfoDir ? { deviceInfoDir: o.deviceInfoDir } : {}),
      },
      (msg, fields) => log.info(fields ?? {}, msg),
    );
    services.add({ name: 'cni-conf', start: () => Promise.resolve(manager.start()), stop: () => Promise.resolve(manager.stop()) });
  }

  // What the plugin core gets for every request. hostApi: network-status and Events of confs without a
  // kubeconfig (a DaemonSet install) go with the daemon's own credentials.
  const context: MetaContext = {
    observer: coreObserver(metrics, log),
    apiCache: new ApiClientCache(),
    ...(api ? { hostApi: api } : {}),
    ...(inProcess ? { inProcess } : {}),
    ...(cache ? { lookup: cache } : {}),
    // An IPAM the delegates exec (plexus-shim under the IPAM's name) finds this daemon here.
    ...(ipam ? { delegateEnv: { PLEXUS_DAEMON_SOCKET: o.socket } } : {}),
    ...(policy ? { policy } : {}),
  };
  const { CniDaemon } = await import('./server.js');
  const { daemonHooks } = await import('./hooks.js');
  const daemon = new CniDaemon(
    o.socket,
    o.limits,
    {
      ...daemonHooks(metrics, log),
      readiness: () => ({ ...cache?.health(), servicesNotReady: services.notReady() }),
      cacheContents: () => cache?.contents(),
      ...(policy ? { policyOf: (ns: string, name: string) => policy.explain(ns, name) } : {}),
      ...(ipam ? { ipam } : {}),
    },
    context,
  );
  // What each part holds: the scale bench and an operator read it here.
  metrics.debug = () => ({
    cache: cache?.contents(),
    policy: policy?.stats(),
    servicesNotReady: services.notReady(),
    ...(connections ? { apiConnections: { open: connections.connections, opened: connections.opened } } : {}),
  });
  await daemon.start();
  log.info({ socket: o.socket }, 'serving');
  await services.start();
  return {
    stop: async () => {
      await services.stop();
      await daemon.stop();
      await cache?.stop();
      connections?.close();
      served.server.close();
    },
  };
}
