/**
 * Which pool each discovered device joins, or why it joins none. Selector semantics are
 * sriov-network-device-plugin's (filters ANDed in its order, selector objects ORed, the first
 * pool/object in file order wins), plus: IPv6 default routes exclude a NIC too, a NUMA selector,
 * and IOMMU checks for devices that will be used through vfio. Every exclusion carries its reason.
 */
import type { HostInventory, PciDevice } from '../sriov/discover.js';
import { type PoolConfig, type RangedName, type Selector, resourceFullName } from './config.js';

export interface PoolAssignment {
  pool: PoolConfig;
  /** Device IDs (PCI addresses), in address order. */
  devices: string[];
}

export interface DeviceVerdict {
  device: PciDevice;
  /** Full resource name of the pool it joined. */
  pool?: string;
  /** Why it joined none. */
  reason?: string;
}

/** What a device was when it last joined a pool (the persisted node-local inventory). */
export interface RememberedDevice {
  pool: string;
  vendor: string;
  device: string;
  pf?: string;
  vfIndex?: number;
  /** The driver it joined with: health expects it. */
  driver?: string;
  /** Allocated to a pod now (PodResources): keeps its pool whatever sysfs shows. Not persisted. */
  allocated?: boolean;
}

export interface Assignment {
  pools: PoolAssignment[];
  verdicts: DeviceVerdict[];
}

const USERSPACE = new Set(['vfio-pci', 'uio_pci_generic', 'igb_uio']);

function inRange(r: RangedName, name: string | undefined, vfIndex: number | undefined): boolean {
  if (!name || r.name.toLowerCase() !== name.toLowerCase()) return false;
  return !r.vfIndexes || (vfIndex !== undefined && r.vfIndexes.has(vfIndex));
}

/** The first filter of `sel` the device fails, as "field (what it has)", or undefined when it matches. */
export function failedFilter(sel: Selector, dev: PciDevice, pfNetdevs: string[]): string | undefined {
  const linkType = dev.netdevs[0]?.linkType ?? undefined;
  const checks: [keyof Selector, () => boolean, () => string][] = [
    ['vendors', () => sel.vendors!.includes(dev.vendor), () => dev.vendor],
    ['devices', () => sel.devices!.includes(dev.device), () => dev.device],
    ['drivers', () => !!dev.driver && sel.drivers!.includes(dev.driver), () => dev.driver ?? 'no driver'],
    ['pciAddresses', () => sel.pciAddresses!.includes(dev.address), () => dev.address],
    ['acpiIndexes', () => !!dev.acpiIndex && sel.acpiIndexes!.includes(dev.acpiIndex), () => dev.acpiIndex ?? 'none'],
    [
      'pfNames',
      () => sel.pfNames!.some((r) => pfNetdevs.some((n) => inRange(r, n, dev.vfIndex))),
      () => `PF netdev ${pfNetdevs.join(',') || 'none'}${dev.vfIndex !== undefined ? `, VF ${dev.vfIndex}` : ''}`,
    ],
    ['rootDevices', () => sel.rootDevices!.some((r) => inRange(r, dev.pf, dev.vfIndex)), () => `PF ${dev.pf ?? 'none'}`],
    ['linkTypes', () => !!linkType && sel.linkTypes!.includes(linkType), () => linkType ?? 'no netdev'],
    ['ddpProfiles', () => !!dev.ddpProfile && sel.ddpProfiles!.includes(dev.ddpProfile), () => dev.ddpProfile ?? 'no DDP package'],
    ['pKeys', () => !!dev.pkey && sel.pKeys!.some((k) => parseInt(k, 16) === parseInt(dev.pkey!, 16)), () => dev.pkey ?? 'no InfiniBand pkey'],
    ['isRdma', () => sel.isRdma === dev.rdma.length > 0, () => (dev.rdma.length ? 'RDMA' : 'no RDMA device')],
    ['vdpaType', () => dev.vdpa?.driver === `${sel.vdpaType}_vdpa`, () => (dev.vdpa ? `${dev.vdpa.name} on ${dev.vdpa.driver ?? 'no driver'}` : 'no vDPA device')],
    ['numaNodes', () => sel.numaNodes!.includes(dev.numaNode), () => `NUMA ${dev.numaNode}`],
    ['auxTypes', () => !!dev.aux && sel.auxTypes!.includes(dev.aux.type), () => (dev.aux ? `aux type ${dev.aux.type}` : 'not an auxiliary device')],
  ];
  for (const [field, ok, has] of checks) {
    const value = sel[field];
    if (value === undefined || (Array.isArray(value) && value.length === 0) || field === 'needVhostNet') continue;
    if (field === 'isRdma' && value === false) continue; // DP: only `true` filters
    if (dev.aux && (field === 'acpiIndexes' || field === 'pciAddresses')) continue; // DP: parsed, not filtered for aux devices
    if (!ok()) return `${field} (${has()})`;
  }
  return undefined;
}

/** Reasons a network device never joins a pool, whatever the selectors (DP's startup exclusions, IPv6 too). */
function hostExclusion(dev: PciDevice, inv: HostInventory): string | undefined {
  if (dev.error) return `unreadable: ${dev.error}`;
  const routed = dev.netdevs.map((n) => n.name).filter((n) => inv.defaultRouteNetdevs.v4.includes(n) || inv.defaultRouteNetdevs.v6.includes(n));
  if (routed.length) return `holds the default route (${routed.join(', ')})`;
  if (dev.sriov && dev.sriov.numVfs > 0) return `PF with ${dev.sriov.numVfs} VFs (its VFs are pooled instead)`;
  if (!dev.driver) return 'no driver bound';
  return undefined;
}

