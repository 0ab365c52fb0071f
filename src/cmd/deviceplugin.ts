/** `plexusctl device-plugin`: the SR-IOV device plugin daemon. */
import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { HOST_ROOT_ENV } from '../sriov/host.js';
import { integerOption } from './options.js';
import { defaultConfigPath } from './sriov.js';

interface Flags {
  config?: string;
  sysfsRoot?: string;
  kubeletDir: string;
  devinfoDir: string;
  stateDir: string;
  resourcePrefix: string;
  cdiDir?: string;
  resyncSeconds: number;
  metricsAddress: string;
  logLevel: string;
}

export function registerDevicePlugin(program: Command): void {
  program
    .command('device-plugin')
    .description('serve SR-IOV pools to kubelet (device plugin API v1beta1), one socket per pool; config.json as sriov-network-device-plugin reads it')
    .option('--config <file>', 'pools (sriov-network-device-plugin config.json; default: device-plugin/config.json)')
    .option('--sysfs-root <dir>', `host root holding sys/, proc/ and dev/ (default: $${HOST_ROOT_ENV} or /)`)
    .option('--kubelet-dir <dir>', 'holds device-plugins/, plugins_registry/ and pod-resources/', '/var/lib/kubelet')
    .option('--devinfo-dir <dir>', 'device-info root: files go to <dir>/dp/', '/var/run/k8s.cni.cncf.io/devinfo')
    .option('--state-dir <dir>', 'persisted inventory (pool membership survives restarts)', '/var/lib/plexus/device-plugin')
    .option('--resource-prefix <prefix>', 'for pools without resourcePrefix', 'intel.com')
    .option('--cdi-dir <dir>', 'answer Allocate with CDI devices (specs written here, e.g. /var/run/cdi) instead of device nodes')
    .option('--resync-seconds <n>', 'rediscovery, health and config reload period', integerOption(1), 5)
    .option('--metrics-address <host:port>', 'serve /metrics (Prometheus) and /debug (pools, health reasons, exclusions) here', '127.0.0.1:9092')
    .option('--log-level <level>', 'pino log level (JSON logs on stderr)', 'info')
    .action(async (o: Flags) => {
      // Loaded only by this daemon.
      const pino = (await import('pino')).default;
      const { SriovDevicePlugin } = await import('../deviceplugin/plugin.js');
      const { openSriovHost } = await import('./sriov-host.js');
      const { serveDevicePluginMetrics } = await import('../deviceplugin/metrics.js');
      const log = pino({ level: o.logLevel, base: { component: 'plexus-device-plugin' } }, pino.destination(2));
      const configFile = o.config ?? defaultConfigPath();
      if (!configFile) throw new Error('no --config and no device-plugin/config.json next to plexusctl');
      if (!existsSync(configFile)) throw new Error(`--config ${configFile}: no such file`);
      const host = await openSriovHost(o.sysfsRoot ?? process.env[HOST_ROOT_ENV] ?? '/');
      const plugin = new SriovDevicePlugin({
        configFile,
        host,
        kubeletDir: o.kubeletDir,
        devinfoDir: o.devinfoDir,
        stateDir: o.stateDir,
        resourcePrefix: o.resourcePrefix,
        ...(o.cdiDir ? { cdiDir: o.cdiDir } : {}),
        resyncMs: o.resyncSeconds * 1000,
        log: (level, msg, fields) => log[level](fields ?? {}, msg),
      });
      await plugin.start();
      const served = await serveDevicePluginMetrics(plugin, o.metricsAddress);
      log.info({ mode: plugin.mode, hostRoot: host.sysfs.root, url: served.url }, 'serving');
      const stop = (): void => {
        void plugin.stop().then(() => process.exit(0));
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
}
