/**
 * `plexusctl demo`: a simulated node. The API server double holds the example NADs and pods;
 * containerd (CRI) runs the example pods as sandboxes with `plexus` as the node's CNI; each pod's
 * interfaces are read back over netlink and its network-status is shown; then everything is torn
 * down and checked gone. Without containerd the pods are plain netns and the demo says so.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { NetHandle } from '../net/netlink.js';
import { ContainerdRig } from '../rig/containerd.js';
import { AttachmentStore } from '../meta/store.js';
import { hostLocalReservations } from '../rig/hostlocal.js';
import { SimNode, exampleDocs, podEnv, repoRoot } from '../rig/simnode.js';

const DEMO_PODS = ['two-nets', 'comma-list', 'vf-stand-in'];

interface DemoPod {
  name: string;
  namespace: string;
  netns: string;
  sandbox: string;
}

function hasCommand(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** IP reservations of host-local in the given data dirs (files named by address). */
function reservations(dirs: string[]): string[] {
  return dirs.flatMap((d) => hostLocalReservations(d).map((f) => `IP ${join(d, f)}`));
}

function plexusLeftovers(storeDir: string): string[] {
  const netns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.split(' ')[0] ?? '')
    .filter((n) => n.startsWith('plx'));
  const links = (JSON.parse(execFileSync('ip', ['-j', 'link', 'show'], { encoding: 'utf8' })) as { ifname: string }[]).map((l) => l.ifname).filter((n) => n.startsWith('plx'));
  const records = new AttachmentStore(storeDir).active();
  return [...netns.map((n) => `netns ${n}`), ...links.map((l) => `link ${l}`), ...records.map((r) => `store record ${r}`)];
}

async function showPod(log: (l: string) => void, pod: DemoPod, status: string | undefined): Promise<void> {
  const h = await NetHandle.openPath(pod.netns);
  try {
    for (const link of (await h.links()).filter((l) => l.name !== 'lo')) {
      const addrs = (await h.addresses(link.name)).filter((a) => a.scope === 0).map((a) => a.address);
      log(`${`${pod.namespace}/${pod.name}`.padEnd(22)} ${link.name.padEnd(7)} ${(link.mac ?? '').padEnd(18)} ${addrs.join(', ')}`);
    }
  } finally {
    h.close();
  }
  for (const e of JSON.parse(status ?? '[]') as { name: string; interface?: string; ips?: string[]; default: boolean }[]) {
    log(`${''.padEnd(22)}   network-status: ${e.interface ?? '-'} ← ${e.name}${e.default ? ' (default)' : ''} ${(e.ips ?? []).join(', ')}`);
  }
}

export async function runDemo(log: (line: string) => void, opts: { cri?: boolean } = {}): Promise<boolean> {
  const work = mkdtempSync(join(tmpdir(), 'plexus-demo-'));
  const node = new SimNode(join(work, 'node'));
  let cri: ContainerdRig | undefined;
  const pods: DemoPod[] = [];
  const withCri = opts.cri !== false && hasCommand('containerd') && hasCommand('runc') && existsSync('/usr/bin/catatonit');
  // host-local's default data dir for the example NADs without one (shared with anything else on the
  // host), and the cluster network's: only reservations that appear during the demo are its own.
  const ipamDirs = [join(node.dir, 'ipam'), ...exampleDocs('network-attachment-definitions.yaml').map((d) => `/var/lib/cni/networks/${d.metadata.name}`)];
  const reservedBefore = new Set(reservations(ipamDirs));
  try {
    await node.start();
    log(`API server double at ${node.api.url} with NetworkAttachmentDefinitions ${exampleDocs('network-attachment-definitions.yaml').map((d) => d.metadata.name).join(', ')}`);
    if (withCri) {
      cri = await ContainerdRig.start(join(work, 'containerd'), { plexus: join(repoRoot(), 'bin', 'plexus') });
      writeFileSync(join(cri.confDir, '00-plexus.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'plexus', plugins: [node.metaConf()] }));
      await cri.waitReady();
      log('containerd 1.6 (CRI) runs the pods; its CNI is plexus, the cluster network a bridge');
    } else {
      log('containerd not found: the pods are plain network namespaces, and plexus is called as a runtime would call it');
    }
    log('');
    log(`${'pod'.padEnd(22)} ${'if'.padEnd(7)} ${'mac'.padEnd(18)} addresses`);
    for (const name of DEMO_PODS) {
      const doc = node.addExamplePod(name);
      const annotations = (doc.metadata as unknown as { annotations?: Record<string, string> }).annotations ?? {};
      const meta = { name, namespace: doc.metadata.namespace, uid: `uid-${name}` };
      let pod: DemoPod;
      if (cri) {
        const sandbox = await cri.runPod({ ...meta, annotations });
        pod = { name, namespace: meta.namespace, sandbox, netns: (await cri.podStatus(sandbox)).netns! };
      } else {
        const ns = `plx-demo-${name}`;
        execFileSync('ip', ['netns', 'add', ns]);
        pod = { name, namespace: meta.namespace, sandbox: `demo-${name}`, netns: `/var/run/netns/${ns}` };
        const add = await node.exec(podEnv('ADD', pod.sandbox, pod.netns, meta), { ...node.metaConf(), runtimeConfig: { 'io.kubernetes.cri.pod-annotations': annotations } });
        if (add.status !== 0) throw new Error(`ADD of ${name} failed: ${add.stdout}`);
      }
      pods.push(pod);
      await showPod(log, pod, node.api.get('v1', 'pods', meta.namespace, name)?.metadata.annotations?.['k8s.v1.cni.cncf.io/network-status']);
    }
    log('');
    log(`API requests while the pods started: ${node.api.countRequests((r) => r.verb === 'get')} GET, ${node.api.countRequests((r) => r.verb === 'patch')} PATCH (network-status), ${node.api.countRequests((r) => r.verb === 'post')} POST (events)`);
  } finally {
    for (const pod of pods.reverse()) {
      if (cri) await cri.removePod(pod.sandbox);
      else {
        await node.exec(podEnv('DEL', pod.sandbox, pod.netns, { name: pod.name, namespace: pod.namespace }), node.metaConf());
        execFileSync('ip', ['netns', 'del', `plx-demo-${pod.name}`]);
      }
    }
    await cri?.stop();
    await node.stop();
  }
  const left = [...plexusLeftovers(join(node.cniDir, 'attachments')), ...reservations(ipamDirs).filter((r) => !reservedBefore.has(r))];
  rmSync(work, { recursive: true, force: true });
  log(left.length ? `teardown left: ${left.join(', ')}` : `torn down: ${pods.length} pods removed; no netns, link, IP reservation or attachment record left.`);
  return left.length === 0;
}

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('a simulated node: API double + example NADs, three annotated pods through containerd with plexus as CNI, then teardown')
    .option('--no-cri', 'run the pods as plain network namespaces even when containerd is installed')
    .action(async (o: { cri: boolean }) => {
      try {
        if (!(await runDemo((l) => process.stdout.write(`${l}\n`), { cri: o.cri }))) process.exitCode = 1;
      } catch (err) {
        process.stderr.write(`plexusctl demo failed: ${(err as Error).stack ?? String(err)}\n`);
        process.exitCode = 1;
      }
    });
}
