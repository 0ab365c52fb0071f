/**
 * DRA devices for NADs, both ways. In: the pod's ResourceClaims give device IDs to NADs whose
 * `k8s.v1.cni.cncf.io/resourceName` equals a claimed device's `k8s.cni.cncf.io/resourceName` slice
 * attribute (Multus's contract, so any driver that publishes the two attributes works), or names a
 * claim and request of the pod as `<claim name in the pod>/<request>`. Out: after
 * ADD, each such device's `status.devices[]` entry in its claim gets the interface's network data and
 * a Ready condition, by server-side apply (other drivers' entries are not touched).
 */
import { CniError, ErrorCode } from '../cni/errors.js';
import { toCanonical } from '../cni/version.js';
import { type ApiClient, apiFailure } from '../k8s/client.js';
import { type ClaimResult, RESOURCE_API, claimPath, parseResourceClaim, podClaims, sliceDeviceIds } from '../k8s/resource.js';
import type { Pod } from '../k8s/types.js';
import type { ClaimDeviceRef, StoredAttachment } from './store.js';

export interface ClaimedDevice {
  /** Its slice's `k8s.cni.cncf.io/resourceName`, when it has one. */
  resourceName?: string;
  deviceID: string;
  ref: ClaimDeviceRef;
  /** The claim's name in the pod (`spec.resourceClaims[].name`) and the request it was allocated for. */
  podClaim: string;
  request: string;
}

export interface ClaimedDevices {
  devices: ClaimedDevice[];
  /** Claimed devices in no ResourceSlice of the node now (kubelet wipes them when it starts; the driver writes them again). */
  unpublished: string[];
}

/**
 * The pod's claimed devices that have a `k8s.cni.cncf.io/deviceID`, in claim order then allocation
 * order. A claim not allocated yet is a retryable error; devices without it (a GPU in the same claim)
 * are skipped, as Multus does, and `skipped` says which.
 */
export async function claimedDevices(api: ApiClient, pod: Pod, skipped: (why: string) => void = () => undefined): Promise<ClaimedDevices> {
  const refs = podClaims(pod);
  if (!refs.length) return { devices: [], unpublished: [] };
  const ns = pod.metadata.namespace;
  const claims = await Promise.all(
    refs.map(async ({ claim: name }) => {
      const what = `ResourceClaim ${ns}/${name}`;
      const raw = await api.get<unknown>(claimPath(ns, name)).catch((err: unknown) => {
        throw apiFailure(err, `reading ${what}`);
      });
      const claim = parseResourceClaim(raw, what);
      if (!claim.results) throw new CniError(ErrorCode.TryAgainLater, `${what} is not allocated`, 'the pod runs only once its claims are allocated; retry');
      return claim;
    }),
  );
  const drivers = [...new Set(claims.flatMap((c) => c.results!.map((r) => r.driver)))];
  const node = pod.spec?.nodeName;
  const lists = await Promise.all(
    drivers.map(async (driver) => {
      const selector = `spec.driver=${driver}${node ? `,spec.nodeName=${node}` : ''}`;
      const raw = await api.get<unknown>(`${RESOURCE_API}/resourceslices?fieldSelector=${encodeURIComponent(selector)}`).catch((err: unknown) => {
        throw apiFailure(err, `listing the ResourceSlices of ${driver}`);
      });
      return sliceDeviceIds(raw, `the ResourceSlices of ${driver}`);
    }),
  );
  const ids = new Map(lists.flatMap((m) => [...m]));
  const out: ClaimedDevices = { devices: [], unpublished: [] };
  for (const [i, claim] of claims.entries()) {
    for (const r of claim.results!) {
      const key = `${r.driver}/${r.pool}/${r.device}`;
      const attrs = ids.get(key);
      if (!attrs) out.unpublished.push(key);
      if (!attrs?.deviceID) {
        skipped(`${key} of ResourceClaim ${ns}/${claim.name}: ${attrs ? 'its slice device has no k8s.cni.cncf.io/deviceID attribute' : 'in no ResourceSlice of this node'}`);
        continue;
      }
      out.devices.push({ ...(attrs.resourceName ? { resourceName: attrs.resourceName } : {}), deviceID: attrs.deviceID, ref: refOf(claim, r), podClaim: refs[i]!.ref, request: r.request });
    }
  }
  return out;
}

