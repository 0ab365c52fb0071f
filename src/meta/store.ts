/**
 * The node-local attachment store: one record per sandbox, written before the first delegate runs
 * (temp + rename, checksum, schema version) and holding everything DEL needs without the
 * API server: every delegate's full config, ifname, runtimeConfig, device and result.
 * Not fsync'd: a record guards against the plugin or daemon dying, which leaves the page cache
 * intact; a node crash takes the netns and links with it, and an unreadable record after one makes
 * DEL reconstruct from config (as with no record). fsync was ~1 ms per write on the per-pod path.
 * A rewrite first moves the old record aside (`<id>.json.prev`) so that no rename replaces a file:
 * ext4 (auto_da_alloc) flushes a file renamed over another, 0.2 ms per write. A reader that finds only
 * the aside copy (a process that died between the renames) uses it: it is the previous record whole.
 */
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, renameSync, rmSync, statSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CniArgs } from '../cni/args.js';
import { writeFileAtomic } from '../cni/cache.js';
import type { AnyResult } from '../cni/types.js';

export const STORE_SCHEMA_VERSION = 1;

export interface StoredAttachment {
  /** Display name: `<ns>/<nad>` for NADs, the CNI name of a cluster network from a file. */
  network: string;
  ifName: string;
  /** The delegate network configuration, exactly as executed (conf or conflist JSON text). */
  config: string;
  capabilityArgs: Record<string, unknown>;
  isDefault: boolean;
  deviceID?: string;
  deviceInfoFile?: string;
  defaultRoute?: string[];
  /** Multus auxiliary chain: no interface of its own, no network-status entry. */
  auxiliary?: boolean;
  /** planned: ADD not (yet) known to have succeeded; added: its result is below. */
  state: 'planned' | 'added';
  result?: AnyResult;
}

export interface AttachmentRecord {
  containerID: string;
  netns: string;
  ifName: string;
  args: CniArgs;
  podNamespace: string;
  podName: string;
  podUID: string;
  /** The version the runtime spoke to us (the result we return is in it). */
  cniVersion: string;
  attachments: StoredAttachment[];
  /** network-status (annotation value) written to the pod after the reply, not yet acknowledged by the API. */
  pendingStatus?: string;
}

interface StoreFile {
  schemaVersion: number;
  checksum: string;
  record: AttachmentRecord;
}

export type StoreRead = { kind: 'ok'; record: AttachmentRecord } | { kind: 'missing' } | { kind: 'corrupt'; reason: string };

/** Its mtime is when empty records were last pruned (not a record: no .json suffix). */
const PRUNED_MARKER = '.pruned';

/** Suffix of a record moved aside while its successor is written. */
const ASIDE = '.prev';

/**
 * The record, else its aside copy. Tried twice: a writer in another process may move the record aside,
 * write its successor and drop the aside copy between our two reads.
 */
function readRecordText(path: string, aside: string): string {
  const attempts = [path, aside, path, aside];
  for (const [i, p] of attempts.entries()) {
    try {
      return readFileSync(p, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || i === attempts.length - 1) throw err;
    }
  }
  throw new Error('unreachable');
}

function checksumOf(serializedRecord: string): string {
  return `sha256:${createHash('sha256').update(serializedRecord).digest('hex')}`;
}

export class AttachmentStore {
  constructor(readonly dir: string) {}

  path(containerID: string): string {
    return join(this.dir, `${containerID}.json`);
  }

  private asidePath(containerID: string): string {
    return `${this.path(containerID)}${ASIDE}`;
  }

