/** host-local IPAM's reservations: files named by address under its data dir (lock and last_reserved_ip files are not). */
import { existsSync, readdirSync } from 'node:fs';
import { isIP } from 'node:net';
import { basename } from 'node:path';

/** Reserved addresses under `dataDir`, as paths relative to it, sorted. */
export function hostLocalReservations(dataDir: string): string[] {
  if (!existsSync(dataDir)) return [];
  return readdirSync(dataDir, { recursive: true })
    .map(String)
    .filter((f) => isIP(basename(f)))
    .sort();
}
