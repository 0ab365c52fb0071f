/** `k8s.v1.cni.cncf.io/network-status` entries, exactly per NPWG 1.3 §5.3. */
import type { AnyResult, Result } from '../cni/types.js';
import { ipFamily, toCanonical } from '../cni/version.js';
import { type ApiClient, ApiError } from '../k8s/client.js';
import { podPath } from '../k8s/types.js';
import { NETWORK_STATUS_ANNOTATION } from './selection.js';

export interface NetworkStatusEntry {
  name: string;
  interface?: string;
  ips?: string[];
  mac?: string;
  default: boolean;
  dns?: { nameservers?: string[]; domain?: string; search?: string[] };
  'default-route'?: string[];
  'device-info'?: Record<string, unknown>;
  /** Multus-only keys, written only in compatibility mode. */
  gateway?: string[];
  mtu?: number;
}

export interface StatusInput {
  network: string;
  isDefault: boolean;
  /** Gateways of the default route this attachment carries, if it carries one. */
  defaultRoute?: string[];
  result?: AnyResult;
  deviceInfo?: Record<string, unknown>;
}

/**
 * Default-route gateways in a result (routes to 0.0.0.0/0 or ::/0). A route without `gw` goes via the
 * gateway of the result's IP of its family, as plugins install it (host-local's usual form:
 * `routes: [{"dst": "0.0.0.0/0"}]` with the gateway in `ips[].gateway`).
 */
export function defaultGateways(result: Result): string[] {
  const out: string[] = [];
  for (const r of result.routes ?? []) {
    const family = r.dst === '0.0.0.0/0' ? '4' : r.dst === '::/0' ? '6' : undefined;
    if (!family) continue;
    const gw = r.gw ?? result.ips?.find((ip) => ip.gateway && ipFamily(ip.address) === family)?.gateway;
    if (gw && !out.includes(gw)) out.push(gw);
  }
  return out;
}

/**
 * network-status `ips` are bare addresses, as Multus writes them and as their readers (policy agents,
 * KubeVirt) parse them with an IP parser; the CNI result's are CIDRs (`10.1.2.3/24`).
 */
const bareIp = (cidr: string): string => cidr.split('/')[0]!;

/** One entry per attachment; a minimal map (name, interface, default) when the result says little. */
export function statusEntry(input: StatusInput, ifName: string, multusCompat = false): NetworkStatusEntry {
  const entry: NetworkStatusEntry = { name: input.network, default: input.isDefault };
  const result = input.result ? toCanonical(input.result) : undefined;
  const interfaces = result?.interfaces ?? [];
  const index = interfaces.findIndex((i) => i.sandbox);
  if (index >= 0) {
    const iface = interfaces[index]!;
    entry.interface = iface.name;
    // An IP without an interface index (Calico, older plugins: the index is optional in CNI) is the
    // attachment's own: this entry stands for the attachment (Multus ≥ 4.1 drops them, its #1359).
    const ips = (result?.ips ?? []).filter((ip) => ip.interface === index || ip.interface === undefined).map((ip) => bareIp(ip.address));
    if (ips.length) entry.ips = ips;
    if (iface.mac) entry.mac = iface.mac;
    if (multusCompat && iface.mtu) entry.mtu = iface.mtu;
  } else {
    entry.interface = ifName;
    const ips = (result?.ips ?? []).filter((ip) => ip.interface === undefined).map((ip) => bareIp(ip.address));
    if (ips.length) entry.ips = ips;
  }
  const dns = result?.dns;
  if (dns && (dns.nameservers?.length || dns.domain || dns.search?.length)) {
    entry.dns = {};
    if (dns.nameservers?.length) entry.dns.nameservers = dns.nameservers;
    if (dns.domain) entry.dns.domain = dns.domain;
    if (dns.search?.length) entry.dns.search = dns.search;
  }
  if (input.defaultRoute?.length) entry['default-route'] = input.defaultRoute;
  if (input.deviceInfo) entry['device-info'] = input.deviceInfo;
  if (multusCompat && result) {
    const gws = defaultGateways(result);
    if (gws.length) entry.gateway = gws;
  }
  return entry;
}

/** Gateways to use for a requested default route: the ones asked for, else the result's per family. */
export function chooseGateways(requested: string[], result: AnyResult | undefined): string[] {
  if (requested.length) return requested;
  const r = result ? toCanonical(result) : undefined;
  const out: string[] = [];
  for (const family of ['4', '6'] as const) {
    const gw = r?.ips?.find((ip) => ip.gateway && ipFamily(ip.address) === family)?.gateway;
    if (gw) out.push(gw);
  }
  return out;
}

/**
 * The one network-status write: a merge patch of the pod's status subresource, with the pod's UID as a
 * precondition when it is known, so a status delayed or resent past the pod's deletion never lands on a
 * same-name pod created since. 'stale' when the pod is gone (404) or was replaced (422 on the UID, 409);
 * other failures throw.
 */
export async function writeNetworkStatus(api: ApiClient, pod: { namespace: string; name: string; uid?: string }, status: string): Promise<'ok' | 'stale'> {
  const body = { metadata: { ...(pod.uid ? { uid: pod.uid } : {}), annotations: { [NETWORK_STATUS_ANNOTATION]: status } } };
  try {
    await api.patch(`${podPath(pod.namespace, pod.name)}/status`, body);
    return 'ok';
  } catch (err) {
    // The real API server refuses another UID as an immutable-field change (422).
    if (err instanceof ApiError && (err.status === 404 || err.status === 409 || (err.status === 422 && /metadata\.uid/.test(err.message)))) return 'stale';
    throw err;
  }
}
