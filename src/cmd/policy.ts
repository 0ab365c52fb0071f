/** `plexusctl policy explain POD`: the rules a pod's interfaces get from MultiNetworkPolicies, and which policy put each there. */
import { request } from 'node:http';
import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import { ApiClient } from '../k8s/client.js';
import { inClusterConfig, loadKubeconfig } from '../k8s/kubeconfig.js';
import { listAll } from '../ipam/registry.js';
import { type AllowLine, type InterfaceRules, rulesForPod, worldOf } from '../policy/compute.js';
import { MNP_GROUP, MNP_PLURAL, type MultiNetworkPolicy, parsePolicy, parsePolicyNamespace, parsePolicyPod } from '../policy/model.js';
import { DEFAULT_DAEMON_SOCKET } from '../daemon/protocol.js';
import { emit } from './cni.js';

function describeLine(l: AllowLine, dir: 'ingress' | 'egress'): string {
  const peer = l.addrs ? `${dir === 'ingress' ? 'from' : 'to'} ${l.addrs.join(' ')}${l.except ? ` except ${l.except.join(' ')}` : ''}` : `${dir === 'ingress' ? 'from' : 'to'} anywhere`;
  const port = l.protocol ? `${l.protocol.toLowerCase()}${l.ports ? ` ${l.ports.join(',')}` : ''}` : 'any protocol';
  return `${l.origin}  ${peer}  ${port}`;
}

/** Asks the node daemon (its unix socket, on the pod's node) for what it installed. */
function installed(socket: string, namespace: string, name: string): Promise<{ containerID: string; table: string }[] | undefined> {
  if (!existsSync(socket)) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    const req = request({ socketPath: socket, path: `/debug/policy?${new URLSearchParams({ namespace, name })}`, timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => {
        try {
          resolve(res.statusCode === 200 ? (JSON.parse(body) as { containerID: string; table: string }[]) : undefined);
        } catch {
          resolve(undefined);
        }
      });
    });
    req.on('error', () => resolve(undefined));
    req.end();
  });
}

export function registerPolicy(program: Command): void {
  const policy = program.command('policy').description('MultiNetworkPolicy as Plexus enforces it (docs/policy.md)');
  policy
    .command('explain <pod>')
    .description("a pod's interfaces (NAMESPACE/NAME), whether policy isolates each per direction, the rules it gets and the policy rule each comes from")
    .option('--network <nad>', 'only the interface on this NAD (name or namespace/name)')
    .option('--kubeconfig <file>', 'kubeconfig (default: in-cluster credentials)')
    .option('--socket <path>', "the node daemon's socket: on the pod's node, the tables it installed are shown too", DEFAULT_DAEMON_SOCKET)
    .option('-o, --output <format>', 'text or json', 'text')
    .action((podRef: string, o: { network?: string; kubeconfig?: string; socket: string; output: string }) =>
      emit(async () => {
        const [namespace, name] = podRef.includes('/') ? podRef.split('/') : ['default', podRef];
        const cfg = o.kubeconfig ? await loadKubeconfig(o.kubeconfig) : inClusterConfig(process.env);
        if (!cfg) throw new Error('no API credentials: --kubeconfig, or run in a pod');
        const api = new ApiClient(cfg, 30_000);
        const group = await api.get<{ versions?: { version: string }[] }>(`/apis/${MNP_GROUP}`).catch(() => ({ versions: [] }));
        const version = group.versions?.some((v) => v.version === 'v1beta2') ? 'v1beta2' : 'v1beta1';
        const refused: string[] = [];
        const policies = (await listAll(api, `/apis/${MNP_GROUP}/${version}/${MNP_PLURAL}`).catch(() => [])).flatMap((raw): MultiNetworkPolicy[] => {
          try {
            return [parsePolicy(raw)];
          } catch (err) {
            refused.push((err as Error).message);
            return [];
          }
        });
        const pods = (await listAll(api, '/api/v1/pods')).map(parsePolicyPod);
        const namespaces = (await listAll(api, '/api/v1/namespaces')).map(parsePolicyNamespace);
        const pod = pods.find((p) => p.namespace === namespace && p.name === name);
        if (!pod) throw new Error(`no pod ${namespace}/${name}`);
        const network = o.network && !o.network.includes('/') ? `${namespace}/${o.network}` : o.network;
        const rules = rulesForPod(worldOf(policies, pods, namespaces), pod);
        const interfaces = pod.networks
          .filter((n) => !network || n.network === network)
          .map((n) => rules.find((r) => r.network === n.network && r.ifName === n.ifName) ?? ({ ifName: n.ifName ?? '?', network: n.network } as InterfaceRules));
        const tables = await installed(o.socket, namespace!, name!);
        if (o.output === 'json') return { pod: `${namespace}/${name}`, interfaces, ...(tables ? { installed: tables } : {}), ...(refused.length ? { refused } : {}) };
        const lines = [`pod ${namespace}/${name}${pod.nodeName ? ` (node ${pod.nodeName})` : ''}`];
        if (!pod.networks.length) lines.push('  no NAD attachments in its network-status');
        for (const iface of interfaces) {
          if (!iface.ingress && !iface.egress) {
            lines.push(`  ${iface.ifName} (${iface.network}): open (no policy for this network selects the pod)`);
            continue;
          }
          lines.push(`  ${iface.ifName} (${iface.network}):`);
          for (const dir of ['ingress', 'egress'] as const) {
            const r = iface[dir];
            if (!r) lines.push(`    ${dir}: open`);
            else {
              lines.push(`    ${dir}: isolated by ${r.policies.join(', ')}; ${r.allow.length ? 'allowed:' : 'nothing allowed'}`);
              for (const l of r.allow) lines.push(`      ${describeLine(l, dir)}`);
            }
          }
        }
        for (const t of tables ?? [])
          lines.push(
            `installed in sandbox ${t.containerID.slice(0, 12)}:`,
            ...(t.table
              ? t.table
                  .trimEnd()
                  .split('\n')
                  .map((l) => `  ${l}`)
              : ['  (no table)']),
          );
        for (const r of refused) lines.push(`refused policy: ${r}`);
        process.stdout.write(`${lines.join('\n')}\n`);
        return undefined;
      }),
    );
}
