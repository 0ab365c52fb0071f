/**
 * `plexus-ipam`, the CNI IPAM plugin (also answering `type: whereabouts` confs): loadConf, cmdAdd,
 * cmdDel, cmdCheck. It runs in the node daemon, reached through plexus-shim installed under the IPAM's
 * name (the main plugin, macvlan say, execs it as any IPAM): one event loop per node holds every
 * pool's state, so nothing on the node needs a lock, and an address from an owned chunk needs no API
 * call (docs/ipam.md).
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { CniError, ErrorCode } from '../cni/errors.js';
import type { Plugin, PluginRequest } from '../cni/skel.js';
import { SUPPORTED_VERSIONS, type Result } from '../cni/types.js';
import { convertResult } from '../cni/version.js';
import { IPAM_CLAIM_ARG, getArg } from '../cni/args.js';
import { ApiError, apiFailure } from '../k8s/client.js';
import { formatIp, parseIp } from './addr.js';
import { type Geometry, chunkOf, chunkSpan, firstFree, geometry, pickChunk, startChunk } from './chunks.js';
import { type IpamConfig, type IpamRange, parseIpamConfig, rangeCapacity } from './config.js';
import { type Holder, NodePool } from './nodepool.js';
import { CLAIMS_OWNER, type ChunkAddress, type ChunkRegistry, type Loan, type PoolRef, poolName } from './registry.js';

/** How long a borrower waits for a lender's answer before it asks the next (the lender may be down). */
const LOAN_ANSWER_MS = 2000;
const LOAN_POLL_MS = 20;
/** Owners an ADD asks for a loan at most (docs/scale.md: an ADD's cost does not grow with the nodes). */
export const MAX_LOANS_PER_ADD = 4;
/** How long an owner that refused a loan (its chunks full) is asked after the others. */
const REFUSAL_MEMORY_MS = 60_000;

export interface IpamHost {
  /** Where each pool's node log lives (the daemon's, never the conf's). */
  stateDir: string;
  registry: ChunkRegistry;
}

function loadConf(req: PluginRequest): IpamConfig {
  return parseIpamConfig((req.conf as { ipam?: unknown }).ipam);
}

export class IpamPools {
  private readonly local = new Map<string, NodePool>();
  /** One claim at a time per pool: two ADDs finding the node's chunks full claim one chunk, not two. */
  private readonly claiming = new Map<string, Promise<boolean>>();
  /** pool/chunk → when it was first seen empty (in memory: a restart starts the clock again). */
  private readonly emptySince = new Map<string, number>();
  /** pool/chunk being given back: not adopted again from the API meanwhile. */
  private readonly releasing = new Set<string>();
  /** Pools changed since their chunks were last reflected into the API, and what each chunk's status says. */
  private readonly changed = new Set<string>();
  private readonly reflected = new Map<string, string>();
  /** Per pool, owners that refused a loan, until when they are asked last. */
  private readonly refusedBy = new Map<string, Map<string, number>>();

  constructor(
    private readonly host: IpamHost,
    private readonly loanAnswerMs = LOAN_ANSWER_MS,
  ) {}

  /** A pool's node state read from its log; its changes mark it for reflecting into the API. */
  private open(name: string, g: Geometry): NodePool {
    const p = new NodePool(join(this.host.stateDir, 'pools'), name, g);
    p.onChange = () => this.changed.add(name);
    this.local.set(name, p);
    this.changed.add(name);
    return p;
  }

