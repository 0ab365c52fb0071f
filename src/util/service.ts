/**
 * A background job of a long-running process (the node daemon's IPAM housekeeping, policy engine,
 * status recovery…): started and stopped by the process's runner, in its component's folder, so a new
 * job is a new service, not lines in the process's main.
 */

/** The structured log a service writes to (pino's shape: fields first, then the message). */
export interface Log {
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
  error(fields: Record<string, unknown>, msg: string): void;
}

export interface Service {
  readonly name: string;
  /** Starts the job; resolves once it runs (it must not wait for the API server: DEL serves without it). */
  start(): Promise<void>;
  /** Stops it; what it holds (a Lease, a watch) is given back. */
  stop(): Promise<void>;
  /** Whether it is ready (listed what it needs), for /readyz; a service without one is always ready. */
  ready?(): boolean;
}

/**
 * Runs `task` every `ms` (each wait stretched by a random 0-`jitter` share of it, so that a thousand
 * daemons started together do not tick together), never two at once. The first run is after one wait.
 */
export function every(ms: number, jitter: number, task: () => Promise<void>): { stop(): void } {
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const next = () => {
    if (stopped) return;
    timer = setTimeout(() => void task().finally(next), ms * (1 + jitter * Math.random()));
    timer.unref();
  };
  next();
  return {
    stop: () => {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
