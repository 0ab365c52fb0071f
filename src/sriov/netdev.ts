/**
 * The VF netdev's side: its snapshot before any change, its move into the pod (through a temporary
 * netns), and its way back to the host as the snapshot says.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { writeFileSync } from 'node:fs';
import { CniError, ErrorCode } from '../cni/errors.js';
import type { SriovConf } from './conf.js';
import type { HostRoot } from './host.js';
import { type VfRecord, netnsExists } from './state.js';

/** How long (×100 ms) a VF may take to come back from a destroyed netns. */
const NETNS_TEARDOWN_POLLS = 30;

export async function snapshotNetdev(name: string): Promise<VfRecord['snapshot']['netdev']> {
  const { NetHandle } = await import('../net/netlink.js');
  const nl = await NetHandle.open();
  try {
    const l = await nl.link(name);
    return { name, mac: l.mac ?? '', mtu: l.mtu, altnames: l.altnames };
  } finally {
    nl.close();
  }
}

/**
 * Moves the VF netdev into the pod as `ifName` through a temporary netns: moved and renamed there (an
 * empty netns, so neither name can clash), the host name dropped from its altnames, then moved into
 * the pod, where only `ifName` itself can clash; on any failure it goes back to the host under its
 * own name. Then MAC, MTU and the notify sysctls. It stays down: it comes up once its addresses are
 * on it, so that the kernel's gratuitous ARP / unsolicited NA on link-up (arp_notify, ndisc_notify)
 * announce them.
 */
export async function moveIntoPod(record: VfRecord, conf: SriovConf, onMoved: () => void): Promise<{ mac: string; mtu: number }> {
  const { NetHandle } = await import('../net/netlink.js');
  const { createTempNetns, hostNetnsPath, inNetnsSync, openNetns } = await import('../net/netns.js');
  const snap = record.snapshot.netdev!;
  const podNs = await openNetns(record.netns).catch((err: Error) => {
    throw new CniError(ErrorCode.UnknownContainer, 'cannot open the pod network namespace', err.message);
  });
  const host = await NetHandle.open();
  const temp = await createTempNetns();
  const staging = await NetHandle.open(temp);
  try {
    await host.moveTo(snap.name, temp, record.ifName);
    try {
      // Kernels that keep a renamed link's old name as an altname would leak the host name into the pod.
      for (const alt of (await staging.link(record.ifName)).altnames) if (alt === snap.name) await staging.delAltname(record.ifName, alt);
      await staging.moveTo(record.ifName, podNs);
      onMoved();
    } catch (err) {
      // Never let the temporary netns close with the VF inside: a veth would be destroyed with it.
      const home = await openNetns(hostNetnsPath());
      try {
        if (await staging.findLink(record.ifName)) await staging.moveTo(record.ifName, home, snap.name);
      } finally {
        home.close();
      }
      throw err;
    }
    const pod = await NetHandle.open(podNs);
    try {
      inNetnsSync(podNs, () => {
        // Gratuitous ARP / unsolicited NA when the link comes up and when addresses change.
        for (const f of [`/proc/sys/net/ipv4/conf/${record.ifName}/arp_notify`, `/proc/sys/net/ipv6/conf/${record.ifName}/ndisc_notify`]) {
          try {
            writeFileSync(f, '1');
          } catch {
            /* IPv6 may be off in the pod */
          }
        }
      });
      if (conf.mac) await pod.setMac(record.ifName, conf.mac);
      if (conf.mtu) await pod.setMtu(record.ifName, conf.mtu);
      const link = await pod.link(record.ifName);
      return { mac: link.mac ?? '', mtu: link.mtu };
    } finally {
      pod.close();
    }
  } finally {
    staging.close();
    temp.close();
    host.close();
    podNs.close();
  }
}

/** The VF netdev back in the host: down, renamed, original MAC, MTU and altnames. */
export async function restoreNetdev(host: HostRoot, record: VfRecord, errors: string[]): Promise<void> {
  const { NetHandle } = await import('../net/netlink.js');
  const { openNetns, hostNetnsPath } = await import('../net/netns.js');
  const snap = record.snapshot.netdev!;
  const hostNl = await NetHandle.open();
  try {
    // Only once it got there is the pod's ifName this VF (the pod may have its own link of that name).
    if ((record.stage === 'moved' || record.stage === 'added') && netnsExists(record.netns)) {
      const podNs = await openNetns(record.netns).catch(() => undefined);
      if (podNs) {
        const pod = await NetHandle.open(podNs);
        try {
          const name = (await pod.findLink(record.ifName)) ? record.ifName : undefined;
          if (name) {
            await pod.setUp(name, false);
            const home = await openNetns(hostNetnsPath());
            try {
              await pod.moveTo(name, home, snap.name);
            } finally {
              home.close();
            }
          }
        } finally {
          pod.close();
          podNs.close();
        }
      }
    }
    // A VF whose netns was destroyed comes back to the host under its pod name (or devN): sysfs knows
    // it. The kernel tears a netns down asynchronously, so its VFs take a moment to come back.
    const findHome = async (): Promise<string | undefined> => {
      host.refresh();
      return (await hostNl.findLink(snap.name)) ? snap.name : host.list(`sys/bus/pci/devices/${record.vf.address}/net`)[0];
    };
    let current = await findHome();
    // (Also after a kill mid-move: the temporary netns died with the process.)
    for (let i = 0; !current && (!netnsExists(record.netns) || record.stage === 'configured') && i < NETNS_TEARDOWN_POLLS; i++) {
      await sleep(100);
      current = await findHome();
    }
    if (current && current !== snap.name) {
      await hostNl.setUp(current, false);
      await hostNl.rename(current, snap.name);
      current = snap.name;
    }
    if (!current) {
      errors.push(`the netdev of VF ${record.vf.address} (${snap.name}) is neither in ${record.netns} nor in the host`);
      return;
    }
    const link = await hostNl.link(snap.name);
    if (link.up) await hostNl.setUp(snap.name, false);
    if (link.mac !== snap.mac) await hostNl.setMac(snap.name, snap.mac);
    if (link.mtu !== snap.mtu) await hostNl.setMtu(snap.name, snap.mtu);
    for (const alt of snap.altnames) if (!link.altnames.includes(alt)) await hostNl.addAltname(snap.name, alt).catch((err: Error) => errors.push(`restore altname ${alt}: ${err.message}`));
  } catch (err) {
    errors.push(`restore netdev ${snap.name}: ${(err as Error).message}`);
  } finally {
    hostNl.close();
  }
}
