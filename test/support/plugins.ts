/** Installs test plugins as executables in a CNI_PATH directory. */
import { chmodSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { repoRoot as findRepoRoot } from '../../src/sim/simnode.js';

const here = dirname(fileURLToPath(import.meta.url));

/** Writes an executable `name` into `dir` that runs the record plugin. */
export function installRecordPlugin(dir: string, name = 'record'): string {
  const path = join(dir, name);
  writeFileSync(path, `#!/bin/sh\nexec env -u NODE_EXTRA_CA_CERTS node ${join(here, 'record-plugin.js')}\n`);
  chmodSync(path, 0o755);
  return path;
}

/** Writes a shell plugin with the given body. */
export function installShellPlugin(dir: string, name: string, body: string): string {
  const path = join(dir, name);
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
}

export const REFERENCE_PLUGINS = '/usr/lib/cni';
// The checkout's root, found the way the code finds it.
export const repoRoot = findRepoRoot();
export const plexusctlPath = join(repoRoot, 'bin', 'plexusctl');
/** The one-shot meta plugin as installed. */
export const plexusPath = join(repoRoot, 'bin', 'plexus');
/** The daemon-mode shim as installed (bin/ runs the static native/plexus-shim). */
export const shimPath = join(repoRoot, 'bin', 'plexus-shim');
