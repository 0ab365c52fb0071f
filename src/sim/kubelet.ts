/**
 * A kubelet double for device plugins, over real gRPC on unix sockets in a kubelet directory
 * (`device-plugins/`, `plugins_registry/`, `pod-resources/`): the legacy `v1beta1.Registration`
 * service (dialing back and calling GetDevicePluginOptions inside Register, as kubelet does), the
 * plugin watcher (GetInfo → dial endpoint → NotifyRegistrationStatus), ListAndWatch consumers,
 * pod admission (GetPreferredAllocation, Allocate), PodResources v1, and a restart that wipes the
 * socket directory like kubelet's does.
 */
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Client, ClientReadableStream, Server, ServerUnaryCall, ServiceDefinition, sendUnaryData } from '@grpc/grpc-js';
import loaderModule from '@grpc/proto-loader';
import { type ContainerAllocateResponse, type Device, type DevicePluginOptions, type PluginInfo, API_VERSION, bindUnix, grpc, kubeletApis, unary } from '../deviceplugin/grpc.js';
import { requireAbove } from '../util/find-above.js';

interface Endpoint {
  resource: string;
  socket: string;
  client: Client & Record<string, Function>;
  stream?: ClientReadableStream<{ devices: Device[] }>;
  options?: DevicePluginOptions;
  devices: Device[];
  /** How many ListAndWatch messages arrived (first list included). */
  updates: number;
  mode: 'legacy' | 'watcher';
}

export interface Allocation {
  namespace: string;
  name: string;
  uid: string;
  container: string;
  resource: string;
  ids: string[];
  response: ContainerAllocateResponse;
}

export class KubeletDouble {
  readonly endpoints = new Map<string, Endpoint>();
  readonly allocations: Allocation[] = [];
  readonly registrations: { mode: 'legacy' | 'watcher'; resource: string }[] = [];
  private registration: Server | undefined;
  private podResources: Server | undefined;
  private watcher: NodeJS.Timeout | undefined;
  private readonly seen = new Map<string, number>();

  constructor(
    readonly dir: string,
    /** `podResourcesGet: false` answers Get as a 1.27–1.33 kubelet with the KubeletPodResourcesGet gate off. */
    readonly opts: { watcher?: boolean; podResourcesGet?: boolean } = {},
  ) {}

  get devicePluginDir(): string {
    return join(this.dir, 'device-plugins');
  }
  get registryDir(): string {
    return join(this.dir, 'plugins_registry');
  }
  get podResourcesSocket(): string {
    return join(this.dir, 'pod-resources', 'kubelet.sock');
  }

  async start(): Promise<void> {
    mkdirSync(this.devicePluginDir, { recursive: true });
    mkdirSync(join(this.dir, 'pod-resources'), { recursive: true });
    if (this.opts.watcher) mkdirSync(this.registryDir, { recursive: true });
    await this.serveRegistration();
    await this.servePodResources();
    if (this.opts.watcher) this.watcher = setInterval(() => void this.scanRegistry(), 100);
  }

  async stop(): Promise<void> {
    if (this.watcher) clearInterval(this.watcher);
    for (const e of this.endpoints.values()) this.disconnect(e);
    this.endpoints.clear();
    this.registration?.forceShutdown();
    this.podResources?.forceShutdown();
  }

  /** kubelet restarting: every non-directory in device-plugins/ but the checkpoint is deleted. */
  async restart(): Promise<void> {
    this.registration?.forceShutdown();
    for (const e of [...this.endpoints.values()].filter((x) => x.mode === 'legacy')) {
      this.disconnect(e);
      this.endpoints.delete(e.resource);
    }
    for (const f of readdirSync(this.devicePluginDir)) {
      const p = join(this.devicePluginDir, f);
      if (f !== 'kubelet_internal_checkpoint' && !statSync(p).isDirectory()) rmSync(p, { force: true });
    }
    await this.serveRegistration();
  }

  private disconnect(e: Endpoint): void {
    e.stream?.cancel();
    e.client.close();
  }

