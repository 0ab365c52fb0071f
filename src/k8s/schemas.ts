/**
 * JSON Schemas of the Kubernetes objects Plexus reads from the API server (or a cache fed by it): the
 * fields it uses, each with its type; everything else passes through. Data only: compiled at build
 * time with the CNI schemas (src/cni/validate.ts).
 */
const stringMap = { type: 'object', additionalProperties: { type: 'string' } } as const;

const metadata = {
  type: 'object',
  required: ['name', 'namespace'],
  properties: {
    name: { type: 'string', minLength: 1 },
    namespace: { type: 'string', minLength: 1 },
    uid: { type: 'string' },
    resourceVersion: { type: 'string' },
    annotations: stringMap,
    labels: stringMap,
  },
} as const;

/** What Plexus reads of any API object, with the fields of its `spec` (and more top-level ones). */
const apiObject = (spec: Record<string, unknown>, more: Record<string, unknown> = {}) =>
  ({
    type: 'object',
    required: ['metadata'],
    properties: { apiVersion: { type: 'string' }, kind: { type: 'string' }, metadata, spec: { type: 'object', properties: spec }, ...more },
  }) as const;

export const podSchema = apiObject({ nodeName: { type: 'string' } }, { status: { type: 'object' } });

export const nadSchema = apiObject({ config: { type: 'string' } });
