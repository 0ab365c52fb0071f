/**
 * The real node: etcd, kube-apiserver, controller-manager, scheduler and kubelet built from pinned Go
 * modules (scripts/build-cluster.sh), kubelet on a private containerd. Plexus is installed as a platform
 * team installs it (CRDs and RBAC with kubectl, a ServiceAccount token, plexusctl install into the
 * runtime's CNI dirs) and pods go scheduler → kubelet → containerd → plexus → delegates.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parse, parseAllDocuments, stringify } from 'yaml';
import { ApiClient, ApiError } from '../../src/k8s/client.js';
import { Informer } from '../../src/k8s/informer.js';
import { keptNad } from '../../src/daemon/cache.js';
import { type ApiConfig, loadKubeconfig } from '../../src/k8s/kubeconfig.js';
import { AttachmentStore } from '../../src/meta/store.js';
import { CLUSTER_PORTS, LocalCluster, kubeletCgroups } from '../../src/sim/cluster.js';
import { buildPlexusImage, importImage } from '../../src/sim/image.js';
import { deployManifest } from './daemonset.js';
import { describeWebhook } from './webhook.js';
import { type Kubectl, kubectlFor, preparePlexus } from '../../src/sim/cluster-plexus.js';
import { ContainerdRig } from '../../src/sim/containerd.js';
import { ApiServerDouble } from '../../src/sim/apiserver.js';
import { EXAMPLE_LINKS, addExampleLinks, exampleDocs, podEnv, repoRoot, simulatedSriovPlugin } from '../../src/sim/simnode.js';
import { FakeKernel } from '../../src/sim/fakekernel.js';
import { discover } from '../../src/sriov/discover.js';
import { hostLocalReservations } from '../../src/sim/hostlocal.js';
import { KubeletDouble } from '../../src/sim/kubelet.js';
import { podDevicesFromKubelet } from '../../src/k8s/podresources.js';
import { unary } from '../../src/util/grpc-unary.js';
import { pollUntil } from '../../src/util/poll.js';
import { startDaemon, stopDaemon } from '../support/daemon.js';
import { plexusctlPath } from '../support/plugins.js';
import { ProbeAgent } from '../support/probes.js';
import { Rig, ipAddresses, ipJson, linkExists, listNetns } from '../support/rig.js';

const STATUS = 'k8s.v1.cni.cncf.io/network-status';
/** Where deploy/plexus-daemon.yaml has the daemon serve the shim (the same path inside and out: the conf names it). */
const DAEMONSET_SOCKET = '/run/plexus/plexus.sock';
/** The bridge of the bridge + tuning chain NAD. */
const TUNED_BRIDGE = 'plx-br-t';
/** The bridge of the network policy case. */
const POLICY_BRIDGE = 'plx-br-pol';

interface PodJson {
  metadata: { name: string; namespace: string; uid: string; annotations?: Record<string, string> };
  status?: { phase?: string };
}

/** A NetworkAttachmentDefinition named after its conf. */
const nadDoc = (namespace: string, config: { name: string } & Record<string, unknown>) => ({
  apiVersion: 'k8s.cni.cncf.io/v1',
  kind: 'NetworkAttachmentDefinition',
  metadata: { name: config.name, namespace },
  spec: { config: JSON.stringify(config) },
});

