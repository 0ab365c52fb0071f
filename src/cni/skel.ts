/**
 * Plugin side of CNI: environment and stdin to a typed request, dispatch, result or error JSON
 * on stdout (logs belong on stderr). Behaves as the Go `skel` package where the spec is silent.
 */
import { type Stats, statSync } from 'node:fs';
import { type CniArgs, parseCniArgs, parseCniArgsLenient } from './args.js';
import { decodeJson } from './conf.js';
import { decodePluginError } from './invoke.js';
import { CniError, ErrorCode } from './errors.js';
import { type PluginIO, answerVersion } from './process-io.js';

export { type PluginIO, processIO } from './process-io.js';
import { NAME_PATTERN } from './schemas.js';
import { validate } from './validate.js';
import { type AnyResult, type Attachment, type CniCommand, CURRENT_VERSION, type PluginConf, versionAtLeast } from './types.js';
import { convertResult } from './version.js';

/** The configuration a plugin receives on stdin. */
export interface PluginStdinConf extends PluginConf {
  cniVersion: string;
  name?: string;
  runtimeConfig?: Record<string, unknown>;
  args?: Record<string, unknown>;
  prevResult?: AnyResult;
  'cni.dev/valid-attachments'?: Attachment[];
}

export interface PluginRequest {
  command: Exclude<CniCommand, 'VERSION'>;
  containerID: string;
  netns: string;
  ifName: string;
  args: CniArgs;
  /** With `Plugin.refusesBadArgs`: why CNI_ARGS does not parse (`args` then holds the pairs that do). */
  argsError?: CniError;
  path: string[];
  stdin: Buffer;
  conf: PluginStdinConf;
  /** The caller's whole environment: delegates get it too (spec), and a daemon serves many callers. */
  env: NodeJS.ProcessEnv;
}

export interface Plugin {
  /** Shown for an empty CNI_COMMAND, like Go plugins' "about" line. */
  about: string;
  supportedVersions: readonly string[];
  add(req: PluginRequest): Promise<AnyResult>;
  del(req: PluginRequest): Promise<void>;
  check(req: PluginRequest): Promise<void>;
  status?(req: PluginRequest): Promise<void>;
  gc?(req: PluginRequest): Promise<void>;
  /**
   * The plugin refuses a CNI_ARGS that does not parse itself (`req.argsError`), after it has recorded
   * that nothing is attached: else the skel refuses it before the plugin runs, and a DEL that follows
   * finds no record.
   */
  refusesBadArgs?: boolean;
}

type Need = 'req' | 'opt' | '-';
// Spec table §"Parameters"; the Go skel requires CNI_PATH for every command but VERSION.
const ENV_TABLE: Record<Exclude<CniCommand, 'VERSION'>, Record<string, Need>> = {
  ADD: { CNI_CONTAINERID: 'req', CNI_NETNS: 'req', CNI_IFNAME: 'req', CNI_PATH: 'req' },
  DEL: { CNI_CONTAINERID: 'req', CNI_NETNS: 'opt', CNI_IFNAME: 'req', CNI_PATH: 'req' },
  CHECK: { CNI_CONTAINERID: 'req', CNI_NETNS: 'req', CNI_IFNAME: 'req', CNI_PATH: 'req' },
  STATUS: { CNI_PATH: 'opt' },
  GC: { CNI_PATH: 'req' },
};
const CONTAINER_ID = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
// File names are at most 255 bytes; records are named `<id>.jsonl`, `<id>-<ifname>` plus a temporary suffix.
const MAX_CONTAINER_ID = 200;
const NETWORK_NAME = new RegExp(NAME_PATTERN);

