/**
 * What a container gets for its devices (env, device nodes, device-info files), and which devices
 * to prefer when kubelet asks. Env names and `_INFO` keys are sriov-network-device-plugin's, so
 * workloads written for it keep working.
 */
import { chmodSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { dpDeviceInfoPath } from '../meta/deviceinfo.js';
import type { PciDevice } from '../sriov/discover.js';
import { type PoolConfig, resourceEnvName, resourceFullName } from './config.js';
import type { ContainerAllocateResponse } from './grpc.js';

/** Go's encoding/json writes map keys sorted: the `_INFO` JSON is byte-compatible. */
function sortedJson(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortedJson);
  if (value && typeof value === 'object')
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((k) => [k, sortedJson((value as Record<string, unknown>)[k])]),
    );
  return value;
}

function rdmaNodes(dev: PciDevice): string[] {
  return dev.rdma.length
    ? dev.rdma
        .flatMap((r) => {
          const n = r.replace(/^\D+/, '');
          return [`/dev/infiniband/uverbs${n}`, `/dev/infiniband/umad${n}`, `/dev/infiniband/issm${n}`];
        })
        .concat('/dev/infiniband/rdma_cm')
    : [];
}

/** Per-device info providers, as the `_INFO` env carries them. */
export function deviceInfoProviders(dev: PciDevice, pool: PoolConfig, needVhostNet: boolean): Record<string, Record<string, string>> {
  const info: Record<string, Record<string, string>> = { generic: { deviceID: dev.address } };
  if (dev.driver === 'vfio-pci' && dev.iommuGroup) info.vfio = { mount: '/dev/vfio/vfio', 'dev-mount': `/dev/vfio/${dev.iommuGroup}` };
  if (dev.uio) info.uio = { mount: dev.uio };
  if (dev.rdma.length) {
    const n = dev.rdma[0]!.replace(/^\D+/, '');
    info.rdma = { rdma_dev: dev.rdma[0]!, uverbs: `/dev/infiniband/uverbs${n}`, umad: `/dev/infiniband/umad${n}`, issm: `/dev/infiniband/issm${n}`, rdma_cm: '/dev/infiniband/rdma_cm' };
  }
  if (needVhostNet) info.vhost = { 'net-mount': '/dev/vhost-net', 'tun-mount': '/dev/net/tun' };
  if (dev.vdpa?.driver === 'vhost_vdpa' && dev.vdpa.vhostDev) info.vdpa = { mount: dev.vdpa.vhostDev };
  const extra = { ...(pool.additionalInfo['*'] ?? {}), ...(pool.additionalInfo[dev.address] ?? {}) };
  if (Object.keys(extra).length) info.extra = extra;
  return info;
}

/** The response for one container: env (DP's name, plus a shell-safe one when DP's is not), device nodes. */
export function containerResponse(pool: PoolConfig, devices: PciDevice[], needVhostNet: boolean): ContainerAllocateResponse {
  const ids = devices.map((d) => d.address);
  const info = Object.fromEntries(devices.map((d) => [d.address, deviceInfoProviders(d, pool, needVhostNet)]));
  const envs: Record<string, string> = {};
  for (const name of new Set([resourceEnvName(pool), resourceEnvName(pool, true)])) {
    envs[name] = ids.join(',');
    envs[`${name}_INFO`] = JSON.stringify(sortedJson(info));
  }
  const specs = new Map<string, { container_path: string; host_path: string; permissions: string }>();
  const add = (container: string, host = container) => specs.set(host, { container_path: container, host_path: host, permissions: 'rw' });
  for (const d of devices) {
    if (d.driver === 'vfio-pci' && d.iommuGroup) {
      add('/dev/vfio/vfio');
      // noiommu: the host node is noiommu-<g>, the container still sees /dev/vfio/<g>.
      add(`/dev/vfio/${d.iommuGroup}`, d.vfioNode?.endsWith(`noiommu-${d.iommuGroup}`) ? `/dev/vfio/noiommu-${d.iommuGroup}` : `/dev/vfio/${d.iommuGroup}`);
    }
    if (d.uio) add(d.uio);
    if (d.vdpa?.driver === 'vhost_vdpa' && d.vdpa.vhostDev) add(d.vdpa.vhostDev);
    for (const node of rdmaNodes(d)) add(node);
  }
  if (needVhostNet) {
    add('/dev/vhost-net');
    add('/dev/net/tun');
  }
  return { envs, mounts: [], devices: [...specs.values()], annotations: {} };
}

