import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Polls an async `probe` until it gives something other than undefined or false (a probe that throws
 * has not got there yet), or fails after `ms` naming what it waited for.
 */
export async function pollUntil<T>(what: string, probe: () => Promise<T | undefined | false>, ms: number, everyMs = 250): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}
