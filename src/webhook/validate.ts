/**
 * Admission verdicts on NADs and on pods' network requests. The webhook and `plexusctl explain` both
 * call these, and these call what the meta plugin calls at ADD (the annotation parsers, the NAD
 * parser, the namespace, plugin-name and capability checks): a pod the webhook admits is a pod whose
 * networks the plugin can plan, and a denial says what the plugin's code-7 error would have said.
 */
import { isDnsLabel, isDnsSubdomain } from '../k8s/names.js';
import { isObject } from '../util/object.js';
import { CniError } from '../cni/errors.js';
import type { NetworkConfigList } from '../cni/types.js';
import type { NetworkAttachmentDefinition } from '../k8s/types.js';
import { checkCapabilities, checkPluginNames } from '../meta/checks.js';
import { checkNamespaceAllowed } from '../meta/conf.js';
import { nadToConfList } from '../meta/nad.js';
import { DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION, RESOURCE_NAME_ANNOTATION, type NetworkSelection, parseDefaultNetworkAnnotation, parseNetworksAnnotation } from '../meta/selection.js';
import { type PodView, deviceCount } from './pod.js';

/** network-resources-injector's annotation: the NAD's networks only schedule on nodes matching it. */
export const NODE_SELECTOR_ANNOTATION = 'k8s.v1.cni.cncf.io/nodeSelector';

/** What the webhook knows of the cluster, from its informers (or, for explain, from single GETs). */
export interface Catalog {
  nad(namespace: string, name: string): NetworkAttachmentDefinition | undefined;
  /** Asks the API for a NAD the cache does not have (yet); afterwards `nad()` answers with it. */
  fetchNad?(namespace: string, name: string): Promise<void>;
  /** Whether an IPAMClaim exists; undefined when that cannot be known (no IPAMClaim CRD, no list yet). */
  ipamClaim(namespace: string, name: string): boolean | undefined;
  /** The largest allocatable count of a resource on any node; 0 when none has it; undefined when unknown. */
  largestAllocatable(resource: string): number | undefined;
}

export interface AdmissionPolicy {
  namespaceIsolation: boolean;
  globalNamespaces: string[];
  /** Where a default-network annotation without a namespace points (the meta conf's multusNamespace). */
  multusNamespace: string;
  /** How many networks the node conf attaches before the selections (clusterNetwork + defaultNetworks): the first net<N> name. */
  attachmentsBefore: number;
  /** A selection naming a NAD that does not exist: deny (default), or admit with a warning (the NAD may come later). */
  missingNad: 'deny' | 'warn';
}

export const DEFAULT_POLICY: AdmissionPolicy = { namespaceIsolation: false, globalNamespaces: [], multusNamespace: 'kube-system', attachmentsBefore: 1, missingNad: 'deny' };

export interface Verdict {
  denials: string[];
  warnings: string[];
}

/** A selected network with what its NAD says. */
export interface SelectedNetwork {
  selection: NetworkSelection;
  nad?: NetworkAttachmentDefinition;
  list?: NetworkConfigList;
  resourceName?: string;
  /** Its device comes from one of the pod's ResourceClaims (DRA), not a device-plugin request. */
  fromClaim?: boolean;
}

const QUALIFIED_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

function message(err: unknown): string {
  return CniError.from(err).message;
}

/** An extended resource name as kubelet's device manager accepts it: `<domain>/<name>`, not in kubernetes.io. */
export function resourceNameProblem(value: string): string | undefined {
  const [domain, name, ...rest] = value.split('/');
  if (rest.length || !domain || !name) return `must be <domain>/<name>, got ${JSON.stringify(value)}`;
  if (!isDnsSubdomain(domain)) return `domain ${JSON.stringify(domain)} is not a DNS subdomain`;
  if (domain === 'kubernetes.io' || domain.endsWith('.kubernetes.io')) return `domain ${JSON.stringify(domain)} is reserved for Kubernetes' own resources`;
  if (name.length > 63 || !QUALIFIED_NAME.test(name)) return `name ${JSON.stringify(name)} must be 1-63 characters of [A-Za-z0-9_.-], starting and ending alphanumeric`;
  return undefined;
}

