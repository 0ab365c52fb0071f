/**
 * Node installation of the meta plugin (what the DaemonSet's init step does, usable outside
 * Kubernetes): a self-contained copy of the plugin in the CNI bin dir, and `00-plexus.conflist`
 * generated from the node's cluster network conf. Everything is written by temp file + rename:
 * a runtime exec'ing the old plugin meanwhile keeps running it ("text file busy" cannot happen).
 */
import { createHash } from 'node:crypto';
import { chmodSync, cpSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, join } from 'node:path';
import { writeFileAtomic } from '../cni/cache.js';
import { confFiles, parseNetworkConfig } from '../cni/conf.js';
import { CniError, ErrorCode } from '../cni/errors.js';
import { nativeAddonPath } from '../util/native.js';
import { requireAbove } from '../util/find-above.js';
import { AttachmentStore } from './store.js';

export const META_CONF_NAME = '00-plexus.conflist';
/** Under `<binDir>/plexus.d/`: binaries install replaced, put back by uninstall. */
const PREVIOUS_DIR = 'previous';
const LAUNCHER_MARK = 'installed by plexusctl install';

function isOurLauncher(path: string): boolean {
  try {
    return readFileSync(path).subarray(0, 512).toString('latin1').includes(LAUNCHER_MARK);
  } catch {
    return false;
  }
}

/** The node's cluster network: the first conf in the dir that is not Plexus's own. */
export function clusterNetworkConf(confDir: string): string | undefined {
  return confFiles(confDir).find((f) => !basename(f).startsWith('00-plexus'));
}

export type InstallMode = 'oneshot' | 'daemon';

export interface MetaConfOptions {
  /** daemon (the default): the runtime execs `plexus-shim`, which asks the node daemon; oneshot: it execs `plexus`. */
  mode?: InstallMode;
  daemonSocket?: string;
  kubeconfig?: string;
  cniDir?: string;
  binDir: string;
  /** Where NADs without spec.config find their files (Multus confDir). */
  confDir?: string;
  /** kubelet's --root-dir when not /var/lib/kubelet: PodResources socket and device-plugin checkpoint below it. */
  kubeletDir?: string;
  /** Device-info root when not /var/run/k8s.cni.cncf.io/devinfo (the device plugin's --devinfo-dir). */
  deviceInfoDir?: string;
}

/** `00-plexus.conflist` for a cluster network conf: its version, its capabilities plus pod annotations. */
export function metaConflist(clusterConfPath: string, opts: MetaConfOptions): string {
  const cluster = parseNetworkConfig(readFileSync(clusterConfPath), clusterConfPath);
  const capabilities: Record<string, boolean> = { 'io.kubernetes.cri.pod-annotations': true };
  for (const p of cluster.plugins) for (const [cap, on] of Object.entries(p.capabilities ?? {})) if (on) capabilities[cap] = true;
  const plugin: Record<string, unknown> = { type: opts.mode === 'oneshot' ? 'plexus' : 'plexus-shim', clusterNetwork: clusterConfPath, binDir: opts.binDir, capabilities };
  if (opts.mode !== 'oneshot' && opts.daemonSocket) plugin.daemonSocket = opts.daemonSocket;
  if (opts.kubeconfig) plugin.kubeconfig = opts.kubeconfig;
  if (opts.cniDir) plugin.cniDir = opts.cniDir;
  if (opts.confDir) plugin.confDir = opts.confDir;
  if (opts.kubeletDir) {
    plugin.podResourcesSocket = join(opts.kubeletDir, 'pod-resources', 'kubelet.sock');
    plugin.kubeletCheckpoint = join(opts.kubeletDir, 'device-plugins', 'kubelet_internal_checkpoint');
  }
  if (opts.deviceInfoDir) plugin.deviceInfoDir = opts.deviceInfoDir;
  return `${JSON.stringify({ cniVersion: cluster.cniVersion, name: 'plexus', plugins: [plugin] }, null, 2)}\n`;
}

/** The bundle this plexusctl runs from (dist/), with plexus.mjs beside it. */
function bundleDir(): string {
  return dirname(requireAbove(import.meta.url, ['plexus.mjs']));
}

function packageDir(name: string, from: string): string {
  return dirname(createRequire(join(from, 'noop.js')).resolve(`${name}/package.json`));
}

/** Files of the bundle that run (no source maps), relative to the bundle dir. */
function bundleFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (rel: string): void => {
    for (const e of readdirSync(join(dir, rel), { withFileTypes: true })) {
      const r = join(rel, e.name);
      if (e.isDirectory()) walk(r);
      else if (!e.name.endsWith('.map') && !e.name.startsWith('plexusctl')) out.push(r);
    }
  };
  walk('.');
  return out.sort();
}

export interface InstallResult {
  plugin: string;
  version: string;
  conf?: string;
  clusterNetwork?: string;
}

