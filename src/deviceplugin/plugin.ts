/**
 * The SR-IOV device plugin: config → discovery → pools → one kubelet endpoint per pool → registration,
 * then a resync loop: config reload (an invalid one is reported and the last good one kept),
 * rediscovery (new VFs appear, vanished ones go Unhealthy, an empty pool advertises zero), health,
 * managed vfio binding, re-registration when kubelet wipes its socket directory, and a persisted
 * inventory so VFs whose netdev sits in a pod keep their pool across restarts.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { writeFileAtomic } from '../cni/cache.js';
import { basename, join } from 'node:path';
import { type HostInventory, type PciDevice, discover, rediscover } from '../sriov/discover.js';
import { addDdpProfiles } from '../sriov/ddp.js';
import type { SriovHost } from '../sriov/backend.js';
import { cdiSpec, containerResponse, preferredAllocation, removeStaleDeviceInfo, withCdi, writeDpDeviceInfo } from './allocate.js';
import { type DevicePluginConfig, type PoolConfig, parseConfig, resourceFullName } from './config.js';
import { API_VERSION, type Device, HEALTHY, UNHEALTHY, grpc, kubeletApis, unary } from './grpc.js';
import { deviceHealth } from './health.js';
import { type Assignment, type DeviceVerdict, type RememberedDevice, assignPools } from './pools.js';
import { PoolServer } from './server.js';
import type { NetdevUse } from './vfio.js';
import { VfioBinder } from './binding.js';

export interface DevicePluginOptions {
  configFile: string;
  /** Sysfs, and DDP names for `ddpProfiles` selectors. */
  host: SriovHost;
  /** Holds device-plugins/, plugins_registry/ and pod-resources/ (default /var/lib/kubelet). */
  kubeletDir: string;
  /** Device-info root; files go to <dir>/dp/ (default /var/run/k8s.cni.cncf.io/devinfo). */
  devinfoDir: string;
  /** Persisted inventory (default /var/lib/plexus/device-plugin). */
  stateDir: string;
  resourcePrefix?: string;
  /** Answer Allocate with CDI devices and keep CDI specs in this directory instead of device nodes. */
  cdiDir?: string;
  resyncMs?: number;
  /** What holds the host's netdevs (addresses, routes) for the vfio preflight; default: rtnetlink. */
  netdevUse?: () => Promise<NetdevUse>;
  log?: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

interface PoolState {
  pool: PoolConfig;
  server: PoolServer;
  /** Devices advertised, with why each unhealthy one is. */
  health: Map<string, string | undefined>;
  /**
   * IOMMU groups with more than one endpoint, used through vfio, are one unit (/dev/vfio/<g> has a
   * single owner): advertised under their lowest address, allocated whole.
   */
  units: Map<string, string[]>;
}

/** Plugin-watcher mode when kubelet's plugins_registry exists, else legacy Register on kubelet.sock. */
export type RegistrationMode = 'watcher' | 'legacy';

export class SriovDevicePlugin {
  private config: DevicePluginConfig | undefined;
  private configStamp = '';
  private inventory: HostInventory = { devices: [], defaultRouteNetdevs: { v4: [], v6: [] }, iommuEnabled: false };
  private assignment: Assignment = { pools: [], verdicts: [] };
  private readonly pools = new Map<string, PoolState>();
  private remembered = new Map<string, RememberedDevice>();
  private timer: NodeJS.Timeout | undefined;
  private resyncing: Promise<void> = Promise.resolve();
  /** The last config error, kept for the debug endpoint. */
  configError: string | undefined;
  readonly mode: RegistrationMode;

  private readonly binder: VfioBinder;

  constructor(private readonly opts: DevicePluginOptions) {
    this.mode = existsSync(join(opts.kubeletDir, 'plugins_registry')) ? 'watcher' : 'legacy';
    this.binder = new VfioBinder(opts.host.sysfs, (level, msg, fields) => this.log(level, msg, fields), opts.netdevUse);
  }

  private log(level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>): void {
    this.opts.log?.(level, msg, fields);
  }

  private get inventoryFile(): string {
    return join(this.opts.stateDir, 'inventory.json');
  }

  async start(): Promise<void> {
    this.config = this.loadConfig(true)!;
    // CDI specs of a previous run may name pools that are gone.
    if (this.opts.cdiDir && existsSync(this.opts.cdiDir))
      for (const f of readdirSync(this.opts.cdiDir)) if (f.startsWith('plexus-') && f.endsWith('.json')) rmSync(join(this.opts.cdiDir, f), { force: true });
    try {
      const saved = JSON.parse(readFileSync(this.inventoryFile, 'utf8')) as { devices?: Record<string, RememberedDevice>; bound?: string[] };
      this.remembered = new Map(Object.entries(saved.devices ?? {}));
      this.binder.bound = new Set(saved.bound ?? []);
    } catch {
      /* first start, or unreadable: rediscovery rebuilds it */
    }
    await this.sync();
    this.timer = setInterval(() => void this.resync(), this.opts.resyncMs ?? 5000);
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.resyncing;
    for (const p of this.pools.values()) {
      p.server.stop();
      if (this.opts.cdiDir) rmSync(this.cdiSpecPath(p.pool), { force: true });
    }
    this.pools.clear();
  }

