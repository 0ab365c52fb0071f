/** `plexusctl cni …`: a cnitool equivalent over the runtime side of src/cni. */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { parseCniArgs } from '../cni/args.js';
import { decodeJson, loadNetwork } from '../cni/conf.js';
import { CniError, ErrorCode } from '../cni/errors.js';
import { CniRuntime, type RuntimeConf } from '../cni/runtime.js';
import { validateIfName } from '../cni/skel.js';
import { type Attachment, SUPPORTED_VERSIONS } from '../cni/types.js';

interface CommonOptions {
  confDir: string;
  cniPath: string;
  cacheDir: string;
}
interface AttachOptions extends CommonOptions {
  containerId?: string;
  ifname: string;
  args?: string;
  capArgs?: string;
}

/** A bare netns name means one made by `ip netns add`. */
export function netnsPath(arg: string): string {
  return arg.includes('/') ? arg : `/var/run/netns/${arg}`;
}

/** cnitool's container ID scheme, with our own prefix. */
export function defaultContainerId(netns: string): string {
  return `plexusctl-${createHash('sha512').update(netns).digest('hex').slice(0, 20)}`;
}

function runtimeFor(o: CommonOptions): CniRuntime {
  return new CniRuntime({ cniPath: o.cniPath.split(':').filter(Boolean), cacheDir: o.cacheDir });
}

function runtimeConf(netns: string, o: AttachOptions): RuntimeConf {
  validateIfName(o.ifname);
  let capabilityArgs: Record<string, unknown> = {};
  if (o.capArgs) {
    const parsed = decodeJson(o.capArgs, '--cap-args');
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new CniError(ErrorCode.DecodingFailure, 'failed to decode --cap-args', 'expected a JSON object');
    }
    capabilityArgs = parsed as Record<string, unknown>;
  }
  return {
    containerID: o.containerId ?? defaultContainerId(netns),
    netns,
    ifName: o.ifname,
    args: parseCniArgs(o.args),
    capabilityArgs,
  };
}

function requireNetns(path: string): void {
  if (!existsSync(path)) throw new CniError(ErrorCode.UnknownContainer, 'network namespace does not exist', path);
}

function parseValid(values: string[]): Attachment[] {
  return values.map((v) => {
    const at = v.lastIndexOf('/');
    if (at <= 0 || at === v.length - 1) throw new CniError(ErrorCode.InvalidEnvironment, 'invalid --valid', `"${v}" is not CONTAINERID/IFNAME`);
    return { containerID: v.slice(0, at), ifname: v.slice(at + 1) };
  });
}

/** Prints JSON output and sets the exit code; errors as a plugin prints them. */
export async function emit(work: () => Promise<unknown>): Promise<void> {
  try {
    const out = await work();
    if (out !== undefined) process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  } catch (err) {
    process.stdout.write(`${JSON.stringify(CniError.from(err).toJSON(), null, 2)}\n`);
    process.exitCode = 1;
  }
}

export function registerCni(program: Command): void {
  const cni = program.command('cni').description('run CNI networks from a conf dir, as a runtime does (cnitool equivalent)');
  const common = (c: Command): Command =>
    c
      .option('--conf-dir <dir>', 'network configuration directory', process.env.NETCONFPATH ?? '/etc/cni/net.d')
      .option('--cni-path <dirs>', 'plugin directories, colon separated', process.env.CNI_PATH ?? '/opt/cni/bin:/usr/lib/cni')
      .option('--cache-dir <dir>', 'result cache directory (libcni format)', '/var/lib/cni');
  const attach = (c: Command): Command =>
    common(c)
      .option('--container-id <id>', 'container ID (default: derived from the netns path)')
      .option('--ifname <name>', 'interface name in the container', process.env.CNI_IFNAME ?? 'eth0')
      .option('--args <K=V;…>', 'CNI_ARGS', process.env.CNI_ARGS)
      .option('--cap-args <json>', 'capability arguments (runtimeConfig), a JSON object', process.env.CAP_ARGS);

  attach(cni.command('add <network> <netns>').description('attach NETWORK to the netns and print the result')).action((network: string, ns: string, o: AttachOptions) =>
    emit(async () => {
      const path = netnsPath(ns);
      requireNetns(path);
      return runtimeFor(o).addNetworkList(loadNetwork(o.confDir, network), runtimeConf(path, o));
    }),
  );
  attach(cni.command('check <network> <netns>').description('CHECK an attachment against its cached result')).action((network: string, ns: string, o: AttachOptions) =>
    emit(async () => {
      const path = netnsPath(ns);
      requireNetns(path);
      await runtimeFor(o).checkNetworkList(loadNetwork(o.confDir, network), runtimeConf(path, o));
    }),
  );
  attach(cni.command('del <network> <netns>').description('detach NETWORK (idempotent; the netns may be gone)')).action((network: string, ns: string, o: AttachOptions) =>
    emit(async () => {
      const path = netnsPath(ns);
      const rt = runtimeConf(path, o);
      // DEL is allowed after the netns is gone: plugins then release what they hold (IPAM).
      if (!existsSync(path)) rt.netns = '';
      await runtimeFor(o).delNetworkList(loadNetwork(o.confDir, network), rt);
    }),
  );
  common(cni.command('status <network>').description('STATUS of every plugin in the network (CNI 1.1.0)')).action((network: string, o: CommonOptions) =>
    emit(async () => {
      await runtimeFor(o).statusNetworkList(loadNetwork(o.confDir, network));
    }),
  );
  common(cni.command('gc <network>').description('remove cached attachments not listed as valid, then GC every plugin'))
    .option('--valid <cid/ifname...>', 'attachments to keep', [])
    .action((network: string, o: CommonOptions & { valid: string[] }) =>
      emit(async () => {
        await runtimeFor(o).gcNetworkList(loadNetwork(o.confDir, network), parseValid(o.valid));
      }),
    );
  common(cni.command('version [network]').description("Plexus's CNI versions, or the version chosen for NETWORK and each plugin's VERSION reply")).action(
    (network: string | undefined, o: CommonOptions) =>
      emit(async () => {
        if (!network) return { cniVersion: SUPPORTED_VERSIONS.at(-1), supportedVersions: SUPPORTED_VERSIONS };
        const list = loadNetwork(o.confDir, network);
        return { network: list.name, cniVersion: list.cniVersion, plugins: await runtimeFor(o).versionInfo(list) };
      }),
  );
}
