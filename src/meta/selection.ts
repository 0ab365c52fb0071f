/**
 * Network selection: the pod annotations `k8s.v1.cni.cncf.io/networks` (comma list or JSON list,
 * NPWG 1.3) and `v1.multus-cni.io/default-network`, parsed into typed selections. Anything invalid
 * is a CNI error naming the element and the field: a pod never starts with fewer networks than
 * it asked for.
 */
import { DNS_LABEL } from '../k8s/names.js';
import { isIpOrCidr, isMac, isPlainIp, macNotAssignable } from '../net/addr.js';
import { CniError, ErrorCode } from '../cni/errors.js';
import { validateIfName } from '../cni/skel.js';
import { isObject } from '../util/object.js';

export const NETWORKS_ANNOTATION = 'k8s.v1.cni.cncf.io/networks';
export const DEFAULT_NETWORK_ANNOTATION = 'v1.multus-cni.io/default-network';
export const NETWORK_STATUS_ANNOTATION = 'k8s.v1.cni.cncf.io/network-status';
export const RESOURCE_NAME_ANNOTATION = 'k8s.v1.cni.cncf.io/resourceName';
export interface PortMapping {
  hostPort: number;
  containerPort: number;
  protocol: 'tcp' | 'udp' | 'sctp';
  hostIP?: string;
}
export interface Bandwidth {
  ingressRate?: number;
  ingressBurst?: number;
  egressRate?: number;
  egressBurst?: number;
}

/** One element of the selection annotation. */
export interface NetworkSelection {
  name: string;
  namespace: string;
  interface?: string;
  ips?: string[];
  mac?: string;
  infinibandGUID?: string;
  cniArgs?: Record<string, unknown>;
  portMappings?: PortMapping[];
  bandwidth?: Bandwidth;
  defaultRoute?: string[];
  ipamClaimReference?: string;
  deviceID?: string;
}

function bad(index: number, field: string, why: string): CniError {
  return new CniError(ErrorCode.InvalidNetworkConfig, `invalid ${NETWORKS_ANNOTATION} annotation`, `element ${index}: ${field} ${why}`);
}

function checkName(index: number, field: string, v: unknown): string {
  if (typeof v !== 'string' || !DNS_LABEL.test(v) || v.length > 253) throw bad(index, field, `must be a DNS-1123 label, got ${JSON.stringify(v)}`);
  return v;
}

function checkIfName(index: number, v: unknown): string {
  if (typeof v !== 'string') throw bad(index, 'interface', 'must be a string');
  try {
    validateIfName(v);
  } catch (err) {
    throw bad(index, 'interface', (err as CniError).details ?? 'is invalid');
  }
  return v;
}

function checkPort(index: number, field: string, v: unknown): number {
  if (!Number.isInteger(v) || (v as number) < 1 || (v as number) > 65535) throw bad(index, field, `must be a port 1-65535, got ${JSON.stringify(v)}`);
  return v as number;
}

function checkRate(index: number, field: string, v: unknown): number {
  if (!Number.isInteger(v) || (v as number) <= 0) throw bad(index, field, `must be a positive integer, got ${JSON.stringify(v)}`);
  return v as number;
}

const KNOWN_KEYS = new Set([
  'name',
  'namespace',
  'interface',
  'interfaceRequest',
  'ips',
  'mac',
  'infiniband-guid',
  'cni-args',
  'portMappings',
  'bandwidth',
  'default-route',
  'ipam-claim-reference',
  'deviceID',
]);

