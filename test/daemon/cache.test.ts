import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ClusterCache } from '../../src/daemon/cache.js';
import { rewatchDelay } from '../../src/k8s/informer.js';
import { loadKubeconfig } from '../../src/k8s/kubeconfig.js';
import { SimNode, podEnv } from '../../src/sim/simnode.js';
import { shimPath } from '../support/plugins.js';
import { startDaemon, stopDaemon } from '../support/daemon.js';
import { Rig, ipAddresses } from '../support/rig.js';
import { waitFor } from '../support/wait.js';
import { parse, stringify } from 'yaml';

describe('node daemon with informer caches', function () {
  this.timeout(60000);
  const rig = new Rig();
  let node: SimNode;
  let daemon: ChildProcess | undefined;
  let socket: string;
  before(async () => {
    node = new SimNode(rig.dir('cache'));
    await node.start();
    socket = join(node.dir, 'plexus.sock');
    daemon = await startDaemon(socket, ['--kubeconfig', node.kubeconfig, '--node-name', 'plx-node']);
  });
  after(async () => {
    await stopDaemon(daemon);
    await node.stop();
    rig.cleanup();
  });

  it('reads nothing from the API per ADD: pod and NADs come from the caches, one PATCH writes the status', async () => {
    const beforePod = node.api.requests.length;
    node.addExamplePod('two-nets');
    // The pod watch delivers the new pod, and the NADs of its namespace are listed and watched.
    await waitFor('the NADs of the pod namespace to be watched', () =>
      node.api.requests.slice(beforePod).some((r) => r.verb === 'watch' && r.path.includes('/namespaces/default/network-attachment-definitions')),
    );
    await sleep(100);
    const ns = rig.netns('c');
    // No pod annotations from the runtime this time: the pod itself must be looked up.
    const conf = node.metaConf({ type: 'plexus-shim', daemonSocket: socket });
    const env = podEnv('ADD', 'sb-cache', ns.path, { name: 'two-nets', namespace: 'default' });
    const before = node.api.requests.length;
    const add = await node.exec(env, conf, shimPath);
    assert.equal(add.status, 0, add.stdout + add.stderr);
    assert.deepEqual(ipAddresses(ns.name, 'data0'), ['10.77.0.9/24']);
    // network-status is written before the reply.
    await waitFor('network-status', () => node.api.get('v1', 'pods', 'default', 'two-nets')?.metadata.annotations?.['k8s.v1.cni.cncf.io/network-status']);
    const calls = node.api.requests.slice(before);
    assert.deepEqual(
      calls.filter((c) => c.verb === 'get' || c.verb === 'list'),
      [],
      'no reads',
    );
    assert.equal(calls.filter((c) => c.verb === 'patch').length, 1);
    assert.equal((await node.exec({ ...env, CNI_COMMAND: 'DEL' }, conf, shimPath)).status, 0);
  });

  it('a pod the cache does not know yet is read from the API once', async () => {
    const ns = rig.netns('m');
    const conf = node.metaConf({ type: 'plexus-shim', daemonSocket: socket });
    // On another node: never in this node's cache.
    node.addExamplePod('comma-list', 'elsewhere');
    const env = podEnv('ADD', 'sb-miss', ns.path, { name: 'comma-list', namespace: 'default' });
    const before = node.api.requests.length;
    const add = await node.exec(env, conf, shimPath);
    assert.equal(add.status, 0, add.stdout + add.stderr);
    assert.deepEqual(
      node.api.requests
        .slice(before)
        .filter((c) => c.verb === 'get')
        .map((c) => c.resource),
      ['pods'],
    );
    assert.equal((await node.exec({ ...env, CNI_COMMAND: 'DEL' }, conf, shimPath)).status, 0);
  });

  it('keeps working when kubelet rotates the service-account token behind a kubeconfig tokenFile', async () => {
    const tokenFile = join(node.dir, 'token');
    writeFileSync(tokenFile, 'token-one');
    const kubeconfig = join(node.dir, 'kubeconfig-tokenfile');
    const kc = parse(node.api.kubeconfig()) as { users: { user: Record<string, string> }[] };
    kc.users[0]!.user = { tokenFile };
    writeFileSync(kubeconfig, stringify(kc));
    const rotSocket = join(node.dir, 'rot.sock');
    node.api.acceptedTokens = new Set(['token-one']);
    const rotating = await startDaemon(rotSocket, ['--kubeconfig', kubeconfig, '--node-name', 'plx-node']);
    try {
      // Synced, and the network policy informers started too: no start-up request is in flight at the rotation.
      await waitFor('the caches to sync', () => rotating.logs.some((l) => /caches/.test(String(l.msg))) && rotating.logs.some((l) => /network policy: the sandboxes/.test(String(l.msg))), 10000);
      // Rotated, and the old token revoked at once (harsher than kubelet, which keeps it valid for a while).
      writeFileSync(tokenFile, 'token-two');
      node.api.acceptedTokens = new Set(['token-two']);
      // The API server ends the informers' watches: they watch again with the new token, never the
      // old one (client-node's own file-token provider would send that for up to a minute: 401s).
      const beforeRewatch = node.api.requests.length;
      // (Every daemon's watches end: the other one's, with its own token, are refused from now on.)
      const refusedBefore = node.api.refusedTokens.length;
      const oldTokenRefused = () => node.api.refusedTokens.slice(refusedBefore).includes('token-one');
      node.api.endWatches();
      const rewatched = () => {
        const watches = node.api.requests
          .slice(beforeRewatch)
          .filter((r) => r.verb === 'watch')
          .map((r) => r.resource);
        return watches.includes('pods') && watches.includes('network-attachment-definitions');
      };
      await waitFor('both informers to watch again, or the revoked token refused', () => rewatched() || oldTokenRefused(), 30000);
      assert.ok(!oldTokenRefused(), 'no request with the revoked token');
      assert.ok(rewatched());
      // Put again: the status a previous test wrote is gone.
      const pod = node.addExamplePod('two-nets');
      const ns = rig.netns('rot');
      const conf = { ...node.metaConf({ type: 'plexus-shim', daemonSocket: rotSocket }), kubeconfig };
      const env = podEnv('ADD', 'sb-rot', ns.path, pod.metadata);
      const add = await node.exec(env, conf, shimPath);
      assert.equal(add.status, 0, add.stdout + add.stderr);
      await waitFor('network-status written with the new token', () => node.api.get('v1', 'pods', 'default', pod.metadata.name)?.metadata.annotations?.['k8s.v1.cni.cncf.io/network-status']);
      assert.equal((await node.exec({ ...env, CNI_COMMAND: 'DEL' }, conf, shimPath)).status, 0);
    } finally {
      node.api.acceptedTokens = undefined;
      await stopDaemon(rotating);
    }
  });

  it('watches the NADs of the namespaces its pods need only, and lets go of one no pod needs any more', async () => {
    const NADS = 'network-attachment-definitions';
    const nad = (namespace: string, name: string) => ({ metadata: { name, namespace }, spec: { config: `{"cniVersion":"1.0.0","name":"${name}","type":"macvlan","master":"plxdummy0"}` } }) as never;
    node.api.put('k8s.cni.cncf.io/v1', NADS, nad('other-ns', 'remote-net'));
    node.api.put('k8s.cni.cncf.io/v1', NADS, nad('far-away', 'unrelated'));
    const before = node.api.requests.length;
    const cache = await ClusterCache.start(await loadKubeconfig(node.kubeconfig), 'plx-node', { nadNamespaces: ['kube-system'], lingerMs: 300 });
    try {
      const nadRequests = () =>
        node.api.requests
          .slice(before)
          .filter((r) => r.resource === NADS)
          .map((r) => r.path);
      assert.ok(!nadRequests().some((p) => !p.includes('/namespaces/')), 'no cluster-wide NAD list or watch');
      assert.ok(
        nadRequests().some((p) => p.includes('/namespaces/kube-system/')),
        'the always-watched namespace',
      );
      assert.ok(!cache.watchedNamespaces().includes('other-ns') && !cache.watchedNamespaces().includes('far-away'));
      // A pod of this node selects a network of another namespace: that namespace is watched too.
      node.api.put('v1', 'pods', {
        metadata: { name: 'remote-user', namespace: 'default', annotations: { 'k8s.v1.cni.cncf.io/networks': 'other-ns/remote-net' } },
        spec: { nodeName: 'plx-node' },
      } as never);
      await waitFor('the NAD of other-ns in the cache', () => cache.nad('other-ns', 'remote-net'));
      assert.ok(!cache.watchedNamespaces().includes('far-away'));
      assert.ok(!nadRequests().some((p) => p.includes('/namespaces/far-away/')));
      // Changes reach the cache through the watch.
      // (Of a NAD the cache keeps its config and resourceName: the change is one of those.)
      node.api.put('k8s.cni.cncf.io/v1', NADS, {
        ...(nad('other-ns', 'remote-net') as object),
        metadata: { name: 'remote-net', namespace: 'other-ns', annotations: { 'k8s.v1.cni.cncf.io/resourceName': 'example.com/changed', unrelated: 'dropped' } },
      } as never);
      await waitFor('the change in the cache', () => cache.nad('other-ns', 'remote-net')?.metadata.annotations?.['k8s.v1.cni.cncf.io/resourceName'] === 'example.com/changed');
      assert.deepEqual(Object.keys(cache.nad('other-ns', 'remote-net')!.metadata.annotations!), ['k8s.v1.cni.cncf.io/resourceName'], 'what the plugin does not read is not kept');
      // The pod goes: once no pod needs other-ns for the linger time, its watch stops.
      node.api.delete('v1', 'pods', 'default', 'remote-user');
      await waitFor('other-ns let go', () => !cache.watchedNamespaces().includes('other-ns'), 10000);
      // A lookup in a namespace nobody named (a conf's multusNamespace, say) misses once, then is cached.
      assert.equal(cache.nad('far-away', 'unrelated'), undefined);
      await waitFor('far-away watched after its first lookup', () => cache.nad('far-away', 'unrelated'));
    } finally {
      await cache.stop();
      node.api.delete('k8s.cni.cncf.io/v1', NADS, 'other-ns', 'remote-net');
      node.api.delete('k8s.cni.cncf.io/v1', NADS, 'far-away', 'unrelated');
    }
  });

  it('a watch failing again and again is retried less and less often (800 ms doubling to 30 s, as client-go), each delay stretched by a random 0-100 %', () => {
    const at = (r: number) => [0, 1, 2, 3, 4, 5, 6, 50].map((n) => rewatchDelay(n, () => r));
    assert.deepEqual(at(0), [800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]);
    assert.deepEqual(at(0.5), [1200, 2400, 4800, 9600, 19200, 38400, 45000, 45000]);
    // Spread: a thousand daemons failing at once come back over the whole interval, not in one burst.
    const delays = Array.from({ length: 1000 }, () => rewatchDelay(5));
    assert.ok(Math.min(...delays) >= 25600 && Math.max(...delays) < 51200);
    assert.ok(Math.max(...delays) - Math.min(...delays) > 20_000, 'the delays are spread');
  });
});
