/**
 * A simulated node (for `plexusctl demo` and the meta-plugin tests): the API server double holding the examples/ NADs and
 * pods, the stand-in links the examples name, a cluster network (bridge + host-local) on disk,
 * and a meta conf pointing at all of it. Everything lives under one scratch dir and is removed.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { AttachmentStore } from '../meta/store.js';
import { ApiServerDouble } from './apiserver.js';
import { requireAbove } from '../util/find-above.js';

/** The repository root (where examples/ and bin/ are), found above this module. */
export function repoRoot(): string {
  return dirname(dirname(requireAbove(import.meta.url, [join('examples', 'pods.yaml')], 'run from a checkout of the repository')));
}

function ip(args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

export const EXAMPLE_LINKS = { macvlanMaster: 'plx-mv-master', vf: 'plx-vf0', bridgeB: 'plx-br-b' };

/** The host links the example NADs name: a macvlan master and a veth end standing in for a VF. Returns what to delete. */
export function addExampleLinks(): string[] {
  ip(['link', 'add', EXAMPLE_LINKS.macvlanMaster, 'type', 'veth', 'peer', 'name', 'plx-mv-peer']);
  ip(['link', 'set', EXAMPLE_LINKS.macvlanMaster, 'up']);
  ip(['link', 'add', EXAMPLE_LINKS.vf, 'type', 'veth', 'peer', 'name', 'plx-vf0p']);
  return [EXAMPLE_LINKS.macvlanMaster, EXAMPLE_LINKS.vf];
}

export interface PluginRun {
  status: number | null;
  json: Record<string, unknown> | undefined;
  stdout: string;
  stderr: string;
}

type Doc = { kind: string; metadata: { name: string; namespace: string }; [k: string]: unknown };

export function exampleDocs(file: string): Doc[] {
  return parseAllDocuments(readFileSync(join(repoRoot(), 'examples', file), 'utf8')).map((d) => d.toJS() as Doc);
}

export class SimNode {
  readonly api = new ApiServerDouble();
  readonly kubeconfig: string;
  readonly multusConfDir: string;
  readonly cniDir: string;
  readonly deviceInfoDir: string;
  readonly binDir: string;
  readonly clusterConflist: string;
  readonly clusterBridge = 'plx-cluster0';
  private readonly links: string[] = [];

  constructor(readonly dir: string) {
    this.kubeconfig = join(dir, 'kubeconfig');
    this.multusConfDir = join(dir, 'multus.d');
    this.cniDir = join(dir, 'cni');
    this.deviceInfoDir = join(dir, 'devinfo');
    this.binDir = join(dir, 'bin');
    this.clusterConflist = join(dir, 'cluster', '10-cluster.conflist');
  }

  async start(): Promise<void> {
    for (const d of [this.multusConfDir, this.binDir, join(this.dir, 'cluster')]) mkdirSync(d, { recursive: true });
    await this.api.start();
    writeFileSync(this.kubeconfig, this.api.kubeconfig());
    for (const doc of exampleDocs('network-attachment-definitions.yaml')) this.api.put('k8s.cni.cncf.io/v1', 'network-attachment-definitions', doc as never);
    writeFileSync(
      this.clusterConflist,
      JSON.stringify({
        cniVersion: '1.0.0',
        name: 'cluster',
        plugins: [
          {
            type: 'bridge',
            bridge: this.clusterBridge,
            isGateway: false,
            ipam: { type: 'host-local', dataDir: join(this.dir, 'ipam'), ranges: [[{ subnet: '10.76.0.0/24', gateway: '10.76.0.1' }]], routes: [{ dst: '0.0.0.0/0', gw: '10.76.0.1' }] },
          },
        ],
      }),
    );
    // Bridges are made by the bridge plugin; the node removes them with its own links.
    this.links.push(this.clusterBridge, EXAMPLE_LINKS.bridgeB);
    this.links.push(...addExampleLinks());
  }

  /** Stops the API double and removes every link the node (or a plugin for it) made on the host. */
  async stop(): Promise<void> {
    await this.api.stop();
    for (const l of this.links.splice(0)) {
      try {
        ip(['link', 'del', l]);
      } catch {
        /* not there (a veth goes with its peer; a bridge may never have been made) */
      }
    }
  }

  /** The meta plugin's conf as a runtime would read it; `extra` overrides keys. */
  metaConf(extra: Record<string, unknown> = {}, cniVersion = '1.0.0'): Record<string, unknown> {
    return {
      cniVersion,
      name: 'plexus',
      type: 'plexus',
      kubeconfig: this.kubeconfig,
      clusterNetwork: this.clusterConflist,
      confDir: this.multusConfDir,
      cniDir: this.cniDir,
      binDir: this.binDir,
      deviceInfoDir: this.deviceInfoDir,
      podResourcesSocket: join(this.dir, 'pod-resources', 'kubelet.sock'),
      kubeletCheckpoint: join(this.dir, 'kubelet_internal_checkpoint'),
      capabilities: { 'io.kubernetes.cri.pod-annotations': true, portMappings: true },
      ...extra,
    };
  }

  /** metaConf with the pod's annotations passed as containerd passes them (the pod-annotations capability). */
  podConf(annotations: Record<string, unknown>, extra: Record<string, unknown> = {}, cniVersion = '1.0.0'): Record<string, unknown> {
    return { ...this.metaConf(extra, cniVersion), runtimeConfig: { 'io.kubernetes.cri.pod-annotations': annotations } };
  }

  /** podConf for the shim of a node daemon serving `socket`. */
  shimConf(socket: string, annotations: Record<string, unknown>, extra: Record<string, unknown> = {}): Record<string, unknown> {
    return this.podConf(annotations, { type: 'plexus-shim', daemonSocket: socket, ...extra });
  }

  /** The meta plugin's attachment records on this node. */
  attachments(): AttachmentStore {
    return new AttachmentStore(join(this.cniDir, 'attachments'));
  }

  /** A pod of examples/pods.yaml into the API double. */
  addExamplePod(name: string, nodeName = 'plx-node'): Doc {
    const pod = exampleDocs('pods.yaml').find((d) => d.metadata.name === name);
    if (!pod) throw new Error(`no example pod ${name}`);
    // The UID the containerd rig gives the sandbox by default: the API's pod and the runtime's agree.
    this.api.put('v1', 'pods', { ...pod, metadata: { uid: `uid-${name}`, ...pod.metadata }, spec: { ...(pod.spec as object), nodeName } } as never);
    return pod;
  }

  /** Runs the plexus plugin (or `plugin`) exactly as a runtime would: env + stdin, result or error on stdout. */
  exec(env: Record<string, string>, conf: Record<string, unknown>, plugin = join(repoRoot(), 'bin', 'plexus')): Promise<PluginRun> {
    return new Promise((resolve) => {
      // Asynchronous: the API double serves from this process.
      const child = spawn(plugin, [], { env: { PATH: process.env.PATH ?? '', CNI_PATH: '/usr/lib/cni', ...env } });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      child.on('close', (status) => {
        let json: Record<string, unknown> | undefined;
        try {
          json = stdout.trim() ? (JSON.parse(stdout) as Record<string, unknown>) : undefined;
        } catch {
          json = undefined;
        }
        resolve({ status, json, stdout, stderr });
      });
      child.stdin.end(JSON.stringify(conf));
    });
  }
}

/** CNI env of a pod sandbox as containerd sends it. */
export function podEnv(command: string, containerID: string, netns: string, pod: { name: string; namespace: string; uid?: string }): Record<string, string> {
  return {
    CNI_COMMAND: command,
    CNI_CONTAINERID: containerID,
    CNI_NETNS: netns,
    CNI_IFNAME: 'eth0',
    CNI_ARGS: `K8S_POD_NAMESPACE=${pod.namespace};K8S_POD_NAME=${pod.name};K8S_POD_INFRA_CONTAINER_ID=${containerID};K8S_POD_UID=${pod.uid ?? ''};IgnoreUnknown=1`,
  };
}

/**
 * The `sriov` plugin for a simulated SR-IOV host, as an operator would install it: a launcher that sets
 * PLEXUS_SRIOV_HOST_ROOT and runs the repository's plugin (the host root is never a NAD key).
 */
export function simulatedSriovPlugin(dir: string, hostRoot: string): string {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, 'sriov');
  writeFileSync(path, `#!/bin/sh\nPLEXUS_SRIOV_HOST_ROOT='${hostRoot}' exec '${join(repoRoot(), 'bin', 'sriov')}' "$@"\n`, { mode: 0o755 });
  return path;
}
