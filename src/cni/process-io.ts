/**
 * What every exec'd plugin needs before it knows its command: the process's env, stdin and stdout, and
 * the answer to VERSION. Kept apart from the skel so that VERSION (runtimes probe every plugin with it)
 * loads nothing else: no validators, no plugin code (docs/benchmarks-meta.md, one-shot start).
 */
import { readSync, writeSync } from 'node:fs';
import { CURRENT_VERSION } from './types.js';

/** How a plugin talks to its caller: a process's env, stdin, stdout and stderr, or a daemon request's. */
export interface PluginIO {
  env: NodeJS.ProcessEnv;
  readStdin(): Promise<Buffer>;
  stdout(text: string): void;
  stderr(text: string): void;
}

/**
 * Reads fd 0 to its end with plain reads: a runtime's stdin is a blocking pipe or a file, and Node's
 * stream machinery (process.stdin) costs more to start than the whole VERSION answer. A non-blocking
 * stdin (EAGAIN) goes on through the stream, after what was already read.
 */
async function readAllStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const buf = Buffer.allocUnsafe(65536);
  for (;;) {
    let n: number;
    try {
      n = readSync(0, buf, 0, buf.length, null);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EOF') break;
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
      for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
      break;
    }
    if (n === 0) break;
    chunks.push(Buffer.from(buf.subarray(0, n)));
  }
  return Buffer.concat(chunks);
}

/** Writes all of `text` to fd 1 or 2 with plain writes; a non-blocking one that is full (EAGAIN) goes on through the stream. */
function writeAll(fd: 1 | 2, text: string): void {
  const data = Buffer.from(text);
  let done = 0;
  try {
    while (done < data.length) done += writeSync(fd, data, done);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
    (fd === 1 ? process.stdout : process.stderr).write(data.subarray(done));
  }
}

/** The process glue: real env, stdin, stdout. */
export function processIO(): PluginIO {
  return {
    env: process.env,
    readStdin: readAllStdin,
    stdout: (text) => writeAll(1, text),
    stderr: (text) => writeAll(2, text),
  };
}

/**
 * VERSION: the config's cniVersion echoed when supported (else ours) and the supported list. podman
 * probes with dummy values in the other variables: they are ignored, and stdin never fails it.
 */
export async function answerVersion(supportedVersions: readonly string[], io: PluginIO): Promise<number> {
  const input = await io.readStdin().catch(() => Buffer.alloc(0));
  let echo: string = CURRENT_VERSION;
  try {
    const v = (JSON.parse(input.toString()) as { cniVersion?: unknown }).cniVersion;
    if (typeof v === 'string' && supportedVersions.includes(v)) echo = v;
  } catch {
    /* empty or malformed stdin: answer with our current version */
  }
  io.stdout(JSON.stringify({ cniVersion: echo, supportedVersions }));
  return 0;
}
