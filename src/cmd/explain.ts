/**
 * `plexusctl explain`: what the meta plugin would do for a pod, without doing it. The same planning
 * code as ADD runs (annotations, NAD resolution, capability checks, devices); nothing is executed
 * and nothing on the node changes.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { formatCniArgs, withIgnoreUnknown } from '../cni/args.js';
import { decodeJson, parseNetworkConfig } from '../cni/conf.js';
import { CniError, ErrorCode } from '../cni/errors.js';
import { buildPluginConf, runtimeConfigFor } from '../cni/runtime.js';
import type { PluginRequest, PluginStdinConf } from '../cni/skel.js';
import type { Pod } from '../k8s/types.js';
import { MetaInvocation } from '../meta/invocation.js';
import { planAttachments } from '../meta/plan.js';
import { emit } from './cni.js';

interface ExplainOptions {
  conf: string;
  netns: string;
  containerId: string;
  output: 'json' | 'table';
}

/** The meta plugin's own conf from a .conf or the first plugin of a .conflist. */
function metaConfFrom(path: string): PluginStdinConf {
  const list = parseNetworkConfig(readFileSync(path), path);
  const plugin = list.plugins.find((p) => p.type === 'plexus') ?? list.plugins[0]!;
  return { ...plugin, cniVersion: list.cniVersion, name: list.name } as PluginStdinConf;
}

export async function explain(podArg: string, o: ExplainOptions): Promise<Record<string, unknown>> {
  const base = metaConfFrom(o.conf);
  let namespace: string;
  let name: string;
  let uid = '';
  const conf: PluginStdinConf = { ...base };
  if (podArg === '-' || podArg.endsWith('.json')) {
    const pod = decodeJson(readFileSync(podArg === '-' ? 0 : podArg), 'pod JSON') as Pod;
    if (!pod?.metadata?.name) throw new CniError(ErrorCode.DecodingFailure, 'not a pod', 'metadata.name is missing');
    ({ name } = pod.metadata);
    namespace = pod.metadata.namespace ?? 'default';
    uid = pod.metadata.uid ?? '';
    // As containerd passes them: no API read for the annotations.
    conf.runtimeConfig = { 'io.kubernetes.cri.pod-annotations': pod.metadata.annotations ?? {} };
  } else {
    const parts = podArg.split('/');
    if (parts.length !== 2 || !parts[0] || !parts[1]) throw new CniError(ErrorCode.InvalidEnvironment, 'invalid pod', `"${podArg}" is neither NAMESPACE/NAME nor a .json file`);
    [namespace, name] = parts as [string, string];
  }
  const args: [string, string][] = [
    ['K8S_POD_NAMESPACE', namespace],
    ['K8S_POD_NAME', name],
    ['K8S_POD_INFRA_CONTAINER_ID', o.containerId],
    ['K8S_POD_UID', uid],
  ];
  const req: PluginRequest = { command: 'ADD', containerID: o.containerId, netns: o.netns, ifName: 'eth0', args, path: [], stdin: Buffer.alloc(0), conf, env: process.env };
  const inv = new MetaInvocation(req);
  const { attachments } = await planAttachments(inv);
  return {
    pod: `${namespace}/${name}`,
    attachments: attachments.map((a) => {
      const list = inv.delegateList(a);
      const rt = inv.runtimeConf(a.ifName, a.capabilityArgs);
      return {
        network: a.network,
        ifName: a.ifName,
        default: a.isDefault,
        ...(a.deviceID ? { deviceID: a.deviceID } : {}),
        ...(a.deviceInfoFile && a.capabilityArgs.CNIDeviceInfoFile ? { deviceInfoFile: a.deviceInfoFile } : {}),
        env: {
          CNI_COMMAND: 'ADD',
          CNI_CONTAINERID: o.containerId,
          CNI_NETNS: o.netns,
          CNI_IFNAME: a.ifName,
          CNI_ARGS: formatCniArgs(withIgnoreUnknown(args)),
          CNI_PATH: [inv.conf.binDir, '<the runtime CNI_PATH>'].join(':'),
        },
        delegates: list.plugins.map((p) => ({
          type: p.type,
          runtimeConfig: runtimeConfigFor(p, rt.capabilityArgs),
          // The first plugin's stdin exactly; later ones also get the previous result as prevResult.
          stdin: buildPluginConf(list, p, rt, undefined),
        })),
      };
    }),
  };
}

function table(out: Record<string, unknown>): string {
  const rows = (out.attachments as { network: string; ifName: string; default: boolean; deviceID?: string; delegates: { type: string; runtimeConfig: Record<string, unknown> }[] }[]).map((a) => [
    a.ifName,
    a.network + (a.default ? ' (default)' : ''),
    a.delegates.map((d) => d.type).join(' → '),
    Object.keys(Object.assign({}, ...a.delegates.map((d) => d.runtimeConfig)) as object).join(',') || '-',
    a.deviceID ?? '-',
  ]);
  const header = ['IFNAME', 'NETWORK', 'PLUGINS', 'RUNTIMECONFIG', 'DEVICE'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [header, ...rows]
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export function registerExplain(program: Command): void {
  program
    .command('explain <pod>')
    .description('dry run: the delegates, interface names, env, runtimeConfig and devices a pod (NAMESPACE/NAME, or a pod .json file, - for stdin) would get')
    .requiredOption('--conf <file>', "the node's plexus conf (.conf or .conflist)")
    .option('--netns <path>', 'netns path to show in the env', '/var/run/netns/<sandbox>')
    .option('--container-id <id>', 'sandbox ID to show in the env', '<sandbox-id>')
    .option('-o, --output <format>', 'json or table', 'table')
    .action((pod: string, o: ExplainOptions) =>
      emit(async () => {
        const out = await explain(pod, o);
        if (o.output === 'json') return out;
        process.stdout.write(`${table(out)}\n`);
        return undefined;
      }),
    );
}
