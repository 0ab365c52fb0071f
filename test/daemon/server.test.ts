import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, statSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { SimNode, podEnv, repoRoot } from '../../src/sim/simnode.js';
import { shimPath } from '../support/plugins.js';
import { type DaemonProcess, startDaemon, stopDaemon } from '../support/daemon.js';
import { Rig, ipAddresses, ipJson } from '../support/rig.js';
import { waitFor } from '../support/wait.js';

describe('node daemon and shim', function () {
  this.timeout(60000);
  const rig = new Rig();
  let node: SimNode;
  let socket: string;
  let daemon: DaemonProcess | undefined;
  before(async () => {
    node = new SimNode(rig.dir('daemon'));
    await node.start();
    socket = join(node.dir, 'run', 'plexus.sock');
    daemon = await startDaemon(socket);
  });
  after(async () => {
    await stopDaemon(daemon);
    await node.stop();
    rig.cleanup();
  });
  const shimConf = (annotations: Record<string, string>) => node.shimConf(socket, annotations);

  it('the shim installed as an IPAM asks /ipam; a daemon without a node name answers a final error saying how to enable it', () => {
    const bin = rig.dir('ipam-bin');
    copyFileSync(join(repoRoot(), 'native', 'plexus-shim'), join(bin, 'plexus-ipam'));
    const r = spawnSync(join(bin, 'plexus-ipam'), [], {
      input: JSON.stringify({ cniVersion: '0.4.0', name: 'n', type: 'macvlan', ipam: { type: 'plexus-ipam', range: '10.9.0.0/24' } }),
      env: { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'x', CNI_NETNS: '/var/run/netns/x', CNI_IFNAME: 'net1', CNI_PATH: bin, PLEXUS_DAEMON_SOCKET: socket },
      encoding: 'utf8',
    });
    assert.equal(r.status, 1);
    assert.deepEqual(JSON.parse(r.stdout), {
      cniVersion: '0.4.0',
      code: 4,
      msg: 'Plexus IPAM is not enabled in this node daemon',
      details: 'start plexusctl daemon with --node-name and API credentials (--kubeconfig or in-cluster)',
    });
  });

  it('serves ADD, CHECK and DEL from the shim with the one-shot core, on a socket only root can use', async () => {
    assert.equal(statSync(socket).mode & 0o777, 0o600);
    const ns = rig.netns('dm');
    const pod = node.addExamplePod('two-nets');
    const annotations = (pod.metadata as unknown as { annotations: Record<string, string> }).annotations;
    const env = podEnv('ADD', 'sb-daemon', ns.path, pod.metadata);
    const add = await node.exec(env, shimConf(annotations), shimPath);
    assert.equal(add.status, 0, add.stdout + add.stderr);
    assert.equal(add.json?.cniVersion, '1.0.0');
    assert.deepEqual(ipAddresses(ns.name, 'data0'), ['10.77.0.9/24']);
    assert.equal(ipAddresses(ns.name, 'net1').length, 1);
    assert.equal((await node.exec({ ...env, CNI_COMMAND: 'CHECK' }, shimConf(annotations), shimPath)).status, 0);
    const del = await node.exec({ ...env, CNI_COMMAND: 'DEL' }, shimConf(annotations), shimPath);
    assert.equal(del.status, 0, del.stdout);
    assert.deepEqual(
      ipJson<{ ifname: string }[]>(['-n', ns.name, 'link', 'show']).map((l) => l.ifname),
      ['lo'],
    );
    assert.deepEqual(node.attachments().active(), []);
  });

  it('the Node shim (the measured alternative) speaks the same protocol', async () => {
    const ns = rig.netns('dn');
    const nodeShim = join(node.dir, 'node-shim');
    writeFileSync(nodeShim, `#!/bin/sh\nexec env -u NODE_EXTRA_CA_CERTS node ${join(repoRoot(), 'dist', 'plexus-shim.mjs')}\n`, { mode: 0o755 });
    const env = podEnv('ADD', 'sb-nodeshim', ns.path, { name: 'x', namespace: 'default' });
    const add = await node.exec(env, shimConf({}), nodeShim);
    assert.equal(add.status, 0, add.stdout + add.stderr);
    assert.equal(ipAddresses(ns.name, 'eth0').length, 1);
    assert.equal((await node.exec({ ...env, CNI_COMMAND: 'DEL' }, shimConf({}), nodeShim)).status, 0);
  });

  it('exports Prometheus metrics and logs each request as JSON with the pod and container ID', async () => {
    const url = daemon!.logs.find((l) => l.msg === 'metrics')?.url as string;
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    const ns = rig.netns('mt');
    const env = podEnv('ADD', 'sb-metrics', ns.path, { name: 'metrics-pod', namespace: 'default' });
    assert.equal((await node.exec(env, shimConf({ 'k8s.v1.cni.cncf.io/networks': 'macvlan-a' }), shimPath)).status, 0);
    await node.exec(podEnv('ADD', 'sb-metrics-bad', ns.path, { name: 'x', namespace: 'default' }), shimConf({ 'k8s.v1.cni.cncf.io/networks': 'nope' }), shimPath);
    const text = await (await fetch(url)).text();
    assert.match(text, /plexus_cni_request_duration_seconds_count\{command="ADD",code="0"\} [1-9]/);
    assert.match(text, /plexus_cni_errors_total\{command="ADD",code="7"\} 1/);
    assert.match(text, /plexus_delegate_duration_seconds_count\{network="default\/macvlan-a",command="ADD",result="ok"\} [1-9]/);
    // Every API request, by the component making it and the request as the API server names it.
    assert.match(text, /plexus_api_requests_total\{component="cni",verb="patch",resource="pods\/status"\} [1-9]/);
    assert.match(text, /plexus_cni_requests_in_flight 0/);
    await sleep(100);
    const line = daemon!.logs.find((l) => l.containerID === 'sb-metrics');
    assert.equal(line?.pod, 'default/metrics-pod');
    assert.equal(line?.command, 'ADD');
    assert.equal((await node.exec({ ...env, CNI_COMMAND: 'DEL' }, shimConf({ 'k8s.v1.cni.cncf.io/networks': 'macvlan-a' }), shimPath)).status, 0);
  });

  it('passes plugin errors through unchanged', async () => {
    const ns = rig.netns('de');
    const add = await node.exec(podEnv('ADD', 'sb-derr', ns.path, { name: 'x', namespace: 'default' }), shimConf({ 'k8s.v1.cni.cncf.io/networks': 'no-such-net' }), shimPath);
    assert.equal(add.status, 1);
    assert.equal(add.json?.code, 7);
    assert.match(String(add.json?.msg), /default\/no-such-net not found/);
  });

  it('fails closed while the daemon is down: ADD and DEL get code 11, VERSION still answers', async () => {
    await stopDaemon(daemon);
    assert.equal(existsSync(socket), false, 'the socket goes with the daemon');
    try {
      const ns = rig.netns('dd');
      const add = await node.exec(podEnv('ADD', 'sb-down', ns.path, { name: 'x', namespace: 'default' }), shimConf({}), shimPath);
      assert.equal(add.status, 1);
      assert.equal(add.json?.code, 11);
      assert.match(String(add.json?.msg), /not reachable/);
      assert.deepEqual(
        ipJson<{ ifname: string }[]>(['-n', ns.name, 'link', 'show']).map((l) => l.ifname),
        ['lo'],
        'no fallback attachment',
      );
      const del = await node.exec(podEnv('DEL', 'sb-down', ns.path, { name: 'x', namespace: 'default' }), shimConf({}), shimPath);
      assert.equal(del.json?.code, 11, 'DEL is retried later, never reported done without trying');
      const version = await node.exec({ CNI_COMMAND: 'VERSION', CNI_CONTAINERID: '', CNI_NETNS: 'dummy', CNI_IFNAME: 'dummy', CNI_PATH: 'dummy' }, { cniVersion: '1.0.0' }, shimPath);
      assert.equal(version.status, 0);
      assert.equal(version.json?.cniVersion, '1.0.0');
    } finally {
      daemon = await startDaemon(socket);
    }
  });

  it("stores network-status before ADD returns; Events follow the reply, ahead of the sandbox's next operation", async () => {
    node.api.put('v1', 'pods', { metadata: { name: 'order', namespace: 'default' }, spec: { nodeName: 'plx-node' } } as never);
    const statusOf = () => node.api.get('v1', 'pods', 'default', 'order')?.metadata.annotations?.['k8s.v1.cni.cncf.io/network-status'];
    const ns = rig.netns('or');
    const env = podEnv('ADD', 'sb-order', ns.path, { name: 'order', namespace: 'default' });
    const events = () => node.api.requests.filter((r) => r.verb === 'post' && r.resource === 'events').length;
    const eventsBefore = events();
    node.api.latency = (method, path) => (method === 'PATCH' && path.endsWith('/order/status') ? 300 : method === 'POST' && path.endsWith('/events') ? 500 : undefined);
    try {
      const add = await node.exec(env, shimConf({}), shimPath);
      assert.equal(add.status, 0, add.stdout + add.stderr);
      assert.ok(statusOf(), 'the ADD waited for the status, slow as the API was');
      assert.equal(events(), eventsBefore, 'but not for the Events');
      const check = await node.exec({ ...env, CNI_COMMAND: 'CHECK' }, shimConf({}), shimPath);
      assert.equal(check.status, 0, check.stdout + check.stderr);
      assert.equal(events(), eventsBefore + 1, 'the Event came before the CHECK');
    } finally {
      node.api.latency = undefined;
    }
    assert.equal((await node.exec({ ...env, CNI_COMMAND: 'DEL' }, shimConf({}), shimPath)).status, 0);
  });

  /** A pod of the node; its network-status as the API holds it, and the status its sandbox's record still owes. */
  const podWithStatus = (name: string, sandbox: string) => {
    node.api.put('v1', 'pods', { metadata: { name, namespace: 'default' }, spec: { nodeName: 'plx-node' } } as never);
    const store = node.attachments();
    return {
      statusOf: () => node.api.get('v1', 'pods', 'default', name)?.metadata.annotations?.['k8s.v1.cni.cncf.io/network-status'],
      owed: () => {
        const r = store.read(sandbox);
        return r.kind === 'ok' ? r.record.pendingStatus : undefined;
      },
    };
  };

  it('an API server that hangs on the PATCH holds the ADD back only so long: the status is owed, then stored and settled', async () => {
    const { statusOf, owed } = podWithStatus('hung', 'sb-hung');
    const ns = rig.netns('hg');
    const env = podEnv('ADD', 'sb-hung', ns.path, { name: 'hung', namespace: 'default' });
    // Far longer than the daemon waits (STATUS_IN_ADD_MS, 3 s): the reply cannot have waited for it.
    node.api.latency = (method, path) => (method === 'PATCH' && path.endsWith('/hung/status') ? 8000 : undefined);
    try {
      const add = await node.exec(env, shimConf({}), shimPath);
      assert.equal(add.status, 0, add.stdout + add.stderr);
      assert.equal(statusOf(), undefined, 'the ADD did not wait for the hung PATCH');
      assert.ok(owed(), 'the status is owed meanwhile');
      await waitFor('the PATCH to land', statusOf, 15000);
      await waitFor('the record to settle', () => owed() === undefined, 5000);
      assert.equal(node.api.requests.filter((r) => r.verb === 'patch' && r.path.endsWith('/hung/status')).length, 1, 'the slow PATCH itself was waited for, not sent again');
    } finally {
      node.api.latency = undefined;
    }
    assert.equal((await node.exec({ ...env, CNI_COMMAND: 'DEL' }, shimConf({}), shimPath)).status, 0);
  });

  it('a network-status the API refused does not fail the ADD: it is owed, retried after the reply, and the next daemon sends it', async () => {
    const { statusOf, owed } = podWithStatus('owed', 'sb-owed');
    node.api.fault = (method, path) => (method === 'PATCH' && path.endsWith('/owed/status') ? 503 : undefined);
    const ns = rig.netns('ow');
    const env = podEnv('ADD', 'sb-owed', ns.path, { name: 'owed', namespace: 'default' });
    try {
      const add = await node.exec(env, shimConf({}), shimPath);
      assert.equal(add.status, 0, add.stdout + add.stderr);
      assert.ok(owed(), 'the record says the status is owed');
      // One attempt in the ADD, three after the reply (0.2 s and 0.8 s apart), all refused.
      await waitFor('four refused PATCHes', () => node.api.requests.filter((r) => r.verb === 'patch' && r.path.endsWith('/owed/status')).length >= 4 || undefined, 5000);
      await sleep(200);
      assert.equal(statusOf(), undefined);
      assert.ok(owed());
    } finally {
      node.api.fault = undefined;
    }
    await stopDaemon(daemon);
    daemon = await startDaemon(socket, ['--kubeconfig', node.kubeconfig, '--cni-dir', node.cniDir]);
    const status = await waitFor('the owed network-status', statusOf);
    assert.deepEqual(
      (JSON.parse(status) as { interface: string }[]).map((e) => e.interface),
      ['eth0'],
    );
    await waitFor('the record to settle', () => owed() === undefined);
    assert.equal((await node.exec({ ...env, CNI_COMMAND: 'DEL' }, shimConf({}), shimPath)).status, 0);
  });
});
