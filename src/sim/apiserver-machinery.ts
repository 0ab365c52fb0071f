/**
 * The API machinery of the API server double that is not about storage: RFC 7386 merge and RFC 6902
 * JSON patches, field and label selectors, and CRD schemas made plain JSON Schema.
 */
import { isObject } from '../util/object.js';

/** An API error: its HTTP code and the Status reason the server answers with. */
export class HttpError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

/** RFC 7386 JSON merge patch. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return patch;
  const out: Record<string, unknown> = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

function pointer(path: string): string[] {
  if (!path.startsWith('/')) throw new HttpError(422, 'Invalid', `bad JSON pointer "${path}"`);
  return path
    .slice(1)
    .split('/')
    .map((p) => p.replaceAll('~1', '/').replaceAll('~0', '~'));
}

/** RFC 6902 JSON patch: add, remove, replace, test (copy and move via add/remove). */
export function jsonPatch(doc: unknown, ops: unknown): unknown {
  if (!Array.isArray(ops)) throw new HttpError(400, 'BadRequest', 'a JSON patch must be a list of operations');
  let root = structuredClone(doc);
  const walk = (path: string[], create: boolean): [Record<string, unknown> | unknown[], string] => {
    let cur: unknown = root;
    for (const seg of path.slice(0, -1)) {
      const next: unknown = Array.isArray(cur) ? cur[Number(seg)] : (cur as Record<string, unknown>)[seg];
      if (next === undefined) {
        if (!create) throw new HttpError(422, 'Invalid', `path /${path.join('/')} does not exist`);
      }
      cur = next;
    }
    if (typeof cur !== 'object' || cur === null) throw new HttpError(422, 'Invalid', `path /${path.join('/')} does not exist`);
    return [cur as Record<string, unknown> | unknown[], path.at(-1)!];
  };
  const get = (path: string[]): unknown => path.reduce<unknown>((cur, seg) => (Array.isArray(cur) ? cur[Number(seg)] : isObject(cur) ? cur[seg] : undefined), root);
  for (const op of ops as { op: string; path: string; value?: unknown; from?: string }[]) {
    const path = pointer(op.path);
    const apply = (kind: string, value?: unknown): void => {
      if (path.length === 0) {
        if (kind === 'remove') throw new HttpError(422, 'Invalid', 'cannot remove the root');
        root = value;
        return;
      }
      const [parent, key] = walk(path, false);
      if (Array.isArray(parent)) {
        const i = key === '-' ? parent.length : Number(key);
        if (kind === 'add') parent.splice(i, 0, value);
        else if (kind === 'remove') parent.splice(i, 1);
        else parent[i] = value;
      } else {
        if (kind !== 'add' && !(key in parent)) throw new HttpError(422, 'Invalid', `path ${op.path} does not exist`);
        if (kind === 'remove') delete parent[key];
        else parent[key] = value;
      }
    };
    switch (op.op) {
      case 'add':
      case 'replace':
        apply(op.op, structuredClone(op.value));
        break;
      case 'remove':
        apply('remove');
        break;
      case 'test':
        if (JSON.stringify(get(path)) !== JSON.stringify(op.value)) throw new HttpError(422, 'Invalid', `test failed at ${op.path}`);
        break;
      case 'copy':
      case 'move': {
        const from = pointer(op.from ?? '');
        const value = structuredClone(get(from));
        if (op.op === 'move') {
          const [parent, key] = walk(from, false);
          if (Array.isArray(parent)) parent.splice(Number(key), 1);
          else delete parent[key];
        }
        apply('add', value);
        break;
      }
      default:
        throw new HttpError(422, 'Invalid', `unknown JSON patch op "${op.op}"`);
    }
  }
  return root;
}

/** `k=v,k2!=v2` for the fields Plexus and kubectl filter on. */
/**
 * A field or label selector as kube-apiserver reads it: comma-separated terms `k=v`, `k==v`, `k!=v`, and
 * for labels the set-based `k in (a,b)`, `k notin (a,b)`, `k` (exists) and `!k` (does not exist).
 */
export function selector<O>(text: string | null, read: (o: O, key: string) => string | undefined): (o: O) => boolean {
  if (!text) return () => true;
  // Commas inside a set's parentheses do not end a term.
  const terms = text.match(/[^,(]+(?:\([^)]*\))?/g) ?? [];
  const tests = terms.map((t): ((o: O) => boolean) => {
    const set = /^\s*(\S+)\s+(in|notin)\s*\(([^)]*)\)\s*$/.exec(t);
    if (set) {
      const [, k = '', op, list = ''] = set;
      const values = list.split(',').map((v) => v.trim());
      return op === 'in' ? (o) => values.includes(read(o, k) ?? '\0') : (o) => !values.includes(read(o, k) ?? '\0');
    }
    const neq = t.includes('!=');
    if (!neq && !t.includes('=')) {
      const k = t.trim();
      return k.startsWith('!') ? (o) => read(o, k.slice(1).trim()) === undefined : (o) => read(o, k) !== undefined;
    }
    const [k, v] = t.split(neq ? '!=' : t.includes('==') ? '==' : '=');
    const key = (k ?? '').trim();
    const value = (v ?? '').trim();
    return (o) => (read(o, key) === value) !== neq;
  });
  return (o) => tests.every((test) => test(o));
}

export function fieldValue(o: unknown, key: string): string | undefined {
  return key.split('.').reduce<unknown>((cur, seg) => (isObject(cur) ? cur[seg] : undefined), o) as string | undefined;
}

/** Kubernetes schema extensions (x-kubernetes-*) are not JSON Schema keywords. */
export function stripK8sExtensions(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(stripK8sExtensions);
  if (!isObject(schema)) return schema;
  return Object.fromEntries(
    Object.entries(schema)
      .filter(([k]) => !k.startsWith('x-kubernetes-'))
      .map(([k, v]) => [k, stripK8sExtensions(v)]),
  );
}
