/** The webhook's HTTPS server in process: AdmissionReview over real TLS, readiness, metrics, certificates rotated in place. */
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type PeerCertificate, connect } from 'node:tls';
import { Pki } from '../../src/k8s/pki.js';
import { pollUntil } from '../../src/util/poll.js';
import { Admission } from '../../src/webhook/admission.js';
import { WebhookServer } from '../../src/webhook/server.js';
import { DEFAULT_POLICY } from '../../src/webhook/validate.js';

describe('admission webhook: the HTTPS server', () => {
  let dir: string;
  let pki: Pki;
  let server: WebhookServer;
  let base: string;
  let ready = false;
  const logs: string[] = [];

  const call = (path: string, body?: unknown): Promise<{ status: number; text: string }> =>
    new Promise((resolve, reject) => {
      const req = request(`${base}${path}`, { method: body === undefined ? 'GET' : 'POST', ca: readFileSync(pki.ca.cert), headers: { 'content-type': 'application/json' } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, text: Buffer.concat(chunks).toString() }));
      });
      req.on('error', reject);
      req.end(body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body));
    });

  const servedSerial = (): Promise<string> =>
    new Promise((resolve, reject) => {
      const port = Number(new URL(base).port);
      const s = connect({ host: '127.0.0.1', port, servername: 'localhost', ca: readFileSync(pki.ca.cert) }, () => {
        const cert: PeerCertificate = s.getPeerCertificate();
        s.end();
        resolve(cert.serialNumber);
      });
      s.on('error', reject);
    });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'plexus-webhook-srv-'));
    pki = new Pki(join(dir, 'pki'));
    const first = pki.issue({ name: 'first', cn: 'localhost', dnsNames: ['localhost'], ips: ['127.0.0.1'], usage: 'server' });
    copyFileSync(first.cert, join(dir, 'tls.crt'));
    copyFileSync(first.key, join(dir, 'tls.key'));
    const catalog = { nad: () => undefined, ipamClaim: () => undefined, largestAllocatable: () => undefined };
    const admission = new Admission(catalog, DEFAULT_POLICY, () => ({ userInjections: new Map(), podNetInfo: true, hugepages: false }));
    server = new WebhookServer(admission, { certFile: join(dir, 'tls.crt'), keyFile: join(dir, 'tls.key'), certCheckMs: 100, ready: () => ready, log: (_l, msg) => logs.push(msg) });
    base = await server.listen('127.0.0.1', 0);
  });
  after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const pod = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'p', namespace: 'default', annotations: { 'k8s.v1.cni.cncf.io/networks': 'missing' } }, spec: { containers: [{ name: 'c' }] } };
  const reviewOf = (object: unknown) => ({
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: { uid: 'abc', kind: { group: '', version: 'v1', kind: 'Pod' }, operation: 'CREATE', namespace: 'default', object },
  });

  it('not ready until the NADs are listed: /readyz 503 and admission requests refused (the failurePolicy decides), /healthz 200', async () => {
    assert.equal((await call('/healthz')).status, 200);
    assert.equal((await call('/readyz')).status, 503);
    assert.equal((await call('/validate', reviewOf(pod))).status, 503);
    ready = true;
    assert.equal((await call('/readyz')).status, 200);
  });

  it('answers an AdmissionReview with the same uid; a body that is not one gets 400', async () => {
    const res = await call('/validate', reviewOf(pod));
    assert.equal(res.status, 200);
    const out = JSON.parse(res.text) as { apiVersion: string; response: { uid: string; allowed: boolean; status: { message: string } } };
    assert.equal(out.apiVersion, 'admission.k8s.io/v1');
    assert.equal(out.response.uid, 'abc');
    assert.equal(out.response.allowed, false);
    assert.match(out.response.status.message, /default\/missing does not exist/);
    assert.equal((await call('/validate', '{not json')).status, 400);
    assert.equal((await call('/mutate', { apiVersion: 'v1', kind: 'Pod' })).status, 400);
    assert.equal((await call('/nothing', {})).status, 404);
  });

  it('/metrics has the admission latency by operation, kind and outcome', async () => {
    const text = (await call('/metrics')).text;
    assert.match(text, /plexus_webhook_admission_duration_seconds_count\{operation="validate",kind="Pod",outcome="denied"\} [1-9]/);
  });

  it('certificate files replaced in place: the new certificate is served without a restart; a mismatched pair is skipped', async () => {
    const before = await servedSerial();
    const second = pki.issue({ name: 'second', cn: 'localhost', dnsNames: ['localhost'], ips: ['127.0.0.1'], usage: 'server' });
    // Half a rotation (the new certificate, the old key): not a pair, the old one is still served.
    copyFileSync(second.cert, join(dir, 'tls.crt'));
    await pollUntil('the mismatch noticed', async () => logs.some((l) => l.includes('do not make a key pair')) || undefined, 5000);
    assert.equal(await servedSerial(), before);
    copyFileSync(second.key, join(dir, 'tls.key'));
    const after = await pollUntil(
      'the new certificate served',
      async () => {
        const s = await servedSerial();
        return s !== before ? s : undefined;
      },
      5000,
    );
    assert.notEqual(after, before);
    assert.equal((await call('/healthz')).status, 200);
  });
});
