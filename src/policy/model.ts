/**
 * MultiNetworkPolicy (k8s.cni.cncf.io v1beta1/v1beta2, NetworkPolicy's semantics on NAD networks) and
 * the parts of pods and namespaces that policy reads, parsed from API objects into typed values. A
 * policy that does not parse is refused whole (and reported), never half applied.
 */
import { type Cidr, parseCidr } from '../ipam/addr.js';
import { isDnsLabel, isDnsSubdomain } from '../k8s/names.js';
import { isObject } from '../util/object.js';

export const MNP_GROUP = 'k8s.cni.cncf.io';
export const MNP_PLURAL = 'multi-networkpolicies';
/** Names the NADs a policy is for: `ns/name` or `name` (the policy's namespace), comma-separated. */
export const POLICY_FOR_ANNOTATION = 'k8s.v1.cni.cncf.io/policy-for';
export const NETWORK_STATUS = 'k8s.v1.cni.cncf.io/network-status';

export class PolicyParseError extends Error {}

export type Operator = 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';
export interface LabelSelector {
  matchLabels: Record<string, string>;
  matchExpressions: { key: string; operator: Operator; values: string[] }[];
}
export type Protocol = 'TCP' | 'UDP' | 'SCTP';
export interface PolicyPort {
  protocol: Protocol;
  /** A number, a name (the pod's container port of that name), or undefined: every port of the protocol. */
  port?: number | string;
  endPort?: number;
}
export interface IpBlock {
  cidr: Cidr;
  text: string;
  except: { cidr: Cidr; text: string }[];
}
export interface Peer {
  podSelector?: LabelSelector;
  namespaceSelector?: LabelSelector;
  ipBlock?: IpBlock;
}
export interface PolicyRule {
  /** Undefined or empty: every peer. */
  peers: Peer[];
  /** Empty: every port and protocol. */
  ports: PolicyPort[];
}
export interface MultiNetworkPolicy {
  namespace: string;
  name: string;
  uid?: string;
  /** `ns/name` of each NAD it is for; empty: it applies to nothing (as multi-networkpolicy-iptables). */
  networks: string[];
  podSelector: LabelSelector;
  /** Defaulted as NetworkPolicy does: Ingress always, Egress when there are egress rules. */
  ingress?: PolicyRule[];
  egress?: PolicyRule[];
}

const fail = (where: string, what: string): never => {
  throw new PolicyParseError(`${where}: ${what}`);
};

function stringMap(v: unknown, where: string): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (!isObject(v)) return fail(where, 'expected a map of strings');
  for (const [k, s] of Object.entries(v)) if (typeof s !== 'string') fail(`${where}.${k}`, 'expected a string');
  return v as Record<string, string>;
}

export function parseSelector(v: unknown, where: string): LabelSelector {
  if (v === null || v === undefined) return { matchLabels: {}, matchExpressions: [] };
  if (!isObject(v)) return fail(where, 'expected a label selector');
  const exprs = v.matchExpressions ?? [];
  if (!Array.isArray(exprs)) return fail(`${where}.matchExpressions`, 'expected a list');
  return {
    matchLabels: stringMap(v.matchLabels, `${where}.matchLabels`),
    matchExpressions: exprs.map((e: unknown, i) => {
      const at = `${where}.matchExpressions[${i}]`;
      if (!isObject(e) || typeof e.key !== 'string') return fail(at, 'expected {key, operator, values}');
      const operator = e.operator;
      if (operator !== 'In' && operator !== 'NotIn' && operator !== 'Exists' && operator !== 'DoesNotExist')
        return fail(`${at}.operator`, `"${String(operator)}" is not In, NotIn, Exists or DoesNotExist`);
      const values = e.values ?? [];
      if (!Array.isArray(values) || values.some((s) => typeof s !== 'string')) return fail(`${at}.values`, 'expected a list of strings');
      if ((operator === 'In' || operator === 'NotIn') && !values.length) fail(`${at}.values`, `${operator} needs values`);
      if ((operator === 'Exists' || operator === 'DoesNotExist') && values.length) fail(`${at}.values`, `${operator} takes no values`);
      return { key: e.key, operator, values: values as string[] };
    }),
  };
}

