/** `plexusctl image`: the Plexus image of deploy/, built without Docker or a registry (src/sim/image.ts). */
import type { Command } from 'commander';

export function registerImage(program: Command): void {
  program
    .command('image')
    .description("build the OCI image deploy/'s DaemonSets run (this machine's Node.js, the bundles, the addon and the shim) from a built checkout; optionally import it into containerd")
    .option('--name <name>', 'the image name the DaemonSets use', 'plexus:dev')
    .option('--out <dir>', 'where plexus-image.tar is written', '.')
    .option('--import <socket>', "import it into this containerd's k8s.io namespace (ctr images import)")
    .action(async (o: { name: string; out: string; import?: string }) => {
      const { mkdirSync } = await import('node:fs');
      const { repoRoot } = await import('../sim/simnode.js');
      const { buildPlexusImage, importImage } = await import('../sim/image.js');
      mkdirSync(o.out, { recursive: true });
      const image = buildPlexusImage(repoRoot(), o.out, o.name);
      if (o.import) importImage(o.import, image.tar);
      process.stdout.write(`${image.name}: ${image.tar}${o.import ? `, imported into ${o.import}` : ''}\n`);
    });
}