/** `key=value[,key=value]` → map, or the reason it is not one. */
export function parseNodeSelector(value: string): Record<string, string> | string {
  const out: Record<string, string> = {};
  for (const part of value.split(',').map((p) => p.trim())) {
    const eq = part.indexOf('=');
    const key = part.slice(0, eq);
    const v = part.slice(eq + 1);
    if (eq <= 0 || !/^([a-z0-9.-]+\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/.test(key) || !/^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/.test(v) || v.length > 63) {
      return `${JSON.stringify(part)} is not key=value (a label key and value)`;
    }
    out[key] = v;
  }
  return out;
}

/** A NAD as created or updated: its config parses as the plugin parses it. */
export function validateNad(nad: NetworkAttachmentDefinition): Verdict {
  const denials: string[] = [];
  const warnings: string[] = [];
  const { name, namespace, annotations = {} } = nad.metadata;
  if (!isDnsLabel(name)) warnings.push(`metadata.name "${name}" is not a DNS-1123 label: no ${NETWORKS_ANNOTATION} annotation can select it`);
  const resourceName = annotations[RESOURCE_NAME_ANNOTATION];
  if (resourceName !== undefined) {
    const why = resourceNameProblem(resourceName);
    if (why) denials.push(`metadata.annotations["${RESOURCE_NAME_ANNOTATION}"] ${why}`);
  }
  const selector = annotations[NODE_SELECTOR_ANNOTATION];
  if (selector !== undefined && typeof parseNodeSelector(selector) === 'string') denials.push(`metadata.annotations["${NODE_SELECTOR_ANNOTATION}"]: ${parseNodeSelector(selector) as string}`);
  if (!nad.spec?.config?.trim()) {
    warnings.push(`NetworkAttachmentDefinition ${namespace}/${name} has no spec.config: each node needs a conf file named "${name}" in its CNI conf dir`);
    return { denials, warnings };
  }
  try {
    const list = nadToConfList(nad, '/nonexistent');
    checkPluginNames(list);
    if (list.name !== name) warnings.push(`spec.config name "${list.name}" differs from metadata.name "${name}": IPAM and cached results are keyed by "${list.name}"`);
  } catch (err) {
    denials.push(message(err));
  }
  return { denials, warnings };
}

/** One selected network: allowed for the pod's namespace, its NAD present and plannable, its node selector and IPAMClaim consistent. */
function resolve(sel: NetworkSelection, podNamespace: string, podNodeSelector: Record<string, string>, catalog: Catalog, policy: AdmissionPolicy, verdict: Verdict, ifName: string): SelectedNetwork {
  const out: SelectedNetwork = { selection: sel };
  const where = `network ${sel.namespace}/${sel.name}`;
  try {
    checkNamespaceAllowed(policy, podNamespace, sel.namespace, sel.name);
  } catch (err) {
    verdict.denials.push(message(err));
    return out;
  }
  const nad = catalog.nad(sel.namespace, sel.name);
  if (!nad) {
    const text = `${where} (as ${ifName}): NetworkAttachmentDefinition ${sel.namespace}/${sel.name} does not exist`;
    (policy.missingNad === 'deny' ? verdict.denials : verdict.warnings).push(text);
    return out;
  }
  out.nad = nad;
  const resourceName = nad.metadata.annotations?.[RESOURCE_NAME_ANNOTATION];
  if (resourceName) out.resourceName = resourceName;
  if (!nad.spec?.config?.trim()) {
    verdict.warnings.push(`${where} has no spec.config: the node's conf file "${sel.name}" is used, which the webhook cannot check`);
  } else {
    try {
      out.list = nadToConfList(nad, '/nonexistent');
      checkPluginNames(out.list);
      checkCapabilities(out.list, sel);
    } catch (err) {
      verdict.denials.push(`${message(err)}; ${where} (NAD) as ${ifName}`);
    }
  }
  const selector = nad.metadata.annotations?.[NODE_SELECTOR_ANNOTATION];
  const wanted = selector ? parseNodeSelector(selector) : {};
  for (const [k, v] of typeof wanted === 'string' ? [] : Object.entries(wanted)) {
    const has = podNodeSelector[k];
    if (has !== undefined && has !== v) verdict.denials.push(`${where} runs only on nodes with ${k}=${v} (its ${NODE_SELECTOR_ANNOTATION}) but the pod's nodeSelector has ${k}=${has}`);
  }
  if (sel.ipamClaimReference) {
    // The claim lives with the pod (NPWG 1.3), whatever namespace the NAD is in.
    const exists = catalog.ipamClaim(podNamespace, sel.ipamClaimReference);
    if (exists === false) verdict.denials.push(`${where}: ipam-claim-reference names IPAMClaim ${podNamespace}/${sel.ipamClaimReference}, which does not exist`);
    if (exists === undefined) verdict.warnings.push(`${where}: IPAMClaim ${podNamespace}/${sel.ipamClaimReference} could not be checked (the IPAMClaim CRD is not installed or not listed yet)`);
  }
  return out;
}

/** The pod's whole network request. `networks` is what the mutating side needs (NADs, resource names). */
export function validatePod(pod: PodView, catalog: Catalog, policy: AdmissionPolicy): Verdict & { networks: SelectedNetwork[] } {
  const verdict: Verdict = { denials: [], warnings: [] };
  const networks: SelectedNetwork[] = [];
  let selections: NetworkSelection[] = [];
  try {
    selections = parseNetworksAnnotation(pod.annotations[NETWORKS_ANNOTATION], pod.namespace);
  } catch (err) {
    verdict.denials.push(message(err));
  }
  try {
    const sel = parseDefaultNetworkAnnotation(pod.annotations[DEFAULT_NETWORK_ANNOTATION], policy.multusNamespace);
    if (sel) networks.push(resolve(sel, pod.namespace, pod.nodeSelector, catalog, policy, verdict, sel.interface ?? 'eth0'));
  } catch (err) {
    verdict.denials.push(message(err));
  }
  // Interface names as the plugin gives them: the cluster network's, then net<N> in attachment order.
  const names = new Map<string, string>([[networks[0]?.selection.interface ?? 'eth0', 'the cluster network']]);
  selections.forEach((sel, i) => {
    const ifName = sel.interface ?? `net${policy.attachmentsBefore + i}`;
    const other = names.get(ifName);
    if (other !== undefined) verdict.denials.push(`duplicate interface name: "${ifName}" is requested by ${other} and ${sel.namespace}/${sel.name}`);
    names.set(ifName, `${sel.namespace}/${sel.name}`);
    networks.push(resolve(sel, pod.namespace, pod.nodeSelector, catalog, policy, verdict, ifName));
  });
  markClaimed(pod, networks, catalog);
  checkDevices(pod, networks, catalog, verdict);
  return { ...verdict, networks };
}

/**
 * DRA: a pod with ResourceClaims takes a NAD's device from a claim when the claimed device's pool is
 * the NAD's resourceName (the meta plugin's side, docs/dra.md). A resource no node advertises as an
 * extended resource is such a pool: asking the pod for it as a device-plugin request (or injecting
 * one) would keep it Pending for good.
 */
function markClaimed(pod: PodView, networks: SelectedNetwork[], catalog: Catalog): void {
  const spec = isObject(pod.raw.spec) ? pod.raw.spec : {};
  if (!Array.isArray(spec.resourceClaims) || !spec.resourceClaims.length) return;
  for (const n of networks) if (n.resourceName && !((catalog.largestAllocatable(n.resourceName) ?? 0) > 0)) n.fromClaim = true;
}

/** Networks with a resourceName need that many devices requested by the pod, and a node that has them. */
function checkDevices(pod: PodView, networks: SelectedNetwork[], catalog: Catalog, verdict: Verdict): void {
  const needed = devicesNeeded(networks);
  for (const [resource, count] of needed) {
    const requested = pod.containers.reduce((n, c) => n + deviceCount(c, resource), 0);
    if (requested < count) {
      verdict.denials.push(
        `the pod selects ${count} network(s) of resource ${resource} but its containers request ${requested}: add resources.requests and limits "${resource}: ${count}" to a container, or let Plexus's mutating webhook inject them`,
      );
    }
    const largest = catalog.largestAllocatable(resource);
    if (largest === 0) verdict.warnings.push(`no node advertises ${resource}: the pod will stay Pending until one does`);
    else if (largest !== undefined && largest < count) verdict.warnings.push(`the pod needs ${count} of ${resource} but the largest node has ${largest} allocatable: it cannot be scheduled`);
  }
}

/** resourceName → how many selected networks use it (each takes one device). */
export function devicesNeeded(networks: SelectedNetwork[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const n of networks) if (n.resourceName && !n.selection.deviceID && !n.fromClaim) out.set(n.resourceName, (out.get(n.resourceName) ?? 0) + 1);
  return out;
}
