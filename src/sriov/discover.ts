/**
 * PCI discovery from sysfs under a host root: every network (class 0x02) and accelerator (0x12)
 * function with its PF/VF relation, driver, NUMA node, IOMMU group, netdevs, RDMA and device nodes,
 * plus the default routes from the root's procfs. Each device is read on its own: one unreadable
 * device is reported with its error and never hides the others (unlike ghw's all-or-nothing).
 */
import { type HostRoot, routingId } from './host.js';

export interface NetdevInfo {
  name: string;
  /**
   * MAC, operstate and carrier are read for PFs and plain NICs (their carrier is a health input);
   * left out for VFs to keep a scan of hundreds of VFs within its budget: whoever needs a VF
   * netdev's state reads it then (vfio preflight: operstate; `sriov vfs`: the PF's VF table).
   */
  mac?: string;
  operstate?: string;
  /** operstate is up (reading `carrier` of a down link fails with EINVAL). */
  carrier?: boolean;
  /** Link speed in Mb/s while the link is up (`speed` reads -1 or fails without one). */
  speedMbps?: number;
  /** `ether`, `infiniband`, or the ARPHRD number; a VF's is its PF's (same port, same link layer). */
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
  /** The PF's running DDP package name (addDdpProfiles; only read when a selector asks). */
  ddpProfile?: string;
  /** InfiniBand default partition key (index 0) of the RDMA device's port 1, e.g. `0xffff`. */
  pkey?: string;
  /**
   * An auxiliary device (e.g. a mlx5 sub-function `mlx5_core.sf.2`): `address` is its name (the
   * device ID kubelet sees), vendor/device/class/NUMA are its parent PCI function's, `pf` the parent.
   */
  aux?: { type: string; parent: string };
  /** A vDPA device on this function: its name, driver (vhost_vdpa / virtio_vdpa) and vhost char device. */
  vdpa?: { name: string; driver?: string; vhostDev?: string };
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

const ARPHRD: Record<string, string> = { '1': 'ether', '32': 'infiniband', '772': 'loopback' };

function hex(text: string | undefined, width: number): string | undefined {
  if (text === undefined || !/^(0x)?[0-9a-fA-F]+$/.test(text)) return undefined;
  return text.toLowerCase().replace(/^0x/, '').padStart(width, '0');
}

function linkType(host: HostRoot, netdevDir: string): string {
  const type = host.read(`${netdevDir}/type`) ?? '';
  return ARPHRD[type] ?? type;
}

function netdevInfo(host: HostRoot, dir: string, name: string): NetdevInfo {
  const operstate = host.read(`${dir}/net/${name}/operstate`) ?? 'unknown';
  const mac = host.read(`${dir}/net/${name}/address`);
  const speed = Number(host.read(`${dir}/net/${name}/speed`));
  return {
    name,
    ...(mac ? { mac } : {}),
    operstate,
    carrier: operstate === 'up',
    ...(Number.isInteger(speed) && speed > 0 ? { speedMbps: speed } : {}),
    linkType: linkType(host, `${dir}/net/${name}`),
  };
}

/** Facts of one PF shared by its VFs, read once per discovery. */
interface PfFacts {
  netdevs: string[];
  /** Link type of the PF's first netdev (its VFs share it). */
  linkType?: string;
  offset?: number;
  stride?: number;
  /** VF address → index, from a full virtfn* scan (only when the routing-id arithmetic does not check out). */
  scanned?: Map<string, number>;
}

/** Per-discovery caches: a scan of 8 PFs × 64 VFs must not read each PF 64 times. */
interface ScanContext {
  pfs: Map<string, PfFacts>;
}

function pfFacts(host: HostRoot, ctx: ScanContext, pf: string): PfFacts {
  let facts = ctx.pfs.get(pf);
  if (!facts) {
    const dir = `sys/bus/pci/devices/${pf}`;
    facts = { netdevs: host.list(`${dir}/net`) };
    if (facts.netdevs[0]) facts.linkType = linkType(host, `${dir}/net/${facts.netdevs[0]}`);
    const offset = host.read(`${dir}/sriov_offset`);
    const stride = host.read(`${dir}/sriov_stride`);
    if (offset !== undefined && stride !== undefined) Object.assign(facts, { offset: Number(offset), stride: Number(stride) });
    ctx.pfs.set(pf, facts);
  }
  return facts;
}

/**
 * The VF index is N such that the PF's virtfnN is this device, never inferred from names. The
 * routing-id arithmetic (rid = pf rid + offset + N·stride) names the candidate; one readlink checks it.
 */
function vfIndex(host: HostRoot, ctx: ScanContext, pf: string, address: string): number | undefined {
  const facts = pfFacts(host, ctx, pf);
  const pfDir = `sys/bus/pci/devices/${pf}`;
  if (facts.offset !== undefined && facts.stride) {
    const n = (routingId(address) - routingId(pf) - facts.offset) / facts.stride;
    if (Number.isInteger(n) && n >= 0 && host.linkName(`${pfDir}/virtfn${n}`) === address) return n;
  }
  if (!facts.scanned) {
    facts.scanned = new Map();
    for (const entry of host.list(pfDir)) {
      const m = /^virtfn(\d+)$/.exec(entry);
      const target = m ? host.linkName(`${pfDir}/${entry}`) : undefined;
      if (m && target) facts.scanned.set(target, Number(m[1]));
    }
  }
  return facts.scanned.get(address);
}

function readDevice(host: HostRoot, ctx: ScanContext, address: string): PciDevice {
  const dir = `sys/bus/pci/devices/${address}`;
  const dev: PciDevice = { address, vendor: '', device: '', class: '', numaNode: -1, iommuPeers: [], netdevs: [], rdma: [], pfNetdevs: [] };
  // One readdir says which optional entries exist, instead of a failing syscall per absent one.
  const entries = new Set(host.list(dir));
  // uevent carries vendor, device, class and driver in one read; the separate files are the fallback.
  const uevent = new Map((host.read(`${dir}/uevent`) ?? '').split('\n').map((l) => l.split('=') as [string, string]));
  const [ueVendor, ueDevice] = (uevent.get('PCI_ID') ?? '').split(':');
  const vendor = hex(ueVendor, 4) ?? hex(host.read(`${dir}/vendor`), 4);
  const device = hex(ueDevice, 4) ?? hex(host.read(`${dir}/device`), 4);
  const cls = hex(uevent.get('PCI_CLASS'), 6) ?? hex(host.read(`${dir}/class`), 6);
  if (!vendor || !device || !cls) {
    dev.error = `unreadable vendor/device/class under ${dir}`;
    return dev;
  }
  Object.assign(dev, { vendor, device, class: cls });
  const group = entries.has('iommu_group') ? host.linkName(`${dir}/iommu_group`) : undefined;
  if (group) dev.iommuGroup = group;
  if (!cls.startsWith('02') && !cls.startsWith('12')) return dev;
  const driver = uevent.has('PCI_ID') ? uevent.get('DRIVER') : entries.has('driver') ? host.linkName(`${dir}/driver`) : undefined;
  if (driver) dev.driver = driver;
  if (!driver || driver === 'vfio-pci') {
    const override = host.read(`${dir}/driver_override`);
    if (override && override !== '(null)') dev.driverOverride = override;
  }
  const numa = Number(host.read(`${dir}/numa_node`) ?? '-1');
  dev.numaNode = Number.isInteger(numa) ? numa : -1;
  if (entries.has('acpi_index')) {
    const acpi = host.read(`${dir}/acpi_index`);
    if (acpi) dev.acpiIndex = acpi;
  }
  if (group && driver === 'vfio-pci') {
    const noiommu = host.read(`sys/kernel/iommu_groups/${group}/name`) === 'vfio-noiommu';
    const node = noiommu ? `dev/vfio/noiommu-${group}` : `dev/vfio/${group}`;
    if (host.exists(node)) dev.vfioNode = `/${node}`;
  }
  if (entries.has('sriov_totalvfs')) {
    dev.sriov = { totalVfs: Number(host.read(`${dir}/sriov_totalvfs`)), numVfs: Number(host.read(`${dir}/sriov_numvfs`) ?? 0) };
    const facts = pfFacts(host, ctx, address);
    if (facts.offset !== undefined) dev.sriov.offset = facts.offset;
    if (facts.stride !== undefined) dev.sriov.stride = facts.stride;
  }
  const pf = entries.has('physfn') ? host.linkName(`${dir}/physfn`) : undefined;
  if (pf) {
    dev.pf = pf;
    const index = vfIndex(host, ctx, pf, address);
    if (index !== undefined) dev.vfIndex = index;
    dev.pfNetdevs = pfFacts(host, ctx, pf).netdevs;
  }
  if (entries.has('net')) {
    const names = host.list(`${dir}/net`);
    const pfType = pf ? pfFacts(host, ctx, pf).linkType : undefined;
    dev.netdevs = pf && pfType ? names.map((name) => ({ name, linkType: pfType })) : names.map((n) => netdevInfo(host, dir, n));
  }
  if (!pf) dev.pfNetdevs = dev.netdevs.map((n) => n.name);
  if (entries.has('infiniband')) {
    dev.rdma = host.list(`${dir}/infiniband`);
    const pkey = dev.rdma[0] ? host.read(`${dir}/infiniband/${dev.rdma[0]}/ports/1/pkeys/0`) : undefined;
    if (pkey) dev.pkey = pkey.toLowerCase();
  }
  const vdpa = [...entries].find((e) => /^vdpa\d+$/.test(e));
  if (vdpa) {
    dev.vdpa = { name: vdpa };
    const driver = host.linkName(`${dir}/${vdpa}/driver`);
    if (driver) dev.vdpa.driver = driver;
    const vhost = host.list(`${dir}/${vdpa}`).find((e) => /^vhost-vdpa-\d+$/.test(e));
    if (vhost) dev.vdpa.vhostDev = `/dev/${vhost}`;
  }
  if (entries.has('uio')) {
    const uio = host.list(`${dir}/uio`)[0];
    if (uio) dev.uio = `/dev/${uio}`;
  }
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

/** `<driver>.<type>.<id>` → type (`sf`). */
const AUX_NAME = /^[^.]+\.([^.]+)\.\d+$/;

/** An auxiliary device from /sys/bus/auxiliary/devices: its own driver, netdevs and RDMA; the rest from its parent. */
function readAux(host: HostRoot, name: string, parents: Map<string, PciDevice>): PciDevice | undefined {
  const type = AUX_NAME.exec(name)?.[1];
  const real = host.resolveLink(`sys/bus/auxiliary/devices/${name}`);
  const parentAddr = real?.split('/').at(-2);
  const parent = parentAddr ? parents.get(parentAddr) : undefined;
  if (!type || !real || !parent) return undefined;
  const dir = `sys/bus/auxiliary/devices/${name}`;
  const dev: PciDevice = {
    address: name,
    vendor: parent.vendor,
    device: parent.device,
    class: parent.class,
    numaNode: parent.numaNode,
    iommuPeers: [],
    netdevs: [],
    rdma: [],
    pfNetdevs: parent.netdevs.map((n) => n.name),
    pf: parent.address,
    aux: { type, parent: parent.address },
  };
  const driver = host.linkName(`${dir}/driver`);
  if (driver) dev.driver = driver;
  dev.netdevs = host.list(`${dir}/net`).map((n) => netdevInfo(host, dir, n));
  dev.rdma = host.list(`${dir}/infiniband`);
  return dev;
}

/** Fresh facts for some devices only (Allocate re-reads what it hands out, not the whole host). */
export function rediscover(host: HostRoot, inv: HostInventory, addresses: string[]): HostInventory {
  const ctx: ScanContext = { pfs: new Map() };
  const parents = new Map(inv.devices.filter((d) => !d.aux).map((d) => [d.address, d]));
  const read = (a: string) => (AUX_NAME.test(a) ? readAux(host, a, parents) : host.exists(`sys/bus/pci/devices/${a}`) ? readDevice(host, ctx, a) : undefined);
  const fresh = new Map(addresses.map((a) => [a, read(a)]));
  const devices = inv.devices.flatMap((d) => {
    if (!fresh.has(d.address)) return [d];
    const now = fresh.get(d.address);
    // Group membership does not change under a driver; the full scan computes it.
    return now ? [{ ...now, iommuPeers: d.iommuPeers }] : [];
  });
  return { ...inv, devices };
}

export function discover(host: HostRoot): HostInventory {
  const devices: PciDevice[] = [];
  const all: PciDevice[] = [];
  const ctx: ScanContext = { pfs: new Map() };
  for (const address of host.list('sys/bus/pci/devices')) {
    let dev: PciDevice;
    try {
      dev = readDevice(host, ctx, address);
    } catch (err) {
      dev = { address, vendor: '', device: '', class: '', numaNode: -1, iommuPeers: [], netdevs: [], rdma: [], pfNetdevs: [], error: (err as Error).message };
    }
    all.push(dev);
  }
  // IOMMU group peers from every function's group link (one readlink each, no per-group readdir).
  // Bridges in a group take no part in DMA ownership: only endpoints are peers.
  const groups = new Map<string, string[]>();
  for (const d of all) if (d.iommuGroup && !d.class.startsWith('0604')) groups.set(d.iommuGroup, [...(groups.get(d.iommuGroup) ?? []), d.address]);
  for (const dev of all) {
    if (dev.iommuGroup) dev.iommuPeers = (groups.get(dev.iommuGroup) ?? []).filter((a) => a !== dev.address);
    if (dev.error || dev.class.startsWith('02') || dev.class.startsWith('12')) devices.push(dev);
  }
  const parents = new Map(devices.map((d) => [d.address, d]));
  for (const name of host.list('sys/bus/auxiliary/devices')) {
    const aux = readAux(host, name, parents);
    if (aux) devices.push(aux);
  }
  return { devices, defaultRouteNetdevs: defaultRouteNetdevs(host), iommuEnabled: host.list('sys/kernel/iommu_groups').length > 0 };
}
