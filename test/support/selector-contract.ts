/**
 * The label-selector contract the policy engine's peer watches rely on, run against the real
 * kube-apiserver and the API double alike (so the double is checked against the real thing): a list
 * filtered by `selectorQuery(sel)` returns exactly the pods `matches(sel, labels)` says, and a watch
 * filtered by a selector sees a pod labelled into it as ADDED and out of it as DELETED (with the pod as
 * it last matched).
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { type ApiClient, type WatchEvent } from '../../src/k8s/client.js';
import { type LabelSelector, matches } from '../../src/policy/model.js';
import { selectorQuery } from '../../src/policy/watches.js';

const KEYS = ['app', 'tier', 'k8s.io/role'] as const;
const VALUES = ['a', 'b', 'c-1'] as const;

export async function selectorContract(api: ApiClient, namespace: string): Promise<void> {
  const base = `/api/v1/namespaces/${namespace}/pods`;
  const podBody = (name: string, labels: Record<string, string>) => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace, labels }, spec: { containers: [{ name: 'c', image: 'x' }] } });
  // 12 pods with labels drawn from a fixed seed: every selector below has pods on both sides.
  const labelSets = fc.sample(fc.dictionary(fc.constantFrom(...KEYS), fc.constantFrom(...VALUES), { maxKeys: 3 }), { numRuns: 12, seed: 7 });
  const labelsOf = new Map<string, Record<string, string>>();
  for (const [i, labels] of labelSets.entries()) {
    await api.post(base, podBody(`sel-${i}`, labels));
    labelsOf.set(`sel-${i}`, labels);
  }
  const expr = fc.oneof(
    fc.record({ key: fc.constantFrom(...KEYS), operator: fc.constantFrom('In' as const, 'NotIn' as const), values: fc.uniqueArray(fc.constantFrom(...VALUES), { minLength: 1, maxLength: 2 }) }),
    fc.record({ key: fc.constantFrom(...KEYS), operator: fc.constantFrom('Exists' as const, 'DoesNotExist' as const), values: fc.constant([] as string[]) }),
  );
  const selectors: LabelSelector[] = fc.sample(
    fc.record({ matchLabels: fc.dictionary(fc.constantFrom(...KEYS), fc.constantFrom(...VALUES), { maxKeys: 1 }), matchExpressions: fc.array(expr, { maxLength: 2 }) }),
    {
      numRuns: 40,
      seed: 11,
    },
  );
  for (const sel of selectors) {
    const q = selectorQuery(sel);
    const listed = await api.get<{ items: { metadata: { name: string } }[] }>(`${base}?${new URLSearchParams(q ? { labelSelector: q } : {})}`);
    const got = listed.items.map((p) => p.metadata.name).sort();
    const want = [...labelsOf]
      .filter(([, l]) => matches(sel, l))
      .map(([n]) => n)
      .sort();
    assert.deepEqual(got, want, `labelSelector ${q}`);
  }
  // A filtered watch across a label change: in → ADDED, changed inside → MODIFIED, out → DELETED carrying
  // the object as it last matched (tier 2, not 3: what kube-apiserver sends), then nothing.
  const listed = await api.get<{ metadata: { resourceVersion: string } }>(base);
  const seen: string[] = [];
  const watch = api.watch(`${base}?${new URLSearchParams({ watch: '1', labelSelector: 'app=w', resourceVersion: listed.metadata.resourceVersion })}`, (e: WatchEvent) => {
    if (e.type !== 'BOOKMARK') seen.push(`${e.type} ${(e.object as { metadata: { labels?: Record<string, string> } }).metadata.labels?.tier ?? ''}`);
  });
  const path = `${base}/sel-0`;
  await api.patch(path, { metadata: { labels: { app: 'w', tier: '1' } } });
  await api.patch(path, { metadata: { labels: { app: 'w', tier: '2' } } });
  await api.patch(path, { metadata: { labels: { app: 'v', tier: '3' } } });
  await api.patch(path, { metadata: { labels: { app: 'v', tier: '4' } } });
  for (let i = 0; i < 100 && seen.length < 3; i++) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 300));
  watch.abort();
  assert.deepEqual(seen, ['ADDED 1', 'MODIFIED 2', 'DELETED 2']);
  for (const name of labelsOf.keys()) await api.delete(`${base}/${name}`);
}
