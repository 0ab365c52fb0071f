/**
 * The `sriov` plugin's node-local state: one record per VF (keyed by PF PCI address + VF index, so a
 * PF rename cannot lose it) holding the snapshot of every VF attribute taken before the first change,
 * the attachment that holds the VF (its allocated marker) and how far ADD got; an index by
 * container + ifname; and a per-VF lock (a lock file naming its holder's pid, plus an in-process
 * queue for the node daemon, where every holder has the same pid).
 */
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../cni/cache.js';
import type { VfInfo } from '../net/vf.js';
import { KeyedQueue } from '../util/keyed-queue.js';

export interface VfRef {
  address: string;
  pf: string;
  pfNetdev: string;
  index: number;
}

export interface NetdevSnapshot {
  name: string;
  mac: string;
  mtu: number;
  altnames: string[];
}

export interface VfRecord {
  schemaVersion: 1;
  vf: VfRef;
  containerID: string;
  ifName: string;
  netns: string;
  mode: 'kernel' | 'dpdk';
  /** Taken before the first change; DEL and GC put all of it back. */
  snapshot: { vfinfo: VfInfo; netdev?: NetdevSnapshot };
  /** The plugin's stdin, for the IPAM DEL. */
  stdin: string;
  /** The attachment's device-info file (runtimeConfig.CNIDeviceInfoFile) this plugin wrote, removed on release. */
  deviceInfoFile?: string;
  /**
   * snapshot: nothing changed yet; configured: PF side set, netdev still in the host (or in the
   * temporary netns on its way); moved: netdev in the pod as ifName; added: ADD returned.
   */
  stage: 'snapshot' | 'configured' | 'moved' | 'added';
}

export class SriovState {
  constructor(readonly dir: string) {}

  private vfPath(vf: Pick<VfRef, 'pf' | 'index'>): string {
    return join(this.dir, 'vfs', `${vf.pf}-vf${vf.index}.json`);
  }

  private indexPath(containerID: string, ifName: string): string {
    return join(this.dir, 'attachments', `${containerID}-${ifName}`);
  }

  readVf(vf: Pick<VfRef, 'pf' | 'index'>): VfRecord | undefined {
    try {
      return JSON.parse(readFileSync(this.vfPath(vf), 'utf8')) as VfRecord;
    } catch {
      return undefined;
    }
  }

  writeVf(record: VfRecord): void {
    writeFileAtomic(this.vfPath(record.vf), JSON.stringify(record), { durable: false });
    writeFileAtomic(this.indexPath(record.containerID, record.ifName), JSON.stringify({ pf: record.vf.pf, index: record.vf.index }), { durable: false });
  }

  /** The record of the VF this attachment holds, if any. */
  forAttachment(containerID: string, ifName: string): VfRecord | undefined {
    try {
      const ref = JSON.parse(readFileSync(this.indexPath(containerID, ifName), 'utf8')) as { pf: string; index: number };
      const r = this.readVf(ref);
      return r && r.containerID === containerID && r.ifName === ifName ? r : undefined;
    } catch {
      return undefined;
    }
  }

  remove(record: VfRecord): void {
    const current = this.readVf(record.vf);
    if (current && current.containerID === record.containerID && current.ifName === record.ifName) rmSync(this.vfPath(record.vf), { force: true });
    rmSync(this.indexPath(record.containerID, record.ifName), { force: true });
  }

  all(): VfRecord[] {
    let files: string[];
    try {
      files = readdirSync(join(this.dir, 'vfs')).filter((f) => f.endsWith('.json'));
    } catch {
      return [];
    }
    return files.flatMap((f) => {
      try {
        return [JSON.parse(readFileSync(join(this.dir, 'vfs', f), 'utf8')) as VfRecord];
      } catch {
        return [];
      }
    });
  }
}

/** This process's holders of each VF, one after the other (the lock file is for other processes). */
const inProcess = new KeyedQueue();

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Runs `fn` holding the VF's lock; a lock whose holder died is taken over; waits at most `timeoutMs`. */
export async function withVfLock<T>(dir: string, vf: string, fn: () => Promise<T>, timeoutMs = 60_000): Promise<T> {
  return inProcess.run(vf, async () => {
    const lock = join(dir, 'locks', `${vf}.lock`);
    mkdirSync(join(dir, 'locks'), { recursive: true });
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const fd = openSync(lock, 'wx', 0o600);
        writeSync(fd, String(process.pid));
        closeSync(fd);
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        const holder = Number(readFileSync(lock, 'utf8').trim() || '0');
        if (!holder || !pidAlive(holder) || holder === process.pid) rmSync(lock, { force: true });
        else if (Date.now() > deadline) throw new Error(`VF ${vf} is locked by pid ${holder}`);
        else await new Promise((r) => setTimeout(r, 50));
      }
    }
    try {
      return await fn();
    } finally {
      rmSync(lock, { force: true });
    }
  });
}

export function netnsExists(path: string): boolean {
  return !!path && existsSync(path);
}