  /** One resync now (tests and the debug endpoint); serialized with the periodic ones. */
  resync(): Promise<void> {
    this.resyncing = this.resyncing.then(() => this.sync()).catch((err: Error) => this.log('error', 'resync failed', { error: err.message }));
    return this.resyncing;
  }

  /** Reads the config when it changed; an invalid one is reported and the last good one kept. */
  private loadConfig(first = false): DevicePluginConfig | undefined {
    let stamp = '';
    try {
      const st = statSync(this.opts.configFile);
      stamp = `${st.mtimeMs}:${st.size}`;
    } catch (err) {
      if (first) throw err;
    }
    if (!first && stamp === this.configStamp) return this.config;
    this.configStamp = stamp;
    try {
      const cfg = parseConfig(readFileSync(this.opts.configFile, 'utf8'), this.opts.resourcePrefix);
      if (!first) this.log('info', 'config reloaded', { pools: cfg.pools.map(resourceFullName) });
      this.configError = undefined;
      return cfg;
    } catch (err) {
      if (first) throw err;
      this.configError = (err as Error).message;
      this.log('error', 'invalid config: keeping the last good one', { error: this.configError });
      return this.config;
    }
  }

  /** Devices kubelet has allocated to pods, when its PodResources socket answers. */
  private async allocated(): Promise<Set<string>> {
    const socket = join(this.opts.kubeletDir, 'pod-resources', 'kubelet.sock');
    if (!existsSync(socket)) return new Set();
    try {
      const { allocatedDevices } = await import('../k8s/podresources.js');
      return new Set([...(await allocatedDevices(socket, 5000)).values()].flat());
    } catch (err) {
      this.log('warn', 'PodResources List failed: pool membership from sysfs and the inventory only', { error: (err as Error).message });
      return new Set();
    }
  }

  private async sync(): Promise<void> {
    this.config = this.loadConfig();
    const config = this.config!;
    const allocated = await this.allocated();
    for (const [id, r] of this.remembered) r.allocated = allocated.has(id);
    const scan = async (): Promise<void> => {
      this.inventory = discover(this.opts.host.sysfs);
      // DDP package names cost a devlink query per PF: only when a selector asks for them.
      if (config.pools.some((p) => p.selectors.some((sel) => sel.ddpProfiles?.length))) await addDdpProfiles(this.opts.host.openDdp(), this.inventory);
      this.assignment = assignPools(this.inventory, config.pools, this.remembered);
    };
    await scan();
    if (await this.binder.bindPools(config, this.assignment, this.inventory)) await scan();
    this.binder.releaseUnpooled(this.config!, this.assignment);
    this.persist();
    const wanted = new Map(config.pools.map((p) => [resourceFullName(p), p]));
    for (const [name, state] of this.pools) {
      if (wanted.has(name)) continue;
      // A pool gone from the config: its socket goes, which deregisters it (no stale resource names).
      state.server.stop();
      if (this.opts.cdiDir) rmSync(this.cdiSpecPath(state.pool), { force: true });
      this.pools.delete(name);
      this.log('info', 'pool removed', { resource: name });
    }
    for (const [name, pool] of wanted) {
      let state = this.pools.get(name);
      if (!state) {
        state = { pool, server: this.newServer(pool), health: new Map(), units: new Map() };
        this.pools.set(name, state);
        await state.server.start();
        await this.register(state);
      } else {
        state.pool = pool;
        // kubelet restarted and wiped its socket directory: serve again, then register again.
        if (!existsSync(state.server.socket)) {
          this.log('warn', 'socket gone (kubelet restart?): serving and registering again', { resource: name });
          state.server.stop();
          state.server = this.newServer(pool);
          await state.server.start();
          await this.register(state);
        }
      }
      this.advertise(state);
    }
    this.cleanDeviceInfo();
  }

  private socketPath(pool: PoolConfig): string {
    const file = `${pool.resourcePrefix}_${pool.resourceName}.sock`;
    return join(this.opts.kubeletDir, this.mode === 'watcher' ? 'plugins_registry' : 'device-plugins', file);
  }