/** Label selector semantics: every matchLabels pair and every expression holds; the empty selector matches all. */
export function matches(sel: LabelSelector, labels: Record<string, string>): boolean {
  for (const [k, v] of Object.entries(sel.matchLabels)) if (labels[k] !== v) return false;
  for (const e of sel.matchExpressions) {
    const has = Object.hasOwn(labels, e.key);
    const ok = e.operator === 'In' ? has && e.values.includes(labels[e.key]!) : e.operator === 'NotIn' ? !has || !e.values.includes(labels[e.key]!) : e.operator === 'Exists' ? has : !has;
    if (!ok) return false;
  }
  return true;
}

const PORT_NAME = /^(?=.{1,15}$)(?=.*[a-z])[a-z0-9]+(-[a-z0-9]+)*$/;

function parsePort(v: unknown, where: string): PolicyPort {
  if (!isObject(v)) return fail(where, 'expected {protocol, port, endPort}');
  const protocol = v.protocol ?? 'TCP';
  if (protocol !== 'TCP' && protocol !== 'UDP' && protocol !== 'SCTP') return fail(`${where}.protocol`, `"${String(protocol)}" is not TCP, UDP or SCTP`);
  const out: PolicyPort = { protocol };
  const port = v.port;
  if (typeof port === 'number') {
    if (!Number.isInteger(port) || port < 1 || port > 65535) fail(`${where}.port`, `${port} is not a port number (1-65535)`);
    out.port = port;
  } else if (typeof port === 'string') {
    // An int-or-string given as digits is the number (kubectl sends "80" for a quoted port).
    if (/^\d+$/.test(port)) return parsePort({ ...v, port: Number(port) }, where);
    if (!PORT_NAME.test(port)) fail(`${where}.port`, `"${port}" is neither a port number nor a port name (IANA_SVC_NAME)`);
    out.port = port;
  } else if (port !== undefined && port !== null) fail(`${where}.port`, 'expected a number or a name');
  if (v.endPort !== undefined && v.endPort !== null) {
    const end = v.endPort;
    if (typeof out.port !== 'number') fail(`${where}.endPort`, 'needs a numeric port');
    if (typeof end !== 'number' || !Number.isInteger(end) || end < (out.port as number) || end > 65535) fail(`${where}.endPort`, `must be a port number not below port ${String(out.port)}`);
    out.endPort = end as number;
  }
  return out;
}

function parseIpBlock(v: unknown, where: string): IpBlock {
  if (!isObject(v) || typeof v.cidr !== 'string') return fail(where, 'expected {cidr, except}');
  const cidr = parseCidr(v.cidr);
  if (!cidr) return fail(`${where}.cidr`, `"${v.cidr}" is not a CIDR`);
  const except = v.except ?? [];
  if (!Array.isArray(except)) return fail(`${where}.except`, 'expected a list of CIDRs');
  return {
    cidr,
    text: v.cidr,
    except: except.map((e: unknown, i) => {
      const c = typeof e === 'string' ? parseCidr(e) : undefined;
      if (!c) return fail(`${where}.except[${i}]`, `"${String(e)}" is not a CIDR`);
      if (c.family !== cidr.family || c.prefix < cidr.prefix || c.network < cidr.network || c.broadcast > cidr.broadcast)
        fail(`${where}.except[${i}]`, `${String(e)} is not inside ${v.cidr as string}`);
      return { cidr: c, text: e as string };
    }),
  };
}

function parsePeer(v: unknown, where: string): Peer {
  if (!isObject(v)) return fail(where, 'expected a peer');
  const peer: Peer = {};
  if (v.podSelector !== undefined && v.podSelector !== null) peer.podSelector = parseSelector(v.podSelector, `${where}.podSelector`);
  if (v.namespaceSelector !== undefined && v.namespaceSelector !== null) peer.namespaceSelector = parseSelector(v.namespaceSelector, `${where}.namespaceSelector`);
  if (v.ipBlock !== undefined && v.ipBlock !== null) {
    if (peer.podSelector || peer.namespaceSelector) fail(where, 'ipBlock cannot be combined with podSelector or namespaceSelector');
    peer.ipBlock = parseIpBlock(v.ipBlock, `${where}.ipBlock`);
  }
  if (!peer.podSelector && !peer.namespaceSelector && !peer.ipBlock) fail(where, 'a peer needs podSelector, namespaceSelector or ipBlock');
  return peer;
}

