/**
 * libcni's result cache (`kind: cniCacheV1`) in its exact format and path scheme, so entries are
 * interchangeable with podman's, containerd's and cnitool's. Unlike libcni, writes are atomic.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { CniArgs } from './args.js';
import type { AnyResult } from './types.js';

export const DEFAULT_CACHE_DIR = '/var/lib/cni';

export interface CacheEntry {
  kind: 'cniCacheV1';
  containerId: string;
  /** base64 of the network configuration bytes (the whole conflist for a list) */
  config: string;
  ifName: string;
  networkName: string;
  netns?: string;
  cniArgs?: CniArgs;
  capabilityArgs?: Record<string, unknown>;
  result?: AnyResult;
}

export interface AttachmentKey {
  networkName: string;
  containerId: string;
  ifName: string;
}

export function cachePath(cacheDir: string, key: AttachmentKey): string {
  return join(cacheDir, 'results', `${key.networkName}-${key.containerId}-${key.ifName}`);
}

/** Builds an entry with libcni's key order and omitempty fields. */
export function makeCacheEntry(key: AttachmentKey, configBytes: Buffer, extra: { netns?: string; cniArgs?: CniArgs; capabilityArgs?: Record<string, unknown>; result?: AnyResult }): CacheEntry {
  const entry: CacheEntry = {
    kind: 'cniCacheV1',
    containerId: key.containerId,
    config: configBytes.toString('base64'),
    ifName: key.ifName,
    networkName: key.networkName,
  };
  if (extra.netns) entry.netns = extra.netns;
  if (extra.cniArgs?.length) entry.cniArgs = extra.cniArgs;
  if (extra.capabilityArgs && Object.keys(extra.capabilityArgs).length) entry.capabilityArgs = extra.capabilityArgs;
  if (extra.result) entry.result = extra.result;
  return entry;
}

/** Temp + rename: readers see the old or the new file, never a torn one; durable adds fsync of file and dir. */
export function writeFileAtomic(path: string, data: string | Buffer, { mode = 0o600, durable = true }: { mode?: number; durable?: boolean } = {}): void {
  const dir = dirname(path);
  const tmp = join(dir, `.${process.pid}.${Date.now()}.${Math.random().toString(36).slice(2)}.tmp`);
  let fd: number;
  try {
    fd = openSync(tmp, 'w', mode);
  } catch (err) {
    // The directory is made on first use only (a mkdir per write is a syscall on the per-pod path).
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    fd = openSync(tmp, 'w', mode);
  }
  try {
    writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
    if (durable) fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  if (!durable) return;
  const dfd = openSync(dir, 'r');
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

export function writeCacheEntry(cacheDir: string, entry: CacheEntry): void {
  const key = { networkName: entry.networkName, containerId: entry.containerId, ifName: entry.ifName };
  writeFileAtomic(cachePath(cacheDir, key), JSON.stringify(entry));
}

export type CacheRead = { kind: 'entry'; entry: CacheEntry } | { kind: 'legacy'; result: AnyResult } | { kind: 'missing' } | { kind: 'corrupt'; reason: string };

/** Reads an entry; a file without `kind: cniCacheV1` is read as a bare legacy result, as libcni does. */
export function readCacheEntry(cacheDir: string, key: AttachmentKey): CacheRead {
  let text: string;
  try {
    text = readFileSync(cachePath(cacheDir, key), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'missing' };
    return { kind: 'corrupt', reason: (err as Error).message };
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return { kind: 'corrupt', reason: (err as Error).message };
  }
  if (typeof value !== 'object' || value === null) return { kind: 'corrupt', reason: 'not a JSON object' };
  const obj = value as Partial<CacheEntry> & { cniVersion?: unknown };
  if (obj.kind === 'cniCacheV1') return { kind: 'entry', entry: obj as CacheEntry };
  if (typeof obj.cniVersion === 'string') return { kind: 'legacy', result: obj as unknown as AnyResult };
  return { kind: 'corrupt', reason: 'neither a cniCacheV1 entry nor a result' };
}

export function deleteCacheEntry(cacheDir: string, key: AttachmentKey): void {
  rmSync(cachePath(cacheDir, key), { force: true });
}

/** The cached attachments of one network (libcni GetCachedAttachments): valid entries only. */
export function listCacheEntries(cacheDir: string, networkName: string): CacheEntry[] {
  let names: string[];
  try {
    names = readdirSync(join(cacheDir, 'results'));
  } catch {
    return [];
  }
  const out: CacheEntry[] = [];
  for (const name of names) {
    if (!name.startsWith(`${networkName}-`)) continue;
    try {
      const obj = JSON.parse(readFileSync(join(cacheDir, 'results', name), 'utf8')) as Partial<CacheEntry>;
      if (obj.kind === 'cniCacheV1' && obj.networkName === networkName && obj.ifName && obj.containerId) out.push(obj as CacheEntry);
    } catch {
      /* unreadable entries are not attachments libcni would know either */
    }
  }
  return out;
}
