import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { join } from 'node:path';
import fc from 'fast-check';
import { stringify } from 'yaml';
import { CniError } from '../../src/cni/errors.js';
import { ApiClient } from '../../src/k8s/client.js';
import { kubeconfigToApiConfig, loadKubeconfig } from '../../src/k8s/kubeconfig.js';
import { Pki } from '../../src/k8s/pki.js';
import { Rig } from '../support/rig.js';

/** A kubeconfig document with one cluster, one user and one context, `over` merged in. */
function doc(cluster: Record<string, unknown>, user: Record<string, unknown>, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'c1', cluster }],
    users: [{ name: 'u1', user }],
    contexts: [{ name: 'ctx1', context: { cluster: 'c1', user: 'u1' } }],
    'current-context': 'ctx1',
    ...over,
  };
}

async function rejects(p: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof CniError, String(err));
    assert.equal(err.code, 7);
    assert.match(err.message, pattern);
    return true;
  });
}

describe('kubeconfig: every form a user has, never the wrong credentials', function () {
  this.timeout(30000);
  const rig = new Rig();
  let dir: string;
  let pki: Pki;
  let serving: { cert: string; key: string };
  let client: { cert: string; key: string };
  /** One HTTPS server that records what each request carried. */
  let server: ReturnType<typeof createServer>;
  let port = 0;
  const seen: { path: string; headers: IncomingHttpHeaders; clientCN?: string }[] = [];
  before(async () => {
    dir = rig.dir('kubeconfig');
    pki = new Pki(join(dir, 'pki'));
    // Valid only for a name the URL does not carry: tls-server-name must be honoured to reach it.
    serving = pki.issue({ name: 'serving', cn: 'apiserver', dnsNames: ['kubernetes.plexus.test', 'localhost'], ips: ['127.0.0.1'], usage: 'server' });
    client = pki.issue({ name: 'client', cn: 'plexus-node', orgs: ['system:nodes'], usage: 'client' });
    server = createServer({ cert: readFileSync(serving.cert), key: readFileSync(serving.key), ca: readFileSync(pki.ca.cert), requestCert: true, rejectUnauthorized: false }, (req, res) => {
      const peer = (req.socket as TLSSocket).getPeerCertificate();
      seen.push({ path: req.url ?? '', headers: req.headers, ...(peer?.subject?.CN ? { clientCN: String(peer.subject.CN) } : {}) });
      res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"kind":"Pod"}');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    await new Promise((resolve) => server.close(resolve));
    rig.cleanup();
  });

  /** Writes `text` as a kubeconfig in a directory of its own; returns its path. */
  const write = (name: string, text: string): string => {
    const d = join(dir, name);
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, 'config'), text);
    return join(d, 'config');
  };
  const request = async (path: string) => {
    seen.length = 0;
    await new ApiClient(await loadKubeconfig(path), 5000).get('/api/v1/namespaces/default/pods/p');
    return seen[0]!;
  };
  const caData = () => readFileSync(pki.ca.cert).toString('base64');

  it('YAML in block style as kubeadm writes it, with certificate-authority-data and a token', async () => {
    const path = write('block', stringify(doc({ server: `https://127.0.0.1:${port}`, 'certificate-authority-data': caData() }, { token: 'block-token' })));
    assert.equal((await request(path)).headers.authorization, 'Bearer block-token');
  });

  it('YAML in flow style (starts with "{" and is not JSON), and JSON', async () => {
    const flow = `{apiVersion: v1, kind: Config, clusters: [{name: c1, cluster: {server: "https://127.0.0.1:${port}", certificate-authority-data: ${caData()}}}], users: [{name: u1, user: {token: flow-token}}], contexts: [{name: x, context: {cluster: c1, user: u1}}], current-context: x}`;
    assert.equal((await request(write('flow', flow))).headers.authorization, 'Bearer flow-token');
    const json = JSON.stringify(doc({ server: `https://127.0.0.1:${port}`, 'certificate-authority-data': caData() }, { token: 'json-token' }));
    assert.equal((await request(write('json', json))).headers.authorization, 'Bearer json-token');
  });

  it('relative certificate-authority, client-certificate, client-key and tokenFile are resolved from the kubeconfig directory', async () => {
    const d = join(dir, 'relative');
    mkdirSync(join(d, 'pki'), { recursive: true });
    writeFileSync(join(d, 'pki', 'ca.crt'), readFileSync(pki.ca.cert));
    writeFileSync(join(d, 'pki', 'client.crt'), readFileSync(client.cert));
    writeFileSync(join(d, 'pki', 'client.key'), readFileSync(client.key));
    writeFileSync(join(d, 'token'), 'file-token\n');
    const path = join(d, 'config');
    writeFileSync(
      path,
      stringify(doc({ server: `https://127.0.0.1:${port}`, 'certificate-authority': 'pki/ca.crt' }, { 'client-certificate': 'pki/client.crt', 'client-key': 'pki/client.key', tokenFile: 'token' })),
    );
    const got = await request(path);
    assert.equal(got.clientCN, 'plexus-node');
    assert.equal(got.headers.authorization, 'Bearer file-token');
    // kubectl's own spelling of the key, too.
    writeFileSync(path, stringify(doc({ server: `https://127.0.0.1:${port}`, 'certificate-authority': 'pki/ca.crt' }, { 'token-file': 'token' })));
    assert.equal((await request(path)).headers.authorization, 'Bearer file-token');
  });

  it('client certificate and key as -data', async () => {
    const path = write(
      'certdata',
      stringify(
        doc(
          { server: `https://127.0.0.1:${port}`, 'certificate-authority-data': caData() },
          { 'client-certificate-data': readFileSync(client.cert).toString('base64'), 'client-key-data': readFileSync(client.key).toString('base64') },
        ),
      ),
    );
    const got = await request(path);
    assert.equal(got.clientCN, 'plexus-node');
    assert.equal(got.headers.authorization, undefined);
  });

  it('tls-server-name is the name the certificate is checked against; a server path prefix is kept', async () => {
    // 127.0.0.2 is not in the certificate: only tls-server-name makes the check pass.
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.2', resolve));
    try {
      const without = write('nosni', stringify(doc({ server: `https://127.0.0.2:${port}`, 'certificate-authority-data': caData() }, { token: 't' })));
      await assert.rejects(request(without), /127\.0\.0\.2|altnames|IP/);
      const path = write('sni', stringify(doc({ server: `https://127.0.0.2:${port}/prefix/`, 'certificate-authority-data': caData(), 'tls-server-name': 'kubernetes.plexus.test' }, { token: 't' })));
      assert.equal((await request(path)).path, '/prefix/api/v1/namespaces/default/pods/p');
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
    }
  });

  it('insecure-skip-tls-verify reaches a server whose CA it does not have; with a CA as well it is refused, as kubectl does', async () => {
    const path = write('insecure', stringify(doc({ server: `https://127.0.0.1:${port}`, 'insecure-skip-tls-verify': true }, { token: 'insecure' })));
    assert.equal((await request(path)).headers.authorization, 'Bearer insecure');
    await rejects(
      loadKubeconfig(write('both', stringify(doc({ server: `https://127.0.0.1:${port}`, 'insecure-skip-tls-verify': true, 'certificate-authority-data': caData() }, {})))),
      /insecure-skip-tls-verify together/,
    );
  });

  it('several contexts: the current one is used, whatever order the lists are in', async () => {
    const path = write(
      'multi',
      stringify({
        clusters: [
          { name: 'other', cluster: { server: 'https://192.0.2.1:6443' } },
          { name: 'mine', cluster: { server: `https://127.0.0.1:${port}`, 'certificate-authority-data': caData() } },
        ],
        users: [
          { name: 'other-user', user: { token: 'NOT-THIS-ONE' } },
          { name: 'me', user: { token: 'mine' } },
        ],
        contexts: [
          { name: 'a', context: { cluster: 'other', user: 'other-user' } },
          { name: 'b', context: { cluster: 'mine', user: 'me' } },
        ],
        'current-context': 'b',
      }),
    );
    assert.equal((await request(path)).headers.authorization, 'Bearer mine');
  });

  it("a missing current context, cluster or user is an error naming it, and no request is made with anybody else's credentials", async () => {
    const base = doc({ server: `https://127.0.0.1:${port}`, 'certificate-authority-data': caData() }, { token: 'first-user-token' });
    seen.length = 0;
    await rejects(loadKubeconfig(write('noctx', stringify({ ...base, 'current-context': 'gone' }))), /current-context "gone" does not exist/);
    await rejects(
      loadKubeconfig(write('nocluster', stringify({ ...base, contexts: [{ name: 'ctx1', context: { cluster: 'elsewhere', user: 'u1' } }] }))),
      /cluster "elsewhere" of context "ctx1" does not exist/,
    );
    await rejects(
      loadKubeconfig(write('nouser', stringify({ ...base, contexts: [{ name: 'ctx1', context: { cluster: 'c1', user: 'someone' } }] }))),
      /user "someone" of context "ctx1" does not exist/,
    );
    const two = { ...base, contexts: [...(base.contexts as object[]), { name: 'ctx2', context: { cluster: 'c1', user: 'u1' } }] };
    delete (two as Record<string, unknown>)['current-context'];
    await rejects(loadKubeconfig(write('ambiguous', stringify(two))), /no current-context.*ctx1, ctx2/);
    assert.equal(seen.length, 0, 'nothing was sent');
  });

  it('credential plugins and proxies are refused by name, not ignored; bad files are named', async () => {
    await rejects(
      loadKubeconfig(write('exec', stringify(doc({ server: `https://127.0.0.1:${port}` }, { exec: { command: 'aws', apiVersion: 'client.authentication.k8s.io/v1' } })))),
      /user "u1": exec credential plugins are not supported/,
    );
    await rejects(loadKubeconfig(write('proxy', stringify(doc({ server: `https://127.0.0.1:${port}`, 'proxy-url': 'http://proxy:3128' }, {})))), /proxy-url is not supported/);
    await rejects(
      loadKubeconfig(write('missingca', stringify(doc({ server: `https://127.0.0.1:${port}`, 'certificate-authority': 'nope/ca.crt' }, {})))),
      /certificate-authority: cannot read .*missingca\/nope\/ca\.crt/,
    );
    await rejects(loadKubeconfig(join(dir, 'does-not-exist')), /does-not-exist: cannot be read/);
    await rejects(loadKubeconfig(write('garbage', 'clusters: [unclosed')), /cannot be read/);
  });

  it('property: any document is a config or a code-7 error naming the file, never another exception', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.constantFrom('clusters', 'users', 'contexts', 'current-context'), (junk, key) => {
        for (const d of [junk, { ...doc({ server: 'https://127.0.0.1:1' }, { token: 't' }), [key]: junk }]) {
          try {
            const cfg = kubeconfigToApiConfig(d, '/k/config');
            assert.match(cfg.server, /^https?:\/\//);
          } catch (err) {
            assert.ok(err instanceof CniError && err.code === 7 && err.message.startsWith('kubeconfig /k/config: '), String(err));
          }
        }
      }),
      { numRuns: 2000 },
    );
  });
});
