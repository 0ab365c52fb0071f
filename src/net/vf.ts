/**
 * PF-side VF attributes as rtnetlink bytes (include/uapi/linux/if_link.h). Hand-encoded because
 * `netlink` 0.3.0 writes 14-byte 802.1ad VLAN entries (the kernel wants 16) and cannot parse the
 * kernel's 16-byte ones. One setting per RTM_SETLINK, byte-identical to the matching
 * `ip link set <pf> vf N …` command, so each failure names exactly one attribute.
 */

export const RTM_GETLINK = 18;
export const RTM_SETLINK = 19;
export const IFLA_IFNAME = 3;
export const IFLA_VFINFO_LIST = 22;
export const IFLA_EXT_MASK = 29;
export const RTEXT_FILTER_VF = 1;
const IFLA_VF_INFO = 1;
const IFLA_VF_MAC = 1;
const IFLA_VF_VLAN = 2;
const IFLA_VF_TX_RATE = 3;
const IFLA_VF_SPOOFCHK = 4;
const IFLA_VF_LINK_STATE = 5;
const IFLA_VF_RATE = 6;
const IFLA_VF_TRUST = 9;
const IFLA_VF_VLAN_LIST = 12;
const IFLA_VF_VLAN_INFO = 1;
const ETH_P_8021Q = 0x8100;
const ETH_P_8021AD = 0x88a8;
const UNKNOWN_U32 = 0xffffffff;

export type VlanProto = '802.1Q' | '802.1ad';
export type LinkState = 'auto' | 'enable' | 'disable';
const LINK_STATES: LinkState[] = ['auto', 'enable', 'disable'];

/** One PF-side change to one VF. */
export type VfSetting =
  | { kind: 'mac'; mac: string }
  | { kind: 'vlan'; vlan: number; qos: number; proto: VlanProto }
  | { kind: 'spoofchk'; on: boolean }
  | { kind: 'trust'; on: boolean }
  | { kind: 'linkState'; state: LinkState }
  | { kind: 'rate'; minTxRate: number; maxTxRate: number };

/** A VF as the PF reports it (`ip -d link show <pf>` vfinfo_list). */
export interface VfInfo {
  vf: number;
  mac: string;
  vlan: number;
  qos: number;
  vlanProto: VlanProto;
  /** undefined: the driver does not report it (the kernel sends -1) */
  spoofchk?: boolean;
  trust?: boolean;
  linkState: LinkState;
  minTxRate: number;
  maxTxRate: number;
}

const align4 = (n: number): number => (n + 3) & ~3;

/** One netlink attribute: header, payload, zero padding to 4 bytes. */
export function attr(type: number, payload: Buffer): Buffer {
  const out = Buffer.alloc(align4(4 + payload.length));
  out.writeUInt16LE(4 + payload.length, 0);
  out.writeUInt16LE(type, 2);
  payload.copy(out, 4);
  return out;
}

function u32s(...values: number[]): Buffer {
  const b = Buffer.alloc(values.length * 4);
  values.forEach((v, i) => b.writeUInt32LE(v >>> 0, i * 4));
  return b;
}

export function parseMac(mac: string): Buffer {
  if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(mac)) throw new Error(`invalid MAC address "${mac}"`);
  return Buffer.from(mac.split(':').map((h) => parseInt(h, 16)));
}

function checkU32(name: string, v: number, max = UNKNOWN_U32 - 1): void {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new Error(`${name} ${v} is out of range 0..${max}`);
}

