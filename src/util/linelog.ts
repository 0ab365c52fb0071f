/**
 * The exec'd plugins' log: one timestamped line per event, filtered by a level, appended to the file
 * the conf names (Multus's `logFile`/`logLevel`/`logOptions`, sriov-cni's `logFile`/`logLevel`), and
 * optionally copied to stderr. Hand-written rather than pino: it is on the per-pod path, where
 * loading pino would cost more than the whole log (docs/architecture.md); the daemons use pino.
 */
import { appendFileSync, existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname } from 'node:path';

export interface RotateOptions {
  /** MB (default 100). */
  maxSize?: number;
  /** Default 5. */
  maxBackups?: number;
}

/**
 * Multus `logOptions` rotation by size: past `maxSize` MB the file becomes `.1`, older ones shift up,
 * at most `maxBackups` are kept. (`maxAge` and `compress` are not applied.)
 */
export function rotateLog(file: string, opts: RotateOptions = {}): void {
  const size = statSync(file, { throwIfNoEntry: false })?.size ?? 0;
  if (size < (opts.maxSize ?? 100) * 1024 * 1024) return;
  const backups = Math.max(opts.maxBackups ?? 5, 0);
  rmSync(`${file}.${backups}`, { force: true });
  for (let i = backups - 1; i >= 1; i--) if (existsSync(`${file}.${i}`)) renameSync(`${file}.${i}`, `${file}.${i + 1}`);
  if (backups > 0) renameSync(file, `${file}.1`);
  else rmSync(file, { force: true });
}

export interface LineLogOptions<L extends string> {
  /** Most severe first: a line is written when its level is at or before the threshold. */
  levels: readonly L[];
  /** The conf's threshold; one not in `levels` counts as `fallback`. */
  level: string | undefined;
  fallback: L;
  file?: string;
  /** Rotation before each write (Multus `logOptions`). */
  rotate?: RotateOptions;
  /** Create the file's directory (sriov-cni does). */
  createDir?: boolean;
  /** Copy each line to stderr with this prefix. */
  stderrPrefix?: string;
}

/** A logger; writing never throws (logging must never fail an attachment). */
export function lineLogger<L extends string>(o: LineLogOptions<L>): (level: L, line: string) => void {
  const known = o.levels.indexOf(o.level as L);
  const max = known < 0 ? o.levels.indexOf(o.fallback) : known;
  return (level, line) => {
    if (o.levels.indexOf(level) > max || (!o.file && o.stderrPrefix === undefined)) return;
    const text = `${new Date().toISOString()} [${level}] ${line}\n`;
    if (o.stderrPrefix !== undefined) process.stderr.write(`${o.stderrPrefix}${text}`);
    if (!o.file) return;
    try {
      if (o.createDir) mkdirSync(dirname(o.file), { recursive: true });
      if (o.rotate) rotateLog(o.file, o.rotate);
      appendFileSync(o.file, text);
    } catch {
      /* logging never fails an attachment */
    }
  };
}
