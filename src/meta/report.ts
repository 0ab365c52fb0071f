/**
 * Reporting an ADD: the default route moved onto the attachment that asks for it, network-status
 * (one PATCH), one AddedInterface Event per attachment and the network data of DRA devices in their
 * claims, sent together. Nothing here fails an ADD.
 */
import type { PodNetwork } from '../policy/model.js';
import { ipFamily, toCanonical } from '../cni/version.js';
import { writeClaimNetworkData } from './claims.js';
import { readDeviceInfo } from './deviceinfo.js';
import type { MetaInvocation } from './invocation.js';
import { type NetworkStatusEntry, chooseGateways, defaultGateways, statusEntry, writeNetworkStatus } from './status.js';
import type { AttachmentRecord, StoredAttachment } from './store.js';

/** Moves the default route onto the attachment that asked for it (NPWG `default-route`). */
export async function applyDefaultRoute(netns: string, carrier: StoredAttachment, others: StoredAttachment[]): Promise<string[]> {
  const gateways = chooseGateways(carrier.defaultRoute ?? [], carrier.result);
  if (!gateways.length) return [];
  const { NetHandle } = await import('../net/netlink.js');
  const pod = await NetHandle.openPath(netns);
  try {
    for (const family of [...new Set(gateways.map(ipFamily))]) {
      const fam = family === '4' ? 4 : 6;
      const dst = fam === 4 ? '0.0.0.0/0' : '::/0';
      for (const route of await pod.routes(fam)) {
        if (route.dst !== dst || route.table !== 254 || route.ifindex === undefined) continue;
        const dev = (await pod.links()).find((l) => l.index === route.ifindex)?.name;
        if (dev && dev !== carrier.ifName && others.some((o) => o.ifName === dev)) await pod.delRoute({ dst, dev, ...(route.gw ? { gw: route.gw } : {}) });
      }
      for (const gw of gateways.filter((g) => ipFamily(g) === family)) await pod.replaceRoute({ dst, gw, dev: carrier.ifName });
    }
  } finally {
    pod.close();
  }
  return gateways;
}

/** A sandbox's NAD attachments as network policy reads them: network, interface, bare addresses. */
export function policyNetworks(record: AttachmentRecord): PodNetwork[] {
  return statusEntries(record, false)
    .filter((e) => !e.default)
    .map((e) => ({ network: e.name, ...(e.interface ? { ifName: e.interface } : {}), ips: e.ips ?? [] }));
}

export function statusEntries(record: AttachmentRecord, compat: boolean): NetworkStatusEntry[] {
  const carrier = record.attachments.find((a) => a.defaultRoute !== undefined);
  return record.attachments
    .filter((a) => !a.auxiliary)
    .map((a) => {
      let defaultRoute: string[] | undefined;
      if (carrier) defaultRoute = a === carrier ? chooseGateways(a.defaultRoute ?? [], a.result) : undefined;
      else if (a.isDefault && a.result) defaultRoute = defaultGateways(toCanonical(a.result));
      const deviceInfo = readDeviceInfo(a.deviceInfoFile);
      return statusEntry(
        { network: a.network, isDefault: a.isDefault, ...(defaultRoute?.length ? { defaultRoute } : {}), ...(a.result ? { result: a.result } : {}), ...(deviceInfo ? { deviceInfo } : {}) },
        a.ifName,
        compat,
      );
    });
}

/**
 * network-status and one AddedInterface event per attachment, sent together: the pod waits for the
 * slowest, not for their sum. Nothing about reporting (not even a broken kubeconfig) fails the ADD.
 */
export async function reportAdd(inv: MetaInvocation, record: AttachmentRecord, status: string): Promise<boolean> {
  const [written] = await Promise.all([writeStatus(inv, status, 1), addedEvents(inv, record), claimNetworkData(inv, record)]);
  return written;
}

/** The network data of the sandbox's DRA devices, in their ResourceClaims (best effort: a Warning Event says what failed). */
export async function claimNetworkData(inv: MetaInvocation, record: AttachmentRecord): Promise<void> {
  if (!record.attachments.some((a) => a.claim)) return;
  const api = await inv.apiClient().catch(() => undefined);
  if (!api) return;
  for (const why of await writeClaimNetworkData(api, record.attachments)) {
    inv.log(`network data not written: ${why}`, 'error');
    await event(inv, 'Warning', 'NetworkDataNotWritten', why);
  }
}

/**
 * The pod's network-status PATCH, tried `attempts` times (200 ms, then 4× longer between tries); true
 * once the API has it or the pod is gone (a 404 or another UID: nothing to report to). Never throws.
 */
export async function writeStatus(inv: MetaInvocation, status: string, attempts: number): Promise<boolean> {
  const api = await inv.apiClient().catch((err: Error) => {
    inv.log(`no API client for network-status: ${err.message}`, 'error');
    if (inv.pod) inv.ctx.observer?.statusWrite?.('failed', `${inv.pod.namespace}/${inv.pod.name}`, err.message);
    return undefined;
  });
  if (!api || !inv.pod) return false;
  const pod = inv.pod;
  const podName = `${pod.namespace}/${pod.name}`;
  for (let attempt = 1; ; attempt++) {
    try {
      const written = await writeNetworkStatus(api, pod, status);
      if (written === 'stale') inv.log(`network-status of ${podName} dropped: the pod is gone or was replaced`, 'verbose');
      inv.ctx.observer?.statusWrite?.(written, podName);
      return true;
    } catch (err) {
      if (attempt >= attempts) {
        inv.log(`writing network-status of ${podName} failed: ${(err as Error).message}`, 'error');
        inv.ctx.observer?.statusWrite?.('failed', podName, (err as Error).message);
        return false;
      }
      await new Promise((resolve) => setTimeout(resolve, 200 * 4 ** (attempt - 1)));
    }
  }
}

/** One AddedInterface Event per attachment, sent together (best effort). */
export async function addedEvents(inv: MetaInvocation, record: AttachmentRecord): Promise<void> {
  await Promise.all(
    record.attachments
      .filter((a) => !a.auxiliary)
      .map((a) => {
        const ips = a.result ? (toCanonical(a.result).ips ?? []).map((i) => i.address) : [];
        return event(inv, 'Normal', 'AddedInterface', `Add ${a.ifName} [${ips.join(',')}] from ${a.network}`);
      }),
  );
}

export async function event(inv: MetaInvocation, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
  const api = await inv.apiClient().catch(() => undefined);
  if (!api || !inv.pod) return;
  const now = new Date().toISOString();
  try {
    await api.post(`/api/v1/namespaces/${encodeURIComponent(inv.pod.namespace)}/events`, {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { generateName: `${inv.pod.name}.`, namespace: inv.pod.namespace },
      involvedObject: { apiVersion: 'v1', kind: 'Pod', name: inv.pod.name, namespace: inv.pod.namespace, ...(inv.pod.uid ? { uid: inv.pod.uid } : {}) },
      reason,
      message,
      type,
      source: { component: 'plexus' },
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    });
  } catch {
    /* events are best effort */
  }
}
