/** What the plugin core reports to whoever watches it: in the node daemon, its metrics. */

export interface Observer {
  /** One delegate network's ADD/DEL/CHECK, in seconds. */
  delegate(network: string, command: string, seconds: number, ok: boolean): void;
  /** One request to the API server. */
  apiRequest(verb: string): void;
  /** A pod's network-status write: stored, failed for good, or dropped as stale (the pod was replaced). */
  statusWrite?(result: 'ok' | 'failed' | 'stale', pod: string, detail?: string): void;
}

let current: Observer | undefined;

export function useObserver(observer: Observer | undefined): void {
  current = observer;
}

export function observer(): Observer | undefined {
  return current;
}

/** Runs `work` for one delegate network and reports how long it took. */
export async function observed<T>(network: string, command: string, work: () => Promise<T>): Promise<T> {
  const o = current;
  if (!o) return work();
  const start = process.hrtime.bigint();
  let ok = false;
  try {
    const out = await work();
    ok = true;
    return out;
  } finally {
    o.delegate(network, command, Number(process.hrtime.bigint() - start) / 1e9, ok);
  }
}
