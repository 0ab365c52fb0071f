/** `plexusctl install`: the node install the DaemonSet's init step does, usable outside Kubernetes. */
import type { Command } from 'commander';
import { CniError, ErrorCode } from '../cni/errors.js';
import { connect } from 'node:net';
import { DEFAULT_DAEMON_SOCKET } from '../daemon/protocol.js';
import { install, uninstall } from '../meta/install.js';
import { emit } from './cni.js';

export function registerInstall(program: Command): void {
  program
    .command('install')
    .description('install the plexus plugin into a CNI bin dir (by temp + rename) and write 00-plexus.conflist for the cluster network found in the conf dir')
    .requiredOption('--cni-bin-dir <dir>', "the runtime's CNI bin dir")
    .requiredOption('--cni-conf-dir <dir>', "the runtime's CNI conf dir; its first conf is the cluster network")
    .option(
      '--mode <mode>',
      'daemon (the runtime execs the static plexus-shim, served by plexusctl daemon: the fast path, and the default) or oneshot (the runtime execs plexus, a Node process per pod operation: for nodes where no daemon can run)',
      'daemon',
    )
    .option('--daemon-socket <path>', 'the daemon socket the shim uses (daemon mode)')
    .option('--kubeconfig <file>', 'kubeconfig for the plugin (default: in-cluster credentials)')
    .option('--cni-dir <dir>', 'where the plugin keeps its attachment records', '/var/lib/cni/plexus')
    .option('--multus-conf-dir <dir>', 'where NADs without spec.config find their conf files (Multus confDir)')
    .option('--kubelet-dir <dir>', "kubelet's --root-dir when not /var/lib/kubelet (its PodResources socket and device-plugin checkpoint are below it)")
    .option('--device-info-dir <dir>', 'device-info root when not /var/run/k8s.cni.cncf.io/devinfo (as the device plugin was given)')
    .option('--whereabouts', 'daemon mode: also install the IPAM shim as "whereabouts", so whereabouts NADs use Plexus IPAM unchanged')
    .action(
      (o: {
        cniBinDir: string;
        cniConfDir: string;
        mode: string;
        daemonSocket?: string;
        kubeconfig?: string;
        cniDir: string;
        multusConfDir?: string;
        kubeletDir?: string;
        deviceInfoDir?: string;
        whereabouts?: boolean;
      }) =>
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
            ...(o.kubeletDir ? { kubeletDir: o.kubeletDir } : {}),
            ...(o.deviceInfoDir ? { deviceInfoDir: o.deviceInfoDir } : {}),
            ...(o.whereabouts ? { whereabouts: true } : {}),
          });
        }),
    );
}

/** Whether a process accepts connections on the unix socket (a daemon still running). */
function serving(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = connect(socket);
    c.once('connect', () => (c.destroy(), resolve(true)));
    c.once('error', () => resolve(false));
  });
}

export function registerUninstall(program: Command): void {
  program
    .command('uninstall')
    .description(
      "undo plexusctl install: remove 00-plexus.conflist (the runtime's first conf is the cluster network's again), plexus-shim and the launchers, and put back a sriov binary install replaced; run it after the node daemon stopped (deploy/README.md)",
    )
    .requiredOption('--cni-bin-dir <dir>', "the runtime's CNI bin dir")
    .requiredOption('--cni-conf-dir <dir>', "the runtime's CNI conf dir")
    .option('--cni-dir <dir>', 'the attachment records: pods still attached through Plexus stop the uninstall', '/var/lib/cni/plexus')
    .option('--daemon-socket <path>', 'a node daemon still serving here stops the uninstall (it would write the meta conf again)', DEFAULT_DAEMON_SOCKET)
    .option('--force', "uninstall although pods are attached (their secondaries then get only the runtime's DEL of the cluster network)")
    .option('--keep-binaries', 'remove only the meta conf')
    .action((o: { cniBinDir: string; cniConfDir: string; cniDir: string; daemonSocket: string; force?: boolean; keepBinaries?: boolean }) =>
      emit(async () => {
        if (await serving(o.daemonSocket)) {
          throw new CniError(
            ErrorCode.TryAgainLater,
            'the node daemon is still running',
            `it serves ${o.daemonSocket} and would write the meta conf again: stop it first (kubectl delete -f deploy/plexus-daemon.yaml)`,
          );
        }
        return uninstall({ cniBinDir: o.cniBinDir, cniConfDir: o.cniConfDir, cniDir: o.cniDir, force: !!o.force, keepBinaries: !!o.keepBinaries });
      }),
    );
}
