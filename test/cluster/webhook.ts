/**
 * The admission webhook through the real kube-apiserver: deploy/plexus-webhook.yaml's RBAC and webhook
 * configurations (their matchConditions compiled and evaluated by the API server's CEL), pointed at a
 * `plexusctl webhook` on the host (no kube-proxy here for the Service), real AdmissionReview v1 over TLS.
 * Runs inside the real node's SR-IOV suite: the device plugin is up and the node has two VFs.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { get } from 'node:https';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { stringify } from 'yaml';
import { Pki } from '../../src/k8s/pki.js';
import type { LocalCluster } from '../../src/sim/cluster.js';
import type { Kubectl } from '../../src/sim/cluster-plexus.js';
import type { ContainerdRig } from '../../src/sim/containerd.js';
import { pollUntil } from '../../src/util/poll.js';
import { plexusctlPath } from '../support/plugins.js';
import { ipAddresses } from '../support/rig.js';
import { type Webhook, startWebhook, stopWebhook, webhookConfigurations, webhookCredentials } from '../support/webhook.js';

export interface WebhookSuiteContext {
  cluster: () => LocalCluster;
  kubectl: () => Kubectl;
  dir: () => string;
  cri: () => ContainerdRig;
  resource: string;
}

function servedSerial(url: string, ca: Buffer): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const s = connect({ host: hostname, port: Number(port), ca, servername: 'localhost' }, () => {
      resolve(s.getPeerCertificate().serialNumber);
      s.end();
    });
    s.on('error', reject);
  });
}

export function describeWebhook(ctx: WebhookSuiteContext): void {
  describe('admission webhook through the real API server (deploy/plexus-webhook.yaml, AdmissionReview v1 over TLS)', () => {
    let webhook: ChildProcess | undefined;
    let url: string;
    let pki: Pki;
    let tlsDir: string;
    let kubeconfig: string;
    const logs: string[] = [];
    const kubectl = (args: string[], input?: string) => ctx.kubectl()(args, input);
    /** kubectl's error text, or '' when the command succeeded. */
    const refusal = (args: string[], input?: string): Promise<string> =>
      kubectl(args, input).then(
        () => '',
        (err: Error) => err.message,
      );
    const pod = (name: string, annotations: Record<string, string>, resources?: object) => ({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace: 'default', annotations },
      spec: { containers: [{ name: 'app', image: 'localhost/plexus-pause:1', imagePullPolicy: 'Never', ...(resources ? { resources } : {}) }] },
    });
    const sriovNad = (name: string, address: string) => ({
      apiVersion: 'k8s.cni.cncf.io/v1',
      kind: 'NetworkAttachmentDefinition',
      metadata: { name, namespace: 'default', annotations: { 'k8s.v1.cni.cncf.io/resourceName': ctx.resource } },
      spec: { config: JSON.stringify({ cniVersion: '1.0.0', name, type: 'sriov', ipam: { type: 'static', addresses: [{ address }] } }) },
    });

    /** Admission requests the webhook has answered, from its /metrics. */
    const admissionCount = (): Promise<number> =>
      new Promise((resolve, reject) => {
        get(`${url}/metrics`, { ca: readFileSync(pki.ca.cert) }, (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString()));
          res.on('end', () => resolve([...text.matchAll(/^plexus_webhook_admission_duration_seconds_count\{[^}]*\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0)));
        }).on('error', reject);
      });

    const applyConfigurations = async (caBundle: string) => {
      await kubectl(['apply', '-f', '-'], webhookConfigurations(url, caBundle));
    };

    before(async () => {
      const dir = join(ctx.dir(), 'webhook');
      tlsDir = join(dir, 'tls');
      mkdirSync(tlsDir, { recursive: true });
      // deploy/'s namespace and RBAC as they are; the webhook runs on that ServiceAccount's token.
      kubeconfig = await webhookCredentials(ctx.cluster(), ctx.kubectl(), join(dir, 'webhook.kubeconfig'));
      pki = new Pki(join(dir, 'pki'), 'plexus-webhook-test-ca');
      const first = pki.issue({ name: 'first', cn: 'localhost', dnsNames: ['localhost'], ips: ['127.0.0.1'], usage: 'server' });
      copyFileSync(first.cert, join(tlsDir, 'tls.crt'));
      copyFileSync(first.key, join(tlsDir, 'tls.key'));
      ({ child: webhook, url } = await startWebhook(
        ['--kubeconfig', kubeconfig, '--namespace', 'plexus-system', '--tls-cert-file', join(tlsDir, 'tls.crt'), '--tls-private-key-file', join(tlsDir, 'tls.key')],
        logs,
      ));
      await applyConfigurations(readFileSync(pki.ca.cert).toString('base64'));
    });

    after(async function () {
      if (this.test?.parent?.tests.some((t) => t.state === 'failed')) process.stderr.write(`      webhook logs:\n${logs.slice(-40).join('\n')}\n`);
      await stopWebhook(webhook);
      await kubectl(['delete', 'mutatingwebhookconfiguration,validatingwebhookconfiguration', 'plexus-webhook', '--ignore-not-found']);
      await kubectl(['delete', 'pod', 'wh-vf', 'wh-plain', '--ignore-not-found', '--wait=true', '--timeout=120s']);
      await kubectl(['delete', 'network-attachment-definition', 'wh-sriov-a', 'wh-sriov-b', '--ignore-not-found']);
      await kubectl(['delete', 'namespace', 'plexus-system', '--ignore-not-found', '--wait=false']);
    });

    it('a broken NAD is denied with a message naming the field; a good one is admitted', async () => {
      const broken = {
        apiVersion: 'k8s.cni.cncf.io/v1',
        kind: 'NetworkAttachmentDefinition',
        metadata: { name: 'wh-broken', namespace: 'default' },
        spec: { config: '{"cniVersion": "1.0.0", "type": ' },
      };
      const err = await refusal(['apply', '-f', '-'], stringify(broken));
      assert.match(err, /admission webhook "nads\.validate\.plexus\.network" denied the request: NetworkAttachmentDefinition default\/wh-broken denied by Plexus: failed to decode spec\.config/);
      const typeless = { ...broken, spec: { config: JSON.stringify({ cniVersion: '1.0.0', plugins: [{ master: 'eth0' }] }) } };
      assert.match(await refusal(['apply', '-f', '-'], stringify(typeless)), /plugins\/0: missing required key "type"/);
      assert.equal(await refusal(['apply', '-f', '-'], [stringify(sriovNad('wh-sriov-a', '10.78.0.5/24')), stringify(sriovNad('wh-sriov-b', '10.79.0.5/24'))].join('---\n')), '');
    });

    it('a pod with a typo in its annotation, or naming a missing NAD, is denied; one without networks never reaches the webhook', async () => {
      assert.match(
        await refusal(['apply', '--dry-run=server', '-f', '-'], stringify(pod('wh-typo', { 'k8s.v1.cni.cncf.io/networks': '[{"name": "wh-sriov-a", "interfce": "vf0"}]' }))),
        /denied the request: pod default\/wh-typo network request denied by Plexus: invalid k8s\.v1\.cni\.cncf\.io\/networks annotation: element 0: "interfce" is not an NPWG key/,
      );
      const missing = stringify(pod('wh-missing', { 'k8s.v1.cni.cncf.io/networks': 'wh-sriov-a,wh-nope' }));
      const denied = await refusal(['apply', '--dry-run=server', '-f', '-'], missing);
      assert.match(denied, /NetworkAttachmentDefinition default\/wh-nope does not exist/);
      // plexusctl explain, offline from the webhook, reading the NADs from the same API server: the same verdict.
      const file = join(ctx.dir(), 'webhook', 'wh-missing.yaml');
      writeFileSync(file, missing);
      const conf = readdirSync(ctx.cluster().cniConfDir).find((f) => f.includes('plexus'))!;
      const explained = spawnSync(plexusctlPath, ['explain', file, '--conf', join(ctx.cluster().cniConfDir, conf), '--kubeconfig', ctx.cluster().adminKubeconfig, '-o', 'json'], { encoding: 'utf8' });
      const verdict = (JSON.parse(explained.stdout) as { admission: { allowed: boolean; denials: string[] } }).admission;
      assert.equal(verdict.allowed, false);
      assert.ok(verdict.denials.length === 1 && denied.includes(verdict.denials[0]!), `explain: ${JSON.stringify(verdict)}; webhook: ${denied}`);
      // The API server's CEL matchConditions skip it: the webhook's request count does not move.
      const before = await admissionCount();
      assert.ok(before >= 4, `the denials above were counted (${before})`);
      assert.equal(await refusal(['apply', '--dry-run=server', '-f', '-'], stringify(pod('wh-plain', { unrelated: 'x' }))), '');
      assert.equal(await admissionCount(), before);
    });

    it('a pod selecting two SR-IOV networks, without asking for devices, gets 2 injected, is scheduled, starts, and has two VFs', async () => {
      await kubectl(['apply', '-f', '-'], stringify(pod('wh-vf', { 'k8s.v1.cni.cncf.io/networks': 'wh-sriov-a,wh-sriov-b' })));
      const stored = JSON.parse(await kubectl(['get', 'pod', 'wh-vf', '-o', 'json'])) as {
        spec: { containers: { resources: { requests: Record<string, string>; limits: Record<string, string> }; volumeMounts: { mountPath: string }[] }[] };
      };
      assert.equal(stored.spec.containers[0]!.resources.requests[ctx.resource], '2');
      assert.equal(stored.spec.containers[0]!.resources.limits[ctx.resource], '2');
      assert.ok(stored.spec.containers[0]!.volumeMounts.some((m) => m.mountPath === '/etc/podnetinfo'));
      await pollUntil(
        'wh-vf Running',
        async () => ((JSON.parse(await kubectl(['get', 'pod', 'wh-vf', '-o', 'json'])) as { status: { phase: string } }).status.phase === 'Running' ? true : undefined),
        120_000,
      );
      const sandbox = (await ctx.cri().readySandbox('default', 'wh-vf'))!;
      const ns = sandbox.netns!.split('/').pop()!;
      assert.deepEqual(ipAddresses(ns, 'net1'), ['10.78.0.5/24']);
      assert.deepEqual(ipAddresses(ns, 'net2'), ['10.79.0.5/24']);
      await kubectl(['delete', 'pod', 'wh-vf', '--wait=true', '--timeout=120s']);
    });

    it('certificate files rotated in place: the new certificate is served without a restart, and admission goes on', async () => {
      const ca = readFileSync(pki.ca.cert);
      const before = await servedSerial(url, ca);
      const second = pki.issue({ name: 'second', cn: 'localhost', dnsNames: ['localhost'], ips: ['127.0.0.1'], usage: 'server' });
      copyFileSync(second.key, join(tlsDir, 'tls.key'));
      copyFileSync(second.cert, join(tlsDir, 'tls.crt'));
      await pollUntil('the new certificate served', async () => ((await servedSerial(url, ca)) !== before ? true : undefined), 10_000);
      assert.equal(webhook!.exitCode, null, 'the same process');
      assert.match(await refusal(['apply', '--dry-run=server', '-f', '-'], stringify(pod('wh-missing', { 'k8s.v1.cni.cncf.io/networks': 'wh-nope' }))), /does not exist/);
    });

    it('self-managed CA: a webhook with --self-signed-ca writes its CA into both configurations, and the API server trusts it', async () => {
      await stopWebhook(webhook);
      const port = new URL(url).port;
      ({ child: webhook } = await startWebhook(
        [
          '--kubeconfig',
          kubeconfig,
          '--namespace',
          'plexus-system',
          '--self-signed-ca',
          join(ctx.dir(), 'webhook', 'self-ca'),
          '--ip',
          '127.0.0.1',
          '--webhook-config',
          'mutating/plexus-webhook,validating/plexus-webhook',
          '--address',
          `127.0.0.1:${port}`,
        ],
        logs,
      ));
      const ours = readFileSync(join(ctx.dir(), 'webhook', 'self-ca', 'ca.crt')).toString('base64');
      const cfg = JSON.parse(await kubectl(['get', 'validatingwebhookconfiguration', 'plexus-webhook', '-o', 'json'])) as { webhooks: Webhook[] };
      assert.ok(
        cfg.webhooks.every((w) => w.clientConfig.caBundle === ours),
        'caBundle written',
      );
      assert.match(await refusal(['apply', '--dry-run=server', '-f', '-'], stringify(pod('wh-missing', { 'k8s.v1.cni.cncf.io/networks': 'wh-nope' }))), /does not exist/);
    });

    it('webhook stopped: a plain pod is still admitted, a pod with networks is refused saying the webhook cannot be called', async () => {
      await stopWebhook(webhook);
      assert.equal(await refusal(['apply', '-f', '-'], stringify(pod('wh-plain', {}))), '');
      const err = await refusal(['apply', '--dry-run=server', '-f', '-'], stringify(pod('wh-down', { 'k8s.v1.cni.cncf.io/networks': 'wh-sriov-a' })));
      assert.match(err, /failed calling webhook "pods\.mutate\.plexus\.network"/);
      // NADs cannot be checked either, so they wait too.
      assert.match(await refusal(['apply', '--dry-run=server', '-f', '-'], stringify(sriovNad('wh-sriov-c', '10.80.0.5/24'))), /failed calling webhook "nads\.validate\.plexus\.network"/);
    });
  });
}
