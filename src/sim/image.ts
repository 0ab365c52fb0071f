/**
 * OCI images built without Docker or a registry: a root filesystem assembled in a scratch dir, one
 * uncompressed layer, an OCI layout in a tar that `ctr images import` takes. The pause image of the
 * rigs and the Plexus image of deploy/ (`plexusctl image`) are both made here.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';

export interface ImageSpec {
  /** The name containerd files it under, fully qualified (`docker.io/library/plexus:dev`). */
  name: string;
  /** The assembled root filesystem. */
  rootfs: string;
  entrypoint?: string[];
  env?: string[];
}

/** Qualifies a name the way kubelet and containerd do: `plexus:dev` is `docker.io/library/plexus:dev`. */
export function qualifiedImageName(name: string): string {
  const [first, ...rest] = name.split('/');
  const hasRegistry = rest.length > 0 && (first!.includes('.') || first!.includes(':') || first === 'localhost');
  const path = hasRegistry ? rest.join('/') : name;
  const registry = hasRegistry ? first! : 'docker.io';
  const withLibrary = registry === 'docker.io' && !path.includes('/') ? `library/${path}` : path;
  return `${registry}/${withLibrary.includes(':') || withLibrary.includes('@') ? withLibrary : `${withLibrary}:latest`}`;
}

/** Writes `<dir>/<file>`: an OCI layout tar of `spec.rootfs` as one layer. Reproducible (sorted, mtime 0, root-owned). */
export function ociImageTar(dir: string, file: string, spec: ImageSpec): string {
  const layout = join(dir, `${file}.oci`);
  rmSync(layout, { recursive: true, force: true });
  mkdirSync(join(layout, 'blobs', 'sha256'), { recursive: true });
  const blob = (data: Buffer): { digest: string; size: number } => {
    const digest = createHash('sha256').update(data).digest('hex');
    writeFileSync(join(layout, 'blobs', 'sha256', digest), data);
    return { digest: `sha256:${digest}`, size: data.length };
  };
  const layerPath = join(dir, `${file}.layer.tar`);
  execFileSync('tar', ['--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '-C', spec.rootfs, '-cf', layerPath, '.']);
  const layer = blob(readFileSync(layerPath));
  rmSync(layerPath);
  const imageConfig = { ...(spec.entrypoint ? { Entrypoint: spec.entrypoint } : {}), ...(spec.env ? { Env: spec.env } : {}) };
  const config = blob(Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: imageConfig, rootfs: { type: 'layers', diff_ids: [layer.digest] } })));
  const manifest = blob(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...layer }],
      }),
    ),
  );
  writeFileSync(
    join(layout, 'index.json'),
    JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'io.containerd.image.name': spec.name } }] }),
  );
  writeFileSync(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const tar = join(dir, file);
  execFileSync('tar', ['-C', layout, '-cf', tar, '.']);
  rmSync(layout, { recursive: true, force: true });
  return tar;
}

/** Imports an image tar into containerd's CRI namespace (where kubelet looks). */
export function importImage(containerdSocket: string, tar: string, ctr = 'ctr'): void {
  execFileSync(ctr, ['-a', containerdSocket, '-n', 'k8s.io', 'images', 'import', '--snapshotter', 'native', tar], { stdio: 'pipe' });
}

