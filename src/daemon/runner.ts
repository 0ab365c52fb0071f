/** The node daemon's services (util/service.ts), started in order and stopped in reverse. */
import type { Log, Service } from '../util/service.js';

export class ServiceRunner {
  private readonly services: Service[] = [];
  private readonly started: Service[] = [];

  constructor(private readonly log: Log) {}

  add(service: Service | undefined): this {
    if (service) this.services.push(service);
    return this;
  }

  /** Starts each in turn; one that fails to start is logged and the others still start (the CNI endpoint must serve). */
  async start(): Promise<void> {
    for (const s of this.services) {
      try {
        await s.start();
        this.started.push(s);
      } catch (err) {
        this.log.error({ service: s.name, error: err instanceof Error ? err.message : String(err) }, 'service not started');
      }
    }
  }

  async stop(): Promise<void> {
    for (const s of this.started.splice(0).reverse()) {
      await s.stop().catch((err: unknown) => this.log.warn({ service: s.name, error: err instanceof Error ? err.message : String(err) }, 'service did not stop cleanly'));
    }
  }

  /** Services that are not ready, by name: /readyz tells them. */
  notReady(): string[] {
    return this.services.filter((s) => s.ready && !s.ready()).map((s) => s.name);
  }
}
