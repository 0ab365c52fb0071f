/**
 * The project's N-API addon (native/addon.c): setns/unshare for the kernel layer, a netns's interface names,
 * and a posix_spawn exec for plugins, whose cost does not grow with the daemon's memory as libuv's fork() does.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { requireAbove } from './find-above.js';

export interface SpawnOutcome {
  /** Exit status, or null when a signal ended it (or, with signal null too, when its end is unknown). */
  status: number | null;
  signal: number | null;
  timedOut: boolean;
  stdout: Buffer;
  stderr: Buffer;
}

interface Addon {
  setns(fd: number, nstype: number): void;
  unshare(flags: number): void;
  linkNames(netnsPath: string): string[];
  spawn(path: string, argv: string[], env: string[], stdin: Buffer, timeoutMs: number, done: (err: Error | null, outcome: SpawnOutcome) => void): number;
  CLONE_NEWNET: number;
}

const ADDON_FILE = 'plexus.node';
let addon: Addon | undefined;

/** native/plexus.node above this module (source tree, build/, dist/), beside an installed bundle, or in PLEXUS_NATIVE_DIR. */
export function nativeAddonPath(): string {
  const override = process.env.PLEXUS_NATIVE_DIR && join(process.env.PLEXUS_NATIVE_DIR, ADDON_FILE);
  if (override && existsSync(override)) return override;
  return requireAbove(import.meta.url, [join('native', ADDON_FILE), ADDON_FILE]);
}

export function nativeAddon(): Addon {
  addon ??= createRequire(import.meta.url)(nativeAddonPath()) as Addon;
  return addon;
}

/**
 * Runs `path` (with `args`) with `env` and `stdin` and resolves once it has exited, with everything it wrote. Rejects only
 * when it cannot be started (the error's `code` is the errno name, e.g. ENOENT or ETXTBSY). With a timeout
 * it is SIGKILLed at the deadline (`timedOut`). The child starts on the calling thread, in its netns.
 */
export function spawnCollect(path: string, env: NodeJS.ProcessEnv, stdin: Buffer | string, timeoutMs = 0, args: string[] = []): Promise<SpawnOutcome> {
  const envList: string[] = [];
  for (const [k, v] of Object.entries(env)) if (v !== undefined) envList.push(`${k}=${v}`);
  return new Promise((resolve, reject) => {
    try {
      nativeAddon().spawn(path, [path, ...args], envList, Buffer.isBuffer(stdin) ? stdin : Buffer.from(stdin), timeoutMs, (err, outcome) => (err ? reject(err) : resolve(outcome)));
    } catch (err) {
      reject(err);
    }
  });
}
