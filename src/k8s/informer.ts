/**
 * A lean informer: list, then watch from the list's resourceVersion, on Plexus's own API client.
 * It keeps only what `keep` makes of each object (the node daemon keeps a pod's name, UID and the two
 * annotations it reads, not the whole Pod), which is most of why the daemon fits in Multus's memory
 * budget; client-node's informers keep whole objects and the library alone takes ~75 MiB (docs/).
 * It behaves as client-go's reflector does where that matters for correctness:
 * - a watch the server ends (its timeout) is started again from the last resourceVersion seen;
 * - BOOKMARK events move that resourceVersion on without touching the store;
 * - lists are served by the API server's watch cache (`resourceVersion=0`), never by etcd: a thousand
 *   daemons starting, or relisting after an API server restart, do not reach etcd;
 * - 410 Gone / Expired (an ERROR event, or the watch request's answer) lists again, after a random
 *   delay (`relistSpreadMs`) so that the daemons of a cluster do not relist all at once, and brings the
 *   store up to that list in place, telling the handler of what was added, changed or deleted meanwhile;
 * - failures back off as client-go's reflector does (800 ms doubling to 30 s, each delay stretched by a
 *   random 0-100 %) and are reported; the store keeps serving what it had.
 */
import { ApiError, type ApiClient, METADATA_ONLY, type WatchEvent } from './client.js';

/**
 * Wait before trying again after the n-th failure in a row (0-based): client-go's reflector backoff,
 * 800 ms doubling to at most 30 s, times (1 + jitter) with jitter uniform in [0, 1): a thousand nodes
 * failing together come back spread over the delay, not in one burst.
 */
export function rewatchDelay(failuresInARow: number, random: () => number = Math.random): number {
  return Math.min(30_000, 800 * 2 ** Math.min(failuresInARow, 6)) * (1 + random());
}

/** Default spread of the relists after a 410: uniform in [0, this) ms. */
export const RELIST_SPREAD_MS = 15_000;

interface ObjectLike {
  metadata: { name: string; namespace?: string; resourceVersion?: string };
}

export interface InformerOptions<T extends ObjectLike> {
  /** The collection, e.g. `/api/v1/pods` or a namespace's NADs (no query). */
  path: string;
  /** Query parameters of the list and the watch (`fieldSelector`, `labelSelector`). */
  query?: Record<string, string>;
  /** What is kept of an object the server sent: parsed and trimmed; one that throws is reported and left out. */
  keep: (raw: unknown) => T;
  /** Told of every change the store sees (`gone` for a deletion), after the store has it. */
  onChange?: (obj: T, gone: boolean) => void;
  /** Told of every failure of a list or watch (they are retried). */
  onError?: (err: Error) => void;
  /** Objects per list page (the API server's `limit`). */
  pageSize?: number;
  /** The server ends each watch after this many seconds, chosen at random in the range (client-go: 300-600). */
  watchSeconds?: [number, number];
  /** How long past that a watch may stay open before the connection is taken as lost (default 60 s). */
  watchGraceMs?: number;
  /**
   * Ask for the objects' metadata only (PartialObjectMetadata): for an informer that needs no spec or
   * status (names, labels), the server sends and the process parses a fraction of each object.
   */
  metadataOnly?: boolean;
  /** A relist after a 410 waits a random time below this (default RELIST_SPREAD_MS); the first list does not wait. */
  relistSpreadMs?: number;
}

/** The answer to a watch whose resourceVersion is too old: list again. */
class Expired extends Error {}

export class Informer<T extends ObjectLike> {
  private readonly store = new Map<string, T>();
  private resourceVersion: string | undefined;
  private stopped = false;
  private abortWatch: (() => void) | undefined;
  private wake: (() => void) | undefined;
  private listedOnce = false;
  private firstTry: Promise<void> | undefined;
  private loop: Promise<void> | undefined;
  /** The latest failure, until the next success. */
  lastError: string | undefined;

  constructor(
    private readonly api: ApiClient,
    private readonly opts: InformerOptions<T>,
  ) {}

  /** Starts listing and watching; resolves once the first list was tried (it may have failed: see `listed`). */
  start(): Promise<void> {
    if (!this.firstTry) {
      let tried!: () => void;
      this.firstTry = new Promise<void>((resolve) => (tried = resolve));
      this.loop = this.run(tried);
    }
    return this.firstTry;
  }

  /** Whether a list has come in (until then the store is empty, not known empty). */
  get listed(): boolean {
    return this.listedOnce;
  }

  get(namespace: string, name: string): T | undefined {
    return this.store.get(`${namespace}/${name}`);
  }

  list(): T[] {
    return [...this.store.values()];
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abortWatch?.();
    this.wake?.();
    await this.loop;
  }

