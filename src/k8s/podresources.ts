/**
 * A pod's allocated devices from kubelet: PodResources `Get` (one pod) when served, else `List`
 * filtered to the pod, else the device-plugin checkpoint file. gRPC is loaded only when needed.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { requireAbove } from '../util/find-above.js';
import { unary } from '../util/grpc-unary.js';

export type PodDevices = Map<string, string[]>;

interface ProtoPodResources {
  name: string;
  namespace: string;
  containers: { name: string; devices: { resource_name: string; device_ids: string[] }[] }[];
}

/** The .proto next to the bundle (dist/) or in the source tree, whichever is above this module. */
function protoPath(): string {
  return requireAbove(import.meta.url, ['podresources-v1.proto', join('src', 'k8s', 'podresources-v1.proto')]);
}

function merge(into: PodDevices, pod: ProtoPodResources | undefined): PodDevices {
  for (const c of pod?.containers ?? []) {
    for (const d of c.devices ?? []) into.set(d.resource_name, [...(into.get(d.resource_name) ?? []), ...d.device_ids]);
  }
  for (const [k, v] of into) into.set(k, [...new Set(v)].sort());
  return into;
}

type Lister = Record<string, Function> & { close(): void };

async function lister(socket: string): Promise<{ client: Lister; status: { UNIMPLEMENTED: number; UNKNOWN: number } }> {
  // CommonJS packages: their module.exports is `default` both under Node's ESM loader and in the bundle.
  const grpc = (await import('@grpc/grpc-js')).default;
  const loader = (await import('@grpc/proto-loader')).default;
  const def = loader.loadSync(protoPath(), { keepCase: true, longs: String, enums: String, defaults: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { v1: { PodResourcesLister: new (addr: string, creds: unknown, opts?: object) => Lister } };
  const client = new pkg.v1.PodResourcesLister(`unix://${socket}`, grpc.credentials.createInsecure(), { 'grpc.max_receive_message_length': 16 * 1024 * 1024 });
  return { client, status: grpc.status };
}

interface GrpcError {
  code?: number;
  details?: string;
}

/**
 * kubelet does not serve Get: before 1.27 the method does not exist (UNIMPLEMENTED); from 1.27 to 1.33 the
 * KubeletPodResourcesGet gate defaults off and kubelet answers UNKNOWN "PodResources API Get method disabled".
 */
function getNotServed(err: GrpcError, status: { UNIMPLEMENTED: number; UNKNOWN: number }): boolean {
  return err.code === status.UNIMPLEMENTED || (err.code === status.UNKNOWN && /Get method disabled/i.test(err.details ?? ''));
}

/** Devices of one pod by resource name, each list sorted (NPWG: the Nth network takes the Nth ID). */
export async function podDevicesFromKubelet(socket: string, namespace: string, name: string, timeoutMs: number): Promise<PodDevices> {
  const { client, status } = await lister(socket);
  try {
    try {
      const res = await unary<{ pod_resources?: ProtoPodResources }>(client, 'Get', { pod_name: name, pod_namespace: namespace }, timeoutMs);
      return merge(new Map(), res.pod_resources);
    } catch (err) {
      if (!getNotServed(err as GrpcError, status)) throw err;
    }
    const list = await unary<{ pod_resources: ProtoPodResources[] }>(client, 'List', {}, timeoutMs);
    return merge(
      new Map(),
      list.pod_resources.find((p) => p.name === name && p.namespace === namespace),
    );
  } finally {
    client.close();
  }
}

/** Every device allocated to a pod on this node, by resource name (the device plugin's reconciliation). */
export async function allocatedDevices(socket: string, timeoutMs: number): Promise<PodDevices> {
  const { client } = await lister(socket);
  try {
    const list = await unary<{ pod_resources: ProtoPodResources[] }>(client, 'List', {}, timeoutMs);
    const all: PodDevices = new Map();
    for (const pod of list.pod_resources) merge(all, pod);
    return all;
  } finally {
    client.close();
  }
}

interface Checkpoint {
  Data?: { PodDeviceEntries?: { PodUID: string; ResourceName: string; DeviceIDs: Record<string, string[]> | string[] }[] };
}

/** kubelet's device-plugin checkpoint, keyed by pod UID (used when no PodResources socket exists). */
export function podDevicesFromCheckpoint(path: string, podUID: string): PodDevices {
  const cp = JSON.parse(readFileSync(path, 'utf8')) as Checkpoint;
  const out: PodDevices = new Map();
  for (const e of cp.Data?.PodDeviceEntries ?? []) {
    if (e.PodUID !== podUID) continue;
    const ids = Array.isArray(e.DeviceIDs) ? e.DeviceIDs : Object.values(e.DeviceIDs).flat();
    out.set(e.ResourceName, [...(out.get(e.ResourceName) ?? []), ...ids]);
  }
  for (const [k, v] of out) out.set(k, [...new Set(v)].sort());
  return out;
}
