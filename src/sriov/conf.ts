/**
 * The `sriov` plugin's configuration: sriov-cni's keys, parsed explicitly with the CNI code the spec
 * names (7, invalid network config) and the field in every message. "vlan absent" (leave the VF's
 * VLAN alone) is distinct from `vlan: 0` (clear it); `mtu` is applied and restored (sriov-cni drops it).
 */
import { type CniArgs, getArg } from '../cni/args.js';
import { CniError, ErrorCode } from '../cni/errors.js';
import type { PluginStdinConf } from '../cni/skel.js';
import type { LinkState, VlanProto } from '../net/vf.js';
import { macNotAssignable } from '../net/addr.js';
import { parsePciAddress } from './host.js';

export interface SriovConf {
  /** The VF's PCI address (`deviceID`, or Multus's `pciBusID`). */
  deviceID: string;
  vlan?: number;
  vlanQoS?: number;
  vlanProto?: VlanProto;
  /** Admin MAC (PF side) and the netdev's MAC: runtimeConfig.mac > CNI_ARGS MAC > `mac`. */
  mac?: string;
  spoofchk?: boolean;
  trust?: boolean;
  linkState?: LinkState;
  minTxRate?: number;
  maxTxRate?: number;
  mtu?: number;
  ipam?: { type: string } & Record<string, unknown>;
  logLevel?: string;
  logFile?: string;
}

const MAC = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/;

function invalid(msg: string, details?: string): CniError {
  return new CniError(ErrorCode.InvalidNetworkConfig, msg, details);
}

function int(conf: Record<string, unknown>, key: string, min: number, max: number): number | undefined {
  const v = conf[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw invalid(`${key} must be an integer in ${min}..${max}`, `got ${JSON.stringify(v)}`);
  return v;
}

function onOff(conf: Record<string, unknown>, key: string): boolean | undefined {
  const v = conf[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw invalid(`${key} must be "on" or "off"`, `got ${JSON.stringify(v)}`);
  // sriov-cni: only exactly "on" enables it; any other string disables it. Kept, for existing NADs.
  return v === 'on';
}

function mac(value: unknown, where: string): string {
  if (typeof value !== 'string' || !MAC.test(value.toLowerCase())) throw invalid(`${where} is not a MAC address`, `got ${JSON.stringify(value)}`);
  const why = macNotAssignable(value);
  if (why) throw invalid(`${where} ${why}`, `${value} cannot be a VF's address`);
  return value.toLowerCase();
}

export function parseSriovConf(conf: PluginStdinConf, args: CniArgs): SriovConf {
  const c = conf as unknown as Record<string, unknown>;
  const device = c.deviceID ?? c.pciBusID;
  if (typeof device !== 'string' || !device) throw invalid('deviceID is required (the VF PCI address the meta plugin injects)');
  const addr = parsePciAddress(device);
  if (!addr) throw invalid('deviceID is not a PCI address', `got ${JSON.stringify(device)}; expected dddd:bb:dd.f`);
  const out: SriovConf = { deviceID: device.toLowerCase() };
  const vlan = int(c, 'vlan', 0, 4094);
  const qos = int(c, 'vlanQoS', 0, 7);
  const protoRaw = c.vlanProto;
  if (vlan !== undefined) out.vlan = vlan;
  if (qos !== undefined) {
    if (vlan === undefined) throw invalid('vlanQoS needs vlan');
    if (qos !== 0 && vlan === 0) throw invalid('a non-zero vlanQoS needs a non-zero vlan');
    out.vlanQoS = qos;
  }
  if (protoRaw !== undefined && protoRaw !== null) {
    if (typeof protoRaw !== 'string' || !['802.1q', '802.1ad'].includes(protoRaw.toLowerCase())) throw invalid('vlanProto must be "802.1q" or "802.1ad"', `got ${JSON.stringify(protoRaw)}`);
    if (vlan === undefined) throw invalid('vlanProto needs vlan');
    out.vlanProto = protoRaw.toLowerCase() === '802.1ad' ? '802.1ad' : '802.1Q';
    if (out.vlanProto === '802.1ad' && vlan === 0) throw invalid('vlanProto 802.1ad needs a non-zero vlan');
  }
  const rc = (c.runtimeConfig ?? {}) as Record<string, unknown>;
  const argMac = getArg(args, 'MAC');
  if (rc.mac !== undefined) out.mac = mac(rc.mac, 'runtimeConfig.mac');
  else if (argMac !== undefined) out.mac = mac(argMac, 'CNI_ARGS MAC');
  else if (c.mac !== undefined) out.mac = mac(c.mac, 'mac');
  const spoofchk = onOff(c, 'spoofchk');
  if (spoofchk !== undefined) out.spoofchk = spoofchk;
  const trust = onOff(c, 'trust');
  if (trust !== undefined) out.trust = trust;
  if (c.link_state !== undefined && c.link_state !== null) {
    if (c.link_state !== 'auto' && c.link_state !== 'enable' && c.link_state !== 'disable') throw invalid('link_state must be auto, enable or disable', `got ${JSON.stringify(c.link_state)}`);
    out.linkState = c.link_state;
  }
  const min = int(c, 'min_tx_rate', 0, 0xffffffff);
  const max = int(c, 'max_tx_rate', 0, 0xffffffff);
  if (min !== undefined || max !== undefined) {
    // sriov-cni: either one present sets both (the missing one as 0).
    out.minTxRate = min ?? 0;
    out.maxTxRate = max ?? 0;
    if (out.maxTxRate !== 0 && out.minTxRate > out.maxTxRate) throw invalid('min_tx_rate is above max_tx_rate', `${out.minTxRate} > ${out.maxTxRate}`);
  }
  const mtu = int(c, 'mtu', 68, 65535);
  if (mtu !== undefined) out.mtu = mtu;
  if (c.ipam !== undefined && c.ipam !== null) {
    const ipam = c.ipam as Record<string, unknown>;
    if (typeof ipam !== 'object' || Array.isArray(ipam)) throw invalid('ipam must be an object');
    if (typeof ipam.type === 'string' && ipam.type) out.ipam = ipam as SriovConf['ipam'];
    else if (Object.keys(ipam).length) throw invalid('ipam.type is required when ipam is set');
  }
  for (const k of ['logLevel', 'logFile'] as const) if (typeof c[k] === 'string') out[k] = c[k] as string;
  return out;
}
