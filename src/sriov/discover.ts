/**
 * PCI discovery from sysfs under a host root: every network (class 0x02) and accelerator (0x12)
 * function with its PF/VF relation, driver, NUMA node, IOMMU group, netdevs, RDMA and device nodes,
 * plus the default routes from the root's procfs. Each device is read on its own: one unreadable
 * device is reported with its error and never hides the others (unlike ghw's all-or-nothing).
 */
import { FakeKernel } from './fakekernel.js';
import { HOST_ROOT_ENV, HostRoot } from './host.js';

export interface NetdevInfo {
  name: string;
  mac: string;
  operstate: string;
  carrier: boolean;
  mtu: number;
  /** `ether`, `infiniband`, or the ARPHRD number. */
  linkType: string;
}

export interface PciDevice {
  address: string;
  vendor: string;
  device: string;
  /** Class as 6 hex digits, e.g. `020000`. */
  class: string;
  driver?: string;
  driverOverride?: string;
  numaNode: number;
  iommuGroup?: string;
  /** Other functions in the same IOMMU group. */
  iommuPeers: string[];
  /** The host path of the group's vfio node when it exists (`/dev/vfio/<g>` or `noiommu-<g>`). */
  vfioNode?: string;
  acpiIndex?: string;
  /** PF fields: present when the device is SR-IOV capable. */
  sriov?: { totalVfs: number; numVfs: number; offset?: number; stride?: number };
  /** VF fields. */
  pf?: string;
  vfIndex?: number;
  netdevs: NetdevInfo[];
  rdma: string[];
  uio?: string;
  /** Netdevs of the PF (for a VF) or its own (for anything else). */
  pfNetdevs: string[];
  /** Why the device could not be read completely. */
  error?: string;
}

export interface HostInventory {
  devices: PciDevice[];
  defaultRouteNetdevs: { v4: string[]; v6: string[] };
  iommuEnabled: boolean;
}

/** The host for SR-IOV work: the simulated one when PLEXUS_SRIOV_HOST_ROOT names one, else `root`. */
export function openHost(root: string = process.env[HOST_ROOT_ENV] || '/'): HostRoot {
  return FakeKernel.open(root)?.host() ?? new HostRoot(root);
}

const ARPHRD: Record<string, string> = { '1': 'ether', '32': 'infiniband', '772': 'loopback' };

function hex(text: string | undefined, width: number): string | undefined {
  if (text === undefined || !/^(0x)?[0-9a-fA-F]+$/.test(text)) return undefined;
  return text.toLowerCase().replace(/^0x/, '').padStart(width, '0');
}

function netdevInfo(host: HostRoot, dir: string, name: string): NetdevInfo {
  const d = `${dir}/net/${name}`;
  const type = host.read(`${d}/type`) ?? '';
  return {
    name,
    mac: host.read(`${d}/address`) ?? '',
    operstate: host.read(`${d}/operstate`) ?? 'unknown',
    carrier: host.read(`${d}/carrier`) === '1',
    mtu: Number(host.read(`${d}/mtu`) ?? 0),
    linkType: ARPHRD[type] ?? type,
  };
}

