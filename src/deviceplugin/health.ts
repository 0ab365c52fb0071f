/**
 * Real device health (sriov-network-device-plugin advertises every device Healthy forever): the
 * device still exists, its driver is the one it joined the pool with, its PF has carrier (per-pool
 * policy), and for vfio its IOMMU group is viable. Each Unhealthy verdict carries its reason.
 */
import type { HostInventory, PciDevice } from '../sriov/discover.js';
import type { PoolConfig } from './config.js';

export interface Health {
  healthy: boolean;
  reason?: string;
}

export function deviceHealth(id: string, expectedDriver: string | undefined, pool: PoolConfig, inv: HostInventory): Health {
  const dev = inv.devices.find((d) => d.address === id);
  if (!dev) return { healthy: false, reason: 'device vanished (VF removed or function hot-unplugged)' };
  if (dev.error) return { healthy: false, reason: `unreadable: ${dev.error}` };
  if (expectedDriver && dev.driver !== expectedDriver) return { healthy: false, reason: `driver is ${dev.driver ?? 'none'}, expected ${expectedDriver}` };
  if (pool.pfLinkHealth) {
    const pf: PciDevice | undefined = dev.pf ? inv.devices.find((d) => d.address === dev.pf) : dev;
    const link = pf?.netdevs[0];
    if (dev.pf && !pf) return { healthy: false, reason: `PF ${dev.pf} vanished` };
    if (link && (!link.carrier || link.operstate === 'down')) return { healthy: false, reason: `PF netdev ${link.name} has no carrier` };
  }
  if (dev.driver === 'vfio-pci') {
    if (!dev.iommuGroup || !dev.vfioNode) return { healthy: false, reason: `IOMMU group ${dev.iommuGroup ?? '(none)'} has no vfio node` };
    const bound = dev.iommuPeers.map((a) => inv.devices.find((d) => d.address === a)).filter((p) => p?.driver && p.driver !== 'vfio-pci');
    if (bound.length) return { healthy: false, reason: `IOMMU group ${dev.iommuGroup} not viable: ${bound.map((p) => `${p!.address} on ${p!.driver}`).join(', ')}` };
  }
  return { healthy: true };
}
