/**
 * IP addresses as numbers (bigint), so that a /8 or a /64 costs what a /24 costs: ranges are two
 * numbers and a list of excluded intervals, never a list of addresses.
 */
import { isIP } from 'node:net';

export type Family = 4 | 6;

export interface Ip {
  family: Family;
  value: bigint;
}

export const bitsOf = (family: Family): number => (family === 4 ? 32 : 128);

/** An address in text, IPv4 dotted quad or IPv6 (an embedded IPv4 tail allowed); no zone, no prefix. */
export function parseIp(text: string): Ip | undefined {
  const family = isIP(text);
  if (family === 4) return { family, value: text.split('.').reduce((n, o) => (n << 8n) | BigInt(Number(o)), 0n) };
  if (family !== 6 || text.includes('%')) return undefined;
  let s = text;
  // An IPv4 tail (::ffff:1.2.3.4) as its two hextets.
  const tail = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (tail) {
    const v = parseIp(tail[1]!)!.value;
    s = `${s.slice(0, -tail[1]!.length)}${(v >> 16n).toString(16)}:${(v & 0xffffn).toString(16)}`;
  }
  const [head, rest] = s.split('::') as [string, string | undefined];
  const left = head ? head.split(':') : [];
  const right = rest === undefined ? [] : rest ? rest.split(':') : [];
  const groups = rest === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  return { family: 6, value: groups.reduce((n, g) => (n << 16n) | BigInt(parseInt(g, 16)), 0n) };
}

/** RFC 5952 text: IPv4 dotted, IPv6 lower case with the longest run of zero groups (two or more) as `::`. */
export function formatIp(ip: Ip): string {
  if (ip.family === 4) return [24n, 16n, 8n, 0n].map((s) => String((ip.value >> s) & 0xffn)).join('.');
  const groups = Array.from({ length: 8 }, (_, i) => Number((ip.value >> BigInt(112 - 16 * i)) & 0xffffn));
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; i++) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

export interface Cidr {
  family: Family;
  /** The address as written (`10.1.2.3/24` keeps .3). */
  ip: bigint;
  prefix: number;
  /** First and last address of the subnet. */
  network: bigint;
  broadcast: bigint;
}

/** `addr/prefix`; undefined when it is not one. */
export function parseCidr(text: string): Cidr | undefined {
  const [addr, prefix, extra] = text.split('/');
  if (extra !== undefined || addr === undefined || prefix === undefined || !/^\d{1,3}$/.test(prefix)) return undefined;
  const ip = parseIp(addr);
  const bits = ip ? bitsOf(ip.family) : 0;
  const p = Number(prefix);
  if (!ip || p > bits) return undefined;
  const host = (1n << BigInt(bits - p)) - 1n;
  return { family: ip.family, ip: ip.value, prefix: p, network: ip.value & ~host & ((1n << BigInt(bits)) - 1n), broadcast: (ip.value & ~host) | host };
}

export function formatCidr(c: { family: Family; network: bigint; prefix: number }): string {
  return `${formatIp({ family: c.family, value: c.network })}/${c.prefix}`;
}
