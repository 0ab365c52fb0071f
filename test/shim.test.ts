import assert from 'node:assert/strict';
import { type Server, type Socket, createServer } from 'node:net';
import { join } from 'node:path';
import { repoRoot } from '../src/rig/simnode.js';
import { spawnCollect } from '../src/util/native.js';
import { Rig } from './support/rig.js';

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
    spawnCollect(SHIM, { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', PLEXUS_SHIM_TIMEOUT_MS: String(timeoutMs) }, JSON.stringify({ cniVersion: '1.0.0', name: 'plexus', type: 'plexus-shim', daemonSocket: socket }), 20000);

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
});
