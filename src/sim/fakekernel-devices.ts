/**
 * The fake kernel's devices and drivers: PFs with their VFs (sriov_numvfs), PCI functions behind
 * switches, real stand-in netdevs, and driver binding as the kernel does it (probe, bind, unbind,
 * driver_override, new_id).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { formatPciAddress, parsePciAddress, routingId } from '../sriov/host.js';
import { FakeSysfs } from './fakekernel-sysfs.js';
import { type Device, type FakePfSpec, type Netdev, DEFAULT_DRIVERS, USERSPACE_DRIVERS, VF_DEVICE, errno, hex4, peerName } from './fakekernel-model.js';

export abstract class FakeDevices extends FakeSysfs {
  // ---- devices -------------------------------------------------------------------------------

  protected addPf(spec: FakePfSpec): void {
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
  protected addFunction(address: string, info: { vendor: string; device: string; class: string; numa: number; behindSwitch?: boolean }, parentDir?: string): Device {
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

  protected setNumVfs(pf: Device, value: string): void {
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

  protected vfsOf(pf: Device): Device[] {
    return Object.values(this.state.devices)
      .filter((d) => d.pf === pf.address)
      .sort((x, y) => x.vfIndex! - y.vfIndex!);
  }

  protected removeDevice(dev: Device): void {
    if (dev.driver) this.unbind(dev);
    this.setGroup(dev, undefined);
    rmSync(this.path(`sys/bus/pci/devices/${dev.address}`), { force: true });
    rmSync(this.path(dev.dir), { recursive: true, force: true });
    delete this.state.devices[dev.address];
  }

  // ---- drivers -------------------------------------------------------------------------------

  protected addDriver(name: string): void {
    const d = `sys/bus/pci/drivers/${name}`;
    this.mkdir(d);
    for (const f of ['bind', 'unbind', 'new_id', 'remove_id']) this.file(join(d, f), '');
  }

  protected driverWrite(driver: string, attr: string, value: string): void {
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

  protected matches(dev: Device, driver: string): boolean {
    if (dev.override) return dev.override === driver;
    return DEFAULT_DRIVERS[`${dev.vendor}:${dev.device}`] === driver;
  }

  protected probe(dev: Device): void {
    if (dev.driver) return;
    const driver = dev.override ?? DEFAULT_DRIVERS[`${dev.vendor}:${dev.device}`];
    if (!driver || !this.exists(`sys/bus/pci/drivers/${driver}`)) return; // stays unbound, as in the kernel
    this.bindChecked(dev, driver);
  }

  protected bindChecked(dev: Device, driver: string): void {
    if (driver === 'vfio-pci' && dev.iommuGroup === undefined) throw errno('EINVAL', `vfio-pci: ${dev.address} has no IOMMU group`);
    this.bind(dev, driver);
  }

  protected bind(dev: Device, driver: string): void {
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

  protected unbind(dev: Device): void {
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

  protected vfioNode(group: number): string {
    return this.state.iommu === 'noiommu' ? `dev/vfio/noiommu-${group}` : `dev/vfio/${group}`;
  }

  protected createRealNetdev(n: Netdev): void {
    if (!this.state.realNetdevs || existsSync(`/sys/class/net/${n.name}`)) return;
    // The fake kernel stands in for the kernel's driver here: iproute2 makes the stand-in link.
    execFileSync('ip', ['link', 'add', n.name, 'address', n.mac, 'mtu', String(n.mtu), 'type', 'veth', 'peer', 'name', peerName(n.name)], { stdio: 'ignore' });
    if (!(this.state.links ??= []).includes(n.name)) this.state.links.push(n.name);
  }

  protected deleteRealNetdev(name: string): void {
    if (!this.state.realNetdevs) return;
    try {
      execFileSync('ip', ['link', 'del', name], { stdio: 'ignore' });
    } catch {
      /* already gone (or inside a pod netns, where the pod's teardown removes it) */
    }
  }

  protected dev(address: string): Device {
    const dev = this.state.devices[address.toLowerCase()];
    if (!dev) throw errno('ENODEV', `no PCI device ${address}`);
    return dev;
  }
}
