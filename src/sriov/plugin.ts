/**
 * The `sriov` CNI plugin: a VF into the pod, PF-side VF settings, DPDK mode, full restore.
 * Data path: stdin → SriovConf → VF from sysfs (PF, index, netdev, driver) → per-VF lock → snapshot
 * of every attribute into the VF's record (before any change) → PF side (vlan, MAC, rate, spoofchk,
 * trust, link state) → netdev moved and renamed into the pod in one message, MAC/MTU/up there →
 * IPAM → result. DEL (and GC, and a failed ADD) put back exactly what the snapshot says.
 */
import { appendFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { CniError, ErrorCode } from '../cni/errors.js';
import type { Plugin, PluginRequest } from '../cni/skel.js';
import { type AnyResult, type Attachment, SUPPORTED_VERSIONS, type Result } from '../cni/types.js';
import { convertResult } from '../cni/version.js';
import { addAddresses, addRoutes, execIpam } from '../net/ipam.js';
import type { VfInfo, VfSetting } from '../net/vf.js';
import { type SriovConf, parseSriovConf } from './conf.js';
import { openHost } from './discover.js';
import { HOST_ROOT_ENV, type HostRoot } from './host.js';
import { type PfOps, openPfOps } from './pfops.js';
import { SriovState, type VfRecord, type VfRef, netnsExists, withVfLock } from './state.js';

const USERSPACE_DRIVERS = new Set(['vfio-pci', 'uio_pci_generic', 'igb_uio']);
const MAC_RETRIES = 20;
const MAC_RETRY_MS = 100;
/** How long (×100 ms) a VF may take to come back from a destroyed netns. */
const NETNS_TEARDOWN_POLLS = 30;

/** Node-local state: under the host root, so a simulated host keeps its own. */
export function stateDir(host: HostRoot): string {
  return join(host.root, 'var/lib/cni/plexus-sriov');
}

interface ResolvedVf extends VfRef {
  netdev?: string;
  driver?: string;
}

/** PF, VF index (N with the PF's virtfnN pointing at it), netdev and driver of a VF, from sysfs. */
export function resolveVf(host: HostRoot, address: string): ResolvedVf {
  const dir = `sys/bus/pci/devices/${address}`;
  if (!host.exists(dir)) throw new CniError(ErrorCode.InvalidNetworkConfig, `PCI device ${address} not found`, `no ${host.path(dir)}`);
  const pf = host.linkName(`${dir}/physfn`);
  if (!pf) throw new CniError(ErrorCode.InvalidNetworkConfig, `${address} is not a VF`, 'it has no physfn');
  const pfNetdev = host.list(`${dir}/physfn/net`)[0];
  if (!pfNetdev) throw new CniError(ErrorCode.InvalidNetworkConfig, `the PF ${pf} of ${address} has no netdev`, 'PF-side VF settings need it');
  const index = host
    .list(`${dir}/physfn`)
    .map((e) => /^virtfn(\d+)$/.exec(e))
    .find((m) => m && host.linkName(`${dir}/physfn/${m[0]}`) === address)?.[1];
  if (index === undefined) throw new CniError(ErrorCode.InvalidNetworkConfig, `no virtfn of ${pf} points at ${address}`);
  const vf: ResolvedVf = { address, pf, pfNetdev, index: Number(index) };
  const netdev = host.list(`${dir}/net`)[0];
  if (netdev) vf.netdev = netdev;
  const driver = host.linkName(`${dir}/driver`);
  if (driver) vf.driver = driver;
  return vf;
}

/**
 * The host to act on: the simulated one PLEXUS_SRIOV_HOST_ROOT names in the plugin's environment (the
 * operator's: the runtime's environment for the exec'd binary, the daemon's own for the in-process
 * one), else the real one. Never NAD content: whoever writes a NAD must not choose the host root
 * a privileged plugin reads and writes.
 */
function hostFor(req: PluginRequest): HostRoot {
  return openHost(req.env[HOST_ROOT_ENV] || undefined);
}

/** `hostRoot` used to be a NAD key: refused with a clear error, instead of silently acting on the real host. */
function refuseTenantHostRoot(req: PluginRequest): void {
  if ((req.conf as unknown as Record<string, unknown>).hostRoot !== undefined) {
    throw new CniError(ErrorCode.InvalidNetworkConfig, 'hostRoot is not a network configuration key', `the simulated SR-IOV host is chosen by the operator (${HOST_ROOT_ENV} of the sriov plugin or plexusctl daemon --sriov-host-root), never by a NAD`);
  }
}

/**
 * NPWG device-info: the meta plugin passes the attachment's file in runtimeConfig.CNIDeviceInfoFile
 * (when the conf declares the capability) with the device plugin's content; the VF's PCI and PF
 * addresses are added (or the file created). Returns the path when it wrote one.
 */
function writeDeviceInfo(req: PluginRequest, vf: VfRef): string | undefined {
  const path = (req.conf.runtimeConfig as { CNIDeviceInfoFile?: unknown } | undefined)?.CNIDeviceInfoFile;
  if (typeof path !== 'string' || !path) return undefined;
  let info: { type?: string; version?: string; pci?: Record<string, string> } = {};
  try {
    info = JSON.parse(readFileSync(path, 'utf8')) as typeof info;
  } catch {
    /* absent or unreadable: written fresh */
  }
  const merged = { ...info, type: 'pci', version: '1.1.0', pci: { ...(info.pci ?? {}), 'pci-address': vf.address, 'pf-pci-address': vf.pf } };
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, JSON.stringify(merged));
  return path;
}