  /**
   * Writes each changed chunk's addresses into its IPChunk's status (who holds what, for `plexusctl
   * ipam who` and people), off the ADD path: the daemon calls it every second. Best effort: the log is
   * the record; a status that fails to land is tried again at the next call.
   */
  async reflect(): Promise<number> {
    const names = [...this.changed];
    this.changed.clear();
    let written = 0;
    for (const name of names) {
      const p = this.local.get(name);
      if (!p) continue;
      try {
        const g = (await this.host.registry.poolByName(name))?.geometry;
        if (!g) continue;
        const byChunk = new Map<bigint, ChunkAddress[]>([...p.chunks].map((i) => [i, []]));
        for (const [addr, h] of p.held) {
          const entry = byChunk.get(chunkOf(g, addr));
          if (!entry) continue; // borrowed: its lender reflects it
          entry.push({ address: formatIp({ family: g.family, value: addr }), ...(h.pod ? { pod: h.pod } : {}), ...(h.lent ? { loan: h.lent } : { containerID: h.containerID, ifName: h.ifName }) });
        }
        // A chunk given back and claimed again is a new object: written afresh.
        for (const key of this.reflected.keys()) if (key.startsWith(`${name}/`) && !byChunk.has(BigInt(key.slice(name.length + 1)))) this.reflected.delete(key);
        for (const [index, addresses] of byChunk) {
          const key = `${name}/${index}`;
          const text = JSON.stringify(addresses);
          if (this.reflected.get(key) === text) continue;
          await this.host.registry.chunkStatus(name, index, addresses);
          this.reflected.set(key, text);
          written++;
        }
      } catch {
        this.changed.add(name);
      }
    }
    return written;
  }

  /** Per pool: chunks owned, addresses used by sandboxes here, lent to other nodes, borrowed from them (Prometheus gauges). */
  usage(): { pool: string; chunks: number; used: number; lent: number; borrowed: number }[] {
    return [...this.local.values()].map((p) => {
      const holders = [...p.held.values()];
      const lent = holders.filter((h) => h.lent).length;
      const borrowed = holders.filter((h) => h.loan).length;
      return { pool: p.name, chunks: p.chunks.size, used: holders.length - lent - borrowed, lent, borrowed };
    });
  }

  private nodePool(ref: PoolRef): NodePool {
    let p = this.local.get(ref.name);
    const g = p?.geometry;
    if (!p || !g || g.chunkBits !== ref.geometry.chunkBits || g.network !== ref.geometry.network || g.prefix !== ref.geometry.prefix || g.family !== ref.geometry.family) {
      p = this.open(ref.name, ref.geometry);
    }
    return p;
  }

  /** An address of `range` for the holder: from an owned chunk, else after claiming the next free chunk. */
  async take(conf: IpamConfig, range: IpamRange, holder: Holder): Promise<bigint> {
    const ref = await this.host.registry.pool(conf.networkName, range).catch((err: unknown) => {
      throw apiFailure(err, `reading the IPPool of ${range.cidr}`);
    });
    const local = this.nodePool(ref);
    for (;;) {
      const addr = local.take(range, holder);
      if (addr !== undefined) return addr;
      // The only API call of an ADD, when this node's chunks are full; failing, it is "try again later".
      const claimed = await this.claimChunk(ref, range, local, conf.enableOverlappingRanges).catch((err: unknown) => {
        throw apiFailure(err, `claiming a chunk of ${range.cidr}`);
      });
      if (claimed) continue;
      // No chunk left: the tail of the pool is in other nodes' chunks; one of them lends an address.
      const borrowed = await this.borrow(conf, ref, range, local, holder).catch((err: unknown) => {
        throw apiFailure(err, `borrowing an address of ${range.cidr}`);
      });
      if (borrowed.addr !== undefined) return borrowed.addr;
      // Owners not asked this time (past MAX_LOANS_PER_ADD) may have room: the retry asks them.
      if (borrowed.unasked) {
        throw new CniError(
          ErrorCode.TryAgainLater,
          `pool ${range.cidr}${conf.networkName ? ` of network ${conf.networkName}` : ''} has no chunk left here; the ${MAX_LOANS_PER_ADD} owners asked had no address to lend`,
          `${borrowed.unasked} other owners are asked on the next try`,
        );
      }
      // An owner that did not answer (its daemon down, or its watch not back yet) may have room: not "exhausted".
      if (borrowed.unanswered) {
        throw new CniError(
          ErrorCode.TryAgainLater,
          `pool ${range.cidr}${conf.networkName ? ` of network ${conf.networkName}` : ''} has no chunk left here, and ${borrowed.unanswered} of its owners did not answer a loan`,
          `they may have free addresses; try again (no loan answered within ${this.loanAnswerMs} ms)`,
        );
      }
      throw new CniError(
        ErrorCode.InvalidNetworkConfig,
        `pool ${range.cidr}${conf.networkName ? ` of network ${conf.networkName}` : ''} is exhausted`,
        `${rangeCapacity(range)} addresses in the range; every chunk of it is owned, this node's (${local.chunks.size}) are full, and no other node had one to lend`,
      );
    }
  }

