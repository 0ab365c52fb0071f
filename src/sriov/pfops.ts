/**
 * PF-side VF operations behind one interface: on a real host rtnetlink to the PF (hand-encoded
 * messages, src/net/vf.ts); a simulated host has its own (src/sim/sriov-host.ts).
 */
import type { VfInfo, VfSetting } from '../net/vf.js';

export interface PfOps {
  vfs(pfNetdev: string): Promise<VfInfo[]>;
  setVf(pfNetdev: string, vf: number, setting: VfSetting): Promise<void>;
  close(): void;
}

/** rtnetlink in the host netns. */
export async function openRtnetlinkPfOps(): Promise<PfOps> {
  const { NetHandle } = await import('../net/netlink.js');
  const nl = await NetHandle.open();
  return { vfs: (pf) => nl.vfs(pf), setVf: (pf, vf, s) => nl.setVf(pf, vf, s), close: () => nl.close() };
}