/** Interface name rules of the kernel (and skel): 1..15 bytes, not . or .., no / : or whitespace. */
export function validateIfName(name: string): void {
  const why =
    name.length === 0
      ? 'is empty'
      : Buffer.byteLength(name) > 15
        ? 'is longer than 15 bytes'
        : name === '.' || name === '..'
          ? 'is "." or ".."'
          : /[/:\s]/.test(name)
            ? 'contains "/", ":" or whitespace'
            : undefined;
  if (why) throw new CniError(ErrorCode.InvalidEnvironment, 'invalid CNI_IFNAME', `interface name "${name}" ${why}`);
}

export function parseRequestEnv(env: NodeJS.ProcessEnv, command: Exclude<CniCommand, 'VERSION'>, pluginRefusesBadArgs = false): Omit<PluginRequest, 'stdin' | 'conf' | 'env'> {
  const table = ENV_TABLE[command];
  const missing = Object.entries(table)
    .filter(([name, need]) => need === 'req' && !env[name])
    .map(([name]) => name);
  if (missing.length) {
    throw new CniError(ErrorCode.InvalidEnvironment, `required env variables [${missing.join(',')}] missing`);
  }
  const containerID = env.CNI_CONTAINERID ?? '';
  const ifName = env.CNI_IFNAME ?? '';
  if (table.CNI_CONTAINERID && !CONTAINER_ID.test(containerID)) {
    throw new CniError(ErrorCode.InvalidEnvironment, 'invalid CNI_CONTAINERID', `"${containerID}" has invalid characters`);
  }
  if (table.CNI_CONTAINERID && containerID.length > MAX_CONTAINER_ID) {
    throw new CniError(ErrorCode.InvalidEnvironment, 'invalid CNI_CONTAINERID', `it is ${containerID.length} characters; at most ${MAX_CONTAINER_ID} (files are named after it; runtimes use 64)`);
  }
  if (table.CNI_IFNAME) validateIfName(ifName);
  const netns = env.CNI_NETNS ?? '';
  if (netns && table.CNI_NETNS && command !== 'DEL') refuseOwnNetns(netns, env);
  let args: CniArgs = [];
  let argsError: CniError | undefined;
  if (table.CNI_CONTAINERID && command === 'DEL') args = parseCniArgsLenient(env.CNI_ARGS);
  else if (table.CNI_CONTAINERID) {
    try {
      args = parseCniArgs(env.CNI_ARGS);
    } catch (err) {
      if (!pluginRefusesBadArgs || !(err instanceof CniError)) throw err;
      args = parseCniArgsLenient(env.CNI_ARGS);
      argsError = err;
    }
  }
  return {
    command,
    containerID: table.CNI_CONTAINERID ? containerID : '',
    netns: table.CNI_NETNS ? netns : '',
    ifName: table.CNI_IFNAME ? ifName : '',
    args,
    ...(argsError ? { argsError } : {}),
    path: (env.CNI_PATH ?? '').split(':').filter(Boolean),
  };
}

let ownNetns: Stats | undefined;

/** Plugins run in the runtime's netns; being handed our own netns is a runtime bug (libcni code 8). */
function refuseOwnNetns(netns: string, env: NodeJS.ProcessEnv): void {
  if (env.CNI_NETNS_OVERRIDE === '1' || env.CNI_NETNS_OVERRIDE === 'true') return;
  const target = statSync(netns, { throwIfNoEntry: false });
  // The process's own netns does not change (the main thread only visits others synchronously).
  ownNetns ??= statSync('/proc/self/ns/net', { throwIfNoEntry: false });
  const own = ownNetns;
  if (target && own && target.dev === own.dev && target.ino === own.ino) {
    throw new CniError(ErrorCode.InvalidNetNS, 'plugin running in the target netns', `CNI_NETNS ${netns} is the plugin's own network namespace`);
  }
}

