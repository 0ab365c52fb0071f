/**
 * `plexus-shim`: the per-pod executable in daemon mode. It forwards env + stdin to the node daemon
 * and prints its reply; all logic lives in the daemon. It never waits without bound, and when the
 * daemon cannot answer it says "try again later" (code 11): never a fallback to another network.
 * Kept to node: built-ins so it starts as fast as Node can.
 */
import { request } from 'node:http';
import { SUPPORTED_VERSIONS } from '../cni/types.js';
import { DEFAULT_DAEMON_SOCKET, EXIT_CODE_HEADER, STDERR_LENGTH_HEADER } from '../daemon/protocol.js';

const TIMEOUT_MS = Number(process.env.PLEXUS_SHIM_TIMEOUT_MS ?? 120000);

function fail(cniVersion: string, msg: string, details: string): void {
  process.stdout.write(JSON.stringify({ cniVersion, code: 11, msg, details }));
  process.exitCode = 1;
}

async function main(): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  const stdin = Buffer.concat(chunks);
  let conf: { cniVersion?: unknown; daemonSocket?: unknown } = {};
  try {
    conf = JSON.parse(stdin.toString()) as typeof conf;
  } catch {
    /* the daemon reports malformed config with the right code */
  }
  const cniVersion = typeof conf.cniVersion === 'string' ? conf.cniVersion : '1.1.0';
  if (process.env.CNI_COMMAND === 'VERSION') {
    // Answered here: runtimes (podman) probe VERSION before every ADD and DEL, daemon up or not.
    process.stdout.write(JSON.stringify({ cniVersion: (SUPPORTED_VERSIONS as readonly string[]).includes(cniVersion) ? cniVersion : '1.1.0', supportedVersions: SUPPORTED_VERSIONS }));
    return;
  }
  const socketPath = typeof conf.daemonSocket === 'string' ? conf.daemonSocket : DEFAULT_DAEMON_SOCKET;
  const env = Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => typeof e[1] === 'string'));
  const body = JSON.stringify({ env, stdin: stdin.toString('base64') });
  await new Promise<void>((resolve) => {
    const req = request({ socketPath, path: '/cni', method: 'POST', headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) }, timeout: TIMEOUT_MS }, (res) => {
      const out: Buffer[] = [];
      res.on('data', (c: Buffer) => out.push(c));
      res.on('end', () => {
        const payload = Buffer.concat(out);
        if (res.statusCode !== 200) {
          fail(cniVersion, 'plexus daemon is not ready', `${res.statusCode}: ${payload.toString()}`);
          return resolve();
        }
        const stderrLength = Number(res.headers[STDERR_LENGTH_HEADER] ?? 0);
        process.stderr.write(payload.subarray(0, stderrLength));
        process.stdout.write(payload.subarray(stderrLength));
        process.exitCode = Number(res.headers[EXIT_CODE_HEADER] ?? 1);
        resolve();
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${TIMEOUT_MS} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => {
      fail(cniVersion, 'plexus daemon is not reachable', `${socketPath}: ${err.code ?? err.message}`);
      resolve();
    });
    req.end(body);
  });
}

await main();
