/** A plain JSON object (not null, not an array): what parsed outside input is checked for before its keys are read. */
export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
