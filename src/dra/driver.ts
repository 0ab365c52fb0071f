/**
 * The DRA kubelet plugin for SR-IOV VFs (`plexusctl dra-driver`): registered with kubelet's plugin
 * watcher as a `DRAPlugin` (v1), it publishes the node's ResourceSlices from the device plugin's
 * discovery and answers NodePrepareResources / NodeUnprepareResources. Prepare gives each allocated
 * VF a CDI device with the device plugin's env and device nodes, and its device-info file; both calls
 * are idempotent, and what is prepared is checkpointed (kubelet retries, and the driver may restart
 * between the work and the answer).
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { ChannelCredentials, Client, Server, ServerUnaryCall, ServiceDefinition, sendUnaryData } from '@grpc/grpc-js';
import loaderModule from '@grpc/proto-loader';
import { containerResponse, writeDpDeviceInfo } from '../deviceplugin/allocate.js';
import { type PoolConfig, parseConfig, resourceFullName } from '../deviceplugin/config.js';
import { bindUnix, grpc, kubeletApis, type PluginInfo } from '../deviceplugin/grpc.js';
import { type Assignment, type RememberedDevice, assignPools } from '../deviceplugin/pools.js';
import type { ApiClient } from '../k8s/client.js';
import { type HostInventory, discover } from '../sriov/discover.js';
import type { SriovHost } from '../sriov/backend.js';
import { requireAbove } from '../util/find-above.js';
import { Informer } from '../k8s/informer.js';
import { RESOURCE_API, type ResourceClaim, claimPath, parseResourceClaim } from '../k8s/resource.js';
import { type NetdevUse, bindVfio, hostNetdevUse, releaseVfio } from '../deviceplugin/vfio.js';
import { isObject } from '../util/object.js';
import { DRA_DRIVER, SlicePublisher, deviceName, sliceDevices } from './slices.js';

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
/** A VF of a claim as prepare found it: it keeps its pool while prepared, and what prepare bound is released by unprepare. */
interface PreparedVf {
  address: string;
  /** Full resource name of its pool. */
  pool: string;
  vendor: string;
  device: string;
  pf?: string;
  /** The driver it had before prepare. */
  driver?: string;
  /** Bound to vfio-pci by prepare (the claim's config asked for it). */
  vfio: boolean;
}
interface PreparedClaim {
  namespace: string;
  name: string;
  /** Written before the first host change: a claim left `preparing` by a crash is redone by a retried prepare, or undone by unprepare. */
  state?: 'preparing';
  devices: PreparedDevice[];
  vfs?: PreparedVf[];
  /** Files written for it (CDI spec, device-info), removed by unprepare. */
  files: string[];
}

/** This driver's opaque device config (DeviceClass or claim): which driver the VF is used through. */
export const VF_CONFIG_API_VERSION = `${DRA_DRIVER}/v1alpha1`;
function parseVfConfig(parameters: unknown, what: string): 'vfio-pci' | undefined {
  const shape = `{apiVersion: ${VF_CONFIG_API_VERSION}, kind: VfConfig, driver: vfio-pci | kernel}`;
  if (!isObject(parameters) || parameters.apiVersion !== VF_CONFIG_API_VERSION || parameters.kind !== 'VfConfig') throw new Error(`${what}: the opaque parameters must be ${shape}`);
  const unknown = Object.keys(parameters).filter((k) => !['apiVersion', 'kind', 'driver'].includes(k));
  if (unknown.length) throw new Error(`${what}: unknown field(s) ${unknown.join(', ')} in ${shape}`);
  if (parameters.driver === undefined || parameters.driver === 'kernel') return undefined;
  if (parameters.driver === 'vfio-pci') return 'vfio-pci';
  throw new Error(`${what}: driver ${JSON.stringify(parameters.driver)} is not vfio-pci or kernel`);
}

/** The driver each request's VFs are to be used through: the last of this driver's configs that names the request (or all). */
function requestedDrivers(claim: ResourceClaim): (request: string) => 'vfio-pci' | undefined {
  const mine = claim.config.filter((c) => c.driver === DRA_DRIVER).map((c, i) => ({ requests: c.requests, driver: parseVfConfig(c.parameters, `claim ${claim.namespace}/${claim.name} config ${i}`) }));
  return (request) => {
    let driver: 'vfio-pci' | undefined;
    // A subrequest's result is named <request>/<subrequest>; a config may name either.
    for (const c of mine) if (!c.requests.length || c.requests.some((r) => r === request || request.startsWith(`${r}/`))) driver = c.driver;
    return driver;
  };
}

/** Told of each claim's prepare or unprepare: how it went and how long it took (metrics). */
export type DraObserver = (call: 'prepare' | 'unprepare', ok: boolean, seconds: number) => void;

export interface DraDriverOptions {
  api: ApiClient;
  nodeName: string;
  host: SriovHost;
  configFile: string;
  /** The device plugin's config.json (absent: no device plugin): VFs its pools select are left to it. */
  devicePluginConfig?: string;
  kubeletDir: string;
  stateDir: string;
  cdiDir: string;
  devinfoDir: string;
  /** The host's addresses and routes per netdev (vfio preflight); the kernel's by default. */
  netdevUse?: () => Promise<NetdevUse>;
  log: (level: 'info' | 'warn', msg: string, fields?: Record<string, unknown>) => void;
  observe?: DraObserver;
}

