/**
 * `admission.k8s.io/v1` AdmissionReview in and out, and the two decisions: /validate (NADs, pods) and
 * /mutate (pods). Each answers from the catalog in memory; nothing here waits on the API server.
 */
import { parseNad } from '../k8s/types.js';
import { DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION, parseDefaultNetworkAnnotation, parseNetworksAnnotation } from '../meta/selection.js';
import { isObject } from '../util/object.js';
import { type InjectOptions, type JsonPatchOp, applyUserInjections, mutatePod, unknownResourceContainers, RESOURCE_CONTAINERS_ANNOTATION } from './inject.js';
import { PodShapeError, type PodView, parsePodView } from './pod.js';
import { type AdmissionPolicy, type Catalog, type Verdict, validateNad, validatePod } from './validate.js';

export interface AdmissionRequest {
  uid: string;
  kind: { group: string; version: string; kind: string };
  operation: 'CREATE' | 'UPDATE' | 'DELETE' | 'CONNECT';
  namespace?: string;
  object?: unknown;
  oldObject?: unknown;
}

export class ReviewError extends Error {}

/** The request of an AdmissionReview, checked: anything else is a 400, not a decision. */
export function parseReview(body: unknown): AdmissionRequest {
  if (!isObject(body) || body.apiVersion !== 'admission.k8s.io/v1' || body.kind !== 'AdmissionReview') throw new ReviewError('not an admission.k8s.io/v1 AdmissionReview');
  const r = body.request;
  if (!isObject(r) || typeof r.uid !== 'string' || !r.uid) throw new ReviewError('AdmissionReview without request.uid');
  const k = r.kind;
  if (!isObject(k) || typeof k.kind !== 'string' || typeof k.version !== 'string' || typeof k.group !== 'string') throw new ReviewError('request.kind must be {group, version, kind}');
  if (r.operation !== 'CREATE' && r.operation !== 'UPDATE' && r.operation !== 'DELETE' && r.operation !== 'CONNECT')
    throw new ReviewError(`request.operation ${JSON.stringify(r.operation)} is unknown`);
  return {
    uid: r.uid,
    kind: { group: k.group, version: k.version, kind: k.kind },
    operation: r.operation,
    ...(typeof r.namespace === 'string' ? { namespace: r.namespace } : {}),
    ...(r.object !== undefined && r.object !== null ? { object: r.object } : {}),
    ...(r.oldObject !== undefined && r.oldObject !== null ? { oldObject: r.oldObject } : {}),
  };
}

export interface Decision {
  allowed: boolean;
  message?: string;
  warnings?: string[];
  patch?: unknown[];
  /** For the metrics: allowed, denied, patched, skipped. */
  outcome: 'allowed' | 'denied' | 'patched' | 'skipped';
}

/** The AdmissionReview answer. Warnings are capped as the API server caps them (it drops the rest). */
export function reviewResponse(uid: string, d: Decision): Record<string, unknown> {
  const response: Record<string, unknown> = { uid, allowed: d.allowed };
  if (!d.allowed) response.status = { code: 403, reason: 'Forbidden', message: d.message ?? 'denied' };
  if (d.warnings?.length) response.warnings = d.warnings.slice(0, 20);
  if (d.patch?.length) {
    response.patchType = 'JSONPatch';
    response.patch = Buffer.from(JSON.stringify(d.patch)).toString('base64');
  }
  return { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response };
}

function verdictDecision(what: string, denials: string[], warnings: string[]): Decision {
  if (denials.length) return { allowed: false, message: `${what}: ${denials.join('; ')}`, warnings, outcome: 'denied' };
  return { allowed: true, warnings, outcome: 'allowed' };
}

const networkAnnotations = (obj: unknown): string => {
  const a = isObject(obj) && isObject(obj.metadata) && isObject(obj.metadata.annotations) ? obj.metadata.annotations : {};
  return JSON.stringify([a[NETWORKS_ANNOTATION], a[DEFAULT_NETWORK_ANNOTATION], a[RESOURCE_CONTAINERS_ANNOTATION]]);
};