/** CDI kind of a pool's devices: `<prefix>/net-pci`, as sriov-network-device-plugin names it. */
export function cdiKind(pool: PoolConfig): string {
  return `${pool.resourcePrefix}/net-pci`;
}

/**
 * CDI instead of device nodes: the response names CDI devices (the `cdi_devices` field and the
 * `cdi.k8s.io/` annotation that containerd 1.6/1.7 read). The annotation key carries the pool name, so
 * two pools of one prefix in one container do not collide (they do in sriov-network-device-plugin).
 */
export function withCdi(response: ContainerAllocateResponse, pool: PoolConfig, ids: string[]): ContainerAllocateResponse {
  const names = ids.map((id) => `${cdiKind(pool)}=${id}`);
  const key = `cdi.k8s.io/plexus_${`${pool.resourcePrefix}_${pool.resourceName}`.replace(/[^A-Za-z0-9_.-]/g, '_')}`.slice(0, 63 + 'cdi.k8s.io/'.length);
  return { ...response, devices: [], annotations: { ...response.annotations, [key]: names.join(',') }, cdi_devices: names.map((name) => ({ name })) };
}

/** The pool's CDI spec: one device per pool device, its device nodes as containerEdits. */
export function cdiSpec(pool: PoolConfig, devices: PciDevice[]): object {
  return {
    cdiVersion: '0.5.0',
    kind: cdiKind(pool),
    devices: devices.map((d) => ({
      name: d.address,
      containerEdits: {
        deviceNodes: containerResponse(
          pool,
          [d],
          pool.selectors.some((s) => s.needVhostNet === true),
        ).devices.map((n) => ({ path: n.container_path, hostPath: n.host_path, permissions: n.permissions })),
      },
    })),
  };
}

/** Writes the device-info file (spec 1.1.0) for an allocated device: remove, then write, mode 0444. */
export function writeDpDeviceInfo(devinfoDir: string, pool: PoolConfig, dev: PciDevice): string | undefined {
  // device-info spec 1.1.0 has no type for auxiliary devices: none is written (sriov-network-device-plugin writes none either).
  if (dev.aux) return undefined;
  const path = dpDeviceInfoPath(devinfoDir, resourceFullName(pool), dev.address);
  let info: object;
  if (dev.vdpa?.driver === 'vhost_vdpa' || dev.vdpa?.driver === 'virtio_vdpa') {
    // device-info spec 1.1.0 vdpa type; `path` for vhost (the spec marks it required; virtio has none).
    const driver = dev.vdpa.driver === 'vhost_vdpa' ? 'vhost' : 'virtio';
    info = {
      type: 'vdpa',
      version: '1.1.0',
      vdpa: {
        'parent-device': dev.vdpa.name,
        driver,
        ...(driver === 'vhost' && dev.vdpa.vhostDev ? { path: dev.vdpa.vhostDev } : {}),
        'pci-address': dev.address,
        ...(dev.pf ? { 'pf-pci-address': dev.pf } : {}),
      },
    };
  } else {
    const pci: Record<string, string> = { 'pci-address': dev.address };
    if (dev.pf) pci['pf-pci-address'] = dev.pf;
    if (dev.rdma[0]) pci['rdma-device'] = dev.rdma[0];
    info = { type: 'pci', version: '1.1.0', pci };
  }
  mkdirSync(dirname(path), { recursive: true });
  rmSync(path, { force: true });
  writeFileSync(path, JSON.stringify(info), { mode: 0o444 });
  chmodSync(path, 0o444);
  return path;
}

/** Removes device-info files of this plugin's pools that name devices no longer allocatable (or all of them). */
export function removeStaleDeviceInfo(devinfoDir: string, pools: PoolConfig[], keep: (pool: PoolConfig, id: string) => boolean): string[] {
  const removed: string[] = [];
  let files: string[];
  try {
    files = readdirSync(`${devinfoDir}/dp`);
  } catch {
    return removed;
  }
  for (const pool of pools) {
    const prefix = `${resourceFullName(pool).replaceAll('/', '-')}-`;
    for (const f of files.filter((x) => x.startsWith(prefix) && x.endsWith('-device.json'))) {
      const id = f.slice(prefix.length, -'-device.json'.length);
      if (!keep(pool, id)) {
        rmSync(`${devinfoDir}/dp/${f}`, { force: true });
        removed.push(f);
      }
    }
  }
  return removed;
}

