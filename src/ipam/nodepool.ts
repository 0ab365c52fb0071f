/**
 * One pool as one node holds it: the chunks it owns and the addresses it handed out in them, in memory
 * and in an append-only log on the node (one JSON line per change, each with a checksum; replayed at
 * start; rewritten whole when it grows). Nothing here talks to the API server: an ADD that finds a free
 * address in an owned chunk is a lookup and one append (docs/ipam.md). As with the attachment store
 * the log is not fsync'd: it guards against the daemon dying; a node crash also ends every pod holding
 * an address from it, and the chunks themselves are recovered from the API.
 */
import { createHash } from 'node:crypto';
import { appendFileSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../cni/cache.js';
import { type Geometry, chunkOf, chunkSpan, firstFree } from './chunks.js';
import type { IpamRange } from './config.js';

/** Who holds an address: the sandbox and interface (what CNI DEL names), and the pod for people and GC. */
export interface Holder {
  containerID: string;
  ifName: string;
  pod?: string;
  podUID?: string;
  /** When it was handed out (ms since the epoch): GC leaves younger ones alone (their ADD may still run). */
  since?: number;
  /** Borrowed: the address is another node's, lent under this IPLoan (docs/ipam.md, the tail of a pool). */
  loan?: string;
  /** Lent: the address is this node's, held for the IPLoan of that name until the loan is deleted. */
  lent?: string;
}

/** The holder key of an address lent under a loan (never a container ID: those have no ':'). */
export const lentHolder = (loan: string, pod?: string): Holder => ({ containerID: `loan:${loan}`, ifName: '-', lent: loan, ...(pod ? { pod } : {}) });

type Change = { op: 'chunk'; index: string } | { op: 'unchunk'; index: string } | { op: 'take'; addr: string; holder: Holder } | { op: 'free'; addr: string };

const COMPACT_AT = 256 * 1024;
const sum = (text: string): string => createHash('sha256').update(text).digest('hex').slice(0, 16);

export class NodePool {
  readonly chunks = new Set<bigint>();
  readonly held = new Map<bigint, Holder>();
  /** containerID + ifName → address: ADD retries and DEL find theirs without a scan. */
  private readonly byHolder = new Map<string, bigint>();
  private readonly file: string;
  private size = 0;
  /** Told after every recorded change (the daemon reflects chunks into the API from it). */
  onChange: (() => void) | undefined;

  constructor(
    dir: string,
    readonly name: string,
    readonly geometry: Geometry,
    private readonly compactAt = COMPACT_AT,
  ) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.file = join(dir, `${name}.log`);
    this.replay();
  }

  /**
   * Replays the log. A line that fails its checksum (cut short by a dying writer: its change was never
   * acknowledged) is left out, and the log is then rewritten whole, so that the next append does not
   * run on from the cut line and spoil a good record.
   */
  private replay(): void {
    let text = '';
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    this.size = Buffer.byteLength(text);
    let spoiled = text.length > 0 && !text.endsWith('\n');
    for (const line of text.split('\n')) {
      if (!line) continue;
      const at = line.indexOf(' ');
      const body = line.slice(at + 1);
      if (at !== 16 || line.slice(0, at) !== sum(body)) {
        spoiled = true;
        continue;
      }
      this.apply(JSON.parse(body) as Change);
    }
    if (spoiled) this.compact();
  }

  private apply(c: Change): void {
    if (c.op === 'chunk') this.chunks.add(BigInt(c.index));
    else if (c.op === 'unchunk') this.chunks.delete(BigInt(c.index));
    else if (c.op === 'take') {
      this.held.set(BigInt(c.addr), c.holder);
      this.byHolder.set(`${c.holder.containerID}/${c.holder.ifName}`, BigInt(c.addr));
    } else {
      const h = this.held.get(BigInt(c.addr));
      if (h) this.byHolder.delete(`${h.containerID}/${h.ifName}`);
      this.held.delete(BigInt(c.addr));
    }
  }

  private record(c: Change): void {
    const body = JSON.stringify(c);
    const line = `${sum(body)} ${body}\n`;
    if (this.size + Buffer.byteLength(line) > this.compactAt) {
      this.apply(c);
      this.compact();
      this.onChange?.();
      return;
    }
    appendFileSync(this.file, line, { mode: 0o600 });
    this.size += Buffer.byteLength(line);
    this.apply(c);
    this.onChange?.();
  }

  /** The log rewritten as the state it describes (temp + rename). */
  private compact(): void {
    const lines = [...[...this.chunks].map((i): Change => ({ op: 'chunk', index: String(i) })), ...[...this.held].map(([a, holder]): Change => ({ op: 'take', addr: String(a), holder }))].map((c) => {
      const body = JSON.stringify(c);
      return `${sum(body)} ${body}\n`;
    });
    const text = lines.join('');
    writeFileAtomic(this.file, text, { durable: false });
    this.size = Buffer.byteLength(text);
  }

  addChunk(index: bigint): void {
    if (!this.chunks.has(index)) this.record({ op: 'chunk', index: String(index) });
  }

  /** Gives a chunk up (locally; the API object goes after this): only an empty one. */
  removeChunk(index: bigint): void {
    if (this.inChunk(index).length) throw new Error(`chunk ${index} of pool ${this.name} still holds addresses`);
    this.forgetChunk(index);
  }

  /**
   * Stops handing out from a chunk the API says is no longer this node's (its Node object was deleted
   * and the chunk reclaimed while this daemon was away): what it holds stays held, nothing new is taken.
   */
  forgetChunk(index: bigint): void {
    if (this.chunks.has(index)) this.record({ op: 'unchunk', index: String(index) });
  }

  inChunk(index: bigint): bigint[] {
    return [...this.held.keys()].filter((a) => chunkOf(this.geometry, a) === index);
  }

  /** The address this sandbox interface already holds (an ADD retried gets the same one). */
  holding(containerID: string, ifName: string): bigint | undefined {
    return this.byHolder.get(`${containerID}/${ifName}`);
  }

  /** An address from an owned chunk, recorded before it is returned; undefined when the owned chunks are full. */
  take(range: IpamRange, holder: Holder): bigint | undefined {
    const have = this.holding(holder.containerID, holder.ifName);
    if (have !== undefined) return have;
    for (const index of [...this.chunks].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))) {
      const [lo, hi] = chunkSpan(this.geometry, index);
      const addr = firstFree(range, lo, hi, (a) => this.held.has(a));
      if (addr !== undefined) {
        this.record({ op: 'take', addr: String(addr), holder: { ...holder, since: Date.now() } });
        return addr;
      }
    }
    return undefined;
  }

  /** Lends an address of an owned chunk to the IPLoan `loan` (the same one again if already lent to it). */
  lend(range: IpamRange, loan: string, pod?: string): bigint | undefined {
    return this.take(range, lentHolder(loan, pod));
  }

  /** Frees what was lent to the loan (its object is gone: the borrower uses it no more). */
  unlend(loan: string): bigint | undefined {
    const h = lentHolder(loan);
    return this.free(h.containerID, h.ifName);
  }

  /** Records an address another node lent (not of an owned chunk), before it is returned. */
  borrow(addr: bigint, holder: Holder & { loan: string }): void {
    if (this.held.has(addr)) throw new Error(`address ${addr} of pool ${this.name} is already held here`);
    this.record({ op: 'take', addr: String(addr), holder: { ...holder, since: Date.now() } });
  }

  holder(containerID: string, ifName: string): Holder | undefined {
    const addr = this.holding(containerID, ifName);
    return addr === undefined ? undefined : this.held.get(addr);
  }

  /**
   * GC: frees what `live` says is dead (false; undefined = cannot tell, kept), if held longer than
   * `graceMs`. Returns what was freed, with its holder.
   */
  sweep(live: (h: Holder) => boolean | undefined, graceMs: number, now = Date.now()): { addr: bigint; holder: Holder }[] {
    const freed: { addr: bigint; holder: Holder }[] = [];
    for (const [addr, holder] of [...this.held]) {
      // What is lent goes back when its loan object goes, never by this GC.
      if (holder.lent || now - (holder.since ?? 0) < graceMs || live(holder) !== false) continue;
      this.record({ op: 'free', addr: String(addr) });
      freed.push({ addr, holder });
    }
    return freed;
  }

  /** Frees what this sandbox interface holds (DEL: idempotent, nothing held is not an error). */
  free(containerID: string, ifName: string): bigint | undefined {
    const addr = this.holding(containerID, ifName);
    if (addr !== undefined) this.record({ op: 'free', addr: String(addr) });
    return addr;
  }
}