  private async run(tried: () => void): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      try {
        if (this.resourceVersion === undefined) {
          try {
            await this.relist();
          } finally {
            tried();
          }
        }
        const started = Date.now();
        const events = await this.watch();
        // A watch ended at once with nothing in it, again and again, must not spin: it backs off too.
        failures = events === 0 && Date.now() - started < 1000 ? failures + 1 : 0;
        if (failures) await this.pause(rewatchDelay(failures - 1));
        this.lastError = undefined;
      } catch (err) {
        if (this.stopped) break;
        if (err instanceof Expired) {
          this.resourceVersion = undefined;
          await this.pause(Math.random() * (this.opts.relistSpreadMs ?? RELIST_SPREAD_MS));
          continue;
        }
        const e = err instanceof Error ? err : new Error(String(err));
        this.lastError = e.message;
        this.opts.onError?.(e);
        await this.pause(rewatchDelay(failures++));
      }
    }
  }

  /**
   * Lists every page from the watch cache, then brings the store up to it in place: one store, not a
   * second full copy beside it, and the handler told of what was added, changed or deleted.
   */
  private async relist(): Promise<void> {
    const seen = new Set<string>();
    const changed: T[] = [];
    let next: string | undefined;
    let resourceVersion: string | undefined;
    do {
      // resourceVersion=0: any version the watch cache has, never a quorum read of etcd.
      // (A continue token carries the list's version itself.)
      const query = new URLSearchParams({ ...this.opts.query, limit: String(this.opts.pageSize ?? 500), ...(next ? { continue: next } : { resourceVersion: '0' }) });
      const page = await this.api.get<{ metadata?: { resourceVersion?: string; continue?: string }; items?: unknown[] }>(
        `${this.opts.path}?${query}`,
        this.opts.metadataOnly ? METADATA_ONLY.list : undefined,
      );
      for (const raw of page.items ?? []) {
        const obj = this.kept(raw);
        if (!obj) continue;
        const k = keyOf(obj);
        seen.add(k);
        if (this.store.get(k)?.metadata.resourceVersion !== obj.metadata.resourceVersion) changed.push(obj);
        this.store.set(k, obj);
      }
      next = page.metadata?.continue || undefined;
      resourceVersion = page.metadata?.resourceVersion;
    } while (next && !this.stopped);
    if (this.stopped) return;
    const gone: T[] = [];
    for (const [k, obj] of this.store) if (!seen.has(k)) gone.push(obj);
    for (const obj of gone) this.store.delete(keyOf(obj));
    for (const obj of gone) this.opts.onChange?.(obj, true);
    for (const obj of changed) this.opts.onChange?.(obj, false);
    this.resourceVersion = resourceVersion ?? '';
    this.listedOnce = true;
    this.lastError = undefined;
  }

  /** One watch from the current resourceVersion until the server ends it; how many events it brought. */
  private async watch(): Promise<number> {
    const [min, max] = this.opts.watchSeconds ?? [300, 600];
    const seconds = Math.round(min + Math.random() * (max - min));
    const query = new URLSearchParams({
      ...this.opts.query,
      watch: '1',
      allowWatchBookmarks: 'true',
      timeoutSeconds: String(seconds),
      ...(this.resourceVersion ? { resourceVersion: this.resourceVersion } : {}),
    });
    let events = 0;
    let failure: Error | undefined;
    const watching = this.api.watch(
      `${this.opts.path}?${query}`,
      (event) => {
        if (failure) return;
        events++;
        this.lastError = undefined;
        failure = this.apply(event);
        if (failure) watching.abort();
      },
      this.opts.metadataOnly ? METADATA_ONLY.watch : undefined,
    );
    this.abortWatch = watching.abort;
    // A connection that died without a word (no FIN: a node or a middlebox gone) would keep a quiet watch
    // open for ever: one that outlives its server-side timeout by watchGraceMs is ended here.
    const guard = setTimeout(
      () => {
        failure = new Error(`watch of ${this.opts.path} outlived its ${seconds} s timeout: the connection is taken as lost`);
        watching.abort();
      },
      seconds * 1000 + (this.opts.watchGraceMs ?? 60_000),
    );
    try {
      await watching.done;
    } catch (err) {
      if (err instanceof ApiError && (err.status === 410 || err.reason === 'Expired' || err.reason === 'Gone')) throw new Expired(err.message);
      throw err;
    } finally {
      clearTimeout(guard);
      this.abortWatch = undefined;
    }
    if (failure) throw failure;
    return events;
  }

  /** One watch event into the store; an error that ends the watch is returned. */
  private apply(event: WatchEvent): Error | undefined {
    const meta = (event.object as { metadata?: { resourceVersion?: unknown } } | null)?.metadata;
    switch (event.type) {
      case 'BOOKMARK':
        if (typeof meta?.resourceVersion === 'string') this.resourceVersion = meta.resourceVersion;
        return undefined;
      case 'ERROR': {
        const status = event.object as { code?: number; reason?: string; message?: string } | null;
        if (status?.code === 410 || status?.reason === 'Expired' || status?.reason === 'Gone') return new Expired(status.message ?? 'resourceVersion expired');
        return new Error(`watch of ${this.opts.path} ended with an error: ${status?.code ?? ''} ${status?.message ?? JSON.stringify(status).slice(0, 200)}`);
      }
      case 'ADDED':
      case 'MODIFIED':
      case 'DELETED': {
        const obj = this.kept(event.object);
        if (typeof meta?.resourceVersion === 'string') this.resourceVersion = meta.resourceVersion;
        if (!obj) return undefined;
        const gone = event.type === 'DELETED';
        if (gone) this.store.delete(keyOf(obj));
        else this.store.set(keyOf(obj), obj);
        this.opts.onChange?.(obj, gone);
        return undefined;
      }
      default:
        return new Error(`watch of ${this.opts.path}: unknown event type ${JSON.stringify((event as { type?: unknown }).type)}`);
    }
  }

  private kept(raw: unknown): T | undefined {
    try {
      return this.opts.keep(raw);
    } catch (err) {
      this.opts.onError?.(err instanceof Error ? err : new Error(String(err)));
      return undefined;
    }
  }

  /** Waits `ms`, or less if stopped meanwhile. */
  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }
}

function keyOf(obj: ObjectLike): string {
  return `${obj.metadata.namespace ?? ''}/${obj.metadata.name}`;
}
