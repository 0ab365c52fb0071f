/** `plexusctl cluster up|down|status`: a real single-node Kubernetes cluster on loopback (src/sim/cluster.ts). */
import type { Command } from 'commander';

const DEFAULT_DIR = '/var/tmp/plexus-cluster';

export function registerCluster(program: Command): void {
  const cluster = program.command('cluster').description('a real single-node Kubernetes cluster on loopback, built from pinned Go modules (sh scripts/build-cluster.sh)');
  cluster
    .command('up')
    .description('start etcd, kube-apiserver, controller-manager, scheduler and a kubelet on a private containerd; wait until the node is Ready')
    .option('--dir <dir>', 'private directory for everything the cluster keeps', DEFAULT_DIR)
    .option('--node-name <name>', 'the node name', 'plexus-node')
    .option('--no-kubelet', 'control plane only')
    .action(async (o: { dir: string; nodeName: string; kubelet: boolean }) => {
      const { LocalCluster } = await import('../sim/cluster.js');
      const c = new LocalCluster({ dir: o.dir, nodeName: o.nodeName, kubelet: o.kubelet, log: (l) => process.stderr.write(`cluster: ${l}\n`) });
      const start = Date.now();
      try {
        await c.up();
      } catch (err) {
        process.stderr.write(`cluster: up failed, tearing down: ${(err as Error).message}\n`);
        await c.down();
        throw err;
      }
      process.stdout.write(
        [
          `cluster up in ${((Date.now() - start) / 1000).toFixed(1)} s: API server ${c.server}, node ${c.nodeName}`,
          `  export KUBECONFIG=${c.adminKubeconfig}   # admin (kubeadm's admin.conf)`,
          `  node credential: ${c.nodeKubeconfig}; kubelet dir: ${c.kubeletDir}; containerd: ${c.containerdSocket}`,
          `  CNI conf dir: ${c.cniConfDir}; logs: ${o.dir}/logs/`,
          `  plexusctl cluster down --dir ${o.dir}`,
          '',
        ].join('\n'),
      );
    });
  cluster
    .command('down')
    .description('stop everything the cluster runs and remove its processes, mounts, cgroups, links and directory')
    .option('--dir <dir>', 'the cluster directory', DEFAULT_DIR)
    .action(async (o: { dir: string }) => {
      const { LocalCluster } = await import('../sim/cluster.js');
      await new LocalCluster({ dir: o.dir }).down();
    });
  cluster
    .command('status')
    .description('which components run')
    .option('--dir <dir>', 'the cluster directory', DEFAULT_DIR)
    .action(async (o: { dir: string }) => {
      const { LocalCluster } = await import('../sim/cluster.js');
      const s = new LocalCluster({ dir: o.dir }).status();
      process.stdout.write(`${JSON.stringify(s, null, 2)}\n`);
      process.exitCode = s.up ? 0 : 1;
    });
}
