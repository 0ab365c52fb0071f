/** `plexusctl daemon`: the node daemon serving CNI requests from `plexus-shim` on a unix socket. */
import { join } from 'node:path';
import type { Command } from 'commander';
import { CniDaemon, DEFAULT_LIMITS } from '../daemon/server.js';
import { type CniReply, type CniRequestBody, DEFAULT_DAEMON_SOCKET } from '../daemon/protocol.js';
import { type ApiConfig, inClusterConfig, loadKubeconfig } from '../k8s/kubeconfig.js';
import type { MetaContext, Observer } from '../meta/context.js';
import { integerOption } from './options.js';
import type { ClusterCache } from '../daemon/cache.js';
import type { PolicySandbox } from '../meta/context.js';
import type { PolicyEngine } from '../policy/engine.js';

/** How old a held address must be before the IPAM GC may free it, and how often it looks. */
const IPAM_GC_GRACE_MS = 10 * 60_000;
const IPAM_GC_EVERY_MS = 5 * 60_000;
/** How long a chunk stays empty before the node gives it back. */
const IPAM_CHUNK_IDLE_MS = 10 * 60_000;

/** network-status a previous daemon answered ADD for but did not get written (it died first). */
async function resendOwedStatus(cniDir: string, api: ApiConfig, log: (msg: string, fields: Record<string, unknown>) => void): Promise<void> {
  const { ApiClient } = await import('../k8s/client.js');
  const { AttachmentStore } = await import('../meta/store.js');
  const { resendPendingStatus } = await import('../daemon/recovery.js');
  await resendPendingStatus(new AttachmentStore(join(cniDir, 'attachments')), new ApiClient(api, 10_000), log);
}

