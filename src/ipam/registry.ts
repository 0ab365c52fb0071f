/**
 * The API side of Plexus IPAM (docs/ipam.md): IPPool objects (one per network range, holding the chunk
 * size every node uses) and IPChunk objects (a chunk is a node's once it created the object: the API
 * server creates a name once). Called only when a node needs a new chunk or gives one back, never for
 * an address inside a chunk it owns.
 */
import { createHash } from 'node:crypto';
import { type ApiClient, ApiError } from '../k8s/client.js';
import { isObject } from '../util/object.js';
import { formatCidr } from './addr.js';
import { type Geometry, chunkSpan, defaultChunkBits, geometry } from './chunks.js';
import type { IpamRange } from './config.js';

export const IPAM_API = '/apis/ipam.plexus.network/v1alpha1';
export const POOL_LABEL = 'ipam.plexus.network/pool';

/** A pool's object name: stable for (network_name, CIDR), a DNS label whatever the CIDR's text. */
export function poolName(networkName: string, cidr: string): string {
  return `p-${createHash('sha256').update(`${networkName}|${cidr}`).digest('hex').slice(0, 16)}`;
}

export function chunkName(pool: string, index: bigint): string {
  return `${pool}-${index.toString(16)}`;
}

export interface PoolRef {
  name: string;
  geometry: Geometry;
}

interface ChunkObject {
  metadata: { name: string; uid?: string };
  spec: { pool: string; index: string; node: string };
}

function parseChunk(raw: unknown): ChunkObject | undefined {
  if (!isObject(raw) || !isObject(raw.metadata) || !isObject(raw.spec)) return undefined;
  const { pool, index, node } = raw.spec;
  if (typeof raw.metadata.name !== 'string' || typeof pool !== 'string' || typeof index !== 'string' || !/^\d{1,40}$/.test(index) || typeof node !== 'string') return undefined;
  return { metadata: { name: raw.metadata.name, ...(typeof raw.metadata.uid === 'string' ? { uid: raw.metadata.uid } : {}) }, spec: { pool, index, node } };
}

export class ChunkRegistry {
  private readonly pools = new Map<string, PoolRef>();

  constructor(
    private readonly api: ApiClient,
    readonly node: string,
  ) {}

  /** The pool of a range: read, or created with this node's chunk size; the stored chunk size wins. */
  async pool(networkName: string, range: IpamRange): Promise<PoolRef> {
    const name = poolName(networkName, range.cidr);
    const cached = this.pools.get(name);
    if (cached) return cached;
    const path = `${IPAM_API}/ippools/${name}`;
    let stored: unknown;
    try {
      stored = await this.api.get<unknown>(path);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) throw err;
      const body = { apiVersion: 'ipam.plexus.network/v1alpha1', kind: 'IPPool', metadata: { name }, spec: { network: networkName, cidr: range.cidr, chunkBits: defaultChunkBits(range) } };
      stored = await this.api.post<unknown>(`${IPAM_API}/ippools`, body).catch(async (e: unknown) => {
        if (e instanceof ApiError && e.status === 409) return this.api.get<unknown>(path);
        throw e;
      });
    }
    const spec = isObject(stored) && isObject(stored.spec) ? stored.spec : {};
    if (spec.cidr !== range.cidr || typeof spec.chunkBits !== 'number') throw new Error(`IPPool ${name} is not the pool of ${range.cidr} (spec ${JSON.stringify(spec)})`);
    const ref = { name, geometry: geometry(range, spec.chunkBits) };
    this.pools.set(name, ref);
    return ref;
  }

  /** Every chunk of the pool that some node owns: index → node. */
  async owned(pool: string): Promise<Map<bigint, string>> {
    const out = new Map<bigint, string>();
    let next: string | undefined;
    do {
      const q = new URLSearchParams({ labelSelector: `${POOL_LABEL}=${pool}`, limit: '1000', ...(next ? { continue: next } : {}) });
      const page = await this.api.get<{ items?: unknown[]; metadata?: { continue?: string } }>(`${IPAM_API}/ipchunks?${q}`);
      for (const raw of page.items ?? []) {
        const c = parseChunk(raw);
        if (c && c.spec.pool === pool) out.set(BigInt(c.spec.index), c.spec.node);
      }
      next = page.metadata?.continue || undefined;
    } while (next);
    return out;
  }

  /** Gives a chunk back: deletes its object if it is this node's (UID precondition: that object, not a later one). */
  async release(pool: string, index: bigint): Promise<void> {
    const path = `${IPAM_API}/ipchunks/${chunkName(pool, index)}`;
    const have = parseChunk(
      await this.api.get<unknown>(path).catch((err: unknown) => {
        if (err instanceof ApiError && err.status === 404) return undefined;
        throw err;
      }),
    );
    if (!have || have.spec.node !== this.node) return;
    await this.api.delete(path, have.metadata.uid);
  }

  /** Creates the chunk's object for this node: true when it is now ours, false when another node has it. */
  async claim(pool: PoolRef, index: bigint): Promise<boolean> {
    const [lo] = chunkSpan(pool.geometry, index);
    const body = {
      apiVersion: 'ipam.plexus.network/v1alpha1',
      kind: 'IPChunk',
      metadata: { name: chunkName(pool.name, index), labels: { [POOL_LABEL]: pool.name } },
      spec: {
        pool: pool.name,
        index: String(index),
        node: this.node,
        cidr: formatCidr({ family: pool.geometry.family, network: lo, prefix: (pool.geometry.family === 4 ? 32 : 128) - pool.geometry.chunkBits }),
      },
    };
    try {
      await this.api.post(`${IPAM_API}/ipchunks`, body);
      return true;
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 409)) throw err;
      // Ours already (a create whose answer was lost, or a daemon restarted before logging it)?
      const have = parseChunk(await this.api.get<unknown>(`${IPAM_API}/ipchunks/${chunkName(pool.name, index)}`).catch(() => undefined));
      return have?.spec.node === this.node;
    }
  }
}