  /**
   * The tail of a full pool (docs/ipam.md): asks the nodes owning its chunks, those with most first,
   * for one address each in turn (MAX_LOANS_PER_ADD at most), through an IPLoan the owner answers. The answer is checked (an
   * allocatable address of the range, in a chunk the lender owns) and recorded before it is returned.
   * A loan not used is deleted, which gives its address back to the lender.
   */
  private async borrow(conf: IpamConfig, ref: PoolRef, range: IpamRange, local: NodePool, holder: Holder): Promise<{ addr?: bigint; unanswered: number; unasked: number }> {
    const reg = this.host.registry;
    // A view a moment old is enough: a lender that no longer owns the chunk refuses, and the answer is checked.
    const owned = await reg.owned(ref.name, true);
    // Each owner's room as its chunks' status says (a second behind its log): owners with room are asked
    // first, and one whose every chunk is full by its status is not asked at all.
    const room = new Map<string, { free: bigint; known: boolean }>();
    for (const [index, { node, shadowOf, used }] of owned) {
      if (node === reg.node || node === CLAIMS_OWNER || shadowOf) continue;
      const [lo, hi] = chunkSpan(ref.geometry, index);
      const capacity = rangeCapacity({ ...range, first: lo > range.first ? lo : range.first, last: hi < range.last ? hi : range.last });
      const r = room.get(node) ?? { free: 0n, known: true };
      r.free += capacity > 0n ? capacity - BigInt(used ?? 0) : 0n;
      r.known &&= used !== undefined;
      room.set(node, r);
    }
    let unanswered = 0;
    // At most MAX_LOANS_PER_ADD owners, those with most room first (ties in random order, so that the
    // borrowers of a cluster do not all ask the same ones): an ADD costs a bounded number of loans, not
    // one per node. Owners that refused a moment ago are asked last.
    const refused = this.refusedBy.get(ref.name) ?? new Map<string, number>();
    this.refusedBy.set(ref.name, refused);
    const now = Date.now();
    for (const [node, until] of refused) if (until < now) refused.delete(node);
    const lenders = [...room]
      .filter(([, r]) => !r.known || r.free > 0n)
      .map(([node, r]) => ({ node, free: r.free, tie: Math.random(), full: refused.has(node) }))
      .sort((a, b) => Number(a.full) - Number(b.full) || (b.free > a.free ? 1 : b.free < a.free ? -1 : 0) || a.tie - b.tie);
    const asking = lenders.slice(0, MAX_LOANS_PER_ADD);
    const unasked = lenders.slice(MAX_LOANS_PER_ADD).filter((l) => !l.full).length;
    for (const { node: lender } of asking) {
      const name = await reg.requestLoan(ref, conf.networkName, range, lender, holder.pod);
      const answer = await this.answerOf(name);
      if (answer?.address === undefined && answer?.refused === undefined) unanswered++;
      const ip = answer?.address === undefined ? undefined : parseIp(answer.address);
      if (
        ip &&
        ip.family === range.family &&
        firstFree(range, ip.value, ip.value, (a) => local.held.has(a)) === ip.value &&
        owned.get(chunkOf(ref.geometry, ip.value))?.node === lender &&
        !owned.get(chunkOf(ref.geometry, ip.value))?.shadowOf
      ) {
        local.borrow(ip.value, { ...holder, loan: name });
        return { addr: ip.value, unanswered, unasked };
      }
      if (answer?.refused !== undefined) refused.set(lender, Date.now() + REFUSAL_MEMORY_MS);
      await reg.dropLoan(name);
    }
    return { unanswered, unasked };
  }

