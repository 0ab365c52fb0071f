/**
 * vfio-pci binding of the pools that ask for it (`bindDriver`): each device bound once its preflight
 * passes, each refusal kept with its reason (the device is then advertised Unhealthy with it), and
 * what this plugin bound released when it leaves its pool.
 */
import type { HostInventory } from '../sriov/discover.js';
import type { HostRoot } from '../sriov/host.js';
import { type DevicePluginConfig, resourceFullName } from './config.js';
import type { Assignment } from './pools.js';
import { BindError, type NetdevUse, bindVfio, hostNetdevUse, releaseVfio } from './vfio.js';

type Log = (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;

export class VfioBinder {
  /** Devices this plugin bound to vfio-pci, to release them when they leave their pool. */
  bound = new Set<string>();
  /** Why a device of a pool with bindDriver is not bound to it. */
  refused = new Map<string, string>();

  constructor(
    private readonly sysfs: HostRoot,
    private readonly log: Log,
    private readonly netdevUse: () => Promise<NetdevUse> = hostNetdevUse,
  ) {}

  /** Binds the devices of pools with `bindDriver` (each refusal logged with its reason); true when something changed. */
  async bindPools(config: DevicePluginConfig, assignment: Assignment, inventory: HostInventory): Promise<boolean> {
    let changed = false;
    const refused = new Map<string, string>();
    let use: NetdevUse | undefined;
    for (const pool of config.pools.filter((p) => p.bindDriver === 'vfio-pci')) {
      const ids = assignment.pools.find((p) => p.pool === pool)?.devices ?? [];
      const unit = new Set(ids);
      for (const id of ids) {
        const dev = inventory.devices.find((d) => d.address === id)!;
        if (dev.driver === 'vfio-pci') continue;
        try {
          // One look at the host's addresses and routes per pass, and only when something is to be bound;
          // if the kernel cannot be asked, nothing is bound (the device is refused with that reason).
          use ??= await this.netdevUse().catch((err: Error) => {
            throw new BindError(id, `cannot read the host's addresses and routes: ${err.message}`);
          });
          bindVfio(this.sysfs, dev, inventory, use, unit);
          this.bound.add(id);
          changed = true;
          this.log('info', 'bound to vfio-pci', { resource: resourceFullName(pool), device: id, was: dev.driver });
        } catch (err) {
          const reason = err instanceof BindError ? err.message : String(err);
          refused.set(id, reason);
          if (this.refused.get(id) !== reason) this.log('warn', 'not bound to vfio-pci', { resource: resourceFullName(pool), device: id, reason });
        }
      }
    }
    this.refused = refused;
    return changed;
  }

  /** Devices this plugin bound that no pool wants any more go back to their default driver. */
  releaseUnpooled(config: DevicePluginConfig, assignment: Assignment): void {
    for (const id of [...this.bound]) {
      const v = assignment.verdicts.find((x) => x.device.address === id);
      const pool = v?.pool ? config.pools.find((p) => resourceFullName(p) === v.pool) : undefined;
      if (pool?.bindDriver === 'vfio-pci') continue;
      try {
        if (v) releaseVfio(this.sysfs, id);
        this.bound.delete(id);
        this.log('info', 'released from vfio-pci', { device: id });
      } catch (err) {
        this.log('warn', 'release from vfio-pci failed', { device: id, error: (err as Error).message });
      }
    }
  }
}
