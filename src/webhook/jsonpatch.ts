/** RFC 6902 "add", the only op the mutating side emits, as the API server applies it: for explain's dry run and the tests. */
export function applyJsonPatch(doc: Record<string, unknown>, ops: unknown[]): Record<string, unknown> {
  const out = structuredClone(doc);
  for (const op of ops as { op: string; path: string; value: unknown }[]) {
    if (op.op !== 'add') throw new Error(`unsupported op ${op.op}`);
    const parts = op.path
      .split('/')
      .slice(1)
      .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
    let at: Record<string, unknown> | unknown[] = out;
    for (const p of parts.slice(0, -1)) {
      const next: unknown = Array.isArray(at) ? at[Number(p)] : at[p];
      if (typeof next !== 'object' || next === null) throw new Error(`path ${op.path}: no ${p}`);
      at = next as Record<string, unknown>;
    }
    const last = parts.at(-1)!;
    if (Array.isArray(at)) {
      if (last === '-') at.push(op.value);
      else at.splice(Number(last), 0, op.value);
    } else at[last] = op.value;
  }
  return out;
}
