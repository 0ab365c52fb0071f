/**
 * The API side of Plexus IPAM (docs/ipam.md): IPPool objects (one per network range, holding the chunk
 * size every node uses) and IPChunk objects (a chunk is a node's once it created the object: the API
 * server creates a name once). Called only when a node needs a new chunk or gives one back, never for
 * an address inside a chunk it owns.
 */
import { createHash, randomBytes } from 'node:crypto';
import { type ApiClient, ApiError } from '../k8s/client.js';
import { isObject } from '../util/object.js';
import { bitsOf, formatCidr, formatIp, parseCidr, parseIp } from './addr.js';
import { type Geometry, chunkOf, chunkSpan, defaultChunkBits, geometry } from './chunks.js';
import type { IpamRange } from './config.js';

export const IPAM_API = '/apis/ipam.plexus.network/v1alpha1';
export const POOL_LABEL = 'ipam.plexus.network/pool';
/** The owner of chunks whose addresses go to IPAMClaims, not to one node ('@' is never in a node name). */
export const CLAIMS_OWNER = '@claims';
const IPAMCLAIM_API = '/apis/k8s.cni.cncf.io/v1alpha1';

/** A pool's object name: stable for (network_name, CIDR), a DNS label whatever the CIDR's text. */
export function poolName(networkName: string, cidr: string): string {
  return `p-${createHash('sha256').update(`${networkName}|${cidr}`).digest('hex').slice(0, 16)}`;
}

export function chunkName(pool: string, index: bigint): string {
  return `${pool}-${index.toString(16)}`;
}

/** An address lease's name: the address, hex (IPv6 text has colons). */
function addressLeaseName(pool: string, address: string): string {
  return `${pool}-a-${parseIp(address)!.value.toString(16)}`;
}

function bindingName(pool: string, claimUid: string): string {
  return `${pool}-c-${claimUid}`;
}

/**
 * Every object of a collection, page by page (the API server's limit + continue). `cached`: from the
 * watch cache (resourceVersion=0), for reads where a view a moment old is safe (a create that races
 * it answers 409), never from etcd.
 */
export async function listAll(api: ApiClient, path: string, query: Record<string, string> = {}, cached = false): Promise<unknown[]> {
  const out: unknown[] = [];
  let next: string | undefined;
  do {
    const q = new URLSearchParams({ ...query, limit: '1000', ...(next ? { continue: next } : cached ? { resourceVersion: '0' } : {}) });
    const page = await api.get<{ items?: unknown[]; metadata?: { continue?: string } }>(`${path}?${q}`);
    out.push(...(page.items ?? []));
    next = page.metadata?.continue || undefined;
  } while (next);
  return out;
}

/**
 * An IPLoan (docs/ipam.md, the tail of a pool): a node whose pool has no chunk left asks the owner of a
 * chunk for one address of it. The owner (`lender`) answers in status with an address it now holds for
 * the loan, or a refusal; the address is the borrower's until the loan object is deleted.
 */
export interface Loan {
  name: string;
  /** ms since the epoch */
  created: number;
  pool: string;
  network: string;
  lender: string;
  borrower: string;
  /** The borrower's range (its first, last and excluded addresses: NADs of one pool may differ there). */
  range: IpamRange;
  pod?: string;
  address?: string;
  refused?: string;
}

const LOAN_MAX_EXCLUDED = 256;

/**
 * A range as a loan carries it: the pool's CIDR, first, last, and excluded spans as `lo-hi` (at most
 * LOAN_MAX_EXCLUDED: past that a lender may answer an excluded address, which the borrower's own check
 * of the answer refuses).
 */
export function rangeSpec(r: IpamRange): { cidr: string; first: string; last: string; excluded: string[] } {
  const ip = (value: bigint) => formatIp({ family: r.family, value });
  return { cidr: r.cidr, first: ip(r.first), last: ip(r.last), excluded: r.excluded.slice(0, LOAN_MAX_EXCLUDED).map(([a, b]) => `${ip(a)}-${ip(b)}`) };
}

