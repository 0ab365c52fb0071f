/**
 * IPAM for plugins that configure their own interface (sriov): the IPAM plugin exec'd with the
 * plugin's own stdin and env (CNI "delegated plugins"), and its result applied to the interface.
 */
import { CniError, ErrorCode } from '../cni/errors.js';
import { execPlugin, findInPath, parseResult } from '../cni/invoke.js';
import type { PluginRequest } from '../cni/skel.js';
import type { Result } from '../cni/types.js';
import { toCanonical } from '../cni/version.js';
import type { NetHandle } from './netlink.js';

/** Runs the IPAM plugin `type` for `command`; ADD resolves with its result (canonical form). */
export async function execIpam(command: 'ADD' | 'DEL' | 'CHECK', type: string, req: PluginRequest): Promise<Result | undefined> {
  const path = findInPath(type, req.path);
  const env = { ...req.env, CNI_COMMAND: command };
  const out = await execPlugin(path, req.stdin, env);
  if (command !== 'ADD') return undefined;
  const result = toCanonical(parseResult(out, path));
  if (!result.ips?.length) throw new CniError(ErrorCode.InvalidNetworkConfig, `IPAM plugin ${type} returned no IP addresses`);
  return result;
}

/** Adds the result's addresses to `ifName` (in the netns `pod` is bound to). */
export async function addAddresses(pod: NetHandle, ifName: string, result: Result): Promise<void> {
  for (const ip of result.ips ?? []) await pod.addAddress(ifName, ip.address);
}

/** Adds the result's routes via `ifName` (it must be up). */
export async function addRoutes(pod: NetHandle, ifName: string, result: Result): Promise<void> {
  for (const r of result.routes ?? []) await pod.addRoute({ dst: r.dst, dev: ifName, ...(r.gw ? { gw: r.gw } : {}) });
}
