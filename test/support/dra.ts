/** DRA objects the DRA tests and bench apply: a DeviceClass of the driver, a one-request ResourceClaimTemplate, a NAD of a resource. */
import { DRA_DRIVER } from '../../src/dra/slices.js';

/** A CEL device selector. */
export const cel = (expression: string) => ({ cel: { expression } });

/** A DeviceClass taking every device of the Plexus driver, with opaque driver config if given. */
export function deviceClass(name: string, parameters?: object): object {
  return {
    apiVersion: 'resource.k8s.io/v1',
    kind: 'DeviceClass',
    metadata: { name },
    spec: { selectors: [cel(`device.driver == "${DRA_DRIVER}"`)], ...(parameters ? { config: [{ opaque: { driver: DRA_DRIVER, parameters } }] } : {}) },
  };
}

/** A template of one request `vf` of that class, narrowed by CEL expressions. */
export function claimTemplate(name: string, namespace: string, deviceClassName: string, expressions: string[] = []): object {
  return {
    apiVersion: 'resource.k8s.io/v1',
    kind: 'ResourceClaimTemplate',
    metadata: { name, namespace },
    spec: { spec: { devices: { requests: [{ name: 'vf', exactly: { deviceClassName, selectors: expressions.map(cel) } }] } } },
  };
}

/** A NAD whose `k8s.v1.cni.cncf.io/resourceName` is `resourceName`, its config named after it. */
export function resourceNad(name: string, namespace: string, resourceName: string, config: object): object {
  return {
    apiVersion: 'k8s.cni.cncf.io/v1',
    kind: 'NetworkAttachmentDefinition',
    metadata: { name, namespace, annotations: { 'k8s.v1.cni.cncf.io/resourceName': resourceName } },
    spec: { config: JSON.stringify({ cniVersion: '1.0.0', name, ...config }) },
  };
}

/** A kubectl List of objects. */
export const list = (items: object[]): string => JSON.stringify({ apiVersion: 'v1', kind: 'List', items });