function readDevice(host: HostRoot, address: string): PciDevice {
  const dir = `sys/bus/pci/devices/${address}`;
  const dev: PciDevice = { address, vendor: '', device: '', class: '', numaNode: -1, iommuPeers: [], netdevs: [], rdma: [], pfNetdevs: [] };
  const vendor = hex(host.read(`${dir}/vendor`), 4);
  const device = hex(host.read(`${dir}/device`), 4);
  const cls = hex(host.read(`${dir}/class`), 6);
  if (!vendor || !device || !cls) {
    dev.error = `unreadable vendor/device/class under ${dir}`;
    return dev;
  }
  Object.assign(dev, { vendor, device, class: cls });
  const driver = host.linkName(`${dir}/driver`);
  if (driver) dev.driver = driver;
  const override = host.read(`${dir}/driver_override`);
  if (override && override !== '(null)') dev.driverOverride = override;
  const numa = Number(host.read(`${dir}/numa_node`) ?? '-1');
  dev.numaNode = Number.isInteger(numa) ? numa : -1;
  const acpi = host.read(`${dir}/acpi_index`);
  if (acpi) dev.acpiIndex = acpi;
  const group = host.linkName(`${dir}/iommu_group`);
  if (group) {
    dev.iommuGroup = group;
    // Bridges in a group do not take part in DMA ownership: only endpoints are peers.
    dev.iommuPeers = host.list(`sys/kernel/iommu_groups/${group}/devices`).filter((a) => a !== address && !(host.read(`sys/bus/pci/devices/${a}/class`) ?? '').startsWith('0x0604'));
    const noiommu = host.read(`sys/kernel/iommu_groups/${group}/name`) === 'vfio-noiommu';
    const node = noiommu ? `dev/vfio/noiommu-${group}` : `dev/vfio/${group}`;
    if (host.exists(node)) dev.vfioNode = `/${node}`;
  }
  const total = host.read(`${dir}/sriov_totalvfs`);
  if (total !== undefined) {
    dev.sriov = { totalVfs: Number(total), numVfs: Number(host.read(`${dir}/sriov_numvfs`) ?? 0) };
    const offset = host.read(`${dir}/sriov_offset`);
    const stride = host.read(`${dir}/sriov_stride`);
    if (offset !== undefined) dev.sriov.offset = Number(offset);
    if (stride !== undefined) dev.sriov.stride = Number(stride);
  }
  const pf = host.linkName(`${dir}/physfn`);
  if (pf) {
    dev.pf = pf;
    // The VF index is N such that the PF's virtfnN is this device: never inferred from names.
    for (const entry of host.list(`${dir}/physfn`)) {
      const m = /^virtfn(\d+)$/.exec(entry);
      if (m && host.linkName(`${dir}/physfn/${entry}`) === address) dev.vfIndex = Number(m[1]);
    }
    dev.pfNetdevs = host.list(`${dir}/physfn/net`);
  }
  dev.netdevs = host.list(`${dir}/net`).map((n) => netdevInfo(host, dir, n));
  if (!pf) dev.pfNetdevs = dev.netdevs.map((n) => n.name);
  dev.rdma = host.list(`${dir}/infiniband`);
  const uio = host.list(`${dir}/uio`)[0];
  if (uio) dev.uio = `/dev/${uio}`;
  return dev;
}

/** Netdevs with a default route: IPv4 from proc/net/route, IPv6 from proc/net/ipv6_route. */
export function defaultRouteNetdevs(host: HostRoot): { v4: string[]; v6: string[] } {
  const v4 = (host.read('proc/net/route') ?? '')
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length >= 8 && f[1] === '00000000' && f[7] === '00000000')
    .map((f) => f[0]!);
  const v6 = (host.read('proc/net/ipv6_route') ?? '')
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length >= 10 && /^0{32}$/.test(f[0]!) && f[1] === '00')
    .map((f) => f[9]!);
  return { v4: [...new Set(v4)], v6: [...new Set(v6.filter((d) => d !== 'lo'))] };
}

export function discover(host: HostRoot): HostInventory {
  const devices: PciDevice[] = [];
  for (const address of host.list('sys/bus/pci/devices')) {
    let dev: PciDevice;
    try {
      dev = readDevice(host, address);
    } catch (err) {
      dev = { address, vendor: '', device: '', class: '', numaNode: -1, iommuPeers: [], netdevs: [], rdma: [], pfNetdevs: [], error: (err as Error).message };
    }
    if (dev.error || dev.class.startsWith('02') || dev.class.startsWith('12')) devices.push(dev);
  }
  return { devices, defaultRouteNetdevs: defaultRouteNetdevs(host), iommuEnabled: host.list('sys/kernel/iommu_groups').length > 0 };
}
