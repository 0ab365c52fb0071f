/**
 * The IPAM section of a network's conf, in whereabouts' format unchanged (`type: whereabouts` or
 * `plexus-ipam`): `range` (a CIDR, or `first-last/prefix`), `range_start`, `range_end`, `exclude`,
 * `ipRanges` (one entry per range, dual-stack), `gateway`, `network_name`, `enable_overlapping_ranges`,
 * `l3`, `routes`, and static `addresses`. whereabouts' keys Plexus has no use for (`kubernetes`,
 * `etcd_host`, leader-election timings, `log_file`, `configuration_path`) are accepted and ignored: a
 * tenant's NAD never chooses a host path or a kubeconfig here. Every problem is CNI code 7 naming the key.
 */
import { CniError, ErrorCode } from '../cni/errors.js';
import { isObject } from '../util/object.js';
import { type Family, bitsOf, formatCidr, parseCidr, parseIp } from './addr.js';

export const IPAM_TYPES = ['whereabouts', 'plexus-ipam'] as const;

export interface IpamRange {
  family: Family;
  /** The subnet, canonical (`10.1.0.0/16`): pools are keyed by it. */
  cidr: string;
  prefix: number;
  network: bigint;
  broadcast: bigint;
  /** First and last allocatable address (inclusive). */
  first: bigint;
  last: bigint;
  /** Inclusive intervals never handed out (`exclude` CIDRs, the gateway). */
  excluded: [bigint, bigint][];
}

export interface IpamConfig {
  type: (typeof IPAM_TYPES)[number];
  /** whereabouts `network_name`: ranges of the same CIDR under different names are different pools. */
  networkName: string;
  ranges: IpamRange[];
  gateway?: { family: Family; value: bigint; text: string };
  routes: { dst: string; gw?: string }[];
  /** Static addresses (whereabouts `addresses`), returned as they are. */
  addresses: { address: string; gateway?: string }[];
  /** whereabouts default true: one pool per CIDR across networks unless network_name separates them. */
  enableOverlappingRanges: boolean;
}

const IGNORED = new Set([
  'kubernetes',
  'etcd_host',
  'etcd_username',
  'etcd_password',
  'etcd_key_file',
  'etcd_cert_file',
  'etcd_ca_cert_file',
  'log_file',
  'log_level',
  'configuration_path',
  'leader_lease_duration',
  'leader_renew_deadline',
  'leader_retry_period',
  'reconciler_cron_expression',
  'node_slice_size',
  'sleep_for_race',
]);
const KNOWN = new Set(['type', 'range', 'range_start', 'range_end', 'exclude', 'ipRanges', 'gateway', 'network_name', 'enable_overlapping_ranges', 'routes', 'addresses', 'l3', 'dns']);

function bad(key: string, why: string): CniError {
  return new CniError(ErrorCode.InvalidNetworkConfig, 'invalid IPAM configuration', `ipam.${key} ${why}`);
}

function str(v: unknown, key: string): string {
  if (typeof v !== 'string' || !v) throw bad(key, `must be a non-empty string, got ${JSON.stringify(v)}`);
  return v;
}

/** One whereabouts range entry. `l3` makes the subnet's first and last addresses usable (routed networks). */
function parseRange(raw: Record<string, unknown>, key: string, l3: boolean, gateway: bigint | undefined): IpamRange {
  const text = str(raw.range, `${key}range`);
  let cidr = parseCidr(text);
  let explicitFirst: bigint | undefined;
  let explicitLast: bigint | undefined;
  const dash = text.indexOf('-');
  if (!cidr && dash > 0) {
    // `first-last/prefix`, as whereabouts reads it: the subnet is the one of `last/prefix`.
    const first = parseIp(text.slice(0, dash));
    cidr = parseCidr(text.slice(dash + 1));
    if (!first || !cidr || first.family !== cidr.family || first.value < cidr.network || first.value > cidr.broadcast)
      throw bad(`${key}range`, `is neither a CIDR nor first-last/prefix within one subnet: ${JSON.stringify(text)}`);
    explicitFirst = first.value;
    explicitLast = cidr.ip;
  }
  if (!cidr) throw bad(`${key}range`, `is not a CIDR: ${JSON.stringify(text)}`);
  const inSubnet = (field: string): bigint | undefined => {
    if (raw[field] === undefined) return undefined;
    const ip = parseIp(str(raw[field], `${key}${field}`));
    if (!ip || ip.family !== cidr.family || ip.value < cidr.network || ip.value > cidr.broadcast) throw bad(`${key}${field}`, `${JSON.stringify(raw[field])} is not an address of ${formatCidr(cidr)}`);
    return ip.value;
  };
  const edge = l3 || cidr.prefix >= bitsOf(cidr.family) - 1 ? 0n : 1n;
  const first = inSubnet('range_start') ?? explicitFirst ?? cidr.network + edge;
  const last = inSubnet('range_end') ?? explicitLast ?? cidr.broadcast - edge;
  if (first > last) throw bad(`${key}range_end`, 'is below the range start');
  const excluded: [bigint, bigint][] = [];
  if (raw.exclude !== undefined) {
    if (!Array.isArray(raw.exclude)) throw bad(`${key}exclude`, 'must be a list of CIDRs');
    raw.exclude.forEach((e, i) => {
      const x = typeof e === 'string' ? (parseCidr(e) ?? (parseIp(e) ? parseCidr(`${e}/${bitsOf(parseIp(e)!.family)}`) : undefined)) : undefined;
      if (!x || x.family !== cidr.family) throw bad(`${key}exclude[${i}]`, `is not a ${cidr.family === 4 ? 'IPv4' : 'IPv6'} CIDR: ${JSON.stringify(e)}`);
      excluded.push([x.network, x.broadcast]);
    });
  }
  if (gateway !== undefined && gateway >= cidr.network && gateway <= cidr.broadcast) excluded.push([gateway, gateway]);
  return { family: cidr.family, cidr: formatCidr(cidr), prefix: cidr.prefix, network: cidr.network, broadcast: cidr.broadcast, first, last, excluded };
}

