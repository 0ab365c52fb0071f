/**
 * kubelet's device-plugin (v1beta1) and plugin-watcher (pluginregistration) APIs for grpc-js: the
 * protos next to the bundle or in the source tree, loaded with wire names kept (`devices_ids`, `ID`).
 */
import { join } from 'node:path';
import grpcModule from '@grpc/grpc-js';
import loaderModule from '@grpc/proto-loader';
import { requireAbove } from '../util/find-above.js';

// CommonJS packages: their module.exports is `default` under Node's ESM loader and in the bundle.
export const grpc = grpcModule;
const loader = loaderModule;

export const HEALTHY = 'Healthy';
export const UNHEALTHY = 'Unhealthy';
export const API_VERSION = 'v1beta1';

export interface Device {
  ID: string;
  health: typeof HEALTHY | typeof UNHEALTHY;
  topology?: { nodes: { ID: number | string }[] } | null;
}
export interface DevicePluginOptions {
  pre_start_required: boolean;
  get_preferred_allocation_available: boolean;
}
export interface ContainerAllocateResponse {
  envs: Record<string, string>;
  mounts: { container_path: string; host_path: string; read_only: boolean }[];
  devices: { container_path: string; host_path: string; permissions: string }[];
  annotations: Record<string, string>;
  cdi_devices?: { name: string }[];
}
export interface AllocateRequest {
  container_requests: { devices_ids: string[] }[];
}
export interface PreferredAllocationRequest {
  container_requests: { available_deviceIDs: string[]; must_include_deviceIDs: string[]; allocation_size: number }[];
}
export interface RegisterRequest {
  version: string;
  endpoint: string;
  resource_name: string;
  options?: DevicePluginOptions | null;
}
export interface PluginInfo {
  type: string;
  name: string;
  endpoint: string;
  supported_versions: string[];
}

type ClientCtor = new (address: string, creds: grpcModule.ChannelCredentials) => grpcModule.Client & Record<string, Function>;
type ServiceCtor = ClientCtor & { service: grpcModule.ServiceDefinition };

export interface KubeletApis {
  v1beta1: { Registration: ServiceCtor; DevicePlugin: ServiceCtor };
  pluginregistration: { Registration: ServiceCtor };
}

const OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

let apis: KubeletApis | undefined;
export function kubeletApis(): KubeletApis {
  if (apis) return apis;
  const files = ['deviceplugin-v1beta1.proto', 'pluginregistration-v1.proto'].map((f) => requireAbove(import.meta.url, [f, join('src', 'deviceplugin', f)]));
  apis = grpc.loadPackageDefinition(loader.loadSync(files, OPTIONS)) as unknown as KubeletApis;
  return apis;
}

export { unary } from '../util/grpc-unary.js';

export async function bindUnix(server: grpcModule.Server, socket: string): Promise<void> {
  await new Promise<void>((resolve, reject) => server.bindAsync(`unix://${socket}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
}
