/** Option parsing shared by the plexusctl commands: a bad value is a usage error, said before anything runs. */
import { InvalidArgumentError } from 'commander';

/** An integer option within [min, max]; commander reports a bad value as "option '…' argument '…' is invalid". */
export function integerOption(min: number, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^-?\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(max === Number.MAX_SAFE_INTEGER ? `expected an integer ≥ ${min}` : `expected an integer from ${min} to ${max}`);
    }
    return n;
  };
}

/** A thrown error as one line for a person at a terminal (the stack only with PLEXUS_DEBUG=1). */
export function errorLine(err: unknown): string {
  if (process.env.PLEXUS_DEBUG === '1' && err instanceof Error && err.stack) return err.stack;
  const e = err as { msg?: unknown; details?: unknown; message?: unknown };
  if (typeof e.msg === 'string') return typeof e.details === 'string' && e.details ? `${e.msg}: ${e.details}` : e.msg;
  return err instanceof Error ? err.message : String(err);
}
