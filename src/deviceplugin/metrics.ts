/** The device plugin's /metrics (prom-client) and /debug (pools, health reasons, exclusions). */
import { Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { serveMetrics } from '../util/metrics-http.js';
import type { SriovDevicePlugin } from './plugin.js';

export async function serveDevicePluginMetrics(plugin: SriovDevicePlugin, address: string): Promise<{ url: string; close(): void }> {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  new Gauge({
    name: 'plexus_dp_devices',
    help: 'devices advertised to kubelet, by resource and health',
    labelNames: ['resource', 'health'],
    registers: [registry],
    collect() {
      this.reset();
      for (const p of plugin.debug().pools) {
        this.set({ resource: p.resource, health: 'Healthy' }, p.devices.filter((d) => d.healthy).length);
        this.set({ resource: p.resource, health: 'Unhealthy' }, p.devices.filter((d) => !d.healthy).length);
      }
    },
  });
  new Gauge({
    name: 'plexus_dp_unhealthy_device',
    help: 'an unhealthy device, with the reason (1 while it is unhealthy)',
    labelNames: ['resource', 'device', 'reason'],
    registers: [registry],
    collect() {
      this.reset();
      for (const p of plugin.debug().pools) for (const d of p.devices.filter((x) => !x.healthy)) this.set({ resource: p.resource, device: d.id, reason: d.reason ?? '' }, 1);
    },
  });
  new Gauge({
    name: 'plexus_dp_config_valid',
    help: '0 while the config file is invalid (the last good one is in use)',
    registers: [registry],
    collect() {
      this.set(plugin.debug().configError ? 0 : 1);
    },
  });
  const { server, base } = await serveMetrics(registry, address, () => plugin.debug());
  return { url: base, close: () => server.close() };
}
