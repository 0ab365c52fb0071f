/**
 * `plexusctl explain`: what the meta plugin would do for a pod, without doing it. The same planning
 * code as ADD runs (annotations, NAD resolution, capability checks, devices); nothing is executed
 * and nothing on the node changes.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { parse as parseYaml } from 'yaml';
import { formatCniArgs, withIgnoreUnknown } from '../cni/args.js';
import { decodeJson, parseNetworkConfig } from '../cni/conf.js';
import { CniError, ErrorCode } from '../cni/errors.js';
import { buildPluginConf, runtimeConfigFor } from '../cni/runtime.js';
import type { PluginRequest, PluginStdinConf } from '../cni/skel.js';
import type { NetworkAttachmentDefinition, Pod } from '../k8s/types.js';
import { MetaInvocation } from '../meta/invocation.js';
import { planAttachments } from '../meta/plan.js';
import { Admission } from '../webhook/admission.js';
import type { JsonPatchOp } from '../webhook/inject.js';
import { applyJsonPatch } from '../webhook/jsonpatch.js';
import { parsePodView } from '../webhook/pod.js';
import type { Catalog, Verdict } from '../webhook/validate.js';
import { textTable } from '../util/table.js';
import { emit } from './cni.js';

/**
 * The admission webhooks' answer on the pod, from the same code (mutate, then validate what the API
 * server would store), with the NADs read as the plugin reads them: the API of --kubeconfig or the
 * conf's, or without one, the node's conf files.
 */
async function admissionVerdict(inv: MetaInvocation, podObject: unknown, namespace: string): Promise<Verdict & { patch: JsonPatchOp[] }> {
  const pod = parsePodView(podObject, namespace);
  const withoutApi = !(await inv.apiClient());
  const nads = new Map<string, NetworkAttachmentDefinition | undefined>();
  const catalog: Catalog = {
    nad: (ns, name) => nads.get(`${ns}/${name}`),
    // Read on a miss, as the webhook's catalog does.
    fetchNad: async (ns, name) => {
      const onDisk = withoutApi && ['.conflist', '.conf', '.json'].some((ext) => existsSync(join(inv.conf.confDir, name + ext)));
      // Without an API the plugin takes the node's conf file of that name: a NAD without spec.config, as the webhook sees one.
      nads.set(`${ns}/${name}`, (await inv.getNad(ns, name)) ?? (onDisk ? { metadata: { name, namespace: ns } } : undefined));
    },
    ipamClaim: () => undefined,
    largestAllocatable: () => undefined,
  };
  const c = inv.conf;
  const policy = {
    namespaceIsolation: c.namespaceIsolation,
    globalNamespaces: c.globalNamespaces,
    multusNamespace: c.multusNamespace,
    attachmentsBefore: 1 + Math.max(0, (c.delegates?.length ?? 1) - 1) + (c.systemNamespaces.includes(namespace) ? 0 : c.defaultNetworks.length),
    missingNad: 'deny',
  } as const;
  const admission = new Admission(catalog, policy, () => ({ userInjections: new Map(), podNetInfo: true, hugepages: false }));
  const patch = await admission.podPatch(pod);
  const stored = parsePodView(applyJsonPatch(pod.raw, patch), namespace);
  return { ...(await admission.judgePod(stored)), patch };
}

interface ExplainOptions {
  conf: string;
  kubeconfig?: string;
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
  const conf: PluginStdinConf = { ...base, ...(o.kubeconfig ? { kubeconfig: o.kubeconfig } : {}) };
  let podObject: unknown;
  if (podArg === '-' || /\.(json|ya?ml)$/.test(podArg)) {
    const text = readFileSync(podArg === '-' ? 0 : podArg);
    const pod = (podArg.endsWith('.json') ? decodeJson(text, 'pod JSON') : parsePodYaml(text)) as Pod;
    podObject = pod;
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
  const admission = await admissionVerdict(inv, podObject ?? (await inv.getPod()), namespace);
  // A pod the webhook would deny never reaches a node: nothing to plan.
  const { attachments } = admission.denials.length ? { attachments: [] } : await planAttachments(inv);
  return {
    pod: `${namespace}/${name}`,
    admission: { allowed: admission.denials.length === 0, ...admission },
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

/** A pod manifest in YAML (JSON is YAML too); the first document. */
function parsePodYaml(text: Buffer): unknown {
  try {
    return parseYaml(text.toString('utf8')) as unknown;
  } catch (err) {
    throw new CniError(ErrorCode.DecodingFailure, 'failed to decode pod YAML', (err as Error).message);
  }
}

function admissionLines(a: { allowed: boolean; denials: string[]; warnings: string[] }): string {
  return [a.allowed ? 'admission: allowed' : 'admission: DENIED', ...a.denials.map((d) => `  denied: ${d}`), ...a.warnings.map((w) => `  warning: ${w}`)].join('\n');
}

function table(out: Record<string, unknown>): string {
  const rows = (out.attachments as { network: string; ifName: string; default: boolean; deviceID?: string; delegates: { type: string; runtimeConfig: Record<string, unknown> }[] }[]).map((a) => [
    a.ifName,
    a.network + (a.default ? ' (default)' : ''),
    a.delegates.map((d) => d.type).join(' → '),
    Object.keys(Object.assign({}, ...a.delegates.map((d) => d.runtimeConfig)) as object).join(',') || '-',
    a.deviceID ?? '-',
  ]);
  return textTable(['IFNAME', 'NETWORK', 'PLUGINS', 'RUNTIMECONFIG', 'DEVICE'], rows);
}

export function registerExplain(program: Command): void {
  program
    .command('explain <pod>')
    .description(
      "dry run: the admission webhook's verdict on a pod (NAMESPACE/NAME, or a pod .yaml/.json file, - for stdin), then the delegates, interface names, env, runtimeConfig and devices it would get",
    )
    .requiredOption('--conf <file>', "the node's plexus conf (.conf or .conflist)")
    .option('--kubeconfig <file>', "read the pod and its NADs with this kubeconfig instead of the conf's")
    .option('--netns <path>', 'netns path to show in the env', '/var/run/netns/<sandbox>')
    .option('--container-id <id>', 'sandbox ID to show in the env', '<sandbox-id>')
    .option('-o, --output <format>', 'json or table', 'table')
    .action((pod: string, o: ExplainOptions) =>
      emit(async () => {
        const out = await explain(pod, o);
        // Denied is an answer, not a failure of explain; the exit status still says it, for scripts.
        if (!(out.admission as { allowed: boolean }).allowed) process.exitCode = 1;
        if (o.output === 'json') return out;
        const admission = out.admission as { allowed: boolean; denials: string[]; warnings: string[] };
        process.stdout.write(`${admissionLines(admission)}\n${admission.allowed ? `${table(out)}\n` : ''}`);
        return undefined;
      }),
    );
}
