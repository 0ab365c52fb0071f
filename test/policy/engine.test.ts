/**
 * The policy engine's cost follows its node (docs/scale.md): against the API double, with a real pod
 * netns and the real nft. It watches the policies, its node's pods and only the peers of the policies
 * selecting its pods; an ADD of a pod no policy selects depends on no cluster-wide list.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { kubeconfigToApiConfig } from '../../src/k8s/kubeconfig.js';
import type { PolicySandbox } from '../../src/policy/model.js';
import { PolicyEngine, type PolicyObserver } from '../../src/policy/engine.js';
import { findNft } from '../../src/policy/nft.js';
import { ApiServerDouble } from '../../src/sim/apiserver.js';
import { repoRoot } from '../../src/sim/simnode.js';
import { Rig } from '../support/rig.js';
import { waitFor } from '../support/wait.js';

// The version the engine reads from the double (its discovery lists v1beta1 first).
const MNP = 'k8s.cni.cncf.io/v1beta1';
const observer: PolicyObserver = { synced: () => undefined, failed: () => undefined, forgot: () => undefined, unfilterable: () => undefined, log: () => undefined };
const status = (ns: string, ip: string) => JSON.stringify([{ name: `${ns}/net`, interface: 'net1', ips: [ip] }]);
const pod = (ns: string, name: string, node: string, app: string, ip: string) =>
  ({
    metadata: { name, namespace: ns, labels: { app }, annotations: { 'k8s.v1.cni.cncf.io/network-status': status(ns, ip) } },
    spec: { nodeName: node, containers: [{ name: 'c', image: 'x' }] },
  }) as never;
const policy = (ns: string, name: string, spec: object) => ({ metadata: { name, namespace: ns, annotations: { 'k8s.v1.cni.cncf.io/policy-for': 'net' } }, spec }) as never;

describe('policy engine: what a node watches (the API double, a real netns and nft)', function () {
  this.timeout(60_000);
  const rig = new Rig();
  let server: ApiServerDouble;
  let engine: PolicyEngine | undefined;
  const traffic: { requests: string[]; events: string[] } = { requests: [], events: [] };
  const nft = findNft()!;

  /** A pod netns with a net1 (one end of a veth), as the meta plugin leaves it. */
  const sandbox = (ns: string, name: string, ip: string): PolicySandbox => {
    const netns = rig.netns('pe');
    const [a, b] = rig.veth('pe');
    execFileSync('ip', ['link', 'set', b, 'netns', netns.name, 'name', 'net1']);
    void a;
    return { containerID: `sb-${name}`, netns: netns.path, namespace: ns, name, networks: [{ network: `${ns}/net`, ifName: 'net1', ips: [ip] }] };
  };
  const table = (s: PolicySandbox) => {
    try {
      return execFileSync('ip', ['netns', 'exec', s.netns.split('/').pop()!, 'nft', 'list', 'table', 'inet', 'plexus_policy'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    } catch {
      return '';
    }
  };
  const start = async (s: ApiServerDouble) => {
    traffic.requests = [];
    traffic.events = [];
    engine = new PolicyEngine({
      api: kubeconfigToApiConfig(parse(s.kubeconfig()), 'the double'),
      nodeName: 'node-1',
      nft,
      observer,
      traffic: { request: (m, p) => traffic.requests.push(`${m} ${decodeURIComponent(p)}`), watchEvent: (p, type) => type !== 'BOOKMARK' && traffic.events.push(`${type} ${decodeURIComponent(p)}`) },
    });
    await engine.start();
    return engine;
  };
  /** Every pod or namespace list/watch the engine made that is not filtered to its node or by a label selector. */
  const unfiltered = () => traffic.requests.filter((r) => /^(GET|WATCH) \/api\/v1\/(pods|namespaces)(\?|$)/.test(r) && !/(fieldSelector=spec\.nodeName=node-1|labelSelector=)/.test(r));

  beforeEach(async () => {
    server = new ApiServerDouble();
    await server.start();
  });
  afterEach(async () => {
    await engine?.stop();
    engine = undefined;
    await server.stop();
    rig.cleanup();
  });

  it('no policy selects the pod: its ADD waits for the policy list only, even with every cluster-wide pod and namespace list failing', async () => {
    server.put(MNP, 'multi-networkpolicies', policy('x', 'other', { podSelector: { matchLabels: { app: 'z' } }, ingress: [{ from: [{ podSelector: {} }] }] }));
    server.put('v1', 'pods', pod('x', 'a', 'node-1', 'a', '10.9.0.2'));
    server.fault = (method, path, query) => (path === '/api/v1/namespaces' || (path === '/api/v1/pods' && !query.get('fieldSelector')) ? 503 : undefined);
    const e = await start(server);
    const s = sandbox('x', 'a', '10.9.0.2');
    await e.attached(s);
    assert.equal(table(s), '', 'no table: nothing selects it');
    assert.deepEqual(unfiltered(), []);
    assert.deepEqual(e.stats().watches, [], 'no peer watch: the one policy selects no pod of this node');
  });

  it('no MultiNetworkPolicy CRD served: ADDs go through, and nothing but the policy list was tried', async () => {
    await server.stop();
    const crds = mkdtempSync(join(tmpdir(), 'plx-crds-'));
    copyFileSync(join(repoRoot(), 'crds', 'network-attachment-definition.yaml'), join(crds, 'network-attachment-definition.yaml'));
    server = new ApiServerDouble({ crdDir: crds });
    await server.start();
    rmSync(crds, { recursive: true });
    const e = await start(server);
    assert.ok(e.ready, 'no CRD: no policy can exist');
    await e.attached(sandbox('x', 'a', '10.9.0.2'));
    assert.deepEqual(unfiltered(), []);
  });

  it("a policy selecting the node's pod: only its peers are watched (filtered by the server), churn elsewhere reaches nothing, peers on other nodes come and go", async () => {
    server.put(MNP, 'multi-networkpolicies', policy('x', 'from-b', { podSelector: { matchLabels: { app: 'a' } }, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'b' } } }] }] }));
    // 49 more policies for pods this node does not have: none of their peers is watched here.
    for (let i = 0; i < 49; i++) server.put(MNP, 'multi-networkpolicies', policy(`ns${i}`, 'p', { podSelector: {}, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'b' } } }] }] }));
    server.put('v1', 'pods', pod('x', 'a', 'node-1', 'a', '10.9.0.2'));
    server.put('v1', 'pods', pod('x', 'b1', 'node-2', 'b', '10.9.0.3'));
    server.put('v1', 'pods', pod('x', 'c1', 'node-2', 'c', '10.9.0.5'));
    server.put('v1', 'pods', pod('y', 'b', 'node-3', 'b', '10.9.0.6'));
    const e = await start(server);
    const s = sandbox('x', 'a', '10.9.0.2');
    await e.attached(s);
    let t = table(s);
    assert.match(t, /10\.9\.0\.3/, `the peer on another node is in the table when the ADD returns: ${t} ${JSON.stringify(e.stats())} ${traffic.requests.join('; ')}`);
    assert.doesNotMatch(t, /10\.9\.0\.5|10\.9\.0\.6/);
    assert.deepEqual(e.stats().watches, ['/api/v1/namespaces/x/pods?app=b']);
    assert.equal(e.stats().pods, 2, 'the node pod and its one peer; not the cluster');
    assert.deepEqual(unfiltered(), []);
    // Churn on other nodes of pods no policy of this node names: no event reaches the engine.
    const eventsBefore = traffic.events.length;
    for (let i = 0; i < 30; i++) server.put('v1', 'pods', pod(i % 2 ? 'x' : `ns${i}`, `churn-${i}`, 'node-3', 'zzz', `10.9.1.${i}`));
    for (let i = 0; i < 30; i++) server.delete('v1', 'pods', i % 2 ? 'x' : `ns${i}`, `churn-${i}`);
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(traffic.events.slice(eventsBefore), []);
    // A new peer on a third node: in the table within moments.
    server.put('v1', 'pods', pod('x', 'b2', 'node-3', 'b', '10.9.0.4'));
    await waitFor('the new peer in the table', () => /10\.9\.0\.4/.test(table(s)), 10_000);
    // A peer labelled out of the selector: the server says DELETED, and it leaves the table.
    server.put('v1', 'pods', pod('x', 'b1', 'node-2', 'zzz', '10.9.0.3'));
    await waitFor('the relabelled peer gone from the table', () => !/10\.9\.0\.3/.test(table(s)), 10_000);
    // The policy deleted: its peer watch stops and what only it held is forgotten.
    server.delete(MNP, 'multi-networkpolicies', 'x', 'from-b');
    await waitFor('no peer watch', () => e.stats().watches.length === 0, 10_000);
    assert.equal(e.stats().pods, 1);
    t = table(s);
    assert.doesNotMatch(t, /10\.9\.0\.4/);
  });
});
