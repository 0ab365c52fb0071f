/** CNI_ARGS (`K=V;K=V`): parsed and written with libcni's rules, as an ordered set of pairs. */
import { CniError, ErrorCode } from './errors.js';

export type CniArgs = [key: string, value: string][];

/** Parses CNI_ARGS; every pair must split on `=` into exactly two parts (code 4 otherwise). */
export function parseCniArgs(text: string | undefined): CniArgs {
  if (!text) return [];
  return text.split(';').map((pair) => {
    const parts = pair.split('=');
    if (parts.length !== 2 || parts[0] === '') {
      throw new CniError(ErrorCode.InvalidEnvironment, 'invalid CNI_ARGS', `invalid pair "${pair}"`);
    }
    return [parts[0]!, parts[1]!];
  });
}

/** Writes CNI_ARGS; later duplicates of a key win and keep the first position. */
export function formatCniArgs(args: CniArgs): string {
  return dedupe(args)
    .map(([k, v]) => {
      if (k.includes('=') || k.includes(';') || v.includes('=') || v.includes(';')) {
        throw new CniError(ErrorCode.InvalidEnvironment, 'invalid CNI_ARGS', `"${k}=${v}" cannot be encoded`);
      }
      return `${k}=${v}`;
    })
    .join(';');
}

export function dedupe(args: CniArgs): CniArgs {
  const index = new Map<string, number>();
  const out: CniArgs = [];
  for (const [k, v] of args) {
    const at = index.get(k);
    if (at === undefined) {
      index.set(k, out.length);
      out.push([k, v]);
    } else out[at] = [k, v];
  }
  return out;
}

export function getArg(args: CniArgs, key: string): string | undefined {
  return dedupe(args).find(([k]) => k === key)?.[1];
}

/**
 * Reference plugins reject unknown keys unless IgnoreUnknown is true, so a runtime that passes
 * keys of its own (K8S_*, IP, MAC) must keep the caller's IgnoreUnknown or add `IgnoreUnknown=1`.
 */
export function withIgnoreUnknown(args: CniArgs): CniArgs {
  if (!args.length || args.some(([k]) => k.toLowerCase() === 'ignoreunknown')) return args;
  return [['IgnoreUnknown', '1'], ...args];
}
