import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { keptNad, keptPod } from '../../src/daemon/cache.js';
import { ApiClient } from '../../src/k8s/client.js';
import { Informer, type InformerOptions } from '../../src/k8s/informer.js';
import { kubeconfigToApiConfig } from '../../src/k8s/kubeconfig.js';
import type { NetworkAttachmentDefinition, Pod } from '../../src/k8s/types.js';
import { ApiServerDouble } from '../../src/sim/apiserver.js';
import { waitFor } from '../support/wait.js';
import { parse } from 'yaml';

const NADS = 'network-attachment-definitions';
const nadPath = (ns: string) => `/apis/k8s.cni.cncf.io/v1/namespaces/${ns}/${NADS}`;
const nad = (namespace: string, name: string, annotations: Record<string, string> = {}) =>
  ({ metadata: { name, namespace, annotations }, spec: { config: `{"cniVersion":"1.0.0","name":"${name}","type":"macvlan"}` } }) as never;
const pod = (name: string, nodeName: string, annotations: Record<string, string> = {}) =>
  ({
    metadata: { name, namespace: 'default', annotations },
    spec: { nodeName, containers: [{ name: 'c', image: 'x', env: [{ name: 'BIG', value: 'x'.repeat(4096) }] }] },
    status: { phase: 'Running' },
  }) as never;

