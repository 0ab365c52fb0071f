/**
 * The DRA kubelet plugin for SR-IOV VFs (`plexusctl dra-driver`): registered with kubelet's plugin
 * watcher as a `DRAPlugin` (v1), it publishes the node's ResourceSlices from the device plugin's
 * discovery and answers NodePrepareResources / NodeUnprepareResources. Prepare gives each allocated
 * VF a CDI device with the device plugin's env and device nodes, and its device-info file; both calls
 * are idempotent, and what is prepared is checkpointed (kubelet retries, and the driver may restart
 * between the work and the answer).
 */
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { ChannelCredentials, Client, Server, ServerUnaryCall, ServiceDefinition, sendUnaryData } from '@grpc/grpc-js';
import loaderModule from '@grpc/proto-loader';
import { containerResponse, writeDpDeviceInfo } from '../deviceplugin/allocate.js';
import { type PoolConfig, parseConfig } from '../deviceplugin/config.js';
import { bindUnix, grpc, kubeletApis, type PluginInfo } from '../deviceplugin/grpc.js';
import { type Assignment, assignPools } from '../deviceplugin/pools.js';
import type { ApiClient } from '../k8s/client.js';
import { type HostInventory, discover } from '../sriov/discover.js';
import type { SriovHost } from '../sriov/backend.js';
import { requireAbove } from '../util/find-above.js';
import { isObject } from '../util/object.js';
import { DRA_DRIVER, RESOURCE_API, SlicePublisher, deviceName, sliceDevices } from './slices.js';

/** The service name kubelet's registration expects in supported_versions. */
export const DRA_SERVICE = 'v1.DRAPlugin';
const CDI_KIND = `${DRA_DRIVER}/vf`;

interface ClaimRef {
  namespace: string;
  uid: string;
  name: string;
}
export interface PreparedDevice {
  request_names: string[];
  pool_name: string;
  device_name: string;
  cdi_device_ids: string[];
}
interface PreparedClaim {
  namespace: string;
  name: string;
  devices: PreparedDevice[];
  /** Files written for it (CDI spec, device-info), removed by unprepare. */
  files: string[];
}

export interface DraDriverOptions {
  api: ApiClient;
  nodeName: string;
  host: SriovHost;
  configFile: string;
  kubeletDir: string;
  stateDir: string;
  cdiDir: string;
  devinfoDir: string;
  log: (level: 'info' | 'warn', msg: string, fields?: Record<string, unknown>) => void;
}

/** An allocation result of a claim, as the API server gives it. */
interface AllocationResult {
  request: string;
  driver: string;
  pool: string;
  device: string;
}

function allocationResults(claim: unknown): AllocationResult[] {
  const status = isObject(claim) && isObject(claim.status) ? claim.status : {};
  const alloc = isObject(status.allocation) && isObject(status.allocation.devices) ? status.allocation.devices : {};
  const results = Array.isArray(alloc.results) ? alloc.results : [];
  return results.filter((r): r is AllocationResult => isObject(r) && typeof r.request === 'string' && typeof r.driver === 'string' && typeof r.pool === 'string' && typeof r.device === 'string');
}

export class DraDriver {
  private inventory: HostInventory | undefined;
  /** The pools of the last discovery, as the slices published them. */
  private assignment: Assignment | undefined;
  private readonly publisher: SlicePublisher;
  private readonly checkpointFile: string;
  private prepared: Record<string, PreparedClaim>;
  private servers: Server[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly o: DraDriverOptions) {
    this.publisher = new SlicePublisher(o.api, o.nodeName);
    this.checkpointFile = join(o.stateDir, 'checkpoint.json');
    this.prepared = this.readCheckpoint();
  }

  private readCheckpoint(): Record<string, PreparedClaim> {
    try {
      const data = JSON.parse(readFileSync(this.checkpointFile, 'utf8')) as { claims?: Record<string, PreparedClaim> };
      return data.claims ?? {};
    } catch {
      return {};
    }
  }