/** An IPLoan object as the API server sent it, checked whole: throws saying what is wrong. */
export function parseLoan(raw: unknown): Loan {
  const fail = (why: string): never => {
    throw new Error(`not an IPLoan: ${why}`);
  };
  if (!isObject(raw) || !isObject(raw.metadata) || !isObject(raw.spec)) return fail('no metadata or spec');
  const { name, creationTimestamp } = raw.metadata;
  const { pool, network, lender, borrower, cidr, first, last, excluded, pod } = raw.spec;
  if (typeof name !== 'string' || !name) return fail('no name');
  for (const [key, v] of Object.entries({ pool, lender, borrower, cidr, first, last })) if (typeof v !== 'string' || !v) return fail(`spec.${key} is not a string`);
  if (network !== undefined && typeof network !== 'string') return fail('spec.network is not a string');
  if (pod !== undefined && typeof pod !== 'string') return fail('spec.pod is not a string');
  const subnet = parseCidr(cidr as string);
  if (!subnet || formatCidr(subnet) !== cidr) return fail(`spec.cidr ${JSON.stringify(cidr)} is not a canonical CIDR`);
  const inSubnet = (text: unknown, key: string): bigint => {
    const ip = typeof text === 'string' ? parseIp(text) : undefined;
    if (!ip || ip.family !== subnet.family || ip.value < subnet.network || ip.value > subnet.broadcast) return fail(`${key} ${JSON.stringify(text)} is not an address of ${cidr as string}`);
    return ip.value;
  };
  const lo = inSubnet(first, 'spec.first');
  const hi = inSubnet(last, 'spec.last');
  if (lo > hi) return fail('spec.first is above spec.last');
  if (!Array.isArray(excluded) || excluded.length > LOAN_MAX_EXCLUDED) return fail(`spec.excluded must be a list of at most ${LOAN_MAX_EXCLUDED} spans`);
  const spans = excluded.map((e, i): [bigint, bigint] => {
    const [a, b, more] = typeof e === 'string' ? e.split('-') : [];
    if (more !== undefined) return fail(`spec.excluded[${i}] is not lo-hi`);
    const span: [bigint, bigint] = [inSubnet(a, `spec.excluded[${i}]`), inSubnet(b, `spec.excluded[${i}]`)];
    return span[0] <= span[1] ? span : fail(`spec.excluded[${i}] runs backwards`);
  });
  const status = isObject(raw.status) ? raw.status : {};
  const address = typeof status.address === 'string' ? status.address : undefined;
  const refused = typeof status.refused === 'string' ? status.refused : undefined;
  const created = typeof creationTimestamp === 'string' ? Date.parse(creationTimestamp) : NaN;
  return {
    name,
    created: Number.isNaN(created) ? 0 : created,
    pool: pool as string,
    network: (network as string | undefined) ?? '',
    lender: lender as string,
    borrower: borrower as string,
    range: { family: subnet.family, cidr: cidr as string, prefix: subnet.prefix, network: subnet.network, broadcast: subnet.broadcast, first: lo, last: hi, excluded: spans },
    ...(pod !== undefined ? { pod: pod as string } : {}),
    ...(address !== undefined ? { address } : {}),
    ...(refused !== undefined ? { refused } : {}),
  };
}

/** One address of a chunk as its IPChunk's status shows it: the sandbox interface holding it, or the loan it is lent under. */
export interface ChunkAddress {
  address: string;
  pod?: string;
  containerID?: string;
  ifName?: string;
  loan?: string;
}

export interface PoolRef {
  name: string;
  geometry: Geometry;
}

export interface ChunkObject {
  metadata: { name: string; uid?: string; created: number };
  spec: { pool: string; index: string; node: string; shadowOf?: string };
  /** Addresses held in it, as its owner last wrote (a second behind its log); undefined before the first write. */
  used?: number;
}

/** Who owns a chunk. A shadow is held for a chunk of an overlapping pool (`<pool>/<index>`): nothing is handed out of it. */
export interface ChunkOwner {
  node: string;
  shadowOf?: string;
  /** Addresses held in it as its status says (a second behind), when written. */
  used?: number;
}

