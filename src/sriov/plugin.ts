/**
 * The `sriov` CNI plugin: a VF into the pod, PF-side VF settings, DPDK mode, full restore.
 * Data path: stdin → SriovConf → VF from sysfs (PF, index, netdev, driver) → per-VF lock → snapshot
 * of every attribute into the VF's record (before any change) → PF side (vlan, MAC, rate, spoofchk,
 * trust, link state) → netdev moved and renamed into the pod in one message, MAC/MTU/up there →
 * IPAM → result. DEL (and GC, and a failed ADD) put back exactly what the snapshot says.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { CniError, ErrorCode } from '../cni/errors.js';
import type { Plugin, PluginRequest } from '../cni/skel.js';
import { type AnyResult, type Attachment, SUPPORTED_VERSIONS, type Result } from '../cni/types.js';
import { convertResult } from '../cni/version.js';
import { lineLogger } from '../util/linelog.js';
import { addAddresses, addRoutes, execIpam } from '../net/ipam.js';
import type { SriovHost } from './backend.js';
import { type SriovConf, parseSriovConf } from './conf.js';
import { HOST_ROOT_ENV, type HostRoot } from './host.js';
import { moveIntoPod, restoreNetdev, snapshotNetdev } from './netdev.js';
import { applyPfSide, restorePfSide } from './pfside.js';
import { SriovState, type VfRecord, type VfRef, netnsExists, withVfLock } from './state.js';

const USERSPACE_DRIVERS = new Set(['vfio-pci', 'uio_pci_generic', 'igb_uio']);

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

/** `hostRoot` used to be a NAD key: refused with a clear error, instead of silently acting on the real host. */
function refuseTenantHostRoot(req: PluginRequest): void {
  if ((req.conf as unknown as Record<string, unknown>).hostRoot !== undefined) {
    throw new CniError(
      ErrorCode.InvalidNetworkConfig,
      'hostRoot is not a network configuration key',
      `the simulated SR-IOV host is chosen by the operator (${HOST_ROOT_ENV} of the sriov plugin or plexusctl daemon --sriov-host-root), never by a NAD`,
    );
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
  lineLogger({ levels: LOG_LEVELS, level: conf.logLevel, fallback: 'info', file: conf.logFile, createDir: true })(level, `${req.command} ${req.containerID || '-'}/${req.ifName || '-'} ${msg}`);
}

/** Everything back as the snapshot says: PF side first, then the netdev; IPAM released when asked. */
async function restoreVf(host: SriovHost, record: VfRecord, ipamReq: PluginRequest | undefined): Promise<string[]> {
  const errors: string[] = [];
  if (ipamReq) {
    const conf = parseSriovConf(JSON.parse(record.stdin) as PluginRequest['conf'], ipamReq.args);
    if (conf.ipam) await execIpam('DEL', conf.ipam.type, { ...ipamReq, stdin: Buffer.from(record.stdin) }).catch((err: Error) => errors.push(`IPAM DEL: ${err.message}`));
  }
  const pf = await host.openPfOps();
  try {
    await restorePfSide(pf, record.vf, record.snapshot.vfinfo, errors);
  } catch (err) {
    errors.push(`restore PF side: ${(err as Error).message}`);
  } finally {
    pf.close();
  }
  if (record.mode === 'kernel' && record.stage !== 'snapshot') await restoreNetdev(host.sysfs, record, errors);
  if (record.deviceInfoFile) rmSync(record.deviceInfoFile, { force: true });
  return errors;
}

export async function cmdAdd(req: PluginRequest, host: SriovHost): Promise<AnyResult> {
  const conf = parseSriovConf(req.conf, req.args);
  refuseTenantHostRoot(req);
  const state = new SriovState(stateDir(host.sysfs));
  const vf = resolveVf(host.sysfs, conf.deviceID);
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
    const fresh = resolveVf(host.sysfs, conf.deviceID);
    const mode: VfRecord['mode'] = fresh.netdev
      ? 'kernel'
      : USERSPACE_DRIVERS.has(fresh.driver ?? '')
        ? 'dpdk'
        : (() => {
            throw new CniError(ErrorCode.InvalidNetworkConfig, `VF ${vf.address} has no netdev and is not on a userspace driver`, `driver ${fresh.driver ?? 'none'}`);
          })();
    const pf = await host.openPfOps();
    let record: VfRecord | undefined;
    let ipamDone = false;
    try {
      const vfinfo = (await pf.vfs(vf.pfNetdev)).find((v) => v.vf === vf.index);
      if (!vfinfo) throw new CniError(ErrorCode.InvalidNetworkConfig, `${vf.pfNetdev} does not report VF ${vf.index}`);
      const snapshot: VfRecord['snapshot'] = { vfinfo };
      if (mode === 'kernel') snapshot.netdev = await snapshotNetdev(fresh.netdev!);
      record = {
        schemaVersion: 1,
        vf: { address: vf.address, pf: vf.pf, pfNetdev: vf.pfNetdev, index: vf.index },
        containerID: req.containerID,
        ifName: req.ifName,
        netns: req.netns,
        mode,
        snapshot,
        stdin: req.stdin.toString(),
        stage: 'snapshot',
      };
      // Written before the first change: whatever happens next, DEL and GC know what to put back.
      state.writeVf(record);
      await applyPfSide(pf, vf, conf);
      record.stage = 'configured';
      state.writeVf(record);
      const iface: Result['interfaces'] = [{ name: req.ifName, sandbox: req.netns, pciID: vf.address }];
      if (mode === 'kernel') {
        const moved = record;
        Object.assign(
          iface[0]!,
          await moveIntoPod(record, conf, () => {
            // From here the pod's ifName is this VF: DEL and GC look for it there.
            moved.stage = 'moved';
            state.writeVf(moved);
          }),
        );
      } else {
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

export async function cmdDel(req: PluginRequest, host: SriovHost): Promise<void> {
  const state = new SriovState(stateDir(host.sysfs));
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

export async function cmdCheck(req: PluginRequest, host: SriovHost): Promise<void> {
  const conf = parseSriovConf(req.conf, req.args);
  const state = new SriovState(stateDir(host.sysfs));
  const record = state.forAttachment(req.containerID, req.ifName);
  if (!record || record.stage !== 'added') throw new CniError(ErrorCode.InvalidNetworkConfig, `no VF is attached as ${req.ifName} to ${req.containerID}`);
  const pf = await host.openPfOps();
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
        const prev = req.conf.prevResult ? (req.conf.prevResult as Result).interfaces?.find((i) => i.name === req.ifName) : undefined;
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
export async function cmdGc(req: PluginRequest, host: SriovHost): Promise<void> {
  const state = new SriovState(stateDir(host.sysfs));
  const valid = (req.conf['cni.dev/valid-attachments'] ?? []) as Attachment[];
  const errors: string[] = [];
  for (const record of state.all()) {
    const listed = valid.some((a) => a.containerID === record.containerID && a.ifname === record.ifName);
    if (listed && netnsExists(record.netns)) continue;
    await withVfLock(state.dir, record.vf.address, async () => {
      const left = await restoreVf(host, record, {
        ...req,
        containerID: record.containerID,
        ifName: record.ifName,
        netns: record.netns,
        stdin: Buffer.from(record.stdin),
        env: { ...req.env, CNI_CONTAINERID: record.containerID, CNI_IFNAME: record.ifName, CNI_NETNS: record.netns },
      });
      if (left.length) errors.push(`${record.vf.address}: ${left.join('; ')}`);
      else state.remove(record);
    });
  }
  if (errors.length) throw new CniError(ErrorCode.Internal, 'GC could not restore every stranded VF', errors.join(' | '));
}

/** The plugin acting on the host `openHost` gives: the entry point's choice (src/cmd/sriov-host.ts). */
export function sriovPluginWith(openHost: () => Promise<SriovHost>): Plugin {
  return {
    about: 'Plexus SR-IOV CNI plugin (sriov-cni compatible)',
    supportedVersions: SUPPORTED_VERSIONS,
    add: async (req) => cmdAdd(req, await openHost()),
    del: async (req) => cmdDel(req, await openHost()),
    check: async (req) => cmdCheck(req, await openHost()),
    gc: async (req) => cmdGc(req, await openHost()),
  };
}