function parseRules(v: unknown, where: string, peersKey: 'from' | 'to'): PolicyRule[] {
  if (v === null || v === undefined) return [];
  if (!Array.isArray(v)) return fail(where, 'expected a list of rules');
  return v.map((r: unknown, i) => {
    const at = `${where}[${i}]`;
    if (!isObject(r)) return fail(at, 'expected a rule');
    const peers = r[peersKey] ?? [];
    const ports = r.ports ?? [];
    if (!Array.isArray(peers)) return fail(`${at}.${peersKey}`, 'expected a list');
    if (!Array.isArray(ports)) return fail(`${at}.ports`, 'expected a list');
    return { peers: peers.map((p: unknown, j) => parsePeer(p, `${at}.${peersKey}[${j}]`)), ports: ports.map((p: unknown, j) => parsePort(p, `${at}.ports[${j}]`)) };
  });
}

/** The policy-for annotation: `ns/name` or `name`, comma-separated, spaces around entries allowed. */
export function parsePolicyFor(text: string | undefined, namespace: string): string[] {
  if (text === undefined) return [];
  const out: string[] = [];
  for (const raw of text.split(',')) {
    const entry = raw.trim();
    if (!entry) continue;
    const parts = entry.split('/');
    const [ns, name] = parts.length === 2 ? parts : parts.length === 1 ? [namespace, parts[0]] : [];
    if (!ns || !name || !isDnsLabel(ns) || !isDnsSubdomain(name)) fail(POLICY_FOR_ANNOTATION, `"${entry}" is not a NAD name (name or namespace/name)`);
    if (!out.includes(`${ns}/${name}`)) out.push(`${ns}/${name}`);
  }
  return out;
}

/** A MultiNetworkPolicy object as the API server gives it (either version). */
export function parsePolicy(raw: unknown): MultiNetworkPolicy {
  if (!isObject(raw) || !isObject(raw.metadata)) return fail('MultiNetworkPolicy', 'expected an object with metadata');
  const md = raw.metadata;
  if (typeof md.name !== 'string' || typeof md.namespace !== 'string') return fail('MultiNetworkPolicy', 'metadata needs name and namespace');
  const where = `MultiNetworkPolicy ${md.namespace}/${md.name}`;
  const annotations = stringMap(md.annotations, `${where} metadata.annotations`);
  const spec = raw.spec;
  if (!isObject(spec)) return fail(where, 'spec is missing');
  const types = spec.policyTypes;
  if (types !== undefined && types !== null && (!Array.isArray(types) || types.some((t) => t !== 'Ingress' && t !== 'Egress')))
    fail(`${where} spec.policyTypes`, 'expected a list of Ingress / Egress');
  const ingressRules = parseRules(spec.ingress, `${where} spec.ingress`, 'from');
  const egressRules = parseRules(spec.egress, `${where} spec.egress`, 'to');
  // NetworkPolicy's defaulting: every policy is for ingress, one with egress rules for egress too.
  const list = Array.isArray(types) && types.length ? (types as string[]) : ['Ingress', ...(Array.isArray(spec.egress) && spec.egress.length ? ['Egress'] : [])];
  return {
    namespace: md.namespace,
    name: md.name,
    ...(typeof md.uid === 'string' ? { uid: md.uid } : {}),
    networks: parsePolicyFor(annotations[POLICY_FOR_ANNOTATION], md.namespace),
    podSelector: parseSelector(spec.podSelector, `${where} spec.podSelector`),
    ...(list.includes('Ingress') ? { ingress: ingressRules } : {}),
    ...(list.includes('Egress') ? { egress: egressRules } : {}),
  };
}

/** One of a pod's attachments, as its network-status (or the ADD in progress) says. */
export interface PodNetwork {
  /** The NAD, `ns/name`. */
  network: string;
  ifName?: string;
  ips: string[];
}