export class DraDriver {
  private inventory: HostInventory | undefined;
  /** The pools of the last discovery, as the slices published them. */
  private assignment: Assignment | undefined;
  /** The VFs last left to the device plugin (logged when that changes). */
  private skipped = '';
  private readonly publisher: SlicePublisher;
  private readonly checkpointFile: string;
  private prepared: Record<string, PreparedClaim>;
  private servers: Server[] = [];
  private timer: NodeJS.Timeout | undefined;
  private ownSlices: Informer<{ metadata: { name: string } }> | undefined;

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
    const inUse = this.inUse();
    const assignment = assignPools(this.inventory, pools, inUse);
    // Side by side with the device plugin: what its pools take is its own (kubelet allocates it), never published here too.
    const theirs = this.o.devicePluginConfig && existsSync(this.o.devicePluginConfig) ? assignPools(this.inventory, parseConfig(readFileSync(this.o.devicePluginConfig, 'utf8')).pools) : undefined;
    const taken = new Set(theirs?.pools.flatMap((p) => p.devices).filter((id) => !inUse.has(id)));
    if (taken.size) {
      const skipped = assignment.pools.flatMap((p) => p.devices.filter((id) => taken.has(id)));
      if (skipped.length && skipped.join() !== this.skipped) this.o.log('warn', 'VFs left to the device plugin: its pools select them too', { devices: skipped });
      this.skipped = skipped.join();
      assignment.pools = assignment.pools.map((p) => ({ ...p, devices: p.devices.filter((id) => !taken.has(id)) }));
    }
    this.assignment = assignment;
    return this.publisher.publish(sliceDevices(this.inventory, this.assignment));
  }

  /** Prepared VFs keep their pool whatever sysfs shows now (netdev in a pod, bound to vfio-pci). */
  private inUse(): Map<string, RememberedDevice> {
    const out = new Map<string, RememberedDevice>();
    for (const c of Object.values(this.prepared))
      for (const v of c.vfs ?? []) out.set(v.address, { pool: v.pool, vendor: v.vendor, device: v.device, ...(v.pf ? { pf: v.pf } : {}), ...(v.driver ? { driver: v.driver } : {}), allocated: true });
    return out;
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
    if (done && !done.state) return done.devices;
    const current = parseResourceClaim(await this.o.api.get<unknown>(claimPath(claim.namespace, claim.name)), `claim ${claim.namespace}/${claim.name}`);
    if (current.uid !== claim.uid) throw new Error(`claim ${claim.namespace}/${claim.name} has UID ${current.uid}, kubelet asked for ${claim.uid}`);
    const mine = (current.results ?? []).filter((r) => r.driver === DRA_DRIVER && r.pool === this.o.nodeName);
    const driverFor = requestedDrivers(current);
    if (!this.inventory) await this.rediscover();
    const found = mine.map((r) => {
      const f = this.device(r.device);
      if (!f) throw new Error(`device ${r.device} of claim ${claim.namespace}/${claim.name} is not a pooled VF of this node (any more)`);
      return { r, ...f };
    });
    // What will change on the host is on disk first: a crash from here on is redone by kubelet's retry or undone by its unprepare.
    const vfs = found.map(({ r, dev, pool }): PreparedVf => {
      // A prepare redone after a crash: the driver it had before the first attempt.
      const before = done?.vfs?.find((v) => v.address === dev.address);
      const driver = before ? before.driver : dev.driver;
      const vf: PreparedVf = { address: dev.address, pool: resourceFullName(pool), vendor: dev.vendor, device: dev.device, vfio: driverFor(r.request) === 'vfio-pci' || !!before?.vfio };
      if (dev.pf) vf.pf = dev.pf;
      if (driver) vf.driver = driver;
      return vf;
    });
    this.prepared[claim.uid] = { namespace: claim.namespace, name: claim.name, state: 'preparing', devices: [], vfs, files: [] };
    this.writeCheckpoint();
    let use: NetdevUse | undefined;
    for (const v of vfs.filter((x) => x.vfio)) {
      const dev = this.inventory!.devices.find((d) => d.address === v.address)!;
      if (dev.driver === 'vfio-pci') continue;
      use ??= await (this.o.netdevUse ?? hostNetdevUse)();
      bindVfio(this.o.host.sysfs, dev, this.inventory!, use, new Set([dev.address]));
      this.o.log('info', 'bound to vfio-pci', { claim: `${claim.namespace}/${claim.name}`, device: dev.address, was: dev.driver });
    }
    if (vfs.some((v) => v.vfio)) await this.rediscover();
    const devices: PreparedDevice[] = [];
    const files: string[] = [];
    const cdiDevices: object[] = [];
    for (const { r } of found) {
      const { dev, pool } = this.device(r.device) ?? found.find((f) => f.r === r)!;
      const edits = containerResponse(pool, [dev], false);
      cdiDevices.push({
        name: r.device,
        containerEdits: {
          env: Object.entries(edits.envs).map(([k, v]) => `${k}=${v}`),
          deviceNodes: edits.devices.map((d) => ({ path: d.container_path, hostPath: d.host_path, permissions: d.permissions })),
        },
      });
      const info = writeDpDeviceInfo(this.o.devinfoDir, pool, dev);
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
    this.prepared[claim.uid] = { namespace: claim.namespace, name: claim.name, devices, vfs, files };
    this.writeCheckpoint();
    this.o.log('info', 'claim prepared', { claim: `${claim.namespace}/${claim.name}`, devices: devices.map((d) => d.device_name) });
    return devices;
  }

  /** Removes what prepare wrote and releases what it bound; a claim not prepared here (or already unprepared) is done. */
  unprepare(claim: ClaimRef): void {
    const done = this.prepared[claim.uid];
    if (!done) return;
    for (const v of (done.vfs ?? []).filter((x) => x.vfio && x.driver !== 'vfio-pci')) {
      releaseVfio(this.o.host.sysfs, v.address);
      this.o.log('info', 'released from vfio-pci', { claim: `${claim.namespace}/${claim.name}`, device: v.address });
    }
    for (const f of done.files) rmSync(f, { force: true });
    delete this.prepared[claim.uid];
    this.writeCheckpoint();
    this.o.log('info', 'claim unprepared', { claim: `${claim.namespace}/${claim.name}` });
  }

  /** What is prepared now, by claim UID (tests, debugging). */
  preparedClaims(): Record<string, PreparedClaim> {
    return structuredClone(this.prepared);
  }

  /** What /debug shows: the published devices by pool, the VFs left to the device plugin, the checkpoint. */
  debug(): { pools: { pool: string; devices: string[] }[]; leftToDevicePlugin: string[]; claims: Record<string, PreparedClaim> } {
    return {
      pools: (this.assignment?.pools ?? []).map((p) => ({ pool: resourceFullName(p.pool), devices: p.devices })),
      leftToDevicePlugin: this.skipped ? this.skipped.split(',') : [],
      claims: this.preparedClaims(),
    };
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
            const t0 = performance.now();
            try {
              const devices = await this.prepare(c);
              this.o.observe?.('prepare', true, (performance.now() - t0) / 1000);
              return [c.uid, { devices, error: '' }] as const;
            } catch (err) {
              this.o.observe?.('prepare', false, (performance.now() - t0) / 1000);
              this.o.log('warn', 'claim not prepared', { claim: `${c.namespace}/${c.name}`, error: (err as Error).message });
              return [c.uid, { devices: [], error: (err as Error).message }] as const;
            }
          }),
        ).then((entries) => cb(null, { claims: Object.fromEntries(entries) }));
      },
      NodeUnprepareResources: (call: Req, cb: sendUnaryData<object>) => {
        const claims: Record<string, { error: string }> = {};
        for (const c of call.request.claims) {
          const t0 = performance.now();
          try {
            this.unprepare(c);
            this.o.observe?.('unprepare', true, (performance.now() - t0) / 1000);
            claims[c.uid] = { error: '' };
          } catch (err) {
            this.o.observe?.('unprepare', false, (performance.now() - t0) / 1000);
            this.o.log('warn', 'claim not unprepared', { claim: `${c.namespace}/${c.name}`, error: (err as Error).message });
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
        // A kubelet that (re)started wiped the node's slices: they are checked, and written again if gone.
        if (call.request.plugin_registered) this.republish();
        cb(null, {});
      },
    });
    await bindUnix(reg, regSocket);
    this.servers = [dra, reg];
    // kubelet deletes the node's slices when it starts and when the driver stays away 30 s; anyone may
    // delete one. A deletion seen makes the next rediscovery compare with the API again.
    this.ownSlices = new Informer(this.o.api, {
      path: `${RESOURCE_API}/resourceslices`,
      query: { fieldSelector: `spec.nodeName=${this.o.nodeName},spec.driver=${DRA_DRIVER}` },
      keep: (raw) => ({ metadata: { name: isObject(raw) && isObject(raw.metadata) ? String(raw.metadata.name) : '' } }),
      onChange: (_slice, gone) => gone && this.publisher.forget(),
      onError: (err) => this.o.log('warn', 'watching the ResourceSlices failed (retried)', { error: err.message }),
    });
    await this.ownSlices.start();
    this.timer = setInterval(() => this.republish(false), rediscoverSeconds * 1000);
  }

  /** Rediscovery and publication, logged; `compare` first forgets what was written (the API is read again). */
  private republish(compare = true): void {
    if (compare) this.publisher.forget();
    void this.rediscover().then(
      (changed) => changed && this.o.log('info', 'ResourceSlices republished'),
      (err: Error) => this.o.log('warn', 'rediscovery failed', { error: err.message }),
    );
  }

  stop(): void {
    clearInterval(this.timer);
    void this.ownSlices?.stop();
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