export function parseChunk(raw: unknown): ChunkObject | undefined {
  if (!isObject(raw) || !isObject(raw.metadata) || !isObject(raw.spec)) return undefined;
  const { pool, index, node, shadowOf } = raw.spec;
  if (typeof raw.metadata.name !== 'string' || typeof pool !== 'string' || typeof index !== 'string' || !/^\d{1,40}$/.test(index) || typeof node !== 'string') return undefined;
  if (shadowOf !== undefined && typeof shadowOf !== 'string') return undefined;
  const created = typeof raw.metadata.creationTimestamp === 'string' ? Date.parse(raw.metadata.creationTimestamp) : NaN;
  const used = isObject(raw.status) && typeof raw.status.used === 'number' && Number.isInteger(raw.status.used) && raw.status.used >= 0 ? raw.status.used : undefined;
  return {
    metadata: { name: raw.metadata.name, ...(typeof raw.metadata.uid === 'string' ? { uid: raw.metadata.uid } : {}), created: Number.isNaN(created) ? 0 : created },
    spec: { pool, index, node, ...(shadowOf !== undefined ? { shadowOf } : {}) },
    ...(used !== undefined ? { used } : {}),
  };
}

const lastOf = (g: Geometry): bigint => g.network + (1n << BigInt(bitsOf(g.family) - g.prefix)) - 1n;

/** The pools of a network (and family) whose CIDRs overlap `g`'s. */
function overlappingIn<T extends PoolRef & { network: string }>(pools: T[], network: string, g: Pick<Geometry, 'family' | 'network' | 'prefix'>): PoolRef[] {
  const last = lastOf({ ...g, chunkBits: 0 });
  return pools
    .filter((p) => p.network === network && p.geometry.family === g.family && p.geometry.network <= last && g.network <= lastOf(p.geometry))
    .map(({ name, geometry }) => ({ name, geometry }));
}

/** DELETE with a UID precondition; already gone (404) or replaced by another object (409) is done. */
export async function deleteIfThere(api: ApiClient, path: string, uid: string | undefined): Promise<void> {
  await api.delete(path, uid).catch((err: unknown) => {
    if (!(err instanceof ApiError && (err.status === 404 || err.status === 409))) throw err;
  });
}

