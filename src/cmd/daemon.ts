/** `plexusctl daemon`: the node daemon serving CNI requests from `plexus-shim` on a unix socket. Flags only: src/daemon/node.ts puts it together. */
import type { Command } from 'commander';
import { DEFAULT_DAEMON_SOCKET } from '../daemon/protocol.js';
import { DEFAULT_LIMITS } from '../daemon/server.js';
import { type ApiConfig, inClusterConfig, loadKubeconfig } from '../k8s/kubeconfig.js';
import { integerOption } from './options.js';

const list = (text: string) =>
  text
    .split(',')
    .map((t) => t.trim())
    .filter(Boolean);

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
    .option('--namespace <ns>', "the daemon's own namespace, where its Leases live (IPAM housekeeping)", process.env.POD_NAMESPACE ?? 'kube-system')
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
        namespace: string;
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
        // One reading of the credentials: a kubeconfig that cannot be used stops the daemon at once, saying why.
        const api: ApiConfig | undefined = o.kubeconfig ? await loadKubeconfig(o.kubeconfig) : inClusterConfig(process.env);
        if (o.nodeName && !api) throw new Error('--node-name needs --kubeconfig or in-cluster credentials (KUBERNETES_SERVICE_HOST/PORT)');
        const { runNodeDaemon } = await import('../daemon/node.js');
        const daemon = await runNodeDaemon({
          socket: o.socket,
          limits: { ...DEFAULT_LIMITS, maxConcurrent: o.maxConcurrent, maxQueued: o.maxQueued, ...(o.maxRss ? { maxRssBytes: o.maxRss * 1048576 } : {}) },
          ...(api ? { api } : {}),
          ...(o.nodeName ? { nodeName: o.nodeName } : {}),
          namespace: o.namespace,
          metricsAddress: o.metricsAddress,
          logLevel: o.logLevel,
          cniDir: o.cniDir,
          cniBinDir: o.cniBinDir,
          ...(o.cniConfDir ? { cniConfDir: o.cniConfDir } : {}),
          ...(o.kubeconfig ? { kubeconfig: o.kubeconfig } : {}),
          ...(o.kubeletDir ? { kubeletDir: o.kubeletDir } : {}),
          ...(o.deviceInfoDir ? { deviceInfoDir: o.deviceInfoDir } : {}),
          nadNamespaces: list(o.nadNamespaces),
          inProcess: list(o.inProcess),
          openSriovHost: async () => (await import('./sriov-host.js')).openSriovHost(o.sriovHostRoot || '/'),
          networkPolicy: o.networkPolicy,
          ...(o.nft ? { nft: o.nft } : {}),
        });
        // A stop that waits on the API server (a Lease given up, a list in flight) is bounded: the
        // runtime's retries cover what a killed daemon leaves (the shim answers code 11 meanwhile).
        const stop = (): void => {
          setTimeout(() => process.exit(0), 10_000).unref();
          void daemon.stop().then(() => process.exit(0));
        };
        process.once('SIGTERM', stop);
        process.once('SIGINT', stop);
      },
    );
}
