/** Test rig: netns, veth pairs and scratch dirs with the project prefix, always removed again. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const PREFIX = 'plx';

export function run(cmd: string, args: string[], input?: string): string {
  return execFileSync(cmd, args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
}

/** iproute2 as the independent oracle: `ip -j …` parsed. */
export function ipJson<T = unknown>(args: string[]): T {
  return JSON.parse(run('ip', ['-j', ...args]) || '[]') as T;
}

export interface IpAddrInfo {
  ifname: string;
  address?: string;
  mtu: number;
  flags: string[];
  addr_info: { family: string; local: string; prefixlen: number; scope: string }[];
}

/** Addresses of `ifname` in netns `ns` (global scope), as `ip` sees them. */
export function ipAddresses(ns: string, ifname: string): string[] {
  const [link] = ipJson<IpAddrInfo[]>(['-n', ns, 'addr', 'show', 'dev', ifname]);
  return (link?.addr_info ?? []).filter((a) => a.scope === 'global').map((a) => `${a.local}/${a.prefixlen}`);
}

export function linkExists(name: string, ns?: string): boolean {
  try {
    run('ip', [...(ns ? ['-n', ns] : []), 'link', 'show', 'dev', name]);
    return true;
  } catch {
    return false;
  }
}

export function listNetns(): string[] {
  return run('ip', ['netns', 'list'])
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter(Boolean);
}

/** Names that are unique per process and short enough for interface names (15 bytes). */
let counter = 0;
export function uniqueName(tag: string): string {
  counter += 1;
  return `${PREFIX}${tag}${(process.pid % 1000).toString(36)}${counter.toString(36)}`.slice(0, 15);
}

export class Rig {
  private readonly netnses: string[] = [];
  private readonly links: string[] = [];
  private readonly dirs: string[] = [];

  netns(tag = 'ns'): { name: string; path: string } {
    const name = uniqueName(tag);
    run('ip', ['netns', 'add', name]);
    this.netnses.push(name);
    return { name, path: `/var/run/netns/${name}` };
  }

  /** A veth pair in the host netns; returns both names. */
  veth(tag = 'v'): [string, string] {
    const a = uniqueName(`${tag}a`);
    const b = uniqueName(`${tag}b`);
    run('ip', ['link', 'add', a, 'type', 'veth', 'peer', 'name', b]);
    this.links.push(a);
    return [a, b];
  }

  /** Registers a host link created by someone else (e.g. a bridge plugin) for removal. */
  ownLink(name: string): void {
    this.links.push(name);
  }

  dir(tag = 'rig'): string {
    const d = mkdtempSync(join(tmpdir(), `${PREFIX}-${tag}-`));
    this.dirs.push(d);
    return d;
  }

  cleanup(): void {
    for (const ns of this.netnses.splice(0)) {
      try {
        run('ip', ['netns', 'del', ns]);
      } catch {
        /* already gone */
      }
    }
    for (const l of this.links.splice(0)) {
      try {
        run('ip', ['link', 'del', l]);
      } catch {
        /* already gone (a veth goes with its peer) */
      }
    }
    for (const d of this.dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  }
}

/** Everything with the prefix, whoever made it: the last line of defence after the suite. */
export function sweepLeftovers(): string[] {
  const found: string[] = [];
  for (const ns of listNetns().filter((n) => n.startsWith(PREFIX))) {
    found.push(`netns ${ns}`);
    try {
      run('ip', ['netns', 'del', ns]);
    } catch {
      /* ignore */
    }
  }
  for (const l of ipJson<{ ifname: string }[]>(['link', 'show'])
    .map((x) => x.ifname)
    .filter((n) => n.startsWith(PREFIX))) {
    found.push(`link ${l}`);
    try {
      run('ip', ['link', 'del', l]);
    } catch {
      /* ignore */
    }
  }
  return found;
}