  /** The loan once its lender answered; undefined if it did not in time, or the loan went. */
  private async answerOf(name: string): Promise<Loan | undefined> {
    // Read again 20, 40, 80 … 320 ms apart: a lender answers within tens of ms, and a slow one is not
    // asked about a hundred times (≤ 10 GETs per loan within the 2 s, where a fixed 20 ms made 100).
    for (let wait = LOAN_POLL_MS, deadline = Date.now() + this.loanAnswerMs; Date.now() < deadline; wait = Math.min(wait * 2, 16 * LOAN_POLL_MS)) {
      await new Promise((r) => setTimeout(r, wait));
      const loan = await this.host.registry.loan(name);
      if (!loan || loan.address !== undefined || loan.refused !== undefined) return loan;
    }
    return undefined;
  }

  /**
   * A loan addressed to this node (the daemon's informer of them): answered once, with an address of an
   * owned chunk held for it, or a refusal; when the loan is deleted, its address is freed. An answer that
   * may or may not have landed keeps the address held: only the loan's deletion frees it.
   */
  async onLoan(loan: Loan, gone: boolean): Promise<void> {
    const reg = this.host.registry;
    if (loan.lender !== reg.node) return;
    if (gone) {
      this.openPools()
        .find((p) => p.name === loan.pool)
        ?.unlend(loan.name);
      return;
    }
    if (loan.address !== undefined || loan.refused !== undefined) return;
    if (loan.pool !== poolName(loan.network, loan.range.cidr)) return reg.answerLoan(loan.name, { refused: 'spec.pool is not the pool of spec.network and spec.cidr' });
    const local = this.nodePool(await reg.pool(loan.network, loan.range));
    const addr = local.lend(loan.range, loan.name, loan.pod);
    try {
      await reg.answerLoan(loan.name, addr === undefined ? { refused: `${reg.node} has no free address in its chunks` } : { address: formatIp({ family: loan.range.family, value: addr }) });
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) local.unlend(loan.name);
      else throw err;
    }
  }

  /** What this node lent under loans that no longer exist (deleted while the daemon was down) is freed. */
  settleLent(loans: Set<string>): number {
    let freed = 0;
    for (const p of this.openPools()) for (const h of [...p.held.values()]) if (h.lent && !loans.has(h.lent) && p.unlend(h.lent) !== undefined) freed++;
    return freed;
  }

  /**
   * Loans this node made and no longer holds an address of (freed by DEL or GC while the delete of the
   * loan failed, or a crash between the answer and the record) are deleted, once older than `graceMs`.
   */
  async settleBorrowed(graceMs: number, now = Date.now()): Promise<number> {
    const holding = new Set(this.openPools().flatMap((p) => [...p.held.values()].map((h) => h.loan)));
    let dropped = 0;
    for (const loan of await this.host.registry.borrowed()) {
      if (holding.has(loan.name) || now - loan.created < graceMs) continue;
      await this.host.registry.dropLoan(loan.name);
      dropped++;
    }
    return dropped;
  }

  private claimChunk(ref: PoolRef, range: IpamRange, local: NodePool, overlapping: boolean): Promise<boolean> {
    let pending = this.claiming.get(ref.name);
    if (!pending) {
      pending = (async () => {
        const owned = await this.host.registry.owned(ref.name);
        // Chunks the API says are ours but the log lacks (a create whose logging a crash cut off): adopt them.
        const before = local.chunks.size;
        for (const [i, { node, shadowOf }] of owned) if (node === this.host.registry.node && !shadowOf && !local.chunks.has(i) && !this.releasing.has(`${ref.name}/${i}`)) local.addChunk(i);
        if (local.chunks.size > before) return true;
        const taken = new Set(owned.keys());
        for (let start = startChunk(ref.geometry, range, this.host.registry.node); ;) {
          const index = pickChunk(ref.geometry, range, taken, start);
          if (index === undefined) return false;
          if (await this.host.registry.claim(ref, index, this.host.registry.node, overlapping)) {
            local.addChunk(index);
            return true;
          }
          taken.add(index);
          start = index + 1n;
        }
      })().finally(() => this.claiming.delete(ref.name));
      this.claiming.set(ref.name, pending);
    }
    return pending;
  }

  /**
   * An address for an IPAMClaim (docs/ipam.md): the one it is bound to, or a free one of a chunk owned
   * by no node, taken by creating its address lease and then the claim's binding; a claim bound
   * meanwhile by another node keeps that binding, and this node drops its address lease.
   */
  async takeForClaim(conf: IpamConfig, range: IpamRange, namespace: string, name: string): Promise<bigint> {
    const api = <T>(what: string, p: Promise<T>) =>
      p.catch((err: unknown) => {
        throw apiFailure(err, what);
      });
    const reg = this.host.registry;
    const ref = await api(`reading the IPPool of ${range.cidr}`, reg.pool(conf.networkName, range));
    const uid = await api(`reading IPAMClaim ${namespace}/${name}`, reg.claimUid(namespace, name));
    if (!uid) throw new CniError(ErrorCode.InvalidNetworkConfig, `IPAMClaim ${namespace}/${name} does not exist`, 'the pod names it in ipam-claim-reference; create it first');
    const claim = `${namespace}/${name}`;
    for (let attempt = 0; attempt < 64; attempt++) {
      const bound = await api('reading the claim binding', reg.boundAddress(ref.name, uid));
      if (bound) return parseIp(bound)!.value;
      const owned = await api(`listing chunks of ${range.cidr}`, reg.owned(ref.name));
      const leased = await api('listing leases', reg.leasedAddresses(ref.name));
      let addr: bigint | undefined;
      for (const [index, owner] of owned) {
        if (owner.node !== CLAIMS_OWNER || owner.shadowOf) continue;
        const [lo, hi] = chunkSpan(ref.geometry, index);
        addr = firstFree(range, lo, hi, (a) => leased.has(formatIp({ family: range.family, value: a })));
        if (addr !== undefined) break;
      }
      if (addr === undefined) {
        const index = pickChunk(ref.geometry, range, new Set(owned.keys()), startChunk(ref.geometry, range, CLAIMS_OWNER));
        if (index === undefined) throw new CniError(ErrorCode.InvalidNetworkConfig, `pool ${range.cidr} is exhausted`, `no chunk is left for IPAMClaim ${claim}`);
        await api('claiming a chunk for IPAMClaims', reg.claim(ref, index, CLAIMS_OWNER, conf.enableOverlappingRanges));
        continue;
      }
      const text = formatIp({ family: range.family, value: addr });
      if (!(await api('leasing an address', reg.lease(ref.name, 'address', text, claim, uid)))) continue;
      if (await api('binding the claim', reg.lease(ref.name, 'binding', text, claim, uid))) return addr;
      await reg.dropAddressLease(ref.name, text).catch(() => undefined);
    }
    throw new CniError(ErrorCode.TryAgainLater, `IPAMClaim ${claim}: no address after 64 tries`, 'other nodes keep taking the same addresses');
  }

  /** DEL: what the sandbox interface holds in each pool this node knows (a pool it never used holds nothing of it; no API call). */
  async free(conf: IpamConfig, containerID: string, ifName: string): Promise<void> {
    for (const range of conf.ranges) {
      const p = this.known(conf, range);
      const loan = p?.holder(containerID, ifName)?.loan;
      p?.free(containerID, ifName);
      // A borrowed address goes back to its lender with the loan; not waited for (DEL needs no API):
      // a delete that fails is done again by settleBorrowed.
      if (loan) void this.host.registry.dropLoan(loan).catch(() => undefined);
    }
  }

  /** The node's state of a range's pool if it has one, found by name alone (DEL and CHECK need no API). */
  private known(conf: IpamConfig, range: IpamRange): NodePool | undefined {
    const name = poolName(conf.networkName, range.cidr);
    const cached = this.local.get(name);
    if (cached) return cached;
    if (!existsSync(join(this.host.stateDir, 'pools', `${name}.log`))) return undefined;
    // Freeing and finding need no chunk size; nodePool() opens it again with the pool's own before taking.
    return this.open(name, geometry(range));
  }

  /** Writes the claim's status (best effort: the address is the claim's whether or not this lands). */
  async claimStatus(namespace: string, name: string, ips: string[], pod: string | undefined): Promise<void> {
    await this.host.registry.claimStatus(namespace, name, ips, pod).catch(() => undefined);
  }

  /**
   * Empty chunks go back to the pool once they have been empty for `idleMs` (a node whose pods went
   * keeps nothing it does not use): first out of the log, so nothing is taken from them, then the API
   * object. A delete that fails leaves the object; the node adopts it again at its next claim.
   */
  async returnIdle(idleMs: number, now = Date.now()): Promise<number> {
    let returned = 0;
    for (const name of [...this.local.keys()]) {
      // The pool's own chunk size (a pool opened for DEL or GC has a stand-in): emptiness is counted with it.
      const ref = await this.host.registry.poolByName(name).catch(() => undefined);
      if (!ref) continue;
      const p = this.nodePool(ref);
      for (const index of [...p.chunks]) {
        if (p.inChunk(index).length) {
          this.emptySince.delete(`${name}/${index}`);
          continue;
        }
        const since = this.emptySince.get(`${name}/${index}`) ?? now;
        this.emptySince.set(`${name}/${index}`, since);
        if (now - since < idleMs || this.claiming.has(name)) continue;
        const key = `${name}/${index}`;
        this.releasing.add(key);
        p.removeChunk(index);
        this.emptySince.delete(key);
        await this.host.registry
          .release(ref, index)
          .catch(() => undefined)
          .finally(() => this.releasing.delete(key));
        returned++;
      }
    }
    return returned;
  }

  /** Every pool this node has state of, opened (the chunk size does not matter to freeing or finding: a pool not open yet is read with any). */
  private openPools(names?: string[]): NodePool[] {
    const dir = join(this.host.stateDir, 'pools');
    const all =
      names ??
      (existsSync(dir)
        ? readdirSync(dir)
            .filter((f) => f.endsWith('.log'))
            .map((f) => f.slice(0, -4))
        : []);
    return all.map((name) => this.local.get(name) ?? this.open(name, { family: 4, network: 0n, prefix: 0, chunkBits: 0 }));
  }

  /**
   * Chunks in this node's logs that the API says are not its own (reclaimed as a gone node's while this
   * daemon was away, or never created): nothing more is handed out of them. A pool whose chunks cannot
   * be listed is left as it is (the API partitioned: its chunks stay its own). Returns how many.
   */
  async forgetLostChunks(): Promise<number> {
    // One list of this node's own chunks (the API server filters on spec.node), not every chunk of each pool.
    const own = await this.host.registry.ownChunks().catch(() => undefined);
    if (!own) return 0;
    let forgotten = 0;
    for (const p of this.openPools()) {
      if (this.claiming.has(p.name)) continue;
      const mine = own.get(p.name);
      for (const index of [...p.chunks]) {
        if (mine?.has(index)) continue;
        if (this.claiming.has(p.name) || this.releasing.has(`${p.name}/${index}`)) continue;
        p.forgetChunk(index);
        forgotten++;
      }
    }
    return forgotten;
  }

  /** GC over every pool this node has state of: what `live` says is dead and older than `graceMs` is freed (borrowed addresses' loans are deleted by settleBorrowed). */
  sweep(live: (h: Holder) => boolean | undefined, graceMs: number, pools?: string[]): { pool: string; addr: bigint; holder: Holder }[] {
    return this.openPools(pools).flatMap((p) => p.sweep(live, graceMs).map((f) => ({ pool: p.name, ...f })));
  }

  holding(conf: IpamConfig, range: IpamRange, containerID: string, ifName: string): bigint | undefined {
    return this.known(conf, range)?.holding(containerID, ifName);
  }
}

