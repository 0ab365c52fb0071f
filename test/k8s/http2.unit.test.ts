import assert from 'node:assert/strict';
import { type Server, type Socket, createServer, connect as tcpConnect } from 'node:net';
import type { AddressInfo } from 'node:net';
import { parse } from 'yaml';
import { ApiClient, ApiError, type WatchEvent } from '../../src/k8s/client.js';
import { Http2Connections } from '../../src/k8s/http2.js';
import { type ApiConfig, kubeconfigToApiConfig } from '../../src/k8s/kubeconfig.js';
import { ApiServerDouble } from '../../src/sim/apiserver.js';
import { waitFor } from '../support/wait.js';

const lease = (namespace: string, name: string) => ({ apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name, namespace }, spec: { holderIdentity: 'x' } });

/** A TCP relay in front of the double: its connections can be cut (as a restarted server's), or go silent (no FIN, no RST: a dead peer). */
class Relay {
  private server: Server | undefined;
  private readonly pairs: [Socket, Socket][] = [];
  silent = false;

  async start(target: URL): Promise<string> {
    this.server = createServer((client) => {
      const upstream = tcpConnect(Number(target.port), target.hostname);
      this.pairs.push([client, upstream]);
      for (const [from, to] of [
        [client, upstream],
        [upstream, client],
      ] as const) {
        from.on('data', (d) => {
          if (!this.silent) to.write(d);
        });
        from.on('error', () => to.destroy());
        from.on('close', () => to.destroy());
      }
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    return `https://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  cut(): void {
    for (const [a, b] of this.pairs.splice(0)) (a.destroy(), b.destroy());
  }

  stop(): void {
    this.cut();
    this.server?.close();
  }
}

describe('HTTP/2 transport (the daemon shares connections among all its clients)', function () {
  this.timeout(30_000);
  let server: ApiServerDouble;
  let cfg: ApiConfig;
  const pools: Http2Connections[] = [];
  const pool = (c: ApiConfig, timing?: { idleMs: number; pingTimeoutMs: number }) => {
    const p = new Http2Connections(c, timing);
    pools.push(p);
    return p;
  };

  beforeEach(async () => {
    server = new ApiServerDouble();
    await server.start();
    // The double serves HTTP/2 and HTTP/1.1 with the same certificate; the name it carries is localhost.
    cfg = kubeconfigToApiConfig(parse(server.kubeconfig()), 'the double');
  });
  afterEach(async () => {
    for (const p of pools.splice(0)) p.close();
    await server.stop();
  });

  it('40 watches and the reads and writes of two clients go over one connection, and every watch sees its events', async () => {
    const connections = pool(cfg);
    const shared = { ...cfg, transport: connections.transport };
    const a = new ApiClient(shared, 5000);
    const b = new ApiClient(shared, 5000, undefined, 'other-component');
    const before = server.connections;
    const seen = new Map<string, string[]>();
    const watches = Array.from({ length: 40 }, (_, i) => {
      const ns = `ns${i}`;
      seen.set(ns, []);
      return (i % 2 ? a : b).watch(`/apis/coordination.k8s.io/v1/namespaces/${ns}/leases?watch=1`, (e: WatchEvent) =>
        seen.get(ns)!.push(`${e.type} ${(e.object as { metadata: { name: string } }).metadata.name}`),
      );
    });
    for (let i = 0; i < 40; i++) await (i % 2 ? b : a).post(`/apis/coordination.k8s.io/v1/namespaces/ns${i}/leases`, lease(`ns${i}`, `c${i}`));
    await waitFor('every watch saw its Lease', () => [...seen.values()].every((s) => s.length === 1));
    assert.deepEqual(seen.get('ns7'), ['ADDED c7']);
    assert.equal((await a.get<{ items: unknown[] }>('/apis/coordination.k8s.io/v1/namespaces/ns3/leases')).items.length, 1);
    assert.equal(server.connections - before, 1, 'one TLS connection for all of it');
    assert.equal(connections.opened, 1);
    for (const w of watches) w.abort();
    await Promise.all(watches.map((w) => w.done));
  });

  it("past the server's streams per connection (its SETTINGS), another connection is opened; below it, none", async () => {
    await server.stop();
    server = new ApiServerDouble({ maxStreams: 10 });
    await server.start();
    cfg = kubeconfigToApiConfig(parse(server.kubeconfig()), 'the double');
    const connections = pool(cfg);
    const api = new ApiClient({ ...cfg, transport: connections.transport }, 5000);
    // A first request: the server's SETTINGS are in before the watches open.
    await api.get('/apis/coordination.k8s.io/v1/namespaces/default/leases');
    const seen = new Set<string>();
    const watches = Array.from({ length: 25 }, (_, i) => api.watch(`/apis/coordination.k8s.io/v1/namespaces/ns${i}/leases?watch=1`, () => seen.add(`ns${i}`)));
    for (let i = 0; i < 25; i++) await api.post(`/apis/coordination.k8s.io/v1/namespaces/ns${i}/leases`, lease(`ns${i}`, `c${i}`));
    await waitFor('every watch saw its Lease', () => seen.size === 25);
    assert.equal(connections.opened, 3, '25 watches at 10 streams a connection');
    for (const w of watches) w.abort();
  });

  it('an error answer is an ApiError with the status and reason, as over HTTP/1.1', async () => {
    const api = new ApiClient({ ...cfg, transport: pool(cfg).transport }, 5000);
    const err = await api.get('/apis/coordination.k8s.io/v1/namespaces/default/leases/nope').catch((e: unknown) => e);
    assert.ok(err instanceof ApiError);
    assert.equal(err.status, 404);
    assert.equal(err.reason, 'NotFound');
  });

  it('a connection cut: the open watch fails (its informer retries it), the next request opens a new connection', async () => {
    const relay = new Relay();
    try {
      const viaRelay = { ...cfg, server: await relay.start(new URL(server.url)), serverName: 'localhost' };
      const connections = pool(viaRelay);
      const api = new ApiClient({ ...viaRelay, transport: connections.transport }, 5000);
      const w = api.watch('/apis/coordination.k8s.io/v1/namespaces/default/leases?watch=1', () => undefined);
      await api.get('/apis/coordination.k8s.io/v1/namespaces/default/leases');
      relay.cut();
      await assert.rejects(w.done, (e: unknown) => e instanceof ApiError && e.reason === 'Unreachable');
      await waitFor('the dead connection dropped', () => connections.connections === 0);
      await api.get('/apis/coordination.k8s.io/v1/namespaces/default/leases');
      assert.equal(connections.opened, 2);
      assert.equal(connections.connections, 1);
    } finally {
      relay.stop();
    }
  });

  it('a connection gone silent (no FIN): the unanswered ping drops it and its watch fails instead of waiting forever', async () => {
    const relay = new Relay();
    try {
      const viaRelay = { ...cfg, server: await relay.start(new URL(server.url)), serverName: 'localhost' };
      const connections = pool(viaRelay, { idleMs: 300, pingTimeoutMs: 300 });
      const api = new ApiClient({ ...viaRelay, transport: connections.transport }, 5000);
      const w = api.watch('/apis/coordination.k8s.io/v1/namespaces/default/leases?watch=1', () => undefined);
      await api.get('/apis/coordination.k8s.io/v1/namespaces/default/leases');
      // Quiet but alive: pings are answered, the watch stays.
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal(connections.connections, 1);
      relay.silent = true;
      await assert.rejects(w.done, (e: unknown) => e instanceof ApiError && /ping/.test(e.message));
      await waitFor('the silent connection dropped', () => connections.connections === 0);
    } finally {
      relay.stop();
    }
  });
});
