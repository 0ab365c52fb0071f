/**
 * A real single-node Kubernetes cluster on loopback, in one private directory (`plexusctl cluster`,
 * the real-node tests): etcd, kube-apiserver (real TLS from a CA made at `up`, service-account token
 * signing, Node + RBAC authorizers, the default admission chain plus NodeRestriction),
 * kube-controller-manager, kube-scheduler, and a kubelet on a private containerd, registered as a Node.
 * The binaries are built from pinned Go modules by scripts/build-cluster.sh. Kubeconfigs are written in
 * YAML as kubeadm writes them. `down` removes every process, mount, cgroup and rule it made.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { ApiClient } from '../k8s/client.js';
import { loadKubeconfig } from '../k8s/kubeconfig.js';
import type { KeyPair } from '../k8s/pki.js';
import { findAbove } from '../util/find-above.js';
import { pidAlive, stopPid } from '../util/pid.js';
import type { Containerd2 } from './containerd.js';

export const CLUSTER_PORTS = { apiserver: 16443, etcdClient: 12379, etcdPeer: 12380, kubelet: 10250, kubeletHealthz: 10248, controllerManager: 10257, scheduler: 10259 };
export const SERVICE_CIDR = '10.96.0.0/16';
/** The pods' cluster network (bridge + host-local) until Plexus is installed in front of it. */
export const POD_CIDR = '10.244.0.0/24';
const CLUSTER_BRIDGE = 'plxk8s0';

export interface ClusterOptions {
  dir: string;
  nodeName?: string;
  /** Where the binaries are (default: .tools/k8s/<version>/ of the repository). */
  binDir?: string;
  /** Start kubelet and containerd (default true); false gives a control plane only. */
  kubelet?: boolean;
  /** Run kubelet on containerd 2.x (CDI devices applied) instead of Debian's 1.6. */
  containerd2?: Containerd2;
  log?: (line: string) => void;
}

interface State {
  pids: Record<string, number>;
  /** Each component's command line, to restart it as it was started. */
  commands?: Record<string, string[]>;
  nodeName: string;
  startedMs: number;
}

/** The built components of the newest version under .tools/k8s/. */
export function componentsDir(): string {
  const tools = findAbove(import.meta.url, [join('.tools', 'k8s')]);
  const versions = tools ? readdirSync(tools).filter((v) => readdirSync(join(tools, v)).some((f) => f.startsWith('.built-'))) : [];
  if (!tools || !versions.length) throw new Error('the Kubernetes components are not built: run sh scripts/build-cluster.sh (about 20 minutes the first time)');
  return join(tools, versions.sort().at(-1)!);
}

import { clusterPki } from './cluster-pki.js';
import { removeKubeletCgroups, unmountBelow } from './node-host.js';

export { kubeletCgroups } from './node-host.js';

export class LocalCluster {
  readonly server = `https://127.0.0.1:${CLUSTER_PORTS.apiserver}`;
  readonly adminKubeconfig: string;
  /** The node's own credential (system:node:<name>), what kubelet uses. */
  readonly nodeKubeconfig: string;
  readonly nodeName: string;
  readonly kubeletDir: string;
  readonly containerdDir: string;
  readonly containerdSocket: string;
  readonly cniConfDir: string;
  readonly cniBinDir: string;
  private readonly log: (line: string) => void;

  constructor(readonly opts: ClusterOptions) {
    this.nodeName = opts.nodeName ?? this.readState()?.nodeName ?? 'plexus-node';
    this.adminKubeconfig = join(opts.dir, 'admin.conf');
    this.nodeKubeconfig = join(opts.dir, 'kubelet.conf');
    this.kubeletDir = join(opts.dir, 'kubelet');
    this.containerdDir = join(opts.dir, 'containerd');
    this.containerdSocket = join(this.containerdDir, 'containerd.sock');
    // The private containerd's (ContainerdRig's layout): plexusctl install puts Plexus there.
    this.cniConfDir = join(this.containerdDir, 'net.d');
    this.cniBinDir = join(this.containerdDir, 'cnibin');
    this.log = opts.log ?? (() => undefined);
  }

  private get bin(): string {
    return this.opts.binDir ?? componentsDir();
  }

  private statePath(): string {
    return join(this.opts.dir, 'cluster.json');
  }

  private readState(): State | undefined {
    try {
      return JSON.parse(readFileSync(this.statePath(), 'utf8')) as State;
    } catch {
      return undefined;
    }
  }

  private saveState(state: State): void {
    writeFileSync(this.statePath(), JSON.stringify(state, null, 2));
  }

