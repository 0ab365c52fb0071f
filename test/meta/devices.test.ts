import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { type AttachmentRecord } from '../../src/meta/store.js';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { podDevicesFromCheckpoint, podDevicesFromKubelet } from '../../src/k8s/podresources.js';
import { SimNode, podEnv, repoRoot } from '../../src/sim/simnode.js';
import { Rig, linkExists } from '../support/rig.js';

interface Served {
  server: grpc.Server;
  calls: string[];
}

const podResources = (name: string, ids: Record<string, string[]>) => ({
  name,
  namespace: 'default',
  containers: [{ name: 'app', devices: Object.entries(ids).map(([resource_name, device_ids]) => ({ resource_name, device_ids })) }],
});

/**
 * kubelet's PodResources service on a unix socket. Get: 'served'; 'absent' as before kubelet 1.27 (UNIMPLEMENTED);
 * 'disabled' as 1.27–1.33 with the KubeletPodResourcesGet gate off (UNKNOWN, kubelet's own words).
 */
type GetMode = 'served' | 'absent' | 'disabled';
async function servePodResources(socket: string, get: GetMode): Promise<Served> {
  const def = protoLoader.loadSync(join(repoRoot(), 'src', 'k8s', 'podresources-v1.proto'), { keepCase: true, defaults: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { v1: { PodResourcesLister: { service: grpc.ServiceDefinition } } };
  const calls: string[] = [];
  const pods = [podResources('other', { 'plexus.dev/vf': ['0000:00:01.1'] }), podResources('dev-pod', { 'plexus.dev/vf': ['0000:5e:02.5', '0000:5e:02.3'] })];
  const server = new grpc.Server();
  server.addService(pkg.v1.PodResourcesLister.service, {
    Get: (call: grpc.ServerUnaryCall<{ pod_name: string }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      calls.push('Get');
      if (get === 'absent') return cb({ code: grpc.status.UNIMPLEMENTED, details: 'unknown method Get' });
      if (get === 'disabled') return cb({ code: grpc.status.UNKNOWN, details: 'PodResources API Get method disabled' });
      cb(null, { pod_resources: pods.find((p) => p.name === call.request.pod_name) });
    },
    List: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => {
      calls.push('List');
      cb(null, { pod_resources: pods });
    },
    GetAllocatableResources: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, { devices: [] }),
  });
  await new Promise<void>((resolve, reject) => server.bindAsync(`unix://${socket}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
  return { server, calls };
}

describe('devices of a pod from kubelet', function () {
  this.timeout(30000);
  const rig = new Rig();
  after(() => rig.cleanup());

  for (const get of ['served', 'absent', 'disabled'] as const) {
    it(`uses PodResources ${get === 'served' ? 'Get for the one pod' : `List when Get is ${get}`}, sorted per resource`, async () => {
      const socket = join(rig.dir(`pr-${get}`), 'kubelet.sock');
      const served = await servePodResources(socket, get);
      try {
        const devices = await podDevicesFromKubelet(socket, 'default', 'dev-pod', 5000);
        assert.deepEqual([...devices], [['plexus.dev/vf', ['0000:5e:02.3', '0000:5e:02.5']]]);
        assert.deepEqual(served.calls, get === 'served' ? ['Get'] : ['Get', 'List']);
      } finally {
        served.server.forceShutdown();
      }
    });
  }

  it('reads the device-plugin checkpoint by pod UID when there is no socket', () => {
    const file = join(rig.dir('cp'), 'kubelet_internal_checkpoint');
    writeFileSync(
      file,
      JSON.stringify({
        Data: {
          PodDeviceEntries: [
            { PodUID: 'u1', ContainerName: 'a', ResourceName: 'r/x', DeviceIDs: { '0': ['b', 'a'] } },
            { PodUID: 'u2', ContainerName: 'a', ResourceName: 'r/x', DeviceIDs: ['z'] },
          ],
        },
      }),
    );
    assert.deepEqual([...podDevicesFromCheckpoint(file, 'u1')], [['r/x', ['a', 'b']]]);
  });

  it('the plugin gives the Nth network of a resource the Nth device, and logs to logFile', async () => {
    const node = new SimNode(rig.dir('devnode'));
    await node.start();
    const socket = join(node.dir, 'pod-resources', 'kubelet.sock');
    mkdirSync(join(node.dir, 'pod-resources'));
    const served = await servePodResources(socket, 'served');
    try {
      node.api.put('k8s.cni.cncf.io/v1', 'network-attachment-definitions', {
        metadata: { name: 'vf-net', namespace: 'default', annotations: { 'k8s.v1.cni.cncf.io/resourceName': 'plexus.dev/vf' } },
        spec: { config: '{"cniVersion":"1.0.0","name":"vf-net","type":"macvlan","master":"plx-mv-master"}' },
      } as never);
      const ns = rig.netns('dev');
      const logFile = join(node.dir, 'plexus.log');
      const conf = node.podConf({ 'k8s.v1.cni.cncf.io/networks': 'vf-net@vfa,vf-net@vfb' }, { logFile, logLevel: 'verbose', logToStderr: false });
      const env = podEnv('ADD', 'sb-dev', ns.path, { name: 'dev-pod', namespace: 'default' });
      const add = await node.exec(env, conf);
      assert.equal(add.status, 0, add.stdout + add.stderr);
      assert.equal(add.stderr, '', 'logToStderr: false');
      assert.ok(linkExists('vfa', ns.name) && linkExists('vfb', ns.name));
      const read = node.attachments().read('sb-dev');
      assert.equal(read.kind, 'ok');
      assert.deepEqual(
        (read as { record: AttachmentRecord }).record.attachments.map((a) => [a.ifName, a.deviceID]),
        [
          ['eth0', undefined],
          ['vfa', '0000:5e:02.3'],
          ['vfb', '0000:5e:02.5'],
        ],
      );
      assert.deepEqual(served.calls, ['Get'], 'one pod asked for, not the whole node');
      assert.match(readFileSync(logFile, 'utf8'), /\[verbose\] sb-dev ADD sb-dev default\/vf-net as vfb: ok/);
      assert.equal((await node.exec({ ...env, CNI_COMMAND: 'DEL' }, conf)).status, 0);
    } finally {
      served.server.forceShutdown();
      await node.stop();
    }
  });
});