/** A sandbox as network policy sees it: its netns, its pod, its NAD attachments. */
export interface PolicySandbox {
  containerID: string;
  netns: string;
  namespace: string;
  name: string;
  uid?: string;
  /** Its NAD attachments (not the cluster network's). */
  networks: PodNetwork[];
}

/** What policy reads of a pod: its labels, named ports and addresses on each network. */
export interface PolicyPod {
  namespace: string;
  name: string;
  uid?: string;
  resourceVersion?: string;
  nodeName?: string;
  labels: Record<string, string>;
  /** Container ports with a name: named ports of policies resolve against them. */
  namedPorts: { name: string; protocol: Protocol; port: number }[];
  networks: PodNetwork[];
}

/** network-status entries into attachments (the cluster network's entry, `default: true`, is not one). */
export function networksOfStatus(text: string | undefined): PodNetwork[] {
  if (!text) return [];
  let entries: unknown;
  try {
    entries = JSON.parse(text);
  } catch {
    return [];
  }
  if (!Array.isArray(entries)) return [];
  const out: PodNetwork[] = [];
  for (const e of entries) {
    if (!isObject(e) || typeof e.name !== 'string' || e.default === true) continue;
    const ips = Array.isArray(e.ips) ? e.ips.filter((ip): ip is string => typeof ip === 'string').map((ip) => ip.split('/')[0]!) : [];
    out.push({ network: e.name, ...(typeof e.interface === 'string' ? { ifName: e.interface } : {}), ips });
  }
  return out;
}

/** A pod from the API, cut to what policy reads. */
export function parsePolicyPod(raw: unknown): PolicyPod {
  if (!isObject(raw) || !isObject(raw.metadata)) return fail('pod', 'expected an object with metadata');
  const md = raw.metadata;
  if (typeof md.name !== 'string' || typeof md.namespace !== 'string') return fail('pod', 'metadata needs name and namespace');
  const annotations = stringMap(md.annotations, `pod ${md.namespace}/${md.name} metadata.annotations`);
  const spec = isObject(raw.spec) ? raw.spec : {};
  const namedPorts: PolicyPod['namedPorts'] = [];
  for (const c of Array.isArray(spec.containers) ? spec.containers : []) {
    if (!isObject(c) || !Array.isArray(c.ports)) continue;
    for (const p of c.ports) {
      if (!isObject(p) || typeof p.name !== 'string' || typeof p.containerPort !== 'number') continue;
      const protocol = p.protocol === 'UDP' || p.protocol === 'SCTP' ? p.protocol : 'TCP';
      namedPorts.push({ name: p.name, protocol, port: p.containerPort });
    }
  }
  const status = isObject(raw.status) ? raw.status : {};
  // A pod that has ended holds no addresses any more (they may be someone else's now).
  const ended = status.phase === 'Succeeded' || status.phase === 'Failed';
  return {
    namespace: md.namespace,
    name: md.name,
    ...(typeof md.uid === 'string' ? { uid: md.uid } : {}),
    ...(typeof md.resourceVersion === 'string' ? { resourceVersion: md.resourceVersion } : {}),
    ...(typeof spec.nodeName === 'string' ? { nodeName: spec.nodeName } : {}),
    labels: stringMap(md.labels, `pod ${md.namespace}/${md.name} metadata.labels`),
    namedPorts,
    networks: ended || spec.hostNetwork === true ? [] : networksOfStatus(annotations[NETWORK_STATUS]),
  };
}

export interface PolicyNamespace {
  name: string;
  resourceVersion?: string;
  labels: Record<string, string>;
}

export function parsePolicyNamespace(raw: unknown): PolicyNamespace {
  if (!isObject(raw) || !isObject(raw.metadata) || typeof raw.metadata.name !== 'string') return fail('namespace', 'expected an object with metadata.name');
  const md = raw.metadata;
  return {
    name: md.name as string,
    ...(typeof md.resourceVersion === 'string' ? { resourceVersion: md.resourceVersion } : {}),
    labels: stringMap(md.labels, `namespace ${md.name as string} metadata.labels`),
  };
}
