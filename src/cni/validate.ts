/**
 * Validation of outside input against the project's JSON Schemas. The validators are compiled at
 * build time (ajv standalone, scripts/gen-validators.mjs) so an exec'd plugin never loads or runs
 * ajv's compiler: that alone cost ~100 ms per exec.
 */
import { CniError } from './errors.js';
import * as validators from './generated/validators.js';
import type { CompiledValidator, ValidationError } from './generated/validators.js';

export type SchemaName = 'confList' | 'singleConf' | 'pluginFile' | 'pluginStdin' | 'result' | 'meta' | 'pod' | 'nad';

function describe(errors: ValidationError[] | null | undefined): string {
  const e = errors?.[0];
  if (!e) return 'invalid';
  const where = e.instancePath || '(root)';
  if (e.keyword === 'required') return `${where}: missing required key "${String(e.params.missingProperty)}"`;
  return `${where}: ${e.message ?? 'invalid'}`;
}

/** Validates `value` against the named schema; throws CniError(code) naming the first offending field. */
export function validate<T>(name: SchemaName, value: unknown, code: number, what: string): T {
  const fn: CompiledValidator = validators[name];
  if (!fn(value)) throw new CniError(code, `invalid ${what}`, describe(fn.errors));
  return value as T;
}