  /** A component as a detached process with its own log file; its pid goes into the state file. */
  private start(name: string, cmd: string, args: string[], state: State): ChildProcess {
    const logFd = openSync(join(this.opts.dir, 'logs', `${name}.log`), 'a');
    const env = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', HOME: process.env.HOME ?? '/root' };
    const child = spawn(cmd, args, { detached: true, stdio: ['ignore', logFd, logFd], env });
    closeSync(logFd);
    child.unref();
    state.pids[name] = child.pid!;
    (state.commands ??= {})[name] = [cmd, ...args];
    this.saveState(state);
    return child;
  }

  private logTail(name: string): string {
    try {
      return readFileSync(join(this.opts.dir, 'logs', `${name}.log`), 'utf8').slice(-3000);
    } catch {
      return '';
    }
  }

  private async waitFor(what: string, component: string, ok: () => Promise<boolean>, timeoutMs: number, child?: ChildProcess): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (child && child.exitCode !== null) throw new Error(`${component} exited (${child.exitCode}) before ${what}:\n${this.logTail(component)}`);
      if (await ok().catch(() => false)) return;
      await sleep(250);
    }
    throw new Error(`${what}: not within ${timeoutMs / 1000} s; ${component} log:\n${this.logTail(component)}`);
  }

  async up(): Promise<void> {
    const dir = this.opts.dir;
    if (this.readState()) throw new Error(`a cluster is already up in ${dir} (plexusctl cluster down --dir ${dir})`);
    const bin = this.bin;
    for (const d of ['logs', 'etcd', 'pki', 'manifests']) mkdirSync(join(dir, d), { recursive: true, mode: 0o700 });
    const started = Date.now();
    const state: State = { pids: {}, nodeName: this.nodeName, startedMs: started };
    this.saveState(state);
    const t0 = Date.now();
    const pki = clusterPki(this.opts.dir, this.nodeName, this.server);
    this.log(`PKI and kubeconfigs made (${Date.now() - t0} ms)`);

    const etcd = this.start(
      'etcd',
      join(bin, 'etcd'),
      [
        '--name',
        'plexus',
        '--data-dir',
        join(dir, 'etcd'),
        '--listen-client-urls',
        `http://127.0.0.1:${CLUSTER_PORTS.etcdClient}`,
        '--advertise-client-urls',
        `http://127.0.0.1:${CLUSTER_PORTS.etcdClient}`,
        '--listen-peer-urls',
        `http://127.0.0.1:${CLUSTER_PORTS.etcdPeer}`,
        '--initial-advertise-peer-urls',
        `http://127.0.0.1:${CLUSTER_PORTS.etcdPeer}`,
        '--initial-cluster',
        `plexus=http://127.0.0.1:${CLUSTER_PORTS.etcdPeer}`,
        '--listen-metrics-urls',
        'http://127.0.0.1:0',
        '--unsafe-no-fsync',
        '--quota-backend-bytes',
        String(2 * 1024 ** 3),
      ],
      state,
    );
    await this.waitFor('etcd healthy', 'etcd', async () => (await fetch(`http://127.0.0.1:${CLUSTER_PORTS.etcdClient}/health`)).ok, 30_000, etcd);
    this.log(`etcd healthy (${Date.now() - started} ms)`);

    const p = (n: string) => join(dir, 'pki', n);
    const apiserver = this.start(
      'kube-apiserver',
      join(bin, 'kube-apiserver'),
      [
        `--etcd-servers=http://127.0.0.1:${CLUSTER_PORTS.etcdClient}`,
        '--bind-address=127.0.0.1',
        '--advertise-address=127.0.0.1',
        `--secure-port=${CLUSTER_PORTS.apiserver}`,
        `--tls-cert-file=${pki.apiserver.cert}`,
        `--tls-private-key-file=${pki.apiserver.key}`,
        `--client-ca-file=${pki.ca}`,
        `--kubelet-client-certificate=${pki.apiserverKubelet.cert}`,
        `--kubelet-client-key=${pki.apiserverKubelet.key}`,
        `--service-account-key-file=${p('sa.pub')}`,
        `--service-account-signing-key-file=${p('sa.key')}`,
        '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
        '--authorization-mode=Node,RBAC',
        '--enable-admission-plugins=NodeRestriction',
        `--service-cluster-ip-range=${SERVICE_CIDR}`,
        '--allow-privileged=true',
        '--enable-bootstrap-token-auth=false',
        '--profiling=false',
        `--cert-dir=${join(dir, 'pki')}`,
        '--endpoint-reconciler-type=none',
      ],
      state,
    );
    await this.apiserverReady(apiserver);
    this.log(`kube-apiserver ready (${Date.now() - started} ms)`);

    this.start(
      'kube-controller-manager',
      join(bin, 'kube-controller-manager'),
      [
        `--kubeconfig=${join(dir, 'controller-manager.conf')}`,
        `--authentication-kubeconfig=${join(dir, 'controller-manager.conf')}`,
        `--authorization-kubeconfig=${join(dir, 'controller-manager.conf')}`,
        '--bind-address=127.0.0.1',
        `--secure-port=${CLUSTER_PORTS.controllerManager}`,
        '--leader-elect=false',
        '--use-service-account-credentials=true',
        `--service-account-private-key-file=${p('sa.key')}`,
        `--root-ca-file=${pki.ca}`,
        `--cluster-signing-cert-file=${pki.ca}`,
        `--cluster-signing-key-file=${p('ca.key')}`,
        `--service-cluster-ip-range=${SERVICE_CIDR}`,
      ],
      state,
    );
    this.start(
      'kube-scheduler',
      join(bin, 'kube-scheduler'),
      [
        `--kubeconfig=${join(dir, 'scheduler.conf')}`,
        `--authentication-kubeconfig=${join(dir, 'scheduler.conf')}`,
        `--authorization-kubeconfig=${join(dir, 'scheduler.conf')}`,
        '--bind-address=127.0.0.1',
        `--secure-port=${CLUSTER_PORTS.scheduler}`,
        '--leader-elect=false',
      ],
      state,
    );
    if (this.opts.kubelet === false) return;
    await this.startNode(state, pki);
    this.log(`node ${this.nodeName} Ready (${Date.now() - started} ms)`);
  }

  private async startNode(state: State, pki: { ca: string; kubeletServing: KeyPair }): Promise<void> {
    const dir = this.opts.dir;
    const { ContainerdRig } = await import('./containerd.js');
    // The pods' cluster network until Plexus is installed in front of it (00-plexus.conflist then wins).
    const cri = await ContainerdRig.start(this.containerdDir, {}, { detached: true, ...(this.opts.containerd2 ? { containerd2: this.opts.containerd2 } : {}) });
    state.pids.containerd = cri.pid!;
    this.saveState(state);
    writeFileSync(
      join(cri.confDir, '10-cluster.conflist'),
      JSON.stringify({
        cniVersion: '1.0.0',
        name: 'cluster',
        plugins: [
          {
            type: 'bridge',
            bridge: CLUSTER_BRIDGE,
            isGateway: true,
            ipMasq: false,
            ipam: { type: 'host-local', dataDir: join(dir, 'ipam'), ranges: [[{ subnet: POD_CIDR }]], routes: [{ dst: '0.0.0.0/0' }] },
          },
          { type: 'portmap', capabilities: { portMappings: true } },
        ],
      }),
    );
    await cri.waitReady();
    cri.close();
    mkdirSync(this.kubeletDir, { recursive: true });
    const config = {
      apiVersion: 'kubelet.config.k8s.io/v1beta1',
      kind: 'KubeletConfiguration',
      // This machine has cgroup v1 (hybrid) and no systemd as PID 1: see the README's real-node section.
      failCgroupV1: false,
      cgroupDriver: 'cgroupfs',
      containerRuntimeEndpoint: `unix://${cri.socket}`,
      address: '127.0.0.1',
      port: CLUSTER_PORTS.kubelet,
      healthzBindAddress: '127.0.0.1',
      healthzPort: CLUSTER_PORTS.kubeletHealthz,
      readOnlyPort: 0,
      tlsCertFile: pki.kubeletServing.cert,
      tlsPrivateKeyFile: pki.kubeletServing.key,
      authentication: { anonymous: { enabled: false }, webhook: { enabled: true }, x509: { clientCAFile: pki.ca } },
      authorization: { mode: 'Webhook' },
      clusterDomain: 'cluster.local',
      clusterDNS: [],
      resolvConf: '',
      failSwapOn: false,
      podLogsDir: join(dir, 'pod-logs'),
      staticPodPath: join(dir, 'manifests'),
      // A scratch machine's disk: no evictions or image GC for lack of space.
      evictionHard: { 'memory.available': '1Mi', 'nodefs.available': '1%', 'imagefs.available': '1%', 'nodefs.inodesFree': '1%' },
      imageGCHighThresholdPercent: 100,
      imageGCLowThresholdPercent: 99,
      localStorageCapacityIsolation: false,
      // Pods in cgroups of their own under the kubelet's, removed at down.
      cgroupsPerQOS: true,
      enforceNodeAllocatable: [],
      makeIPTablesUtilChains: false,
      registerNode: true,
      serializeImagePulls: false,
      maxPods: 250,
      nodeStatusUpdateFrequency: '4s',
      syncFrequency: '10s',
      fileCheckFrequency: '5s',
      protectKernelDefaults: false,
    };
    writeFileSync(join(dir, 'kubelet-config.yaml'), stringify(config));
    await this.startKubelet(state);
  }

  private async startKubelet(state: State): Promise<void> {
    const kubelet = this.start(
      'kubelet',
      join(this.bin, 'kubelet'),
      [
        `--config=${join(this.opts.dir, 'kubelet-config.yaml')}`,
        `--kubeconfig=${this.nodeKubeconfig}`,
        `--root-dir=${this.kubeletDir}`,
        `--hostname-override=${this.nodeName}`,
        '--node-ip=127.0.0.1',
        '--v=1',
      ],
      state,
    );
    const admin = new ApiClient(await loadKubeconfig(this.adminKubeconfig), 5000);
    const startedAt = Date.now();
    await this.waitFor(
      `node ${this.nodeName} Ready`,
      'kubelet',
      async () => {
        const node = await admin.get<{ status?: { conditions?: { type: string; status: string; lastHeartbeatTime?: string }[] } }>(`/api/v1/nodes/${this.nodeName}`);
        // Ready as reported by this kubelet, not the condition its predecessor left.
        return node.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True' && Date.parse(c.lastHeartbeatTime ?? '') >= startedAt - 1000) ?? false;
      },
      120_000,
      kubelet,
    );
  }

  private async apiserverReady(apiserver: ChildProcess): Promise<void> {
    const admin = new ApiClient(await loadKubeconfig(this.adminKubeconfig), 5000);
    await this.waitFor('kube-apiserver ready', 'kube-apiserver', async () => (await admin.get<string>('/readyz')) === 'ok', 90_000, apiserver);
  }

  /** kube-apiserver stopped and started again as it was (an upgrade, a crash), after `downMs` away: every watch breaks. */
  async restartApiserver(downMs = 0): Promise<void> {
    const state = this.readState();
    const command = state?.commands?.['kube-apiserver'];
    if (!state || !command) throw new Error(`no kube-apiserver runs in ${this.opts.dir}`);
    await stopPid(state.pids['kube-apiserver']);
    if (downMs) await sleep(downMs);
    const [cmd, ...args] = command;
    await this.apiserverReady(this.start('kube-apiserver', cmd!, args, state));
  }

  /**
   * etcd forgets the history up to `revision` (a resourceVersion), as kube-apiserver's periodic
   * compaction does: a watch from before it is answered 410 Expired (where no watch cache answers).
   */
  async compactEtcd(revision: string): Promise<void> {
    const res = await fetch(`http://127.0.0.1:${CLUSTER_PORTS.etcdClient}/v3/kv/compaction`, { method: 'POST', body: JSON.stringify({ revision, physical: true }) });
    if (!res.ok) throw new Error(`etcd compaction to ${revision}: ${res.status} ${await res.text()}`);
  }

  /** kubelet stopped and started again on the same root dir, as an upgrade or a crash restarts it. */
  async restartKubelet(): Promise<void> {
    const state = this.readState();
    if (!state?.pids.kubelet) throw new Error(`no kubelet runs in ${this.opts.dir}`);
    await stopPid(state.pids.kubelet);
    await this.startKubelet(state);
  }

  /** Which components run, by their recorded pids. */
  status(): { up: boolean; components: Record<string, { pid: number; running: boolean }> } {
    const state = this.readState();
    const components: Record<string, { pid: number; running: boolean }> = {};
    for (const [name, pid] of Object.entries(state?.pids ?? {})) components[name] = { pid, running: pidAlive(pid) };
    return { up: state !== undefined && Object.values(components).every((c) => c.running), components };
  }

  /**
   * Stops everything in reverse (kubelet's pods through containerd first, so their CNI DELs run), then
   * removes mounts under the dir, the cgroups kubelet made, the cluster bridge and the dir itself.
   */
  async down(): Promise<void> {
    const dir = this.opts.dir;
    const state = this.readState();
    const pids = state?.pids ?? {};
    await stopPid(pids.kubelet);
    if (existsSync(this.containerdSocket)) {
      const { ContainerdRig } = await import('./containerd.js');
      await ContainerdRig.attach(this.containerdDir, pids.containerd).stop();
    }
    for (const name of ['kube-scheduler', 'kube-controller-manager', 'kube-apiserver', 'etcd']) await stopPid(pids[name]);
    unmountBelow(dir);
    removeKubeletCgroups();
    try {
      execFileSync('ip', ['link', 'del', CLUSTER_BRIDGE], { stdio: 'ignore' });
    } catch {
      /* never made, or gone */
    }
    rmSync(dir, { recursive: true, force: true });
  }
}