/**
 * Installs `<binDir>/plexus` (a launcher, replaced by rename) and `<binDir>/plexus.d/<version>/`
 * (the bundle, the N-API addon, netlink with its prebuilt addon). The previous version is kept for
 * runtimes still executing it; older ones are removed.
 */
export function installPlugin(binDir: string): { plugin: string; version: string } {
  const src = bundleDir();
  const files = bundleFiles(src);
  const hash = createHash('sha256');
  for (const f of files) hash.update(f).update(readFileSync(join(src, f)));
  hash.update(readFileSync(nativeAddonPath()));
  const version = hash.digest('hex').slice(0, 12);
  const root = join(binDir, 'plexus.d');
  const target = join(root, version);
  if (!existsSync(target)) {
    const staging = join(root, `.staging-${process.pid}-${Date.now()}`);
    mkdirSync(staging, { recursive: true });
    try {
      for (const f of files) cpSync(join(src, f), join(staging, f), { recursive: true });
      cpSync(nativeAddonPath(), join(staging, 'plexus.node'));
      const netlink = packageDir('netlink', src);
      const modules = join(staging, 'node_modules');
      for (const part of ['package.json', 'dist', join('prebuilds', `${process.platform}-${process.arch}`)]) cpSync(join(netlink, part), join(modules, 'netlink', part), { recursive: true });
      cpSync(packageDir('node-gyp-build', netlink), join(modules, 'node-gyp-build'), { recursive: true });
      renameSync(staging, target);
    } catch (err) {
      rmSync(staging, { recursive: true, force: true });
      throw err;
    }
  }
  const launcher = join(binDir, 'plexus');
  // Runtimes pass their environment; NODE_EXTRA_CA_CERTS alone costs ~80 ms per start.
  writeFileAtomic(launcher, `#!/bin/sh\n# Plexus meta CNI plugin ${version}, ${LAUNCHER_MARK}\nunset NODE_EXTRA_CA_CERTS\nexec ${process.execPath} ${join(target, 'plexus.cjs')} "$@"\n`, {
    mode: 0o755,
  });
  chmodSync(launcher, 0o755);
  // The SR-IOV plugin (type "sriov", so sriov-cni NADs work unchanged), from the same bundle. A
  // sriov-cni binary found there is kept aside once, for uninstall to put back.
  if (existsSync(join(target, 'sriov.cjs'))) {
    const sriov = join(binDir, 'sriov');
    const previous = join(root, PREVIOUS_DIR, 'sriov');
    if (existsSync(sriov) && !isOurLauncher(sriov) && !existsSync(previous)) {
      mkdirSync(dirname(previous), { recursive: true });
      cpSync(sriov, previous, { preserveTimestamps: true });
    }
    writeFileAtomic(sriov, `#!/bin/sh\n# Plexus SR-IOV CNI plugin ${version}, ${LAUNCHER_MARK}\nunset NODE_EXTRA_CA_CERTS\nexec ${process.execPath} ${join(target, 'sriov.cjs')} "$@"\n`, {
      mode: 0o755,
    });
    chmodSync(sriov, 0o755);
  }
  // Keep this version and the one before it.
  const versions = readdirSync(root)
    .filter((v) => !v.startsWith('.') && v !== version && v !== PREVIOUS_DIR)
    .sort((a, b) => statSync(join(root, b)).mtimeMs - statSync(join(root, a)).mtimeMs);
  for (const old of versions.slice(1)) rmSync(join(root, old), { recursive: true, force: true });
  return { plugin: launcher, version };
}

/** Names the shim is installed under as an IPAM plugin: requests under them go to the daemon's IPAM (docs/ipam.md). */
export const IPAM_SHIM_NAMES = ['plexus-ipam', 'whereabouts'] as const;

/**
 * The static shim of daemon mode, next to the bundle's native/ dir, installed by temp + rename; under
 * `plexus-ipam` (or `whereabouts`) it is the IPAM plugin. A `whereabouts` there that is not our shim
 * (the real one) is refused, not replaced.
 */
export function installShim(binDir: string, name = 'plexus-shim'): string {
  const src = requireAbove(import.meta.url, [join('native', 'plexus-shim')]);
  const target = join(binDir, name);
  if (name === 'whereabouts' && existsSync(target) && !isOurShim(target)) {
    throw new CniError(ErrorCode.InvalidEnvironment, `${target} is another plugin`, 'remove the real whereabouts first (Plexus IPAM answers its confs), or install without --whereabouts');
  }
  writeFileAtomic(target, readFileSync(src), { mode: 0o755 });
  chmodSync(target, 0o755);
  return target;
}