  private newServer(pool: PoolConfig): PoolServer {
    const name = resourceFullName(pool);
    return new PoolServer(
      name,
      this.socketPath(pool),
      {
        allocate: (containers) => this.allocate(name, containers),
        preferred: (reqs) => reqs.map((r) => this.preferred(name, r.available, r.mustInclude, r.size)),
        registrationStatus: (ok, error) => this.log(ok ? 'info' : 'error', ok ? 'registered with kubelet' : 'kubelet refused the registration', { resource: name, error }),
      },
      this.mode === 'watcher',
    );
  }

  /** Legacy mode: Register on kubelet.sock (kubelet dials back at once, so the server already listens). */
  private async register(state: PoolState): Promise<void> {
    if (this.mode === 'watcher') return; // kubelet finds the socket in plugins_registry itself
    const kubeletSock = join(this.opts.kubeletDir, 'device-plugins', 'kubelet.sock');
    const client = new (kubeletApis().v1beta1.Registration)(`unix://${kubeletSock}`, grpc.credentials.createInsecure());
    try {
      await unary(client, 'Register', {
        version: API_VERSION,
        endpoint: basename(state.server.socket),
        resource_name: resourceFullName(state.pool),
        options: { pre_start_required: false, get_preferred_allocation_available: true },
      });
      this.log('info', 'registered with kubelet', { resource: resourceFullName(state.pool), mode: 'legacy' });
    } catch (err) {
      // Not fatal (sriov-network-device-plugin exits): the next resync registers again.
      this.log('error', 'registration failed; retrying at the next resync', { resource: resourceFullName(state.pool), error: (err as Error).message });
      state.server.stop();
    } finally {
      client.close();
    }
  }

  private advertise(state: PoolState): void {
    const name = resourceFullName(state.pool);
    const members = this.assignment.pools.find((p) => resourceFullName(p.pool) === name)?.devices ?? [];
    const units = new Map<string, string[]>();
    const hidden = new Set<string>();
    for (const id of members) {
      const dev = this.inventory.devices.find((d) => d.address === id);
      if (!dev || hidden.has(id) || dev.driver !== 'vfio-pci' || !dev.iommuPeers.length) continue;
      // assignPools let it in only with every peer in this pool.
      const group = [id, ...dev.iommuPeers].sort();
      units.set(group[0]!, group);
      for (const m of group.slice(1)) hidden.add(m);
    }
    const ids = new Set(members.filter((id) => !hidden.has(id)));
    // Devices that were advertised and vanished stay in the list as Unhealthy, with a reason.
    for (const id of state.health.keys()) if (!hidden.has(id)) ids.add(id);
    const devices: Device[] = [];
    const health = new Map<string, string | undefined>();
    for (const id of [...ids].sort()) {
      const dev = this.inventory.devices.find((d) => d.address === id);
      // A device that is still here but left the pool (config change) is no longer advertised.
      if (dev && this.assignment.verdicts.find((v) => v.device.address === id)?.pool !== name) continue;
      let reason: string | undefined;
      // A pool that binds its devices hands out only bound ones: a DPDK pod must never get a kernel netdev.
      const bindDriver = state.pool.bindDriver;
      if (dev && bindDriver && dev.driver !== bindDriver) reason = `not bound to ${bindDriver} (${dev.driver ?? 'no driver'}): ${this.binder.refused.get(id) ?? 'binding pending'}`;
      for (const m of reason ? [] : (units.get(id) ?? [id])) {
        const verdict = deviceHealth(m, this.inventory.devices.some((d) => d.address === m) ? this.remembered.get(m)?.driver : undefined, state.pool, this.inventory);
        if (!verdict.healthy) {
          reason = m === id ? verdict.reason : `IOMMU group member ${m}: ${verdict.reason}`;
          break;
        }
      }
      health.set(id, reason);
      if (reason !== state.health.get(id) && reason) this.log('warn', 'device unhealthy', { resource: name, device: id, reason });
      const numa = dev?.numaNode ?? -1;
      devices.push({ ID: id, health: reason ? UNHEALTHY : HEALTHY, ...(numa >= 0 && !state.pool.excludeTopology ? { topology: { nodes: [{ ID: numa }] } } : {}) });
    }
    state.health = health;
    state.units = units;
    if (this.opts.cdiDir) this.writeCdiSpec(state.pool, members);
    state.server.update(devices);
  }

  private cdiSpecPath(pool: PoolConfig): string {
    return join(this.opts.cdiDir!, `plexus-${resourceFullName(pool).replace(/[^A-Za-z0-9_.-]/g, '_')}.json`);
  }

  /** Rewritten whenever the pool is advertised, so the runtime resolves exactly the devices kubelet sees. */
  private writeCdiSpec(pool: PoolConfig, members: string[]): void {
    const devices = members.map((id) => this.inventory.devices.find((d) => d.address === id)).filter((d): d is PciDevice => !!d);
    mkdirSync(this.opts.cdiDir!, { recursive: true });
    writeFileAtomic(this.cdiSpecPath(pool), JSON.stringify(cdiSpec(pool, devices), null, 1), { mode: 0o644 });
  }

