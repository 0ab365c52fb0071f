/** Simulated SR-IOV hosts shared by suites. */
import type { FakeHostSpec } from '../../src/sim/fakekernel.js';

/** Two PFs on two NUMA nodes, four VFs each (DRA: CEL selection by NUMA node and PF). */
export const TWO_NUMA_HOST: FakeHostSpec = {
  pfs: [
    { address: '0000:3b:00.0', vendor: '8086', device: '1572', totalVfs: 8, numVfs: 4, netdev: 'ens1f0', numa: 0 },
    { address: '0000:af:00.0', vendor: '8086', device: '1572', totalVfs: 8, numVfs: 4, netdev: 'ens2f0', numa: 1 },
  ],
};