/** The node's sandboxes with NAD attachments, from the attachment store: network policy adopts them at start. */
async function sandboxesInStore(cniDir: string): Promise<PolicySandbox[]> {
  const { existsSync } = await import('node:fs');
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

export function registerDaemon(program: Command): void {
  program
    .command('daemon')
    .description('serve CNI requests from plexus-shim on a unix socket (mode 0600), with the same core as the one-shot plugin')
    .option('--socket <path>', 'unix socket path', DEFAULT_DAEMON_SOCKET)
    .option('--max-concurrent <n>', 'operations running at once', integerOption(1), DEFAULT_LIMITS.maxConcurrent)
    .option('--max-queued <n>', 'ADDs waiting before new ones get "try again later" (DEL goes first and waits longer)', integerOption(0), DEFAULT_LIMITS.maxQueued)
    .option('--max-rss <MiB>', 'memory budget: over this resident size ADDs are told to try again later (DEL still runs), before the OOM killer ends the daemon', integerOption(32))
    .option('--kubeconfig <file>', 'kubeconfig for the informer caches (default: in-cluster credentials)')
    .option('--node-name <name>', 'this node: its pods are cached (needs --kubeconfig or in-cluster credentials); without it nothing is cached', process.env.NODE_NAME)
    .option('--metrics-address <host:port>', 'serve Prometheus metrics at http://host:port/metrics', '127.0.0.1:9091')
    .option('--log-level <level>', 'pino log level (JSON logs on stderr)', 'info')
    .option('--cni-conf-dir <dir>', 'keep 00-plexus.conflist in this conf dir in step with its cluster network conf (type plexus-shim)')
    .option('--cni-bin-dir <dir>', "the runtime's CNI bin dir, for the generated conf's binDir", '/opt/cni/bin')
    .option('--sriov-host-root <dir>', 'the in-process sriov plugin acts on this simulated SR-IOV host (plexusctl sriov host create) instead of the real one', process.env.PLEXUS_SRIOV_HOST_ROOT)
    .option('--in-process <types>', 'delegate types run inside the daemon instead of exec\'d (comma-separated; "" for none)', 'sriov')
    .option(
      '--nad-namespaces <list>',
      "namespaces whose NADs are always watched, comma-separated, the first being the conf's multusNamespace (where clusterNetwork / defaultNetworks NADs and a default-network annotation without a namespace point); others are watched while a pod of the node needs them",
      'kube-system',
    )
    .option('--cni-dir <dir>', 'attachment records dir (network-status owed by a previous daemon is resent from it), for the generated conf', '/var/lib/cni/plexus')
    .option('--no-network-policy', 'do not enforce MultiNetworkPolicies (they are enforced when --node-name is given)')
    .option('--nft <path>', 'the nftables binary that installs pod tables (default: /usr/sbin/nft)')
    .option('--kubelet-dir <dir>', "for the generated conf: kubelet's --root-dir when not /var/lib/kubelet")
    .option('--device-info-dir <dir>', 'for the generated conf: the device-info root when not /var/run/k8s.cni.cncf.io/devinfo')
    .action(
      async (o: {
        socket: string;
        maxConcurrent: number;
        maxQueued: number;
        maxRss?: number;
        kubeconfig?: string;
        nodeName?: string;
        metricsAddress: string;
        logLevel: string;
        cniConfDir?: string;
        cniBinDir: string;
        cniDir: string;
        inProcess: string;
        nadNamespaces: string;
        sriovHostRoot?: string;
        kubeletDir?: string;
        deviceInfoDir?: string;
        networkPolicy: boolean;
        nft?: string;
      }) => {
        const limits = { ...DEFAULT_LIMITS, maxConcurrent: o.maxConcurrent, maxQueued: o.maxQueued, ...(o.maxRss ? { maxRssBytes: o.maxRss * 1048576 } : {}) };
        // Loaded only by the daemon, never by the per-pod executables.
        const pino = (await import('pino')).default;
        const { DaemonMetrics } = await import('../daemon/metrics.js');
        const { ApiClientCache } = await import('../meta/context.js');
        const log = pino({ level: o.logLevel, base: { component: 'plexus-daemon' } }, pino.destination(2));
        // One reading of the credentials for the informers and the owed-status resend: a kubeconfig that
        // cannot be used stops the daemon at once, saying why, instead of a daemon that silently reads nothing.
        const api: ApiConfig | undefined = o.kubeconfig ? await loadKubeconfig(o.kubeconfig) : inClusterConfig(process.env);
        if (o.nodeName && !api) throw new Error('--node-name needs --kubeconfig or in-cluster credentials (KUBERNETES_SERVICE_HOST/PORT)');
        const metrics = new DaemonMetrics();
        // Nothing a request carries may end the daemon: every pod of the node depends on it. An error
        // that escaped its request (a bug) is logged and counted, and the daemon keeps serving.
        const escaped = (kind: string) => (err: unknown) => {
          metrics.escapedErrors.inc({ kind });
          log.error({ kind, error: err instanceof Error ? (err.stack ?? err.message) : String(err) }, `${kind}: an error escaped its request (a bug); the daemon keeps serving`);
        };
        process.on('unhandledRejection', escaped('unhandledRejection'));
        process.on('uncaughtException', escaped('uncaughtException'));
        const observer: Observer = {
          delegate: (network, command, seconds, ok) => metrics.delegate(network, command, seconds, ok),
          apiRequest: (verb) => metrics.apiRequest(verb),
          statusWrite: (result, pod, detail) => {
            metrics.statusWrites.inc({ result });
            if (result === 'failed') log.warn({ pod, error: detail }, 'network-status not written');
            else if (result === 'stale') log.info({ pod, reason: detail }, 'network-status dropped: the pod is gone or was replaced');
          },
        };
        let cache: ClusterCache | undefined;
        const types = o.inProcess
          .split(',')
          .map((t) => t.trim())
          .filter(Boolean);
        for (const t of types) if (t !== 'sriov') throw new Error(`--in-process: only Plexus's own plugins can run in-process (sriov), not "${t}"`);
        let inProcess: MetaContext['inProcess'];
        if (types.length) {
          const { inProcessPlugin } = await import('../cni/skel.js');
          const { sriovPluginWith } = await import('../sriov/plugin.js');
          const { openSriovHost } = await import('./sriov-host.js');
          // The daemon's own choice of host root, whatever the forwarded request environment says.
          const hostRoot = o.sriovHostRoot || '/';
          inProcess = { sriov: inProcessPlugin(sriovPluginWith(() => openSriovHost(hostRoot))) };
        }
        const served = await metrics.serve(o.metricsAddress);
        log.info({ url: served.url }, 'metrics');
        if (o.nodeName) {
          const { ClusterCache } = await import('../daemon/cache.js');
          const nadNamespaces = o.nadNamespaces
            .split(',')
            .map((n) => n.trim())
            .filter(Boolean);
          const started = await ClusterCache.start(
            api!,
            o.nodeName,
            { nadNamespaces },
            (what, err) => {
              metrics.informerErrors.inc({ informer: what.split('/')[0]! });
              log.warn({ informer: what, error: err.message }, 'informer list/watch failed: lookups fall back to API reads until it recovers');
            },
            (verb) => metrics.apiRequest(verb),
          );
          cache = started;
          metrics.cachesSynced = () => started.health().synced;
          const health = started.health();
          if (health.synced) log.info({ node: o.nodeName, nadNamespaces: started.watchedNamespaces() }, 'informer caches of the node pods and of NADs synced');
          else log.warn({ node: o.nodeName, ...health }, 'informer caches NOT synced: every ADD reads the pod and its NADs from the API until they are');
        }
        // Plexus IPAM in the daemon: one event loop holds the node's pools (docs/ipam.md).
        let ipam: ((body: CniRequestBody) => Promise<CniReply>) | undefined;
        if (o.nodeName && api) {
          const { ApiClient } = await import('../k8s/client.js');
          const { ChunkRegistry } = await import('../ipam/registry.js');
          const { IpamPools, ipamPluginWith } = await import('../ipam/plugin.js');
          const { runPlugin } = await import('../cni/skel.js');
          const pools = new IpamPools({ stateDir: join(o.cniDir, 'ipam'), registry: new ChunkRegistry(new ApiClient(api, 10_000), o.nodeName) });
          const plugin = ipamPluginWith(pools);
          const { AttachmentStore } = await import('../meta/store.js');
          const store = new AttachmentStore(join(o.cniDir, 'attachments'));
          // GC: an address whose sandbox the node no longer knows and whose pod the API no longer has
          // (or has again under another UID) is freed, ten minutes after it was handed out at the earliest.
          const sweep = () => {
            const synced = cache?.health().synced === true;
            const reasons = new Map<string, string>();
            const freed = pools.sweep((h) => {
              if (store.read(h.containerID).kind !== 'missing') return true;
              if (!synced || !h.pod) return undefined;
              const [ns = '', name = ''] = h.pod.split('/');
              const pod = cache!.pod(ns, name);
              if (pod && (!h.podUID || !pod.metadata.uid || pod.metadata.uid === h.podUID)) return true;
              reasons.set(`${h.containerID}/${h.ifName}`, pod ? 'pod replaced' : 'no sandbox, no pod');
              return false;
            }, IPAM_GC_GRACE_MS);
            for (const f of freed) {
              const reason = reasons.get(`${f.holder.containerID}/${f.holder.ifName}`) ?? 'unknown';
              metrics.ipamReclaimed.inc({ reason });
              log.info({ pool: f.pool, containerID: f.holder.containerID, ifname: f.holder.ifName, pod: f.holder.pod, reason }, 'IPAM address reclaimed');
            }
          };
          const leaseRegistry = new ChunkRegistry(new ApiClient(api, 10_000), o.nodeName);
          /** A housekeeping task in the background: logged when it did something (`did` gives the fields), a failure logged as a warning. */
          const housekeep = <T>(task: Promise<T>, did: (r: T) => Record<string, unknown> | undefined, done: string, failed: string, level: 'info' | 'warn' = 'info') =>
            void task.then(
              (r) => {
                const fields = did(r);
                if (fields) log[level](fields, done);
              },
              (err: Error) => log.warn({ error: err.message }, failed),
            );
          const ifAny =
            <K extends string>(key: K) =>
            (n: number | string[]) =>
              (typeof n === 'number' ? n : n.length) ? { [key]: n } : undefined;
          // Loans addressed to this node (the tail of a full pool, docs/ipam.md): answered as they come,
          // their addresses freed as they go; those deleted while the daemon was down are freed once listed.
          const { Informer } = await import('../k8s/informer.js');
          const { IPAM_API, parseLoan } = await import('../ipam/registry.js');
          const loans = new Informer(new ApiClient(api, 30_000, undefined, 'plexus-daemon'), {
            path: `${IPAM_API}/iploans`,
            query: { fieldSelector: `spec.lender=${o.nodeName}` },
            keep: (raw) => {
              const loan = parseLoan(raw);
              return { metadata: { name: loan.name }, loan };
            },
            onChange: ({ loan }, gone) => void pools.onLoan(loan, gone).catch((err: Error) => log.warn({ loan: loan.name, error: err.message }, 'IPAM loan not answered')),
            onError: (err) => log.warn({ informer: 'iploans', error: err.message }, 'informer list/watch failed'),
          });
          const settleLent = () => {
            if (!loans.listed) return;
            const freed = pools.settleLent(new Set(loans.list().map((l) => l.metadata.name)));
            if (freed) log.info({ addresses: freed }, 'IPAM addresses lent under deleted loans freed');
          };
          // Not awaited: the daemon serves (DEL needs no API) while the API server is away at start.
          void loans.start().then(settleLent);
          // Chunks reclaimed while this node was gone (its Node object deleted) are not handed out of again.
          const forgetLost = () =>
            housekeep(
              pools.forgetLostChunks(),
              ifAny('chunks'),
              'IPAM chunks in the log that the API says are not this node any more: nothing more taken from them',
              'IPAM chunks not checked against the API',
              'warn',
            );
          forgetLost();
          metrics.ipamUsage = () => pools.usage();
          // What each owned chunk holds, into its IPChunk's status, a second behind the log at most.
          let reflecting = false;
          setInterval(() => {
            if (reflecting) return;
            reflecting = true;
            void pools
              .reflect()
              .catch((err: Error) => log.warn({ error: err.message }, 'IPAM chunk status not written'))
              .finally(() => (reflecting = false));
          }, 1000).unref();
          setInterval(() => {
            sweep();
            settleLent();
            forgetLost();
            housekeep(
              leaseRegistry.reclaimFromGoneNodes(IPAM_GC_GRACE_MS),
              ifAny('chunks'),
              'IPAM chunks of nodes gone for good (no Node object) reclaimed',
              'IPAM chunks of gone nodes not reclaimed',
            );
            housekeep(leaseRegistry.sweepShadows(IPAM_GC_GRACE_MS), ifAny('chunks'), 'IPAM shadow chunks whose chunk is gone deleted', 'IPAM shadow chunks not swept');
            housekeep(pools.settleBorrowed(IPAM_GC_GRACE_MS), ifAny('loans'), 'IPAM loans no longer used deleted', 'IPAM loans not settled');
            housekeep(leaseRegistry.sweepLeases(IPAM_GC_GRACE_MS), ifAny('leases'), 'IPAMClaim leases released (claim deleted, or never bound)', 'IPAMClaim leases not swept');
            housekeep(pools.returnIdle(IPAM_CHUNK_IDLE_MS), ifAny('chunks'), 'IPAM chunks given back', 'IPAM chunks not given back');
          }, IPAM_GC_EVERY_MS).unref();
          ipam = async (body) => {
            let stdout = '';
            let stderr = '';
            const exitCode = await runPlugin(plugin, { env: body.env, readStdin: async () => Buffer.from(body.stdin, 'base64'), stdout: (t) => (stdout += t), stderr: (t) => (stderr += t) });
            return { exitCode, stdout, stderr };
          };
        }
        // MultiNetworkPolicy, enforced in each pod's netns (docs/policy.md).
        let policy: PolicyEngine | undefined;
        if (o.nodeName && api && o.networkPolicy) {
          const { PolicyEngine } = await import('../policy/engine.js');
          const { findNft } = await import('../policy/nft.js');
          const nft = findNft(o.nft);
          if (!nft) log.warn({ nft: o.nft ?? '/usr/sbin/nft' }, 'nft not found: pods a MultiNetworkPolicy selects fail their ADD until it is installed');
          const engine = new PolicyEngine({
            api,
            nodeName: o.nodeName,
            nft: nft ?? o.nft ?? '/usr/sbin/nft',
            observer: {
              synced: (pod, seconds, rules) => {
                metrics.policySync.observe(seconds);
                metrics.policyRules.set({ pod }, rules);
              },
              failed: (pod, error) => {
                metrics.policyErrors.inc();
                log.warn({ pod, error }, 'network policy table not replaced (retried)');
              },
              forgot: (pod) => metrics.policyRules.remove({ pod }),
              unfilterable: (p, sandbox, ifName, why) => {
                metrics.policyUnfilterable.inc();
                log.warn({ policy: `${p.namespace}/${p.name}`, pod: `${sandbox.namespace}/${sandbox.name}`, ifname: ifName, why }, 'policy not enforced on an interface');
              },
              log: (msg, fields) => log.warn(fields, msg),
            },
          });
          // Not awaited: DEL serves while the API server is away; an ADD waits for the policies (engine.ready).
          void engine
            .start()
            .then(async () => {
              const sandboxes = await sandboxesInStore(o.cniDir);
              engine.adopt(sandboxes);
              log.info({ sandboxes: sandboxes.length, ready: engine.ready }, 'network policy: the sandboxes of the node adopted, their tables reconciled');
            })
            .catch((err: Error) => log.error({ error: err.message }, 'network policy not started'));
          policy = engine;
        }
        // What the plugin core gets for every request. hostApi: network-status and Events of confs
        // without a kubeconfig (a DaemonSet install) go with the daemon's own credentials.
        const context: MetaContext = {
          observer,
          apiCache: new ApiClientCache(),
          ...(api ? { hostApi: api } : {}),
          ...(inProcess ? { inProcess } : {}),
          ...(cache ? { lookup: cache } : {}),
          // An IPAM the delegates exec (plexus-shim under the IPAM's name) finds this daemon here.
          ...(ipam ? { delegateEnv: { PLEXUS_DAEMON_SOCKET: o.socket } } : {}),
          ...(policy ? { policy } : {}),
        };
        const daemon = new CniDaemon(
          o.socket,
          limits,
          {
            served: (command, exitCode, code, seconds, env) => {
              metrics.requests.observe({ command, code: String(code) }, seconds);
              if (code) metrics.errors.inc({ command, code: String(code) });
              const args = Object.fromEntries((env.CNI_ARGS ?? '').split(';').map((kv) => kv.split('=') as [string, string]));
              const pod = args.K8S_POD_NAMESPACE && args.K8S_POD_NAME ? `${args.K8S_POD_NAMESPACE}/${args.K8S_POD_NAME}` : undefined;
              log[exitCode === 0 ? 'info' : 'warn'](
                { command, containerID: env.CNI_CONTAINERID, pod, ifname: env.CNI_IFNAME, code, ms: Math.round(seconds * 1000) },
                `${command} ${exitCode === 0 ? 'done' : 'failed'}`,
              );
            },
            overloaded: (command, reason) => {
              metrics.overloaded.inc({ command, reason });
              log.warn({ command, reason }, 'overloaded: answered try again later');
            },
            inFlight: (n) => metrics.inFlight.set(n),
            readiness: () => cache?.health(),
            cacheContents: () => cache?.contents(),
            ...(policy ? { policyOf: (ns: string, name: string) => policy.explain(ns, name) } : {}),
            ...(ipam ? { ipam } : {}),
          },
          context,
        );
        await daemon.start();
        log.info({ socket: o.socket }, 'serving');
        if (api) void resendOwedStatus(o.cniDir, api, (msg, fields) => log.info(fields, msg)).catch((err: Error) => log.warn({ error: err.message }, 'owed network-status not resent'));
        if (o.cniConfDir) {
          const { ConfManager } = await import('../daemon/confmanager.js');
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
          manager.start();
        }
        const stop = (): void => {
          void daemon.stop().then(() => process.exit(0));
        };
        process.once('SIGTERM', stop);
        process.once('SIGINT', stop);
      },
    );
}
