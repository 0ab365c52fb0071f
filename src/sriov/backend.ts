/**
 * What SR-IOV code acts on: the host's sysfs (under a root), the PF-side VF operations and the DDP
 * source. The real host's are here; a simulated host's (src/sim/sriov-host.ts) are chosen by the
 * privileged component's entry point (src/cmd/sriov-host.ts), never by anything a tenant writes.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { type DdpSource, devlinkSource } from './ddp.js';
import { HostRoot } from './host.js';
import { type PfOps, openRtnetlinkPfOps } from './pfops.js';

export interface SriovHost {
  readonly sysfs: HostRoot;
  openPfOps(): Promise<PfOps>;
  openDdp(): DdpSource;
}

/** A wrong root would read as a host without devices: empty pools, and no error anywhere. */
export function requirePciSysfs(root: string): void {
  if (!existsSync(join(root, 'sys', 'bus', 'pci', 'devices'))) {
    throw new Error(`${root} holds no PCI sysfs (${join(root, 'sys/bus/pci/devices')} is missing): the host root is / or a simulated host made by plexusctl sriov host create`);
  }
}

/** The kernel's own host: sysfs under `root`, rtnetlink to the PFs, devlink for DDP. */
export function realSriovHost(root = '/'): SriovHost {
  return { sysfs: new HostRoot(root), openPfOps: openRtnetlinkPfOps, openDdp: devlinkSource };
}
