/**
 * The SR-IOV host a privileged component acts on, chosen by its operator (flag or environment of that
 * component): `/` is the kernel's; any other root is a simulated host (plexusctl sriov host create) or
 * a sysfs tree to read. The simulation is loaded only for such a root, never into a plain host's path.
 */
import { type SriovHost, realSriovHost, requirePciSysfs } from '../sriov/backend.js';

export async function openSriovHost(root = '/'): Promise<SriovHost> {
  requirePciSysfs(root);
  if (root === '/') return realSriovHost(root);
  const { simulatedSriovHost } = await import('../sim/sriov-host.js');
  return simulatedSriovHost(root) ?? realSriovHost(root);
}
