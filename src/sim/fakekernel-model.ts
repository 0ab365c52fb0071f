/**
 * The fake kernel's model: what a simulated host is made from (the specs), the state it keeps in its
 * root as JSON, the drivers and device IDs it knows, and the errno errors it answers with.
 */
import type { VfInfo } from '../net/vf.js';

export const STATE_FILE = '.plexus-fake-kernel.json';
export const CALL_LOG = '.plexus-pf-calls.log';

/** Drivers the fake knows, by vendor:device (what the kernel's id tables would pick). */
export const DEFAULT_DRIVERS: Record<string, string> = {
  '8086:158b': 'i40e', // XXV710
  '8086:1572': 'i40e', // X710
  '8086:154c': 'iavf', // X710/XXV710 VF
  '8086:1592': 'ice', // E810-C
  '8086:1889': 'iavf', // E810 VF
  '15b3:1017': 'mlx5_core', // ConnectX-5
  '15b3:1018': 'mlx5_core', // ConnectX-5 VF
  '15b3:101b': 'mlx5_core', // ConnectX-6
  '15b3:101c': 'mlx5_core', // ConnectX-6 VF
  '8086:1521': 'igb', // I350 (management NICs)
};
export const VF_DEVICE: Record<string, string> = { '8086:158b': '154c', '8086:1572': '154c', '8086:1592': '1889', '15b3:1017': '1018', '15b3:101b': '101c' };
/** Drivers that bind to anything through driver_override (no netdev). */
export const USERSPACE_DRIVERS = new Set(['vfio-pci', 'uio_pci_generic', 'igb_uio']);

export interface FakePfSpec {
  address: string;
  vendor: string;
  device: string;
  totalVfs?: number;
  numVfs?: number;
  netdev?: string;
  numa?: number;
  /** A PCIe switch (upstream + downstream port) between the root port and the NIC. */
  behindSwitch?: boolean;
  /** VF netdev names `<pf>v<i>` (default) or slot style `<pf-prefix>s<dev>f<fn>`. */
  vfNaming?: 'v' | 'slot';
  /** VF indexes already bound to vfio-pci. */
  vfio?: number[];
  /** VF indexes whose netdev is inside a pod (bound, but `net/` is empty here). */
  inPod?: number[];
  /** VF index pairs that share one IOMMU group (no ACS between them). */
  sharedIommu?: number[][];
  /** RDMA devices (mlx5_N) on the PF and its VFs. */
  rdma?: boolean;
  /** InfiniBand default pkey of the RDMA devices' port 1 (default 0xffff). */
  pkey?: string;
  /** The running DDP package name devlink reports for the PF (Intel 800/700 series). */
  ddpProfile?: string;
  /** Sub-functions on the PF: auxiliary devices `mlx5_core.sf.<n>` with a netdev `<pf netdev>s<n>` each. */
  subfunctions?: number;
  /** vDPA devices on VFs, by VF index: bound to vhost_vdpa (with /dev/vhost-vdpa-N) or virtio_vdpa. */
  vdpa?: Record<number, 'vhost' | 'virtio'>;
  carrier?: boolean;
  quirks?: PfQuirks;
  /**
   * First VF's routing-ID offset and stride (sriov_offset / sriov_stride). Default: 16 + devfn ×
   * (totalVfs − 1) and 1, so PFs on one bus get disjoint VF ranges (fn 0: 02.0…, fn 1 with 8 VFs: 03.0…).
   */
  vfOffset?: number;
  vfStride?: number;
  /** With realNetdevs: the PF netdev is a real link too (a veth end), for tools that look it up. */
  realPfNetdev?: boolean;
}

export interface FakeNicSpec {
  address: string;
  vendor: string;
  device: string;
  netdev: string;
  numa?: number;
  /** PCI class, default 0x020000 (Ethernet). */
  class?: string;
}

/** Driver behaviour of a PF's VF table (what real drivers do differently). */
export interface PfQuirks {
  /** An admin MAC set through the PF shows up this many ms later (iavf applies it asynchronously). */
  macDelayMs?: number;
  /** Settings the driver refuses with EOPNOTSUPP. */
  unsupported?: ('linkState' | 'trust' | 'spoofchk' | 'rate' | '802.1ad')[];
}

export interface FakeHostSpec {
  /**
   * VF netdevs are real veth ends in the host netns (named as the VF netdev, peer `<name>p`), so the
   * sriov plugin moves real links into real pod netns. Off: netdevs exist in sysfs only.
   */
  realNetdevs?: boolean;
  /** on (default); off: no IOMMU groups at all; noiommu: groups named vfio-noiommu. */
  iommu?: 'on' | 'off' | 'noiommu';
  /** vfio-pci module loaded (default true). */
  vfioModule?: boolean;
  pfs?: FakePfSpec[];
  nics?: FakeNicSpec[];
  /** Netdevs holding a default route. */
  defaultRoutes?: { v4?: string[]; v6?: string[] };
}

export interface Netdev {
  name: string;
  mac: string;
  mtu: number;
  /** Administratively up (host NICs and PFs are; VFs are not until someone uses them). */
  up: boolean;
  carrier: boolean;
  type: number;
}

export interface Device {
  address: string;
  vendor: string;
  device: string;
  class: string;
  /** Directory of the device, relative to the root. */
  dir: string;
  numa: number;
  driver?: string;
  override?: string;
  iommuGroup?: number;
  netdevs: Netdev[];
  /** Netdevs that exist but sit in another netns (not shown under net/). */
  away: string[];
  rdma?: string;
  pkey?: string;
  ddp?: string;
  pf?: string;
  vfIndex?: number;
  sriov?: { total: number; num: number; offset: number; stride: number; vfDevice: string; autoprobe: boolean; naming: 'v' | 'slot'; netdev: string; vfinfo: VfInfo[]; quirks: PfQuirks };
}

export interface State {
  realNetdevs?: boolean;
  iommu: 'on' | 'off' | 'noiommu';
  vfioModule: boolean;
  devices: Record<string, Device>;
  nextGroup: number;
  nextRdma: number;
  defaultRoutes: { v4: string[]; v6: string[] };
  /** Writes that fail once with the given errno (test fault injection). */
  faults?: Record<string, string>;
  /** Every real link this host made, so that destroy removes each one whatever became of its device. */
  links?: string[];
}

/** The host-side peer of a VF stand-in veth. */
export function peerName(name: string): string {
  return `${name.slice(0, 14)}p`;
}

export function errno(code: string, message: string): Error {
  return Object.assign(new Error(`${code}: ${message}`), { code });
}

export function hex4(text: string): string {
  return text.toLowerCase().replace(/^0x/, '').padStart(4, '0');
}
