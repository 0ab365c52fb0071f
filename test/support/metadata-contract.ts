/**
 * The metadata-only contract the IPAM leader's Node informer and the policy engine's namespace watches
 * rely on, run against the real kube-apiserver and the API double alike: with the metadata client's
 * Accept headers, a list is a PartialObjectMetadataList and a watch brings PartialObjectMetadata,
 * metadata (labels included) and no spec or status.
 */
import assert from 'node:assert/strict';
import { type ApiClient, METADATA_ONLY, type WatchEvent } from '../../src/k8s/client.js';

export async function metadataOnlyContract(api: ApiClient, name: string): Promise<void> {
  const node = { apiVersion: 'v1', kind: 'Node', metadata: { name, labels: { contract: 'metadata' } }, spec: { podCIDR: '10.99.0.0/24' } };
  const events: WatchEvent[] = [];
  const w = api.watch(`/api/v1/nodes?watch=1&labelSelector=contract%3Dmetadata`, (e) => events.push(e), METADATA_ONLY.watch);
  try {
    await api.post('/api/v1/nodes', node);
    const list = await api.get<{ kind: string; apiVersion: string; items: Record<string, unknown>[] }>(`/api/v1/nodes?labelSelector=contract%3Dmetadata&resourceVersion=0`, METADATA_ONLY.list);
    assert.equal(list.kind, 'PartialObjectMetadataList');
    assert.equal(list.apiVersion, 'meta.k8s.io/v1');
    assert.equal(list.items.length, 1);
    const item = list.items[0]!;
    assert.equal(item.kind, 'PartialObjectMetadata');
    assert.deepEqual(Object.keys(item).sort(), ['apiVersion', 'kind', 'metadata']);
    assert.equal((item.metadata as { name: string }).name, name);
    assert.deepEqual((item.metadata as { labels: Record<string, string> }).labels.contract, 'metadata');
    for (let i = 0; i < 100 && !events.some((e) => e.type === 'ADDED'); i++) await new Promise((r) => setTimeout(r, 50));
    const added = events.find((e) => e.type === 'ADDED');
    assert.ok(added, 'the watch saw the Node');
    const obj = added.object as Record<string, unknown>;
    assert.equal(obj.kind, 'PartialObjectMetadata');
    assert.equal(obj.spec, undefined);
    assert.equal((obj.metadata as { name: string }).name, name);
    // Without the header: the Node in full.
    const full = await api.get<{ kind: string; spec?: { podCIDR?: string } }>(`/api/v1/nodes/${name}`);
    assert.equal(full.kind, 'Node');
    assert.equal(full.spec?.podCIDR, '10.99.0.0/24');
  } finally {
    w.abort();
    await api.delete(`/api/v1/nodes/${name}`).catch(() => undefined);
  }
}