export function parseIpamConfig(ipam: unknown): IpamConfig {
  if (!isObject(ipam)) throw new CniError(ErrorCode.InvalidNetworkConfig, 'invalid IPAM configuration', 'ipam must be an object');
  const type = ipam.type;
  if (!IPAM_TYPES.includes(type as IpamConfig['type'])) throw bad('type', `must be ${IPAM_TYPES.join(' or ')}, got ${JSON.stringify(type)}`);
  for (const key of Object.keys(ipam)) if (!KNOWN.has(key) && !IGNORED.has(key)) throw bad(key, 'is not a key of this IPAM');
  const l3 = ipam.l3 === true;
  let gateway: IpamConfig['gateway'];
  if (ipam.gateway !== undefined) {
    const ip = parseIp(str(ipam.gateway, 'gateway'));
    if (!ip) throw bad('gateway', `is not an IP address: ${JSON.stringify(ipam.gateway)}`);
    gateway = { ...ip, text: ipam.gateway as string };
  }
  const entries: [Record<string, unknown>, string][] = [];
  if (ipam.range !== undefined) entries.push([ipam, '']);
  else for (const k of ['range_start', 'range_end', 'exclude']) if (ipam[k] !== undefined) throw bad(k, 'needs ipam.range');
  if (ipam.ipRanges !== undefined) {
    if (!Array.isArray(ipam.ipRanges)) throw bad('ipRanges', 'must be a list of {range, range_start, range_end, exclude}');
    ipam.ipRanges.forEach((r, i) => {
      if (!isObject(r)) throw bad(`ipRanges[${i}]`, 'must be an object');
      entries.push([r, `ipRanges[${i}].`]);
    });
  }
  const ranges = entries.map(([r, key]) => parseRange(r, key, l3, gateway?.value));
  const addresses: IpamConfig['addresses'] = [];
  if (ipam.addresses !== undefined) {
    if (!Array.isArray(ipam.addresses)) throw bad('addresses', 'must be a list of {address, gateway}');
    ipam.addresses.forEach((a, i) => {
      if (!isObject(a) || typeof a.address !== 'string' || !parseCidr(a.address)) throw bad(`addresses[${i}].address`, 'must be an address with its prefix (10.1.1.5/24)');
      if (a.gateway !== undefined && (typeof a.gateway !== 'string' || !parseIp(a.gateway))) throw bad(`addresses[${i}].gateway`, 'is not an IP address');
      addresses.push({ address: a.address, ...(typeof a.gateway === 'string' ? { gateway: a.gateway } : {}) });
    });
  }
  if (!ranges.length && !addresses.length) throw bad('range', 'is missing: give range (or ipRanges), or static addresses');
  const routes: IpamConfig['routes'] = [];
  if (ipam.routes !== undefined) {
    if (!Array.isArray(ipam.routes)) throw bad('routes', 'must be a list of {dst, gw}');
    ipam.routes.forEach((r, i) => {
      if (!isObject(r) || typeof r.dst !== 'string' || !parseCidr(r.dst)) throw bad(`routes[${i}].dst`, 'must be a CIDR');
      if (r.gw !== undefined && (typeof r.gw !== 'string' || !parseIp(r.gw))) throw bad(`routes[${i}].gw`, 'is not an IP address');
      routes.push({ dst: r.dst, ...(typeof r.gw === 'string' ? { gw: r.gw } : {}) });
    });
  }
  if (ipam.network_name !== undefined && (typeof ipam.network_name !== 'string' || !/^[A-Za-z0-9]([-A-Za-z0-9_.]{0,62})$/.test(ipam.network_name))) {
    throw bad('network_name', `must be 1-63 characters of [A-Za-z0-9_.-], got ${JSON.stringify(ipam.network_name)}`);
  }
  if (ipam.enable_overlapping_ranges !== undefined && typeof ipam.enable_overlapping_ranges !== 'boolean') throw bad('enable_overlapping_ranges', 'must be true or false');
  return {
    type: type as IpamConfig['type'],
    networkName: (ipam.network_name as string | undefined) ?? '',
    ranges,
    ...(gateway ? { gateway } : {}),
    routes,
    addresses,
    enableOverlappingRanges: ipam.enable_overlapping_ranges !== false,
  };
}

/** How many addresses a range can hand out (for sizing and the exhaustion message). */
export function rangeCapacity(r: IpamRange): bigint {
  let n = r.last - r.first + 1n;
  // Excluded intervals may overlap one another: count their union within [first, last].
  const cut = r.excluded
    .map(([a, b]) => [a < r.first ? r.first : a, b > r.last ? r.last : b] as const)
    .filter(([a, b]) => a <= b)
    .sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
  let end = r.first - 1n;
  for (const [a, b] of cut) {
    const from = a > end ? a : end + 1n;
    if (b >= from) n -= b - from + 1n;
    if (b > end) end = b;
  }
  return n;
}
