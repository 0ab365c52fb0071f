/** `plexusctl install`: the node install the DaemonSet's init step does, usable outside Kubernetes. */
import type { Command } from 'commander';
import { CniError, ErrorCode } from '../cni/errors.js';
import { install } from '../meta/install.js';
import { emit } from './cni.js';

export function registerInstall(program: Command): void {
  program
    .command('install')
    .description('install the plexus plugin into a CNI bin dir (by temp + rename) and write 00-plexus.conflist for the cluster network found in the conf dir')
    .requiredOption('--cni-bin-dir <dir>', "the runtime's CNI bin dir")
    .requiredOption('--cni-conf-dir <dir>', "the runtime's CNI conf dir; its first conf is the cluster network")
    .option('--mode <mode>', 'oneshot (the runtime execs plexus) or daemon (it execs plexus-shim, served by plexusctl daemon)', 'oneshot')
    .option('--daemon-socket <path>', 'the daemon socket the shim uses (daemon mode)')
    .option('--kubeconfig <file>', 'kubeconfig for the plugin (default: in-cluster credentials)')
    .option('--cni-dir <dir>', 'where the plugin keeps its attachment records', '/var/lib/cni/plexus')
    .option('--multus-conf-dir <dir>', 'where NADs without spec.config find their conf files (Multus confDir)')
    .action((o: { cniBinDir: string; cniConfDir: string; mode: string; daemonSocket?: string; kubeconfig?: string; cniDir: string; multusConfDir?: string }) =>
      emit(async () => {
        if (o.mode !== 'oneshot' && o.mode !== 'daemon') throw new CniError(ErrorCode.InvalidEnvironment, 'invalid --mode', `"${o.mode}": expected oneshot or daemon`);
        return install({
          mode: o.mode,
          ...(o.daemonSocket ? { daemonSocket: o.daemonSocket } : {}),
          cniBinDir: o.cniBinDir,
          cniConfDir: o.cniConfDir,
          cniDir: o.cniDir,
          ...(o.kubeconfig ? { kubeconfig: o.kubeconfig } : {}),
          ...(o.multusConfDir ? { confDir: o.multusConfDir } : {}),
        });
      }),
    );
}
