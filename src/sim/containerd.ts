/**
 * containerd CRI rig (used by the tests and by `plexusctl demo`): a private containerd (config, socket, root and state under one scratch
 * dir), a pause image built locally from catatonit, and a small CRI client over gRPC. Debian's containerd 1.6 by default; containerd
 * 2.x built by scripts/build-cluster.sh where CDI devices must be applied (1.6 ignores them).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { findAbove, requireAbove } from '../util/find-above.js';
import { importImage, ociImageTar } from './image.js';
import { stopPid } from '../util/pid.js';

/** The CRI subset proto next to the bundle (dist/) or in the source tree, whichever is above this module. */
function protoPath(): string {
  return requireAbove(import.meta.url, ['cri-runtime-v1.proto', join('src', 'sim', 'cri-runtime-v1.proto')]);
}
export const PAUSE_IMAGE = 'localhost/plexus-pause:1';

export interface PodSpec {
  name: string;
  namespace?: string;
  uid?: string;
  annotations?: Record<string, string>;
  portMappings?: { protocol: 'TCP' | 'UDP'; container_port: number; host_port: number; host_ip?: string }[];
}

export interface SandboxStatus {
  id: string;
  metadata?: { name: string; namespace: string; uid: string };
  state: string;
  network?: { ip: string; additional_ips: { ip: string }[] };
  annotations: Record<string, string>;
}

