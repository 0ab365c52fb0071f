/**
 * Imports point down the layers written in docs/architecture.md ("Which folder may import which"): a
 * folder imports only folders of lower layers, type-only imports and dynamic imports included, so no
 * cycle between folders can come back. Read from the sources with TypeScript's own pre-processor.
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { repoRoot } from '../support/plugins.js';

/** Lower numbers are lower layers; a folder may import its own and lower layers' folders, never its own layer's others. */
export const LAYERS: Record<string, number> = {
  util: 0,
  cni: 1,
  k8s: 2,
  net: 2,
  sriov: 3,
  ipam: 3,
  policy: 4,
  meta: 5,
  deviceplugin: 6,
  dra: 7,
  webhook: 7,
  daemon: 8,
  sim: 9,
  cmd: 10,
};

const src = join(repoRoot, 'src');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? (e.name === 'generated' ? [] : sources(join(dir, e.name))) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

/** `src/<folder>/…` → folder; anything outside src (a JSON schema beside it) → undefined. */
const folderOf = (file: string) => {
  const rel = relative(src, file);
  return rel.startsWith('..') ? undefined : rel.split('/')[0];
};

/** Each relative import of a file whose folder may not import the target's, as "from → to (file: spec)". */
export function upwardImports(files: { file: string; text: string }[]): string[] {
  const out: string[] = [];
  for (const { file, text } of files) {
    const from = folderOf(file)!;
    for (const { fileName: spec } of ts.preProcessFile(text, true, true).importedFiles) {
      if (!spec.startsWith('.')) continue;
      const to = folderOf(resolve(dirname(file), spec));
      if (to === undefined || to === from) continue;
      const [a, b] = [LAYERS[from], LAYERS[to]];
      if (a === undefined || b === undefined || b >= a) out.push(`${from} → ${to} (${relative(repoRoot, file)}: ${spec})`);
    }
  }
  return out;
}

describe('imports point down the layers', () => {
  it('no folder of src/ imports a folder of its own layer or above (type-only and dynamic imports too)', () => {
    const files = sources(src).map((file) => ({ file, text: readFileSync(file, 'utf8') }));
    assert.ok(files.length > 100);
    for (const f of files) assert.ok(folderOf(f.file)! in LAYERS, `${relative(repoRoot, f.file)}: its folder has no layer in LAYERS (and docs/architecture.md)`);
    assert.deepEqual(upwardImports(files), []);
  });

  it('catches an upward import, a type-only one, a dynamic one and a sideways one', () => {
    const at = (folder: string, text: string) => ({ file: join(src, folder, 'x.ts'), text });
    assert.deepEqual(
      upwardImports([
        at('ipam', "import { IPAM_CLAIM_ARG } from '../meta/selection.js';"),
        at('policy', "import type { MetaContext } from '../meta/context.js';"),
        at('cni', "const k = await import('../k8s/client.js');"),
        at('sriov', "import { x } from '../ipam/addr.js';"),
        at('meta', "import { x } from '../policy/model.js';\nimport { y } from './plan.js';"),
      ]),
      [
        'ipam → meta (src/ipam/x.ts: ../meta/selection.js)',
        'policy → meta (src/policy/x.ts: ../meta/context.js)',
        'cni → k8s (src/cni/x.ts: ../k8s/client.js)',
        'sriov → ipam (src/sriov/x.ts: ../ipam/addr.js)',
      ],
    );
  });
});
