/**
 * Delegates left running by an invocation that died mid-ADD (a SIGKILLed node daemon, a runtime that
 * killed `plexus` at its deadline). They go on as orphans; a DEL that ran before they finish would leave
 * whatever they then make. They are found by the environment every delegate is given (CNI_CONTAINERID,
 * CNI_COMMAND), and the sandbox's DEL waits for them first.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

/** Whether process `pid` runs an ADD for `containerID` (a zombie's environ reads empty; a gone one throws). */
function addingFor(pid: number, containerID: string): boolean {
  let environ: string;
  try {
    environ = readFileSync(`/proc/${pid}/environ`, 'latin1');
  } catch {
    return false;
  }
  const vars = environ.split('\0');
  return vars.includes(`CNI_CONTAINERID=${containerID}`) && vars.includes('CNI_COMMAND=ADD');
}

/** Processes (other than this one) running an ADD for `containerID`: a delegate and anything it started. */
export function addsInFlight(containerID: string): number[] {
  return readdirSync('/proc')
    .map(Number)
    .filter((pid) => Number.isInteger(pid) && pid !== process.pid && addingFor(pid, containerID));
}

/**
 * Waits until no process runs an ADD for `containerID`, at most `timeoutMs`. Returns the pids still
 * running then (empty when all are done). Only the processes found are watched (a pid reused by another
 * process no longer matches); once they are gone, /proc is read again for any they started meanwhile.
 */
export async function waitForAddsInFlight(containerID: string, timeoutMs: number, pollMs = 20): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  let pids = addsInFlight(containerID);
  while (pids.length && Date.now() < deadline) {
    await sleep(pollMs);
    pids = pids.filter((pid) => addingFor(pid, containerID));
    if (!pids.length) pids = addsInFlight(containerID);
  }
  return pids;
}
