/** Device-info files (NPWG device-info spec 1.1.0): `dp/` written by device plugins, `cni/` per attachment. */
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const slash = (s: string): string => s.replaceAll('/', '-');

/** `<dir>/dp/<resourceName>-<deviceID>-device.json`, every "/" replaced by "-". */
export function dpDeviceInfoPath(dir: string, resourceName: string, deviceID: string): string {
  return join(dir, 'dp', `${slash(resourceName)}-${slash(deviceID)}-device.json`);
}

/** Unique per attachment: `<dir>/cni/<network>-<containerID>_<ifname>` ("/" → "-"), as Multus names it. */
export function cniDeviceInfoPath(dir: string, network: string, containerID: string, ifName: string): string {
  return join(dir, 'cni', slash(`${network}-${containerID}_${ifName}`));
}

/** Copies the device plugin's file for the attachment, if there is one; returns whether it did. */
export function copyDpDeviceInfo(dir: string, resourceName: string, deviceID: string, target: string): boolean {
  const source = dpDeviceInfoPath(dir, resourceName, deviceID);
  if (!existsSync(source)) return false;
  mkdirSync(join(dir, 'cni'), { recursive: true });
  copyFileSync(source, target);
  return true;
}

export function readDeviceInfo(path: string | undefined): Record<string, unknown> | undefined {
  if (!path || !existsSync(path)) return undefined;
  try {
    const v = JSON.parse(readFileSync(path, 'utf8')) as unknown;
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

export function removeDeviceInfo(path: string | undefined): void {
  if (path) rmSync(path, { force: true });
}
