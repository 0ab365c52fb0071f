import assert from 'node:assert/strict';
import { requestKind } from '../../src/k8s/client.js';

describe('API requests named as the API server names them (verb, resource)', () => {
  it('GET of a collection is list, of an object get; watches, subresources, namespaced and cluster-scoped, groups', () => {
    const cases: [string, string, string, string][] = [
      ['GET', '/api/v1/pods?fieldSelector=spec.nodeName%3Dn1&resourceVersion=0', 'list', 'pods'],
      ['GET', '/api/v1/namespaces/x/pods/p', 'get', 'pods'],
      ['WATCH', '/api/v1/namespaces/x/pods?watch=1', 'watch', 'pods'],
      ['GET', '/api/v1/pods?watch=true&labelSelector=a%3Db', 'watch', 'pods'],
      ['PATCH', '/api/v1/namespaces/x/pods/p/status', 'patch', 'pods/status'],
      ['GET', '/api/v1/namespaces', 'list', 'namespaces'],
      ['GET', '/api/v1/namespaces/kube-system', 'get', 'namespaces'],
      ['POST', '/apis/ipam.plexus.network/v1alpha1/ipchunks', 'create', 'ipchunks'],
      ['DELETE', '/apis/ipam.plexus.network/v1alpha1/ipchunks/c-1', 'delete', 'ipchunks'],
      ['PUT', '/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l', 'update', 'leases'],
      ['GET', '/apis/k8s.cni.cncf.io', 'list', 'discovery'],
    ];
    for (const [method, path, verb, resource] of cases) assert.deepEqual(requestKind(method, path), { verb, resource }, `${method} ${path}`);
  });
});