  /** Written before the answer: a driver restarted after the work finds it, and a repeated call is answered from it. */
  private writeCheckpoint(): void {
    mkdirSync(this.o.stateDir, { recursive: true });
    const tmp = `${this.checkpointFile}.tmp`;
    writeFileSync(tmp, JSON.stringify({ claims: this.prepared }));
    renameSync(tmp, this.checkpointFile);
  }

  /** Discovery, pools and health as the device plugin sees them, published as the node's slices. */
  async rediscover(): Promise<boolean> {
    const pools = parseConfig(readFileSync(this.o.configFile, 'utf8')).pools;
    this.inventory = discover(this.o.host.sysfs);
    this.assignment = assignPools(this.inventory, pools);
    return this.publisher.publish(sliceDevices(this.inventory, this.assignment));
  }

  /** The device of a slice by its name, and the pool it is in. */
  private device(name: string): { dev: HostInventory['devices'][number]; pool: PoolConfig } | undefined {
    const inv = this.inventory!;
    for (const { pool, devices } of this.assignment!.pools) {
      const id = devices.find((d) => deviceName(d) === name);
      const dev = id ? inv.devices.find((d) => d.address === id) : undefined;
      if (dev) return { dev, pool };
    }
    return undefined;
  }

  async prepare(claim: ClaimRef): Promise<PreparedDevice[]> {
    const done = this.prepared[claim.uid];
    if (done) return done.devices;
    const raw = await this.o.api.get<unknown>(`${RESOURCE_API}/namespaces/${encodeURIComponent(claim.namespace)}/resourceclaims/${encodeURIComponent(claim.name)}`);
    const uid = isObject(raw) && isObject(raw.metadata) ? raw.metadata.uid : undefined;
    if (uid !== claim.uid) throw new Error(`claim ${claim.namespace}/${claim.name} has UID ${String(uid)}, kubelet asked for ${claim.uid}`);
    const mine = allocationResults(raw).filter((r) => r.driver === DRA_DRIVER && r.pool === this.o.nodeName);
    if (!this.inventory) await this.rediscover();
    const devices: PreparedDevice[] = [];
    const files: string[] = [];
    const cdiDevices: object[] = [];
    for (const r of mine) {
      const found = this.device(r.device);
      if (!found) throw new Error(`device ${r.device} of claim ${claim.namespace}/${claim.name} is not a pooled VF of this node (any more)`);
      const edits = containerResponse(found.pool, [found.dev], false);
      cdiDevices.push({
        name: r.device,
        containerEdits: {
          env: Object.entries(edits.envs).map(([k, v]) => `${k}=${v}`),
          deviceNodes: edits.devices.map((d) => ({ path: d.container_path, hostPath: d.host_path, permissions: d.permissions })),
        },
      });
      const info = writeDpDeviceInfo(this.o.devinfoDir, found.pool, found.dev);
      if (info) files.push(info);
      const existing = devices.find((d) => d.device_name === r.device);
      if (existing) existing.request_names.push(r.request);
      else devices.push({ request_names: [r.request], pool_name: r.pool, device_name: r.device, cdi_device_ids: [`${CDI_KIND}=${r.device}`] });
    }
    if (cdiDevices.length) {
      // One spec per claim: its devices, nothing another claim's unprepare could remove.
      const spec = join(this.o.cdiDir, `${DRA_DRIVER}-${claim.uid}.json`);
      mkdirSync(this.o.cdiDir, { recursive: true });
      writeFileSync(`${spec}.tmp`, JSON.stringify({ cdiVersion: '0.6.0', kind: CDI_KIND, devices: cdiDevices }));
      renameSync(`${spec}.tmp`, spec);
      files.push(spec);
    }
    this.prepared[claim.uid] = { namespace: claim.namespace, name: claim.name, devices, files };
    this.writeCheckpoint();
    this.o.log('info', 'claim prepared', { claim: `${claim.namespace}/${claim.name}`, devices: devices.map((d) => d.device_name) });
    return devices;
  }

  /** Removes what prepare wrote; a claim not prepared here (or already unprepared) is done. */
  unprepare(claim: ClaimRef): void {
    const done = this.prepared[claim.uid];
    if (!done) return;
    for (const f of done.files) rmSync(f, { force: true });
    delete this.prepared[claim.uid];
    this.writeCheckpoint();
    this.o.log('info', 'claim unprepared', { claim: `${claim.namespace}/${claim.name}` });
  }

