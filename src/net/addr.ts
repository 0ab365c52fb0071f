/** Address syntax shared by every parser of tenant input (no kernel access, cheap to import). */
import { isIP } from 'node:net';

/** `bytes` colon-separated hex octets (6 for a MAC, 8 for an InfiniBand GUID). */
export function isMac(v: string, bytes = 6): boolean {
  return new RegExp(`^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){${bytes - 1}}$`).test(v);
}

/** Why a syntactically valid MAC cannot be an interface's address (the kernel refuses it with EADDRNOTAVAIL). */
export function macNotAssignable(mac: string): string | undefined {
  const first = parseInt(mac.slice(0, 2), 16);
  if (/^(00:){5}00$/.test(mac)) return 'is all zeros';
  if (first & 1) return mac.toLowerCase() === 'ff:ff:ff:ff:ff:ff' ? 'is the broadcast address' : 'is a multicast address (low bit of the first octet set)';
  return undefined;
}

/** An IPv4 or IPv6 address without a zone (`fe80::1%eth0` names a host interface: never valid for a pod). */
export function isPlainIp(v: string): 0 | 4 | 6 {
  return v.includes('%') ? 0 : (isIP(v) as 0 | 4 | 6);
}

/** ip or ip/prefix, IPv4 or IPv6, no zone. */
export function isIpOrCidr(v: string): boolean {
  const [addr, prefix, extra] = v.split('/');
  if (extra !== undefined || !addr) return false;
  const family = isPlainIp(addr);
  if (!family) return false;
  if (prefix === undefined) return true;
  return /^\d{1,3}$/.test(prefix) && Number(prefix) <= (family === 4 ? 32 : 128);
}
