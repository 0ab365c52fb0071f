/** Addresses as rtnetlink carries them: IPv4/IPv6 bytes and text (RFC 5952), CIDRs, MACs; and the error every netlink operation throws. */
import { isIP } from 'node:net';

/** A failed netlink operation: the errno name (`code`), the operation and its arguments. */
export class NetError extends Error {
  constructor(
    readonly op: string,
    readonly code: string,
    detail: string,
  ) {
    super(`${op}: ${code}${detail ? ` (${detail})` : ''}`);
    this.name = 'NetError';
  }
}

export function macString(b: Buffer | undefined): string | undefined {
  return b ? [...b].map((x) => x.toString(16).padStart(2, '0')).join(':') : undefined;
}

export function ipBytes(ip: string): Buffer {
  const family = isIP(ip);
  if (family === 4) return Buffer.from(ip.split('.').map(Number));
  if (family === 6) {
    const [head, tail] = ip.includes('::') ? ip.split('::') : [ip, undefined];
    const h = head ? head.split(':') : [];
    const t = tail ? tail.split(':') : [];
    const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
    const out = Buffer.alloc(16);
    groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
    return out;
  }
  throw new NetError('parse address', 'EINVAL', `"${ip}" is not an IP address`);
}

export function ipString(b: Buffer): string {
  if (b.length === 4) return [...b].join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  // Longest run of zero groups becomes "::" (RFC 5952).
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) [best, bestLen] = [i, j - i];
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

/** Splits a CIDR into address bytes and prefix length (a bare address gets the full length). */
export function parseCidr(cidr: string): { ip: Buffer; prefix: number; family: 4 | 6 } {
  const [addr, len] = cidr.split('/');
  const ip = ipBytes(addr ?? '');
  const family = ip.length === 4 ? 4 : 6;
  const max = family === 4 ? 32 : 128;
  const prefix = len === undefined ? max : Number(len);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max || (len !== undefined && !/^\d+$/.test(len))) {
    throw new NetError('parse address', 'EINVAL', `bad prefix in "${cidr}"`);
  }
  return { ip, prefix, family };
}
