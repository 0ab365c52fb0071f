/**
 * One pool's kubelet endpoint: `v1beta1.DevicePlugin` on a unix socket (plus
 * `pluginregistration.Registration` in plugin-watcher mode, on the same socket). ListAndWatch sends
 * the full list first and again on every change; the pool's logic (allocation, preference) is the
 * manager's, handed in as callbacks.
 */
import { rmSync } from 'node:fs';
import type { Server, ServerUnaryCall, ServerWritableStream, sendUnaryData } from '@grpc/grpc-js';
import { type ContainerAllocateResponse, type Device, type PluginInfo, API_VERSION, bindUnix, grpc, kubeletApis } from './grpc.js';

export interface PoolHandlers {
  /** One response per container, in order; throws to fail the whole Allocate (pod admission fails). */
  allocate(containers: string[][]): ContainerAllocateResponse[];
  preferred(requests: { available: string[]; mustInclude: string[]; size: number }[]): string[][];
  registrationStatus?(registered: boolean, error: string): void;
}

type Stream = ServerWritableStream<object, { devices: Device[] }>;

export class PoolServer {
  private server: Server | undefined;
  private readonly streams = new Set<Stream>();
  private devices: Device[] = [];

  constructor(
    readonly resourceName: string,
    readonly socket: string,
    private readonly handlers: PoolHandlers,
    private readonly watcherMode: boolean,
  ) {}

  async start(): Promise<void> {
    const apis = kubeletApis();
    // pluginwatcher rule: remove an old socket and listen anew.
    rmSync(this.socket, { force: true });
    const server = new grpc.Server();
    server.addService(apis.v1beta1.DevicePlugin.service, {
      GetDevicePluginOptions: (_call: unknown, cb: sendUnaryData<object>) => cb(null, { pre_start_required: false, get_preferred_allocation_available: true }),
      ListAndWatch: (call: Stream) => {
        this.streams.add(call);
        const drop = () => this.streams.delete(call);
        call.on('cancelled', drop);
        call.on('close', drop);
        call.on('error', drop);
        call.write({ devices: this.devices });
      },
      GetPreferredAllocation: (
        call: ServerUnaryCall<{ container_requests: { available_deviceIDs: string[]; must_include_deviceIDs: string[]; allocation_size: number }[] }, object>,
        cb: sendUnaryData<object>,
      ) => {
        try {
          const ids = this.handlers.preferred(call.request.container_requests.map((r) => ({ available: r.available_deviceIDs, mustInclude: r.must_include_deviceIDs, size: r.allocation_size })));
          cb(null, { container_responses: ids.map((deviceIDs) => ({ deviceIDs })) });
        } catch (err) {
          cb({ code: grpc.status.INTERNAL, details: (err as Error).message });
        }
      },
      Allocate: (call: ServerUnaryCall<{ container_requests: { devices_ids: string[] }[] }, object>, cb: sendUnaryData<object>) => {
        try {
          cb(null, { container_responses: this.handlers.allocate(call.request.container_requests.map((r) => r.devices_ids)) });
        } catch (err) {
          cb({ code: grpc.status.FAILED_PRECONDITION, details: (err as Error).message });
        }
      },
      PreStartContainer: (_call: unknown, cb: sendUnaryData<object>) => cb(null, {}),
    });
    if (this.watcherMode) {
      server.addService(apis.pluginregistration.Registration.service, {
        GetInfo: (_call: unknown, cb: sendUnaryData<PluginInfo>) => cb(null, { type: 'DevicePlugin', name: this.resourceName, endpoint: this.socket, supported_versions: [API_VERSION] }),
        NotifyRegistrationStatus: (call: ServerUnaryCall<{ plugin_registered: boolean; error: string }, object>, cb: sendUnaryData<object>) => {
          this.handlers.registrationStatus?.(call.request.plugin_registered, call.request.error);
          cb(null, {});
        },
      });
    }
    await bindUnix(server, this.socket);
    this.server = server;
  }

  /** Sends the full list to every ListAndWatch stream, when it changed. */
  update(devices: Device[]): boolean {
    if (JSON.stringify(devices) === JSON.stringify(this.devices)) return false;
    this.devices = devices;
    for (const s of this.streams) s.write({ devices });
    return true;
  }

  stop(): void {
    for (const s of this.streams) s.end();
    this.streams.clear();
    const server = this.server;
    this.server = undefined;
    server?.forceShutdown();
    rmSync(this.socket, { force: true });
  }
}
