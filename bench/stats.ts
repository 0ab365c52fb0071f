/** Small figures shared by the benches: quantiles of samples, a process's resident memory. */
import { readFileSync } from 'node:fs';

export function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!;
}

export function rssMiB(pid: number): number {
  return statusMiB(pid, 'VmRSS:');
}

/** A kB figure of /proc/<pid>/status (VmRSS:, VmHWM: …) in MiB. */
export function statusMiB(pid: number, key: string): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith(key));
  return Number(line?.split(/\s+/)[1] ?? 0) / 1024;
}
