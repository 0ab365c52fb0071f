/** What a real node leaves on the host besides processes: mounts below its directory and kubelet's cgroups. */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';

/** Every mount at or below `dir`, deepest first (kubelet's volumes, containerd's rootfs). */
export function unmountBelow(dir: string): void {
  const mounts = readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[1]?.replace(/\\040/g, ' '))
    .filter((m): m is string => !!m && (m === dir || m.startsWith(`${dir}/`)))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) {
    try {
      execFileSync('umount', ['-l', m], { stdio: 'ignore' });
    } catch {
      /* already gone with its parent */
    }
  }
}

/** The kubepods cgroups (cgroupfs driver) kubelet made under every v1 controller, deepest first. */
export function kubeletCgroups(): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    let entries: string[];
    try {
      entries = readdirSync(d, { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => e.name);
    } catch {
      return;
    }
    for (const e of entries) walk(join(d, e));
    out.push(d);
  };
  const root = '/sys/fs/cgroup';
  for (const ctrl of existsSync(root) ? readdirSync(root) : []) {
    for (const top of ['kubepods', 'kubepods.slice']) if (existsSync(join(root, ctrl, top))) walk(join(root, ctrl, top));
  }
  return out;
}

export function removeKubeletCgroups(): void {
  for (const d of kubeletCgroups()) {
    try {
      rmdirSync(d);
    } catch {
      /* a process still in it: reported by status checks */
    }
  }
}
