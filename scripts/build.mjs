// One command builds everything: the N-API addon, TypeScript (for tests) and the bundled executables.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const run = (cmd, args) => execFileSync(cmd, args, { cwd: root, stdio: 'inherit' });

// Node's own headers: Debian's nodejs-dev path, the tree next to the node binary, or (a node without
// headers) the node-api-headers package, which holds just the Node-API ones the addon uses.
const headerDirs = ['/usr/include/node', join(dirname(process.execPath), '..', 'include', 'node'), join(root, 'node_modules', 'node-api-headers', 'include')];
const headers = headerDirs.find((d) => existsSync(join(d, 'node_api.h')));
if (!headers) throw new Error(`node_api.h not found in ${headerDirs.join(', ')}`);
run('cc', ['-O2', '-shared', '-fPIC', '-Wall', '-I', headers, '-Wextra', '-o', 'native/plexus.node', 'native/addon.c']);
// The daemon-mode shim: a static binary, so an exec costs what a Go plugin's does.
run('cc', ['-O2', '-static', '-Wall', '-Wextra', '-o', 'native/plexus-shim', 'native/plexus-shim.c']);

run(process.execPath, [join(root, 'scripts/gen-validators.mjs')]);
run(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json']);
// tsc takes the generated JS's types from its .d.ts and does not emit it: put it next to the build.
mkdirSync(join(root, 'build/src/cni/generated'), { recursive: true });
copyFileSync(join(root, 'src/cni/generated/validators.js'), join(root, 'build/src/cni/generated/validators.js'));

// `plexusctl --version`: the package version and, in a checkout, its commit.
const pkgVersion = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version;
let commit = '';
try {
  commit = execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { cwd: root, stdio: ['ignore', 'pipe', 'ignore'] })
    .toString()
    .trim();
} catch {
  // Not a git checkout (a release tarball): the version alone.
}
const version = commit ? `${pkgVersion} (${commit})` : pkgVersion;

// Stale chunks of earlier builds would linger in dist/ otherwise.
rmSync(join(root, 'dist'), { recursive: true, force: true });
mkdirSync(join(root, 'dist'), { recursive: true });
const bundles = await esbuild.build({
  entryPoints: { plexusctl: 'src/cmd/plexusctl.ts', plexus: 'src/cmd/plexus.ts', 'plexus-shim': 'src/cmd/plexus-shim.ts', sriov: 'src/cmd/sriov-cni.ts' },
  absWorkingDir: root,
  outdir: 'dist',
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  outExtension: { '.js': '.mjs' },
  // netlink loads its prebuilt addon relative to its own files.
  external: ['netlink'],
  splitting: true,
  chunkNames: 'chunks/[name]-[hash]',
  banner: { js: "import { createRequire as __plexusRequire } from 'node:module'; const require = __plexusRequire(import.meta.url);" },
  sourcemap: 'linked',
  define: { PLEXUS_VERSION: JSON.stringify(version) },
  logLevel: 'warning',
  metafile: true,
});
// The exec'd plugins' fronts: CommonJS (no ESM loader to start), answering VERSION and handing the rest
// to their ESM bundle above; the launchers exec these.
const fronts = await esbuild.build({
  entryPoints: { plexus: 'src/cmd/plexus-front.ts', sriov: 'src/cmd/sriov-front.ts' },
  absWorkingDir: root,
  outdir: 'dist',
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  outExtension: { '.js': '.cjs' },
  sourcemap: 'linked',
  logLevel: 'warning',
  metafile: true,
});
// What each executable loads, statically and on demand (test/build/bundles.unit.test.ts reads it).
const metafile = { inputs: { ...bundles.metafile.inputs, ...fronts.metafile.inputs }, outputs: { ...bundles.metafile.outputs, ...fronts.metafile.outputs } };
writeFileSync(join(root, 'build/bundles.json'), JSON.stringify(metafile));
// Files the bundles read at run time.
copyFileSync(join(root, 'src/k8s/podresources-v1.proto'), join(root, 'dist/podresources-v1.proto'));
copyFileSync(join(root, 'src/sim/cri-runtime-v1.proto'), join(root, 'dist/cri-runtime-v1.proto'));
copyFileSync(join(root, 'src/dra/dra-v1.proto'), join(root, 'dist/dra-v1.proto'));
for (const p of ['deviceplugin-v1beta1.proto', 'pluginregistration-v1.proto']) copyFileSync(join(root, 'src/deviceplugin', p), join(root, 'dist', p));
