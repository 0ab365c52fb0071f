/** `plexusctl apiserver`: the API server double on a TCP port, for demos and users' test rigs. */
import type { Command } from 'commander';
import { integerOption } from './options.js';

export function registerApiServer(program: Command): void {
  program
    .command('apiserver')
    .description('serve the Kubernetes API server double (pods, events, NADs, discovery) in memory')
    .option('--port <n>', 'TCP port on 127.0.0.1 (0 = any free port)', integerOption(0, 65535), 0)
    .option('--crd-dir <dir>', 'CRD manifests to install (default: the repository crds/)')
    .action(async (o: { port: number; crdDir?: string }) => {
      const { parse } = (await import('yaml')).default;
      const { ApiServerDouble } = await import('../sim/apiserver.js');
      const server = new ApiServerDouble({ port: o.port, ...(o.crdDir ? { crdDir: o.crdDir } : {}) });
      const url = await server.start();
      process.stdout.write(`${JSON.stringify({ url, kubeconfig: parse(server.kubeconfig()) as unknown })}\n`);
      const stop = (): void => {
        void server.stop().then(() => process.exit(0));
      };
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
}
