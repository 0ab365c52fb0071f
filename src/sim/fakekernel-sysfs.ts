/**
 * How the fake kernel's sysfs looks: each device, netdev, RDMA device and IOMMU group rendered as the
 * kernel shows it (attributes, relative symlinks as kernfs writes them), and the state file it keeps.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, relative } from 'node:path';
import { writeFileAtomic } from '../cni/cache.js';
import { parsePciAddress, routingId } from '../sriov/host.js';
import { type Device, type Netdev, STATE_FILE, type State } from './fakekernel-model.js';

export abstract class FakeSysfs {
  protected constructor(
    readonly root: string,
    protected state: State,
  ) {}

  // ---- rendering -----------------------------------------------------------------------------

  protected renderDevice(dev: Device): void {
    this.mkdir(dev.dir);
    this.renderAttrs(dev);
    this.link(`sys/bus/pci/devices/${dev.address}`, dev.dir);
  }

  protected renderAttrs(dev: Device): void {
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
  protected uevent(dev: Device): string {
    const id = `${dev.vendor.toUpperCase()}:${dev.device.toUpperCase()}`;
    return [
      ...(dev.driver ? [`DRIVER=${dev.driver}`] : []),
      `PCI_CLASS=${parseInt(dev.class, 16).toString(16).toUpperCase()}`,
      `PCI_ID=${id}`,
      `PCI_SUBSYS_ID=${dev.vendor.toUpperCase()}:0000`,
      `PCI_SLOT_NAME=${dev.address}`,
    ].join('\n');
  }

  protected netdev(name: string, address: string, carrier = true, up = true): Netdev {
    const rid = routingId(address);
    const mac = `02:00:${(rid >> 8).toString(16).padStart(2, '0')}:${(rid & 0xff).toString(16).padStart(2, '0')}:00:01`;
    return { name, mac, mtu: 1500, up, carrier, type: 1 };
  }

  protected vfName(pf: Device, vf: Device): string {
    const base = pf.sriov!.netdev;
    if (pf.sriov!.naming === 'v') return `${base}v${vf.vfIndex}`;
    const a = parsePciAddress(vf.address)!;
    return `${base.replace(/f\d+$/, '')}s${a.device}f${a.fn}`;
  }

  protected renderNetdev(dev: Device, n: Netdev): void {
    const d = join(dev.dir, 'net', n.name);
    this.mkdir(d);
    const files: Record<string, string> = {
      address: n.mac,
      mtu: String(n.mtu),
      type: String(n.type),
      operstate: n.up && n.carrier ? 'up' : 'down',
      carrier: n.up && n.carrier ? '1' : '0',
      // Mb/s while the link is up, -1 without a link (what most NIC drivers report).
      speed: n.up && n.carrier ? '25000' : '-1',
      dev_port: '0',
      ifindex: String(1000 + (routingId(dev.address) & 0xfff)),
    };
    for (const [f, c] of Object.entries(files)) this.file(join(d, f), c);
    this.link(join(d, 'device'), dev.dir);
    this.link(`sys/class/net/${n.name}`, d);
  }

  protected removeNetdevLinks(dev: Device, name: string): void {
    rmSync(this.path(join(dev.dir, 'net', name)), { recursive: true, force: true });
    rmSync(this.path(`sys/class/net/${name}`), { force: true });
  }

  protected addRdma(dev: Device): void {
    dev.rdma = `mlx5_${this.state.nextRdma++}`;
    this.renderRdma(dev);
  }

  protected renderRdma(dev: Device): void {
    const d = join(dev.dir, 'infiniband', dev.rdma!);
    this.mkdir(d);
    const pf = dev.pf ? this.state.devices[dev.pf] : dev;
    this.file(join(d, 'ports/1/pkeys/0'), pf?.pkey ?? '0xffff');
    this.link(`sys/class/infiniband/${dev.rdma}`, d);
    const n = dev.rdma!.replace(/^\D+/, '');
    for (const node of [`uverbs${n}`, `umad${n}`, `issm${n}`, 'rdma_cm']) this.file(`dev/infiniband/${node}`, '');
  }

  protected setGroup(dev: Device, group: number | undefined): void {
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

  protected writeRoutes(): void {
    const v4 = ['Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT'];
    for (const dev of this.state.defaultRoutes.v4) v4.push(`${dev}\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0`);
    this.file('proc/net/route', v4.join('\n'));
    const v6 = this.state.defaultRoutes.v6.map((dev) => `${'0'.repeat(32)} 00 ${'0'.repeat(32)} 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 ${dev.padStart(8)}`);
    this.file('proc/net/ipv6_route', v6.join('\n'));
  }

  // ---- files ---------------------------------------------------------------------------------

  protected path(rel: string): string {
    return join(this.root, rel);
  }

  protected exists(rel: string): boolean {
    return existsSync(this.path(rel));
  }

  protected mkdir(rel: string): void {
    mkdirSync(this.path(rel), { recursive: true });
  }

  protected file(rel: string, content: string): void {
    this.mkdir(dirname(rel));
    writeFileSync(this.path(rel), `${content}\n`);
  }

  /**
   * A relative symlink as kernfs writes it: up from the link's directory to an ancestor of the
   * target's *parent*, then down by name (so `net/<if>/device` is `../../../<dev>`, not `../..`).
   * The tree can be copied anywhere.
   */
  protected link(rel: string, targetRel: string): void {
    this.mkdir(dirname(rel));
    rmSync(this.path(rel), { force: true });
    const up = relative(dirname(this.path(rel)), dirname(this.path(targetRel)));
    symlinkSync(join(up, basename(targetRel)), this.path(rel));
  }

  protected reload(): void {
    const file = join(this.root, STATE_FILE);
    if (existsSync(file)) this.state = JSON.parse(readFileSync(file, 'utf8')) as State;
  }

  protected save(): void {
    // Temp + rename: a process killed mid-write (tests SIGKILL plugins) must not leave a torn state.
    writeFileAtomic(join(this.root, STATE_FILE), JSON.stringify(this.state), { durable: false });
  }
}
