/**
 * At daemon start: network-status the previous daemon owed (it answered ADD, then died before the
 * API acknowledged the PATCH) is sent again. A pod that is gone or was replaced owes nothing any more.
 */
import type { ApiClient } from '../k8s/client.js';
import { writeNetworkStatus } from '../meta/status.js';
import type { AttachmentStore } from '../meta/store.js';
import type { Log, Service } from '../util/service.js';

/** The resend as a service: once, in the background, at the daemon's start. */
export function owedStatusService(store: AttachmentStore, api: ApiClient, log: Log): Service {
  return {
    name: 'owed-status',
    start: () => {
      void resendPendingStatus(store, api, (msg, fields) => log.info(fields, msg)).catch((err: Error) => log.warn({ error: err.message }, 'owed network-status not resent'));
      return Promise.resolve();
    },
    stop: () => Promise.resolve(),
  };
}

export async function resendPendingStatus(store: AttachmentStore, api: ApiClient, log: (msg: string, fields: Record<string, unknown>) => void): Promise<number> {
  let sent = 0;
  for (const record of store.pendingStatuses()) {
    const pod = `${record.podNamespace}/${record.podName}`;
    try {
      const written = await writeNetworkStatus(api, { namespace: record.podNamespace, name: record.podName, uid: record.podUID }, record.pendingStatus);
      if (written === 'ok') sent += 1;
      log(written === 'ok' ? 'owed network-status sent' : 'owed network-status dropped: the pod is gone or was replaced', { pod, containerID: record.containerID });
    } catch (err) {
      log('owed network-status still not written', { pod, containerID: record.containerID, error: (err as Error).message });
      continue;
    }
    store.settlePendingStatus(record.containerID, record.pendingStatus);
  }
  return sent;
}
