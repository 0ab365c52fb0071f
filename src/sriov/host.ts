/**
 * The host as the SR-IOV code sees it: one root under which every sysfs, procfs and /dev path is
 * resolved (default `/`; a simulated host is a directory), and one interface for sysfs writes, so the
 * fake kernel can react to them exactly where the real one would.
 */
import { closeSync, existsSync, openSync, readFileSync, readSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';

/** Environment switch: a simulated host root (`plexusctl sriov host create`) instead of `/`. */
export const HOST_ROOT_ENV = 'PLEXUS_SRIOV_HOST_ROOT';

/** Writes to sysfs attributes; the real kernel or the fake one answers them. */
export interface SysfsWriter {
  /** `path` relative to the host root, e.g. `sys/bus/pci/drivers_probe`. Throws an Error with `code` (EBUSY, ERANGE, …) like write(2). */
  write(path: string, value: string): void;
}

const PAGE = Buffer.alloc(4096);

export class HostRoot {
  constructor(
    readonly root: string = '/',
    readonly writer: SysfsWriter = realWriter(root),
    private readonly onRefresh: () => void = () => undefined,
  ) {}

  /** Re-reads what sysfs shows of links that moved (the real kernel needs nothing; the fake follows its stand-ins). */
  refresh(): void {
    this.onRefresh();
  }

  path(rel: string): string {
    return join(this.root, rel);
  }

  /**
   * An attribute's content without its trailing newline; undefined when it does not exist or cannot
   * be read. sysfs attributes are at most a page: one read(2) into a reused buffer, no fstat.
   */
  read(rel: string): string | undefined {
    let fd: number;
    try {
      fd = openSync(this.path(rel), 'r');
    } catch {
      return undefined;
    }
    try {
      const n = readSync(fd, PAGE, 0, PAGE.length, null);
      if (n < PAGE.length) return PAGE.toString('utf8', 0, n).replace(/\n$/, '');
      return readFileSync(this.path(rel), 'utf8').replace(/\n$/, '');
    } catch {
      return undefined;
    } finally {
      closeSync(fd);
    }
  }

  exists(rel: string): boolean {
    return existsSync(this.path(rel));
  }

  list(rel: string): string[] {
    try {
      return readdirSync(this.path(rel)).sort();
    } catch {
      return [];
    }
  }

  /** Basename of a symlink's target (`driver`, `iommu_group`, `physfn`), or undefined. */
  linkName(rel: string): string | undefined {
    try {
      return basename(readlinkSync(this.path(rel)));
    } catch {
      return undefined;
    }
  }

  /** A symlink resolved to a path relative to the root (sysfs links are relative, so this stays inside it). */
  resolveLink(rel: string): string | undefined {
    try {
      const target = readlinkSync(this.path(rel));
      const abs = resolve(dirname(this.path(rel)), target);
      const root = resolve(this.root);
      return abs.startsWith(root === '/' ? '/' : `${root}/`) ? abs.slice(root === '/' ? 1 : root.length + 1) : undefined;
    } catch {
      return undefined;
    }
  }

  write(rel: string, value: string): void {
    this.writer.write(rel, value);
  }
}

function realWriter(root: string): SysfsWriter {
  return { write: (rel, value) => writeFileSync(join(root, rel), value) };
}

/** A PCI address `dddd:bb:dd.f` (lower case), or undefined. */
export function parsePciAddress(text: string): { domain: number; bus: number; device: number; fn: number } | undefined {
  const m = /^([0-9a-f]{4}):([0-9a-f]{2}):([01][0-9a-f])\.([0-7])$/.exec(text.trim().toLowerCase());
  if (!m) return undefined;
  const device = parseInt(m[3]!, 16);
  if (device > 0x1f) return undefined;
  return { domain: parseInt(m[1]!, 16), bus: parseInt(m[2]!, 16), device, fn: parseInt(m[4]!, 10) };
}

export function formatPciAddress(domain: number, rid: number): string {
  const hex = (n: number, w: number) => n.toString(16).padStart(w, '0');
  return `${hex(domain, 4)}:${hex(rid >> 8, 2)}:${hex((rid >> 3) & 0x1f, 2)}.${rid & 7}`;
}

export function routingId(address: string): number {
  const a = parsePciAddress(address);
  if (!a) throw new Error(`not a PCI address: ${address}`);
  return (a.bus << 8) | (a.device << 3) | a.fn;
}
