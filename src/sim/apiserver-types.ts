/** The resource types the API server double serves, and its discovery documents (what kubectl reads first). */
import AjvModule, { type ValidateFunction } from 'ajv';
import { stripK8sExtensions } from './apiserver-machinery.js';

const Ajv = AjvModule as unknown as typeof AjvModule.default;

export interface ResourceType {
  group: string; // '' for core
  version: string;
  plural: string;
  singular: string;
  kind: string;
  namespaced: boolean;
  shortNames?: string[];
  subresources: string[];
  validate?: ValidateFunction;
}

export const CORE_TYPES: ResourceType[] = [
  { group: '', version: 'v1', plural: 'pods', singular: 'pod', kind: 'Pod', namespaced: true, shortNames: ['po'], subresources: ['status'] },
  { group: '', version: 'v1', plural: 'events', singular: 'event', kind: 'Event', namespaced: true, shortNames: ['ev'], subresources: [] },
  { group: '', version: 'v1', plural: 'namespaces', singular: 'namespace', kind: 'Namespace', namespaced: false, shortNames: ['ns'], subresources: [] },
  { group: '', version: 'v1', plural: 'nodes', singular: 'node', kind: 'Node', namespaced: false, shortNames: ['no'], subresources: ['status'] },
  { group: 'coordination.k8s.io', version: 'v1', plural: 'leases', singular: 'lease', kind: 'Lease', namespaced: true, shortNames: [], subresources: [] },
  {
    group: 'apiextensions.k8s.io',
    version: 'v1',
    plural: 'customresourcedefinitions',
    singular: 'customresourcedefinition',
    kind: 'CustomResourceDefinition',
    namespaced: false,
    shortNames: ['crd'],
    subresources: [],
  },
];

export function typeKey(t: Pick<ResourceType, 'group' | 'version' | 'plural'>): string {
  return `${t.group}/${t.version}/${t.plural}`;
}

export function apiVersionOf(t: ResourceType): string {
  return t.group ? `${t.group}/${t.version}` : t.version;
}

/** /version, /api, /apis and each group version's resource list, as kube-apiserver answers them. */
export function discovery(known: ResourceType[], path: string): unknown {
  if (path === '/version') return { major: '1', minor: '30', gitVersion: 'v1.30.0-plexus-double', platform: 'linux/amd64' };
  if (path === '/api') return { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: '127.0.0.1' }] };
  const groups = new Map<string, string[]>();
  for (const t of known) if (t.group) groups.set(t.group, [...new Set([...(groups.get(t.group) ?? []), t.version])]);
  if (path === '/apis') {
    return {
      kind: 'APIGroupList',
      apiVersion: 'v1',
      groups: [...groups].map(([name, versions]) => ({
        name,
        versions: versions.map((v) => ({ groupVersion: `${name}/${v}`, version: v })),
        preferredVersion: { groupVersion: `${name}/${versions[0]}`, version: versions[0] },
      })),
    };
  }
  const m = /^\/(?:api\/(v1)|apis\/([^/]+)\/([^/]+))$/.exec(path);
  if (m) {
    const group = m[2] ?? '';
    const version = m[1] ?? m[3]!;
    const types = known.filter((t) => t.group === group && t.version === version);
    if (!types.length) return undefined;
    const resources = types.flatMap((t) => [
      {
        name: t.plural,
        singularName: t.singular,
        namespaced: t.namespaced,
        kind: t.kind,
        verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'],
        ...(t.shortNames ? { shortNames: t.shortNames } : {}),
      },
      ...t.subresources.map((s) => ({ name: `${t.plural}/${s}`, singularName: '', namespaced: t.namespaced, kind: t.kind, verbs: ['get', 'patch', 'update'] })),
    ]);
    return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: group ? `${group}/${version}` : version, resources };
  }
  return undefined;
}

/** A validator for CRD schemas, with the integer formats Kubernetes schemas use. */
function crdValidator(): InstanceType<typeof Ajv> {
  const ajv = new Ajv({ strict: false, allErrors: true });
  ajv.addFormat('int32', { type: 'number', validate: (n: number) => Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31 });
  ajv.addFormat('int64', { type: 'number', validate: (n: number) => Number.isSafeInteger(n) });
  return ajv;
}

/** The resource types a CRD serves (one per served version), with its schema compiled for validation. */
export function crdTypes(spec: unknown): ResourceType[] {
  const types: ResourceType[] = [];
  const s = spec as {
    group: string;
    scope: string;
    names: { plural: string; singular?: string; kind: string; shortNames?: string[] };
    versions: { name: string; served: boolean; schema?: { openAPIV3Schema?: object }; subresources?: Record<string, unknown> }[];
  };
  for (const v of s.versions.filter((x) => x.served)) {
    const t: ResourceType = {
      group: s.group,
      version: v.name,
      plural: s.names.plural,
      singular: s.names.singular ?? s.names.kind.toLowerCase(),
      kind: s.names.kind,
      namespaced: s.scope === 'Namespaced',
      subresources: Object.keys(v.subresources ?? {}),
    };
    if (s.names.shortNames) t.shortNames = s.names.shortNames;
    if (v.schema?.openAPIV3Schema) t.validate = crdValidator().compile(stripK8sExtensions(v.schema.openAPIV3Schema) as object);
    types.push(t);
  }
  return types;
}
