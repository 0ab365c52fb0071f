/**
 * A fake kernel for SR-IOV: materialises a host (PCI topology, PFs, VFs, netdevs, IOMMU groups, RDMA
 * devices, /dev nodes, routes) as a directory with the kernel's sysfs layout: device directories only
 * under `sys/devices/pci<dom>:<bus>/…`, every other view a *relative* symlink. Writes to sysfs
 * attributes go through `write()` and behave as the kernel's do (`sriov_numvfs`, `driver_override`,
 * `unbind`, `bind`, `drivers_probe`, `new_id`). The state is kept in the root as JSON, so every
 * process pointed at the root (plexusctl, the device plugin, the sriov plugin) sees one kernel.
 */
import { execFileSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import type { VfInfo, VfSetting } from '../net/vf.js';
import { writeFileAtomic } from '../cni/cache.js';
import { basename, dirname, join, relative } from 'node:path';
import { HostRoot, type SysfsWriter, formatPciAddress, parsePciAddress, routingId } from '../sriov/host.js';

const STATE_FILE = '.plexus-fake-kernel.json';
const CALL_LOG = '.plexus-pf-calls.log';

/** Drivers the fake knows, by vendor:device (what the kernel's id tables would pick). */
const DEFAULT_DRIVERS: Record<string, string> = {
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
const VF_DEVICE: Record<string, string> = { '8086:158b': '154c', '8086:1572': '154c', '8086:1592': '1889', '15b3:1017': '1018', '15b3:101b': '101c' };
/** Drivers that bind to anything through driver_override (no netdev). */
const USERSPACE_DRIVERS = new Set(['vfio-pci', 'uio_pci_generic', 'igb_uio']);

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

interface Netdev {
  name: string;
  mac: string;
  mtu: number;
  /** Administratively up (host NICs and PFs are; VFs are not until someone uses them). */
  up: boolean;
  carrier: boolean;
  type: number;
}

interface Device {
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

interface State {
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
function peerName(name: string): string {
  return `${name.slice(0, 14)}p`;
}

function errno(code: string, message: string): Error {
  return Object.assign(new Error(`${code}: ${message}`), { code });
}

function hex4(text: string): string {
  return text.toLowerCase().replace(/^0x/, '').padStart(4, '0');
}

export class FakeKernel implements SysfsWriter {
  private constructor(
    readonly root: string,
    private state: State,
  ) {}

  /** Builds a simulated host in `root` (which must be empty or absent). */
  static create(root: string, spec: FakeHostSpec): FakeKernel {
    if (existsSync(root) && readdirSync(root).length) throw new Error(`${root} is not empty`);
    const k = new FakeKernel(root, {
      realNetdevs: spec.realNetdevs ?? false,
      iommu: spec.iommu ?? 'on',
      vfioModule: spec.vfioModule ?? true,
      devices: {},
      nextGroup: 10,
      nextRdma: 0,
      defaultRoutes: { v4: spec.defaultRoutes?.v4 ?? [], v6: spec.defaultRoutes?.v6 ?? [] },
    });
    for (const d of ['sys/bus/pci/devices', 'sys/bus/pci/drivers', 'sys/class/net', 'sys/class/infiniband', 'sys/kernel/iommu_groups', 'dev/vfio', 'dev/infiniband', 'dev/net', 'proc/net', 'proc/sys'])
      k.mkdir(d);
    k.file('sys/bus/pci/drivers_probe', '');
    k.file('sys/bus/pci/drivers_autoprobe', '1');
    k.file('proc/cmdline', spec.iommu === 'off' ? 'BOOT_IMAGE=/vmlinuz ro' : 'BOOT_IMAGE=/vmlinuz ro intel_iommu=on iommu=pt');
    k.file('dev/vhost-net', '');
    k.file('dev/net/tun', '');
    for (const drv of new Set([...Object.values(DEFAULT_DRIVERS), ...(k.state.vfioModule ? ['vfio-pci'] : [])])) k.addDriver(drv);
    if (k.state.vfioModule) k.file('dev/vfio/vfio', '');
    for (const nic of spec.nics ?? []) {
      const dev = k.addFunction(nic.address, { vendor: nic.vendor, device: nic.device, class: nic.class ?? '0x020000', numa: nic.numa ?? 0 });
      dev.netdevs = [k.netdev(nic.netdev, nic.address)];
      k.bind(dev, DEFAULT_DRIVERS[`${dev.vendor}:${dev.device}`] ?? 'igb');
    }
    try {
      for (const pf of spec.pfs ?? []) k.addPf(pf);
    } catch (err) {
      // A host that cannot be built leaves nothing: no directory, no real link.
      k.save();
      k.destroy();
      throw err;
    }
    k.writeRoutes();
    k.save();
    return k;
  }

  /** The fake kernel of a simulated host, or undefined when `root` is not one. */
  static open(root: string): FakeKernel | undefined {
    const file = join(root, STATE_FILE);
    if (!existsSync(file)) return undefined;
    return new FakeKernel(root, JSON.parse(readFileSync(file, 'utf8')) as State);
  }

  /** A HostRoot whose writes this kernel answers. */
  host(): HostRoot {
    return new HostRoot(this.root, this, () => this.refresh());
  }

  /** Simulates a netdev leaving for a pod's netns (`away`) or coming back. */
  moveNetdev(address: string, name: string, away: boolean): void {
    this.reload();
    const dev = this.dev(address);
    if (away) {
      if (!dev.netdevs.some((n) => n.name === name)) throw errno('ENODEV', `${name} is not on ${address}`);
      this.removeNetdevLinks(dev, name);
      dev.away.push(name);
    } else {
      dev.away = dev.away.filter((n) => n !== name);
      this.renderNetdev(
        dev,
        dev.netdevs.find((n) => n.name === name)!,
      );
    }
    this.save();
  }

  // ---- PF-side VF operations (what rtnetlink does on a real PF) -----------------------------

  private pfByNetdev(pfNetdev: string): Device {
    const pf = Object.values(this.state.devices).find((d) => d.sriov && d.netdevs.some((n) => n.name === pfNetdev));
    if (!pf) throw errno('ENODEV', `no PF netdev ${pfNetdev}`);
    return pf;
  }

  /** The PF's VF table (`ip link show <pf>` vfinfo_list); a pending MAC shows once its delay passed. */
  pfVfs(pfNetdev: string): VfInfo[] {
    this.reload();
    const pf = this.pfByNetdev(pfNetdev);
    const now = Date.now();
    return pf.sriov!.vfinfo.map((v) => {
      const pending = (v as VfInfo & { pendingMac?: { mac: string; at: number } }).pendingMac;
      const { pendingMac: _p, ...info } = v as VfInfo & { pendingMac?: unknown };
      return pending && pending.at <= now ? { ...info, mac: pending.mac } : info;
    });
  }

  /** One PF-side setting, recorded in the call log; refused as the PF's driver would. */
  pfSetVf(pfNetdev: string, vf: number, setting: VfSetting): void {
    this.reload();
    const pf = this.pfByNetdev(pfNetdev);
    appendFileSync(join(this.root, CALL_LOG), `${pfNetdev} vf ${vf} ${JSON.stringify(setting)}\n`);
    const entry = pf.sriov!.vfinfo[vf] as (VfInfo & { pendingMac?: { mac: string; at: number } }) | undefined;
    if (!entry) throw errno('EINVAL', `${pfNetdev} has no VF ${vf}`);
    const q = pf.sriov!.quirks;
    const refuse = (what: NonNullable<PfQuirks['unsupported']>[number]) => {
      if (q.unsupported?.includes(what)) throw errno('EOPNOTSUPP', `${pf.driver} does not support ${what}`);
    };
    switch (setting.kind) {
      case 'mac':
        if (q.macDelayMs) entry.pendingMac = { mac: setting.mac.toLowerCase(), at: Date.now() + q.macDelayMs };
        else entry.mac = setting.mac.toLowerCase();
        break;
      case 'vlan':
        if (setting.proto === '802.1ad') refuse('802.1ad');
        Object.assign(entry, { vlan: setting.vlan, qos: setting.qos, vlanProto: setting.proto });
        break;
      case 'spoofchk':
        refuse('spoofchk');
        entry.spoofchk = setting.on;
        break;
      case 'trust':
        refuse('trust');
        entry.trust = setting.on;
        break;
      case 'linkState':
        refuse('linkState');
        entry.linkState = setting.state;
        break;
      case 'rate':
        refuse('rate');
        Object.assign(entry, { minTxRate: setting.minTxRate, maxTxRate: setting.maxTxRate });
        break;
    }
    this.save();
  }

  /** devlink info's `fw.app.name` of a PF, if its driver has a DDP package loaded. */
  ddpProfile(pfAddress: string): string | undefined {
    this.reload();
    return this.state.devices[pfAddress]?.ddp;
  }

  /** Every PF-side call so far, one line each (`<pf> vf <n> <setting JSON>`). */
  pfCalls(): string[] {
    try {
      return readFileSync(join(this.root, CALL_LOG), 'utf8').split('\n').filter(Boolean);
    } catch {
      return [];
    }
  }

  setQuirks(pfNetdev: string, quirks: PfQuirks): void {
    this.reload();
    this.pfByNetdev(pfNetdev).sriov!.quirks = quirks;
    this.save();
  }

  /**
   * With real netdevs: a VF netdev that is not in the host netns (moved into a pod) is not under its
   * device's net/ either, as sysfs shows it; one that came back is listed again.
   */
  refresh(): void {
    this.reload();
    if (!this.state.realNetdevs) return;
    let changed = false;
    for (const dev of Object.values(this.state.devices)) {
      if (!dev.pf) continue;
      for (const n of dev.netdevs) {
        // A real VF netdev returns to the host when its pod netns is destroyed; a veth end dies
        // with its peer instead. Both ends gone = that netns was destroyed: the stand-in returns.
        if (!existsSync(`/sys/class/net/${n.name}`) && !existsSync(`/sys/class/net/${peerName(n.name)}`)) this.createRealNetdev(n);
        const inHost = existsSync(`/sys/class/net/${n.name}`);
        const away = dev.away.includes(n.name);
        if (inHost === !away) continue;
        changed = true;
        if (inHost) {
          dev.away = dev.away.filter((x) => x !== n.name);
          this.renderNetdev(dev, n);
        } else {
          this.removeNetdevLinks(dev, n.name);
          dev.away.push(n.name);
        }
      }
    }
    if (changed) this.save();
  }

  /** Removes the host: its real veth ends, then the directory. */
  destroy(): void {
    this.reload();
    for (const dev of Object.values(this.state.devices)) if (dev.pf) for (const n of dev.netdevs) this.deleteRealNetdev(n.name);
    for (const name of this.state.links ?? []) this.deleteRealNetdev(name);
    rmSync(this.root, { recursive: true, force: true });
  }

  private createRealNetdev(n: Netdev): void {
    if (!this.state.realNetdevs || existsSync(`/sys/class/net/${n.name}`)) return;
    // The fake kernel stands in for the kernel's driver here: iproute2 makes the stand-in link.
    execFileSync('ip', ['link', 'add', n.name, 'address', n.mac, 'mtu', String(n.mtu), 'type', 'veth', 'peer', 'name', peerName(n.name)], { stdio: 'ignore' });
    if (!(this.state.links ??= []).includes(n.name)) this.state.links.push(n.name);
  }

  private deleteRealNetdev(name: string): void {
    if (!this.state.realNetdevs) return;
    try {
      execFileSync('ip', ['link', 'del', name], { stdio: 'ignore' });
    } catch {
      /* already gone (or inside a pod netns, where the pod's teardown removes it) */
    }
  }

  /** Carrier of a netdev (e.g. a PF losing its link). */
  setCarrier(address: string, carrier: boolean): void {
    this.reload();
    const dev = this.dev(address);
    for (const n of dev.netdevs) {
      n.carrier = carrier;
      if (!dev.away.includes(n.name)) this.renderNetdev(dev, n);
    }
    this.save();
  }

  /** The next write to `rel` fails with `code` (e.g. drivers_probe → EIO), changing nothing. */
  injectFault(rel: string, code: string): void {
    this.reload();
    (this.state.faults ??= {})[rel] = code;
    this.save();
  }

  write(rel: string, value: string): void {
    this.reload();
    const fault = this.state.faults?.[rel];
    if (fault) {
      delete this.state.faults![rel];
      this.save();
      throw errno(fault, `injected fault on ${rel}`);
    }
    const v = value.trim();
    const parts = rel.replace(/^\/+/, '').split('/');
    const attr = parts[parts.length - 1]!;
    if (rel === 'sys/bus/pci/drivers_probe') this.probe(this.dev(v));
    else if (parts[0] === 'sys' && parts[1] === 'bus' && parts[2] === 'pci' && parts[3] === 'drivers' && parts.length === 6) this.driverWrite(parts[4]!, attr, v);
    else {
      const dev = this.deviceAt(parts.slice(0, -1).join('/'), attr === 'unbind' ? 2 : 1);
      if (!dev) throw errno('ENOENT', `no such attribute ${rel}`);
      if (attr === 'sriov_numvfs') this.setNumVfs(dev, v);
      else if (attr === 'driver_override') {
        dev.override = v === '' ? undefined : v;
        this.renderAttrs(dev);
      } else if (attr === 'sriov_drivers_autoprobe' && dev.sriov) {
        dev.sriov.autoprobe = v === '1';
        this.renderAttrs(dev);
      } else if (attr === 'unbind' && parts[parts.length - 2] === 'driver') {
        if (!dev.driver) throw errno('ENODEV', `${dev.address} has no driver`);
        this.unbind(dev);
      } else throw errno('EACCES', `${rel} is read-only here`);
    }
    this.save();
  }

  // ---- devices -------------------------------------------------------------------------------

  private addPf(spec: FakePfSpec): void {
    const vendor = hex4(spec.vendor);
    const device = hex4(spec.device);
    const key = `${vendor}:${device}`;
    const pf = this.addFunction(spec.address, { vendor, device, class: '0x020000', numa: spec.numa ?? 0, behindSwitch: spec.behindSwitch ?? false });
    const total = spec.totalVfs ?? 8;
    const devfn = routingId(spec.address) & 0xff;
    pf.sriov = {
      total,
      num: 0,
      offset: spec.vfOffset ?? 16 + devfn * (total - 1),
      stride: spec.vfStride ?? 1,
      vfDevice: VF_DEVICE[key] ?? device,
      autoprobe: true,
      naming: spec.vfNaming ?? 'v',
      netdev: spec.netdev ?? `ens${parseInt(spec.address.slice(5, 7), 16)}f${spec.address.slice(-1)}`,
      vfinfo: [],
      quirks: spec.quirks ?? {},
    };
    pf.netdevs = [this.netdev(pf.sriov.netdev, pf.address, spec.carrier ?? true)];
    if (spec.realPfNetdev) this.createRealNetdev(pf.netdevs[0]!);
    if (spec.rdma ?? vendor === '15b3') pf.rdma = `mlx5_${this.state.nextRdma++}`;
    if (spec.pkey) pf.pkey = spec.pkey;
    if (spec.ddpProfile) pf.ddp = spec.ddpProfile;
    this.bind(pf, DEFAULT_DRIVERS[key] ?? 'i40e');
    if (spec.numVfs) this.setNumVfs(pf, String(spec.numVfs));
    const vfs = this.vfsOf(pf);
    for (const pair of spec.sharedIommu ?? []) {
      const group = this.state.iommu === 'off' ? undefined : this.state.nextGroup++;
      for (const i of pair) if (vfs[i]) this.setGroup(vfs[i]!, group);
    }
    for (const i of spec.inPod ?? []) {
      const vf = vfs[i];
      if (vf?.netdevs[0]) {
        this.removeNetdevLinks(vf, vf.netdevs[0].name);
        vf.away.push(vf.netdevs[0].name);
      }
    }
    for (const i of spec.vfio ?? []) {
      const vf = vfs[i];
      if (!vf) continue;
      vf.override = 'vfio-pci';
      this.renderAttrs(vf);
      if (vf.driver) this.unbind(vf);
      this.probe(vf);
    }
    if (pf.rdma) for (const vf of vfs) if (!vf.rdma && vf.driver === 'mlx5_core') this.addRdma(vf);
    for (let n = 1; n <= (spec.subfunctions ?? 0); n++) {
      // An auxiliary device is a child of its PCI function, bound on the auxiliary bus.
      const name = `mlx5_core.sf.${n}`;
      const d = join(pf.dir, name);
      const netdev = `${pf.sriov!.netdev}s${n}`;
      this.mkdir(join(d, 'net', netdev));
      this.file(join(d, 'sfnum'), String(n));
      for (const [f, c] of Object.entries({ address: `02:5f:00:00:00:${n.toString(16).padStart(2, '0')}`, type: '1', operstate: 'down', mtu: '1500' })) this.file(join(d, 'net', netdev, f), c);
      this.link(join(d, 'net', netdev, 'device'), d);
      this.mkdir('sys/bus/auxiliary/drivers/mlx5_core.sf');
      this.link(join(d, 'driver'), 'sys/bus/auxiliary/drivers/mlx5_core.sf');
      this.link(`sys/bus/auxiliary/devices/${name}`, d);
      if (pf.rdma) {
        this.mkdir(join(d, 'infiniband', `mlx5_${this.state.nextRdma++}`));
      }
    }
    for (const [index, kind] of Object.entries(spec.vdpa ?? {})) {
      const vf = vfs[Number(index)];
      if (!vf) continue;
      // A vDPA device is a child of the VF, bound on the vdpa bus.
      const n = Number(index);
      const d = join(vf.dir, `vdpa${n}`);
      this.mkdir(d);
      const driver = `${kind}_vdpa`;
      this.mkdir(`sys/bus/vdpa/drivers/${driver}`);
      this.link(join(d, 'driver'), `sys/bus/vdpa/drivers/${driver}`);
      this.link(`sys/bus/vdpa/devices/vdpa${n}`, d);
      if (kind === 'vhost') {
        this.mkdir(join(d, `vhost-vdpa-${n}`));
        this.file(`dev/vhost-vdpa-${n}`, '');
      }
    }
  }

  /** A PCI function in the topology: root bus → root port [→ switch up → switch down] → function. */
  private addFunction(address: string, info: { vendor: string; device: string; class: string; numa: number; behindSwitch?: boolean }, parentDir?: string): Device {
    const a = parsePciAddress(address);
    if (!a) throw new Error(`bad PCI address ${address}`);
    const addr = formatPciAddress(a.domain, routingId(address));
    let dir = parentDir;
    if (!dir) {
      const dom = addr.slice(0, 4);
      // The root port sits on bus (nic bus - 1, or - 3 behind a switch), like a typical server.
      const depth = info.behindSwitch ? 3 : 1;
      const rootBus = Math.max(0, a.bus - depth);
      const hostBridge = `sys/devices/pci${dom}:${rootBus.toString(16).padStart(2, '0')}`;
      let parent = hostBridge;
      const chain = [formatPciAddress(a.domain, rootBus << 8)];
      if (info.behindSwitch) chain.push(formatPciAddress(a.domain, (rootBus + 1) << 8), formatPciAddress(a.domain, (rootBus + 2) << 8));
      for (const bridge of chain) {
        parent = join(parent, bridge);
        if (!this.state.devices[bridge]) {
          const b: Device = { address: bridge, vendor: '8086', device: '2030', class: '0x060400', dir: parent, numa: info.numa, netdevs: [], away: [] };
          this.state.devices[bridge] = b;
          this.renderDevice(b);
          this.bind(b, 'pcieport');
        }
      }
      dir = join(parent, addr);
    }
    const dev: Device = { address: addr, vendor: info.vendor, device: info.device, class: info.class, dir, numa: info.numa, netdevs: [], away: [] };
    this.state.devices[addr] = dev;
    this.renderDevice(dev);
    if (this.state.iommu !== 'off') this.setGroup(dev, this.state.nextGroup++);
    return dev;
  }

  private setNumVfs(pf: Device, value: string): void {
    if (!pf.sriov) throw errno('ENOENT', `${pf.address} is not SR-IOV capable`);
    if (!/^\d+$/.test(value)) throw errno('EINVAL', `sriov_numvfs: "${value}" is not a number`);
    const n = Number(value);
    if (n > pf.sriov.total) throw errno('ERANGE', `${n} VFs requested, sriov_totalvfs is ${pf.sriov.total}`);
    if (n !== 0 && pf.sriov.num !== 0) throw errno('EBUSY', `${pf.sriov.num} VFs already enabled; write 0 first`);
    if (n === 0) {
      for (const vf of this.vfsOf(pf)) this.removeDevice(vf);
      for (let i = 0; i < pf.sriov.num; i++) rmSync(this.path(join(pf.dir, `virtfn${i}`)), { force: true });
    }
    const domain = parsePciAddress(pf.address)!.domain;
    const addresses = Array.from({ length: n }, (_, i) => formatPciAddress(domain, routingId(pf.address) + pf.sriov!.offset + i * pf.sriov!.stride));
    // Two functions at one address would silently replace each other (and leak the first's link).
    const taken = addresses.find((a) => this.state.devices[a]);
    if (taken) throw errno('EBUSY', `VF address ${taken} of ${pf.address} is taken by another function: give the PFs disjoint vfOffset/vfStride`);
    for (let i = 0; i < n; i++) {
      const addr = addresses[i]!;
      const vf = this.addFunction(addr, { vendor: pf.vendor, device: pf.sriov.vfDevice, class: '0x020000', numa: pf.numa }, join(dirname(pf.dir), addr));
      vf.pf = pf.address;
      vf.vfIndex = i;
      this.link(join(vf.dir, 'physfn'), pf.dir);
      this.link(join(pf.dir, `virtfn${i}`), vf.dir);
      if (pf.sriov.autoprobe) this.probe(vf);
    }
    pf.sriov.num = n;
    // A fresh VF table, as the driver reports it after enabling VFs.
    pf.sriov.vfinfo = Array.from({ length: n }, (_, vf) => ({
      vf,
      mac: '00:00:00:00:00:00',
      vlan: 0,
      qos: 0,
      vlanProto: '802.1Q' as const,
      spoofchk: true,
      trust: false,
      linkState: 'auto' as const,
      minTxRate: 0,
      maxTxRate: 0,
    }));
    this.renderAttrs(pf);
  }

  private vfsOf(pf: Device): Device[] {
    return Object.values(this.state.devices)
      .filter((d) => d.pf === pf.address)
      .sort((x, y) => x.vfIndex! - y.vfIndex!);
  }

  private removeDevice(dev: Device): void {
    if (dev.driver) this.unbind(dev);
    this.setGroup(dev, undefined);
    rmSync(this.path(`sys/bus/pci/devices/${dev.address}`), { force: true });
    rmSync(this.path(dev.dir), { recursive: true, force: true });
    delete this.state.devices[dev.address];
  }

  // ---- drivers -------------------------------------------------------------------------------

  private addDriver(name: string): void {
    const d = `sys/bus/pci/drivers/${name}`;
    this.mkdir(d);
    for (const f of ['bind', 'unbind', 'new_id', 'remove_id']) this.file(join(d, f), '');
  }

  private driverWrite(driver: string, attr: string, value: string): void {
    if (!this.exists(`sys/bus/pci/drivers/${driver}`)) throw errno('ENOENT', `no driver ${driver}`);
    if (attr === 'unbind') {
      const dev = this.dev(value);
      if (dev.driver !== driver) throw errno('ENODEV', `${value} is not bound to ${driver}`);
      this.unbind(dev);
    } else if (attr === 'bind') {
      const dev = this.dev(value);
      if (dev.driver) throw errno('EBUSY', `${value} is bound to ${dev.driver}`);
      if (!this.matches(dev, driver)) throw errno('ENODEV', `${driver} does not drive ${dev.vendor}:${dev.device}`);
      this.bind(dev, driver);
    } else if (attr === 'new_id') {
      // Binds every unbound device with that vendor:device: the reason not to use it.
      const [vendor, device] = value.split(/\s+/).map(hex4);
      for (const dev of Object.values(this.state.devices)) if (!dev.driver && dev.vendor === vendor && dev.device === device) this.bindChecked(dev, driver);
    } else throw errno('EACCES', `${attr} is not writable`);
  }

  private matches(dev: Device, driver: string): boolean {
    if (dev.override) return dev.override === driver;
    return DEFAULT_DRIVERS[`${dev.vendor}:${dev.device}`] === driver;
  }

  private probe(dev: Device): void {
    if (dev.driver) return;
    const driver = dev.override ?? DEFAULT_DRIVERS[`${dev.vendor}:${dev.device}`];
    if (!driver || !this.exists(`sys/bus/pci/drivers/${driver}`)) return; // stays unbound, as in the kernel
    this.bindChecked(dev, driver);
  }

  private bindChecked(dev: Device, driver: string): void {
    if (driver === 'vfio-pci' && dev.iommuGroup === undefined) throw errno('EINVAL', `vfio-pci: ${dev.address} has no IOMMU group`);
    this.bind(dev, driver);
  }

  private bind(dev: Device, driver: string): void {
    if (!this.exists(`sys/bus/pci/drivers/${driver}`)) this.addDriver(driver);
    dev.driver = driver;
    this.file(join(dev.dir, 'uevent'), this.uevent(dev));
    this.link(join(dev.dir, 'driver'), `sys/bus/pci/drivers/${driver}`);
    this.link(`sys/bus/pci/drivers/${driver}/${dev.address}`, dev.dir);
    if (driver === 'vfio-pci' && dev.iommuGroup !== undefined) this.file(this.vfioNode(dev.iommuGroup), '');
    if (USERSPACE_DRIVERS.has(driver) || driver === 'pcieport') return;
    if (dev.pf) {
      const pf = this.state.devices[dev.pf]!;
      if (!dev.netdevs.length) dev.netdevs = [this.netdev(this.vfName(pf, dev), dev.address, true, false)];
      for (const n of dev.netdevs) this.createRealNetdev(n);
      if (pf.rdma && driver === 'mlx5_core' && !dev.rdma) this.addRdma(dev);
    }
    for (const n of dev.netdevs) if (!dev.away.includes(n.name)) this.renderNetdev(dev, n);
    if (dev.rdma) this.renderRdma(dev);
  }

  private unbind(dev: Device): void {
    const driver = dev.driver!;
    rmSync(this.path(join(dev.dir, 'driver')), { force: true });
    rmSync(this.path(`sys/bus/pci/drivers/${driver}/${dev.address}`), { force: true });
    for (const n of dev.netdevs) this.removeNetdevLinks(dev, n.name);
    if (dev.pf) for (const n of dev.netdevs) this.deleteRealNetdev(n.name);
    if (dev.pf) {
      dev.netdevs = [];
      dev.away = [];
    }
    if (dev.rdma) {
      rmSync(this.path(join(dev.dir, 'infiniband')), { recursive: true, force: true });
      rmSync(this.path(`sys/class/infiniband/${dev.rdma}`), { force: true });
    }
    dev.driver = undefined;
    this.file(join(dev.dir, 'uevent'), this.uevent(dev));
    if (driver === 'vfio-pci' && dev.iommuGroup !== undefined) {
      const others = Object.values(this.state.devices).some((d) => d !== dev && d.iommuGroup === dev.iommuGroup && d.driver === 'vfio-pci');
      if (!others) rmSync(this.path(this.vfioNode(dev.iommuGroup)), { force: true });
    }
  }

  private vfioNode(group: number): string {
    return this.state.iommu === 'noiommu' ? `dev/vfio/noiommu-${group}` : `dev/vfio/${group}`;
  }

  // ---- rendering -----------------------------------------------------------------------------

  private renderDevice(dev: Device): void {
    this.mkdir(dev.dir);
    this.renderAttrs(dev);
    this.link(`sys/bus/pci/devices/${dev.address}`, dev.dir);
  }

  private renderAttrs(dev: Device): void {
    const [bc, sc, pi] = [dev.class.slice(2, 4), dev.class.slice(4, 6), dev.class.slice(6, 8)];
    const files: Record<string, string> = {
      vendor: `0x${dev.vendor}`,
      device: `0x${dev.device}`,
      subsystem_vendor: `0x${dev.vendor}`,
      subsystem_device: '0x0000',
      class: dev.class,
      revision: '0x02',
      modalias: `pci:v0000${dev.vendor.toUpperCase()}d0000${dev.device.toUpperCase()}sv0000${dev.vendor.toUpperCase()}sd00000000bc${bc.toUpperCase()}sc${sc.toUpperCase()}i${pi.toUpperCase()}`,
      numa_node: String(dev.numa),
      driver_override: dev.override ?? '(null)',
      uevent: this.uevent(dev),
    };
    if (dev.sriov) {
      Object.assign(files, {
        sriov_totalvfs: String(dev.sriov.total),
        sriov_numvfs: String(dev.sriov.num),
        sriov_offset: String(dev.sriov.offset),
        sriov_stride: String(dev.sriov.stride),
        sriov_vf_device: dev.sriov.vfDevice,
        sriov_drivers_autoprobe: dev.sriov.autoprobe ? '1' : '0',
      });
    }
    for (const [name, content] of Object.entries(files)) this.file(join(dev.dir, name), content);
  }

  /** As the kernel prints it: DRIVER only while bound, the class without leading zeros. */
  private uevent(dev: Device): string {
    const id = `${dev.vendor.toUpperCase()}:${dev.device.toUpperCase()}`;
    return [
      ...(dev.driver ? [`DRIVER=${dev.driver}`] : []),
      `PCI_CLASS=${parseInt(dev.class, 16).toString(16).toUpperCase()}`,
      `PCI_ID=${id}`,
      `PCI_SUBSYS_ID=${dev.vendor.toUpperCase()}:0000`,
      `PCI_SLOT_NAME=${dev.address}`,
    ].join('\n');
  }

  private netdev(name: string, address: string, carrier = true, up = true): Netdev {
    const rid = routingId(address);
    const mac = `02:00:${(rid >> 8).toString(16).padStart(2, '0')}:${(rid & 0xff).toString(16).padStart(2, '0')}:00:01`;
    return { name, mac, mtu: 1500, up, carrier, type: 1 };
  }

  private vfName(pf: Device, vf: Device): string {
    const base = pf.sriov!.netdev;
    if (pf.sriov!.naming === 'v') return `${base}v${vf.vfIndex}`;
    const a = parsePciAddress(vf.address)!;
    return `${base.replace(/f\d+$/, '')}s${a.device}f${a.fn}`;
  }

  private renderNetdev(dev: Device, n: Netdev): void {
    const d = join(dev.dir, 'net', n.name);
    this.mkdir(d);
    const files: Record<string, string> = {
      address: n.mac,
      mtu: String(n.mtu),
      type: String(n.type),
      operstate: n.up && n.carrier ? 'up' : 'down',
      carrier: n.up && n.carrier ? '1' : '0',
      dev_port: '0',
      ifindex: String(1000 + (routingId(dev.address) & 0xfff)),
    };
    for (const [f, c] of Object.entries(files)) this.file(join(d, f), c);
    this.link(join(d, 'device'), dev.dir);
    this.link(`sys/class/net/${n.name}`, d);
  }

  private removeNetdevLinks(dev: Device, name: string): void {
    rmSync(this.path(join(dev.dir, 'net', name)), { recursive: true, force: true });
    rmSync(this.path(`sys/class/net/${name}`), { force: true });
  }

  private addRdma(dev: Device): void {
    dev.rdma = `mlx5_${this.state.nextRdma++}`;
    this.renderRdma(dev);
  }

  private renderRdma(dev: Device): void {
    const d = join(dev.dir, 'infiniband', dev.rdma!);
    this.mkdir(d);
    const pf = dev.pf ? this.state.devices[dev.pf] : dev;
    this.file(join(d, 'ports/1/pkeys/0'), pf?.pkey ?? '0xffff');
    this.link(`sys/class/infiniband/${dev.rdma}`, d);
    const n = dev.rdma!.replace(/^\D+/, '');
    for (const node of [`uverbs${n}`, `umad${n}`, `issm${n}`, 'rdma_cm']) this.file(`dev/infiniband/${node}`, '');
  }

  private setGroup(dev: Device, group: number | undefined): void {
    if (dev.iommuGroup !== undefined) {
      rmSync(this.path(`sys/kernel/iommu_groups/${dev.iommuGroup}/devices/${dev.address}`), { force: true });
      rmSync(this.path(join(dev.dir, 'iommu_group')), { force: true });
    }
    dev.iommuGroup = group;
    if (group === undefined) return;
    const g = `sys/kernel/iommu_groups/${group}`;
    this.mkdir(`${g}/devices`);
    this.file(`${g}/type`, 'DMA');
    if (this.state.iommu === 'noiommu') this.file(`${g}/name`, 'vfio-noiommu');
    this.link(`${g}/devices/${dev.address}`, dev.dir);
    this.link(join(dev.dir, 'iommu_group'), g);
  }

  private writeRoutes(): void {
    const v4 = ['Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT'];
    for (const dev of this.state.defaultRoutes.v4) v4.push(`${dev}\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0`);
    this.file('proc/net/route', v4.join('\n'));
    const v6 = this.state.defaultRoutes.v6.map((dev) => `${'0'.repeat(32)} 00 ${'0'.repeat(32)} 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 ${dev.padStart(8)}`);
    this.file('proc/net/ipv6_route', v6.join('\n'));
  }

  // ---- files ---------------------------------------------------------------------------------

  private dev(address: string): Device {
    const dev = this.state.devices[address.toLowerCase()];
    if (!dev) throw errno('ENODEV', `no PCI device ${address}`);
    return dev;
  }

  /** The device whose directory (or a view of it) `rel` is, `up` levels above the attribute. */
  private deviceAt(rel: string, up: number): Device | undefined {
    const parts = rel.split('/');
    const base = up === 2 ? parts.slice(0, -1).join('/') : rel;
    const real = this.host().resolveLink(base) ?? base;
    return Object.values(this.state.devices).find((d) => d.dir === real || `sys/bus/pci/devices/${d.address}` === base);
  }

  private path(rel: string): string {
    return join(this.root, rel);
  }

  private exists(rel: string): boolean {
    return existsSync(this.path(rel));
  }

  private mkdir(rel: string): void {
    mkdirSync(this.path(rel), { recursive: true });
  }

  private file(rel: string, content: string): void {
    this.mkdir(dirname(rel));
    writeFileSync(this.path(rel), `${content}\n`);
  }

  /**
   * A relative symlink as kernfs writes it: up from the link's directory to an ancestor of the
   * target's *parent*, then down by name (so `net/<if>/device` is `../../../<dev>`, not `../..`).
   * The tree can be copied anywhere.
   */
  private link(rel: string, targetRel: string): void {
    this.mkdir(dirname(rel));
    rmSync(this.path(rel), { force: true });
    const up = relative(dirname(this.path(rel)), dirname(this.path(targetRel)));
    symlinkSync(join(up, basename(targetRel)), this.path(rel));
  }

  private reload(): void {
    const file = join(this.root, STATE_FILE);
    if (existsSync(file)) this.state = JSON.parse(readFileSync(file, 'utf8')) as State;
  }

  private save(): void {
    // Temp + rename: a process killed mid-write (tests SIGKILL plugins) must not leave a torn state.
    writeFileAtomic(join(this.root, STATE_FILE), JSON.stringify(this.state), { durable: false });
  }
}
