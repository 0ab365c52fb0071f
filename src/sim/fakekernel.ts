/**
 * A fake kernel for SR-IOV: materialises a host (PCI topology, PFs, VFs, netdevs, IOMMU groups, RDMA
 * devices, /dev nodes, routes) as a directory with the kernel's sysfs layout: device directories only
 * under `sys/devices/pci<dom>:<bus>/…`, every other view a *relative* symlink. Writes to sysfs
 * attributes go through `write()` and behave as the kernel's do (`sriov_numvfs`, `driver_override`,
 * `unbind`, `bind`, `drivers_probe`, `new_id`). The state is kept in the root as JSON, so every
 * process pointed at the root (plexusctl, the device plugin, the sriov plugin) sees one kernel.
 */
import { appendFileSync, existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { VfInfo, VfSetting } from '../net/vf.js';
import { HostRoot, type SysfsWriter } from '../sriov/host.js';
import { FakeDevices } from './fakekernel-devices.js';
import { type Device, type FakeHostSpec, type PfQuirks, type State, CALL_LOG, DEFAULT_DRIVERS, STATE_FILE, errno, peerName } from './fakekernel-model.js';

export type { FakePfSpec, FakeNicSpec, PfQuirks, FakeHostSpec } from './fakekernel-model.js';

export class FakeKernel extends FakeDevices implements SysfsWriter {
  private constructor(root: string, state: State) {
    super(root, state);
  }

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

  /** The device whose directory (or a view of it) `rel` is, `up` levels above the attribute. */
  private deviceAt(rel: string, up: number): Device | undefined {
    const parts = rel.split('/');
    const base = up === 2 ? parts.slice(0, -1).join('/') : rel;
    const real = this.host().resolveLink(base) ?? base;
    return Object.values(this.state.devices).find((d) => d.dir === real || `sys/bus/pci/devices/${d.address}` === base);
  }
}
