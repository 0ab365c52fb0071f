/**
 * The node-local attachment store: one record per sandbox, written before the first delegate runs
 * (temp + rename, checksum, schema version) and holding everything DEL needs without the
 * API server: every delegate's full config, ifname, runtimeConfig, device and result.
 * Not fsync'd: a record guards against the plugin or daemon dying, which leaves the page cache
 * intact; a node crash takes the netns and links with it, and an unreadable record after one makes
 * DEL reconstruct from config (as with no record). fsync was ~1 ms per write on the per-pod path.
 */
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
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

function checksum(record: AttachmentRecord): string {
  return `sha256:${createHash('sha256').update(JSON.stringify(record)).digest('hex')}`;
}

export class AttachmentStore {
  constructor(readonly dir: string) {}

  path(containerID: string): string {
    return join(this.dir, `${containerID}.json`);
  }

  write(record: AttachmentRecord): void {
    const file: StoreFile = { schemaVersion: STORE_SCHEMA_VERSION, checksum: checksum(record), record };
    writeFileAtomic(this.path(record.containerID), JSON.stringify(file), { durable: false });
  }

  read(containerID: string): StoreRead {
    let text: string;
    try {
      text = readFileSync(this.path(containerID), 'utf8');
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
    if (file.checksum !== checksum(file.record)) return { kind: 'corrupt', reason: 'checksum mismatch' };
    return { kind: 'ok', record: file.record };
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

  /** Removes records that list nothing and are older than `ageMs`: nothing is attached, no DEL will repeat. */
  pruneEmpty(ageMs: number, now = Date.now()): void {
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
      return readdirSync(this.dir)
        .filter((f) => f.endsWith('.json'))
        .map((f) => f.slice(0, -'.json'.length));
    } catch {
      return [];
    }
  }
}
