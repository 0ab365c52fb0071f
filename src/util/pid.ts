/** Processes known only by pid (started detached, by another process of ours). */
import { setTimeout as sleep } from 'node:timers/promises';

export function pidAlive(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** SIGTERM, up to `graceMs` for it to exit, then SIGKILL. */
export async function stopPid(pid: number | undefined, graceMs = 10_000): Promise<void> {
  if (!pidAlive(pid)) return;
  process.kill(pid!, 'SIGTERM');
  for (let waited = 0; waited < graceMs && pidAlive(pid); waited += 100) await sleep(100);
  if (pidAlive(pid)) process.kill(pid!, 'SIGKILL');
  for (let i = 0; i < 50 && pidAlive(pid); i++) await sleep(100);
}