export function parseStdinConf(stdin: Buffer, supported: readonly string[]): PluginStdinConf {
  const conf = validate<PluginStdinConf>('pluginStdin', decodeJson(stdin, 'network configuration'), ErrorCode.InvalidNetworkConfig, 'network configuration');
  if (conf.name !== undefined && !NETWORK_NAME.test(conf.name)) {
    throw new CniError(ErrorCode.InvalidNetworkConfig, 'invalid network name', `"${conf.name}" does not match ${NAME_PATTERN}`);
  }
  if (!supported.includes(conf.cniVersion)) {
    throw new CniError(ErrorCode.IncompatibleVersion, 'incompatible CNI versions', `config is "${conf.cniVersion}", plugin supports ${JSON.stringify(supported)}`);
  }
  return conf;
}

const MIN_VERSION: Partial<Record<CniCommand, string>> = { CHECK: '0.4.0', STATUS: '1.1.0', GC: '1.1.0' };

/** Runs one plugin invocation; returns the exit code. */
export async function runPlugin(plugin: Plugin, io: PluginIO): Promise<number> {
  const command = io.env.CNI_COMMAND ?? '';
  let cniVersion: string = CURRENT_VERSION;
  try {
    if (command === '') {
      io.stderr(`${plugin.about}\nCNI protocol versions supported: ${plugin.supportedVersions.join(', ')}\n`);
      return 0;
    }
    if (command === 'VERSION') return await answerVersion(plugin.supportedVersions, io);
    if (!(command in ENV_TABLE)) {
      throw new CniError(ErrorCode.InvalidEnvironment, `unknown CNI_COMMAND: ${command}`);
    }
    const cmd = command as Exclude<CniCommand, 'VERSION'>;
    const base = parseRequestEnv(io.env, cmd, plugin.refusesBadArgs);
    let stdin: Buffer;
    try {
      stdin = await io.readStdin();
    } catch (err) {
      throw new CniError(ErrorCode.IOFailure, 'error reading from stdin', (err as Error).message);
    }
    const conf = parseStdinConf(stdin, plugin.supportedVersions);
    cniVersion = conf.cniVersion;
    const min = MIN_VERSION[cmd];
    if (min && !versionAtLeast(conf.cniVersion, min)) {
      throw new CniError(ErrorCode.IncompatibleVersion, `config version does not allow ${cmd}`, `needs ${min} or later, config is "${conf.cniVersion}"`);
    }
    const req: PluginRequest = { ...base, stdin, conf, env: io.env };
    switch (cmd) {
      case 'ADD': {
        const result = await plugin.add(req);
        io.stdout(JSON.stringify(convertResult(result, conf.cniVersion)));
        return 0;
      }
      case 'DEL':
        await plugin.del(req);
        return 0;
      case 'CHECK':
        await plugin.check(req);
        return 0;
      case 'STATUS':
        await plugin.status?.(req);
        return 0;
      case 'GC':
        await plugin.gc?.(req);
        return 0;
    }
  } catch (err) {
    const e = CniError.from(err);
    io.stdout(JSON.stringify(e.toJSON(cniVersion)));
    return 1;
  }
  return 1;
}

/** Runs a plugin in this process on `stdin` and `env`, its output captured: how the daemon serves a request. */
export async function runPluginCaptured(plugin: Plugin, env: NodeJS.ProcessEnv, stdin: Buffer): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const exitCode = await runPlugin(plugin, { env, readStdin: async () => stdin, stdout: (t) => (stdout += t), stderr: (t) => (stderr += t) });
  return { exitCode, stdout, stderr };
}

/**
 * A plugin as an in-process delegate (CniRuntime's `inProcess`): stdout, or its error as a CniError.
 * What the host process decides (e.g. the SR-IOV host) is bound into `plugin`, not read from the
 * forwarded environment of a request.
 */
export function inProcessPlugin(plugin: Plugin): (stdin: string, env: NodeJS.ProcessEnv) => Promise<Buffer> {
  return async (stdin, env) => {
    const { exitCode: code, stdout, stderr } = await runPluginCaptured(plugin, env, Buffer.from(stdin));
    if (code === 0) return Buffer.from(stdout);
    throw decodePluginError(`${plugin.about} (in-process)`, `exit status ${code}`, Buffer.from(stdout), Buffer.from(stderr));
  };
}