  private async serveRegistration(): Promise<void> {
    const server = new grpc.Server();
    server.addService(kubeletApis().v1beta1.Registration.service, {
      Register: (call: ServerUnaryCall<{ version: string; endpoint: string; resource_name: string }, object>, cb: sendUnaryData<object>) => {
        const { version, endpoint, resource_name } = call.request;
        if (version !== API_VERSION) return cb({ code: grpc.status.INVALID_ARGUMENT, details: `unsupported version ${version}` });
        if (!/^[a-z0-9.-]+\/[A-Za-z0-9_.-]+$/.test(resource_name) || resource_name.startsWith('kubernetes.io/'))
          return cb({ code: grpc.status.INVALID_ARGUMENT, details: `invalid extended resource name ${resource_name}` });
        // Inside Register, kubelet dials the plugin and asks for its options before answering.
        this.connect(resource_name, join(this.devicePluginDir, endpoint), 'legacy')
          .then(() => cb(null, {}))
          .catch((err: Error) => cb({ code: grpc.status.UNAVAILABLE, details: err.message }));
      },
    });
    const socket = join(this.devicePluginDir, 'kubelet.sock');
    rmSync(socket, { force: true });
    await bindUnix(server, socket);
    this.registration = server;
  }

  private async scanRegistry(): Promise<void> {
    let entries: string[];
    try {
      entries = readdirSync(this.registryDir).filter((f) => f.endsWith('.sock') && !f.startsWith('.'));
    } catch {
      return;
    }
    for (const f of entries) {
      const socket = join(this.registryDir, f);
      const ino = statSync(socket, { throwIfNoEntry: false })?.ino;
      if (ino === undefined || this.seen.get(socket) === ino) continue;
      this.seen.set(socket, ino);
      const reg = new (kubeletApis().pluginregistration.Registration)(`unix://${socket}`, grpc.credentials.createInsecure());
      try {
        const info = await unary<PluginInfo>(reg, 'GetInfo', {});
        let error = '';
        if (info.type !== 'DevicePlugin' || !info.supported_versions.includes(API_VERSION)) error = `unsupported plugin ${info.type} ${info.supported_versions.join(',')}`;
        else await this.connect(info.name, info.endpoint, 'watcher').catch((err: Error) => (error = err.message));
        await unary(reg, 'NotifyRegistrationStatus', { plugin_registered: !error, error });
      } catch {
        this.seen.delete(socket);
      } finally {
        reg.close();
      }
    }
  }

  private async connect(resource: string, socket: string, mode: 'legacy' | 'watcher'): Promise<void> {
    const old = this.endpoints.get(resource);
    if (old) this.disconnect(old);
    const client = new (kubeletApis().v1beta1.DevicePlugin)(`unix://${socket}`, grpc.credentials.createInsecure());
    const e: Endpoint = { resource, socket, client, devices: [], updates: 0, mode };
    e.options = await unary<DevicePluginOptions>(client, 'GetDevicePluginOptions', {});
    this.endpoints.set(resource, e);
    this.registrations.push({ mode, resource });
    const stream = client.ListAndWatch!.call(client, {}) as ClientReadableStream<{ devices: Device[] }>;
    e.stream = stream;
    stream.on('data', (msg: { devices: Device[] }) => {
      e.devices = msg.devices;
      e.updates += 1;
    });
    // A broken stream: kubelet marks the resource's devices unhealthy.
    stream.on('error', () => (e.devices = e.devices.map((d) => ({ ...d, health: 'Unhealthy' }))));
  }