  private deviceOf(id: string): PciDevice {
    const dev = this.inventory.devices.find((d) => d.address === id);
    if (!dev) throw new Error(`device ${id} is not on this node any more`);
    return dev;
  }

  private allocate(resource: string, containers: string[][]) {
    const state = this.pools.get(resource);
    if (!state) throw new Error(`no pool ${resource}`);
    // Fresh facts for what is handed out: a device may have changed since the last resync.
    this.inventory = rediscover(
      this.opts.host.sysfs,
      this.inventory,
      containers.flat().flatMap((id) => state.units.get(id) ?? [id]),
    );
    return containers.map((ids) => {
      const devices = ids.flatMap((id) => {
        const unhealthy = state.health.get(id);
        if (!state.health.has(id)) throw new Error(`${id} is not a device of ${resource}`);
        if (unhealthy) throw new Error(`${id} is unhealthy: ${unhealthy}`);
        return (state.units.get(id) ?? [id]).map((m) => this.deviceOf(m));
      });
      const needVhost = state.pool.selectors.some((s) => s.needVhostNet === true);
      for (const dev of devices) writeDpDeviceInfo(this.opts.devinfoDir, state.pool, dev);
      const response = containerResponse(state.pool, devices, needVhost);
      return this.opts.cdiDir
        ? withCdi(
            response,
            state.pool,
            devices.map((d) => d.address),
          )
        : response;
    });
  }

  private preferred(resource: string, available: string[], mustInclude: string[], size: number): string[] {
    const state = this.pools.get(resource);
    if (!state) return available.slice(0, size);
    const devices = available.map((id) => this.inventory.devices.find((d) => d.address === id)).filter((d): d is PciDevice => !!d);
    return preferredAllocation(state.pool.allocationPolicy, devices, mustInclude, size);
  }

  private persist(): void {
    for (const v of this.assignment.verdicts) {
      if (!v.pool) continue;
      const d = v.device;
      const before = this.remembered.get(d.address);
      const driver = before?.pool === v.pool && before.driver ? before.driver : d.driver;
      this.remembered.set(d.address, {
        pool: v.pool,
        vendor: d.vendor,
        device: d.device,
        ...(d.pf ? { pf: d.pf } : {}),
        ...(d.vfIndex !== undefined ? { vfIndex: d.vfIndex } : {}),
        ...(driver ? { driver } : {}),
      });
    }
    // The driver expected by health follows a managed binding.
    for (const id of this.binder.bound) {
      const r = this.remembered.get(id);
      if (r) r.driver = 'vfio-pci';
    }
    for (const id of [...this.remembered.keys()]) if (!this.inventory.devices.some((d) => d.address === id)) this.remembered.delete(id);
    mkdirSync(this.opts.stateDir, { recursive: true });
    const devices = Object.fromEntries([...this.remembered].map(([id, { allocated: _now, ...r }]) => [id, r]));
    writeFileSync(this.inventoryFile, JSON.stringify({ devices, bound: [...this.binder.bound] }, null, 1));
  }

  /** Device-info files of devices that no pool advertises any more are stale. */
  private cleanDeviceInfo(): void {
    const advertised = (pool: PoolConfig, id: string): boolean => {
      const state = this.pools.get(resourceFullName(pool));
      return !!state && (state.health.has(id) || [...state.units.values()].some((u) => u.includes(id)));
    };
    const removed = removeStaleDeviceInfo(this.opts.devinfoDir, this.config!.pools, advertised);
    if (removed.length) this.log('info', 'stale device-info files removed', { files: removed });
  }

  /** The debug view: pools, advertised devices with health reasons, exclusions, config error. */
  debug(): {
    mode: RegistrationMode;
    configError?: string;
    pools: { resource: string; socket: string; devices: { id: string; healthy: boolean; reason?: string; unit?: string[] }[] }[];
    excluded: { id: string; reason: string }[];
  } {
    return {
      mode: this.mode,
      ...(this.configError ? { configError: this.configError } : {}),
      pools: [...this.pools.values()].map((s) => ({
        resource: resourceFullName(s.pool),
        socket: s.server.socket,
        devices: [...s.health].map(([id, reason]) => ({ id, healthy: !reason, ...(reason ? { reason } : {}), ...(s.units.has(id) ? { unit: s.units.get(id)! } : {}) })),
      })),
      excluded: this.assignment.verdicts.filter((v: DeviceVerdict) => !v.pool).map((v) => ({ id: v.device.address, reason: v.reason ?? '' })),
    };
  }

  server(resource: string): PoolServer | undefined {
    return this.pools.get(resource)?.server;
  }
}
