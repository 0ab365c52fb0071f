/**
 * Files the code ships with (addons, protos, the bundle, crds/) are found by walking up from the
 * module that needs them: the same lookup works from src/ (tests via build/), dist/ and an
 * installed copy. Returns the first `<dir>/<candidate>` that exists, nearest directory first.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export function findAbove(moduleUrl: string, candidates: string[]): string | undefined {
  for (let dir = dirname(fileURLToPath(moduleUrl)); ; dir = dirname(dir)) {
    for (const c of candidates) if (existsSync(join(dir, c))) return join(dir, c);
    if (dirname(dir) === dir) return undefined;
  }
}

/** As findAbove, but a missing file is an error naming what was looked for. */
export function requireAbove(moduleUrl: string, candidates: string[], hint = 'run npm run build'): string {
  const found = findAbove(moduleUrl, candidates);
  if (!found) throw new Error(`${candidates.join(' or ')} not found above ${fileURLToPath(moduleUrl)}: ${hint}`);
  return found;
}