  /** What is prepared now, by claim UID (tests, debugging). */
  preparedClaims(): Record<string, PreparedClaim> {
    return structuredClone(this.prepared);
  }

  /** Serves the DRA socket and the registration socket kubelet's plugin watcher finds. */
  async start(rediscoverSeconds: number): Promise<void> {
    await this.rediscover();
    const pluginDir = join(this.o.kubeletDir, 'plugins', DRA_DRIVER);
    const draSocket = join(pluginDir, 'dra.sock');
    const regSocket = join(this.o.kubeletDir, 'plugins_registry', `${DRA_DRIVER}-reg.sock`);
    for (const s of [draSocket, regSocket]) {
      mkdirSync(dirname(s), { recursive: true });
      rmSync(s, { force: true });
    }
    const dra = new grpc.Server();
    const api = draApi();
    type Req = ServerUnaryCall<{ claims: ClaimRef[] }, object>;
    dra.addService(api.DRAPlugin.service, {
      NodePrepareResources: (call: Req, cb: sendUnaryData<object>) => {
        void Promise.all(
          call.request.claims.map(async (c) => {
            try {
              return [c.uid, { devices: await this.prepare(c), error: '' }] as const;
            } catch (err) {
              this.o.log('warn', 'claim not prepared', { claim: `${c.namespace}/${c.name}`, error: (err as Error).message });
              return [c.uid, { devices: [], error: (err as Error).message }] as const;
            }
          }),
        ).then((entries) => cb(null, { claims: Object.fromEntries(entries) }));
      },
      NodeUnprepareResources: (call: Req, cb: sendUnaryData<object>) => {
        const claims: Record<string, { error: string }> = {};
        for (const c of call.request.claims) {
          try {
            this.unprepare(c);
            claims[c.uid] = { error: '' };
          } catch (err) {
            claims[c.uid] = { error: (err as Error).message };
          }
        }
        cb(null, { claims });
      },
    });
    await bindUnix(dra, draSocket);
    const reg = new grpc.Server();
    reg.addService(kubeletApis().pluginregistration.Registration.service, {
      GetInfo: (_call: unknown, cb: sendUnaryData<PluginInfo>) => cb(null, { type: 'DRAPlugin', name: DRA_DRIVER, endpoint: draSocket, supported_versions: [DRA_SERVICE] }),
      NotifyRegistrationStatus: (call: ServerUnaryCall<{ plugin_registered: boolean; error: string }, object>, cb: sendUnaryData<object>) => {
        this.o.log(call.request.plugin_registered ? 'info' : 'warn', call.request.plugin_registered ? 'registered with kubelet' : 'kubelet refused the registration', { error: call.request.error });
        cb(null, {});
      },
    });
    await bindUnix(reg, regSocket);
    this.servers = [dra, reg];
    this.timer = setInterval(() => {
      void this.rediscover().then(
        (changed) => changed && this.o.log('info', 'ResourceSlices republished'),
        (err: Error) => this.o.log('warn', 'rediscovery failed', { error: err.message }),
      );
    }, rediscoverSeconds * 1000);
  }

  stop(): void {
    clearInterval(this.timer);
    for (const s of this.servers) s.forceShutdown();
  }
}

type ServiceCtor = (new (address: string, creds: ChannelCredentials) => Client & Record<string, Function>) & { service: ServiceDefinition };
let loaded: { DRAPlugin: ServiceCtor } | undefined;
/** The DRA v1 service for grpc-js (the proto next to the bundle or in the source tree). */
export function draApi(): { DRAPlugin: ServiceCtor } {
  if (!loaded) {
    const file = requireAbove(import.meta.url, ['dra-v1.proto', join('src', 'dra', 'dra-v1.proto')]);
    const pkg = grpc.loadPackageDefinition(loaderModule.loadSync(file, { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true })) as unknown as {
      k8s: { io: { kubelet: { pkg: { apis: { dra: { v1: { DRAPlugin: ServiceCtor } } } } } } };
    };
    loaded = pkg.k8s.io.kubelet.pkg.apis.dra.v1;
  }
  return loaded;
}
