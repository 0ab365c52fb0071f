/** The DRA driver's /metrics (prom-client) and /debug (published devices, prepared claims). */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { serveMetrics } from '../util/metrics-http.js';
import type { DraDriver, DraObserver } from './driver.js';

/** The metrics the driver reports into, before it exists (its options take the observer). */
export function draMetrics(): { registry: Registry; observer: DraObserver } {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const seconds = new Histogram({
    name: 'plexus_dra_call_duration_seconds',
    help: 'NodePrepareResources / NodeUnprepareResources per claim, by result',
    labelNames: ['call', 'result'],
    buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
    registers: [registry],
  });
  const errors = new Counter({ name: 'plexus_dra_call_errors_total', help: 'claims a prepare or unprepare failed for (kubelet retries)', labelNames: ['call'], registers: [registry] });
  return {
    registry,
    observer: (call, ok, s) => {
      seconds.observe({ call, result: ok ? 'ok' : 'error' }, s);
      if (!ok) errors.inc({ call });
    },
  };
}

export async function serveDraMetrics(driver: DraDriver, registry: Registry, address: string): Promise<{ url: string; close(): void }> {
  new Gauge({
    name: 'plexus_dra_published_devices',
    help: "devices in the node's ResourceSlices, by pool",
    labelNames: ['pool'],
    registers: [registry],
    collect() {
      this.reset();
      for (const p of driver.debug().pools) this.set({ pool: p.pool }, p.devices.length);
    },
  });
  new Gauge({
    name: 'plexus_dra_claims',
    help: 'claims in the checkpoint: prepared, or preparing (cut short: a retry finishes it, an unprepare undoes it)',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      const claims = Object.values(driver.debug().claims);
      this.set({ state: 'prepared' }, claims.filter((c) => !c.state).length);
      this.set({ state: 'preparing' }, claims.filter((c) => c.state === 'preparing').length);
    },
  });
  const { server, base } = await serveMetrics(registry, address, () => driver.debug());
  return { url: base, close: () => server.close() };
}
