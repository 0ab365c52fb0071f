import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { repoRoot } from '../../src/sim/simnode.js';
import { plexusctlPath } from '../support/plugins.js';

interface Container {
  name: string;
  command?: string[];
  volumeMounts?: { name: string; mountPath: string }[];
  resources?: { limits?: { memory?: string } };
}
interface Manifest {
  kind: string;
  metadata: { name: string };
  rules?: { apiGroups: string[]; resources: string[]; verbs: string[] }[];
  spec?: { template: { spec: { containers: Container[]; initContainers?: Container[]; volumes: { name: string }[] } } };
}

const deployDir = join(repoRoot(), 'deploy');
const manifests = readdirSync(deployDir)
  .filter((f) => f.endsWith('.yaml'))
  .flatMap((f) => parseAllDocuments(readFileSync(join(deployDir, f), 'utf8')).map((d) => d.toJS() as Manifest));

describe('deploy manifests', () => {
  it('every plexusctl flag a container passes is one the command documents, and every path it names is mounted', () => {
    const daemonSets = manifests.filter((m) => m.kind === 'DaemonSet' || m.kind === 'Deployment');
    assert.ok(daemonSets.length >= 3);
    for (const ds of daemonSets) {
      const pod = ds.spec!.template.spec;
      const volumes = new Set(pod.volumes.map((v) => v.name));
      const flagOf = (sub: string, flag: string): string | undefined =>
        [...(pod.initContainers ?? []), ...pod.containers]
          .find((c) => c.command?.[1] === sub)
          ?.command?.find((a) => a.startsWith(`${flag}=`))
          ?.split('=')[1];
      if (flagOf('install', '--mode') === 'daemon') assert.equal(flagOf('install', '--daemon-socket'), flagOf('daemon', '--socket'), 'the shim is pointed at the socket the daemon serves');
      const daemon = pod.containers.find((c) => c.command?.[1] === 'daemon');
      if (daemon) {
        // The memory budget must answer "try again later" before the container's limit gets it OOM-killed.
        const limit = /^(\d+)Mi$/.exec(daemon.resources?.limits?.memory ?? '');
        assert.ok(limit, `${ds.metadata.name}: the daemon has a memory limit in Mi`);
        assert.ok(Number(flagOf('daemon', '--max-rss')) < Number(limit[1]) * 0.85, `--max-rss ${flagOf('daemon', '--max-rss')} MiB leaves headroom under the ${limit[1]}Mi limit`);
      }
      for (const c of [...(pod.initContainers ?? []), ...pod.containers]) {
        const [bin, sub, ...args] = c.command ?? [];
        if (bin !== 'plexusctl') continue;
        const help = execFileSync(plexusctlPath, [sub!, '--help']).toString();
        const mounts = c.volumeMounts ?? [];
        for (const m of mounts) assert.ok(volumes.has(m.name), `${c.name}: volume ${m.name} is declared`);
        for (const arg of args) {
          const [flag, value] = arg.split('=');
          assert.ok(help.includes(`${flag} `), `${ds.metadata.name}/${c.name}: plexusctl ${sub} documents ${flag}`);
          // Host paths the command reads or writes must come from a mount, not the image.
          // (--daemon-socket is only written into the conf, for the shim on the host: checked below.)
          if (value?.startsWith('/') && flag !== '--daemon-socket') {
            const dir = flag === '--socket' ? dirname(value) : value;
            // On a mounted volume, or a root that holds mounts (--sysfs-root=/host with /host/sys …).
            assert.ok(
              mounts.some((m) => dir === m.mountPath || dir.startsWith(`${m.mountPath}/`) || m.mountPath.startsWith(`${dir}/`)),
              `${c.name}: ${flag}=${value} is on a mounted volume`,
            );
          }
        }
      }
    }
  });

  it('the node daemon is allowed exactly the API calls it makes', () => {
    const role = manifests.find((m) => m.kind === 'ClusterRole' && m.metadata.name === 'plexus');
    const allowed = (group: string, resource: string, verb: string): boolean => !!role?.rules?.some((r) => r.apiGroups.includes(group) && r.resources.includes(resource) && r.verbs.includes(verb));
    for (const verb of ['get', 'list', 'watch']) {
      assert.ok(allowed('', 'pods', verb), `pods ${verb}`);
      assert.ok(allowed('k8s.cni.cncf.io', 'network-attachment-definitions', verb), `NADs ${verb}`);
    }
    assert.ok(allowed('', 'pods/status', 'patch'));
    assert.ok(allowed('', 'events', 'create'));
    assert.ok(!allowed('', 'pods', 'patch') && !allowed('', 'pods', 'update'), 'no write to pod specs');
    // IPAM: src/ipam/registry.ts's calls, and nothing that could take another node's chunk.
    for (const verb of ['get', 'create']) assert.ok(allowed('ipam.plexus.network', 'ippools', verb), `ippools ${verb}`);
    for (const verb of ['get', 'list', 'create']) assert.ok(allowed('ipam.plexus.network', 'ipchunks', verb), `ipchunks ${verb}`);
    assert.ok(!allowed('ipam.plexus.network', 'ipchunks', 'update') && !allowed('ipam.plexus.network', 'ipchunks', 'patch'), 'chunks are never rewritten');
    for (const verb of ['get', 'list', 'create', 'delete']) assert.ok(allowed('ipam.plexus.network', 'ipleases', verb), `ipleases ${verb}`);
    assert.ok(allowed('k8s.cni.cncf.io', 'ipamclaims', 'get') && allowed('k8s.cni.cncf.io', 'ipamclaims/status', 'patch'));
    // DRA: src/meta/claims.ts reads the pod's claims and the node's slices, and applies network data to
    // claims allocated on its own node only.
    assert.ok(allowed('resource.k8s.io', 'resourceclaims', 'get') && allowed('resource.k8s.io', 'resourceslices', 'list'));
    assert.ok(allowed('resource.k8s.io', 'resourceclaims/status', 'patch') && allowed('resource.k8s.io', 'resourceclaims/driver', 'associated-node:patch'));
    assert.ok(!allowed('resource.k8s.io', 'resourceclaims/driver', 'arbitrary-node:patch'), "never another node's claims");
    assert.ok(!allowed('resource.k8s.io', 'resourceclaims', 'patch') && !allowed('resource.k8s.io', 'resourceslices', 'create'), 'no claim specs, no slices');
    // The IPAM housekeeping leader (src/ipam/housekeeping.ts): the Nodes' names watched, its Lease in the
    // daemon's namespace only (a Role, not cluster-wide), never deleted.
    for (const verb of ['list', 'watch']) assert.ok(allowed('', 'nodes', verb), `nodes ${verb}`);
    const leases = manifests.find((m) => m.kind === 'Role' && m.metadata.name === 'plexus-leases');
    assert.equal((leases?.metadata as { namespace?: string } | undefined)?.namespace, 'kube-system');
    assert.deepEqual(leases?.rules, [{ apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['get', 'create', 'update'] }]);
    const binding = manifests.find((m) => m.kind === 'RoleBinding' && m.metadata.name === 'plexus-leases') as { subjects?: { name: string }[] } | undefined;
    assert.deepEqual(
      binding?.subjects?.map((x) => x.name),
      ['plexus'],
    );
    assert.ok(!role?.rules?.some((r) => r.resources.includes('leases')), 'no cluster-wide Lease rights');
  });

  it('the DRA driver is allowed exactly the API calls it makes', () => {
    const role = manifests.find((m) => m.kind === 'ClusterRole' && m.metadata.name === 'plexus-dra-driver');
    const allowed = (group: string, resource: string, verb: string): boolean => !!role?.rules?.some((r) => r.apiGroups.includes(group) && r.resources.includes(resource) && r.verbs.includes(verb));
    // src/dra/slices.ts's SlicePublisher, src/dra/driver.ts's claim read, the Node as the slices' owner.
    for (const verb of ['list', 'create', 'update', 'delete']) assert.ok(allowed('resource.k8s.io', 'resourceslices', verb), `resourceslices ${verb}`);
    assert.ok(allowed('resource.k8s.io', 'resourceclaims', 'get') && allowed('', 'nodes', 'get'));
    assert.ok(
      role!.rules!.every((r) => !r.resources.some((x) => x.startsWith('resourceclaims/'))),
      'claims are only read',
    );
    const ds = manifests.find((m) => m.kind === 'DaemonSet' && m.metadata.name === 'plexus-dra-driver');
    assert.equal((ds?.spec?.template.spec as { serviceAccountName?: string }).serviceAccountName, 'plexus-dra-driver');
  });

  it('the webhook never blocks the cluster: Fail only for pods that select networks and NADs, short timeouts, two replicas kept by a PDB', () => {
    interface Hook {
      name: string;
      failurePolicy: string;
      timeoutSeconds: number;
      rules: { resources: string[]; operations: string[] }[];
      namespaceSelector?: { matchExpressions: { key: string; operator: string; values: string[] }[] };
      matchConditions?: { name: string; expression: string }[];
    }
    const hooks = manifests.filter((m) => m.kind.endsWith('WebhookConfiguration')).flatMap((m) => (m as unknown as { webhooks: Hook[] }).webhooks);
    assert.equal(hooks.length, 3);
    for (const h of hooks) {
      assert.equal(h.failurePolicy, 'Fail', h.name);
      assert.ok(h.timeoutSeconds <= 5, `${h.name}: timeout ≤ 5 s`);
      if (h.rules.some((r) => r.resources.includes('pods'))) {
        assert.ok(
          h.matchConditions?.some((c) => c.expression.includes("'k8s.v1.cni.cncf.io/networks' in object.metadata.annotations")),
          `${h.name}: only pods with a networks annotation`,
        );
        const excluded = h.namespaceSelector?.matchExpressions.find((e) => e.key === 'kubernetes.io/metadata.name' && e.operator === 'NotIn')?.values ?? [];
        assert.deepEqual(excluded.sort(), ['kube-system', 'plexus-system'], `${h.name}: system namespaces excluded`);
      }
    }
    const deployment = manifests.find((m) => m.kind === 'Deployment' && m.metadata.name === 'plexus-webhook') as unknown as {
      spec: { replicas: number; template: { spec: { affinity?: { podAntiAffinity?: unknown } } } };
    };
    assert.equal(deployment.spec.replicas, 2);
    assert.ok(deployment.spec.template.spec.affinity?.podAntiAffinity, 'replicas spread over nodes');
    assert.ok(manifests.some((m) => m.kind === 'PodDisruptionBudget' && m.metadata.name === 'plexus-webhook'));
    // Answers from its informers: it may not read pods at all.
    const role = manifests.find((m) => m.kind === 'ClusterRole' && m.metadata.name === 'plexus-webhook');
    assert.ok(
      role?.rules?.every((r) => !r.resources.includes('pods')),
      'no access to pods',
    );
  });
});
