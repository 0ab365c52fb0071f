/** The table both demos print (`plexusctl demo`, `plexusctl demo --cluster`): each pod's interfaces read back over netlink, then its network-status. */
import { NetHandle } from '../net/netlink.js';

export const DEMO_PODS = ['two-nets', 'comma-list', 'vf-stand-in', 'sriov-pod'];
export const SRIOV_RESOURCE = 'intel.com/intel_sriov_netdevice';
/** The simulated SR-IOV host of both demos: one PF, two VFs whose netdevs are veth ends. */
export const DEMO_PF = { address: '0000:5e:00.0', vendor: '8086', device: '158b', numVfs: 2, netdev: 'plxdemopf' };

export interface DemoPod {
  name: string;
  namespace: string;
  netns: string;
  sandbox: string;
}

export function tableHeader(log: (l: string) => void): void {
  log(`${'pod'.padEnd(22)} ${'if'.padEnd(7)} ${'mac'.padEnd(18)} addresses`);
}

export async function showPod(log: (l: string) => void, pod: DemoPod, status: string | undefined): Promise<void> {
  const h = await NetHandle.openPath(pod.netns);
  try {
    for (const link of (await h.links()).filter((l) => l.name !== 'lo')) {
      const addrs = (await h.addresses(link.name)).filter((a) => a.scope === 0).map((a) => a.address);
      log(`${`${pod.namespace}/${pod.name}`.padEnd(22)} ${link.name.padEnd(7)} ${(link.mac ?? '').padEnd(18)} ${addrs.join(', ')}`);
    }
  } finally {
    h.close();
  }
  for (const e of JSON.parse(status ?? '[]') as { name: string; interface?: string; ips?: string[]; default: boolean }[]) {
    log(`${''.padEnd(22)}   network-status: ${e.interface ?? '-'} ← ${e.name}${e.default ? ' (default)' : ''} ${(e.ips ?? []).join(', ')}`);
  }
}