export class Admission {
  constructor(
    private readonly catalog: Catalog,
    private readonly policy: AdmissionPolicy,
    private readonly injectOptions: () => InjectOptions,
  ) {}

  /** NADs the pod names that the catalog does not have yet (created a moment ago): asked for once, by name. */
  private async confirmMissing(pod: PodView): Promise<void> {
    if (!this.catalog.fetchNad) return;
    const named = [];
    try {
      named.push(...parseNetworksAnnotation(pod.annotations[NETWORKS_ANNOTATION], pod.namespace));
      const d = parseDefaultNetworkAnnotation(pod.annotations[DEFAULT_NETWORK_ANNOTATION], this.policy.multusNamespace);
      if (d) named.push(d);
    } catch {
      /* the validation says what is wrong with them */
    }
    await Promise.all(named.filter((sel) => !this.catalog.nad(sel.namespace, sel.name)).map((sel) => this.catalog.fetchNad!(sel.namespace, sel.name)));
  }

  async validate(req: AdmissionRequest): Promise<Decision> {
    if (req.operation !== 'CREATE' && req.operation !== 'UPDATE') return { allowed: true, outcome: 'skipped' };
    if (req.kind.kind === 'NetworkAttachmentDefinition') {
      const obj = isObject(req.object) && isObject(req.object.metadata) ? { ...req.object, metadata: { namespace: req.namespace ?? 'default', ...req.object.metadata } } : req.object;
      const nad = parseNad(obj, 'the NetworkAttachmentDefinition');
      const { denials, warnings } = validateNad(nad);
      return verdictDecision(`NetworkAttachmentDefinition ${req.namespace}/${nad.metadata.name} denied by Plexus`, denials, warnings);
    }
    if (req.kind.kind !== 'Pod') return { allowed: true, outcome: 'skipped' };
    // An update that leaves the network request as it was is not this webhook's business.
    if (req.operation === 'UPDATE' && networkAnnotations(req.object) === networkAnnotations(req.oldObject)) return { allowed: true, outcome: 'skipped' };
    const pod = parsePodView(req.object, req.namespace);
    const { denials, warnings } = await this.judgePod(pod);
    if (req.operation === 'UPDATE') warnings.push('a changed network request applies to the pod sandbox created next, not to the running one');
    return verdictDecision(`pod ${pod.namespace}/${pod.name || '(generated name)'} network request denied by Plexus`, denials, warnings);
  }

  async mutate(req: AdmissionRequest): Promise<Decision> {
    if (req.operation !== 'CREATE' || req.kind.kind !== 'Pod') return { allowed: true, outcome: 'skipped' };
    const patch = await this.podPatch(parsePodView(req.object, req.namespace));
    return patch.length ? { allowed: true, patch, outcome: 'patched' } : { allowed: true, outcome: 'allowed' };
  }

  /** The validating verdict on a pod (as stored after the mutating side), for /validate and `plexusctl explain`. */
  async judgePod(pod: PodView): Promise<Verdict> {
    await this.confirmMissing(pod);
    const { denials, warnings } = validatePod(pod, this.catalog, this.policy);
    for (const name of unknownResourceContainers(pod)) denials.push(`${RESOURCE_CONTAINERS_ANNOTATION} names container "${name}", which the pod does not have`);
    return { denials, warnings };
  }

  /** The mutating side's patch for a new pod, for /mutate and `plexusctl explain`. */
  async podPatch(pod: PodView): Promise<JsonPatchOp[]> {
    const opts = this.injectOptions();
    const annotations = applyUserInjections(pod, opts.userInjections);
    await this.confirmMissing({ ...pod, annotations });
    // Networks as the validating side resolves them; what is wrong with them is its to say.
    const { networks } = validatePod({ ...pod, annotations }, this.catalog, this.policy);
    return mutatePod(pod, annotations, networks, opts).patch;
  }
}

export { PodShapeError };