/**
 * The claimed devices a NAD's resourceName takes: those of the claim and request it names
 * (`<claim name in the pod>/<request>`), else those whose slice resourceName it is.
 */
export function claimedFor(resourceName: string, devices: ClaimedDevice[]): ClaimedDevice[] {
  const slash = resourceName.indexOf('/');
  const [ref, request] = [resourceName.slice(0, slash), resourceName.slice(slash + 1)];
  const named = slash > 0 ? devices.filter((c) => c.podClaim === ref && (c.request === request || c.request.startsWith(`${request}/`))) : [];
  return named.length ? named : devices.filter((c) => c.resourceName === resourceName);
}

function refOf(claim: { namespace: string; name: string; uid: string }, r: ClaimResult): ClaimDeviceRef {
  return { namespace: claim.namespace, name: claim.name, uid: claim.uid, driver: r.driver, pool: r.pool, device: r.device, ...(r.shareID ? { shareID: r.shareID } : {}) };
}

/** metav1.Time: RFC 3339 in seconds. */
function now(): string {
  return new Date().toISOString().replace(/\.\d+Z$/, 'Z');
}

type ClaimedAttachment = StoredAttachment & { claim: ClaimDeviceRef };

/** The `status.devices[]` entry of an attachment that took a claimed device: its interface, addresses (CIDR) and MAC. */
function deviceStatusEntry(a: ClaimedAttachment): Record<string, unknown> {
  const result = a.result ? toCanonical(a.result) : undefined;
  const index = (result?.interfaces ?? []).findIndex((i) => i.sandbox);
  const iface = index >= 0 ? result!.interfaces![index]! : undefined;
  const ips = [...new Set((result?.ips ?? []).filter((ip) => ip.interface === undefined || ip.interface === index).map((ip) => ip.address))];
  const { driver, pool, device, shareID } = a.claim;
  return {
    driver,
    pool,
    device,
    ...(shareID ? { shareID } : {}),
    conditions: [{ type: 'Ready', status: 'True', reason: 'NetworkAttached', message: `${a.network} attached as ${iface?.name ?? a.ifName}`, lastTransitionTime: now() }],
    networkData: { interfaceName: iface?.name ?? a.ifName, ips, ...(iface?.mac ? { hardwareAddress: iface.mac } : {}) },
  };
}

/**
 * Writes the network data of the sandbox's claimed devices, one server-side apply per claim (field
 * manager `plexus`; the claim's UID in the body makes a replaced claim refuse it). Returns what failed.
 */
export async function writeClaimNetworkData(api: ApiClient, attachments: StoredAttachment[]): Promise<string[]> {
  const byClaim = new Map<string, { ref: ClaimDeviceRef; devices: Record<string, unknown>[] }>();
  for (const a of attachments.filter((x): x is ClaimedAttachment => !!x.claim && x.state === 'added')) {
    const key = `${a.claim.namespace}/${a.claim.name}`;
    const entry = byClaim.get(key) ?? { ref: a.claim, devices: [] };
    entry.devices.push(deviceStatusEntry(a));
    byClaim.set(key, entry);
  }
  const failed: string[] = [];
  await Promise.all(
    [...byClaim].map(async ([key, { ref, devices }]) => {
      const body = { apiVersion: 'resource.k8s.io/v1', kind: 'ResourceClaim', metadata: { namespace: ref.namespace, name: ref.name, uid: ref.uid }, status: { devices } };
      await api
        .patch(`${claimPath(ref.namespace, ref.name)}/status?fieldManager=plexus&force=true`, body, 'application/apply-patch+yaml')
        .catch((err: Error) => failed.push(`ResourceClaim ${key}: ${err.message}`));
    }),
  );
  return failed;
}
