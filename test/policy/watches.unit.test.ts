import assert from 'node:assert/strict';
import fc from 'fast-check';
import { type LabelSelector, matches, parsePolicy } from '../../src/policy/model.js';
import { selectorQuery, watchKey, watchesFor } from '../../src/policy/watches.js';
import { selector } from '../../src/sim/apiserver-machinery.js';

const mnp = (spec: object, ns = 'x') => parsePolicy({ metadata: { name: 'p', namespace: ns, annotations: { 'k8s.v1.cni.cncf.io/policy-for': 'net' } }, spec });

describe('MultiNetworkPolicy peer watches (what a node watches for the policies selecting its pods)', () => {
  it("a peer by pod labels: the policy namespace's pods, filtered by the server on those labels; ipBlocks need no watch", () => {
    const p = mnp({ podSelector: {}, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'db', tier: 'x' } } }, { ipBlock: { cidr: '10.0.0.0/8' } }] }] });
    assert.deepEqual(
      watchesFor([p], () => []),
      [{ kind: 'pods', path: '/api/v1/namespaces/x/pods', labelSelector: 'app=db,tier=x' }],
    );
  });

  it("a namespaceSelector peer: the namespaces it selects; with pod labels the cluster's pods filtered by them, without, each selected namespace's pods", () => {
    const withPods = mnp({
      podSelector: {},
      egress: [{ to: [{ namespaceSelector: { matchLabels: { team: 'a' } }, podSelector: { matchExpressions: [{ key: 'role', operator: 'In', values: ['b', 'a'] }] } }] }],
    });
    assert.deepEqual(
      watchesFor([withPods], () => ['never-used']),
      [
        { kind: 'namespaces', path: '/api/v1/namespaces', labelSelector: 'team=a' },
        { kind: 'pods', path: '/api/v1/pods', labelSelector: 'role in (a,b)' },
      ],
    );
    const nsOnly = mnp({ podSelector: {}, ingress: [{ from: [{ namespaceSelector: { matchExpressions: [{ key: 'env', operator: 'Exists' }] } }] }] });
    const asked: LabelSelector[] = [];
    const specs = watchesFor([nsOnly], (sel) => (asked.push(sel), ['n1', 'n2']));
    assert.deepEqual(specs.map(watchKey), ['/api/v1/namespaces?env', '/api/v1/namespaces/n1/pods?', '/api/v1/namespaces/n2/pods?']);
    assert.equal(asked.length, 1);
  });

  it('no policy, or policies without peers (deny all, allow all): no watch at all', () => {
    assert.deepEqual(
      watchesFor([], () => []),
      [],
    );
    assert.deepEqual(
      watchesFor([mnp({ podSelector: {} }), mnp({ podSelector: {}, ingress: [{}] })], () => []),
      [],
    );
  });

  it('the same peer in two policies is one watch', () => {
    const peer = { podSelector: { matchLabels: { a: 'b' } } };
    const specs = watchesFor([mnp({ podSelector: {}, ingress: [{ from: [peer] }] }), mnp({ podSelector: { matchLabels: { z: 'y' } }, egress: [{ to: [peer] }] })], () => []);
    assert.equal(specs.length, 1);
  });

  it('property: the label selector query selects exactly what the selector matches (read as the API server reads it)', () => {
    const key = fc.constantFrom('app', 'tier', 'k8s.io/role', 'x');
    const value = fc.constantFrom('a', 'b', 'c-1', 'd.e');
    const expr = fc.oneof(
      fc.record({ key, operator: fc.constantFrom('In' as const, 'NotIn' as const), values: fc.uniqueArray(value, { minLength: 1, maxLength: 3 }) }),
      fc.record({ key, operator: fc.constantFrom('Exists' as const, 'DoesNotExist' as const), values: fc.constant([] as string[]) }),
    );
    const sel = fc.record({ matchLabels: fc.dictionary(key, value, { maxKeys: 2 }), matchExpressions: fc.array(expr, { maxLength: 3 }) });
    fc.assert(
      fc.property(sel, fc.dictionary(key, value, { maxKeys: 4 }), (s, labels) => {
        const served = selector<Record<string, string>>(selectorQuery(s), (o, k) => o[k]);
        assert.equal(served(labels), matches(s, labels), `${selectorQuery(s)} on ${JSON.stringify(labels)}`);
      }),
      { numRuns: 2000 },
    );
  });
});
