/** The meta plugin's log file (Multus `logFile` + `logOptions`). */
import { existsSync, renameSync, rmSync, statSync } from 'node:fs';
import type { LogOptions } from './conf.js';

/**
 * Multus `logOptions` rotation by size: past `maxSize` MB (default 100) the file becomes `.1`, older
 * ones shift up, at most `maxBackups` (default 5) are kept. `maxAge` and `compress` are not applied.
 */
export function rotateLog(file: string, opts: LogOptions = {}): void {
  const size = statSync(file, { throwIfNoEntry: false })?.size ?? 0;
  if (size < (opts.maxSize ?? 100) * 1024 * 1024) return;
  const backups = Math.max(opts.maxBackups ?? 5, 0);
  rmSync(`${file}.${backups}`, { force: true });
  for (let i = backups - 1; i >= 1; i--) if (existsSync(`${file}.${i}`)) renameSync(`${file}.${i}`, `${file}.${i + 1}`);
  if (backups > 0) renameSync(file, `${file}.1`);
  else rmSync(file, { force: true });
}
