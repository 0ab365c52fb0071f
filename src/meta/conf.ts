/**
 * The meta plugin's own configuration (`type: "plexus"`). Multus's keys keep their meaning, so a
 * Multus conf works by changing only `type`; Plexus adds a few keys of its own (timeouts, paths).
 */
import { statSync } from 'node:fs';
import { CniError, ErrorCode } from '../cni/errors.js';
import { validate } from '../cni/validate.js';
import type { PluginStdinConf } from '../cni/skel.js';

export interface LogOptions {
  maxAge?: number;
  maxSize?: number;
  maxBackups?: number;
  compress?: boolean;
}

export interface MetaConf {
  cniVersion: string;
  name: string;
  /** NAD name, conf name or path of the cluster network. */
  clusterNetwork?: string;
  /** Multus thin style: inline confs; the first is the cluster network. */
  delegates?: Record<string, unknown>[];
  defaultNetworks: string[];
  systemNamespaces: string[];
  multusNamespace: string;
  namespaceIsolation: boolean;
  globalNamespaces: string[];
  readinessindicatorfile?: string;
  confDir: string;
  cniDir: string;
  binDir: string;
  kubeconfig?: string;
  logLevel: string;
  logFile?: string;
  logToStderr: boolean;
  logOptions?: LogOptions;
  capabilities: Record<string, boolean>;
  auxiliaryCNIChainName?: string;
  retryDeleteOnError: boolean;
  /** Plexus: per API request timeout (Multus hard-codes 250 ms per pod GET). */
  apiTimeoutMs: number;
  /** Plexus: kubelet's PodResources socket and device-plugin checkpoint. */
  podResourcesSocket: string;
  kubeletCheckpoint: string;
  /** Plexus: root of the device-info files (`dp/` and `cni/` below it). */
  deviceInfoDir: string;
  /** Plexus: Multus-only `gateway`/`mtu` keys in network-status, for consumers that parse them. */
  multusStatusCompat: boolean;
}

/** Reads the meta conf from the plugin's stdin conf, with Multus's defaults. */
export function parseMetaConf(conf: PluginStdinConf): MetaConf {
  const raw = validate<Record<string, unknown> & Partial<MetaConf> & { globalNamespaces?: string }>('meta', conf, ErrorCode.InvalidNetworkConfig, 'plexus configuration');
  if (!raw.clusterNetwork && !raw.delegates?.length) {
    throw new CniError(ErrorCode.InvalidNetworkConfig, 'invalid plexus configuration', 'one of "clusterNetwork" or "delegates" is required');
  }
  if (raw.auxiliaryCNIChainName && !raw.clusterNetwork?.includes('/')) {
    throw new CniError(ErrorCode.InvalidNetworkConfig, 'invalid plexus configuration', '"auxiliaryCNIChainName" needs "clusterNetwork" to be a file path');
  }
  const out: MetaConf = {
    cniVersion: conf.cniVersion,
    name: conf.name ?? 'plexus-cni-network',
    defaultNetworks: raw.defaultNetworks ?? [],
    systemNamespaces: raw.systemNamespaces ?? ['kube-system'],
    multusNamespace: raw.multusNamespace ?? 'kube-system',
    namespaceIsolation: raw.namespaceIsolation ?? false,
    globalNamespaces: (raw.globalNamespaces ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean),
    confDir: raw.confDir ?? '/etc/cni/multus/net.d',
    cniDir: raw.cniDir ?? '/var/lib/cni/plexus',
    binDir: raw.binDir ?? '/opt/cni/bin',
    logLevel: raw.logLevel || 'panic',
    logToStderr: raw.logToStderr ?? true,
    capabilities: raw.capabilities ?? {},
    retryDeleteOnError: raw.retryDeleteOnError ?? false,
    apiTimeoutMs: raw.apiTimeoutMs ?? 10000,
    podResourcesSocket: raw.podResourcesSocket ?? '/var/lib/kubelet/pod-resources/kubelet.sock',
    kubeletCheckpoint: raw.kubeletCheckpoint ?? '/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint',
    deviceInfoDir: raw.deviceInfoDir ?? '/var/run/k8s.cni.cncf.io/devinfo',
    multusStatusCompat: raw.multusStatusCompat ?? false,
  };
  for (const key of ['clusterNetwork', 'delegates', 'readinessindicatorfile', 'kubeconfig', 'logFile', 'logOptions', 'auxiliaryCNIChainName'] as const) {
    // Multus writes `"delegates": []` beside clusterNetwork: an empty list is no list.
    if (raw[key] !== undefined && raw[key] !== '' && !(key === 'delegates' && !raw.delegates?.length)) (out as unknown as Record<string, unknown>)[key] = raw[key];
  }
  return out;
}

/**
 * The host side of the meta conf, apart from parsing it: each directory the plugin reads or creates
 * must not be something else (a file there is a config mistake) and must be usable.
 */
export function checkMetaConfDirs(conf: MetaConf): void {
  for (const key of ['cniDir', 'deviceInfoDir', 'confDir', 'binDir'] as const) requireDirectoryOrAbsent(key, conf[key]);
}

function requireDirectoryOrAbsent(key: string, path: string): void {
  let why: string | undefined;
  try {
    const st = statSync(path, { throwIfNoEntry: false });
    if (st && !st.isDirectory()) why = 'exists and is not a directory';
  } catch (err) {
    why = `cannot be used (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`;
  }
  if (why) throw new CniError(ErrorCode.InvalidNetworkConfig, 'invalid plexus configuration', `"${key}" ${path} ${why}`);
}

/** namespaceIsolation: a pod may use NADs of its own namespace and of the global namespaces. */
export function checkNamespaceAllowed(conf: Pick<MetaConf, 'namespaceIsolation' | 'globalNamespaces'>, podNamespace: string, nadNamespace: string, nadName: string): void {
  if (!conf.namespaceIsolation || nadNamespace === podNamespace) return;
  const global = conf.globalNamespaces.length ? conf.globalNamespaces : ['default'];
  if (global.includes(nadNamespace)) return;
  throw new CniError(
    ErrorCode.InvalidNetworkConfig,
    'network not allowed by namespaceIsolation',
    `pod in namespace "${podNamespace}" may not use ${nadNamespace}/${nadName}; allowed: "${podNamespace}" and ${JSON.stringify(global)}`,
  );
}