  write(record: AttachmentRecord): void {
    // The record is serialized once, for its checksum and for the file.
    const text = JSON.stringify(record);
    const file = `{"schemaVersion":${STORE_SCHEMA_VERSION},"checksum":${JSON.stringify(checksumOf(text))},"record":${text}}`;
    const path = this.path(record.containerID);
    const aside = this.asidePath(record.containerID);
    try {
      renameSync(path, aside);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    writeFileAtomic(path, file, { durable: false });
    // Also an aside copy left by a process that died between the renames.
    try {
      unlinkSync(aside);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }

  read(containerID: string): StoreRead {
    let text: string;
    try {
      text = readRecordText(this.path(containerID), this.asidePath(containerID));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'missing' };
      return { kind: 'corrupt', reason: (err as Error).message };
    }
    let file: Partial<StoreFile>;
    try {
      file = JSON.parse(text) as Partial<StoreFile>;
    } catch (err) {
      return { kind: 'corrupt', reason: `not JSON: ${(err as Error).message}` };
    }
    if (file.schemaVersion !== STORE_SCHEMA_VERSION) return { kind: 'corrupt', reason: `schema version ${String(file.schemaVersion)}, expected ${STORE_SCHEMA_VERSION}` };
    if (!file.record || !Array.isArray(file.record.attachments)) return { kind: 'corrupt', reason: 'no record' };
    if (file.checksum !== checksumOf(JSON.stringify(file.record))) return { kind: 'corrupt', reason: 'checksum mismatch' };
    return { kind: 'ok', record: file.record };
  }

  delete(containerID: string): void {
    rmSync(this.path(containerID), { force: true });
    rmSync(this.asidePath(containerID), { force: true });
  }

  /** Container IDs whose record still lists attachments (or cannot be read): what is attached on the node. */
  active(): string[] {
    return this.list().filter((id) => {
      const r = this.read(id);
      return r.kind !== 'ok' || r.record.attachments.length > 0;
    });
  }

  /**
   * Removes records that list nothing and are older than `ageMs`: nothing is attached, no DEL will repeat.
   * It reads every record, so it runs at most once per `everyMs` (a marker file's mtime says when it last
   * ran, which also holds across one-shot processes).
   */
  pruneEmpty(ageMs: number, everyMs: number, now = Date.now()): void {
    const marker = join(this.dir, PRUNED_MARKER);
    const last = statSync(marker, { throwIfNoEntry: false })?.mtimeMs;
    if (last !== undefined && now - last < everyMs) return;
    try {
      writeFileSync(marker, '');
      utimesSync(marker, now / 1000, now / 1000);
    } catch {
      return; // no store yet, or not writable: pruning must never fail the DEL that asked for it
    }
    for (const id of this.list()) {
      const r = this.read(id);
      if (r.kind !== 'ok' || r.record.attachments.length) continue;
      const mtime = (statSync(this.path(id), { throwIfNoEntry: false }) ?? statSync(this.asidePath(id), { throwIfNoEntry: false }))?.mtimeMs ?? now;
      if (now - mtime > ageMs) this.delete(id);
    }
  }

  /** Drops a record's pending network-status once the API has it, unless the record has moved on since. */
  settlePendingStatus(containerID: string, status: string): void {
    const r = this.read(containerID);
    if (r.kind !== 'ok' || r.record.pendingStatus !== status) return;
    const { pendingStatus: _settled, ...record } = r.record;
    this.write(record);
  }

  /** Records of attached sandboxes whose network-status the API has not acknowledged. */
  pendingStatuses(): (AttachmentRecord & { pendingStatus: string })[] {
    return this.list().flatMap((id) => {
      const r = this.read(id);
      return r.kind === 'ok' && r.record.pendingStatus !== undefined && r.record.attachments.length ? [r.record as AttachmentRecord & { pendingStatus: string }] : [];
    });
  }

  /** Container IDs with a record (readable or not). */
  list(): string[] {
    try {
      const ids = readdirSync(this.dir).flatMap((f) => (f.endsWith('.json') ? [f.slice(0, -'.json'.length)] : f.endsWith(`.json${ASIDE}`) ? [f.slice(0, -`.json${ASIDE}`.length)] : []));
      return [...new Set(ids)];
    } catch {
      return [];
    }
  }
}