describe('the real node (kube-apiserver, etcd, controller-manager, scheduler, kubelet v1.37 from pinned Go modules)', function () {
  this.timeout(600_000);
  const rig = new Rig();
  let cluster: LocalCluster;
  let dir: string;
  let plexusKubeconfig: string;
  const netnsBefore = listNetns();
  let kubectl: Kubectl;
  const getPod = async (name: string): Promise<PodJson | undefined> => {
    try {
      return JSON.parse(await kubectl(['get', 'pod', name, '-o', 'json'])) as PodJson;
    } catch {
      return undefined;
    }
  };
  const until = <T>(what: string, probe: () => Promise<T | undefined | false>, ms = 60_000): Promise<T> => pollUntil(what, probe, ms);

  /** The pod of one of deploy/'s DaemonSets (label app=<app>) on this one node, if there is one. */
  const daemonSetPod = async (app: string): Promise<{ status: { phase?: string; containerStatuses?: { ready: boolean; restartCount: number }[] } } | undefined> =>
    (
      JSON.parse(await kubectl(['get', 'pods', '-n', 'kube-system', '-l', `app=${app}`, '-o', 'json'])) as {
        items: { status: { phase?: string; containerStatuses?: { ready: boolean; restartCount: number }[] } }[];
      }
    ).items[0];

  /** A pod's container logs, from kubelet's pod log dir (kubectl logs needs a node address this loopback node does not report). */
  const podLogs = (prefix: string): string => {
    const logDir = join(dir, 'cluster', 'pod-logs');
    return readdirSync(logDir)
      .filter((d) => d.startsWith(prefix))
      .flatMap((d) => readdirSync(join(logDir, d)).map((c) => `${c}: ${execFileSync('sh', ['-c', `tail -n 30 ${join(logDir, d, c)}/*.log`], { encoding: 'utf8' })}`))
      .join('\n');
  };

  before(async () => {
    dir = rig.dir('realnode');
    cluster = new LocalCluster({ dir: join(dir, 'cluster'), log: (l) => process.stderr.write(`      cluster: ${l}\n`) });
    await cluster.up();
    kubectl = kubectlFor(cluster);
    addExampleLinks();
    // As a platform team installs it: the CRDs and Plexus's RBAC with kubectl, a ServiceAccount token.
    plexusKubeconfig = await preparePlexus(cluster, kubectl, dir);
    // The image deploy/'s DaemonSets run, built as the pause image is (plexusctl image), in the node's containerd.
    const image = buildPlexusImage(repoRoot(), dir);
    assert.equal(image.name, 'docker.io/library/plexus:dev', 'the name kubelet resolves plexus:dev to');
    importImage(cluster.containerdSocket, image.tar);
  });

  after(async () => {
    await cluster?.down();
    for (const l of [EXAMPLE_LINKS.macvlanMaster, EXAMPLE_LINKS.vf, EXAMPLE_LINKS.bridgeB, TUNED_BRIDGE, POLICY_BRIDGE]) if (linkExists(l)) execFileSync('ip', ['link', 'del', l]);
    rig.cleanup();
    // Nothing of the cluster is left: processes, mounts, cgroups, netns.
    assert.deepEqual(
      readFileSync('/proc/mounts', 'utf8')
        .split('\n')
        .filter((m) => m.includes(dir)),
      [],
      'no mount left',
    );
    assert.deepEqual(kubeletCgroups(), [], 'no kubepods cgroup left');
    assert.deepEqual(listNetns().sort(), netnsBefore.sort(), 'no netns left');
    assert.equal(existsSync(join(dir, 'cluster')), false);
  });

  describe('API contract: the double and the real API server answer alike', () => {
    /** The same requests against both; each returns what the test compares. */
    /** Every event of one watch through the API client's watch (what the daemon's informers use), until the server ends it. */
    type WatchEvent = { type: string; object: { kind?: string; code?: number; reason?: string; metadata?: { name?: string; resourceVersion?: string } } };
    const watchEvents = async (cfg: ApiConfig, path: string, query: Record<string, string | number | boolean>): Promise<WatchEvent[]> => {
      const events: WatchEvent[] = [];
      const q = new URLSearchParams({ watch: '1', ...Object.fromEntries(Object.entries(query).map(([k, v]) => [k, String(v)])) });
      await new ApiClient(cfg, 10_000).watch(`${path}?${q}`, (e) => events.push(e as WatchEvent)).done;
      return events;
    };
    /** The same requests against both; each returns what the test compares. `compact` forgets the history up to a resourceVersion. */
    const contract = async (cfg: ApiConfig, ns: string, compact: (rv: string) => Promise<void>): Promise<Record<string, unknown>> => {
      const api = new ApiClient(cfg, 10_000);
      const out: Record<string, unknown> = {};
      const code = async (p: Promise<unknown>): Promise<number> =>
        p.then(
          () => 200,
          (e: unknown) => (e instanceof ApiError ? e.status : -1),
        );
      const pod = await api.post<PodJson>(`/api/v1/namespaces/${ns}/pods`, {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'contract', namespace: ns },
        spec: { nodeName: 'nowhere', containers: [{ name: 'c', image: 'localhost/plexus-pause:1' }] },
      });
      out.getMissing = await code(api.get(`/api/v1/namespaces/${ns}/pods/missing`));
      // Merge patch of the status subresource: annotations change, spec does not.
      const patched = await api.patch<PodJson & { spec: { nodeName: string } }>(`/api/v1/namespaces/${ns}/pods/contract/status`, {
        metadata: { annotations: { [STATUS]: '[]' } },
        spec: { nodeName: 'elsewhere' },
      });
      out.statusAnnotation = patched.metadata.annotations?.[STATUS];
      out.specUnchanged = patched.spec.nodeName;
      // A patch carrying metadata.uid is a precondition on it.
      out.uidPrecondition = await code(api.patch(`/api/v1/namespaces/${ns}/pods/contract/status`, { metadata: { uid: 'not-the-uid', annotations: { x: 'y' } } }));
      out.uidMatches = await code(api.patch(`/api/v1/namespaces/${ns}/pods/contract/status`, { metadata: { uid: pod.metadata.uid, annotations: { x: 'y' } } }));
      // Field selectors as the daemon's informer uses them.
      const listed = await api.get<{ items: PodJson[] }>(`/api/v1/pods?fieldSelector=${encodeURIComponent('spec.nodeName=nowhere')}`);
      out.fieldSelector = listed.items.filter((p) => p.metadata.namespace === ns).map((p) => p.metadata.name);
      const none = await api.get<{ items: PodJson[] }>(`/api/v1/pods?fieldSelector=${encodeURIComponent('spec.nodeName=no-such-node')}`);
      out.fieldSelectorNone = none.items.length;
      // A NAD through the CRD, validated by its schema.
      out.nadCreate = await code(
        api.post(`/apis/k8s.cni.cncf.io/v1/namespaces/${ns}/network-attachment-definitions`, {
          apiVersion: 'k8s.cni.cncf.io/v1',
          kind: 'NetworkAttachmentDefinition',
          metadata: { name: 'n1' },
          spec: { config: '{}' },
        }),
      );
      out.nadInvalid = await code(
        api.post(`/apis/k8s.cni.cncf.io/v1/namespaces/${ns}/network-attachment-definitions`, {
          apiVersion: 'k8s.cni.cncf.io/v1',
          kind: 'NetworkAttachmentDefinition',
          metadata: { name: 'n2' },
          spec: { config: 7 },
        }),
      );
      // An update from a stale read is a conflict.
      const fresh = await api.get<PodJson & { metadata: { resourceVersion: string } }>(`/api/v1/namespaces/${ns}/pods/contract`);
      await api.patch(`/api/v1/namespaces/${ns}/pods/contract`, { metadata: { labels: { bump: '1' } } });
      out.staleUpdate = await code(api.put(`/api/v1/namespaces/${ns}/pods/contract`, { ...fresh, metadata: { ...fresh.metadata, labels: { bump: '2' } } }));
      out.createExisting = await code(
        api.post(`/api/v1/namespaces/${ns}/pods`, { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'contract', namespace: ns }, spec: { containers: [{ name: 'c', image: 'x' }] } }),
      );
      // A watch that allows bookmarks is told, shortly before its timeout, how far the resource has come
      // while nothing it watches changed: a BOOKMARK, the kind with only a resourceVersion. (kube-apiserver's
      // watch cache sends one ~2 s before the timeout, only when pods changed elsewhere since the watch began.)
      const listed2 = await api.get<{ metadata: { resourceVersion: string } }>(`/api/v1/namespaces/${ns}/pods`);
      const watching = watchEvents(cfg, `/api/v1/namespaces/${ns}/pods`, { allowWatchBookmarks: true, timeoutSeconds: 10, resourceVersion: listed2.metadata.resourceVersion });
      await sleep(1000);
      const elsewhere = await api.post<PodJson & { metadata: { resourceVersion: string } }>('/api/v1/namespaces/default/pods', {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'contract-elsewhere' },
        spec: { nodeName: 'nowhere', containers: [{ name: 'c', image: 'localhost/plexus-pause:1' }] },
      });
      const bookmarks = (await watching).filter((e) => e.type === 'BOOKMARK');
      out.bookmark = bookmarks.slice(0, 1).flatMap((b) => [b.object.kind, Number(b.object.metadata?.resourceVersion) >= Number(elsewhere.metadata.resourceVersion)]);
      out.watchedNothing = (await watching).filter((e) => e.type !== 'BOOKMARK').length;
      // A watch from a compacted resourceVersion: one ERROR event, 410 Expired (an informer lists again).
      // Events: kube-apiserver keeps no watch cache of them, so etcd's compaction is what answers.
      const eventOf = (name: string) => ({
        apiVersion: 'v1',
        kind: 'Event',
        metadata: { name, namespace: ns },
        involvedObject: { apiVersion: 'v1', kind: 'Pod', name: 'contract', namespace: ns },
        reason: 'Contract',
        message: name,
        type: 'Normal',
        source: { component: 'plexus-test' },
      });
      const rvs: string[] = [];
      for (const name of ['first', 'second', 'third']) rvs.push((await api.post<{ metadata: { resourceVersion: string } }>(`/api/v1/namespaces/${ns}/events`, eventOf(name))).metadata.resourceVersion);
      // Compaction to a revision keeps that revision: a watch from the one before it still works.
      await compact(rvs[2]!);
      const kept = await watchEvents(cfg, `/api/v1/namespaces/${ns}/events`, { resourceVersion: rvs[1]!, timeoutSeconds: 2 });
      out.watchAtCompaction = kept.map((e) => [e.type, e.object.metadata?.name]);
      const expired = await watchEvents(cfg, `/api/v1/namespaces/${ns}/events`, { resourceVersion: rvs[0]!, timeoutSeconds: 2 });
      out.watchExpired = expired.map((e) => [e.type, e.object.code, e.object.reason]);
      return out;
    };
    const expected = {
      getMissing: 404,
      statusAnnotation: '[]',
      specUnchanged: 'nowhere',
      uidPrecondition: 422,
      uidMatches: 200,
      fieldSelector: ['contract'],
      fieldSelectorNone: 0,
      nadCreate: 200,
      nadInvalid: 422,
      staleUpdate: 409,
      createExisting: 409,
      bookmark: ['Pod', true],
      watchedNothing: 0,
      watchAtCompaction: [['ADDED', 'third']],
      watchExpired: [['ERROR', 410, 'Expired']],
    };

    it('the real API server', async () => {
      await kubectl(['create', 'namespace', 'contract']);
      // The ServiceAccount admission needs the namespace's default ServiceAccount, which the
      // controller-manager makes a moment after the namespace.
      await until('the default ServiceAccount of namespace contract', async () => (await kubectl(['get', 'serviceaccount', 'default', '-n', 'contract', '-o', 'name'])) || undefined, 60_000);
      assert.deepEqual(await contract(await loadKubeconfig(cluster.adminKubeconfig), 'contract', (rv) => cluster.compactEtcd(rv)), expected);
    });

    it('the API double', async () => {
      const double = new ApiServerDouble();
      await double.start();
      try {
        const path = join(dir, 'double.kubeconfig');
        writeFileSync(path, double.kubeconfig());
        assert.deepEqual(await contract(await loadKubeconfig(path), 'contract', async (rv) => double.compact(Number(rv))), expected);
      } finally {
        await double.stop();
      }
    });

    it('RBAC: the node credential may not read NADs (403), and Plexus says which permission is missing', async () => {
      const node = new ApiClient(await loadKubeconfig(cluster.nodeKubeconfig), 10_000);
      await assert.rejects(node.get('/apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions/macvlan-a'), (e: unknown) => {
        assert.ok(e instanceof ApiError && e.status === 403, String(e));
        assert.match(e.message, /system:node:plexus-node.*cannot get resource "network-attachment-definitions"/);
        return true;
      });
      // Plexus's own ServiceAccount may, through the ClusterRole of deploy/.
      const plexus = new ApiClient(await loadKubeconfig(plexusKubeconfig), 10_000);
      const nad = await plexus.get<{ metadata: { name: string } }>('/apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions/macvlan-a');
      assert.equal(nad.metadata.name, 'macvlan-a');
    });
  });

  describe('kubeconfig forms against the real API server: the one-shot client and the daemon informers both authenticate', () => {
    const NAD_PATH = '/apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions/macvlan-a';
    /** macvlan-a as the daemon's NAD informer of the namespace lists it, or why it could not. */
    const informerRead = async (cfg: ApiConfig): Promise<string> => {
      const errors: string[] = [];
      const informer = new Informer(new ApiClient(cfg, 10_000), {
        path: '/apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions',
        keep: keptNad,
        onError: (e) => errors.push(e.message),
      });
      await informer.start();
      await informer.stop();
      return informer.get('default', 'macvlan-a')?.metadata.name ?? errors.join('; ');
    };
    /** Every form a user has, written from the admin's client certificate and Plexus's ServiceAccount token. */
    const forms = (): Record<string, string> => {
      const base = join(dir, 'kubeconfig-forms');
      mkdirSync(join(base, 'pki'), { recursive: true });
      const admin = parse(readFileSync(cluster.adminKubeconfig, 'utf8')) as { clusters: { cluster: Record<string, string> }[]; users: { user: Record<string, string> }[] };
      const ca = admin.clusters[0]!.cluster['certificate-authority-data']!;
      const cert = admin.users[0]!.user['client-certificate-data']!;
      const key = admin.users[0]!.user['client-key-data']!;
      writeFileSync(join(base, 'pki', 'ca.crt'), Buffer.from(ca, 'base64'));
      writeFileSync(join(base, 'pki', 'admin.crt'), Buffer.from(cert, 'base64'));
      writeFileSync(join(base, 'pki', 'admin.key'), Buffer.from(key, 'base64'));
      const token = (parse(readFileSync(plexusKubeconfig, 'utf8')) as { users: { user: { token: string } }[] }).users[0]!.user.token;
      writeFileSync(join(base, 'token'), token);
      const doc = (cluster_: Record<string, unknown>, user: Record<string, unknown>) => ({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'c', cluster: { server: cluster.server, ...cluster_ } }],
        users: [{ name: 'u', user }],
        contexts: [{ name: 'x', context: { cluster: 'c', user: 'u' } }],
        'current-context': 'x',
      });
      const embedded = doc({ 'certificate-authority-data': ca }, { 'client-certificate-data': cert, 'client-key-data': key });
      const files: Record<string, string> = {
        'kubeadm YAML, embedded client certificate': readFileSync(cluster.adminKubeconfig, 'utf8'),
        JSON: JSON.stringify(embedded),
        'YAML flow style': stringify(embedded, { collectionStyle: 'flow' }),
        'relative certificate and CA paths': stringify(doc({ 'certificate-authority': 'pki/ca.crt' }, { 'client-certificate': 'pki/admin.crt', 'client-key': 'pki/admin.key' })),
        'ServiceAccount token': readFileSync(plexusKubeconfig, 'utf8'),
        'relative tokenFile': stringify(doc({ 'certificate-authority': './pki/ca.crt' }, { tokenFile: 'token' })),
      };
      const out: Record<string, string> = {};
      for (const [i, [form, text]] of Object.entries(files).entries()) {
        const path = join(base, `form-${i}.kubeconfig`);
        writeFileSync(path, text);
        out[form] = path;
      }
      return out;
    };

    it("every form reads the same NAD with the one-shot client and with the daemon's informer", async () => {
      const results: Record<string, [string, string]> = {};
      for (const [form, path] of Object.entries(forms())) {
        const cfg = await loadKubeconfig(path);
        const lean = await new ApiClient(cfg, 10_000).get<{ metadata: { name: string } }>(NAD_PATH).then(
          (n) => n.metadata.name,
          (e: Error) => e.message,
        );
        results[form] = [lean, await informerRead(cfg)];
      }
      assert.deepEqual(results, Object.fromEntries(Object.keys(results).map((f) => [f, ['macvlan-a', 'macvlan-a']])));
    });

    it('every form carries a full ADD and DEL, one-shot and through the daemon: pod and NAD read, network-status written with it', async () => {
      // A pod on a node no kubelet runs (nothing else runs it): the ADDs read it and its NAD, and write its
      // network-status. The Node object exists: the pod GC deletes pods bound to a node that does not (CI
      // saw it go mid-test).
      const podPath = '/api/v1/namespaces/default/pods/kubeconfig-forms';
      const admin = new ApiClient(await loadKubeconfig(cluster.adminKubeconfig), 10_000);
      await admin.post('/api/v1/nodes', { apiVersion: 'v1', kind: 'Node', metadata: { name: 'plx-kf-nowhere' } });
      await admin.post('/api/v1/namespaces/default/pods', {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'kubeconfig-forms', annotations: { 'k8s.v1.cni.cncf.io/networks': 'macvlan-a' } },
        spec: { nodeName: 'plx-kf-nowhere', containers: [{ name: 'c', image: 'localhost/plexus-pause:1' }] },
      });
      const uid = (await admin.get<PodJson>(podPath)).metadata.uid;
      const clusterNetwork = join(cluster.cniConfDir, '10-cluster.conflist');
      const results: Record<string, Record<string, string>> = {};
      for (const [i, [form, kubeconfig]] of Object.entries(forms()).entries()) {
        results[form] = {};
        for (const mode of ['oneshot', 'daemon'] as const) {
          const netns = `plx-kf-${i}-${mode}`;
          execFileSync('ip', ['netns', 'add', netns]);
          const socket = join(dir, `kf-${i}.sock`);
          const daemon = mode === 'daemon' ? await startDaemon(socket, ['--kubeconfig', kubeconfig, '--node-name', cluster.nodeName, '--cni-dir', join(dir, `kf-${i}-daemon`)]) : undefined;
          try {
            await admin.patch(`${podPath}/status`, { metadata: { annotations: { [STATUS]: '[]' } } });
            // One-shot: the form is the conf's kubeconfig. Daemon: the conf names none; the daemon's --kubeconfig is the form.
            const conf =
              mode === 'oneshot'
                ? { cniVersion: '1.0.0', name: 'plexus', type: 'plexus', kubeconfig, clusterNetwork, binDir: '/usr/lib/cni', cniDir: join(dir, `kf-${i}-oneshot`) }
                : { cniVersion: '1.0.0', name: 'plexus', type: 'plexus-shim', daemonSocket: socket, clusterNetwork, binDir: '/usr/lib/cni', cniDir: join(dir, `kf-${i}-daemon`) };
            const bin = mode === 'oneshot' ? join(repoRoot(), 'bin', 'plexus') : join(repoRoot(), 'native', 'plexus-shim');
            const call = (command: string) =>
              spawnSync(bin, [], {
                input: JSON.stringify(conf),
                encoding: 'utf8',
                env: {
                  PATH: process.env.PATH ?? '',
                  CNI_PATH: '/usr/lib/cni',
                  ...podEnv(command, `kf${i}${mode}`, `/var/run/netns/${netns}`, { name: 'kubeconfig-forms', namespace: 'default', uid }),
                },
              });
            const add = call('ADD');
            results[form]![`${mode} ADD`] = add.status === 0 ? 'ok' : add.stdout || add.stderr;
            const status = await until(
              `network-status by ${form} (${mode})`,
              async () => {
                const s = (await admin.get<PodJson>(podPath)).metadata.annotations?.[STATUS];
                return s && s !== '[]' ? s : undefined;
              },
              20_000,
            ).catch((e: Error) => e.message);
            results[form]![`${mode} status`] = status.includes('"default/macvlan-a"') ? 'ok' : status;
            const del = call('DEL');
            results[form]![`${mode} DEL`] = del.status === 0 ? 'ok' : del.stdout || del.stderr;
          } finally {
            await stopDaemon(daemon);
            execFileSync('ip', ['netns', 'del', netns]);
          }
        }
      }
      const ok = { 'oneshot ADD': 'ok', 'oneshot status': 'ok', 'oneshot DEL': 'ok', 'daemon ADD': 'ok', 'daemon status': 'ok', 'daemon DEL': 'ok' };
      assert.deepEqual(results, Object.fromEntries(Object.keys(results).map((f) => [f, ok])));
      await kubectl(['delete', 'pod', 'kubeconfig-forms', '--grace-period=0', '--force', '--ignore-not-found']);
      await kubectl(['delete', 'node', 'plx-kf-nowhere']);
    });

    it('a rotated token file is read again: after the old token is revoked both clients still authenticate, a client that kept the old token gets 401', async () => {
      // Two tokens of Plexus's ServiceAccount, each bound to a Secret of its own: deleting the Secret
      // revokes the token, as a pod's token dies with the pod. kubelet rotates a projected token by
      // swapping the file under the reader; so does this test.
      const base = join(dir, 'rotation');
      mkdirSync(base, { recursive: true });
      const tokenBoundTo = async (secret: string): Promise<string> => {
        await kubectl(['create', 'secret', 'generic', secret, '-n', 'kube-system']);
        return (await kubectl(['create', 'token', 'plexus', '-n', 'kube-system', '--bound-object-kind', 'Secret', '--bound-object-name', secret])).trim();
      };
      const [oldToken, newToken] = [await tokenBoundTo('plx-token-old'), await tokenBoundTo('plx-token-new')];
      const tokenFile = join(base, 'token');
      const swapIn = (token: string): void => {
        writeFileSync(`${tokenFile}.next`, token);
        execFileSync('mv', ['-f', `${tokenFile}.next`, tokenFile]);
      };
      swapIn(oldToken);
      writeFileSync(join(base, 'ca.crt'), readFileSync(join(dir, 'cluster', 'pki', 'ca.crt')));
      writeFileSync(
        join(base, 'kubeconfig'),
        stringify({
          apiVersion: 'v1',
          kind: 'Config',
          clusters: [{ name: 'c', cluster: { server: cluster.server, 'certificate-authority': 'ca.crt' } }],
          users: [{ name: 'u', user: { tokenFile: 'token' } }],
          contexts: [{ name: 'x', context: { cluster: 'c', user: 'u' } }],
          'current-context': 'x',
        }),
      );
      const cfg = await loadKubeconfig(join(base, 'kubeconfig'));
      const lean = new ApiClient(cfg, 10_000);
      const pinned = new ApiClient({ server: cfg.server, ...(cfg.ca ? { ca: cfg.ca } : {}), token: oldToken }, 10_000);
      const readBoth = async (): Promise<[string, string]> => [
        await lean.get<{ metadata: { name: string } }>(NAD_PATH).then(
          (n) => n.metadata.name,
          (e: Error) => e.message,
        ),
        await informerRead(cfg),
      ];
      assert.deepEqual(await readBoth(), ['macvlan-a', 'macvlan-a']);
      swapIn(newToken);
      await kubectl(['delete', 'secret', '-n', 'kube-system', 'plx-token-old']);
      const refused = await until(
        'the old token refused',
        async () =>
          pinned.get(NAD_PATH).then(
            () => undefined,
            (e: unknown) => (e instanceof ApiError && e.status === 401 ? e.status : undefined),
          ),
        60_000,
      );
      assert.equal(refused, 401);
      assert.deepEqual(await readBoth(), ['macvlan-a', 'macvlan-a']);
      await kubectl(['delete', 'secret', '-n', 'kube-system', 'plx-token-new']);
    });
  });

  describe('PodResources contract: the kubelet double and the real kubelet answer alike', () => {
    /** The same calls against both sockets; what the test compares. */
    const contract = async (socket: string): Promise<Record<string, unknown>> => {
      const grpc = await import('@grpc/grpc-js');
      const loader = await import('@grpc/proto-loader');
      const def = loader.loadSync(join(repoRoot(), 'src', 'k8s', 'podresources-v1.proto'), { keepCase: true, defaults: true });
      const pkg = grpc.loadPackageDefinition(def) as unknown as { v1: { PodResourcesLister: new (a: string, c: unknown) => Record<string, Function> & { close(): void } } };
      const client = new pkg.v1.PodResourcesLister(`unix://${socket}`, grpc.credentials.createInsecure());
      const outcome = (p: Promise<unknown>) =>
        p.then(
          () => 'ok',
          (e: { code?: number; details?: string }) => ({ code: grpc.status[e.code ?? -1], details: e.details }),
        );
      try {
        return {
          getMissing: await outcome(unary(client, 'Get', { pod_name: 'missing', pod_namespace: 'contract' }, 10_000)),
          list: await outcome(unary(client, 'List', {}, 10_000)),
          allocatable: await outcome(unary(client, 'GetAllocatableResources', {}, 10_000)),
        };
      } finally {
        client.close();
      }
    };
    const expected = { getMissing: { code: 'UNKNOWN', details: 'pod missing in namespace contract not found' }, list: 'ok', allocatable: 'ok' };

    it('the real kubelet', async () => {
      assert.deepEqual(await contract(join(cluster.kubeletDir, 'pod-resources', 'kubelet.sock')), expected);
    });

    it('the kubelet double', async () => {
      const double = new KubeletDouble(rig.dir('kubelet-double'));
      await double.start();
      try {
        assert.deepEqual(await contract(double.podResourcesSocket), expected);
      } finally {
        await double.stop();
      }
    });
  });

  for (const mode of ['oneshot', 'daemon'] as const) {
    describe(`pods through kubelet → containerd → plexus (${mode === 'oneshot' ? 'one-shot plugin, YAML ServiceAccount kubeconfig' : "node daemon + shim from deploy/'s DaemonSet and a locally built image, in-cluster credentials"})`, () => {
      let cri: ContainerdRig;
      /** The DaemonSet's /var/lib/cni (its records under plexus/, host-local's leases under networks/): in the test's dir. */
      const daemonCniState = () => join(dir, 'daemonset-cni-state');
      const cniDir = () => (mode === 'daemon' ? join(daemonCniState(), 'plexus') : join(dir, `plexus-${mode}`));
      const leases = (network: string) => join(mode === 'daemon' ? daemonCniState() : '/var/lib/cni', 'networks', network);
      let runDirExisted = true;
      const daemonPod = () => daemonSetPod('plexus');
      const daemonLogs = (): string => podLogs('kube-system_plexus-');
      before(async () => {
        if (mode === 'oneshot') {
          execFileSync(plexusctlPath, ['install', '--mode', mode, '--cni-bin-dir', cluster.cniBinDir, '--cni-conf-dir', cluster.cniConfDir, '--kubeconfig', plexusKubeconfig, '--cni-dir', cniDir()], {
            stdio: 'pipe',
          });
        } else {
          runDirExisted = existsSync(dirname(DAEMONSET_SOCKET));
          const manifest = deployManifest('plexus-daemon.yaml', {
            hostPaths: {
              '/opt/cni/bin': cluster.cniBinDir,
              '/etc/cni/net.d': cluster.cniConfDir,
              '/var/lib/kubelet/pod-resources': join(cluster.kubeletDir, 'pod-resources'),
              '/var/run/k8s.cni.cncf.io/devinfo': join(dir, 'devinfo'),
              '/var/lib/cni': daemonCniState(),
            },
            // No kube-proxy on this node: the kubernetes Service's ClusterIP leads nowhere, so the
            // in-cluster client is pointed at the API server itself (the token and CA stay kubelet's).
            env: { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(CLUSTER_PORTS.apiserver) },
            // The rig's CNI bin dir links Debian's reference plugins from /usr/lib/cni.
            extraHostMounts: ['/usr/lib/cni'],
          });
          await kubectl(['apply', '-f', '-'], manifest);
          await until(
            'the plexus DaemonSet pod Running',
            async () => {
              const p = await daemonPod();
              return p?.status.phase === 'Running' && p.status.containerStatuses?.every((c) => c.ready) ? p : undefined;
            },
            120_000,
          ).catch(async (err: Error) => {
            throw new Error(`${err.message}; ${JSON.stringify((await daemonPod())?.status)}; logs: ${daemonLogs()}`);
          });
          // The init container installed the shim and the conf; the daemon serves the shim's socket.
          const conf = JSON.parse(readFileSync(join(cluster.cniConfDir, '00-plexus.conflist'), 'utf8')) as { plugins: { type: string; daemonSocket?: string }[] };
          assert.equal(conf.plugins[0]?.type, 'plexus-shim');
          assert.equal(conf.plugins[0]?.daemonSocket, DAEMONSET_SOCKET);
          assert.ok(existsSync(join(cluster.cniBinDir, 'plexus-shim')));
          await until('the daemon socket', async () => existsSync(DAEMONSET_SOCKET) || undefined, 30_000);
        }
        cri = ContainerdRig.attach(cluster.containerdDir, undefined);
        // containerd picks up the new first conf within ~2 s.
        await sleep(3000);
      });
      after(async function () {
        cri?.close();
        if (mode === 'daemon') {
          if (this.test?.parent?.tests.some((t) => t.state === 'failed')) process.stderr.write(`      daemon pod logs:\n${daemonLogs()}\n`);
          const p = await daemonPod().catch(() => undefined);
          if (p) assert.equal(p.status.containerStatuses?.[0]?.restartCount, 0, 'the daemon never restarted');
          // Pods a failed test left go while the daemon still serves their DELs (the shim fails closed without it).
          await kubectl(['delete', 'pods', '-n', 'default', '--field-selector', `spec.nodeName=${cluster.nodeName}`, '--wait=true', '--timeout=120s']);
          await kubectl(['delete', 'daemonset', '-n', 'kube-system', 'plexus', '--wait=true', '--timeout=60s']);
          await until('the daemon pod gone', async () => ((await daemonPod()) ? undefined : true), 60_000);
          if (!runDirExisted) rmSync(dirname(DAEMONSET_SOCKET), { recursive: true, force: true });
        }
      });

      it(`annotated example pods get their secondaries; network-status in the real status subresource, Events; kubectl delete leaves nothing`, async () => {
        const macvlanBefore = hostLocalReservations(leases('macvlan-a'));
        // A chain as well: bridge, then tuning (MTU and MAC on the pod's side).
        const tunedNad = nadDoc('default', {
          cniVersion: '1.0.0',
          name: 'bridge-tuned',
          plugins: [
            { type: 'bridge', bridge: TUNED_BRIDGE, ipam: { type: 'static', addresses: [{ address: '10.77.5.7/24' }] } },
            { type: 'tuning', mtu: 1400, mac: '02:00:0a:4d:05:07' },
          ],
        });
        const tunedPod = {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { name: 'tuned', namespace: 'default', annotations: { 'k8s.v1.cni.cncf.io/networks': '[{"name":"bridge-tuned","interface":"tuned0"}]' } },
          spec: {},
        };
        const pods = [...exampleDocs('pods.yaml').filter((p) => ['two-nets', 'vf-stand-in'].includes(p.metadata.name)), tunedPod];
        const manifest = [
          stringify(tunedNad),
          ...pods.map((p) => stringify({ ...p, spec: { ...(p.spec as object), containers: [{ name: 'app', image: 'localhost/plexus-pause:1', imagePullPolicy: 'Never' }] } })),
        ].join('---\n');
        await kubectl(['apply', '-f', '-'], manifest);
        for (const p of pods) await until(`${p.metadata.name} Running`, async () => (await getPod(p.metadata.name))?.status?.phase === 'Running', 120_000);

        assert.equal(hostLocalReservations(leases('macvlan-a')).length, macvlanBefore.length + 1, 'the macvlan lease is where the test looks for it');
        const twoNets = (await cri.readySandbox('default', 'two-nets'))!;
        const ns = twoNets.netns!.split('/').pop()!;
        assert.deepEqual(ipAddresses(ns, 'data0'), ['10.77.0.9/24']);
        assert.match(ipAddresses(ns, 'net1')[0] ?? '', /^10\.77\.1\./);
        assert.match(ipAddresses(ns, 'eth0')[0] ?? '', /^10\.244\.0\./, 'eth0 from the cluster network');
        const tuned = (await cri.readySandbox('default', 'tuned'))!.netns!.split('/').pop()!;
        const tunedLink = ipJson<{ mtu: number; address: string }[]>(['-n', tuned, 'link', 'show', 'tuned0'])[0]!;
        assert.deepEqual([tunedLink.mtu, tunedLink.address, ipAddresses(tuned, 'tuned0')], [1400, '02:00:0a:4d:05:07', ['10.77.5.7/24']], 'the chain ran: bridge, then tuning');
        const vf = (await cri.readySandbox('default', 'vf-stand-in'))!;
        assert.deepEqual(ipAddresses(vf.netns!.split('/').pop()!, 'vf0'), ['10.77.3.10/24']);
        assert.equal(linkExists(EXAMPLE_LINKS.vf), false, 'the VF stand-in left the host');
        // PodResources Get of the real kubelet for a running pod: served, no devices.
        assert.deepEqual([...(await podDevicesFromKubelet(join(cluster.kubeletDir, 'pod-resources', 'kubelet.sock'), 'default', 'two-nets', 10_000))], []);

        // network-status as the real API server stored it (kubectl get -o yaml shows it).
        const pod = (await until('network-status of two-nets', async () => {
          const p = await getPod('two-nets');
          return p?.metadata.annotations?.[STATUS] ? p : undefined;
        }))!;
        const status = JSON.parse(pod.metadata.annotations![STATUS]!) as { name: string; interface: string; ips: string[]; default: boolean }[];
        assert.deepEqual(
          status.map((s) => [s.name, s.interface, s.default]),
          [
            ['cluster', 'eth0', true],
            ['default/macvlan-a', 'net1', false],
            ['default/bridge-b', 'data0', false],
          ],
        );
        assert.deepEqual(status[2]!.ips, ['10.77.0.9'], 'bare addresses, as Multus writes them');
        assert.match(await kubectl(['get', 'pod', 'two-nets', '-o', 'yaml']), /k8s\.v1\.cni\.cncf\.io\/network-status/);
        const events = JSON.parse(await kubectl(['get', 'events', '--field-selector', `involvedObject.uid=${pod.metadata.uid},reason=AddedInterface`, '-o', 'json'])) as {
          items: { message: string }[];
        };
        assert.equal(events.items.length, 3, events.items.map((e) => e.message).join('; '));

        await kubectl(['delete', 'pod', ...pods.map((p) => p.metadata.name), '--wait=true', '--timeout=120s']);
        // kubelet keeps stopped sandboxes for a while (and the DaemonSet's own runs on): what matters is that none of these is ready.
        for (const p of pods) await until(`the sandbox of ${p.metadata.name} stopped`, async () => ((await cri.readySandbox('default', p.metadata.name)) ? undefined : true), 60_000);
        assert.ok(linkExists(EXAMPLE_LINKS.vf), 'the VF stand-in is back on the host');
        assert.deepEqual(hostLocalReservations(leases('macvlan-a')), macvlanBefore, 'macvlan IP released');
        const store = new AttachmentStore(join(cniDir(), 'attachments'));
        assert.deepEqual(store.active(), [], 'no attachment left in the store');
        assert.ok(readdirSync(join(cniDir(), 'attachments')).length >= pods.length, 'the records were written where the install said');
      });

      if (mode === 'daemon') {
        it('Plexus IPAM through the kubelet: pods on a plexus-ipam NAD get distinct addresses of its pool (network-status, the netns and the IPChunk status agree); kubectl delete frees them', async () => {
          const nad = nadDoc('default', {
            cniVersion: '1.0.0',
            name: 'ipam-data',
            type: 'macvlan',
            master: EXAMPLE_LINKS.macvlanMaster,
            mode: 'bridge',
            ipam: { type: 'plexus-ipam', range: '10.77.10.0/28', gateway: '10.77.10.1' },
          });
          const names = ['ipam-a', 'ipam-b', 'ipam-c'];
          const pods = names.map((name) => ({
            apiVersion: 'v1',
            kind: 'Pod',
            metadata: { name, namespace: 'default', annotations: { 'k8s.v1.cni.cncf.io/networks': 'ipam-data' } },
            spec: { containers: [{ name: 'app', image: 'localhost/plexus-pause:1', imagePullPolicy: 'Never' }] },
          }));
          await kubectl(['apply', '-f', '-'], [nad, ...pods].map((d) => stringify(d)).join('---\n'));
          for (const name of names) {
            await until(`${name} Running`, async () => (await getPod(name))?.status?.phase === 'Running', 120_000).catch(async (err: Error) => {
              throw new Error(`${err.message}: ${await kubectl(['get', 'events', '--field-selector', `involvedObject.name=${name}`, '-o', 'jsonpath={.items[*].message}'])}`);
            });
          }
          const inNetns = new Map<string, string>();
          for (const name of names) {
            const sandbox = (await cri.readySandbox('default', name))!;
            const [addr] = ipAddresses(sandbox.netns!.split('/').pop()!, 'net1');
            assert.match(addr ?? '', /^10\.77\.10\.\d+\/28$/);
            assert.notEqual(addr, '10.77.10.1/28', 'never the gateway');
            inNetns.set(name, addr!);
            const status = await until(`network-status of ${name}`, async () => (await getPod(name))?.metadata.annotations?.[STATUS]);
            const entry = (JSON.parse(status) as { name: string; ips?: string[] }[]).find((e) => e.name === 'default/ipam-data');
            assert.deepEqual(entry?.ips, [addr!.split('/')[0]]);
          }
          assert.equal(new Set(inNetns.values()).size, names.length, 'no address twice');
          // The daemon (deploy/'s RBAC) claimed a chunk and writes what it holds into the IPChunk's status.
          type Chunks = { items: { spec: { node: string; cidr: string }; status?: { addresses?: { address: string; pod?: string }[] } }[] };
          const chunks = async () => (JSON.parse(await kubectl(['get', 'ipchunks.ipam.plexus.network', '-o', 'json'])) as Chunks).items.filter((c) => c.spec.cidr.startsWith('10.77.10.'));
          const reflected = await until('the chunk status', async () => {
            const held = (await chunks()).flatMap((c) => (c.status?.addresses ?? []).map((a) => `${a.pod}=${a.address}`));
            return held.length === names.length ? held.sort() : undefined;
          });
          assert.deepEqual(reflected, names.map((n) => `default/${n}=${inNetns.get(n)!.split('/')[0]}`).sort());
          assert.ok((await chunks()).every((c) => c.spec.node === cluster.nodeName));
          await kubectl(['delete', 'pod', ...names, '--wait=true', '--timeout=120s']);
          await until('the addresses freed', async () => (await chunks()).every((c) => !c.status?.addresses?.length) || undefined);
          await kubectl(['delete', 'network-attachment-definition', 'ipam-data']);
        });

        it('MultiNetworkPolicy through kubectl apply: the DaemonSet enforces it in the pods the kubelet runs (probes from their netns), explain shows the installed table, deleting it opens again', async () => {
          const nad = nadDoc('default', { cniVersion: '1.0.0', name: 'pol-net', type: 'bridge', bridge: POLICY_BRIDGE, ipam: { type: 'host-local', ranges: [[{ subnet: '10.77.11.0/24' }]] } });
          const roles = { 'pol-a': 'server', 'pol-b': 'friend', 'pol-c': 'stranger' };
          const pods = Object.entries(roles).map(([name, role]) => ({
            apiVersion: 'v1',
            kind: 'Pod',
            metadata: { name, namespace: 'default', labels: { role }, annotations: { 'k8s.v1.cni.cncf.io/networks': 'pol-net' } },
            spec: { containers: [{ name: 'app', image: 'localhost/plexus-pause:1', imagePullPolicy: 'Never' }] },
          }));
          await kubectl(['apply', '-f', '-'], [nad, ...pods].map((d) => stringify(d)).join('---\n'));
          const agents = new Map<string, { agent: ProbeAgent; addr: string }>();
          try {
            for (const name of Object.keys(roles)) {
              await until(`${name} Running`, async () => (await getPod(name))?.status?.phase === 'Running', 120_000);
              const netns = (await cri.readySandbox('default', name))!.netns!;
              const [addr] = ipAddresses(netns.split('/').pop()!, 'net1');
              assert.match(addr ?? '', /^10\.77\.11\./);
              agents.set(name, { agent: new ProbeAgent(netns), addr: addr!.split('/')[0]! });
            }
            await Promise.all([...agents.values()].map((a) => a.agent.ready));
            const probe = (from: string, to: string, kind: 'tcp80' | 'tcp81') => agents.get(from)!.agent.probe(kind, agents.get(to)!.addr);
            const matrix = async () => ({
              friend80: await probe('pol-b', 'pol-a', 'tcp80'),
              friend81: await probe('pol-b', 'pol-a', 'tcp81'),
              stranger80: await probe('pol-c', 'pol-a', 'tcp80'),
              out: await probe('pol-a', 'pol-c', 'tcp80'),
            });
            assert.deepEqual(await matrix(), { friend80: true, friend81: true, stranger80: true, out: true }, 'open before any policy');
            // As a user writes it: YAML, v1beta1 (upstream's served version), kubectl apply.
            const policyYaml = [
              'apiVersion: k8s.cni.cncf.io/v1beta1',
              'kind: MultiNetworkPolicy',
              'metadata:',
              '  name: server-from-friends',
              '  namespace: default',
              '  annotations:',
              '    k8s.v1.cni.cncf.io/policy-for: pol-net',
              'spec:',
              '  podSelector: {matchLabels: {role: server}}',
              '  policyTypes: [Ingress]',
              '  ingress:',
              '    - from: [{podSelector: {matchLabels: {role: friend}}}]',
              '      ports: [{protocol: TCP, port: 80}]',
              '',
            ].join('\n');
            await kubectl(['apply', '-f', '-'], policyYaml);
            const enforced = { friend80: true, friend81: false, stranger80: false, out: true };
            await until('the policy enforced', async () => JSON.stringify(await matrix()) === JSON.stringify(enforced) || undefined, 30_000);
            const explained = execFileSync(plexusctlPath, ['policy', 'explain', 'default/pol-a', '--kubeconfig', cluster.adminKubeconfig, '--socket', DAEMONSET_SOCKET], { encoding: 'utf8' });
            assert.match(explained, /net1 \(default\/pol-net\):/);
            assert.match(explained, new RegExp(`default/server-from-friends ingress\\[0\\]  from ${agents.get('pol-b')!.addr.replace(/\./g, '\\.')}  tcp 80`));
            assert.match(explained, /installed in sandbox [0-9a-f]{12}:\n {2}table inet plexus_policy/, 'the daemon of the DaemonSet answers for its node');
            await kubectl(['delete', 'multi-networkpolicy', 'server-from-friends']);
            await until('open again', async () => (await matrix()).stranger80 || undefined, 30_000);
          } finally {
            for (const a of agents.values()) a.agent.stop();
            await kubectl(['delete', 'pod', ...Object.keys(roles), '--wait=true', '--timeout=120s']);
            await kubectl(['delete', 'network-attachment-definition', 'pol-net']);
            if (linkExists(POLICY_BRIDGE)) execFileSync('ip', ['link', 'del', POLICY_BRIDGE]);
          }
        });

        it('kube-apiserver restarts: the informers list and watch again (a NAD made after the restart reaches the cache), and the next pod gets it', async () => {
          const cached = (): Promise<{ nads?: string[] }> =>
            new Promise((resolve, reject) => {
              const req = httpRequest({ socketPath: DAEMONSET_SOCKET, path: '/debug/cache' }, (res) => {
                let body = '';
                res.on('data', (c: Buffer) => (body += c.toString()));
                res.on('end', () => resolve(JSON.parse(body) as { nads?: string[] }));
              });
              req.on('error', reject);
              req.end();
            });
          await cluster.restartApiserver();
          const nad = {
            apiVersion: 'k8s.cni.cncf.io/v1',
            kind: 'NetworkAttachmentDefinition',
            metadata: { name: 'after-restart', namespace: 'kube-system' },
            spec: {
              config: JSON.stringify({
                cniVersion: '1.0.0',
                name: 'after-restart',
                type: 'macvlan',
                master: EXAMPLE_LINKS.macvlanMaster,
                mode: 'bridge',
                ipam: { type: 'static', addresses: [{ address: '10.77.9.5/24' }] },
              }),
            },
          };
          await until('the API server answering kubectl', async () => (await kubectl(['apply', '-f', '-'], stringify(nad))) || undefined, 60_000);
          await until('the new NAD in the daemon cache', async () => (await cached()).nads?.includes('kube-system/after-restart') || undefined, 90_000);
          const pod = {
            apiVersion: 'v1',
            kind: 'Pod',
            metadata: { name: 'after-restart', namespace: 'default', annotations: { 'k8s.v1.cni.cncf.io/networks': 'kube-system/after-restart@net7' } },
            spec: { containers: [{ name: 'app', image: 'localhost/plexus-pause:1', imagePullPolicy: 'Never' }] },
          };
          await kubectl(['apply', '-f', '-'], stringify(pod));
          await until('after-restart Running', async () => (await getPod('after-restart'))?.status?.phase === 'Running', 120_000);
          const sandbox = (await cri.readySandbox('default', 'after-restart'))!;
          assert.deepEqual(ipAddresses(sandbox.netns!.split('/').pop()!, 'net7'), ['10.77.9.5/24']);
          const status = await until('network-status of after-restart', async () => (await getPod('after-restart'))?.metadata.annotations?.[STATUS]);
          assert.ok((JSON.parse(status) as { name: string }[]).some((e) => e.name === 'kube-system/after-restart'));
          await kubectl(['delete', 'pod', 'after-restart', '--wait=true', '--timeout=120s']);
          await kubectl(['delete', 'network-attachment-definition', '-n', 'kube-system', 'after-restart']);
        });
      }
    });
  }
  describe("SR-IOV through the real kubelet's device manager: device plugin (deploy/'s DaemonSet) → kubelet → scheduler → containerd → plexus → sriov", () => {
    const PF = '0000:5e:00.0';
    // The pool of deploy/'s ConfigMap that an X710 VF (8086:154c, iavf) falls in.
    const RESOURCE = 'intel.com/intel_sriov_netdevice';
    const pfName = `plxrn${process.pid % 100}`;
    let kernel: FakeKernel;
    let cri: ContainerdRig;
    const devinfo = () => join(dir, 'devinfo');
    const pluginPod = () => daemonSetPod('plexus-device-plugin');
    before(async () => {
      kernel = FakeKernel.create(join(dir, 'sriov-host'), { realNetdevs: true, pfs: [{ address: PF, vendor: '8086', device: '158b', numVfs: 2, netdev: pfName }] });
      // deploy/'s device plugin DaemonSet and ConfigMap as they are, on this node's layout: kubelet's
      // dir under the cluster's private dir, and the simulated host as the host root it reads.
      await kubectl(['label', 'node', cluster.nodeName, 'feature.node.kubernetes.io/network-sriov.capable=true', '--overwrite']);
      await kubectl(
        ['apply', '-f', '-'],
        deployManifest('plexus-device-plugin.yaml', {
          hostPaths: { '/var/run/k8s.cni.cncf.io/devinfo': devinfo(), '/var/lib/plexus/device-plugin': join(dir, 'dp-state') },
          kubeletDir: cluster.kubeletDir,
          hostRoot: kernel.root,
        }),
      );
      await until('the device plugin DaemonSet pod Running', async () => ((await pluginPod())?.status.containerStatuses?.every((c) => c.ready) ? true : undefined), 120_000).catch(
        async (err: Error) => {
          throw new Error(`${err.message}; ${JSON.stringify((await pluginPod())?.status)}; logs: ${podLogs('kube-system_plexus-device-plugin-')}`);
        },
      );
      // One-shot Plexus, told where this kubelet keeps its sockets; `sriov` acts on the simulated host.
      execFileSync(
        plexusctlPath,
        [
          'install',
          '--mode',
          'oneshot',
          '--cni-bin-dir',
          cluster.cniBinDir,
          '--cni-conf-dir',
          cluster.cniConfDir,
          '--kubeconfig',
          plexusKubeconfig,
          '--cni-dir',
          join(dir, 'plexus-sriov'),
          '--kubelet-dir',
          cluster.kubeletDir,
          '--device-info-dir',
          devinfo(),
        ],
        { stdio: 'pipe' },
      );
      copyFileSync(simulatedSriovPlugin(join(dir, 'sriov-launcher'), kernel.root), join(cluster.cniBinDir, 'sriov'));
      cri = ContainerdRig.attach(cluster.containerdDir, undefined);
      await sleep(3000);
    });
    after(async function () {
      cri?.close();
      if (this.test?.parent?.tests.some((t) => t.state === 'failed')) process.stderr.write(`      device plugin pod logs:\n${podLogs('kube-system_plexus-device-plugin-')}\n`);
      const pod = await pluginPod().catch(() => undefined);
      if (pod) assert.equal(pod.status.containerStatuses?.[0]?.restartCount, 0, 'the device plugin never restarted');
      await kubectl(['delete', 'daemonset', '-n', 'kube-system', 'plexus-device-plugin', '--wait=true', '--timeout=60s']);
      await until('the device plugin pod gone', async () => ((await pluginPod()) ? undefined : true), 60_000);
      kernel?.destroy();
    });

    it('kubelet advertises the pool, admits a pod asking for a VF, and the pod gets exactly the VF kubelet allocated; deleting it gives the VF back', async () => {
      const capacity = await until(`${RESOURCE} in the node's capacity`, async () => {
        const nodeJson = JSON.parse(await kubectl(['get', 'node', cluster.nodeName, '-o', 'json'])) as { status: { capacity: Record<string, string>; allocatable: Record<string, string> } };
        return nodeJson.status.allocatable[RESOURCE] === '2' ? nodeJson.status.capacity[RESOURCE] : undefined;
      });
      assert.equal(capacity, '2');
      const nad = {
        apiVersion: 'k8s.cni.cncf.io/v1',
        kind: 'NetworkAttachmentDefinition',
        metadata: { name: 'rn-sriov', namespace: 'default', annotations: { 'k8s.v1.cni.cncf.io/resourceName': RESOURCE } },
        spec: { config: JSON.stringify({ cniVersion: '1.0.0', name: 'rn-sriov', type: 'sriov', vlan: 12, ipam: { type: 'static', addresses: [{ address: '10.78.0.5/24' }] } }) },
      };
      const pod = {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'vf-pod', namespace: 'default', annotations: { 'k8s.v1.cni.cncf.io/networks': 'rn-sriov' } },
        spec: { containers: [{ name: 'app', image: 'localhost/plexus-pause:1', imagePullPolicy: 'Never', resources: { requests: { [RESOURCE]: '1' }, limits: { [RESOURCE]: '1' } } }] },
      };
      await kubectl(['apply', '-f', '-'], [stringify(nad), stringify(pod)].join('---\n'));
      await until('vf-pod Running', async () => (await getPod('vf-pod'))?.status?.phase === 'Running', 120_000);

      // What the real kubelet allocated, as PodResources reports it, is the VF in the pod.
      const devices = await podDevicesFromKubelet(join(cluster.kubeletDir, 'pod-resources', 'kubelet.sock'), 'default', 'vf-pod', 10_000);
      const [vf] = devices.get(RESOURCE) ?? [];
      assert.ok(vf, `kubelet allocated a VF: ${JSON.stringify([...devices])}`);
      const index = Number(vf.split('.').pop());
      const sandbox = (await cri.readySandbox('default', 'vf-pod'))!;
      const ns = sandbox.netns!.split('/').pop()!;
      assert.deepEqual(ipAddresses(ns, 'net1'), ['10.78.0.5/24']);
      assert.equal(linkExists(`${pfName}v${index}`), false, 'the allocated VF left the host');
      assert.ok(linkExists(`${pfName}v${1 - index}`), 'the other VF stayed');
      assert.equal(kernel.pfVfs(pfName)[index]?.vlan, 12, 'the PF side of that VF carries the NAD settings');
      const status = (await until('network-status of vf-pod', async () => {
        const p = await getPod('vf-pod');
        return p?.metadata.annotations?.[STATUS];
      }))!;
      const entry = (JSON.parse(status) as { name: string; 'device-info'?: { pci?: { 'pci-address'?: string } } }[]).find((e) => e.name === 'default/rn-sriov');
      assert.equal(entry?.['device-info']?.pci?.['pci-address'], vf);

      await kubectl(['delete', 'pod', 'vf-pod', '--wait=true', '--timeout=120s']);
      await until('the VF back on the host', async () => linkExists(`${pfName}v${index}`) || undefined, 60_000);
      assert.equal(kernel.pfVfs(pfName)[index]?.vlan, 0, 'the PF side reset');
    });

    it('kubelet restarts: the pool is registered again (plugin watcher) and the next pod gets a VF', async () => {
      // kubelet 1.37 has plugins_registry: the plugin registered through kubelet's plugin watcher.
      assert.ok(
        readdirSync(join(cluster.kubeletDir, 'plugins_registry')).some((f) => f.endsWith('.sock')),
        'a registration socket in plugins_registry',
      );
      await cluster.restartKubelet();
      await until(`${RESOURCE} allocatable again after the restart`, async () => {
        const nodeJson = JSON.parse(await kubectl(['get', 'node', cluster.nodeName, '-o', 'json'])) as { status: { allocatable: Record<string, string> } };
        return nodeJson.status.allocatable[RESOURCE] === '2' || undefined;
      });
      const pod = {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'vf-pod-2', namespace: 'default', annotations: { 'k8s.v1.cni.cncf.io/networks': 'rn-sriov' } },
        spec: { containers: [{ name: 'app', image: 'localhost/plexus-pause:1', imagePullPolicy: 'Never', resources: { limits: { [RESOURCE]: '1' } } }] },
      };
      await kubectl(['apply', '-f', '-'], stringify(pod));
      await until('vf-pod-2 Running', async () => (await getPod('vf-pod-2'))?.status?.phase === 'Running', 120_000);
      const sandbox = (await cri.readySandbox('default', 'vf-pod-2'))!;
      assert.deepEqual(ipAddresses(sandbox.netns!.split('/').pop()!, 'net1'), ['10.78.0.5/24']);
      await kubectl(['delete', 'pod', 'vf-pod-2', '--wait=true', '--timeout=120s']);
      await until('both VFs back on the host', async () => (linkExists(`${pfName}v0`) && linkExists(`${pfName}v1`)) || undefined, 60_000);
      await kubectl(['delete', 'network-attachment-definition', 'rn-sriov']);
    });

    describeWebhook({ cluster: () => cluster, kubectl: () => kubectl, dir: () => dir, cri: () => cri, resource: RESOURCE });
  });

  describe("SR-IOV through DRA: deploy/'s DRA driver → scheduler (CEL) → kubelet NodePrepareResources → containerd → plexus (the claim's VF) → sriov; the network data in the claim", () => {
    const pfName = `plxrd${process.pid % 100}`;
    let kernel: FakeKernel;
    let cri: ContainerdRig;
    const devinfo = () => join(dir, 'devinfo');
    const driverPod = () => daemonSetPod('plexus-dra-driver');
    const examples = () => parseAllDocuments(readFileSync(join(repoRoot(), 'examples', 'dra.yaml'), 'utf8')).map((d) => d.toJS() as { kind: string; metadata: { name: string } });
    before(async () => {
      kernel = FakeKernel.create(join(dir, 'dra-host'), { realNetdevs: true, pfs: [{ address: '0000:af:00.0', vendor: '8086', device: '158b', numVfs: 2, netdev: pfName, numa: 1 }] });
      await kubectl(['label', 'node', cluster.nodeName, 'feature.node.kubernetes.io/network-sriov.capable=true', '--overwrite']);
      // The device plugin was removed above; its ConfigMap goes too (else the DRA driver leaves it the VFs it selects).
      await kubectl(['delete', 'configmap', '-n', 'kube-system', 'plexus-device-plugin', '--ignore-not-found']);
      // deploy/'s DRA driver as it is, its pool on this host's PF (the ConfigMap names PFs).
      const manifest = deployManifest('plexus-dra-driver.yaml', {
        hostPaths: { '/var/run/k8s.cni.cncf.io/devinfo': devinfo(), '/var/lib/plexus/dra': join(dir, 'dra-state'), '/var/run/cdi': join(dir, 'cdi') },
        kubeletDir: cluster.kubeletDir,
        hostRoot: kernel.root,
        env: { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(CLUSTER_PORTS.apiserver) },
      }).replace('"pfNames": ["ens2f0", "ens2f1"]', `"pfNames": ["${pfName}"]`);
      assert.ok(manifest.includes(pfName), 'the ConfigMap names the PF');
      await kubectl(['apply', '-f', '-'], manifest);
      await until('the DRA driver DaemonSet pod Running', async () => ((await driverPod())?.status.containerStatuses?.every((c) => c.ready) ? true : undefined), 120_000).catch(async (err: Error) => {
        throw new Error(`${err.message}; ${JSON.stringify((await driverPod())?.status)}; logs: ${podLogs('kube-system_plexus-dra-driver-')}`);
      });
      execFileSync(
        plexusctlPath,
        [
          'install',
          ...['--mode', 'oneshot', '--cni-bin-dir', cluster.cniBinDir, '--cni-conf-dir', cluster.cniConfDir, '--kubeconfig', plexusKubeconfig],
          ...['--cni-dir', join(dir, 'plexus-sriov'), '--kubelet-dir', cluster.kubeletDir, '--device-info-dir', devinfo()],
        ],
        { stdio: 'pipe' },
      );
      copyFileSync(simulatedSriovPlugin(join(dir, 'sriov-launcher-dra'), kernel.root), join(cluster.cniBinDir, 'sriov'));
      cri = ContainerdRig.attach(cluster.containerdDir, undefined);
    });
    after(async function () {
      cri?.close();
      if (this.test?.parent?.tests.some((t) => t.state === 'failed')) process.stderr.write(`      DRA driver pod logs:\n${podLogs('kube-system_plexus-dra-driver-')}\n`);
      await kubectl(['delete', 'pod', 'dra-vf', '--ignore-not-found', '--wait=true', '--timeout=120s']);
      await kubectl(['delete', '-f', join(repoRoot(), 'examples', 'dra.yaml'), '--ignore-not-found']);
      await kubectl(['delete', 'daemonset', '-n', 'kube-system', 'plexus-dra-driver', '--ignore-not-found', '--wait=true', '--timeout=60s']);
      await until('the DRA driver pod gone', async () => ((await driverPod()) ? undefined : true), 60_000);
      kernel?.destroy();
    });

    it("examples/dra.yaml's pod: its claim is allocated a VF of the PF, prepared by the driver, the VF moved into the pod by plexus → sriov; the claim shows the network data; deleting the pod gives the VF back exactly as it was and the claim goes", async () => {
      await until('the slice of the node', async () => ((await kubectl(['get', 'resourceslices', '-o', 'json'])).includes(pfName) ? true : undefined), 60_000);
      const vfsBefore = new Map(kernel.pfVfs(pfName).map((v, i) => [i, v]));
      const macsBefore = [0, 1].map((i) => ipJson<{ address: string; mtu: number }[]>(['-j', 'link', 'show', `${pfName}v${i}`])[0]!);
      // The example as a user applies it: classes, templates, NAD, pod.
      await kubectl(['apply', '-f', join(repoRoot(), 'examples', 'dra.yaml')]);
      assert.deepEqual(
        examples()
          .filter((d) => d.kind === 'ResourceClaimTemplate')
          .map((d) => d.metadata.name),
        ['one-x710-vf', 'two-vfs-one-numa-node', 'one-dpdk-vf'],
      );
      await until('dra-vf Running', async () => (await getPod('dra-vf'))?.status?.phase === 'Running', 120_000).catch(async (err: Error) => {
        const events = await kubectl(['get', 'events', '-o', 'jsonpath={range .items[*]}{.involvedObject.name}: {.reason} {.message}{"\\n"}{end}']);
        throw new Error(`${err.message}\n${events}\nDRA driver: ${podLogs('kube-system_plexus-dra-driver-')}`);
      });
      interface Claim {
        metadata: { name: string };
        status: {
          allocation: { devices: { results: { driver: string; pool: string; device: string }[] } };
          devices?: { driver: string; device: string; conditions: { type: string; status: string }[]; networkData: { interfaceName: string; ips: string[]; hardwareAddress: string } }[];
        };
      }
      const claimYaml = async (): Promise<Claim> => {
        const list = parse(await kubectl(['get', 'resourceclaim', '-o', 'yaml'])) as { items: Claim[] };
        return list.items.find((c) => c.metadata.name.startsWith('dra-vf-'))!;
      };
      const claim = await until('the network data in the claim (kubectl get resourceclaim -o yaml)', async () => ((await claimYaml())?.status.devices?.length ? claimYaml() : undefined));
      const [result] = claim.status.allocation.devices.results;
      assert.equal(result!.driver, 'sriov.plexus.network');
      const address = (
        JSON.parse(await kubectl(['get', 'resourceslices', '-o', 'json'])) as { items: { spec: { devices: { name: string; attributes: Record<string, { string?: string }> }[] } }[] }
      ).items
        .flatMap((sl) => sl.spec.devices)
        .find((d) => d.name === result!.device)!.attributes.pciAddress!.string!;
      const index = discover(kernel.host()).devices.find((d) => d.address === address)!.vfIndex!;
      const sandbox = (await cri.readySandbox('default', 'dra-vf'))!;
      const ns = sandbox.netns!.split('/').pop()!;
      assert.deepEqual(ipAddresses(ns, 'net1'), ['10.79.0.5/24'], 'the VF is net1 in the pod');
      assert.equal(linkExists(`${pfName}v${index}`), false, 'the claimed VF left the host');
      assert.ok(linkExists(`${pfName}v${1 - index}`), 'the other VF stayed');
      assert.equal(kernel.pfVfs(pfName)[index]?.vlan, 100, "the PF side carries the NAD's VLAN");
      const mac = ipJson<{ address: string }[]>(['-n', ns, '-j', 'link', 'show', 'net1'])[0]!.address;
      const [entry] = claim.status.devices!;
      assert.deepEqual([entry!.driver, entry!.device], [result!.driver, result!.device]);
      assert.deepEqual(entry!.networkData, { interfaceName: 'net1', ips: ['10.79.0.5/24'], hardwareAddress: mac });
      assert.deepEqual(
        entry!.conditions.map((c) => `${c.type}=${c.status}`),
        ['Ready=True'],
      );
      // The CDI spec kubelet got for the claim names the VF, with the device plugin's env.
      const specs = readdirSync(join(dir, 'cdi'));
      assert.equal(specs.length, 1);
      assert.ok(readFileSync(join(dir, 'cdi', specs[0]!), 'utf8').includes(`PCIDEVICE_INTEL_COM_INTEL_SRIOV_DRA=${address}`));

      await kubectl(['delete', 'pod', 'dra-vf', '--wait=true', '--timeout=120s']);
      await until('the VF back on the host', async () => linkExists(`${pfName}v${index}`) || undefined, 60_000);
      assert.deepEqual(kernel.pfVfs(pfName)[index], vfsBefore.get(index), 'the PF side of the VF as it was');
      const back = ipJson<{ address: string; mtu: number }[]>(['-j', 'link', 'show', `${pfName}v${index}`])[0]!;
      assert.deepEqual([back.address, back.mtu], [macsBefore[index]!.address, macsBefore[index]!.mtu], 'its MAC and MTU as they were');
      await until('the claim deleted with its pod (deallocated)', async () => ((await claimYaml()) ? undefined : true), 60_000);
      await until('the claim unprepared', async () => (readdirSync(join(dir, 'cdi')).length === 0 ? true : undefined), 60_000);
    });
  });
});