function classMatches(pool: PoolConfig, dev: PciDevice): boolean {
  if (pool.deviceType === 'auxNetDevice') return !!dev.aux && dev.class.startsWith('02');
  if (dev.aux) return false;
  return pool.deviceType === 'accelerator' ? dev.class.startsWith('12') : dev.class.startsWith('02');
}

/** Used through vfio: already bound to it, or the pool binds it. */
function usesVfio(pool: PoolConfig, dev: PciDevice): boolean {
  return dev.driver === 'vfio-pci' || pool.bindDriver === 'vfio-pci';
}

/**
 * `previous`: the persisted inventory. A VF whose netdev has moved into a pod no longer shows it in
 * sysfs (net/ and infiniband/ are netns-filtered), so selectors on link type or RDMA would drop it
 * after a restart; the same function (same ids, same PF) keeps the pool it had.
 */
export function assignPools(inv: HostInventory, pools: PoolConfig[], previous: Map<string, RememberedDevice> = new Map()): Assignment {
  const verdicts: DeviceVerdict[] = [];
  const members = new Map<PoolConfig, PciDevice[]>(pools.map((p) => [p, []]));
  for (const dev of inv.devices) {
    if (!dev.error && !dev.class.startsWith('02') && !dev.class.startsWith('12')) {
      verdicts.push({ device: dev, reason: `class 0x${dev.class} is neither network (0x02) nor accelerator (0x12)` });
      continue;
    }
    const excluded = dev.class.startsWith('02') || dev.error ? hostExclusion(dev, inv) : dev.driver ? undefined : 'no driver bound';
    if (excluded) {
      verdicts.push({ device: dev, reason: excluded });
      continue;
    }
    const misses: string[] = [];
    const remembered = previous.get(dev.address);
    const same = !!remembered && remembered.vendor === dev.vendor && remembered.device === dev.device && remembered.pf === dev.pf;
    // In use by a pod: allocated (PodResources), or a kernel-driver VF whose netdev left the host (in a
    // pod netns). It keeps its pool even when another pool's selectors match it too (a catch-all
    // listed earlier, or after a config reload): else it would be advertised free elsewhere.
    const inUse = same && (remembered.allocated === true || (dev.netdevs.length === 0 && !!dev.driver && !USERSPACE.has(dev.driver) && remembered.driver === dev.driver));
    let joined: PoolConfig | undefined = inUse ? pools.find((p) => resourceFullName(p) === remembered.pool && classMatches(p, dev)) : undefined;
    for (const pool of joined ? [] : pools) {
      if (!classMatches(pool, dev)) continue;
      for (const [k, sel] of pool.selectors.entries()) {
        // A pool that binds its devices to a userspace driver selects them by their kernel driver;
        // once bound, that filter no longer applies.
        const effective = pool.bindDriver && dev.driver === pool.bindDriver ? { ...sel, drivers: undefined } : sel;
        const failed = failedFilter(effective, dev, dev.pfNetdevs);
        if (!failed) {
          joined = pool;
          break;
        }
        misses.push(`${pool.resourceName} selector ${k}: ${failed}`);
      }
      if (joined) break;
    }
    // A netdev-less function (netdev in a pod, or a driver without one) that no selector takes now.
    if (!joined && same && dev.netdevs.length === 0) joined = pools.find((p) => resourceFullName(p) === remembered!.pool);
    if (!joined) {
      verdicts.push({ device: dev, reason: misses.length ? `no selector matched: ${misses.join('; ')}` : 'no pool of its device type' });
      continue;
    }
    if (USERSPACE.has(dev.driver ?? '') && dev.driver !== 'vfio-pci' && !dev.uio) {
      verdicts.push({ device: dev, reason: `bound to ${dev.driver} without a uio device` });
      continue;
    }
    if (dev.rdma.length === 0 && dev.driver === 'mlx5_core' && joined.bindDriver) {
      verdicts.push({ device: dev, reason: 'mlx5 is a bifurcated driver: never bound to vfio-pci' });
      continue;
    }
    members.get(joined)!.push(dev);
    verdicts.push({ device: dev, pool: resourceFullName(joined) });
  }
  // IOMMU: a device used through vfio needs a group, and a group is one owner's: every other endpoint
  // in it must be in the same pool (then they are allocated together) or the device is excluded.
  for (const [pool, devs] of members) {
    const inPool = new Set(devs.map((d) => d.address));
    for (const dev of [...devs]) {
      if (!usesVfio(pool, dev)) continue;
      let reason: string | undefined;
      if (!dev.iommuGroup) reason = inv.iommuEnabled ? 'no IOMMU group' : 'no IOMMU (IOMMU groups are empty: is intel_iommu=on / amd_iommu=on set?)';
      else {
        const foreign = dev.iommuPeers.filter((a) => !inPool.has(a));
        if (foreign.length) reason = `shares IOMMU group ${dev.iommuGroup} with ${foreign.join(', ')} outside the pool`;
      }
      if (!reason) continue;
      devs.splice(devs.indexOf(dev), 1);
      const v = verdicts.find((x) => x.device === dev)!;
      delete v.pool;
      v.reason = reason;
    }
  }
  return {
    pools: pools.map((pool) => ({
      pool,
      devices: members
        .get(pool)!
        .map((d) => d.address)
        .sort(),
    })),
    verdicts: verdicts.sort((a, b) => a.device.address.localeCompare(b.device.address)),
  };
}
