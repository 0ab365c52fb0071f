/**
 * The simulation (fake kernel, API and kubelet doubles, containerd rig, the real-node launcher) stays
 * out of the production executables: read from esbuild's metafile of this build and from the sources.
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { repoRoot } from '../support/plugins.js';

interface Metafile {
  inputs: Record<string, { imports: { path: string; kind: string }[] }>;
  outputs: Record<string, { entryPoint?: string; imports: { path: string; kind: string }[]; inputs: Record<string, unknown> }>;
}

const meta = JSON.parse(readFileSync(join(repoRoot, 'build', 'bundles.json'), 'utf8')) as Metafile;
const isSim = (input: string) => input.startsWith('src/sim/');

/** The source files an executable loads: at start (static chunks) or also on demand (dynamic imports). */
function sourcesOf(entry: string, withDynamic: boolean): Set<string> {
  const start = Object.keys(meta.outputs).find((o) => meta.outputs[o]!.entryPoint === entry);
  assert.ok(start, `no bundle for ${entry}`);
  const seen = new Set<string>([start]);
  for (const out of seen) {
    for (const i of meta.outputs[out]!.imports) if (i.path.startsWith('dist/') && (i.kind === 'import-statement' || (withDynamic && i.kind === 'dynamic-import'))) seen.add(i.path);
  }
  return new Set([...seen].flatMap((o) => Object.keys(meta.outputs[o]!.inputs)));
}

describe('bundles: the simulation is never on a production path', () => {
  it('the per-pod executables (plexus, plexus-shim) cannot load src/sim/, not even on demand', () => {
    for (const entry of ['src/cmd/plexus.ts', 'src/cmd/plexus-shim.ts']) {
      const sim = [...sourcesOf(entry, true)].filter(isSim);
      assert.deepEqual(sim, [], `${entry} reaches ${sim.join(', ')}`);
    }
  });

  it('sriov and plexusctl start without src/sim/; only an operator-named simulated host (or a demo) loads it', () => {
    for (const entry of ['src/cmd/sriov-cni.ts', 'src/cmd/plexusctl.ts']) {
      const sim = [...sourcesOf(entry, false)].filter(isSim);
      assert.deepEqual(sim, [], `${entry} loads ${sim.join(', ')} at start`);
    }
    // The check above would pass for an empty metafile: the dynamic path must really be there.
    assert.ok(sourcesOf('src/cmd/sriov-cni.ts', true).has('src/sim/sriov-host.ts'));
    assert.ok(sourcesOf('src/cmd/plexusctl.ts', true).has('src/sim/fakekernel.ts'));
  });

  it('no module outside src/sim/ and src/cmd/ imports src/sim/ (not even for types)', () => {
    const offenders: string[] = [];
    const walk = (dir: string): string[] => readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
    const files = walk(join(repoRoot, 'src')).map((f) => relative(repoRoot, f));
    assert.ok(files.length > 50, 'the sources were found');
    for (const file of files) {
      if (file.startsWith('src/sim/') || file.startsWith('src/cmd/')) continue;
      if (/from '(\.\.\/)+sim\/|import\('(\.\.\/)+sim\//.test(readFileSync(join(repoRoot, file), 'utf8'))) offenders.push(file);
    }
    assert.deepEqual(offenders, []);
  });
});

describe('bundles: what each executable loads at start', () => {
  it('the fronts the launchers exec (dist/plexus.cjs, dist/sriov.cjs) hold the VERSION answer and the process glue, nothing more', () => {
    for (const [front, bundle] of [
      ['dist/plexus.cjs', 'plexus.mjs'],
      ['dist/sriov.cjs', 'sriov.mjs'],
    ] as const) {
      const out = meta.outputs[front];
      assert.ok(out, `${front} was built`);
      for (const input of Object.keys(out.inputs)) assert.ok(/^src\/cmd\/(oneshot|plexus|sriov)-front\.ts$|^src\/cni\/(process-io|types)\.ts$/.test(input), `${front} bundles ${input}`);
      // …and hand everything else to the ESM bundle beside them, which the launchers do not name.
      assert.match(readFileSync(join(repoRoot, front), 'utf8'), new RegExp(`runFront\\("${bundle.replace('.', '\\.')}"\\)`));
    }
  });

  it("plexusctl starts without ajv's compiler (only the device plugin's config needs it) and no executable bundles client-node", () => {
    const atStart = [...sourcesOf('src/cmd/plexusctl.ts', false)];
    assert.deepEqual(
      atStart.filter((i) => i.startsWith('node_modules/ajv/dist/core')),
      [],
    );
    assert.ok(sourcesOf('src/cmd/plexusctl.ts', true).has('node_modules/ajv/dist/core.js'), 'the device plugin still reaches it');
    const everything = Object.values(meta.outputs).flatMap((o) => Object.keys(o.inputs));
    assert.deepEqual(
      everything.filter((i) => i.includes('@kubernetes/client-node')),
      [],
    );
  });
});
