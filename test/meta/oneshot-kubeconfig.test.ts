import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { SimNode, podEnv } from '../../src/sim/simnode.js';
import { Rig } from '../support/rig.js';

describe('one-shot plexus with the kubeconfig every real install has', function () {
  this.timeout(30000);
  const rig = new Rig();
  after(() => rig.cleanup());

  it('the bundled one-shot plugin reads a YAML kubeconfig (it failed with "(intermediate value).parse is not a function")', async () => {
    const node = new SimNode(rig.dir('yamlnode'));
    await node.start();
    try {
      assert.match(readFileSync(node.kubeconfig, 'utf8'), /^apiVersion: v1\nclusters:\n- cluster:/, 'the simulated node writes YAML as kubeadm does');
      const ns = rig.netns('kc');
      node.api.put('v1', 'pods', {
        metadata: { name: 'kc-pod', namespace: 'default', uid: 'uid-kc', annotations: { 'k8s.v1.cni.cncf.io/networks': 'macvlan-a' } },
        spec: { nodeName: 'plx-node' },
      } as never);
      // No pod-annotations capability: the plugin must read the pod from the API.
      const conf = node.metaConf({ capabilities: {} });
      const env = podEnv('ADD', 'sb-yaml', ns.path, { name: 'kc-pod', namespace: 'default', uid: 'uid-kc' });
      const add = await node.exec(env, conf);
      assert.equal(add.status, 0, add.stdout + add.stderr);
      assert.ok(
        node.api.requests.some((r) => r.verb === 'get' && r.resource === 'pods'),
        'the pod was read over HTTPS',
      );
      assert.ok(node.api.get('v1', 'pods', 'default', 'kc-pod')?.metadata.annotations?.['k8s.v1.cni.cncf.io/network-status']);
      assert.equal((await node.exec({ ...env, CNI_COMMAND: 'DEL' }, conf)).status, 0);
    } finally {
      await node.stop();
    }
  });
});
