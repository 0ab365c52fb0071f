/** Executing a CNI plugin exactly as a runtime does (libcni `invoke`): lookup, env, stdin, error decoding. */
import { accessSync, constants, statSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CniError, ErrorCode } from './errors.js';
import { validate } from './validate.js';
import type { AnyResult } from './types.js';
import { spawnCollect } from '../util/native.js';

/** First executable file named `type` in the CNI_PATH directories. */
export function findInPath(type: string, cniPath: readonly string[]): string {
  if (!type || type.includes('/') || type.includes('\\')) {
    throw new CniError(ErrorCode.InvalidNetworkConfig, 'invalid plugin type', `"${type}" must be a plain file name`);
  }
  if (!cniPath.length) throw new CniError(ErrorCode.InvalidEnvironment, 'no plugin path', `CNI_PATH is empty, cannot find plugin "${type}"`);
  for (const dir of cniPath) {
    const candidate = join(dir, type);
    try {
      if (statSync(candidate, { throwIfNoEntry: false })?.isFile()) {
        accessSync(candidate, constants.X_OK);
        return candidate;
      }
    } catch {
      /* not here: keep looking */
    }
  }
  throw new CniError(ErrorCode.InvalidNetworkConfig, `failed to find plugin "${type}"`, `searched ${JSON.stringify(cniPath)}`);
}

export interface ExecOptions {
  /** Kill the plugin after this many ms (0 = no limit). */
  timeoutMs?: number;
  /** Where the plugin's stderr goes once it has exited (the caller's stderr by default). */
  onStderr?: (chunk: Buffer) => void;
}

/** libcni's decoding of a failed plugin: the error JSON on stdout, else its stderr text. */
export function decodePluginError(pluginPath: string, exit: string, stdout: Buffer, stderr: Buffer): CniError {
  const out = stdout.toString().trim();
  if (!out) {
    const err = stderr.toString().trim();
    return new CniError(ErrorCode.Internal, err ? `netplugin failed: ${JSON.stringify(err)}` : `netplugin failed with no error message: ${exit}`, `${pluginPath}`);
  }
  try {
    const parsed = JSON.parse(out) as { code?: unknown; msg?: unknown; details?: unknown };
    const code = typeof parsed.code === 'number' ? parsed.code : ErrorCode.Internal;
    const msg = typeof parsed.msg === 'string' ? parsed.msg : out;
    return new CniError(code, msg, typeof parsed.details === 'string' && parsed.details ? parsed.details : undefined);
  } catch {
    return new CniError(ErrorCode.Internal, `netplugin failed but its error could not be parsed: ${JSON.stringify(out)}`, pluginPath);
  }
}

/** Runs a plugin with `env` and `stdin`; resolves with stdout on exit 0, rejects with its CniError. */
export async function execPlugin(pluginPath: string, stdin: Buffer | string, env: NodeJS.ProcessEnv, opts: ExecOptions = {}): Promise<Buffer> {
  // A plugin binary being replaced gives ETXTBSY for a moment: retry as libcni does.
  for (let attempt = 0; ; attempt++) {
    try {
      return await execOnce(pluginPath, stdin, env, opts);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ETXTBSY' && attempt < 5) {
        await sleep(1000);
        continue;
      }
      if (err instanceof CniError) throw err;
      throw new CniError(ErrorCode.Internal, `failed to execute ${pluginPath}`, (err as Error).message);
    }
  }
}

async function execOnce(pluginPath: string, stdin: Buffer | string, env: NodeJS.ProcessEnv, opts: ExecOptions): Promise<Buffer> {
  const { status, signal, timedOut, stdout, stderr } = await spawnCollect(pluginPath, env, stdin, opts.timeoutMs ?? 0);
  if (stderr.length) (opts.onStderr ?? ((c) => process.stderr.write(c)))(stderr);
  if (timedOut) throw new CniError(ErrorCode.TryAgainLater, `plugin ${pluginPath} timed out`, `killed after ${opts.timeoutMs} ms`);
  if (status === 0) return stdout;
  const exit = signal !== null ? `signal ${signalName(signal)}` : status !== null ? `exit status ${status}` : 'an unknown end (it could not be reaped)';
  throw decodePluginError(pluginPath, exit, stdout, stderr);
}

function signalName(signal: number): string {
  return Object.entries(osConstants.signals).find(([, n]) => n === signal)?.[0] ?? String(signal);
}

/** Parses and validates a plugin's ADD output. */
export function parseResult(stdout: Buffer, pluginPath: string): AnyResult {
  let value: unknown;
  try {
    value = JSON.parse(stdout.toString());
  } catch (err) {
    throw new CniError(ErrorCode.DecodingFailure, `failed to decode result of ${pluginPath}`, (err as Error).message);
  }
  return validate<AnyResult>('result', value, ErrorCode.DecodingFailure, `result of ${pluginPath}`);
}
