/** `plexusctl dra-driver`: the DRA kubelet plugin for SR-IOV VFs (docs/dra.md). */
import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { HOST_ROOT_ENV } from '../sriov/host.js';
import { integerOption } from './options.js';
import { defaultConfigPath } from './sriov.js';

interface Flags {
  nodeName?: string;
  kubeconfig?: string;
  config?: string;
  devicePluginConfig?: string;
  sysfsRoot?: string;
  kubeletDir: string;
  stateDir: string;
  cdiDir: string;
  devinfoDir: string;
  rediscoverSeconds: number;
  metricsAddress: string;
  logLevel: string;
}

export function registerDra(program: Command): void {
  program
    .command('dra-driver')
    .description('the DRA kubelet plugin (driver sriov.plexus.network): ResourceSlices from the device plugin discovery and config, NodePrepareResources / NodeUnprepareResources')
    .option('--node-name <name>', 'this node (its ResourceSlices, its claims)', process.env.NODE_NAME)
    .option('--kubeconfig <file>', 'kubeconfig (default: in-cluster credentials)')
    .option('--config <file>', 'pools (the device plugin config.json; default: device-plugin/config.json)')
    .option('--device-plugin-config <file>', "the device plugin's config.json, when both run on the node: VFs its pools select are never published")
    .option('--sysfs-root <dir>', `host root holding sys/, proc/ and dev/ (default: $${HOST_ROOT_ENV} or /)`)
    .option('--kubelet-dir <dir>', 'holds plugins/ and plugins_registry/', '/var/lib/kubelet')
    .option('--state-dir <dir>', 'the checkpoint of prepared claims', '/var/lib/plexus/dra')
    .option('--cdi-dir <dir>', 'CDI specs of prepared claims', '/var/run/cdi')
    .option('--devinfo-dir <dir>', 'device-info root: files go to <dir>/dp/', '/var/run/k8s.cni.cncf.io/devinfo')
    .option('--rediscover-seconds <n>', 'rediscovery and health period (the slices follow)', integerOption(1), 5)
    .option('--metrics-address <host:port>', 'serve /metrics (Prometheus) and /debug (published devices, prepared claims) here', '127.0.0.1:9093')
    .option('--log-level <level>', 'pino log level (JSON logs on stderr)', 'info')
    .action(async (o: Flags) => {
      // Loaded only by this daemon.
      const pino = (await import('pino')).default;
      const { ApiClient } = await import('../k8s/client.js');
      const { inClusterConfig, loadKubeconfig } = await import('../k8s/kubeconfig.js');
      const { openSriovHost } = await import('./sriov-host.js');
      const { DraDriver } = await import('../dra/driver.js');
      const { draMetrics, serveDraMetrics } = await import('../dra/metrics.js');
      const metrics = draMetrics();
      const log = pino({ level: o.logLevel, base: { component: 'plexus-dra-driver' } }, pino.destination(2));
      if (!o.nodeName) throw new Error('--node-name (or NODE_NAME) is required');
      const configFile = o.config ?? defaultConfigPath();
      if (!configFile || !existsSync(configFile)) throw new Error(`--config ${configFile ?? '(none)'}: no such file`);
      const cfg = o.kubeconfig ? await loadKubeconfig(o.kubeconfig) : inClusterConfig(process.env);
      if (!cfg) throw new Error('no API credentials: --kubeconfig, or run in a pod');
      const driver = new DraDriver({
        api: new ApiClient(cfg, 30_000, undefined, 'plexus-dra-driver'),
        nodeName: o.nodeName,
        host: await openSriovHost(o.sysfsRoot ?? process.env[HOST_ROOT_ENV] ?? '/'),
        configFile,
        ...(o.devicePluginConfig ? { devicePluginConfig: o.devicePluginConfig } : {}),
        kubeletDir: o.kubeletDir,
        stateDir: o.stateDir,
        cdiDir: o.cdiDir,
        devinfoDir: o.devinfoDir,
        log: (level, msg, fields) => log[level](fields ?? {}, msg),
        observe: metrics.observer,
      });
      await driver.start(o.rediscoverSeconds);
      const served = await serveDraMetrics(driver, metrics.registry, o.metricsAddress);
      log.info({ node: o.nodeName, metrics: served.url }, 'serving');
      const stop = () => {
        served.close();
        driver.stop();
        process.exit(0);
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
}