/** A chunk's object as the API server has it; undefined when it has none (404), other failures thrown. */
export async function readChunk(api: ApiClient, name: string): Promise<unknown> {
  try {
    return await api.get<unknown>(`${IPAM_API}/ipchunks/${name}`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return undefined;
    throw err;
  }
}

/** An IPAMClaim's UID; undefined when there is no such claim. */
export async function readClaimUid(api: ApiClient, namespace: string, name: string): Promise<string | undefined> {
  const claim = await api.get<unknown>(`${IPAMCLAIM_API}/namespaces/${encodeURIComponent(namespace)}/ipamclaims/${encodeURIComponent(name)}`).catch((err: unknown) => {
    if (err instanceof ApiError && err.status === 404) return undefined;
    throw err;
  });
  return isObject(claim) && isObject(claim.metadata) && typeof claim.metadata.uid === 'string' ? claim.metadata.uid : undefined;
}

export class ChunkRegistry {
  private readonly pools = new Map<string, PoolRef>();
  private readonly overlaps = new Map<string, PoolRef[]>();

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
      // A pool overlapping others of its network takes their chunk size: its chunks and theirs then
      // match one to one, and each chunk claimed shadows one chunk of each of them (docs/ipam.md).
      const theirs = overlappingIn(await this.listPools(), networkName, range)[0]?.geometry.chunkBits;
      const chunkBits = theirs === undefined ? defaultChunkBits(range) : Math.min(theirs, bitsOf(range.family) - range.prefix);
      const body = { apiVersion: 'ipam.plexus.network/v1alpha1', kind: 'IPPool', metadata: { name }, spec: { network: networkName, cidr: range.cidr, chunkBits } };
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

  /** A pool known by name only (what a node's log is named after): its geometry from the IPPool; undefined when there is none. */
  async poolByName(name: string): Promise<PoolRef | undefined> {
    const cached = this.pools.get(name);
    if (cached) return cached;
    const stored = await this.api.get<unknown>(`${IPAM_API}/ippools/${name}`).catch((err: unknown) => {
      if (err instanceof ApiError && err.status === 404) return undefined;
      throw err;
    });
    const spec = isObject(stored) && isObject(stored.spec) ? stored.spec : {};
    const cidr = typeof spec.cidr === 'string' ? parseCidr(spec.cidr) : undefined;
    if (!cidr || typeof spec.chunkBits !== 'number') return undefined;
    const ref = { name, geometry: { family: cidr.family, network: cidr.network, prefix: cidr.prefix, chunkBits: spec.chunkBits } };
    this.pools.set(name, ref);
    return ref;
  }

  /** Writes what a chunk this node owns holds into its IPChunk's status; a chunk whose object is gone is left. */
  async chunkStatus(pool: string, index: bigint, addresses: ChunkAddress[]): Promise<void> {
    await this.api.patch(`${IPAM_API}/ipchunks/${chunkName(pool, index)}/status`, { status: { used: addresses.length, addresses } }).catch((err: unknown) => {
      if (!(err instanceof ApiError && err.status === 404)) throw err;
    });
  }

  /** Every chunk of the pool that some node owns (or holds as a shadow of an overlapping pool's chunk). */
  async owned(pool: string, cached = false): Promise<Map<bigint, ChunkOwner>> {
    const out = new Map<bigint, ChunkOwner>();
    for (const raw of await listAll(this.api, `${IPAM_API}/ipchunks`, { labelSelector: `${POOL_LABEL}=${pool}` }, cached)) {
      const c = parseChunk(raw);
      if (c && c.spec.pool === pool)
        out.set(BigInt(c.spec.index), { node: c.spec.node, ...(c.spec.shadowOf !== undefined ? { shadowOf: c.spec.shadowOf } : {}), ...(c.used !== undefined ? { used: c.used } : {}) });
    }
    return out;
  }

  /** The chunks this node owns (not shadows), by pool: one list filtered by the API server on spec.node. */
  async ownChunks(): Promise<Map<string, Set<bigint>>> {
    const out = new Map<string, Set<bigint>>();
    for (const raw of await listAll(this.api, `${IPAM_API}/ipchunks`, { fieldSelector: `spec.node=${this.node}` })) {
      const c = parseChunk(raw);
      if (!c || c.spec.node !== this.node || c.spec.shadowOf !== undefined) continue;
      const inPool = out.get(c.spec.pool) ?? new Set<bigint>();
      inPool.add(BigInt(c.spec.index));
      out.set(c.spec.pool, inPool);
    }
    return out;
  }

  /**
   * The other pools of the pool's network and family whose CIDRs overlap its own (CIDRs overlap only by
   * one holding the other), listed once, after the pool exists: of two overlapping pools, whoever uses
   * the later one knows the earlier (docs/ipam.md, overlapping ranges).
   */
  async overlapping(pool: PoolRef): Promise<PoolRef[]> {
    const cached = this.overlaps.get(pool.name);
    if (cached) return cached;
    const all = await this.listPools();
    const self = all.find((p) => p.name === pool.name);
    const found = self ? overlappingIn(all, self.network, pool.geometry).filter((p) => p.name !== pool.name) : [];
    this.overlaps.set(pool.name, found);
    return found;
  }

  private async listPools(): Promise<(PoolRef & { network: string })[]> {
    return (await listAll(this.api, `${IPAM_API}/ippools`)).flatMap((raw) => {
      if (!isObject(raw) || !isObject(raw.metadata) || !isObject(raw.spec) || typeof raw.metadata.name !== 'string') return [];
      const cidr = typeof raw.spec.cidr === 'string' ? parseCidr(raw.spec.cidr) : undefined;
      if (!cidr || typeof raw.spec.chunkBits !== 'number') return [];
      return [
        {
          name: raw.metadata.name,
          network: typeof raw.spec.network === 'string' ? raw.spec.network : '',
          geometry: { family: cidr.family, network: cidr.network, prefix: cidr.prefix, chunkBits: raw.spec.chunkBits },
        },
      ];
    });
  }

  /** The chunks of the overlapping pools that a chunk's addresses fall in, each with its pool. */
  private async shadowsOf(pool: PoolRef, index: bigint): Promise<[PoolRef, bigint][]> {
    const [lo, hi] = chunkSpan(pool.geometry, index);
    const out: [PoolRef, bigint][] = [];
    for (const q of await this.overlapping(pool)) {
      const from = lo > q.geometry.network ? lo : q.geometry.network;
      const to = hi < lastOf(q.geometry) ? hi : lastOf(q.geometry);
      for (let i = chunkOf(q.geometry, from); from <= to && i <= chunkOf(q.geometry, to); i++) out.push([q, i]);
    }
    return out;
  }

  /** Gives a chunk back: deletes its object if it is this node's (UID precondition: that object, not a later one), then its shadows. */
  async release(pool: PoolRef, index: bigint): Promise<void> {
    const have = parseChunk(await this.chunkObject(pool.name, index));
    if (!have || have.spec.node !== this.node || have.spec.shadowOf) return;
    await this.api.delete(`${IPAM_API}/ipchunks/${chunkName(pool.name, index)}`, have.metadata.uid);
    // Then its shadows: what a crash leaves of them sweepShadows removes.
    for (const [q, i] of await this.shadowsOf(pool, index)) await this.dropShadow(q.name, i, `${pool.name}/${index}`);
  }

  private async dropShadow(pool: string, index: bigint, of: string): Promise<void> {
    const have = parseChunk(await this.chunkObject(pool, index));
    if (have?.spec.shadowOf !== of) return;
    await this.deleteIfThere(`${IPAM_API}/ipchunks/${chunkName(pool, index)}`, have.metadata.uid);
  }

  /** An IPAMClaim's UID; undefined when there is no such claim. */
  claimUid(namespace: string, name: string): Promise<string | undefined> {
    return readClaimUid(this.api, namespace, name);
  }

  /** The address a claim is bound to in a pool (its binding lease), if it is. */
  async boundAddress(pool: string, claimUid: string): Promise<string | undefined> {
    const lease = await this.api.get<unknown>(`${IPAM_API}/ipleases/${bindingName(pool, claimUid)}`).catch((err: unknown) => {
      if (err instanceof ApiError && err.status === 404) return undefined;
      throw err;
    });
    return isObject(lease) && isObject(lease.spec) && typeof lease.spec.address === 'string' ? lease.spec.address : undefined;
  }

  /** The addresses of the pool that claims hold (their address leases). */
  async leasedAddresses(pool: string): Promise<Set<string>> {
    const out = new Set<string>();
    for (const raw of await listAll(this.api, `${IPAM_API}/ipleases`, { labelSelector: `${POOL_LABEL}=${pool}` })) {
      if (isObject(raw) && isObject(raw.spec) && raw.spec.kind === 'address' && typeof raw.spec.address === 'string') out.add(raw.spec.address);
    }
    return out;
  }

  /** Creates a lease: true when created, false when one of that name exists (taken, or bound). */
  async lease(pool: string, kind: 'address' | 'binding', address: string, claim: string, claimUid: string): Promise<boolean> {
    const name = kind === 'address' ? addressLeaseName(pool, address) : bindingName(pool, claimUid);
    const body = { apiVersion: 'ipam.plexus.network/v1alpha1', kind: 'IPLease', metadata: { name, labels: { [POOL_LABEL]: pool } }, spec: { pool, address, claim, claimUID: claimUid, kind } };
    try {
      await this.api.post(`${IPAM_API}/ipleases`, body);
      return true;
    } catch (err) {
      if (err instanceof ApiError && err.status === 409) return false;
      throw err;
    }
  }

  async dropAddressLease(pool: string, address: string): Promise<void> {
    await this.api.delete(`${IPAM_API}/ipleases/${addressLeaseName(pool, address)}`).catch((err: unknown) => {
      if (!(err instanceof ApiError && err.status === 404)) throw err;
    });
  }

  /** The claim's status: its addresses and the pod using them now. */
  async claimStatus(namespace: string, name: string, ips: string[], pod: string | undefined): Promise<void> {
    await this.api.patch(`${IPAMCLAIM_API}/namespaces/${encodeURIComponent(namespace)}/ipamclaims/${encodeURIComponent(name)}/status`, {
      status: { ips, ...(pod ? { ownerPod: { name: pod } } : {}) },
    });
  }

  /** Asks `lender` for an address of the pool: the new IPLoan's name (a fresh one each time: a retry never finds an old answer). */
  async requestLoan(pool: PoolRef, network: string, range: IpamRange, lender: string, pod?: string): Promise<string> {
    const name = `${pool.name}-l-${randomBytes(8).toString('hex')}`;
    const spec = { pool: pool.name, network, lender, borrower: this.node, ...rangeSpec(range), ...(pod ? { pod } : {}) };
    await this.api.post(`${IPAM_API}/iploans`, { apiVersion: 'ipam.plexus.network/v1alpha1', kind: 'IPLoan', metadata: { name, labels: { [POOL_LABEL]: pool.name } }, spec });
    return name;
  }

  /** A loan as it is now; undefined when it is gone. */
  async loan(name: string): Promise<Loan | undefined> {
    const raw = await this.api.get<unknown>(`${IPAM_API}/iploans/${name}`).catch((err: unknown) => {
      if (err instanceof ApiError && err.status === 404) return undefined;
      throw err;
    });
    return raw === undefined ? undefined : parseLoan(raw);
  }

  /** The lender's answer, in the loan's status. */
  async answerLoan(name: string, answer: { address: string } | { refused: string }): Promise<void> {
    await this.api.patch(`${IPAM_API}/iploans/${name}/status`, { status: answer });
  }

  /** Deletes a loan (its address goes back to the lender); a loan already gone is fine. */
  async dropLoan(name: string): Promise<void> {
    await this.api.delete(`${IPAM_API}/iploans/${name}`).catch((err: unknown) => {
      if (!(err instanceof ApiError && err.status === 404)) throw err;
    });
  }

  /** The loans this node made (as borrower); objects that do not parse are left out. */
  async borrowed(): Promise<Loan[]> {
    const out: Loan[] = [];
    for (const raw of await listAll(this.api, `${IPAM_API}/iploans`, { fieldSelector: `spec.borrower=${this.node}` })) {
      try {
        out.push(parseLoan(raw));
      } catch {
        // not one of ours to settle
      }
    }
    return out;
  }

  /**
   * Claims a chunk for `owner` (this node by default): true when it is now the owner's, false when
   * another has it. With `overlapping` (whereabouts' enable_overlapping_ranges, its default), the chunks
   * of overlapping pools its addresses fall in are claimed first, as its shadows: a 409 on any of them
   * means another pool's owner has some of these addresses, and what was claimed is given back.
   */
  async claim(pool: PoolRef, index: bigint, owner = this.node, overlapping = true): Promise<boolean> {
    const key = `${pool.name}/${index}`;
    const made: [string, bigint][] = [];
    const undo = async () => {
      for (const [q, i] of made) await this.dropShadow(q, i, key);
    };
    for (const [q, i] of overlapping ? await this.shadowsOf(pool, index) : []) {
      if (!(await this.createChunk(q, i, owner, key))) {
        await undo();
        return false;
      }
      made.push([q.name, i]);
    }
    if (await this.createChunk(pool, index, owner)) return true;
    await undo();
    return false;
  }

  /** Creates one chunk object: true when it is now `owner`'s (as that shadow, or not one), false when another has it. */
  private async createChunk(pool: PoolRef, index: bigint, owner: string, shadowOf?: string): Promise<boolean> {
    const [lo] = chunkSpan(pool.geometry, index);
    const body = {
      apiVersion: 'ipam.plexus.network/v1alpha1',
      kind: 'IPChunk',
      metadata: { name: chunkName(pool.name, index), labels: { [POOL_LABEL]: pool.name } },
      spec: {
        pool: pool.name,
        index: String(index),
        node: owner,
        cidr: formatCidr({ family: pool.geometry.family, network: lo, prefix: (pool.geometry.family === 4 ? 32 : 128) - pool.geometry.chunkBits }),
        ...(shadowOf ? { shadowOf } : {}),
      },
    };
    try {
      await this.api.post(`${IPAM_API}/ipchunks`, body);
      return true;
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 409)) throw err;
      // Ours already (a create whose answer was lost, or a daemon restarted before logging it)? A read
      // that fails throws: answering "not ours" could undo the shadows of a chunk that is ours.
      const have = parseChunk(await this.chunkObject(pool.name, index));
      return have?.spec.node === owner && have.spec.shadowOf === shadowOf;
    }
  }

  private deleteIfThere(path: string, uid: string | undefined): Promise<void> {
    return deleteIfThere(this.api, path, uid);
  }

  private chunkObject(pool: string, index: bigint): Promise<unknown> {
    return readChunk(this.api, chunkName(pool, index));
  }
}
