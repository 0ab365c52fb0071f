/**
 * DRA (resource.k8s.io/v1) ResourceSlices from the device plugin's own discovery and pools: one device
 * per VF that joined a pool and is healthy, with the attributes CEL selectors and Multus's DRA reader
 * use. The node's slices are one pool (named after the node), replaced as a whole when discovery
 * changes: a new generation, written slice by slice, the old generation's extra slices deleted.
 */
import { ApiError, type ApiClient } from '../k8s/client.js';
import { DEVICE_ID_ATTRIBUTE, RESOURCE_API, RESOURCE_NAME_ATTRIBUTE } from '../k8s/resource.js';
import { type PoolConfig, resourceFullName } from '../deviceplugin/config.js';
import { deviceHealth } from '../deviceplugin/health.js';
import type { Assignment } from '../deviceplugin/pools.js';
import type { HostInventory } from '../sriov/discover.js';
import { isObject } from '../util/object.js';

/** The driver name in ResourceSlices, DeviceClasses and claims; also the domain of its attributes. */
export const DRA_DRIVER = 'sriov.plexus.network';
/** resource.k8s.io/v1 allows at most 128 devices in one ResourceSlice. */
export const DEVICES_PER_SLICE = 128;

export type AttributeValue = { string: string } | { int: number } | { bool: boolean };

export interface SliceDevice {
  /** A DNS label: `pci-0000-3b-02-1` for VF 0000:3b:02.1. */
  name: string;
  attributes: Record<string, AttributeValue>;
}

/** A PCI address (or an auxiliary device name) as a device name: lower case, `:` and `.` as `-`. */
export function deviceName(address: string): string {
  return `pci-${address.toLowerCase().replace(/[^a-z0-9]/g, '-')}`.slice(0, 63).replace(/-+$/, '');
}

/** The devices of the node's slices: each device of a pool, healthy now, with its attributes. */
export function sliceDevices(inv: HostInventory, assignment: Assignment, expectedDriver: (id: string) => string | undefined = () => undefined): SliceDevice[] {
  const out: SliceDevice[] = [];
  for (const { pool, devices } of assignment.pools) {
    for (const id of devices) {
      const dev = inv.devices.find((d) => d.address === id);
      if (!dev || !deviceHealth(id, expectedDriver(id), pool, inv).healthy) continue;
      const pf = dev.pf ? inv.devices.find((d) => d.address === dev.pf) : undefined;
      const attributes: Record<string, AttributeValue> = {
        pciAddress: { string: dev.address },
        vendor: { string: dev.vendor },
        deviceID: { string: dev.device },
        numaNode: { int: dev.numaNode },
        pool: { string: resourceFullName(pool) },
        // What Multus's DRA reader takes a NAD's device from.
        [DEVICE_ID_ATTRIBUTE]: { string: dev.address },
        [RESOURCE_NAME_ATTRIBUTE]: { string: resourceFullName(pool) },
      };
      if (dev.driver) attributes.driver = { string: dev.driver };
      if (dev.pf) attributes.pfPciAddress = { string: dev.pf };
      if (pf?.netdevs[0]) attributes.pfName = { string: pf.netdevs[0].name };
      if (pf?.netdevs[0]?.speedMbps) attributes.linkSpeedMbps = { int: pf.netdevs[0].speedMbps };
      if (dev.vfIndex !== undefined) attributes.vfIndex = { int: dev.vfIndex };
      if (dev.iommuGroup) attributes.iommuGroup = { string: dev.iommuGroup };
      if (dev.netdevs[0]) attributes.linkType = { string: dev.netdevs[0].linkType };
      attributes.dpdk = { bool: isUserspace(dev.driver, pool) };
      out.push({ name: deviceName(dev.address), attributes });
    }
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

function isUserspace(driver: string | undefined, pool: PoolConfig): boolean {
  return pool.bindDriver === 'vfio-pci' || driver === 'vfio-pci' || driver === 'uio_pci_generic' || driver === 'igb_uio';
}

/** The slices of one generation of the node's pool: `DEVICES_PER_SLICE` devices each (at least one slice, maybe empty). */
export function sliceObjects(node: { name: string; uid?: string }, devices: SliceDevice[], generation: number, driver = DRA_DRIVER): { metadata: { name: string }; spec: object }[] {
  const count = Math.max(1, Math.ceil(devices.length / DEVICES_PER_SLICE));
  return Array.from({ length: count }, (_, i) => ({
    apiVersion: 'resource.k8s.io/v1',
    kind: 'ResourceSlice',
    metadata: {
      name: `${node.name}-${driver.replace(/\./g, '-')}-${i}`.slice(0, 253),
      // The slices go with their node (garbage collection), as the kubelet plugin helper's do.
      ...(node.uid ? { ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: node.name, uid: node.uid, controller: true }] } : {}),
    },
    spec: {
      driver,
      nodeName: node.name,
      pool: { name: node.name, generation, resourceSliceCount: count },
      devices: devices.slice(i * DEVICES_PER_SLICE, (i + 1) * DEVICES_PER_SLICE),
    },
  }));
}