type Unary = (req: object, meta: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void;

/** A pause image as an OCI layout tar: /pause is catatonit, run as `catatonit -P`. */
export function buildPauseImage(dir: string): string {
  const root = join(dir, 'pause-rootfs');
  mkdirSync(root, { recursive: true });
  copyFileSync('/usr/bin/catatonit', join(root, 'pause'));
  chmodSync(join(root, 'pause'), 0o755);
  return ociImageTar(dir, 'pause.tar', { name: PAUSE_IMAGE, rootfs: root, entrypoint: ['/pause', '-P'] });
}

/** containerd 2.x as scripts/build-cluster.sh builds it: its binaries, and the dirs its CDI registry reads. */
export interface Containerd2 {
  binDir: string;
  cdiSpecDirs: string[];
}

/** The containerd 2.x binaries built under .tools/containerd/ (the newest version). */
export function containerd2Dir(): string {
  const tools = findAbove(import.meta.url, [join('.tools', 'containerd')]);
  const versions = tools ? readdirSync(tools).filter((v) => readdirSync(join(tools, v)).some((f) => f.startsWith('.built-'))) : [];
  if (!tools || !versions.length) throw new Error('containerd 2.x is not built: run sh scripts/build-cluster.sh');
  return join(tools, versions.sort().at(-1)!);
}

/** CRI config of containerd 1.6 (version 2) or 2.x (version 3: the CRI plugin split into runtime and images; CDI always on). */
function criConfig(rig: { socket: string; binDir: string; confDir: string }, dir: string, v2: Containerd2 | undefined): string {
  const head = `root = "${join(dir, 'root')}"
state = "${join(dir, 'state')}"
[grpc]
  address = "${rig.socket}"
[ttrpc]
  address = "${rig.socket}.ttrpc"
`;
  if (!v2)
    return `version = 2
${head}[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "${rig.binDir}"
    conf_dir = "${rig.confDir}"
    max_conf_num = 1
`;
  const platform = `linux/${process.arch === 'x64' ? 'amd64' : process.arch}`;
  // Images are imported through the transfer service, which unpacks only for the platforms named here.
  return `version = 3
${head}[plugins."io.containerd.transfer.v1.local"]
  [[plugins."io.containerd.transfer.v1.local".unpack_config]]
    platform = "${platform}"
    snapshotter = "native"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "native"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "${PAUSE_IMAGE}"
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  cdi_spec_dirs = [${v2.cdiSpecDirs.map((d) => `"${d}"`).join(', ')}]
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["${rig.binDir}"]
    conf_dir = "${rig.confDir}"
    max_conf_num = 1
`;
}

export class ContainerdRig {
  readonly socket: string;
  readonly confDir: string;
  readonly binDir: string;
  private proc: ChildProcess | undefined;
  /** containerd's pid when this process did not start it (attach). */
  private attachedPid: number | undefined;
  private client: grpc.Client | undefined;
  private methods: Record<string, Unary> = {};

  private constructor(readonly dir: string) {
    this.socket = join(dir, 'containerd.sock');
    this.confDir = join(dir, 'net.d');
    this.binDir = join(dir, 'cnibin');
  }

  /**
   * Starts containerd with its CNI bin dir holding the reference plugins plus `extraPlugins`.
   * `detached`: it outlives this process (plexusctl cluster up); stop it with attach(dir, pid).stop().
   */
  static async start(dir: string, extraPlugins: Record<string, string> = {}, opts: { detached?: boolean; containerd2?: Containerd2 } = {}): Promise<ContainerdRig> {
    const rig = new ContainerdRig(dir);
    mkdirSync(rig.confDir, { recursive: true });
    mkdirSync(rig.binDir, { recursive: true });
    // containerd 1.6 takes one bin dir: link the reference plugins and ours into it.
    for (const name of readdirSync('/usr/lib/cni')) symlinkSync(join('/usr/lib/cni', name), join(rig.binDir, name));
    for (const [name, path] of Object.entries(extraPlugins)) symlinkSync(path, join(rig.binDir, name));
    const config = criConfig(rig, dir, opts.containerd2);
    writeFileSync(join(dir, 'config.toml'), config);
    const log = join(dir, 'containerd.log');
    const v2 = opts.containerd2;
    // containerd finds its runc shim on PATH: 2.x's own shim first.
    rig.proc = spawn('sh', ['-c', `exec ${v2 ? join(v2.binDir, 'containerd') : 'containerd'} --config ${join(dir, 'config.toml')} >${log} 2>&1`], {
      stdio: 'ignore',
      detached: opts.detached === true,
      env: { ...process.env, NODE_EXTRA_CA_CERTS: '', ...(v2 ? { PATH: `${v2.binDir}:${process.env.PATH ?? ''}` } : {}) },
    });
    if (opts.detached) rig.proc.unref();
    for (let i = 0; i < 100 && !existsSync(rig.socket); i++) await sleep(100);
    if (!existsSync(rig.socket)) throw new Error(`containerd did not start: ${readFileSync(log, 'utf8').slice(-2000)}`);
    importImage(rig.socket, buildPauseImage(dir), v2 ? join(v2.binDir, 'ctr') : undefined);
    rig.connect();
    return rig;
  }

  /** A containerd another process started in `dir` (its pid recorded there), to stop it. */
  static attach(dir: string, pid: number | undefined): ContainerdRig {
    const rig = new ContainerdRig(dir);
    rig.attachedPid = pid;
    rig.connect();
    return rig;
  }

  /** containerd's pid. */
  get pid(): number | undefined {
    return this.proc?.pid ?? this.attachedPid;
  }

  private connect(): void {
    const def = protoLoader.loadSync(protoPath(), { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
    const pkg = grpc.loadPackageDefinition(def) as unknown as { runtime: { v1: { RuntimeService: grpc.ServiceClientConstructor } } };
    const client = new pkg.runtime.v1.RuntimeService(`unix://${this.socket}`, grpc.credentials.createInsecure());
    this.client = client;
    this.methods = client as unknown as Record<string, Unary>;
  }

  /** Closes the CRI client (containerd keeps running). */
  close(): void {
    this.client?.close();
  }

  call<T>(method: string, req: object, timeoutMs = 60000): Promise<T> {
    return new Promise((resolve, reject) => {
      const fn = this.methods[method];
      if (!fn) return reject(new Error(`no CRI method ${method}`));
      fn.call(this.client, req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(err) : resolve(res as T)));
    });
  }

  async waitReady(): Promise<void> {
    for (let i = 0; i < 50; i++) {
      const s = await this.call<{ status: { conditions: { type: string; status: boolean }[] } }>('Status', { verbose: false });
      // What kubelet waits for (containerd 2.x adds a deprecation-warnings condition, false on cgroup v1).
      if (['RuntimeReady', 'NetworkReady'].every((t) => s.status.conditions.some((c) => c.type === t && c.status))) return;
      await sleep(200);
    }
    throw new Error('containerd CRI never became ready (RuntimeReady/NetworkReady)');
  }

  async runPod(spec: PodSpec): Promise<string> {
    const res = await this.call<{ pod_sandbox_id: string }>('RunPodSandbox', {
      config: {
        metadata: { name: spec.name, uid: spec.uid ?? `uid-${spec.name}`, namespace: spec.namespace ?? 'default', attempt: 0 },
        hostname: spec.name,
        log_directory: join(this.dir, 'logs', spec.name),
        port_mappings: spec.portMappings ?? [],
        annotations: spec.annotations ?? {},
        labels: { 'plexus.test/pod': spec.name },
        linux: { security_context: { namespace_options: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } } },
      },
      runtime_handler: '',
    });
    return res.pod_sandbox_id;
  }

  async podStatus(id: string): Promise<SandboxStatus & { netns?: string }> {
    const res = await this.call<{ status: SandboxStatus; info: Record<string, string> }>('PodSandboxStatus', { pod_sandbox_id: id, verbose: true });
    const info = res.info.info ? (JSON.parse(res.info.info) as { runtimeSpec?: { linux?: { namespaces?: { type: string; path?: string }[] } } }) : {};
    const netns = info.runtimeSpec?.linux?.namespaces?.find((n) => n.type === 'network')?.path;
    return { ...res.status, ...(netns ? { netns } : {}) };
  }

  async removePod(id: string): Promise<void> {
    await this.call('StopPodSandbox', { pod_sandbox_id: id });
    await this.call('RemovePodSandbox', { pod_sandbox_id: id });
  }

  /** The ready sandbox of a pod, with its netns path (as kubelet made it), if there is one. */
  async readySandbox(namespace: string, name: string): Promise<(SandboxStatus & { netns?: string }) | undefined> {
    for (const { id } of await this.listPods()) {
      const s = await this.podStatus(id);
      if (s.state === 'SANDBOX_READY' && s.metadata?.namespace === namespace && s.metadata.name === name) return s;
    }
    return undefined;
  }

  /** The environment of a sandbox's containers as the runtime put it in their OCI spec (CDI edits applied), by container name. */
  async containerEnv(sandboxId: string): Promise<Record<string, string[]>> {
    const { containers } = await this.call<{ containers: { id: string; metadata?: { name: string } }[] }>('ListContainers', { filter: { pod_sandbox_id: sandboxId } });
    const out: Record<string, string[]> = {};
    for (const c of containers) {
      const res = await this.call<{ info: Record<string, string> }>('ContainerStatus', { container_id: c.id, verbose: true });
      const info = res.info.info ? (JSON.parse(res.info.info) as { runtimeSpec?: { process?: { env?: string[] } } }) : {};
      out[c.metadata?.name ?? c.id] = info.runtimeSpec?.process?.env ?? [];
    }
    return out;
  }

  async listPods(): Promise<{ id: string }[]> {
    return (await this.call<{ items: { id: string }[] }>('ListPodSandbox', {})).items;
  }

  /**
   * Removes every sandbox still there (a failed test may leave one; killing containerd would orphan
   * its netns), stops containerd by its PID and removes its state; leftover shims are killed.
   */
  async stop(): Promise<void> {
    // A sandbox whose CNI DEL fails keeps its netns through StopPodSandbox: noted here, removed below.
    const netns: string[] = [];
    try {
      for (const pod of await this.listPods()) {
        const path = (await this.podStatus(pod.id).catch(() => undefined))?.netns;
        if (path) netns.push(path);
        await this.removePod(pod.id).catch(() => undefined);
      }
    } catch {
      /* containerd already gone */
    }
    this.client?.close();
    if (this.proc && this.proc.exitCode === null) {
      this.proc.kill('SIGTERM');
      for (let i = 0; i < 50 && this.proc.exitCode === null; i++) await sleep(100);
      if (this.proc.exitCode === null) this.proc.kill('SIGKILL');
    } else if (this.attachedPid) {
      await stopPid(this.attachedPid, 5000);
    }
    try {
      execFileSync('pkill', ['-f', `containerd-shim.*${this.socket}`], { stdio: 'ignore' });
    } catch {
      /* none left */
    }
    // runc leaves mounts of the native snapshotter only while sandboxes live; remove what is ours.
    try {
      execFileSync('sh', ['-c', `grep -o ' ${this.dir}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l`], { stdio: 'ignore' });
    } catch {
      /* nothing mounted */
    }
    for (const path of netns) removeNetnsMount(path);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A runtime's named netns (a bind mount on a file): unmounted and removed; the interfaces in it go with it. */
function removeNetnsMount(path: string): void {
  if (!existsSync(path)) return;
  try {
    execFileSync('umount', ['-l', path], { stdio: 'ignore' });
  } catch {
    /* not mounted any more */
  }
  rmSync(path, { force: true });
}
