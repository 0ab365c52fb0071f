/**
 * A pool's address space cut into aligned chunks of 2^chunkBits addresses: the unit a node owns
 * (docs/ipam.md). Everything here is arithmetic on chunk indices and excluded intervals, so finding a
 * free chunk in a /64 with 2^58 of them costs what it costs in a /24: it jumps over claimed chunks and
 * excluded spans instead of walking addresses.
 */
import { type Family, bitsOf } from './addr.js';
import type { IpamRange } from './config.js';

export interface Geometry {
  family: Family;
  network: bigint;
  prefix: number;
  chunkBits: number;
}

/**
 * Chunk size from the pool's size: 4 addresses for a /24 (64 chunks, so ten nodes share one and the
 * pool can still be filled), up to 64 for a /16 and larger. Every node must use the same: the pool
 * object stores it, and what it stores wins (src/ipam, the claim path).
 */
export function defaultChunkBits(range: Pick<IpamRange, 'family' | 'prefix'>): number {
  const hostBits = bitsOf(range.family) - range.prefix;
  return Math.min(hostBits, Math.max(2, Math.min(6, hostBits - 8)));
}

export function geometry(range: IpamRange, chunkBits = defaultChunkBits(range)): Geometry {
  return { family: range.family, network: range.network, prefix: range.prefix, chunkBits };
}

export function chunkOf(g: Geometry, addr: bigint): bigint {
  return (addr - g.network) >> BigInt(g.chunkBits);
}

export function chunkSpan(g: Geometry, index: bigint): [bigint, bigint] {
  const lo = g.network + (index << BigInt(g.chunkBits));
  return [lo, lo + (1n << BigInt(g.chunkBits)) - 1n];
}

/** The excluded interval containing `addr`, if one does. */
function excludedAt(range: IpamRange, addr: bigint): [bigint, bigint] | undefined {
  let found: [bigint, bigint] | undefined;
  for (const iv of range.excluded) if (addr >= iv[0] && addr <= iv[1] && (!found || iv[1] > found[1])) found = iv;
  return found;
}

/** The lowest allocatable address of the range at or after `from` and at most `to`, skipping `taken`. */
export function firstFree(range: IpamRange, from: bigint, to: bigint, taken: (addr: bigint) => boolean): bigint | undefined {
  let a = from < range.first ? range.first : from;
  const end = to > range.last ? range.last : to;
  while (a <= end) {
    const ex = excludedAt(range, a);
    if (ex) {
      a = ex[1] + 1n;
      continue;
    }
    if (!taken(a)) return a;
    a++;
  }
  return undefined;
}

/**
 * The first chunk at or after `start` (wrapping round once) that holds an allocatable address and is
 * not `claimed`. Steps over claimed chunks one by one (there are as many as nodes hold) and over
 * excluded spans in one jump.
 */
export function pickChunk(g: Geometry, range: IpamRange, claimed: Set<bigint>, start: bigint): bigint | undefined {
  const firstChunk = chunkOf(g, range.first);
  const lastChunk = chunkOf(g, range.last);
  const scan = (from: bigint, to: bigint): bigint | undefined => {
    let i = from;
    while (i <= to) {
      if (claimed.has(i)) {
        i++;
        continue;
      }
      const [lo, hi] = chunkSpan(g, i);
      const free = firstFree(range, lo, hi, () => false);
      if (free !== undefined) return i;
      // Nothing allocatable in this chunk: an exclusion covers the rest of it, maybe more; jump past it.
      const ex = excludedAt(range, lo < range.first ? range.first : lo);
      i = ex ? chunkOf(g, ex[1]) + 1n : i + 1n;
    }
    return undefined;
  };
  const s = start < firstChunk || start > lastChunk ? firstChunk : start;
  return scan(s, lastChunk) ?? (s > firstChunk ? scan(firstChunk, s - 1n) : undefined);
}

/** A node's starting chunk: spread over the pool by its name, so that nodes claiming at once rarely collide. */
export function startChunk(g: Geometry, range: IpamRange, nodeName: string): bigint {
  const firstChunk = chunkOf(g, range.first);
  const count = chunkOf(g, range.last) - firstChunk + 1n;
  let h = 0n;
  for (const c of Buffer.from(nodeName)) h = (h * 131n + BigInt(c)) % 1_000_000_007n;
  return firstChunk + (h % count);
}
