/** `plexusctl daemon`: the node daemon serving CNI requests from `plexus-shim` on a unix socket. */
import type { Command } from 'commander';
import { CniDaemon } from '../daemon/server.js';
import { DEFAULT_DAEMON_SOCKET } from '../daemon/protocol.js';

export function registerDaemon(program: Command): void {
  program
    .command('daemon')
    .description('serve CNI requests from plexus-shim on a unix socket (mode 0600), with the same core as the one-shot plugin')
    .option('--socket <path>', 'unix socket path', DEFAULT_DAEMON_SOCKET)
    .action(async (o: { socket: string }) => {
      const daemon = new CniDaemon(o.socket);
      await daemon.start();
      process.stderr.write(`plexus daemon serving on ${o.socket}\n`);
      const stop = (): void => {
        void daemon.stop().then(() => process.exit(0));
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
}
