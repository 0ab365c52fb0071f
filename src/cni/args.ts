/** CNI_ARGS (`K=V;K=V`): parsed and written with libcni's rules, as an ordered set of pairs. */
import { CniError, ErrorCode } from './errors.js';

export type CniArgs = [key: string, value: string][];

/**
 * How a selection's ipam-claim-reference reaches the delegate's IPAM: this CNI_ARGS key, with the claim
 * as <pod namespace>/<name> (a pod can only use claims of its own namespace). Kept in the attachment's
 * capability arguments under the same key, so that DEL and CHECK pass it too; no delegate declares it,
 * so it never lands in a runtimeConfig.
 */
export const IPAM_CLAIM_ARG = 'K8S_IPAM_CLAIM';

/**
 * Parses CNI_ARGS; every pair is KEY=VALUE with a non-empty key, split at the first `=` (code 4
 * otherwise). A value may hold `=` (base64, `a=b` selectors), as Multus accepts; Go plugins given
 * such a pair refuse it themselves.
 */
export function parseCniArgs(text: string | undefined): CniArgs {
  if (!text) return [];
  return text.split(';').map((pair) => {
    const at = pair.indexOf('=');
    if (at <= 0) throw new CniError(ErrorCode.InvalidEnvironment, 'invalid CNI_ARGS', `invalid pair "${pair}"`);
    return [pair.slice(0, at), pair.slice(at + 1)];
  });
}

/**
 * CNI_ARGS for DEL: the pairs that parse, the rest dropped. A DEL must converge: CNI_ARGS the ADD
 * refused come back unchanged on every DEL the runtime retries, and DEL needs none of them.
 */
export function parseCniArgsLenient(text: string | undefined): CniArgs {
  if (!text) return [];
  return text.split(';').flatMap((pair): CniArgs => {
    const at = pair.indexOf('=');
    return at > 0 ? [[pair.slice(0, at), pair.slice(at + 1)]] : [];
  });
}

/** Writes CNI_ARGS; later duplicates of a key win and keep the first position. */
export function formatCniArgs(args: CniArgs): string {
  return dedupe(args)
    .map(([k, v]) => {
      if (k === '' || k.includes('=') || k.includes(';') || v.includes(';')) {
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

/**
 * The runtime's CNI_ARGS as a meta plugin passes them on to its delegates: a pair whose value holds `=`
 * is kept from them, since plugins built on libcni refuse the whole CNI_ARGS over it ("ARGS: invalid
 * pair"); the meta plugin itself still reads it.
 */
export function argsForDelegates(args: CniArgs): CniArgs {
  return args.filter(([, v]) => !v.includes('='));
}
