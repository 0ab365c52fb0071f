/** `plexusctl ipam pools | show POOL | who IP`: Plexus IPAM's pools and chunks from the API, and on a node, who holds an address. */
import { join } from 'node:path';
import type { Command } from 'commander';
import { ApiClient } from '../k8s/client.js';
import { inClusterConfig, loadKubeconfig } from '../k8s/kubeconfig.js';
import { formatIp, parseCidr, parseIp } from '../ipam/addr.js';
import { chunkOf, chunkSpan } from '../ipam/chunks.js';
import { NodePool } from '../ipam/nodepool.js';
import { type ChunkAddress, IPAM_API, listAll } from '../ipam/registry.js';
import { isObject } from '../util/object.js';
import { textTable } from '../util/table.js';
import { emit } from './cni.js';

interface PoolRow {
  name: string;
  network: string;
  cidr: string;
  chunkBits: number;
  chunks: { index: bigint; node: string; shadowOf?: string; addresses: ChunkAddress[] }[];
}

/** A chunk status's addresses (written by the owner, src/ipam/plugin.ts reflect); entries that are not one are left out. */
function statusAddresses(raw: unknown): ChunkAddress[] {
  const list = isObject(raw) && isObject(raw.status) && Array.isArray(raw.status.addresses) ? raw.status.addresses : [];
  return list.flatMap((a): ChunkAddress[] => {
    if (!isObject(a) || typeof a.address !== 'string') return [];
    const text = (k: string) => (typeof a[k] === 'string' ? { [k]: a[k] as string } : {});
    return [{ address: a.address, ...text('pod'), ...text('containerID'), ...text('ifName'), ...text('loan') }];
  });
}

async function client(kubeconfig?: string): Promise<ApiClient> {
  const cfg = kubeconfig ? await loadKubeconfig(kubeconfig) : inClusterConfig(process.env);
  if (!cfg) throw new Error('no API credentials: --kubeconfig, or run in a pod');
  return new ApiClient(cfg, 30_000);
}

/** Pools with their chunks, as the API has them. */
async function pools(api: ApiClient): Promise<PoolRow[]> {
  const rows = new Map<string, PoolRow>();
  for (const raw of await listAll(api, `${IPAM_API}/ippools`)) {
    if (!isObject(raw) || !isObject(raw.metadata) || !isObject(raw.spec)) continue;
    const { network, cidr, chunkBits } = raw.spec;
    if (typeof raw.metadata.name !== 'string' || typeof cidr !== 'string' || typeof chunkBits !== 'number') continue;
    rows.set(raw.metadata.name, { name: raw.metadata.name, network: typeof network === 'string' ? network : '', cidr, chunkBits, chunks: [] });
  }
  for (const raw of await listAll(api, `${IPAM_API}/ipchunks`)) {
    const spec = isObject(raw) && isObject(raw.spec) ? raw.spec : {};
    const row = typeof spec.pool === 'string' ? rows.get(spec.pool) : undefined;
    if (row && typeof spec.index === 'string' && /^\d+$/.test(spec.index) && typeof spec.node === 'string')
      row.chunks.push({ index: BigInt(spec.index), node: spec.node, ...(typeof spec.shadowOf === 'string' ? { shadowOf: spec.shadowOf } : {}), addresses: statusAddresses(raw) });
  }
  return [...rows.values()];
}

function geometryOf(p: PoolRow) {
  const c = parseCidr(p.cidr)!;
  return { family: c.family, network: c.network, prefix: c.prefix, chunkBits: p.chunkBits };
}

export function registerIpam(program: Command): void {
  const ipam = program.command('ipam').description('Plexus IPAM: pools, the chunks nodes own, and who holds an address (docs/ipam.md)');
  const common = (c: Command) => c.option('--kubeconfig <file>', 'kubeconfig (default: in-cluster credentials)').option('-o, --output <format>', 'table or json', 'table');
  common(ipam.command('pools').description('every pool: network, CIDR, chunk size, chunks owned, nodes')).action((o: { kubeconfig?: string; output: string }) =>
    emit(async () => {
      const rows = await pools(await client(o.kubeconfig));
      const out = rows.map((p) => ({
        pool: p.name,
        network: p.network,
        cidr: p.cidr,
        chunkSize: 2 ** p.chunkBits,
        chunks: p.chunks.length,
        nodes: new Set(p.chunks.map((c) => c.node)).size,
        used: p.chunks.reduce((n, c) => n + c.addresses.length, 0),
      }));
      if (o.output === 'json') return out;
      process.stdout.write(
        `${textTable(
          ['POOL', 'NETWORK', 'CIDR', 'CHUNK', 'CHUNKS', 'NODES', 'USED'],
          out.map((r) => [r.pool, r.network || '-', r.cidr, String(r.chunkSize), String(r.chunks), String(r.nodes), String(r.used)]),
        )}\n`,
      );
      return undefined;
    }),
  );
  common(ipam.command('show <pool>').description('one pool (its name or CIDR): the chunks each node owns')).action((name: string, o: { kubeconfig?: string; output: string }) =>
    emit(async () => {
      const p = (await pools(await client(o.kubeconfig))).find((x) => x.name === name || x.cidr === name);
      if (!p) throw new Error(`no pool ${name}`);
      const g = geometryOf(p);
      const chunks = p.chunks
        .sort((a, b) => (a.index < b.index ? -1 : 1))
        .map((c) => {
          const [lo, hi] = chunkSpan(g, c.index);
          return {
            node: c.node,
            first: formatIp({ family: g.family, value: lo }),
            last: formatIp({ family: g.family, value: hi }),
            used: c.addresses.length,
            ...(c.shadowOf ? { shadowOf: c.shadowOf } : {}),
          };
        });
      if (o.output === 'json') return { pool: p.name, network: p.network, cidr: p.cidr, chunkSize: 2 ** p.chunkBits, chunks };
      process.stdout.write(
        `${textTable(
          ['NODE', 'FIRST', 'LAST', 'USED', 'SHADOW-OF'],
          chunks.map((c) => [c.node, c.first, c.last, String(c.used), c.shadowOf ?? '-']),
        )}\n`,
      );
      return undefined;
    }),
  );
  common(ipam.command('who <ip>').description("the pool, chunk and node of an address, and the sandbox and pod holding it (from the chunk's status, or with --state-dir on that node, from its log)"))
    .option('--state-dir <dir>', "the node daemon's IPAM state (its --cni-dir + /ipam): its log, not the status written a second later")
    .action((ip: string, o: { kubeconfig?: string; output: string; stateDir?: string }) =>
      emit(async () => {
        const addr = parseIp(ip);
        if (!addr) throw new Error(`${ip} is not an IP address`);
        const found = [];
        for (const p of await pools(await client(o.kubeconfig))) {
          const g = geometryOf(p);
          const c = parseCidr(p.cidr)!;
          if (g.family !== addr.family || addr.value < c.network || addr.value > c.broadcast) continue;
          const index = chunkOf(g, addr.value);
          const chunk = p.chunks.find((x) => x.index === index);
          // The node's own log when on that node; else the chunk's status, which its owner writes.
          const holder = o.stateDir && chunk ? new NodePool(join(o.stateDir, 'pools'), p.name, g).held.get(addr.value) : chunk?.addresses.find((a) => parseIp(a.address)?.value === addr.value);
          found.push({ pool: p.name, network: p.network, cidr: p.cidr, node: chunk?.node ?? null, ...(chunk?.shadowOf ? { shadowOf: chunk.shadowOf } : {}), ...(holder ? { holder } : {}) });
        }
        return found;
      }),
    );
}
