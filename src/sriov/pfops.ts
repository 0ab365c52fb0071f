/**
 * PF-side VF operations behind one interface: the real one sends rtnetlink to the PF (hand-encoded
 * messages, src/net/vf.ts); on a simulated host the fake kernel keeps each PF's VF table, with its
 * driver's quirks, and records every call.
 */
import type { VfInfo, VfSetting } from '../net/vf.js';
import { FakeKernel } from './fakekernel.js';
import type { HostRoot } from './host.js';

export interface PfOps {
  vfs(pfNetdev: string): Promise<VfInfo[]>;
  setVf(pfNetdev: string, vf: number, setting: VfSetting): Promise<void>;
  close(): void;
}

class FakePfOps implements PfOps {
  constructor(private readonly kernel: FakeKernel) {}
  async vfs(pf: string): Promise<VfInfo[]> {
    return this.kernel.pfVfs(pf);
  }
  async setVf(pf: string, vf: number, setting: VfSetting): Promise<void> {
    this.kernel.pfSetVf(pf, vf, setting);
  }
  close(): void {}
}

/** The PF ops for this host: the fake kernel's on a simulated host, rtnetlink in the host netns otherwise. */
export async function openPfOps(host: HostRoot): Promise<PfOps> {
  const fake = FakeKernel.open(host.root);
  if (fake) return new FakePfOps(fake);
  const { NetHandle } = await import('../net/netlink.js');
  const nl = await NetHandle.open();
  return { vfs: (pf) => nl.vfs(pf), setVf: (pf, vf, s) => nl.setVf(pf, vf, s), close: () => nl.close() };
}
