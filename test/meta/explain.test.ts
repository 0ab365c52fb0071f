import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SimNode, exampleDocs } from '../../src/sim/simnode.js';
import { parsePodView } from '../../src/webhook/pod.js';
import { DEFAULT_POLICY, validatePod } from '../../src/webhook/validate.js';
import { plexusctlPath } from '../support/plugins.js';
import { Rig, ipJson } from '../support/rig.js';

/** Async: the API double serves from this process. */
function plexusctl(args: string[]): Promise<{ status: number | null; stdout: string }> {
  return new Promise((resolve) => {
    const child = spawn(plexusctlPath, args);
    let stdout = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.on('close', (status) => resolve({ status, stdout }));
  });
}

describe('plexusctl explain (dry run)', function () {
  this.timeout(30000);
  const rig = new Rig();
  let node: SimNode;
  let conf: string;
  before(async () => {
    node = new SimNode(rig.dir('explain'));
    await node.start();
    conf = join(node.dir, '00-plexus.conflist');
    writeFileSync(conf, JSON.stringify({ cniVersion: '1.0.0', name: 'plexus', plugins: [node.metaConf()] }));
  });
  after(async () => {
    await node.stop();
    rig.cleanup();
  });

  interface Explained {
    attachments: {
      network: string;
      ifName: string;
      default: boolean;
      env: Record<string, string>;
      delegates: { type: string; runtimeConfig: Record<string, unknown>; stdin: Record<string, unknown> }[];
    }[];
  }

  it('shows delegates, interface names, env and runtimeConfig of a pod JSON, and touches nothing', async () => {
    const pod = exampleDocs('pods.yaml').find((d) => d.metadata.name === 'two-nets')!;
    const file = join(node.dir, 'pod.json');
    writeFileSync(file, JSON.stringify(pod));
    const links = JSON.stringify(ipJson(['link', 'show']));
    const before = node.api.requests.length;
    const r = await plexusctl(['explain', file, '--conf', conf, '-o', 'json']);
    assert.equal(r.status, 0, r.stdout);
    const out = JSON.parse(r.stdout) as Explained;
    assert.deepEqual(
      out.attachments.map((a) => [a.ifName, a.network, a.default]),
      [
        ['eth0', 'cluster', true],
        ['net1', 'default/macvlan-a', false],
        ['data0', 'default/bridge-b', false],
      ],
    );
    const bridgeB = out.attachments[2]!;
    assert.deepEqual(bridgeB.delegates[0]!.runtimeConfig, { ips: ['10.77.0.9/24'] });
    assert.equal(bridgeB.env.CNI_IFNAME, 'data0');
    assert.match(bridgeB.env.CNI_ARGS!, /K8S_POD_NAME=two-nets/);
    assert.equal(bridgeB.delegates[0]!.stdin.name, 'bridge-b');
    assert.deepEqual(
      node.api.requests
        .slice(before)
        .map((q) => q.verb)
        .sort(),
      ['get', 'get'],
      'two NAD reads, nothing written',
    );
    assert.equal(JSON.stringify(ipJson(['link', 'show'])), links);
    assert.equal(existsSync(join(node.cniDir, 'attachments')), false, 'no store record');
  });

  it('reads NAMESPACE/NAME from the API and prints a table', async () => {
    node.addExamplePod('vf-stand-in');
    const r = await plexusctl(['explain', 'default/vf-stand-in', '--conf', conf]);
    assert.equal(r.status, 0, r.stdout);
    assert.match(r.stdout, /^admission: allowed\nIFNAME\s+NETWORK\s+PLUGINS/);
    assert.match(r.stdout, /\nvf0\s+default\/hostdev-c\s+host-device/);
  });

  it("gives the admission webhook's verdict on a YAML pod file, in its words, and plans nothing for a denied pod", async () => {
    const annotations = { 'k8s.v1.cni.cncf.io/networks': 'macvlan-a,nope,[x' };
    const file = join(node.dir, 'bad.yaml');
    writeFileSync(file, `metadata:\n  name: x\n  namespace: default\n  annotations:\n    k8s.v1.cni.cncf.io/networks: "nope"\nspec:\n  containers: [{name: app}]\n`);
    const r = await plexusctl(['explain', file, '--conf', conf, '-o', 'json']);
    assert.equal(r.status, 1);
    const out = JSON.parse(r.stdout) as { admission: { allowed: boolean; denials: string[] }; attachments: unknown[] };
    assert.equal(out.admission.allowed, false);
    assert.deepEqual(out.admission.denials, ['network default/nope (as net1): NetworkAttachmentDefinition default/nope does not exist']);
    assert.deepEqual(out.attachments, []);
    // The webhook, given the same NADs, says the same.
    const webhook = validatePod(
      parsePodView({ metadata: { name: 'x', namespace: 'default', annotations: { 'k8s.v1.cni.cncf.io/networks': 'nope' } } }, 'default'),
      { nad: () => undefined, ipamClaim: () => undefined, largestAllocatable: () => undefined },
      DEFAULT_POLICY,
    );
    assert.deepEqual(webhook.denials, out.admission.denials);
    writeFileSync(file, `metadata: {name: y, namespace: default, annotations: {k8s.v1.cni.cncf.io/networks: ${JSON.stringify(annotations['k8s.v1.cni.cncf.io/networks'])}}}\n`);
    const table = await plexusctl(['explain', file, '--conf', conf]);
    assert.equal(table.stdout, `admission: DENIED\n  denied: failed to decode k8s.v1.cni.cncf.io/networks annotation: Unexpected token 'm', "macvlan-a,nope,[x" is not valid JSON\n`);
  });
});
