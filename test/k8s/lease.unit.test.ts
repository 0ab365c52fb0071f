import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { parse } from 'yaml';
import { ApiClient } from '../../src/k8s/client.js';
import { kubeconfigToApiConfig } from '../../src/k8s/kubeconfig.js';
import { LeaderElection } from '../../src/k8s/lease.js';
import { ApiServerDouble } from '../../src/sim/apiserver.js';
import { waitFor } from '../support/wait.js';

describe('leader election on a coordination.k8s.io Lease (against the API double)', function () {
  this.timeout(30_000);
  let server: ApiServerDouble;
  let api: ApiClient;
  const electors: LeaderElection[] = [];
  const leading = new Map<string, number>();

  const candidate = (identity: string, client = api) => {
    const e = new LeaderElection(client, {
      namespace: 'kube-system',
      name: 'plx-test',
      identity,
      leaseSeconds: 1,
      renewMs: 200,
      retryMs: [100, 200],
      onStartedLeading: () => leading.set(identity, (leading.get(identity) ?? 0) + 1),
      onStoppedLeading: () => leading.set(identity, (leading.get(identity) ?? 0) - 1),
    });
    electors.push(e);
    e.start();
    return e;
  };
  const leaders = () => [...leading].filter(([, n]) => n > 0).map(([id]) => id);

  beforeEach(async () => {
    server = new ApiServerDouble();
    await server.start();
    api = new ApiClient(kubeconfigToApiConfig(parse(server.kubeconfig()), 'the double'), 5000);
    leading.clear();
  });
  afterEach(async () => {
    await Promise.all(electors.splice(0).map((e) => e.stop()));
    await server.stop();
  });

  it('of five candidates exactly one leads; it renews; when it gives the Lease up another takes it at once', async () => {
    const es = ['a', 'b', 'c', 'd', 'e'].map((id) => candidate(id));
    await waitFor('a leader', () => leaders().length === 1);
    await sleep(1500);
    assert.equal(leaders().length, 1, `one leader over several renewals: ${leaders().join(',')}`);
    const first = leaders()[0]!;
    await es.find((_, i) => 'abcde'[i] === first)!.stop();
    await waitFor('another leader', () => leaders().length === 1 && leaders()[0] !== first, 5000);
    const lease = server.get('coordination.k8s.io/v1', 'leases', 'kube-system', 'plx-test') as unknown as { spec: { holderIdentity: string; leaseTransitions: number } };
    assert.equal(lease.spec.holderIdentity, leaders()[0]);
    assert.ok(lease.spec.leaseTransitions >= 1);
  });

  it('a holder that stops renewing (its API gone) steps down, and only after a whole lease duration is the Lease taken', async () => {
    const cfg = kubeconfigToApiConfig(parse(server.kubeconfig()), 'the double');
    const as = (token: string) => new ApiClient({ ...cfg, token }, 5000);
    candidate('a', as('token-a'));
    await waitFor('a leads', () => leaders().includes('a'));
    // a's credential is refused from now on: it cannot renew.
    server.acceptedTokens = new Set(['token-b']);
    const lostAt = Date.now();
    candidate('b', as('token-b'));
    await waitFor('b leads', () => leaders().includes('b'), 10_000);
    assert.ok(Date.now() - lostAt >= 900, `b waited for the lease to run out (${Date.now() - lostAt} ms)`);
    assert.ok(!leaders().includes('a'), 'a stepped down');
    server.acceptedTokens = undefined;
  });
});
