/**
 * Planning: the meta conf, the pod's annotations, its NADs and its devices become the list of
 * attachments to make, in order (cluster network, inline delegates, default networks, selections,
 * the auxiliary chain). Lenient planning (DEL without a record) collects problems instead of failing.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { IPAM_CLAIM_ARG } from '../cni/args.js';
import { CniError, ErrorCode } from '../cni/errors.js';
import { confFiles, parseNetworkConfig } from '../cni/conf.js';
import type { NetworkConfigList } from '../cni/types.js';
import { podDevicesFromCheckpoint, podDevicesFromKubelet, type PodDevices } from '../k8s/podresources.js';
import { podClaims } from '../k8s/resource.js';
import { type ClaimedDevices, claimedDevices, claimedFor } from './claims.js';
import { checkCapabilities, checkPluginNames, declares } from './checks.js';
import { type MetaConf, checkNamespaceAllowed } from './conf.js';
import { cniDeviceInfoPath } from './deviceinfo.js';
import type { MetaInvocation, Plan, PlannedAttachment, PodRef } from './invocation.js';
import { inlineDelegate } from './nad.js';
import { DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION, type NetworkSelection, parseDefaultNetworkAnnotation, parseNetworksAnnotation } from './selection.js';

/** What to attach, in order. `lenient` collects problems instead of failing (DEL reconstruction). */
export async function planAttachments(inv: MetaInvocation, lenient = false): Promise<Plan> {
  const problems: string[] = [];
  const retryable: string[] = [];
  const attempt = async <T>(what: string, fn: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await fn();
    } catch (err) {
      if (!lenient) throw err;
      const text = `${what}: ${(err as Error).message}`;
      problems.push(text);
      // A config that does not decode or is invalid stays so; anything else (API, I/O) may pass.
      if (!(err instanceof CniError && (err.code === ErrorCode.DecodingFailure || err.code === ErrorCode.InvalidNetworkConfig))) retryable.push(text);
      return undefined;
    }
  };
  const podNamespace = inv.pod?.namespace ?? 'default';
  // An API failure here leaves the secondaries unknown; attempt() reports it when reconstructing.
  const annotations = await attempt('pod annotations (secondary networks cannot be reconstructed)', () => inv.podAnnotations());
  const selections = (await attempt('networks annotation', async () => parseNetworksAnnotation(annotations?.[NETWORKS_ANNOTATION], podNamespace))) ?? [];
  const defaultOverride = await attempt('default-network annotation', async () => parseDefaultNetworkAnnotation(annotations?.[DEFAULT_NETWORK_ANNOTATION], inv.conf.multusNamespace));

  const attachments: PlannedAttachment[] = [];
  // The cluster network: the pod's default-network override, inline delegates, or clusterNetwork.
  const cluster = await attempt('cluster network', async () => {
    if (defaultOverride) {
      checkNamespaceAllowed(inv.conf, podNamespace, defaultOverride.namespace, defaultOverride.name);
      const { list } = await inv.resolveSelection(defaultOverride);
      return { display: `${defaultOverride.namespace}/${defaultOverride.name}`, list, ifName: defaultOverride.interface ?? inv.req.ifName };
    }
    if (inv.conf.delegates) {
      const list = inlineDelegate(inv.conf.delegates[0]!, 0, inv.conf);
      return { display: list.name, list, ifName: inv.req.ifName };
    }
    return { ...(await inv.resolveNamed(inv.conf.clusterNetwork!)), ifName: inv.req.ifName };
  });
  if (cluster) {
    // NPWG §7.5: the runtime's own runtimeConfig goes to the cluster network only, all of it.
    attachments.push({ network: cluster.display, list: cluster.list, ifName: cluster.ifName, isDefault: true, capabilityArgs: { ...(inv.req.conf.runtimeConfig ?? {}) } });
  }
  const extraDelegates = (inv.conf.delegates ?? []).slice(1).map((d, i) => inlineDelegate(d, i + 1, inv.conf));
  const defaultNetworks = inv.conf.systemNamespaces.includes(podNamespace) ? [] : inv.conf.defaultNetworks;
  for (const list of extraDelegates) attachments.push({ network: list.name, list, ifName: `net${attachments.length}`, isDefault: false, capabilityArgs: {} });
  for (const name of defaultNetworks) {
    const resolved = await attempt(`default network ${name}`, () => inv.resolveNamed(name));
    if (resolved) attachments.push({ network: resolved.display, list: resolved.list, ifName: `net${attachments.length}`, isDefault: false, capabilityArgs: {} });
  }
  for (const sel of selections) {
    const index = attachments.length;
    const planned = await attempt(`network ${sel.namespace}/${sel.name}`, async () => {
      checkNamespaceAllowed(inv.conf, podNamespace, sel.namespace, sel.name);
      const { list, resourceName } = await inv
        .resolveSelection(sel)
        .then((r) => (checkPluginNames(r.list), r))
        .catch((err: unknown) => {
          // A NAD that does not parse: which one, and for which interface (NAD errors name only the field).
          const e = CniError.from(err);
          const where = `network ${sel.namespace}/${sel.name} (NAD) as ${sel.interface ?? `net${index}`}`;
          throw new CniError(e.code, e.msg, e.details ? `${e.details}; ${where}` : where);
        });
      checkCapabilities(list, sel);
      const att: PlannedAttachment = {
        network: `${sel.namespace}/${sel.name}`,
        list,
        ifName: sel.interface ?? `net${index}`,
        isDefault: false,
        capabilityArgs: selectionCapabilityArgs(sel),
        selection: sel,
      };
      if (resourceName) att.resourceName = resourceName;
      if (sel.ipamClaimReference) att.capabilityArgs[IPAM_CLAIM_ARG] = `${podNamespace}/${sel.ipamClaimReference}`;
      if (sel.deviceID) att.deviceID = sel.deviceID;
      return att;
    });
    if (planned) attachments.push(planned);
  }
  const aux = await attempt('auxiliary chain', async () => auxiliaryChain(inv.conf, attachments[0]?.list.cniVersion));
  if (aux) attachments.push({ network: aux.name, list: aux, ifName: `net${attachments.length}`, isDefault: false, capabilityArgs: {}, auxiliary: true });
  const seen = new Map<string, string>();
  for (const a of attachments) {
    const other = seen.get(a.ifName);
    if (other !== undefined) {
      const err = new CniError(ErrorCode.InvalidNetworkConfig, 'duplicate interface name', `"${a.ifName}" is requested by ${other} and ${a.network}`);
      if (!lenient) throw err;
      problems.push(err.message);
    }
    seen.set(a.ifName, a.network);
  }
  await attempt('devices', () => assignDevices(inv, attachments));
  for (const a of attachments) {
    if (a.deviceID) a.capabilityArgs.deviceID = a.deviceID;
    a.deviceInfoFile = cniDeviceInfoPath(inv.conf.deviceInfoDir, a.network, inv.req.containerID, a.ifName);
    if (declares(a.list, 'CNIDeviceInfoFile')) a.capabilityArgs.CNIDeviceInfoFile = a.deviceInfoFile;
  }
  return { attachments, problems, retryable };
}

