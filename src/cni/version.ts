/**
 * Result conversion between every pair of CNI versions (libcni's registered converters):
 * everything is read into the 1.x shape, then written out in the wanted version.
 */
import { CniError, ErrorCode } from './errors.js';
import { type AnyResult, type IPConfig, type IPConfig020, type Result, type Result020, type Result040, type Route, isSupportedVersion, versionAtLeast } from './types.js';

type Family = '4' | '6';

/** '4' or '6' for an address or CIDR; IPv6 literals always contain ':'. */
export function ipFamily(addressOrCidr: string): Family {
  return addressOrCidr.includes(':') ? '6' : '4';
}

function is020(v: string): boolean {
  return v === '0.1.0' || v === '0.2.0';
}

/** Reads a result of any version into the 1.x shape (interfaces, ips, routes, dns). */
export function toCanonical(result: AnyResult): Result {
  const version = result.cniVersion;
  if (!isSupportedVersion(version)) {
    throw new CniError(ErrorCode.IncompatibleVersion, 'unsupported result version', `"${version}"`);
  }
  if (is020(version)) {
    const r = result as Result020;
    const out: Result = { cniVersion: '1.0.0' };
    const ips: IPConfig[] = [];
    const routes: Route[] = [];
    for (const ip of [r.ip4, r.ip6]) {
      if (!ip) continue;
      ips.push(ip.gateway ? { address: ip.ip, gateway: ip.gateway } : { address: ip.ip });
      for (const route of ip.routes ?? []) routes.push({ ...route });
    }
    if (ips.length) out.ips = ips;
    if (routes.length) out.routes = routes;
    if (r.dns) out.dns = structuredClone(r.dns);
    return out;
  }
  const r = structuredClone(result) as Result & Result040;
  const out: Result = { cniVersion: version === '1.1.0' ? '1.1.0' : '1.0.0' };
  if (r.interfaces) out.interfaces = r.interfaces;
  if (r.ips) {
    out.ips = r.ips.map((ip) => {
      const { version: _family, ...rest } = ip as IPConfig & { version?: string };
      return rest;
    });
  }
  if (r.routes) out.routes = r.routes;
  if (r.dns) out.dns = r.dns;
  return out;
}

/** Writes a result in `toVersion`; fails like libcni where the target cannot hold it. */
export function convertResult(result: AnyResult, toVersion: string): AnyResult {
  if (!isSupportedVersion(toVersion)) {
    throw new CniError(ErrorCode.IncompatibleVersion, 'cannot convert result', `unsupported version "${toVersion}"`);
  }
  const canonical = toCanonical(result);
  if (versionAtLeast(toVersion, '1.0.0')) return { ...canonical, cniVersion: toVersion };
  if (is020(toVersion)) return to020(canonical, toVersion);
  return to040(canonical, toVersion);
}

function to040(r: Result, version: string): Result040 {
  const out: Result040 = { cniVersion: version };
  if (r.interfaces) {
    out.interfaces = r.interfaces.map(({ name, mac, sandbox }) => ({
      name,
      ...(mac !== undefined ? { mac } : {}),
      ...(sandbox !== undefined ? { sandbox } : {}),
    }));
  }
  if (r.ips) out.ips = r.ips.map((ip) => ({ ...ip, version: ipFamily(ip.address) }));
  // libcni keeps the 1.1 route fields: one Route type serves every version.
  if (r.routes) out.routes = r.routes;
  if (r.dns) out.dns = r.dns;
  return out;
}

function to020(r: Result, version: string): Result020 {
  const out: Result020 = { cniVersion: version };
  const first = (family: Family): IPConfig | undefined => r.ips?.find((ip) => ipFamily(ip.address) === family);
  const build = (family: Family): IPConfig020 | undefined => {
    const ip = first(family);
    if (!ip) return undefined;
    const conf: IPConfig020 = { ip: ip.address };
    if (ip.gateway) conf.gateway = ip.gateway;
    const routes = (r.routes ?? []).filter((route) => ipFamily(route.dst) === family);
    if (routes.length) conf.routes = routes;
    return conf;
  };
  const ip4 = build('4');
  const ip6 = build('6');
  if (!ip4 && !ip6) {
    throw new CniError(ErrorCode.IncompatibleVersion, 'cannot convert result', `no valid IP addresses for ${version}`);
  }
  if (ip4) out.ip4 = ip4;
  if (ip6) out.ip6 = ip6;
  if (r.dns) out.dns = r.dns;
  return out;
}