describe('lean informer (list + watch) against the API double', function () {
  this.timeout(30000);
  let server: ApiServerDouble;
  let api: ApiClient;
  const running: Informer<{ metadata: { name: string; namespace?: string } }>[] = [];
  const requests = (verb: string, path: string) => server.requests.filter((r) => r.verb === verb && r.path.startsWith(path)).length;
  const informer = <T extends { metadata: { name: string; namespace?: string } }>(opts: InformerOptions<T>): Informer<T> => {
    const i = new Informer<T>(api, opts);
    running.push(i as never);
    return i;
  };

  beforeEach(async () => {
    server = new ApiServerDouble();
    await server.start();
    api = new ApiClient(kubeconfigToApiConfig(parse(server.kubeconfig()), 'the double'), 5000);
  });
  afterEach(async () => {
    await Promise.all(running.splice(0).map((i) => i.stop()));
    server.acceptedTokens = undefined;
    server.silentWatches = false;
    await server.stop();
  });

  it('keeps what `keep` makes of each object, and follows adds, changes and deletes through the watch', async () => {
    server.put('v1', 'pods', pod('a', 'plx-node', { 'k8s.v1.cni.cncf.io/networks': 'net-a', 'kubectl.kubernetes.io/last-applied-configuration': 'x'.repeat(1000) }));
    server.put('v1', 'pods', pod('elsewhere', 'other-node'));
    const seen: string[] = [];
    const pods = informer<Pod>({ path: '/api/v1/pods', query: { fieldSelector: 'spec.nodeName=plx-node' }, keep: keptPod, onChange: (p, gone) => seen.push(`${gone ? '-' : '+'}${p.metadata.name}`) });
    await pods.start();
    assert.ok(pods.listed);
    // Only the node's pods, and of each only its identity and the annotations the plugin core reads.
    const a = pods.get('default', 'a')!;
    assert.deepEqual(Object.keys(a), ['metadata']);
    assert.deepEqual(a.metadata.annotations, { 'k8s.v1.cni.cncf.io/networks': 'net-a' });
    assert.ok(a.metadata.uid && a.metadata.resourceVersion);
    assert.equal(pods.get('default', 'elsewhere'), undefined);
    server.put('v1', 'pods', pod('b', 'plx-node'));
    server.put('v1', 'pods', pod('a', 'plx-node', { 'k8s.v1.cni.cncf.io/networks': 'net-b' }));
    server.delete('v1', 'pods', 'default', 'b');
    await waitFor('the watch events in the store', () => pods.get('default', 'a')?.metadata.annotations?.['k8s.v1.cni.cncf.io/networks'] === 'net-b' && seen.includes('-b'));
    assert.deepEqual(seen, ['+a', '+b', '+a', '-b']);
    assert.deepEqual(
      pods.list().map((p) => p.metadata.name),
      ['a'],
    );
  });

  it('lists page by page (limit + continue) and watches from the resourceVersion of the list', async () => {
    for (let i = 0; i < 7; i++) server.put('k8s.cni.cncf.io/v1', NADS, nad('ns-a', `n${i}`));
    let changes = 0;
    const nads = informer<NetworkAttachmentDefinition>({ path: nadPath('ns-a'), keep: keptNad, pageSize: 3, onChange: () => changes++ });
    await nads.start();
    assert.equal(nads.list().length, 7);
    assert.equal(requests('list', nadPath('ns-a')), 3, 'three pages of at most 3');
    await waitFor('the watch', () => server.requests.find((r) => r.verb === 'watch'));
    await sleep(200);
    // A watch without the list's resourceVersion would be sent every object again, as ADDED.
    assert.equal(changes, 7);
  });

  it('watches again from where it was when the server ends the watch, without listing again', async () => {
    server.put('k8s.cni.cncf.io/v1', NADS, nad('ns-a', 'first'));
    const nads = informer<NetworkAttachmentDefinition>({ path: nadPath('ns-a'), keep: keptNad });
    await nads.start();
    await waitFor('the watch', () => requests('watch', nadPath('ns-a')) === 1);
    server.endWatches();
    await waitFor('a second watch', () => requests('watch', nadPath('ns-a')) === 2);
    server.put('k8s.cni.cncf.io/v1', NADS, nad('ns-a', 'second'));
    await waitFor('the new NAD', () => nads.get('ns-a', 'second'));
    assert.equal(requests('list', nadPath('ns-a')), 1);
  });

  it('takes a BOOKMARK as how far it has come: a watch again after the history before it was compacted needs no new list', async () => {
    const nads = informer<NetworkAttachmentDefinition>({ path: nadPath('ns-a'), keep: keptNad, watchSeconds: [4, 4] });
    await nads.start();
    // Other namespaces change: nothing for this watch, but the resourceVersion moves on.
    for (let i = 0; i < 5; i++) server.put('k8s.cni.cncf.io/v1', NADS, nad('ns-b', `b${i}`));
    // The double sends the bookmark 2 s before the watch's timeout; then everything before it is compacted.
    await sleep(2500);
    server.compact();
    await waitFor('the watch after the timeout', () => requests('watch', nadPath('ns-a')) === 2, 10000);
    server.put('k8s.cni.cncf.io/v1', NADS, nad('ns-a', 'after'));
    await waitFor('the NAD made after the rewatch', () => nads.get('ns-a', 'after'));
    assert.equal(requests('list', nadPath('ns-a')), 1, 'the bookmark kept the watch inside the history: no 410, no list');
  });

  it('lists again on 410 Expired (after its random spread, 0 here), bringing the store up to date and telling what went meanwhile, and reports no error', async () => {
    server.put('k8s.cni.cncf.io/v1', NADS, nad('ns-a', 'stays'));
    server.put('k8s.cni.cncf.io/v1', NADS, nad('ns-a', 'goes'));
    const errors: string[] = [];
    const seen: string[] = [];
    const nads = informer<NetworkAttachmentDefinition>({
      path: nadPath('ns-a'),
      keep: keptNad,
      relistSpreadMs: 0,
      onError: (e) => errors.push(e.message),
      onChange: (n, gone) => seen.push(`${gone ? '-' : '+'}${n.metadata.name}`),
    });
    await nads.start();
    await waitFor('the watch', () => requests('watch', nadPath('ns-a')) === 1);
    // The informer's watch is dropped and its history compacted while it is away: it must list again.
    server.acceptedTokens = new Set();
    server.endWatches();
    await waitFor('the refused watch', () => errors.length > 0);
    server.delete('k8s.cni.cncf.io/v1', NADS, 'ns-a', 'goes');
    for (let i = 0; i < 3; i++) server.put('k8s.cni.cncf.io/v1', NADS, nad('ns-b', `b${i}`));
    server.compact();
    const errorsBefore = errors.length;
    server.acceptedTokens = undefined;
    await waitFor('the list after 410', () => requests('list', nadPath('ns-a')) === 2, 10000);
    await waitFor('the deletion seen', () => seen.includes('-goes'));
    assert.deepEqual(
      nads.list().map((n) => n.metadata.name),
      ['stays'],
    );
    assert.equal(errors.length, errorsBefore, `410 is no error: ${errors.join('; ')}`);
    assert.equal(nads.lastError, undefined);
  });

  it('backs off while the API refuses it (1 s, 2 s, …), keeps what it has, and recovers', async () => {
    server.acceptedTokens = new Set();
    const errors: number[] = [];
    const nads = informer<NetworkAttachmentDefinition>({ path: nadPath('ns-a'), keep: keptNad, onError: () => errors.push(Date.now()) });
    const t0 = Date.now();
    await nads.start();
    assert.equal(nads.listed, false);
    assert.match(nads.lastError ?? '', /401/);
    await sleep(3500);
    // Tries at ~0, 1 and 3 s: not a hot loop.
    assert.ok(errors.length >= 2 && errors.length <= 3, `${errors.length} tries in 3.5 s: ${errors.map((t) => t - t0).join(', ')}`);
    server.acceptedTokens = undefined;
    server.put('k8s.cni.cncf.io/v1', NADS, nad('ns-a', 'late'));
    await waitFor('the list after the API accepts it', () => nads.get('ns-a', 'late'), 10000);
    assert.ok(nads.listed);
    assert.equal(nads.lastError, undefined);
  });

  it('a watch that outlives its timeout (a connection lost without a word) is ended and started again', async () => {
    server.silentWatches = true;
    const errors: string[] = [];
    const nads = informer<NetworkAttachmentDefinition>({ path: nadPath('ns-a'), keep: keptNad, watchSeconds: [1, 1], watchGraceMs: 300, onError: (e) => errors.push(e.message) });
    await nads.start();
    await waitFor('a second watch', () => requests('watch', nadPath('ns-a')) >= 2, 10000);
    assert.match(errors[0] ?? '', /outlived its 1 s timeout: the connection is taken as lost/);
    server.silentWatches = false;
    server.endWatches();
    server.put('k8s.cni.cncf.io/v1', NADS, nad('ns-a', 'after'));
    await waitFor('the NAD through a live watch', () => nads.get('ns-a', 'after'), 10000);
  });

  it('an object `keep` refuses is reported and left out, the others are kept', async () => {
    server.put('k8s.cni.cncf.io/v1', NADS, nad('ns-a', 'good'));
    server.put('k8s.cni.cncf.io/v1', NADS, nad('ns-a', 'bad'));
    const errors: string[] = [];
    const keep = (raw: unknown) => {
      const n = keptNad(raw);
      if (n.metadata.name === 'bad') throw new Error('NetworkAttachmentDefinition ns-a/bad: refused');
      return n;
    };
    const nads = informer<NetworkAttachmentDefinition>({ path: nadPath('ns-a'), keep, onError: (e) => errors.push(e.message) });
    await nads.start();
    assert.deepEqual(
      nads.list().map((n) => n.metadata.name),
      ['good'],
    );
    assert.deepEqual(errors, ['NetworkAttachmentDefinition ns-a/bad: refused']);
  });
});
