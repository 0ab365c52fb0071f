/**
 * Network namespaces by path. The main thread is switched into a netns only for synchronous code
 * (creating a netlink socket, which then stays bound to that netns) and straight back.
 */
import { closeSync, openSync, promises as fsp } from 'node:fs';
import { nativeAddon as loadAddon } from '../util/native.js';

/** An open network namespace; `fd` keeps it alive and identifies it. */
export class Netns {
  private closed = false;
  constructor(
    readonly path: string,
    readonly fd: number,
  ) {}

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
  }
}

let threadpoolWarm = false;

/**
 * Opens a netns file. The first open is asynchronous: it starts libuv's threadpool (all its threads at
 * once) while we are still in the host netns, as its threads inherit the netns of the thread that creates
 * them. Later opens are synchronous (two threadpool round trips less on the per-pod path).
 */
export async function openNetns(path: string): Promise<Netns> {
  try {
    if (!threadpoolWarm) {
      await (await fsp.open(path, 'r')).close();
      threadpoolWarm = true;
    }
    // A plain fd (a FileHandle would close it on GC).
    return new Netns(path, openSync(path, 'r'));
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw Object.assign(new Error(`open netns ${path}: ${e.code ?? e.message}`), { code: e.code ?? 'EIO', op: 'open netns' });
  }
}

export function hostNetnsPath(): string {
  return `/proc/${process.pid}/task/${process.pid}/ns/net`;
}

/**
 * Runs synchronous `fn` with the main thread in `ns`. Nothing asynchronous may start inside:
 * sockets, child processes and threads made here would live in `ns`. If switching back fails the
 * process aborts, because every later operation would silently act on the wrong netns.
 */
export function inNetnsSync<T>(ns: Netns, fn: () => T): T {
  if (!threadpoolWarm) throw new Error('inNetnsSync before openNetns: the libuv threadpool could start inside a pod netns');
  const { setns, CLONE_NEWNET } = loadAddon();
  const home = openSync('/proc/thread-self/ns/net', 'r');
  try {
    setns(ns.fd, CLONE_NEWNET);
    try {
      return fn();
    } finally {
      returnHome(home);
    }
  } finally {
    closeSync(home);
  }
}

/** Back to the netns `home` is an fd of; if that fails the process aborts (every later operation would act on the wrong netns). */
function returnHome(home: number): void {
  const { setns, CLONE_NEWNET } = loadAddon();
  try {
    setns(home, CLONE_NEWNET);
  } catch (err) {
    process.stderr.write(`plexus: cannot return to the host netns: ${(err as Error).message}\n`);
    process.abort();
  }
}

/**
 * A new, empty network namespace with no name and no mount: it lives while the returned Netns is
 * open and vanishes with it (links left inside a vanishing netns: physical ones return to the host,
 * virtual ones are destroyed). The main thread unshares into it, keeps an fd, and switches back.
 */
export async function createTempNetns(): Promise<Netns> {
  if (!threadpoolWarm) (await openNetns(hostNetnsPath())).close();
  const { unshare, CLONE_NEWNET } = loadAddon();
  const home = openSync('/proc/thread-self/ns/net', 'r');
  try {
    unshare(CLONE_NEWNET);
    let fd: number;
    try {
      fd = openSync('/proc/thread-self/ns/net', 'r');
    } finally {
      returnHome(home);
    }
    return new Netns(`/proc/${process.pid}/fd/${fd}`, fd);
  } finally {
    closeSync(home);
  }
}