/** The IFLA_VF_* attribute for one setting. */
export function encodeVfSetting(vf: number, s: VfSetting): Buffer {
  checkU32('vf', vf);
  switch (s.kind) {
    case 'mac': {
      const mac = Buffer.alloc(32);
      parseMac(s.mac).copy(mac);
      return attr(IFLA_VF_MAC, Buffer.concat([u32s(vf), mac]));
    }
    case 'vlan': {
      checkU32('vlan', s.vlan, 4095);
      checkU32('qos', s.qos, 7);
      if (s.proto === '802.1Q') return attr(IFLA_VF_VLAN, u32s(vf, s.vlan, s.qos));
      // struct ifla_vf_vlan_info is 16 bytes: three u32, a big-endian u16 protocol, two pad bytes.
      const info = Buffer.alloc(16);
      u32s(vf, s.vlan, s.qos).copy(info);
      info.writeUInt16BE(ETH_P_8021AD, 12);
      return attr(IFLA_VF_VLAN_LIST, attr(IFLA_VF_VLAN_INFO, info));
    }
    case 'spoofchk':
      return attr(IFLA_VF_SPOOFCHK, u32s(vf, s.on ? 1 : 0));
    case 'trust':
      return attr(IFLA_VF_TRUST, u32s(vf, s.on ? 1 : 0));
    case 'linkState':
      return attr(IFLA_VF_LINK_STATE, u32s(vf, LINK_STATES.indexOf(s.state)));
    case 'rate':
      checkU32('min_tx_rate', s.minTxRate);
      checkU32('max_tx_rate', s.maxTxRate);
      return attr(IFLA_VF_RATE, u32s(vf, s.minTxRate, s.maxTxRate));
  }
}

/** struct ifinfomsg for a link by index (family AF_UNSPEC). */
export function ifinfomsg(index: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeInt32LE(index, 4);
  return b;
}

/** RTM_SETLINK payload (after the netlink header) that applies one setting to VF `vf` of the PF. */
export function encodeSetVf(pfIndex: number, vf: number, s: VfSetting): Buffer {
  return Buffer.concat([ifinfomsg(pfIndex), attr(IFLA_VFINFO_LIST, attr(IFLA_VF_INFO, encodeVfSetting(vf, s)))]);
}

/** RTM_GETLINK payload asking for the PF's VF table. */
export function encodeGetVfs(pfIndex: number): Buffer {
  return Buffer.concat([ifinfomsg(pfIndex), attr(IFLA_EXT_MASK, u32s(RTEXT_FILTER_VF))]);
}

export const RTM_NEWLINKPROP = 108;
export const RTM_DELLINKPROP = 109;
const IFLA_PROP_LIST = 52;
const IFLA_ALT_IFNAME = 53;
const NLA_F_NESTED = 0x8000;

/** RTM_NEWLINKPROP / RTM_DELLINKPROP payload: one alternative name in a nested IFLA_PROP_LIST. */
export function encodeAltname(index: number, altname: string): Buffer {
  return Buffer.concat([ifinfomsg(index), attr(IFLA_PROP_LIST | NLA_F_NESTED, attr(IFLA_ALT_IFNAME, Buffer.from(`${altname}\0`)))]);
}

/** A whole netlink message (nlmsghdr + payload), as it goes on the socket. */
export function frame(type: number, flags: number, seq: number, pid: number, payload: Buffer): Buffer {
  const hdr = Buffer.alloc(16);
  hdr.writeUInt32LE(16 + payload.length, 0);
  hdr.writeUInt16LE(type, 4);
  hdr.writeUInt16LE(flags, 6);
  hdr.writeUInt32LE(seq, 8);
  hdr.writeUInt32LE(pid, 12);
  return Buffer.concat([hdr, payload]);
}

/** Attributes of a buffer as [type (flags masked), payload] pairs. */
export function parseAttrs(buf: Buffer): [number, Buffer][] {
  const out: [number, Buffer][] = [];
  let off = 0;
  while (off + 4 <= buf.length) {
    const len = buf.readUInt16LE(off);
    if (len < 4 || off + len > buf.length) throw new Error(`malformed netlink attribute at offset ${off}`);
    out.push([buf.readUInt16LE(off + 2) & 0x3fff, buf.subarray(off + 4, off + len)]);
    off += align4(len);
  }
  return out;
}

function readU32(buf: Buffer, at: number): number {
  if (buf.length < at + 4) throw new Error('short VF attribute');
  return buf.readUInt32LE(at);
}

