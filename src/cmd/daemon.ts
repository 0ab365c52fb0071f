/** `plexusctl daemon`: the node daemon serving CNI requests from `plexus-shim` on a unix socket. */
import type { Command } from 'commander';
import { CniDaemon, DEFAULT_LIMITS } from '../daemon/server.js';
import { DEFAULT_DAEMON_SOCKET } from '../daemon/protocol.js';

export function registerDaemon(program: Command): void {
  program
    .command('daemon')
    .description('serve CNI requests from plexus-shim on a unix socket (mode 0600), with the same core as the one-shot plugin')
    .option('--socket <path>', 'unix socket path', DEFAULT_DAEMON_SOCKET)
    .option('--max-concurrent <n>', 'operations running at once', String(DEFAULT_LIMITS.maxConcurrent))
    .option('--max-queued <n>', 'ADDs waiting before new ones get "try again later" (DEL goes first and waits longer)', String(DEFAULT_LIMITS.maxQueued))
    .option('--kubeconfig <file>', 'kubeconfig for the informer caches (default: in-cluster credentials)')
    .option('--node-name <name>', 'this node: its pods are cached (needs --kubeconfig or in-cluster credentials); without it nothing is cached', process.env.NODE_NAME)
    .action(async (o: { socket: string; maxConcurrent: string; maxQueued: string; kubeconfig?: string; nodeName?: string }) => {
      const limits = { ...DEFAULT_LIMITS, maxConcurrent: Number(o.maxConcurrent), maxQueued: Number(o.maxQueued) };
      if (!(limits.maxConcurrent >= 1 && limits.maxQueued >= 0)) throw new Error('--max-concurrent must be ≥ 1 and --max-queued ≥ 0');
      const daemon = new CniDaemon(o.socket, limits);
      if (o.nodeName) {
        // Loaded only here: client-node costs ~1 s to load and stays out of the per-pod executables.
        const { ClusterCache } = await import('../daemon/cache.js');
        const { useObjectLookup } = await import('../meta/lookup.js');
        useObjectLookup(await ClusterCache.start(o.kubeconfig, o.nodeName));
        process.stderr.write(`plexus daemon: caches of node ${o.nodeName}'s pods and of NADs are synced\n`);
      }
      await daemon.start();
      process.stderr.write(`plexus daemon serving on ${o.socket}\n`);
      const stop = (): void => {
        void daemon.stop().then(() => process.exit(0));
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
}
