/** A simulated SR-IOV host: the fake kernel answers sysfs writes, PF-side VF operations and DDP. */
import type { VfInfo, VfSetting } from '../net/vf.js';
import type { SriovHost } from '../sriov/backend.js';
import type { PfOps } from '../sriov/pfops.js';
import { FakeKernel } from './fakekernel.js';

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

export function sriovHostOf(kernel: FakeKernel): SriovHost {
  return {
    sysfs: kernel.host(),
    openPfOps: async () => new FakePfOps(kernel),
    openDdp: () => ({ profile: async (pf) => kernel.ddpProfile(pf), close: () => undefined }),
  };
}

/** The simulated host made in `root` by `plexusctl sriov host create`, or undefined when it is none. */
export function simulatedSriovHost(root: string): SriovHost | undefined {
  const kernel = FakeKernel.open(root);
  if (!kernel) return undefined;
  // Its sysfs follows the real stand-in netdevs (moved into pods, or back).
  kernel.refresh();
  return sriovHostOf(kernel);
}