function tri(v: number): boolean | undefined {
  return v === UNKNOWN_U32 ? undefined : v !== 0;
}

/** Decodes the payload of IFLA_VFINFO_LIST into the VF table (16-byte VLAN entries included). */
export function decodeVfInfoList(payload: Buffer): VfInfo[] {
  return parseAttrs(payload)
    .filter(([type]) => type === IFLA_VF_INFO)
    .map(([, info]) => {
      const vf: VfInfo = { vf: -1, mac: '00:00:00:00:00:00', vlan: 0, qos: 0, vlanProto: '802.1Q', linkState: 'auto', minTxRate: 0, maxTxRate: 0 };
      for (const [type, p] of parseAttrs(info)) {
        switch (type) {
          case IFLA_VF_MAC:
            vf.vf = readU32(p, 0);
            vf.mac = [...p.subarray(4, 10)].map((x) => x.toString(16).padStart(2, '0')).join(':');
            break;
          case IFLA_VF_VLAN:
            vf.vlan = readU32(p, 4);
            vf.qos = readU32(p, 8);
            break;
          case IFLA_VF_VLAN_LIST: {
            const first = parseAttrs(p).find(([t]) => t === IFLA_VF_VLAN_INFO)?.[1];
            if (first && first.length >= 14) {
              vf.vlan = readU32(first, 4);
              vf.qos = readU32(first, 8);
              vf.vlanProto = first.readUInt16BE(12) === ETH_P_8021AD ? '802.1ad' : '802.1Q';
            }
            break;
          }
          case IFLA_VF_SPOOFCHK: {
            const v = tri(readU32(p, 4));
            if (v !== undefined) vf.spoofchk = v;
            break;
          }
          case IFLA_VF_TRUST: {
            const v = tri(readU32(p, 4));
            if (v !== undefined) vf.trust = v;
            break;
          }
          case IFLA_VF_LINK_STATE:
            vf.linkState = LINK_STATES[readU32(p, 4)] ?? 'auto';
            break;
          case IFLA_VF_RATE:
            vf.minTxRate = readU32(p, 4);
            vf.maxTxRate = readU32(p, 8);
            break;
          case IFLA_VF_TX_RATE:
            if (!vf.maxTxRate) vf.maxTxRate = readU32(p, 4);
            break;
        }
      }
      return vf;
    });
}

/** Encodes a VF table as the kernel reports it (used by tests and the simulated PF). */
export function encodeVfInfoList(vfs: VfInfo[]): Buffer {
  const u = (b: boolean | undefined): number => (b === undefined ? UNKNOWN_U32 : b ? 1 : 0);
  return Buffer.concat(
    vfs.map((v) => {
      const mac = Buffer.alloc(32);
      parseMac(v.mac).copy(mac);
      const vlanInfo = Buffer.alloc(16);
      u32s(v.vf, v.vlan, v.qos).copy(vlanInfo);
      vlanInfo.writeUInt16BE(v.vlanProto === '802.1ad' ? ETH_P_8021AD : ETH_P_8021Q, 12);
      return attr(
        IFLA_VF_INFO,
        Buffer.concat([
          attr(IFLA_VF_MAC, Buffer.concat([u32s(v.vf), mac])),
          attr(IFLA_VF_VLAN, u32s(v.vf, v.vlan, v.qos)),
          attr(IFLA_VF_VLAN_LIST, attr(IFLA_VF_VLAN_INFO, vlanInfo)),
          attr(IFLA_VF_TX_RATE, u32s(v.vf, v.maxTxRate)),
          attr(IFLA_VF_SPOOFCHK, u32s(v.vf, u(v.spoofchk))),
          attr(IFLA_VF_LINK_STATE, u32s(v.vf, LINK_STATES.indexOf(v.linkState))),
          attr(IFLA_VF_RATE, u32s(v.vf, v.minTxRate, v.maxTxRate)),
          attr(IFLA_VF_TRUST, u32s(v.vf, u(v.trust))),
        ]),
      );
    }),
  );
}
