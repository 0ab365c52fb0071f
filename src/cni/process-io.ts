/**
 * What every exec'd plugin needs before it knows its command: the process's env, stdin and stdout, and
 * the answer to VERSION. Kept apart from the skel so that VERSION (runtimes probe every plugin with it)
 * loads nothing else: no validators, no plugin code (docs/benchmarks-meta.md, one-shot start).
 */
import { CURRENT_VERSION } from './types.js';

/** How a plugin talks to its caller: a process's env, stdin, stdout and stderr, or a daemon request's. */
export interface PluginIO {
  env: NodeJS.ProcessEnv;
  readStdin(): Promise<Buffer>;
  stdout(text: string): void;
  stderr(text: string): void;
}

/** The process glue: real env, stdin, stdout. */
export function processIO(): PluginIO {
  return {
    env: process.env,
    readStdin: async () => {
      const chunks: Buffer[] = [];
      for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
      return Buffer.concat(chunks);
    },
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
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