/** The node install: the plugin, then the meta conf, which needs the cluster network's conf first. */
export function install(opts: { cniBinDir: string; cniConfDir: string; whereabouts?: boolean } & Omit<MetaConfOptions, 'binDir'>): InstallResult {
  const cluster = clusterNetworkConf(opts.cniConfDir);
  if (!cluster) {
    // NPWG §6.1: no meta conf before the cluster network is there; a runtime would otherwise use plexus with nothing to delegate to.
    throw new CniError(ErrorCode.TryAgainLater, 'no cluster network yet', `no .conf/.conflist in ${opts.cniConfDir} other than Plexus's own; install it first`);
  }
  // The one-shot plugin is installed in both modes: the daemon runs the same bundle.
  const { plugin, version } = installPlugin(opts.cniBinDir);
  const shim = opts.mode === 'oneshot' ? undefined : installShim(opts.cniBinDir);
  if (shim) for (const name of ['plexus-ipam', ...(opts.whereabouts ? ['whereabouts'] : [])]) installShim(opts.cniBinDir, name);
  const conf = join(opts.cniConfDir, META_CONF_NAME);
  writeFileAtomic(conf, metaConflist(cluster, { ...opts, binDir: opts.cniBinDir }), { mode: 0o644 });
  return { plugin: shim ?? plugin, version, conf, clusterNetwork: cluster };
}

export interface UninstallOptions {
  cniBinDir: string;
  cniConfDir: string;
  /** The attachment records: pods still attached through Plexus stop the uninstall unless `force`. */
  cniDir: string;
  force?: boolean;
  keepBinaries?: boolean;
}

export interface UninstallResult {
  removed: string[];
  restored: string[];
  /** The conf the runtime uses from now on. */
  clusterNetwork?: string;
  /** With `force`: sandboxes whose secondaries are no longer torn down by Plexus. */
  abandoned: string[];
}

/** The static shim is told apart by the conf key only it reads. */
function isOurShim(path: string): boolean {
  try {
    return readFileSync(path).includes('daemonSocket');
  } catch {
    return false;
  }
}

/** Whether `path` is a meta conf `install` or the daemon wrote (anything else there is left alone). */
function isOurMetaConf(path: string): boolean {
  try {
    const list = parseNetworkConfig(readFileSync(path), path);
    return list.name === 'plexus' && list.plugins.length === 1 && ['plexus', 'plexus-shim'].includes(list.plugins[0]!.type);
  } catch {
    return false;
  }
}

/**
 * Undoes `install`: the meta conf goes (the runtime's first conf is the cluster network's again), the
 * shim and launchers go, a sriov-cni binary install replaced comes back. Pods still attached through
 * Plexus would lose the DEL of their secondaries (IPAM leases, VFs' settings): refused unless `force`.
 * The node daemon must be stopped first, or it writes the meta conf again (the caller checks).
 */
export function uninstall(opts: UninstallOptions): UninstallResult {
  const conf = join(opts.cniConfDir, META_CONF_NAME);
  if (existsSync(conf) && !isOurMetaConf(conf)) {
    throw new CniError(
      ErrorCode.InvalidNetworkConfig,
      'not a Plexus meta conf',
      `${conf} was not written by plexusctl install (name "plexus", one plugin of type plexus or plexus-shim): left as it is`,
    );
  }
  const attachments = join(opts.cniDir, 'attachments');
  const active = existsSync(attachments) ? new AttachmentStore(attachments).active() : [];
  if (active.length && !opts.force) {
    throw new CniError(
      ErrorCode.TryAgainLater,
      'pods are still attached through Plexus',
      `${active.length} sandbox(es) on this node (${active.slice(0, 5).join(', ')}${active.length > 5 ? ', …' : ''}); drain the node first (kubectl drain), or --force to leave their secondary interfaces to the runtime's DEL of the cluster network alone`,
    );
  }
  const removed: string[] = [];
  const restored: string[] = [];
  if (existsSync(conf)) {
    rmSync(conf);
    removed.push(conf);
  }
  if (!opts.keepBinaries) {
    for (const name of ['plexus-shim', ...IPAM_SHIM_NAMES, 'plexus', 'sriov']) {
      const path = join(opts.cniBinDir, name);
      const ours = name === 'plexus-shim' || (IPAM_SHIM_NAMES as readonly string[]).includes(name) ? isOurShim(path) : isOurLauncher(path);
      if (!ours) continue;
      rmSync(path, { force: true });
      removed.push(path);
    }
    const root = join(opts.cniBinDir, 'plexus.d');
    const previous = join(root, PREVIOUS_DIR);
    if (existsSync(previous)) {
      for (const name of readdirSync(previous)) {
        const target = join(opts.cniBinDir, name);
        if (existsSync(target)) continue;
        writeFileAtomic(target, readFileSync(join(previous, name)), { mode: statSync(join(previous, name)).mode & 0o7777 });
        restored.push(target);
      }
    }
    if (existsSync(root)) {
      rmSync(root, { recursive: true, force: true });
      removed.push(root);
    }
  }
  const clusterNetwork = clusterNetworkConf(opts.cniConfDir);
  return { removed, restored, ...(clusterNetwork ? { clusterNetwork } : {}), abandoned: active };
}
