/**
 * At daemon start: network-status the previous daemon owed (it answered ADD, then died before the
 * API acknowledged the PATCH) is sent again. A pod that is gone (404) owes nothing any more.
 */
import { ApiError, type ApiClient } from '../k8s/client.js';
import { podPath } from '../k8s/types.js';
import { NETWORK_STATUS_ANNOTATION } from '../meta/selection.js';
import type { AttachmentStore } from '../meta/store.js';

export async function resendPendingStatus(store: AttachmentStore, api: ApiClient, log: (msg: string, fields: Record<string, unknown>) => void): Promise<number> {
  let sent = 0;
  for (const record of store.pendingStatuses()) {
    const pod = `${record.podNamespace}/${record.podName}`;
    try {
      await api.patch(`${podPath(record.podNamespace, record.podName)}/status`, { metadata: { annotations: { [NETWORK_STATUS_ANNOTATION]: record.pendingStatus } } });
      sent += 1;
      log('owed network-status sent', { pod, containerID: record.containerID });
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) {
        log('owed network-status still not written', { pod, containerID: record.containerID, error: (err as Error).message });
        continue;
      }
    }
    store.settlePendingStatus(record.containerID, record.pendingStatus);
  }
  return sent;
}