/**
 * Multus `auxiliaryCNIChainName`: the plugins in `<dir of clusterNetwork>/<chain>/*.conf`, run for
 * every pod after its networks. Multus puts its `passthru` plugin first to give them an empty
 * prevResult; as the runtime, Plexus hands them that empty result directly.
 */
function auxiliaryChain(conf: MetaConf, cniVersion = '1.0.0'): NetworkConfigList | undefined {
  const chain = conf.auxiliaryCNIChainName;
  if (!chain) return undefined;
  const dir = join(dirname(conf.clusterNetwork!), chain);
  const plugins = confFiles(dir, ['.conf']).map((f) => parseNetworkConfig(readFileSync(f), f).plugins[0]!);
  if (!plugins.length) return undefined;
  return parseNetworkConfig(Buffer.from(JSON.stringify({ cniVersion, name: chain, plugins })), `auxiliary chain ${dir}`);
}

/**
 * resourceName → the pod's device IDs: kubelet's device plugin allocations, then the devices of the
 * pod's ResourceClaims (DRA) that carry that resourceName, or of the claim and request it names
 * (`<claim name in the pod>/<request>`); the Nth network of a resource takes the Nth.
 * The claims are read only when the device plugins' devices are not enough (no cost for those pods).
 */
async function assignDevices(inv: MetaInvocation, attachments: PlannedAttachment[]): Promise<void> {
  const needing = attachments.filter((a) => a.resourceName && !a.deviceID);
  if (!needing.length || !inv.pod) return;
  const fromKubelet = await devicePluginDevices(inv, inv.pod);
  const wanted = new Map<string, number>();
  for (const a of needing) wanted.set(a.resourceName!, (wanted.get(a.resourceName!) ?? 0) + 1);
  const enough = [...wanted].every(([name, n]) => (fromKubelet?.get(name)?.length ?? 0) >= n);
  let claimed: ClaimedDevices = { devices: [], unpublished: [] };
  if (!enough) {
    const pod = await inv.getPod();
    const api = pod && podClaims(pod).length ? await inv.apiClient() : undefined;
    if (api) claimed = await claimedDevices(api, pod!, (why) => inv.log(`DRA device not for NADs: ${why}`, 'debug'));
    else if (!fromKubelet)
      throw new CniError(
        ErrorCode.InvalidNetworkConfig,
        'no source of device allocations',
        `neither ${inv.conf.podResourcesSocket} nor ${inv.conf.kubeletCheckpoint} exists, and the pod has no ResourceClaims`,
      );
  }
  const taken = new Map<string, number>();
  for (const a of needing) {
    const name = a.resourceName!;
    const fromClaims = claimedFor(name, claimed.devices);
    const ids = [...(fromKubelet?.get(name) ?? []), ...fromClaims.map((c) => c.deviceID)];
    const n = taken.get(name) ?? 0;
    const id = ids[n];
    // A claimed device missing from the slices may be this one: slices come back (kubelet wiped them at its start).
    if (!id && claimed.unpublished.length)
      throw new CniError(
        ErrorCode.TryAgainLater,
        `no ${name} device for ${a.network} yet`,
        `the pod's claimed device(s) ${claimed.unpublished.join(', ')} are in no ResourceSlice of this node now; their driver publishes them again`,
      );
    if (!id)
      throw new CniError(
        ErrorCode.InvalidNetworkConfig,
        `no ${name} device left for ${a.network}`,
        `the pod was allocated ${ids.length} (${ids.join(', ') || 'none'}) by device plugins and ResourceClaims; request one per network`,
      );
    taken.set(name, n + 1);
    a.deviceID = id;
    const claim = fromClaims[n - (ids.length - fromClaims.length)];
    if (claim) a.claim = claim.ref;
  }
}

/** The pod's device plugin devices from kubelet (PodResources, else its checkpoint); undefined when there is neither. */
async function devicePluginDevices(inv: MetaInvocation, pod: PodRef): Promise<PodDevices | undefined> {
  if (existsSync(inv.conf.podResourcesSocket)) {
    try {
      return await podDevicesFromKubelet(inv.conf.podResourcesSocket, pod.namespace, pod.name, inv.conf.apiTimeoutMs);
    } catch (err) {
      throw new CniError(ErrorCode.TryAgainLater, 'kubelet PodResources failed', (err as Error).message);
    }
  }
  if (existsSync(inv.conf.kubeletCheckpoint)) return podDevicesFromCheckpoint(inv.conf.kubeletCheckpoint, pod.uid);
  return undefined;
}

function selectionCapabilityArgs(sel: NetworkSelection): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (sel.ips) out.ips = sel.ips;
  if (sel.mac) out.mac = sel.mac;
  if (sel.infinibandGUID) out.infinibandGUID = sel.infinibandGUID;
  if (sel.portMappings) out.portMappings = sel.portMappings;
  if (sel.bandwidth) out.bandwidth = sel.bandwidth;
  return out;
}