/** The shared libraries a dynamically linked executable loads, with its ELF interpreter, as ldd names them. */
export function sharedLibraries(executable: string): string[] {
  const out = execFileSync('ldd', [executable], { encoding: 'utf8' });
  const libs: string[] = [];
  for (const line of out.split('\n')) {
    const path = /=>\s*(\/\S+)/.exec(line)?.[1] ?? /^\s*(\/\S+)\s+\(/.exec(line)?.[1];
    if (path) libs.push(path);
  }
  return libs;
}

/** Copies a host file into the rootfs at the same path, following symlinks (the file, not the link). */
function copyHostFile(rootfs: string, path: string, as = path): void {
  const target = join(rootfs, as);
  mkdirSync(dirname(target), { recursive: true });
  copyFileSync(realpathSync(path), target);
  chmodSync(target, 0o755);
}

/** Where the Plexus image keeps the repository's runnable parts. */
export const IMAGE_APP_DIR = '/opt/plexus';

/**
 * The Plexus image of deploy/: this machine's Node.js with the libraries it links, busybox as
 * /bin/sh (the launchers are shell scripts), the bundles (dist/), the N-API addon and the static shim
 * (native/), and the production dependencies the bundles leave external (node_modules/), under
 * /opt/plexus; `plexusctl` on PATH. Built from a repository that has been built (npm run build).
 */
export function buildPlexusImage(repo: string, dir: string, name = 'plexus:dev'): { tar: string; name: string } {
  for (const need of ['dist/plexusctl.mjs', 'native/plexus.node', 'native/plexus-shim']) {
    if (!existsSync(join(repo, need))) throw new Error(`${join(repo, need)} is missing: build the repository first (npm run build)`);
  }
  const rootfs = join(dir, 'plexus-rootfs');
  rmSync(rootfs, { recursive: true, force: true });
  mkdirSync(rootfs, { recursive: true });
  const node = realpathSync(process.execPath);
  copyHostFile(rootfs, node, '/usr/bin/node');
  for (const lib of sharedLibraries(node)) copyHostFile(rootfs, lib);
  copyHostFile(rootfs, '/bin/busybox');
  // nft installs the pods' network policy tables (docs/policy.md).
  const nft = ['/usr/sbin/nft', '/sbin/nft'].find((p) => existsSync(p));
  if (!nft) throw new Error('nft is missing: install nftables (scripts/setup.sh does)');
  copyHostFile(rootfs, nft, '/usr/sbin/nft');
  for (const lib of sharedLibraries(nft)) copyHostFile(rootfs, lib);
  for (const applet of ['sh', 'cat', 'ls', 'env', 'readlink', 'dirname']) symlinkSync('busybox', join(rootfs, 'bin', applet));
  // /var/run is /run, as on the hosts: runtimes name netns /var/run/netns/…, the DaemonSet mounts /run/netns.
  mkdirSync(join(rootfs, 'run'));
  mkdirSync(join(rootfs, 'var'));
  symlinkSync('../run', join(rootfs, 'var', 'run'));
  mkdirSync(join(rootfs, 'tmp'), { mode: 0o1777 });
  chmodSync(join(rootfs, 'tmp'), 0o1777);
  const app = join(rootfs, IMAGE_APP_DIR);
  cpSync(join(repo, 'dist'), join(app, 'dist'), { recursive: true });
  mkdirSync(join(app, 'native'), { recursive: true });
  for (const f of ['plexus.node', 'plexus-shim']) copyFileSync(join(repo, 'native', f), join(app, 'native', f));
  copyFileSync(join(repo, 'package.json'), join(app, 'package.json'));
  for (const pkg of productionPackages(repo)) cpSync(join(repo, pkg), join(app, pkg), { recursive: true });
  // The repository's own launcher (its node flags per command), found on PATH through a link.
  mkdirSync(join(app, 'bin'));
  copyFileSync(join(repo, 'bin', 'plexusctl'), join(app, 'bin', 'plexusctl'));
  chmodSync(join(app, 'bin', 'plexusctl'), 0o755);
  mkdirSync(join(rootfs, 'usr', 'local', 'bin'), { recursive: true });
  symlinkSync(`${IMAGE_APP_DIR}/bin/plexusctl`, join(rootfs, 'usr', 'local', 'bin', 'plexusctl'));
  const qualified = qualifiedImageName(name);
  const tar = ociImageTar(dir, 'plexus-image.tar', { name: qualified, rootfs, entrypoint: ['/usr/local/bin/plexusctl'], env: ['PATH=/usr/local/bin:/usr/bin:/bin'] });
  rmSync(rootfs, { recursive: true, force: true });
  return { tar, name: qualified };
}

/** node_modules/<pkg> dirs of the production dependency tree, top-level ones only (nested ones come with them). */
function productionPackages(repo: string): string[] {
  let out: string;
  try {
    out = execFileSync('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: repo, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch (err) {
    // npm ls exits 1 on an extraneous or invalid package but still lists the tree.
    out = (err as { stdout?: string }).stdout ?? '';
  }
  const top = new Set<string>();
  for (const line of out.split('\n')) {
    const rel = relative(repo, line.trim());
    const m = /^node_modules\/(@[^/]+\/[^/]+|[^/@][^/]*)$/.exec(rel);
    if (m) top.add(`node_modules/${m[1]}`);
  }
  if (!top.has('node_modules/@grpc/grpc-js')) throw new Error(`npm ls in ${repo} listed no production dependencies: run npm ci first`);
  return [...top].sort();
}
