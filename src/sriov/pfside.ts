/**
 * The PF side of a VF (what `ip link set <pf> vf N …` does): applied in sriov-cni's order on ADD, and
 * put back from the snapshot on DEL, GC and a failed ADD.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { CniError, ErrorCode } from '../cni/errors.js';
import type { VfInfo, VfSetting } from '../net/vf.js';
import type { SriovConf } from './conf.js';
import type { PfOps } from './pfops.js';
import type { VfRef } from './state.js';

const MAC_RETRIES = 20;
const MAC_RETRY_MS = 100;

/** Sets the admin MAC and waits until the PF reports it (iavf applies it asynchronously). */
export async function setAdminMac(pf: PfOps, vf: VfRef, mac: string): Promise<void> {
  await pf.setVf(vf.pfNetdev, vf.index, { kind: 'mac', mac });
  for (let i = 0; i < MAC_RETRIES; i++) {
    const now = (await pf.vfs(vf.pfNetdev)).find((v) => v.vf === vf.index)?.mac;
    if (now === mac.toLowerCase()) return;
    await sleep(MAC_RETRY_MS);
  }
  throw new CniError(ErrorCode.Internal, `the PF did not apply MAC ${mac} to VF ${vf.index}`, `${vf.pfNetdev} still reports another one after ${(MAC_RETRIES * MAC_RETRY_MS) / 1000} s`);
}

/** PF side, in sriov-cni's order: vlan+qos+proto, admin MAC, rate, spoofchk, trust, link state. */
export async function applyPfSide(pf: PfOps, vf: VfRef, conf: SriovConf): Promise<void> {
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
export async function restorePfSide(pf: PfOps, vf: VfRef, snap: VfInfo, errors: string[]): Promise<void> {
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