interface StoredSlice {
  metadata: { name: string; resourceVersion?: string };
  spec: { pool?: { generation?: number }; devices?: unknown[] };
}

/** Publishes the node's devices as its ResourceSlices, writing only when they changed. */
export class SlicePublisher {
  private last: string | undefined;

  constructor(
    private readonly api: ApiClient,
    private readonly nodeName: string,
    private readonly driver = DRA_DRIVER,
  ) {}

  private async existing(): Promise<StoredSlice[]> {
    const q = new URLSearchParams({ fieldSelector: `spec.nodeName=${this.nodeName},spec.driver=${this.driver}` });
    const list = await this.api.get<{ items?: unknown[] }>(`${RESOURCE_API}/resourceslices?${q}`);
    return (list.items ?? []).filter((i): i is StoredSlice => isObject(i) && isObject(i.metadata) && isObject(i.spec));
  }

  /** The API's slices may no longer be what was last written (kubelet wipes a node's slices when it starts): compare again at the next publish. */
  forget(): void {
    this.last = undefined;
  }

  /** Makes the API hold exactly these devices for this node; false when nothing had changed. */
  async publish(devices: SliceDevice[]): Promise<boolean> {
    const text = JSON.stringify(devices);
    if (text === this.last) return false;
    const node = await this.api.get<{ metadata?: { uid?: string } }>(`/api/v1/nodes/${encodeURIComponent(this.nodeName)}`).catch((err: unknown): { metadata?: { uid?: string } } => {
      if (err instanceof ApiError && err.status === 404) return {};
      throw err;
    });
    const current = await this.existing();
    const same = current.length && JSON.stringify(current.flatMap((s) => s.spec.devices ?? [])) === text;
    if (same) {
      this.last = text;
      return false;
    }
    const generation = Math.max(0, ...current.map((s) => s.spec.pool?.generation ?? 0)) + 1;
    const wanted = sliceObjects({ name: this.nodeName, ...(node.metadata?.uid ? { uid: node.metadata.uid } : {}) }, devices, generation, this.driver);
    const byName = new Map(current.map((s) => [s.metadata.name, s]));
    for (const slice of wanted) {
      const have = byName.get(slice.metadata.name);
      if (have) await this.api.put(`${RESOURCE_API}/resourceslices/${slice.metadata.name}`, { ...slice, metadata: { ...slice.metadata, resourceVersion: have.metadata.resourceVersion } });
      else await this.api.post(`${RESOURCE_API}/resourceslices`, slice);
      byName.delete(slice.metadata.name);
    }
    // Slices of the old generation beyond the new count: the scheduler ignores an incomplete older generation.
    for (const extra of byName.keys()) await this.api.delete(`${RESOURCE_API}/resourceslices/${extra}`).catch(() => undefined);
    this.last = text;
    return true;
  }
}