  /** Waits until the resource's advertised devices satisfy `ok` (polling, 10 s). */
  async waitFor(resource: string, ok: (devices: Device[]) => boolean, ms = 10_000): Promise<Device[]> {
    const deadline = Date.now() + ms;
    for (;;) {
      const e = this.endpoints.get(resource);
      if (e && e.updates > 0 && ok(e.devices)) return e.devices;
      if (Date.now() > deadline) throw new Error(`${resource}: timed out; now ${JSON.stringify(e?.devices ?? 'not registered')}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Pod admission: pick `count` healthy unallocated devices (asking the plugin's preference), then Allocate. */
  async admit(pod: { namespace: string; name: string; uid: string }, container: string, resource: string, count: number, mustInclude: string[] = []): Promise<Allocation> {
    const e = this.endpoints.get(resource);
    if (!e) throw new Error(`${resource} is not registered`);
    const taken = new Set(this.allocations.filter((a) => a.resource === resource).flatMap((a) => a.ids));
    const available = e.devices.filter((d) => d.health === 'Healthy' && !taken.has(d.ID)).map((d) => d.ID);
    if (available.length < count) throw new Error(`${resource}: ${available.length} available, ${count} requested`);
    let ids = available.slice(0, count);
    if (e.options?.get_preferred_allocation_available) {
      const pref = await unary<{ container_responses: { deviceIDs: string[] }[] }>(e.client, 'GetPreferredAllocation', {
        container_requests: [{ available_deviceIDs: available, must_include_deviceIDs: mustInclude, allocation_size: count }],
      });
      ids = pref.container_responses[0]!.deviceIDs;
    }
    const res = await unary<{ container_responses: ContainerAllocateResponse[] }>(e.client, 'Allocate', { container_requests: [{ devices_ids: ids }] });
    const allocation = { ...pod, container, resource, ids, response: res.container_responses[0]! };
    this.allocations.push(allocation);
    return allocation;
  }

  /** The pod is gone: its devices are free again. */
  release(namespace: string, name: string): void {
    for (let i = this.allocations.length - 1; i >= 0; i--) if (this.allocations[i]!.namespace === namespace && this.allocations[i]!.name === name) this.allocations.splice(i, 1);
  }

  private podList(): object[] {
    const pods = new Map<string, { name: string; namespace: string; containers: Map<string, { resource_name: string; device_ids: string[] }[]> }>();
    for (const a of this.allocations) {
      const key = `${a.namespace}/${a.name}`;
      const pod = pods.get(key) ?? { name: a.name, namespace: a.namespace, containers: new Map() };
      pods.set(key, pod);
      pod.containers.set(a.container, [...(pod.containers.get(a.container) ?? []), { resource_name: a.resource, device_ids: a.ids }]);
    }
    return [...pods.values()].map((p) => ({ name: p.name, namespace: p.namespace, containers: [...p.containers].map(([name, devices]) => ({ name, devices })) }));
  }

  private async servePodResources(): Promise<void> {
    const proto = requireAbove(import.meta.url, ['podresources-v1.proto', join('src', 'k8s', 'podresources-v1.proto')]);
    const def = loaderModule.loadSync(proto, { keepCase: true, longs: String, enums: String, defaults: true });
    const pkg = grpc.loadPackageDefinition(def) as unknown as { v1: { PodResourcesLister: { service: ServiceDefinition } } };
    const server = new grpc.Server();
    server.addService(pkg.v1.PodResourcesLister.service, {
      List: (_c: unknown, cb: sendUnaryData<object>) => cb(null, { pod_resources: this.podList() }),
      Get: (call: ServerUnaryCall<{ pod_name: string; pod_namespace: string }, object>, cb: sendUnaryData<object>) => {
        // Errors exactly as kubelet's server_v1.go returns them: plain Go errors, so gRPC code Unknown.
        if (this.opts.podResourcesGet === false) return cb({ code: grpc.status.UNKNOWN, details: 'PodResources API Get method disabled' });
        const pod = this.podList().find((p) => (p as { name: string }).name === call.request.pod_name && (p as { namespace: string }).namespace === call.request.pod_namespace);
        if (!pod) return cb({ code: grpc.status.UNKNOWN, details: `pod ${call.request.pod_name} in namespace ${call.request.pod_namespace} not found` });
        cb(null, { pod_resources: pod });
      },
      GetAllocatableResources: (_c: unknown, cb: sendUnaryData<object>) =>
        cb(null, { devices: [...this.endpoints.values()].map((e) => ({ resource_name: e.resource, device_ids: e.devices.map((d) => d.ID) })) }),
    });
    if (existsSync(this.podResourcesSocket)) rmSync(this.podResourcesSocket);
    await bindUnix(server, this.podResourcesSocket);
    this.podResources = server;
  }
}
