/**
 * Managed vfio-pci binding: preflight (module, IOMMU, group viable, netdev idle: down, no address
 * and no route, as the kernel reports them), then
 * driver_override → unbind → drivers_probe, verified; any failure rolls back to the original driver.
 * Release clears the override and hands the device back to its default driver. Never mlx5.
 */
import type { HostRoot } from '../sriov/host.js';
import type { HostInventory, PciDevice } from '../sriov/discover.js';

export class BindError extends Error {
  constructor(
    readonly address: string,
    message: string,
  ) {
    super(`${address}: ${message}`);
    this.name = 'BindError';
  }
}

const BIFURCATED = new Set(['mlx5_core', 'mlx4_core']);

/** What holds each netdev of the host netns: its addresses (but IPv6 link-local) and main-table routes. */
export type NetdevUse = ReadonlyMap<string, string[]>;

const RT_SCOPE_LINK = 253;
const RT_TABLE_MAIN = 254;

/**
 * Asked of the kernel (rtnetlink, this process's netns: the device plugin runs in the host's): procfs
 * shows no IPv4 route for a link that is down although its address is there, and a simulated host's
 * procfs never sees the real links standing in for its VF netdevs.
 */
export async function hostNetdevUse(): Promise<NetdevUse> {
  const { NetHandle } = await import('../net/netlink.js');
  const h = await NetHandle.open();
  try {
    const names = new Map((await h.links()).map((l) => [l.index, l.name]));
    const use = new Map<string, string[]>();
    const add = (index: number | undefined, what: string): void => {
      const name = index === undefined ? undefined : names.get(index);
      if (name) use.set(name, [...(use.get(name) ?? []), what]);
    };
    for (const a of await h.allAddresses()) if (!(a.family === 6 && a.scope === RT_SCOPE_LINK)) add(a.index, a.address);
    for (const family of [4, 6] as const) for (const r of await h.routes(family)) if (r.table === RT_TABLE_MAIN) add(r.ifindex, `route ${r.dst}`);
    return use;
  } finally {
    h.close();
  }
}

/**
 * Why `dev` must not be bound to vfio-pci, or undefined when it may. `alongside`: devices bound in
 * the same pass (the other members of a shared IOMMU group go together, as one unit).
 */
export function preflight(host: HostRoot, dev: PciDevice, inv: HostInventory, use: NetdevUse, alongside: ReadonlySet<string> = new Set()): string | undefined {
  if (dev.driver && BIFURCATED.has(dev.driver)) return `${dev.driver} is a bifurcated driver: DPDK uses its RDMA devices, never vfio-pci`;
  if (!host.exists('sys/bus/pci/drivers/vfio-pci')) return 'the vfio-pci module is not loaded (modprobe vfio-pci)';
  if (!dev.iommuGroup) return 'no IOMMU group: the IOMMU is off (intel_iommu=on / amd_iommu=on) or the device is not behind one';
  const peers = dev.iommuPeers.map((a) => inv.devices.find((d) => d.address === a) ?? { address: a, driver: host.linkName(`sys/bus/pci/devices/${a}/driver`) });
  const busy = peers.filter((p) => p.driver && p.driver !== 'vfio-pci' && !alongside.has(p.address));
  if (busy.length) return `IOMMU group ${dev.iommuGroup} is shared with ${busy.map((p) => `${p.address} (${p.driver})`).join(', ')}: not viable`;
  for (const n of dev.netdevs) {
    const operstate = n.operstate ?? host.read(`sys/bus/pci/devices/${dev.address}/net/${n.name}/operstate`);
    if (operstate === 'up') return `netdev ${n.name} is up: in use on the host`;
    const held = use.get(n.name);
    if (held?.length) return `netdev ${n.name} has addresses or routes (${held.join(', ')}): in use on the host`;
  }
  return undefined;
}

/** Binds `dev` to vfio-pci; on any failure restores the original driver and throws BindError. */
export function bindVfio(host: HostRoot, dev: PciDevice, inv: HostInventory, use: NetdevUse, alongside: ReadonlySet<string> = new Set()): void {
  if (dev.driver === 'vfio-pci') return;
  const refused = preflight(host, dev, inv, use, alongside);
  if (refused) throw new BindError(dev.address, refused);
  const dir = `sys/bus/pci/devices/${dev.address}`;
  const original = dev.driver;
  try {
    host.write(`${dir}/driver_override`, 'vfio-pci');
    if (original) host.write(`${dir}/driver/unbind`, dev.address);
    host.write('sys/bus/pci/drivers_probe', dev.address);
    const now = host.linkName(`${dir}/driver`);
    if (now !== 'vfio-pci') throw new Error(`after drivers_probe the driver is ${now ?? 'none'}`);
  } catch (err) {
    rollback(host, dev.address, original);
    throw new BindError(dev.address, `binding to vfio-pci failed, restored ${original ?? 'no driver'}: ${(err as Error).message}`);
  }
}

function rollback(host: HostRoot, address: string, original: string | undefined): void {
  const dir = `sys/bus/pci/devices/${address}`;
  const attempt = (fn: () => void) => {
    try {
      fn();
    } catch {
      /* best effort: each step on its own */
    }
  };
  attempt(() => host.write(`${dir}/driver_override`, '\n'));
  const now = host.linkName(`${dir}/driver`);
  if (now && now !== original) attempt(() => host.write(`${dir}/driver/unbind`, address));
  if (original && host.linkName(`${dir}/driver`) !== original) attempt(() => host.write('sys/bus/pci/drivers_probe', address));
}

/** Releases a device this plugin bound: override cleared, unbound from vfio-pci, default driver probed. */
export function releaseVfio(host: HostRoot, address: string): void {
  const dir = `sys/bus/pci/devices/${address}`;
  host.write(`${dir}/driver_override`, '\n');
  if (host.linkName(`${dir}/driver`) === 'vfio-pci') host.write('sys/bus/pci/drivers/vfio-pci/unbind', address);
  host.write('sys/bus/pci/drivers_probe', address);
}
