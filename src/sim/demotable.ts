/** The table both demos print (`plexusctl demo`, `plexusctl demo --cluster`): each pod's interfaces read back over netlink, then its network-status. */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { AttachmentStore } from '../meta/store.js';
import { NetHandle } from '../net/netlink.js';
import { hostLocalReservations } from './hostlocal.js';

export const DEMO_PODS = ['two-nets', 'comma-list', 'vf-stand-in', 'sriov-pod'];
export const SRIOV_RESOURCE = 'intel.com/intel_sriov_netdevice';
/** The simulated SR-IOV host of both demos: one PF, two VFs whose netdevs are veth ends. */
/** The demo's SR-IOV NAD: one VF of SRIOV_RESOURCE on VLAN 100, host-local addresses kept in `ipamDir`. */
export function demoSriovNad(ipamDir: string) {
  return {
    apiVersion: 'k8s.cni.cncf.io/v1',
    kind: 'NetworkAttachmentDefinition',
    metadata: { name: 'sriov-a', namespace: 'default', annotations: { 'k8s.v1.cni.cncf.io/resourceName': SRIOV_RESOURCE } },
    spec: {
      config: JSON.stringify({
        cniVersion: '1.0.0',
        name: 'sriov-a',
        type: 'sriov',
        vlan: 100,
        capabilities: { CNIDeviceInfoFile: true },
        ipam: { type: 'host-local', ranges: [[{ subnet: '10.99.0.0/24' }]], dataDir: ipamDir },
      }),
    },
  };
}

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

/** The named netns of the host (/run/netns). */
export function netnsNames(): string[] {
  return existsSync('/run/netns') ? readdirSync('/run/netns') : [];
}

/** host-local's IP reservations in the given data dirs, one `IP <file>` each. */
export function reservations(dirs: string[]): string[] {
  return dirs.flatMap((d) => hostLocalReservations(d).map((f) => `IP ${join(d, f)}`));
}

/** What a demo may leave on the host: netns that were not there before it, plx links, attachment records still active. */
export function plexusLeftovers(storeDir: string, netnsBefore: ReadonlySet<string>): string[] {
  const netns = netnsNames().filter((n) => !netnsBefore.has(n));
  const links = (JSON.parse(execFileSync('ip', ['-j', 'link', 'show'], { encoding: 'utf8' })) as { ifname: string }[]).map((l) => l.ifname).filter((n) => n.startsWith('plx'));
  const records = existsSync(storeDir) ? new AttachmentStore(storeDir).active() : [];
  return [...netns.map((n) => `netns ${n}`), ...links.map((l) => `link ${l}`), ...records.map((r) => `store record ${r}`)];
}
