/**
 * Plexus IPAM's cluster-wide housekeeping (docs/ipam.md, docs/scale.md): chunks of nodes gone for good,
 * shadows whose chunk is gone, IPAMClaim leases whose claim is gone. Run by one daemon of the cluster,
 * the holder of a Lease (housekeeping.ts), never by every node: each sweep lists its collection once from
 * the watch cache, and which nodes exist comes from one Node informer, not a GET per chunk owner.
 */
import type { ApiClient } from '../k8s/client.js';
import { Informer } from '../k8s/informer.js';
import { isObject } from '../util/object.js';
import { CLAIMS_OWNER, IPAM_API, type ChunkObject, chunkName, deleteIfThere, listAll, parseChunk, readChunk, readClaimUid } from './registry.js';

interface LeaseObject {
  name: string;
  uid: string;
  created: number;
  spec: { pool: string; address: string; claim: string; claimUID: string; kind: string };
}

function parseLeaseObject(raw: unknown, now: number): LeaseObject | undefined {
  if (!isObject(raw) || !isObject(raw.metadata) || !isObject(raw.spec)) return undefined;
  const { name, uid, creationTimestamp } = raw.metadata;
  const { pool, address, claim, claimUID, kind } = raw.spec;
  for (const v of [name, uid, pool, address, claim, claimUID, kind]) if (typeof v !== 'string') return undefined;
  const created = typeof creationTimestamp === 'string' ? Date.parse(creationTimestamp) : now;
  return { name: name as string, uid: uid as string, created, spec: { pool, address, claim, claimUID, kind } as LeaseObject['spec'] };
}

export class ClusterSweeps {
  /** node → when these sweeps first saw it without a Node object. */
  private readonly goneSince = new Map<string, number>();
  private readonly nodes: Informer<{ metadata: { name: string; resourceVersion?: string } }>;

  constructor(
    private readonly api: ApiClient,
    onError?: (err: Error) => void,
  ) {
    // Names only: a Node object is kilobytes, and only its existence matters here; the server sends
    // its metadata alone (a thousand Nodes in full were 173 MiB of the leader's RSS, docs/scale.md).
    this.nodes = new Informer(api, {
      path: '/api/v1/nodes',
      metadataOnly: true,
      keep: (raw) => {
        const md = isObject(raw) && isObject(raw.metadata) ? raw.metadata : {};
        if (typeof md.name !== 'string') throw new Error('a Node without metadata.name');
        return { metadata: { name: md.name, ...(typeof md.resourceVersion === 'string' ? { resourceVersion: md.resourceVersion } : {}) } };
      },
      ...(onError ? { onError } : {}),
    });
  }

  /** Starts the Node informer; resolves once its first list was tried. */
  start(): Promise<void> {
    return this.nodes.start();
  }

  stop(): Promise<void> {
    return this.nodes.stop();
  }

  /**
   * Chunks of nodes that are gone for good (no Node object, seen so here for `graceMs`) are deleted, so
   * their addresses can be claimed again; not while a loan they made is still held (the borrower still
   * uses its address), and never chunks owned by no node. Nothing is done before the Node list came in.
   * Returns what was deleted.
   */
  async reclaimFromGoneNodes(graceMs: number, now = Date.now()): Promise<string[]> {
    if (!this.nodes.listed) return [];
    const chunks = (await listAll(this.api, `${IPAM_API}/ipchunks`, {}, true)).flatMap((raw) => parseChunk(raw) ?? []);
    const owners = new Set(chunks.map((c) => c.spec.node));
    for (const node of this.goneSince.keys()) if (!owners.has(node)) this.goneSince.delete(node);
    const reclaimed: string[] = [];
    for (const node of owners) {
      if (node === CLAIMS_OWNER) continue;
      if (this.nodes.get('', node)) {
        this.goneSince.delete(node);
        continue;
      }
      const since = this.goneSince.get(node) ?? now;
      this.goneSince.set(node, since);
      if (now - since < graceMs) continue;
      if ((await listAll(this.api, `${IPAM_API}/iploans`, { fieldSelector: `spec.lender=${node}` })).length) continue;
      for (const c of chunks.filter((x) => x.spec.node === node)) {
        await deleteIfThere(this.api, `${IPAM_API}/ipchunks/${c.metadata.name}`, c.metadata.uid);
        reclaimed.push(c.metadata.name);
      }
    }
    return reclaimed;
  }

  /**
   * Shadows whose chunk is gone or is another node's (a claim cut short between its shadows and its
   * chunk, or a release between its chunk and its shadows), once older than `graceMs`: deleted. The chunk
   * is looked up in the same list; only a shadow found orphaned there is read again before its delete
   * (the list is the watch cache's, a moment old). Returns how many.
   */
  async sweepShadows(graceMs: number, now = Date.now()): Promise<number> {
    const chunks = (await listAll(this.api, `${IPAM_API}/ipchunks`, {}, true)).flatMap((raw) => parseChunk(raw) ?? []);
    const byName = new Map(chunks.map((c) => [c.metadata.name, c]));
    const holds = (shadow: ChunkObject, primary: ChunkObject | undefined) => primary !== undefined && primary.spec.node === shadow.spec.node && primary.spec.shadowOf === undefined;
    let gone = 0;
    for (const c of chunks) {
      if (!c.spec.shadowOf || now - c.metadata.created < graceMs) continue;
      const [pool = '', index = ''] = c.spec.shadowOf.split('/');
      if (!/^\d{1,40}$/.test(index)) continue;
      const name = chunkName(pool, BigInt(index));
      if (holds(c, byName.get(name))) continue;
      // Only a chunk the API server says is not there (404) leaves its shadows orphaned; any other failure skips.
      if (holds(c, parseChunk(await readChunk(this.api, name)))) continue;
      await deleteIfThere(this.api, `${IPAM_API}/ipchunks/${c.metadata.name}`, c.metadata.uid);
      gone++;
    }
    return gone;
  }

  /**
   * Leases whose claim is gone (deleted, or deleted and created again: another UID) are removed, and
   * address leases never bound (a node died between its two creates) once older than `graceMs`. Each
   * delete is preconditioned on the lease's UID. Returns what went.
   */
  async sweepLeases(graceMs: number, now = Date.now()): Promise<string[]> {
    const leases = (await listAll(this.api, `${IPAM_API}/ipleases`, {}, true)).flatMap((raw) => parseLeaseObject(raw, now) ?? []);
    const claimAlive = new Map<string, boolean>();
    const alive = async (claim: string, uid: string): Promise<boolean> => {
      if (!claimAlive.has(uid)) {
        const [ns = '', name = ''] = claim.split('/');
        claimAlive.set(uid, (await readClaimUid(this.api, ns, name)) === uid);
      }
      return claimAlive.get(uid)!;
    };
    const bound = new Set(leases.filter((l) => l.spec.kind === 'binding').map((l) => `${l.spec.pool}/${l.spec.address}/${l.spec.claimUID}`));
    const gone: string[] = [];
    // Bindings first: a claim's address is free only once nothing binds it.
    for (const l of leases.sort((a, b) => Number(b.spec.kind === 'binding') - Number(a.spec.kind === 'binding'))) {
      const unbound = l.spec.kind === 'address' && !bound.has(`${l.spec.pool}/${l.spec.address}/${l.spec.claimUID}`) && now - l.created > graceMs;
      if (!unbound && (await alive(l.spec.claim, l.spec.claimUID))) continue;
      await deleteIfThere(this.api, `${IPAM_API}/ipleases/${l.name}`, l.uid);
      gone.push(l.name);
    }
    return gone;
  }
}