/** An address younger than this is never garbage-collected: its ADD may still be running. */
export const GC_GRACE_MS = 60_000;

export function ipamPluginWith(pools: IpamPools): Plugin {
  return {
    about: 'Plexus IPAM (whereabouts-compatible, cluster-wide)',
    supportedVersions: SUPPORTED_VERSIONS,
    async add(req) {
      const conf = loadConf(req);
      const ns = getArg(req.args, 'K8S_POD_NAMESPACE');
      const name = getArg(req.args, 'K8S_POD_NAME');
      const uid = getArg(req.args, 'K8S_POD_UID');
      const holder: Holder = { containerID: req.containerID, ifName: req.ifName, ...(ns && name ? { pod: `${ns}/${name}` } : {}), ...(uid ? { podUID: uid } : {}) };
      const ips: NonNullable<Result['ips']> = [];
      // The meta plugin passes a selection's ipam-claim-reference, resolved in the pod's namespace.
      const claim = getArg(req.args, IPAM_CLAIM_ARG)?.split('/');
      if (claim && (claim.length !== 2 || !claim[0] || !claim[1])) throw new CniError(ErrorCode.InvalidNetworkConfig, `invalid ${IPAM_CLAIM_ARG}`, 'expected <namespace>/<name>');
      try {
        for (const range of conf.ranges) {
          const addr = claim ? await pools.takeForClaim(conf, range, claim[0]!, claim[1]!) : await pools.take(conf, range, holder);
          const gw = conf.gateway && conf.gateway.family === range.family && conf.gateway.value >= range.network && conf.gateway.value <= range.broadcast ? conf.gateway.text : undefined;
          ips.push({ address: `${formatIp({ family: range.family, value: addr })}/${range.prefix}`, ...(gw ? { gateway: gw } : {}) });
        }
      } catch (err) {
        // All or nothing: what this ADD took from the other ranges goes back.
        await pools.free(conf, req.containerID, req.ifName).catch(() => undefined);
        throw err;
      }
      if (claim)
        await pools.claimStatus(
          claim[0]!,
          claim[1]!,
          ips.map((i) => i.address),
          holder.pod?.split('/')[1],
        );
      for (const a of conf.addresses) ips.push({ address: a.address, ...(a.gateway ? { gateway: a.gateway } : {}) });
      const result: Result = { cniVersion: '1.1.0', ips, ...(conf.routes.length ? { routes: conf.routes } : {}) };
      return convertResult(result, req.conf.cniVersion);
    },
    async del(req) {
      let conf: IpamConfig;
      try {
        conf = loadConf(req);
      } catch {
        return; // nothing could have been allocated from a conf that does not parse
      }
      await pools.free(conf, req.containerID, req.ifName);
    },
    /** CNI GC (spec 1.1): what is not among `cni.dev/valid-attachments` is freed, once older than a minute. */
    async gc(req) {
      const conf = loadConf(req);
      const valid = (req.conf as { 'cni.dev/valid-attachments'?: { containerID?: unknown; ifname?: unknown }[] })['cni.dev/valid-attachments'];
      if (!Array.isArray(valid)) throw new CniError(ErrorCode.InvalidNetworkConfig, 'GC without cni.dev/valid-attachments', 'the runtime must say which attachments are still valid');
      const keep = new Set(valid.map((v) => `${String(v.containerID)}/${String(v.ifname)}`));
      const names = conf.ranges.map((r) => poolName(conf.networkName, r.cidr));
      pools.sweep((h) => keep.has(`${h.containerID}/${h.ifName}`), GC_GRACE_MS, names);
    },
    async check(req) {
      const conf = loadConf(req);
      // A claimed address is the claim's, not this sandbox's: nothing of it is held on the node.
      if (getArg(req.args, IPAM_CLAIM_ARG)) return;
      for (const range of conf.ranges) {
        if (pools.holding(conf, range, req.containerID, req.ifName) === undefined) {
          throw new CniError(ErrorCode.InvalidNetworkConfig, `no address of ${range.cidr} is held for ${req.containerID}/${req.ifName}`);
        }
      }
    },
  };
}
