/**
 * The node-local attachment store: one record per sandbox, written before the first delegate runs and
 * holding everything DEL needs without the API server: every delegate's full config, ifname,
 * runtimeConfig, device and result.
 * Each sandbox has one file, a log: every write appends the whole record as one line (schema version,
 * checksum, record) and the last line that reads whole is the record. Appending to a file already
 * there is the cheapest write the file system offers (no new inode, no rename: ext4's auto_da_alloc
 * flushes a file renamed over another, 0.2 ms); a write cut short by a dying process fails its
 * checksum, and the reader falls back to the line before it, the previous record whole. A log past
 * COMPACT_AT is rewritten as its last record (temp + rename).
 * Not fsync'd: a record guards against the plugin or daemon dying, which leaves the page cache
 * intact; a node crash takes the netns and links with it, and an unreadable record after one makes
 * DEL reconstruct from config (as with no record). fsync was ~1 ms per write on the per-pod path.
 */
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readFileSync, readSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { CniArgs } from '../cni/args.js';
import { writeFileAtomic } from '../cni/cache.js';
import type { AnyResult } from '../cni/types.js';

export const STORE_SCHEMA_VERSION = 1;

/** Which claim's device an attachment took: where its network data goes. */
export interface ClaimDeviceRef {
  namespace: string;
  name: string;
  uid: string;
  driver: string;
  pool: string;
  device: string;
  shareID?: string;
}

export interface StoredAttachment {
  /** Display name: `<ns>/<nad>` for NADs, the CNI name of a cluster network from a file. */
  network: string;
  ifName: string;
  /** The delegate network configuration, exactly as executed (conf or conflist JSON text). */
  config: string;
  capabilityArgs: Record<string, unknown>;
  isDefault: boolean;
  deviceID?: string;
  /** The ResourceClaim device the deviceID came from (DRA). */
  claim?: ClaimDeviceRef;
  deviceInfoFile?: string;
  defaultRoute?: string[];
  /** Multus auxiliary chain: no interface of its own, no network-status entry. */
  auxiliary?: boolean;
  /**
   * planned: ADD not (yet) known to have succeeded (it may still be running, or died); added: its result
   * is below; failed: its ADD answered an error (what its DEL cannot undo is abandoned, see cmdDel).
   */
  state: 'planned' | 'added' | 'failed';
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
  /** Attachments given up on: their ADD failed and their DEL kept failing (what may be left, and why). */
  abandoned?: { network: string; ifName: string; reason: string; at: string }[];
}

interface StoreFile {
  schemaVersion: number;
  checksum: string;
  record: AttachmentRecord;
}

export type StoreRead = { kind: 'ok'; record: AttachmentRecord } | { kind: 'missing' } | { kind: 'corrupt'; reason: string };

/** A sandbox's log: JSON Lines. */
const RECORD_SUFFIX = '.jsonl';

/** Its mtime is when empty records were last pruned (not a record: no record suffix). */
const PRUNED_MARKER = '.pruned';

/** A log this long is rewritten as its last record on the next write. */
export const COMPACT_AT = 64 * 1024;

function checksumOf(serializedRecord: string): string {
  return `sha256:${createHash('sha256').update(serializedRecord).digest('hex')}`;
}

/** One line of a record's log. */
function parseLine(line: string): StoreRead {
  let file: Partial<StoreFile>;
  try {
    file = JSON.parse(line) as Partial<StoreFile>;
  } catch (err) {
    return { kind: 'corrupt', reason: `not JSON: ${(err as Error).message}` };
  }
  if (file.schemaVersion !== STORE_SCHEMA_VERSION) return { kind: 'corrupt', reason: `schema version ${String(file.schemaVersion)}, expected ${STORE_SCHEMA_VERSION}` };
  if (!file.record || !Array.isArray(file.record.attachments)) return { kind: 'corrupt', reason: 'no record' };
  if (file.checksum !== checksumOf(JSON.stringify(file.record))) return { kind: 'corrupt', reason: 'checksum mismatch' };
  return { kind: 'ok', record: file.record };
}

export class AttachmentStore {
  constructor(readonly dir: string) {}

  path(containerID: string): string {
    return join(this.dir, `${containerID}${RECORD_SUFFIX}`);
  }

  write(record: AttachmentRecord): void {
    // The record is serialized once, for its checksum and for the file.
    const text = JSON.stringify(record);
    const line = `{"schemaVersion":${STORE_SCHEMA_VERSION},"checksum":${JSON.stringify(checksumOf(text))},"record":${text}}\n`;
    const path = this.path(record.containerID);
    let fd: number;
    try {
      // Read-write: the last byte says whether the log ends on a whole line.
      fd = openSync(path, 'a+', 0o600);
    } catch (err) {
      // The directory is made on first use only (a mkdir per write is a syscall on the per-pod path).
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      writeFileAtomic(path, line, { durable: false });
      return;
    }
    try {
      const size = fstatSync(fd).size;
      if (size + Buffer.byteLength(line) > COMPACT_AT) {
        writeFileAtomic(path, line, { durable: false });
        return;
      }
      // A line before it cut short by a dying writer has no newline: this one starts on its own.
      writeSync(fd, size > 0 && !this.endsWithNewline(fd, size) ? `\n${line}` : line);
    } finally {
      closeSync(fd);
    }
  }

  private endsWithNewline(fd: number, size: number): boolean {
    const last = Buffer.alloc(1);
    readSync(fd, last, 0, 1, size - 1);
    return last[0] === 0x0a;
  }

  read(containerID: string): StoreRead {
    let text: string;
    try {
      text = readFileSync(this.path(containerID), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'missing' };
      return { kind: 'corrupt', reason: (err as Error).message };
    }
    const lines = text.split('\n').filter((l) => l !== '');
    // An empty file: its first write never happened (nothing was attached before it).
    if (!lines.length) return { kind: 'missing' };
    let lastProblem: StoreRead | undefined;
    for (let i = lines.length - 1; i >= 0; i--) {
      const read = parseLine(lines[i]!);
      if (read.kind === 'ok') return read;
      lastProblem ??= read;
    }
    return lastProblem!;
  }

  delete(containerID: string): void {
    rmSync(this.path(containerID), { force: true });
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
      const mtime = statSync(this.path(id), { throwIfNoEntry: false })?.mtimeMs ?? now;
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
      return readdirSync(this.dir).flatMap((f) => (f.endsWith(RECORD_SUFFIX) ? [f.slice(0, -RECORD_SUFFIX.length)] : []));
    } catch {
      return [];
    }
  }
}
