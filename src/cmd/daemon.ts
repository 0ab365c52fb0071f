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
    .action(async (o: { socket: string; maxConcurrent: string; maxQueued: string }) => {
      const limits = { ...DEFAULT_LIMITS, maxConcurrent: Number(o.maxConcurrent), maxQueued: Number(o.maxQueued) };
      if (!(limits.maxConcurrent >= 1 && limits.maxQueued >= 0)) throw new Error('--max-concurrent must be ≥ 1 and --max-queued ≥ 0');
      const daemon = new CniDaemon(o.socket, limits);
      await daemon.start();
      process.stderr.write(`plexus daemon serving on ${o.socket}\n`);
      const stop = (): void => {
        void daemon.stop().then(() => process.exit(0));
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
}
