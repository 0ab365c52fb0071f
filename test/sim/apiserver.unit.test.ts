import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { ApiServerDouble, jsonPatch, mergePatch } from '../../src/sim/apiserver.js';
import { plexusctlPath, repoRoot } from '../support/plugins.js';
import { Rig } from '../support/rig.js';
import { get as httpsGet } from 'node:https';

const KUBECTL = join(repoRoot, '.tools', 'kubectl', 'usr', 'bin', 'kubectl');
const pod = (name: string, node: string, annotations: Record<string, string> = {}): k8s.V1Pod => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: 'default', annotations },
  spec: { nodeName: node, containers: [{ name: 'c', image: 'x' }] },
});
const nad = (name: string, namespace: string, config?: string) => ({
  apiVersion: 'k8s.cni.cncf.io/v1',
  kind: 'NetworkAttachmentDefinition',
  metadata: { name, namespace },
  spec: config === undefined ? {} : { config },
});

describe('API server double', function () {
  this.timeout(30000);
  const rig = new Rig();
  let server: ApiServerDouble;
  let kc: k8s.KubeConfig;
  let kubeconfigFile: string;
  beforeEach(async () => {
    server = new ApiServerDouble();
    await server.start();
    kc = new k8s.KubeConfig();
    kc.loadFromString(server.kubeconfig());
    kubeconfigFile = join(rig.dir('kc'), 'kubeconfig');
    writeFileSync(kubeconfigFile, server.kubeconfig());
  });
  afterEach(async () => {
    await server.stop();
  });
  after(() => rig.cleanup());

  describe('with @kubernetes/client-node 1.x', () => {
    it('creates, reads, lists by node and patches pods, including the status subresource', async () => {
      const core = kc.makeApiClient(k8s.CoreV1Api);
      await core.createNamespacedPod({ namespace: 'default', body: pod('p1', 'node-a') });
      await core.createNamespacedPod({ namespace: 'default', body: pod('p2', 'node-b') });
      const got = await core.readNamespacedPod({ name: 'p1', namespace: 'default' });
      assert.equal(got.spec?.nodeName, 'node-a');
      assert.ok(got.metadata?.uid);
      const onA = await core.listPodForAllNamespaces({ fieldSelector: 'spec.nodeName=node-a' });
      assert.deepEqual(
        onA.items.map((p) => p.metadata?.name),
        ['p1'],
      );
      await core.patchNamespacedPodStatus(
        { name: 'p1', namespace: 'default', body: { metadata: { annotations: { 'k8s.v1.cni.cncf.io/network-status': '[]' } }, spec: { nodeName: 'evil' } } },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
      );
      const after = await core.readNamespacedPod({ name: 'p1', namespace: 'default' });
      assert.equal(after.metadata?.annotations?.['k8s.v1.cni.cncf.io/network-status'], '[]');
      assert.equal(after.spec?.nodeName, 'node-a', 'the status subresource never changes spec');
      await core.patchNamespacedPod(
        { name: 'p1', namespace: 'default', body: [{ op: 'add', path: '/metadata/labels', value: { a: 'b' } }] },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.JsonPatch),
      );
      assert.deepEqual((await core.readNamespacedPod({ name: 'p1', namespace: 'default' })).metadata?.labels, { a: 'b' });
      await assert.rejects(core.readNamespacedPod({ name: 'nope', namespace: 'default' }), (e: unknown) => (e as { code?: number }).code === 404);
    });

    it('serves the NAD CRD: create, get, list, update, delete, and validates against the CRD schema', async () => {
      const custom = kc.makeApiClient(k8s.CustomObjectsApi);
      const base = { group: 'k8s.cni.cncf.io', version: 'v1', plural: 'network-attachment-definitions' };
      await custom.createNamespacedCustomObject({ ...base, namespace: 'ns1', body: nad('macvlan-a', 'ns1', '{"cniVersion":"1.0.0","type":"macvlan"}') });
      const got = (await custom.getNamespacedCustomObject({ ...base, namespace: 'ns1', name: 'macvlan-a' })) as { spec: { config: string }; metadata: { resourceVersion: string } };
      assert.match(got.spec.config, /macvlan/);
      const list = (await custom.listNamespacedCustomObject({ ...base, namespace: 'ns1' })) as { items: unknown[] };
      assert.equal(list.items.length, 1);
      await custom.replaceNamespacedCustomObject({
        ...base,
        namespace: 'ns1',
        name: 'macvlan-a',
        body: { ...nad('macvlan-a', 'ns1', '{}'), metadata: { name: 'macvlan-a', namespace: 'ns1', resourceVersion: got.metadata.resourceVersion } },
      });
      await assert.rejects(
        custom.createNamespacedCustomObject({ ...base, namespace: 'ns1', body: { ...nad('bad', 'ns1'), spec: { config: 42 } } }),
        (e: unknown) => (e as { code?: number }).code === 422,
      );
      await custom.deleteNamespacedCustomObject({ ...base, namespace: 'ns1', name: 'macvlan-a' });
      await assert.rejects(custom.getNamespacedCustomObject({ ...base, namespace: 'ns1', name: 'macvlan-a' }), (e: unknown) => (e as { code?: number }).code === 404);
    });

    it('feeds an informer (list + watch) of one node’s pods', async () => {
      const core = kc.makeApiClient(k8s.CoreV1Api);
      await core.createNamespacedPod({ namespace: 'default', body: pod('early', 'node-a') });
      const informer = k8s.makeInformer(kc, '/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a', () => core.listPodForAllNamespaces({ fieldSelector: 'spec.nodeName=node-a' }));
      const seen: string[] = [];
      informer.on('add', (p: k8s.V1Pod) => seen.push(`add ${p.metadata?.name}`));
      informer.on('update', (p: k8s.V1Pod) => seen.push(`update ${p.metadata?.name}`));
      informer.on('delete', (p: k8s.V1Pod) => seen.push(`delete ${p.metadata?.name}`));
      await informer.start();
      await core.createNamespacedPod({ namespace: 'default', body: pod('late', 'node-a') });
      await core.createNamespacedPod({ namespace: 'default', body: pod('elsewhere', 'node-b') });
      await core.patchNamespacedPod({ name: 'late', namespace: 'default', body: { metadata: { labels: { x: 'y' } } } }, k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch));
      await core.deleteNamespacedPod({ name: 'late', namespace: 'default' });
      for (let i = 0; i < 50 && seen.length < 4; i++) await new Promise((r) => setTimeout(r, 50));
      await informer.stop();
      assert.deepEqual(seen, ['add early', 'add late', 'update late', 'delete late']);
    });

    it('creates events and counts requests by verb', async () => {
      const core = kc.makeApiClient(k8s.CoreV1Api);
      const before = server.countRequests();
      await core.createNamespacedEvent({
        namespace: 'default',
        body: { metadata: { generateName: 'p1.', namespace: 'default' }, involvedObject: { kind: 'Pod', name: 'p1', namespace: 'default' }, reason: 'AddedInterface', message: 'm', type: 'Normal' },
      });
      const events = await core.listNamespacedEvent({ namespace: 'default' });
      assert.equal(events.items[0]?.reason, 'AddedInterface');
      assert.match(events.items[0]?.metadata?.name ?? '', /^p1\./);
      assert.equal(server.countRequests() - before, 2);
      assert.equal(
        server.countRequests((r) => r.verb === 'post' && r.resource === 'events'),
        1,
      );
    });
  });

  describe("with Debian's kubectl 1.20", () => {
    // Asynchronous: the double serves from this process, so a synchronous spawn would block it.
    const kubectl = (args: string[], input?: string): Promise<{ status: number; stdout: string; stderr: string }> =>
      new Promise((resolve) => {
        const child = execFile(KUBECTL, ['--kubeconfig', kubeconfigFile, '--request-timeout=10s', ...args], { encoding: 'utf8' }, (err, stdout, stderr) =>
          resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
        );
        child.stdin?.end(input ?? '');
      });

    it('discovers the NAD resource and its short name, creates, gets and deletes NADs', async () => {
      const res = await kubectl(['api-resources', '--api-group=k8s.cni.cncf.io', '-o', 'name']);
      assert.equal(res.status, 0, res.stderr);
      assert.match(res.stdout, /network-attachment-definitions\.k8s\.cni\.cncf\.io/);
      const yaml = 'apiVersion: k8s.cni.cncf.io/v1\nkind: NetworkAttachmentDefinition\nmetadata:\n  name: br-b\n  namespace: ns2\nspec:\n  config: \'{"cniVersion":"1.0.0","type":"bridge"}\'\n';
      const create = await kubectl(['create', '--validate=false', '-f', '-'], yaml);
      assert.equal(create.status, 0, create.stderr);
      const get = await kubectl(['get', 'net-attach-def', '-n', 'ns2', 'br-b', '-o', 'json']);
      assert.equal(get.status, 0, get.stderr);
      assert.match((JSON.parse(get.stdout) as { spec: { config: string } }).spec.config, /bridge/);
      assert.equal((await kubectl(['delete', 'network-attachment-definitions', '-n', 'ns2', 'br-b'])).status, 0);
      assert.equal((await kubectl(['get', 'net-attach-def', '-n', 'ns2', 'br-b'])).status, 1);
    });

    it('lists pods by field selector and annotates them (strategic merge patch)', async () => {
      server.put('v1', 'pods', pod('p1', 'node-a') as never);
      server.put('v1', 'pods', pod('p2', 'node-b') as never);
      const list = await kubectl(['get', 'pods', '-A', '--field-selector', 'spec.nodeName=node-b', '-o', 'json']);
      assert.equal(list.status, 0, list.stderr);
      assert.deepEqual(
        (JSON.parse(list.stdout) as { items: { metadata: { name: string } }[] }).items.map((p) => p.metadata.name),
        ['p2'],
      );
      const annotate = await kubectl(['annotate', 'pod', 'p1', 'k8s.v1.cni.cncf.io/networks=macvlan-a']);
      assert.equal(annotate.status, 0, annotate.stderr);
      assert.equal(server.get('v1', 'pods', 'default', 'p1')?.metadata.annotations?.['k8s.v1.cni.cncf.io/networks'], 'macvlan-a');
    });
  });

  it('merge and JSON patch follow RFC 7386 and RFC 6902', () => {
    assert.deepEqual(mergePatch({ a: 1, b: { c: 2, d: 3 } }, { b: { c: null, e: 4 }, f: [1] }), { a: 1, b: { d: 3, e: 4 }, f: [1] });
    const doc = { a: { b: [1, 2] }, c: 'x' };
    assert.deepEqual(
      jsonPatch(doc, [
        { op: 'add', path: '/a/b/-', value: 3 },
        { op: 'replace', path: '/c', value: 'y' },
        { op: 'remove', path: '/a/b/0' },
        { op: 'test', path: '/c', value: 'y' },
        { op: 'copy', from: '/c', path: '/d' },
        { op: 'move', from: '/d', path: '/e' },
      ]),
      { a: { b: [2, 3] }, c: 'y', e: 'y' },
    );
    assert.throws(() => jsonPatch(doc, [{ op: 'test', path: '/c', value: 'nope' }]), /test failed/);
    assert.deepEqual(doc, { a: { b: [1, 2] }, c: 'x' }, 'the input is not modified');
  });

  it('runs as `plexusctl apiserver`, prints its URL and kubeconfig, and stops on SIGTERM', async () => {
    const child = spawn(plexusctlPath, ['apiserver', '--port', '0']);
    const line = await new Promise<string>((resolve) => child.stdout.once('data', (c: Buffer) => resolve(c.toString())));
    const { url, kubeconfig } = JSON.parse(line) as { url: string; kubeconfig: { clusters: { cluster: { server: string; 'certificate-authority-data': string } }[] } };
    assert.equal(kubeconfig.clusters[0]?.cluster.server, url);
    assert.match(url, /^https:/);
    const ca = Buffer.from(kubeconfig.clusters[0]!.cluster['certificate-authority-data'], 'base64');
    const groups = await new Promise<{ groups: { name: string }[] }>((resolve, reject) => {
      httpsGet(`${url}/apis`, { ca }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve(JSON.parse(body) as { groups: { name: string }[] }));
      }).on('error', reject);
    });
    assert.ok(groups.groups.some((g) => g.name === 'k8s.cni.cncf.io'));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
  });
});
