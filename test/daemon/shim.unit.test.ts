import assert from 'node:assert/strict';
import { type Server, type Socket, createServer } from 'node:net';
import { join } from 'node:path';
import { repoRoot } from '../../src/sim/simnode.js';
import { spawnCollect } from '../../src/util/native.js';
import { Rig } from '../support/rig.js';

const SHIM = join(repoRoot(), 'native', 'plexus-shim');

/** The native shim against daemons that misbehave: whatever happens, it ends, and only ever with the reply or code 11. */
describe('native shim: the reply, or code 11', function () {
  this.timeout(30000);
  const rig = new Rig();
  let server: Server | undefined;
  const held: Socket[] = [];
  afterEach(async () => {
    for (const s of held.splice(0)) s.destroy();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    server = undefined;
  });
  after(() => rig.cleanup());

  /** A "daemon" that answers each request with `reply(requestText)` written raw, then does `then`. */
  async function fakeDaemon(reply: (request: string) => string | undefined, then: 'hold' | 'close'): Promise<string> {
    const socket = join(rig.dir('shim'), 'd.sock');
    server = createServer((conn) => {
      held.push(conn);
      let text = '';
      conn.on('data', (c: Buffer) => {
        text += c.toString();
        const head = text.indexOf('\r\n\r\n');
        const length = Number(/content-length: *(\d+)/i.exec(text)?.[1] ?? -1);
        if (head < 0 || text.length < head + 4 + length) return;
        const out = reply(text);
        if (out !== undefined) conn.write(out);
        if (then === 'close') conn.end();
      });
    });
    await new Promise<void>((resolve) => server!.listen(socket, resolve));
    return socket;
  }

  const run = (socket: string, timeoutMs = 10000) =>
    spawnCollect(
      SHIM,
      { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', PLEXUS_SHIM_TIMEOUT_MS: String(timeoutMs) },
      JSON.stringify({ cniVersion: '1.0.0', name: 'plexus', type: 'plexus-shim', daemonSocket: socket }),
      20000,
    );

  it('prints the reply once Content-Length bytes are in, though the daemon keeps the connection open', async () => {
    let request = '';
    const socket = await fakeDaemon((text) => {
      request = text;
      const body = 'warning\n{"cniVersion":"1.0.0"}';
      return `HTTP/1.1 200 OK\r\nContent-length: ${body.length}\r\nX-CNI-Exit-Code: 0\r\nx-cni-stderr-length: 8\r\n\r\n${body}`;
    }, 'hold');
    const r = await run(socket);
    assert.deepEqual([r.status, r.stdout.toString(), r.stderr.toString()], [0, '{"cniVersion":"1.0.0"}', 'warning\n']);
    const body = JSON.parse(request.slice(request.indexOf('\r\n\r\n') + 4)) as { env: Record<string, string>; stdin: string };
    assert.equal(body.env.CNI_CONTAINERID, 'c1');
    assert.equal(JSON.parse(Buffer.from(body.stdin, 'base64').toString()).daemonSocket, socket);
  });

  const cases: [string, (request: string) => string | undefined, 'hold' | 'close', number, RegExp][] = [
    ['no answer in time', () => undefined, 'hold', 300, /did not answer in time/],
    ['closed mid-reply', () => 'HTTP/1.1 200 OK\r\nContent-Length: 100\r\nx-cni-exit-code: 0\r\n\r\n{"cniVe', 'close', 10000, /closed the connection mid-reply/],
    ['closed without a word', () => undefined, 'close', 10000, /closed the connection/],
    ['not ready (503)', () => 'HTTP/1.1 503 Service Unavailable\r\nContent-Length: 12\r\n\r\nnot ready ok', 'hold', 10000, /not ready/],
    ['not HTTP', () => 'hello\r\n\r\n', 'close', 10000, /malformed/],
  ];
  for (const [label, reply, then, timeoutMs, msg] of cases) {
    it(`${label}: code 11`, async () => {
      const r = await run(await fakeDaemon(reply, then), timeoutMs);
      assert.equal(r.status, 1, r.stdout.toString());
      const error = JSON.parse(r.stdout.toString()) as { code: number; msg: string };
      assert.equal(error.code, 11);
      assert.match(error.msg, msg);
    });
  }

  const ok = () => 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-CNI-Exit-Code: 0\r\nX-CNI-Stderr-Length: 0\r\n\r\n{}';

  it('takes daemonSocket from the top level of the conf only: one a tenant put in runtimeConfig, args or a nested plugin is not followed', async () => {
    const socket = await fakeDaemon(ok, 'close');
    const trap = join(rig.dir('trap'), 'tenant.sock');
    // Nested occurrences before the real key: the old first-match search took the tenant's socket.
    const conf = JSON.stringify({
      cniVersion: '1.0.0',
      name: 'plexus',
      runtimeConfig: { 'io.kubernetes.cri.pod-annotations': { x: '"daemonSocket": "' + trap + '"', daemonSocket: trap } },
      args: { cni: { daemonSocket: trap } },
      plugins: [{ daemonSocket: trap }],
      type: 'plexus-shim',
      daemonSocket: socket,
    });
    const r = await spawnCollect(SHIM, { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1' }, conf, 20000);
    assert.deepEqual([r.status, r.stdout.toString()], [0, '{}'], r.stdout.toString());
    // No top-level key: the default socket, never a nested one.
    const nestedOnly = JSON.stringify({ cniVersion: '1.0.0', name: 'plexus', runtimeConfig: { daemonSocket: socket } });
    const d = await spawnCollect(SHIM, { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1' }, nestedOnly, 20000);
    assert.equal(d.status, 1);
    assert.match(d.stdout.toString(), /"code":11.*\/run\/plexus\/plexus\.sock/);
  });

  it('a request over the daemon limit is a final error (code 7) naming the limit, printed as JSON, not a SIGPIPE or "try again"', async () => {
    const socket = await fakeDaemon(ok, 'close');
    for (const size of [3.5 * 1024 * 1024, 6 * 1024 * 1024]) {
      const conf = JSON.stringify({ cniVersion: '1.0.0', name: 'plexus', type: 'plexus-shim', daemonSocket: socket, pad: 'x'.repeat(size) });
      const r = await spawnCollect(SHIM, { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1' }, conf, 20000);
      assert.equal(r.status, 1, `exit ${String(r.status)}`);
      const err = JSON.parse(r.stdout.toString()) as { code: number; msg: string; details: string };
      assert.equal(err.code, 7);
      assert.match(err.details, /at most 4194304/);
    }
  });

  it('a daemon answering 413 is a final error too (code 7)', async () => {
    const socket = await fakeDaemon(() => 'HTTP/1.1 413 Payload Too Large\r\nContent-Length: 13\r\n\r\n{"error":"x"}', 'close');
    const r = await run(socket);
    assert.equal(r.status, 1);
    assert.equal((JSON.parse(r.stdout.toString()) as { code: number }).code, 7);
  });
});
