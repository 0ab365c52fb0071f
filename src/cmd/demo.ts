/**
 * `plexusctl demo`: a real attachment on an embedded default. Two pod netns join a bridge +
 * host-local network through Debian's reference plugins; the interfaces are read back over
 * netlink, CHECKed, deleted, and everything the demo made is removed again.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { loadNetwork } from '../cni/conf.js';
import { CniRuntime, type RuntimeConf } from '../cni/runtime.js';
import type { Result } from '../cni/types.js';
import { convertResult } from '../cni/version.js';
import { NetHandle } from '../net/netlink.js';

const BRIDGE = 'plx-demo0';
const PODS = ['plx-demo-a', 'plx-demo-b'];

function demoConflist(dataDir: string): string {
  return JSON.stringify({
    cniVersion: '1.0.0',
    name: 'plexus-demo',
    plugins: [
      {
        type: 'bridge',
        bridge: BRIDGE,
        isGateway: false,
        ipam: { type: 'host-local', dataDir, ranges: [[{ subnet: '10.233.0.0/24' }]], routes: [{ dst: '10.233.0.0/16', gw: '10.233.0.1' }] },
      },
    ],
  });
}

function ip(args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

export async function runDemo(log: (line: string) => void, cniPath: string[]): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'plexus-demo-'));
  const confDir = join(work, 'net.d');
  const dataDir = join(work, 'ipam');
  mkdirSync(confDir);
  writeFileSync(join(confDir, '10-plexus-demo.conflist'), demoConflist(dataDir));
  const runtime = new CniRuntime({ cniPath, cacheDir: join(work, 'cache') });
  const list = loadNetwork(confDir, 'plexus-demo');
  const attached: RuntimeConf[] = [];
  const host = await NetHandle.open();
  try {
    log(`network "${list.name}" (CNI ${list.cniVersion}): ${list.plugins.map((p) => p.type).join(' → ')}, plugins from ${cniPath.join(':')}`);
    log('');
    log(`${'pod netns'.padEnd(12)} ${'if'.padEnd(5)} ${'mac'.padEnd(18)} ${'mtu'.padEnd(5)} addresses`);
    for (const pod of PODS) {
      ip(['netns', 'add', pod]);
      const rt: RuntimeConf = { containerID: `${pod}-sandbox`, netns: `/var/run/netns/${pod}`, ifName: 'eth0', args: [['K8S_POD_NAME', pod]], capabilityArgs: {} };
      const result = convertResult(await runtime.addNetworkList(list, rt), '1.1.0') as Result;
      attached.push(rt);
      const inPod = await NetHandle.openPath(rt.netns);
      try {
        const link = await inPod.link('eth0');
        const addrs = (await inPod.addresses('eth0')).filter((a) => a.scope === 0).map((a) => a.address);
        log(`${pod.padEnd(12)} ${link.name.padEnd(5)} ${(link.mac ?? '').padEnd(18)} ${String(link.mtu).padEnd(5)} ${addrs.join(', ')}`);
        const reported = result.ips?.map((i) => i.address) ?? [];
        if (reported.some((a) => !addrs.includes(a))) throw new Error(`result says ${reported.join(', ')} but the netns has ${addrs.join(', ')}`);
      } finally {
        inPod.close();
      }
      await runtime.checkNetworkList(list, rt);
    }
    log('');
    log('CHECK passed for every pod; the kernel state matches each ADD result.');
  } finally {
    for (const rt of attached.reverse()) await runtime.delNetworkList(list, rt);
    for (const pod of PODS) {
      try {
        ip(['netns', 'del', pod]);
      } catch {
        /* not created */
      }
    }
    if (await host.findLink(BRIDGE)) await host.deleteLink(BRIDGE);
    host.close();
    const leftovers = readdirSync(join(dataDir, 'plexus-demo'), { withFileTypes: true }).filter((e) => /^\d/.test(e.name));
    rmSync(work, { recursive: true, force: true });
    log(`torn down: ${attached.length} attachment(s) deleted, ${leftovers.length} IP reservation(s) left, bridge and netns removed.`);
  }
}

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('attach two pod netns to an embedded bridge network with the reference plugins, show them, tear down')
    .option('--cni-path <dirs>', 'reference plugin directories', process.env.CNI_PATH ?? '/usr/lib/cni:/opt/cni/bin')
    .action(async (o: { cniPath: string }) => {
      try {
        await runDemo((l) => process.stdout.write(`${l}\n`), o.cniPath.split(':').filter(Boolean));
      } catch (err) {
        process.stderr.write(`plexusctl demo failed: ${(err as Error).message}\n`);
        process.exitCode = 1;
      }
    });
}