/**
 * GetPreferredAllocation: `size` devices from `available`, `mustInclude` first.
 * pack-pf fills the PF that already has the most chosen/available devices (keeps other PFs free);
 * spread-pf takes one per PF in turn (HA pairs land on different PFs); numa keeps to the NUMA node
 * of the must-include devices (or the one with most available); none keeps kubelet's order.
 * Devices sharing an IOMMU group are chosen together or not at all.
 */
export function preferredAllocation(policy: PoolConfig['allocationPolicy'], available: PciDevice[], mustInclude: string[], size: number): string[] {
  const chosen: string[] = [...mustInclude];
  const byId = new Map(available.map((d) => [d.address, d]));
  const rest = available.filter((d) => !chosen.includes(d.address)).sort((a, b) => a.address.localeCompare(b.address));
  const pfOf = (d: PciDevice) => d.pf ?? d.address;
  const units = groupUnits(rest);
  const take = (order: PciDevice[][]) => {
    for (const unit of order) {
      if (chosen.length >= size) break;
      if (chosen.length + unit.length > size) continue;
      chosen.push(...unit.map((d) => d.address));
    }
  };
  if (policy === 'pack-pf') {
    const count = new Map<string, number>();
    for (const d of available) count.set(pfOf(d), (count.get(pfOf(d)) ?? 0) + 1);
    const mustPfs = new Set(
      mustInclude
        .map((id) => byId.get(id))
        .filter(Boolean)
        .map((d) => pfOf(d!)),
    );
    // PFs the container already uses first, then the fullest PF that can hold the whole request.
    const score = (u: PciDevice[]) => [mustPfs.has(pfOf(u[0]!)) ? 0 : 1, (count.get(pfOf(u[0]!)) ?? 0) >= size - chosen.length ? 0 : 1, -(count.get(pfOf(u[0]!)) ?? 0), pfOf(u[0]!)] as const;
    take([...units].sort((a, b) => cmp(score(a), score(b))));
  } else if (policy === 'spread-pf') {
    const perPf = new Map<string, PciDevice[][]>();
    for (const u of units) perPf.set(pfOf(u[0]!), [...(perPf.get(pfOf(u[0]!)) ?? []), u]);
    const used = new Map<string, number>();
    for (const id of mustInclude) {
      const d = byId.get(id);
      if (d) used.set(pfOf(d), (used.get(pfOf(d)) ?? 0) + 1);
    }
    const order: PciDevice[][] = [];
    const queues = [...perPf.entries()].sort((a, b) => (used.get(a[0]) ?? 0) - (used.get(b[0]) ?? 0) || a[0].localeCompare(b[0]));
    for (let round = 0; queues.some(([, q]) => q.length > round); round++) for (const [, q] of queues) if (q[round]) order.push(q[round]!);
    take(order);
  } else if (policy === 'numa') {
    const numaCount = new Map<number, number>();
    for (const d of rest) numaCount.set(d.numaNode, (numaCount.get(d.numaNode) ?? 0) + 1);
    const target = byId.get(mustInclude[0] ?? '')?.numaNode ?? [...numaCount.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0])[0]?.[0];
    take([...units].sort((a, b) => Number(a[0]!.numaNode !== target) - Number(b[0]!.numaNode !== target)));
  } else {
    take(units);
  }
  return chosen.slice(0, Math.max(size, mustInclude.length));
}

function cmp(a: readonly (number | string)[], b: readonly (number | string)[]): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i]! < b[i]! ? -1 : 1;
  return 0;
}

/** Devices that must go together: members of one IOMMU group (when used through vfio), else singletons. */
function groupUnits(devices: PciDevice[]): PciDevice[][] {
  const units = new Map<string, PciDevice[]>();
  for (const d of devices) {
    const key = d.driver === 'vfio-pci' && d.iommuGroup && d.iommuPeers.length ? `group:${d.iommuGroup}` : d.address;
    units.set(key, [...(units.get(key) ?? []), d]);
  }
  return [...units.values()];
}
