/** Types of the CNI spec 1.1.0 and of its older result formats. */

export const SUPPORTED_VERSIONS = ['0.1.0', '0.2.0', '0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
export type CniVersion = (typeof SUPPORTED_VERSIONS)[number];
export const CURRENT_VERSION: CniVersion = '1.1.0';

export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'STATUS' | 'GC' | 'VERSION';

export interface Interface {
  name: string;
  mac?: string;
  mtu?: number;
  sandbox?: string;
  socketPath?: string;
  pciID?: string;
}
export interface IPConfig {
  address: string;
  gateway?: string;
  interface?: number;
}
export interface Route {
  dst: string;
  gw?: string;
  mtu?: number;
  advmss?: number;
  priority?: number;
  table?: number;
  scope?: number;
}
export interface DNS {
  nameservers?: string[];
  domain?: string;
  search?: string[];
  options?: string[];
}

/** Result of 1.0.0 / 1.1.0, and the canonical in-memory form every other version converts through. */
export interface Result {
  cniVersion: string;
  interfaces?: Interface[];
  ips?: IPConfig[];
  routes?: Route[];
  dns?: DNS;
}
/** 0.3.0 / 0.3.1 / 0.4.0 */
export interface Result040 {
  cniVersion: string;
  interfaces?: Pick<Interface, 'name' | 'mac' | 'sandbox'>[];
  ips?: (IPConfig & { version: '4' | '6' })[];
  routes?: Route[];
  dns?: DNS;
}
/** 0.1.0 / 0.2.0 */
export interface IPConfig020 {
  ip: string;
  gateway?: string;
  routes?: Route[];
}
export interface Result020 {
  cniVersion: string;
  ip4?: IPConfig020;
  ip6?: IPConfig020;
  dns?: DNS;
}
export type AnyResult = Result | Result040 | Result020;

/** A plugin configuration object as found in a list's `plugins` (unknown keys pass through). */
export interface PluginConf {
  type: string;
  capabilities?: Record<string, boolean>;
  [key: string]: unknown;
}

/** A network configuration list; a legacy single `.conf` is wrapped into one. */
export interface NetworkConfigList {
  cniVersion: string;
  cniVersions?: string[];
  name: string;
  disableCheck: boolean;
  disableGC: boolean;
  loadOnlyInlinedPlugins: boolean;
  plugins: PluginConf[];
  /** The bytes it was parsed from (libcni caches these). */
  bytes: Buffer;
}

export interface Attachment {
  containerID: string;
  ifname: string;
}

export function isSupportedVersion(v: string): v is CniVersion {
  return (SUPPORTED_VERSIONS as readonly string[]).includes(v);
}

/** Semver comparison for the x.y.z versions CNI uses; throws on anything else. */
export function compareVersions(a: string, b: string): number {
  const pa = parseSemver(a);
  const pb = parseSemver(b);
  for (let i = 0; i < 3; i++) if (pa[i] !== pb[i]) return pa[i]! - pb[i]!;
  return 0;
}

export function parseSemver(v: string): [number, number, number] {
  const m = /^(\d+)\.(\d+)\.(\d+)$/.exec(v);
  if (!m) throw new Error(`invalid version "${v}": expected major.minor.patch`);
  return [Number(m[1]), Number(m[2]), Number(m[3])];
}

export function versionAtLeast(v: string, min: string): boolean {
  return compareVersions(v, min) >= 0;
}
