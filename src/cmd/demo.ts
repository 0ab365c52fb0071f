/** `plexusctl demo`: the simulated node (src/sim/demo.ts), or the same pods on the real node (--cluster). */
import type { Command } from 'commander';

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('a simulated node: API double + example NADs, annotated pods (one with an SR-IOV VF) through containerd with plexus as CNI, then teardown')
    .option('--no-cri', 'run the pods as plain network namespaces even when containerd is installed')
    .option(
      '--cluster',
      'the same pods on the real node (plexusctl cluster; needs sh scripts/build-cluster.sh once): scheduler, kubelet, containerd, the device plugin registered with the real kubelet',
    )
    .action(async (o: { cri: boolean; cluster?: boolean }) => {
      const out = (l: string) => process.stdout.write(`${l}\n`);
      try {
        const ok = o.cluster ? await (await import('../sim/clusterdemo.js')).runClusterDemo(out) : await (await import('../sim/demo.js')).runDemo(out, { cri: o.cri });
        if (!ok) process.exitCode = 1;
      } catch (err) {
        process.stderr.write(`plexusctl demo failed: ${(err as Error).stack ?? String(err)}\n`);
        process.exitCode = 1;
      }
    });
}