function parseElement(raw: unknown, index: number, podNamespace: string): NetworkSelection {
  if (!isObject(raw)) throw bad(index, 'element', 'must be an object');
  for (const key of Object.keys(raw)) {
    // Keys without a dot are reserved by the spec; vendors use reverse-DNS names, which we pass over.
    if (!KNOWN_KEYS.has(key) && !key.includes('.')) throw bad(index, JSON.stringify(key), 'is not an NPWG key (non-standard keys must be reverse-DNS)');
  }
  const sel: NetworkSelection = {
    name: checkName(index, 'name', raw.name),
    namespace: raw.namespace === undefined ? podNamespace : checkName(index, 'namespace', raw.namespace),
  };
  const ifname = raw.interface ?? raw.interfaceRequest;
  if (ifname !== undefined && ifname !== '') sel.interface = checkIfName(index, ifname);
  if (raw.ips !== undefined) {
    if (!Array.isArray(raw.ips) || raw.ips.length === 0) throw bad(index, 'ips', 'must be a non-empty list');
    sel.ips = raw.ips.map((ip, i) => {
      if (typeof ip !== 'string' || !isIpOrCidr(ip)) throw bad(index, `ips[${i}]`, `is not an IP address: ${JSON.stringify(ip)}`);
      return ip;
    });
  }
  if (raw.mac !== undefined) {
    if (typeof raw.mac !== 'string' || !isMac(raw.mac)) throw bad(index, 'mac', `is not a 6-byte MAC address: ${JSON.stringify(raw.mac)}`);
    const why = macNotAssignable(raw.mac);
    if (why) throw bad(index, 'mac', `${why}, not an interface address: ${raw.mac}`);
    sel.mac = raw.mac;
  }
  if (raw['infiniband-guid'] !== undefined) {
    const guid = raw['infiniband-guid'];
    if (typeof guid !== 'string' || !isMac(guid, 8)) throw bad(index, 'infiniband-guid', `is not an 8-byte GUID: ${JSON.stringify(guid)}`);
    sel.infinibandGUID = guid;
  }
  if (raw['cni-args'] !== undefined) {
    if (!isObject(raw['cni-args'])) throw bad(index, 'cni-args', 'must be an object');
    sel.cniArgs = raw['cni-args'];
  }
  if (raw.portMappings !== undefined) {
    if (!Array.isArray(raw.portMappings) || raw.portMappings.length === 0) throw bad(index, 'portMappings', 'must be a non-empty list');
    sel.portMappings = raw.portMappings.map((pm, i) => {
      if (!isObject(pm)) throw bad(index, `portMappings[${i}]`, 'must be an object');
      const protocol = pm.protocol === undefined ? 'tcp' : String(pm.protocol).toLowerCase();
      if (protocol !== 'tcp' && protocol !== 'udp' && protocol !== 'sctp') throw bad(index, `portMappings[${i}].protocol`, `must be TCP, UDP or SCTP, got ${JSON.stringify(pm.protocol)}`);
      const out: PortMapping = {
        hostPort: checkPort(index, `portMappings[${i}].hostPort`, pm.hostPort),
        containerPort: checkPort(index, `portMappings[${i}].containerPort`, pm.containerPort),
        protocol,
      };
      if (pm.hostIP !== undefined) {
        if (typeof pm.hostIP !== 'string' || !isPlainIp(pm.hostIP)) throw bad(index, `portMappings[${i}].hostIP`, 'is not an IP address');
        out.hostIP = pm.hostIP;
      }
      return out;
    });
  }
  if (raw.bandwidth !== undefined) {
    const bw = raw.bandwidth;
    if (!isObject(bw)) throw bad(index, 'bandwidth', 'must be an object');
    const out: Bandwidth = {};
    for (const key of ['ingressRate', 'ingressBurst', 'egressRate', 'egressBurst'] as const) {
      if (bw[key] !== undefined) out[key] = checkRate(index, `bandwidth.${key}`, bw[key]);
    }
    if (out.ingressBurst !== undefined && out.ingressRate === undefined) throw bad(index, 'bandwidth.ingressBurst', 'needs ingressRate');
    if (out.egressBurst !== undefined && out.egressRate === undefined) throw bad(index, 'bandwidth.egressBurst', 'needs egressRate');
    sel.bandwidth = out;
  }
  if (raw['default-route'] !== undefined) {
    const gws = raw['default-route'];
    if (!Array.isArray(gws)) throw bad(index, 'default-route', 'must be a list of gateway IPs');
    sel.defaultRoute = gws.map((gw, i) => {
      if (typeof gw !== 'string' || !isPlainIp(gw)) throw bad(index, `default-route[${i}]`, `is not an IP address: ${JSON.stringify(gw)}`);
      return gw;
    });
  }
  if (raw['ipam-claim-reference'] !== undefined) {
    if (typeof raw['ipam-claim-reference'] !== 'string' || !raw['ipam-claim-reference']) throw bad(index, 'ipam-claim-reference', 'must be a non-empty string');
    if (sel.ips) throw bad(index, 'ipam-claim-reference', 'cannot be combined with ips');
    sel.ipamClaimReference = raw['ipam-claim-reference'];
  }
  if (raw.deviceID !== undefined) {
    if (typeof raw.deviceID !== 'string' || !raw.deviceID) throw bad(index, 'deviceID', 'must be a non-empty string');
    sel.deviceID = raw.deviceID;
  }
  return sel;
}

/** `[<ns>/]<name>[@<ifname>]` */
function parseCommaItem(item: string, index: number, podNamespace: string): NetworkSelection {
  if (!item) throw bad(index, 'element', 'is empty');
  const at = item.split('@');
  if (at.length > 2) throw bad(index, JSON.stringify(item), 'has more than one "@"');
  const slash = at[0]!.split('/');
  if (slash.length > 2) throw bad(index, JSON.stringify(item), 'has more than one "/"');
  const sel: NetworkSelection =
    slash.length === 2 ? { namespace: checkName(index, 'namespace', slash[0]), name: checkName(index, 'name', slash[1]) } : { namespace: podNamespace, name: checkName(index, 'name', slash[0]) };
  if (at.length === 2) sel.interface = checkIfName(index, at[1]);
  return sel;
}

/** Parses the selection annotation; an absent or blank value selects nothing. */
export function parseNetworksAnnotation(value: string | undefined, podNamespace: string): NetworkSelection[] {
  const text = (value ?? '').trim();
  if (!text) return [];
  let selections: NetworkSelection[];
  if (/[[{"]/.test(text)) {
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new CniError(ErrorCode.DecodingFailure, `failed to decode ${NETWORKS_ANNOTATION} annotation`, (err as Error).message);
    }
    const list = Array.isArray(raw) ? raw : [raw];
    selections = list.map((el, i) => parseElement(el, i, podNamespace));
  } else {
    selections = text.split(',').map((item, i) => parseCommaItem(item.trim(), i, podNamespace));
  }
  const defaults = selections.filter((s) => s.defaultRoute !== undefined).length;
  if (defaults > 1) {
    throw new CniError(ErrorCode.InvalidNetworkConfig, `invalid ${NETWORKS_ANNOTATION} annotation`, `"default-route" is set on ${defaults} elements; at most one may carry it`);
  }
  return selections;
}

/** `v1.multus-cni.io/default-network`: exactly one network; its namespace defaults to `defaultNamespace`. */
export function parseDefaultNetworkAnnotation(value: string | undefined, defaultNamespace: string): NetworkSelection | undefined {
  const text = (value ?? '').trim();
  if (!text) return undefined;
  const selections = parseNetworksAnnotation(text, defaultNamespace);
  if (selections.length !== 1) {
    throw new CniError(ErrorCode.InvalidNetworkConfig, `invalid ${DEFAULT_NETWORK_ANNOTATION} annotation`, `must name exactly one network, got ${selections.length}`);
  }
  return selections[0];
}