const LOG_LEVELS = ['panic', 'error', 'warning', 'info', 'debug'] as const;

/** sriov-cni's logging keys: `logLevel` (panic < error < warning < info < debug, default info) into `logFile`. */
function log(conf: Pick<SriovConf, 'logLevel' | 'logFile'> | undefined, req: PluginRequest, level: (typeof LOG_LEVELS)[number], msg: string): void {
  if (!conf?.logFile) return;
  const max = LOG_LEVELS.indexOf((conf.logLevel ?? 'info') as (typeof LOG_LEVELS)[number]);
  if (LOG_LEVELS.indexOf(level) > (max < 0 ? 3 : max)) return;
  try {
    mkdirSync(dirname(conf.logFile), { recursive: true });
    appendFileSync(conf.logFile, `${new Date().toISOString()} [${level}] ${req.command} ${req.containerID || '-'}/${req.ifName || '-'} ${msg}\n`);
  } catch {
    /* logging never fails an attachment */
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Sets the admin MAC and waits until the PF reports it (iavf applies it asynchronously). */
async function setAdminMac(pf: PfOps, vf: VfRef, mac: string): Promise<void> {
  await pf.setVf(vf.pfNetdev, vf.index, { kind: 'mac', mac });
  for (let i = 0; i < MAC_RETRIES; i++) {
    const now = (await pf.vfs(vf.pfNetdev)).find((v) => v.vf === vf.index)?.mac;
    if (now === mac.toLowerCase()) return;
    await sleep(MAC_RETRY_MS);
  }
  throw new CniError(ErrorCode.Internal, `the PF did not apply MAC ${mac} to VF ${vf.index}`, `${vf.pfNetdev} still reports another one after ${(MAC_RETRIES * MAC_RETRY_MS) / 1000} s`);
}

/** PF side, in sriov-cni's order: vlan+qos+proto, admin MAC, rate, spoofchk, trust, link state. */
async function applyPfSide(pf: PfOps, vf: VfRef, conf: SriovConf): Promise<void> {
  if (conf.vlan !== undefined) await pf.setVf(vf.pfNetdev, vf.index, { kind: 'vlan', vlan: conf.vlan, qos: conf.vlanQoS ?? 0, proto: conf.vlanProto ?? '802.1Q' });
  if (conf.mac) await setAdminMac(pf, vf, conf.mac);
  if (conf.minTxRate !== undefined || conf.maxTxRate !== undefined) await pf.setVf(vf.pfNetdev, vf.index, { kind: 'rate', minTxRate: conf.minTxRate ?? 0, maxTxRate: conf.maxTxRate ?? 0 });
  if (conf.spoofchk !== undefined) await pf.setVf(vf.pfNetdev, vf.index, { kind: 'spoofchk', on: conf.spoofchk });
  if (conf.trust !== undefined) await pf.setVf(vf.pfNetdev, vf.index, { kind: 'trust', on: conf.trust });
  if (conf.linkState) await pf.setVf(vf.pfNetdev, vf.index, { kind: 'linkState', state: conf.linkState });
}

/**
 * The snapshot's PF-side attributes that differ now, each set back. The PF side goes back before
 * the netdev (some drivers refuse a MAC reset while trust is off); unknown (-1) attributes are left.
 */
async function restorePfSide(pf: PfOps, vf: VfRef, snap: VfInfo, errors: string[]): Promise<void> {
  const now = (await pf.vfs(vf.pfNetdev)).find((v) => v.vf === vf.index);
  if (!now) {
    errors.push(`${vf.pfNetdev} no longer reports VF ${vf.index}`);
    return;
  }
  const steps: [boolean, VfSetting | 'mac'][] = [
    [now.vlan !== snap.vlan || now.qos !== snap.qos || now.vlanProto !== snap.vlanProto, { kind: 'vlan', vlan: snap.vlan, qos: snap.qos, proto: snap.vlanProto }],
    [snap.spoofchk !== undefined && now.spoofchk !== snap.spoofchk, { kind: 'spoofchk', on: snap.spoofchk ?? false }],
    [now.mac !== snap.mac, 'mac'],
    [snap.trust !== undefined && now.trust !== snap.trust, { kind: 'trust', on: snap.trust ?? false }],
    [now.minTxRate !== snap.minTxRate || now.maxTxRate !== snap.maxTxRate, { kind: 'rate', minTxRate: snap.minTxRate, maxTxRate: snap.maxTxRate }],
    [now.linkState !== snap.linkState, { kind: 'linkState', state: snap.linkState }],
  ];
  for (const [differs, setting] of steps) {
    if (!differs) continue;
    try {
      if (setting === 'mac') await setAdminMac(pf, vf, snap.mac);
      else await pf.setVf(vf.pfNetdev, vf.index, setting);
    } catch (err) {
      errors.push(`restore ${setting === 'mac' ? 'mac' : setting.kind} of VF ${vf.index} on ${vf.pfNetdev}: ${(err as Error).message}`);
    }
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
async function moveIntoPod(record: VfRecord, conf: SriovConf, onMoved: () => void): Promise<{ mac: string; mtu: number }> {
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
async function restoreNetdev(host: HostRoot, record: VfRecord, errors: string[]): Promise<void> {
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

/** Everything back as the snapshot says: PF side first, then the netdev; IPAM released when asked. */
async function restoreVf(host: HostRoot, record: VfRecord, ipamReq: PluginRequest | undefined): Promise<string[]> {
  const errors: string[] = [];
  if (ipamReq) {
    const conf = parseSriovConf(JSON.parse(record.stdin) as PluginRequest['conf'], ipamReq.args);
    if (conf.ipam) await execIpam('DEL', conf.ipam.type, { ...ipamReq, stdin: Buffer.from(record.stdin) }).catch((err: Error) => errors.push(`IPAM DEL: ${err.message}`));
  }
  const pf = await openPfOps(host);
  try {
    await restorePfSide(pf, record.vf, record.snapshot.vfinfo, errors);
  } catch (err) {
    errors.push(`restore PF side: ${(err as Error).message}`);
  } finally {
    pf.close();
  }
  if (record.mode === 'kernel' && record.stage !== 'snapshot') await restoreNetdev(host, record, errors);
  if (record.deviceInfoFile) rmSync(record.deviceInfoFile, { force: true });
  return errors;
}

async function snapshotNetdev(name: string): Promise<VfRecord['snapshot']['netdev']> {
  const { NetHandle } = await import('../net/netlink.js');
  const nl = await NetHandle.open();
  try {
    const l = await nl.link(name);
    return { name, mac: l.mac ?? '', mtu: l.mtu, altnames: l.altnames };
  } finally {
    nl.close();
  }
}

export async function cmdAdd(req: PluginRequest): Promise<AnyResult> {
  const conf = parseSriovConf(req.conf, req.args);
  refuseTenantHostRoot(req);
  const host = hostFor(req);
  const state = new SriovState(stateDir(host));
  const vf = resolveVf(host, conf.deviceID);
  return withVfLock(state.dir, vf.address, async () => {
    const held = state.readVf(vf);
    if (held) {
      if (netnsExists(held.netns) && !(held.containerID === req.containerID && held.ifName === req.ifName)) {
        throw new CniError(ErrorCode.InvalidNetworkConfig, `VF ${vf.address} is already allocated`, `to container ${held.containerID} (${held.ifName} in ${held.netns})`);
      }
      // Its holder's netns is gone (or this is a retried ADD): put the VF back first, so the new
      // snapshot is the VF's own state and not what the last pod left.
      const left = await restoreVf(host, held, { ...req, args: held.containerID === req.containerID ? req.args : [] });
      if (left.length) throw new CniError(ErrorCode.Internal, `VF ${vf.address} is left over from ${held.containerID} and could not be reset`, left.join('; '));
      state.remove(held);
    }
    const fresh = resolveVf(host, conf.deviceID);
    const mode: VfRecord['mode'] = fresh.netdev ? 'kernel' : USERSPACE_DRIVERS.has(fresh.driver ?? '') ? 'dpdk' : (() => {
      throw new CniError(ErrorCode.InvalidNetworkConfig, `VF ${vf.address} has no netdev and is not on a userspace driver`, `driver ${fresh.driver ?? 'none'}`);
    })();
    const pf = await openPfOps(host);
    let record: VfRecord | undefined;
    let ipamDone = false;
    try {
      const vfinfo = (await pf.vfs(vf.pfNetdev)).find((v) => v.vf === vf.index);
      if (!vfinfo) throw new CniError(ErrorCode.InvalidNetworkConfig, `${vf.pfNetdev} does not report VF ${vf.index}`);
      const snapshot: VfRecord['snapshot'] = { vfinfo };
      if (mode === 'kernel') snapshot.netdev = await snapshotNetdev(fresh.netdev!);
      record = { schemaVersion: 1, vf: { address: vf.address, pf: vf.pf, pfNetdev: vf.pfNetdev, index: vf.index }, containerID: req.containerID, ifName: req.ifName, netns: req.netns, mode, snapshot, stdin: req.stdin.toString(), stage: 'snapshot' };
      // Written before the first change: whatever happens next, DEL and GC know what to put back.
      state.writeVf(record);
      await applyPfSide(pf, vf, conf);
      record.stage = 'configured';
      state.writeVf(record);
      const iface: Result['interfaces'] = [{ name: req.ifName, sandbox: req.netns, pciID: vf.address }];
      if (mode === 'kernel') {
        const moved = record;
        Object.assign(iface[0]!, await moveIntoPod(record, conf, () => {
          // From here the pod's ifName is this VF: DEL and GC look for it there.
          moved.stage = 'moved';
          state.writeVf(moved);
        }));
      }
      else {
        // DPDK: the MAC the application will see is the admin MAC.
        const mac = conf.mac ?? vfinfo.mac;
        if (mac !== '00:00:00:00:00:00') iface[0]!.mac = mac;
      }
      let result: Result = { cniVersion: '1.1.0', interfaces: iface, ips: [] };
      if (conf.ipam) {
        const ipam = (await execIpam('ADD', conf.ipam.type, req))!;
        ipamDone = true;
        result = { ...ipam, cniVersion: '1.1.0', interfaces: iface, ips: (ipam.ips ?? []).map((ip) => ({ ...ip, interface: 0 })) };
      }
      // DPDK: the addresses are for the application; nothing is configured in the pod.
      if (mode === 'kernel') {
        const { NetHandle } = await import('../net/netlink.js');
        const pod = await NetHandle.openPath(req.netns);
        try {
          await addAddresses(pod, req.ifName, result);
          await pod.setUp(req.ifName);
          await addRoutes(pod, req.ifName, result);
        } finally {
          pod.close();
        }
      }
      const deviceInfoFile = writeDeviceInfo(req, vf);
      if (deviceInfoFile) record.deviceInfoFile = deviceInfoFile;
      record.stage = 'added';
      state.writeVf(record);
      log(conf, req, 'info', `VF ${vf.address} (${vf.pfNetdev} vf ${vf.index}, ${mode}) attached as ${req.ifName} in ${req.netns}`);
      return convertResult(result, req.conf.cniVersion);
    } catch (err) {
      log(conf, req, 'error', `ADD of VF ${vf.address} failed: ${(err as Error).message}`);
      if (record) {
        const left = await restoreVf(host, record, ipamDone ? req : undefined);
        // Fully undone: nothing remains. Otherwise the record stays for the runtime's DEL (or GC).
        if (!left.length) state.remove(record);
        else (err as Error).message += `; not undone: ${left.join('; ')}`;
      }
      throw err;
    } finally {
      pf.close();
    }
  });
}

export async function cmdDel(req: PluginRequest): Promise<void> {
  const host = hostFor(req);
  const state = new SriovState(stateDir(host));
  const record = state.forAttachment(req.containerID, req.ifName);
  if (!record) {
    // Nothing held (ADD never got far, or DEL repeats): release the IPAM lease anyway, idempotently.
    try {
      const conf = parseSriovConf(req.conf, req.args);
      if (conf.ipam) await execIpam('DEL', conf.ipam.type, req);
    } catch (err) {
      if (err instanceof CniError && err.code !== ErrorCode.InvalidNetworkConfig) throw err;
    }
    return;
  }
  await withVfLock(state.dir, record.vf.address, async () => {
    const errors = await restoreVf(host, record, req);
    const conf = (() => {
      try {
        return parseSriovConf(JSON.parse(record.stdin) as PluginRequest['conf'], req.args);
      } catch {
        return undefined;
      }
    })();
    if (errors.length) {
      log(conf, req, 'error', `DEL could not restore VF ${record.vf.address}: ${errors.join('; ')}`);
      throw new CniError(ErrorCode.Internal, `DEL could not restore VF ${record.vf.address}`, errors.join('; '));
    }
    state.remove(record);
    log(conf, req, 'info', `VF ${record.vf.address} restored and released`);
  });
}

export async function cmdCheck(req: PluginRequest): Promise<void> {
  const conf = parseSriovConf(req.conf, req.args);
  const host = hostFor(req);
  const state = new SriovState(stateDir(host));
  const record = state.forAttachment(req.containerID, req.ifName);
  if (!record || record.stage !== 'added') throw new CniError(ErrorCode.InvalidNetworkConfig, `no VF is attached as ${req.ifName} to ${req.containerID}`);
  const pf = await openPfOps(host);
  try {
    const now = (await pf.vfs(record.vf.pfNetdev)).find((v) => v.vf === record.vf.index);
    const wrong: string[] = [];
    if (!now) wrong.push(`${record.vf.pfNetdev} no longer reports VF ${record.vf.index}`);
    else {
      if (conf.vlan !== undefined && (now.vlan !== conf.vlan || now.qos !== (conf.vlanQoS ?? 0))) wrong.push(`vlan ${now.vlan}/${now.qos}, configured ${conf.vlan}/${conf.vlanQoS ?? 0}`);
      if (conf.mac && now.mac !== conf.mac) wrong.push(`admin MAC ${now.mac}, configured ${conf.mac}`);
      if (conf.spoofchk !== undefined && now.spoofchk !== undefined && now.spoofchk !== conf.spoofchk) wrong.push(`spoofchk ${now.spoofchk ? 'on' : 'off'}`);
      if (conf.trust !== undefined && now.trust !== undefined && now.trust !== conf.trust) wrong.push(`trust ${now.trust ? 'on' : 'off'}`);
      if (conf.linkState && now.linkState !== conf.linkState) wrong.push(`link state ${now.linkState}`);
    }
    if (record.mode === 'kernel') {
      const { NetHandle } = await import('../net/netlink.js');
      const pod = await NetHandle.openPath(req.netns);
      try {
        const link = await pod.findLink(req.ifName);
        const prev = (req.conf.prevResult ? (req.conf.prevResult as Result).interfaces?.find((i) => i.name === req.ifName) : undefined);
        if (!link) wrong.push(`${req.ifName} is not in ${req.netns}`);
        else if (prev?.mac && link.mac !== prev.mac) wrong.push(`${req.ifName} has MAC ${link.mac}, prevResult says ${prev.mac}`);
      } finally {
        pod.close();
      }
    }
    if (wrong.length) throw new CniError(ErrorCode.Internal, `VF ${record.vf.address} is not as configured`, wrong.join('; '));
    if (conf.ipam) await execIpam('CHECK', conf.ipam.type, req);
  } finally {
    pf.close();
  }
}

/**
 * GC: VFs held by attachments the runtime no longer lists (CNI_ARGS-free `cni.dev/valid-attachments`)
 * or stranded in a netns that is gone, are put back as their snapshot says and released.
 */
export async function cmdGc(req: PluginRequest): Promise<void> {
  const host = hostFor(req);
  const state = new SriovState(stateDir(host));
  const valid = (req.conf['cni.dev/valid-attachments'] ?? []) as Attachment[];
  const errors: string[] = [];
  for (const record of state.all()) {
    const listed = valid.some((a) => a.containerID === record.containerID && a.ifname === record.ifName);
    if (listed && netnsExists(record.netns)) continue;
    await withVfLock(state.dir, record.vf.address, async () => {
      const left = await restoreVf(host, record, { ...req, containerID: record.containerID, ifName: record.ifName, netns: record.netns, stdin: Buffer.from(record.stdin), env: { ...req.env, CNI_CONTAINERID: record.containerID, CNI_IFNAME: record.ifName, CNI_NETNS: record.netns } });
      if (left.length) errors.push(`${record.vf.address}: ${left.join('; ')}`);
      else state.remove(record);
    });
  }
  if (errors.length) throw new CniError(ErrorCode.Internal, 'GC could not restore every stranded VF', errors.join(' | '));
}

export const sriovPlugin: Plugin = {
  about: 'Plexus SR-IOV CNI plugin (sriov-cni compatible)',
  supportedVersions: SUPPORTED_VERSIONS,
  add: cmdAdd,
  del: cmdDel,
  check: cmdCheck,
  gc: cmdGc,
};
