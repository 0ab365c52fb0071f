/**
 * Delegates left running by an invocation that died mid-ADD (a SIGKILLed node daemon, a runtime that
 * killed `plexus` at its deadline). They go on as orphans; a DEL that ran before they finish would leave
 * whatever they then make. They are found by the environment every delegate is given (CNI_CONTAINERID,
 * CNI_COMMAND), and the sandbox's DEL waits for them first.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

/** Processes (other than this one) running an ADD for `containerID`: a delegate and anything it started. */
export function addsInFlight(containerID: string, proc = '/proc'): number[] {
  const wanted = [`CNI_CONTAINERID=${containerID}`, 'CNI_COMMAND=ADD'];
  const pids: number[] = [];
  for (const entry of readdirSync(proc)) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    let environ: string;
    try {
      // A zombie's environ reads empty; a process gone meanwhile throws.
      environ = readFileSync(`${proc}/${entry}/environ`, 'latin1');
    } catch {
      continue;
    }
    const vars = environ.split('\0');
    if (wanted.every((v) => vars.includes(v))) pids.push(pid);
  }
  return pids;
}

/**
 * Waits until no process runs an ADD for `containerID`, at most `timeoutMs`. Returns the pids still
 * running then (empty when all are done).
 */
export async function waitForAddsInFlight(containerID: string, timeoutMs: number, pollMs = 20): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pids = addsInFlight(containerID);
    if (!pids.length || Date.now() >= deadline) return pids;
    await sleep(pollMs);
  }
}
