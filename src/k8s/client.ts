/**
 * A small Kubernetes API client for the per-pod path: GET, PATCH and POST with a timeout, from a
 * kubeconfig or in-cluster credentials. `@kubernetes/client-node` costs ~1 s to load per exec;
 * this costs nothing. Tokens are read per request, so rotated service-account tokens keep working.
 */
import { readFileSync } from 'node:fs';
import { CniError, ErrorCode } from '../cni/errors.js';
import type { ApiConfig } from './kubeconfig.js';
import { type ApiReply, type ApiTransport, http1Transport } from './transport.js';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/**
 * What a request is in the API server's own terms (its audit log and `apiserver_request_total`): the
 * verb (`list` for a GET of a collection, `watch`, `get`, `create`, `patch`, `update`, `delete`) and the
 * resource, with its subresource (`pods/status`).
 */
export function requestKind(method: string, path: string): { verb: string; resource: string } {
  const [bare = '', query = ''] = path.split('?');
  const segs = bare.split('/').filter(Boolean);
  // /api/v1/… or /apis/<group>/<version>/…; then [namespaces/<ns>/]<resource>[/<name>[/<sub>]].
  let rest = segs[0] === 'api' ? segs.slice(2) : segs.slice(3);
  if (rest[0] === 'namespaces' && rest.length > 2) rest = rest.slice(2);
  const [resource = segs.length <= 3 ? 'discovery' : '', name, sub] = rest;
  const watch = method === 'WATCH' || /(^|&)watch=(1|true)(&|$)/.test(query);
  const verbs: Record<string, string> = { POST: 'create', PATCH: 'patch', PUT: 'update', DELETE: 'delete' };
  const verb = watch ? 'watch' : method === 'GET' ? (name === undefined ? 'list' : 'get') : (verbs[method] ?? method.toLowerCase());
  return { verb, resource: sub ? `${resource}/${sub}` : resource };
}

/** Who is told of a client's traffic: each request (method, path with its query), and each watch event received. */
export interface ApiTraffic {
  request(method: string, path: string): void;
  watchEvent?(path: string, type: string): void;
  /** A watch opened (+1) or ended (-1). */
  watching?(path: string, delta: 1 | -1): void;
}

export class ApiClient {
  /** Requests sent, by verb (for tests and benchmarks of API cost). */
  readonly counts: Record<string, number> = {};

  private readonly transport: ApiTransport;

  /** `cfg.transport` when set (the daemon's shared HTTP/2 connections), else HTTP/1.1. */
  constructor(
    private readonly cfg: ApiConfig,
    private readonly timeoutMs: number,
    private readonly traffic?: ApiTraffic,
    private readonly userAgent = 'plexus',
  ) {
    this.transport = cfg.transport ?? http1Transport(cfg);
  }

  /** GET; `accept` asks for another representation (metadataOnly's PartialObjectMetadataList). */
  async get<T>(path: string, accept?: string): Promise<T> {
    return (await this.send('GET', path, undefined, undefined, accept)) as T;
  }

  async patch<T>(path: string, body: unknown, contentType = 'application/merge-patch+json'): Promise<T> {
    return (await this.send('PATCH', path, body, contentType)) as T;
  }

  async put<T>(path: string, body: unknown): Promise<T> {
    return (await this.send('PUT', path, body, 'application/json')) as T;
  }

  async post<T>(path: string, body: unknown): Promise<T> {
    return (await this.send('POST', path, body, 'application/json')) as T;
  }

  /** DELETE, with a UID precondition when given (the object deleted is the one that was read). */
  async delete<T>(path: string, uid?: string): Promise<T> {
    const body = uid ? { apiVersion: 'v1', kind: 'DeleteOptions', preconditions: { uid } } : undefined;
    return (await this.send('DELETE', path, body, 'application/json')) as T;
  }

  /**
   * One watch (`?watch=1`) of a collection: `onEvent` gets each event as the server sends it, one JSON
   * object a line. Resolves when the server ends the watch (its timeout), rejects on a failure or a
   * non-2xx answer (an ApiError; 410 Gone for a resourceVersion too old), and `abort()` ends it at once.
   */
  watch(path: string, onEvent: (event: WatchEvent) => void, accept?: string): { done: Promise<void>; abort: () => void } {
    this.counts.WATCH = (this.counts.WATCH ?? 0) + 1;
    this.traffic?.request('WATCH', path);
    let abort = (): void => undefined;
    this.traffic?.watching?.(path, 1);
    const done = new Promise<void>((resolve, reject) => {
      const unreachable = (err: Error) => reject(new ApiError(0, 'Unreachable', `watch ${path}: ${err.message}`));
      // No timeout: a watch is quiet for as long as nothing changes (the server ends it).
      const cancel = this.open(
        'GET',
        path,
        { ...(accept ? { accept } : {}), timed: false },
        (res) => {
          if (res.status < 200 || res.status >= 300) return this.failWith(res, 'GET', path, reject);
          let partial = '';
          res.body.setEncoding('utf8');
          res.body.on('data', (chunk: string) => {
            const lines = (partial + chunk).split('\n');
            partial = lines.pop() ?? '';
            for (const line of lines) {
              if (!line.trim()) continue;
              try {
                const event = JSON.parse(line) as WatchEvent;
                this.traffic?.watchEvent?.(path, event.type);
                onEvent(event);
              } catch (err) {
                cancel();
                reject(new ApiError(0, 'Unreachable', `watch ${path}: ${err instanceof Error ? err.message : String(err)}`));
                return;
              }
            }
          });
          res.body.on('end', () => resolve());
          res.body.on('error', unreachable);
          res.body.on('close', () => {
            if (!res.body.readableEnded) unreachable(new Error('the connection closed before the end of the watch'));
          });
        },
        unreachable,
      );
      abort = () => {
        cancel();
        resolve();
      };
    });
    void done.then(
      () => this.traffic?.watching?.(path, -1),
      () => this.traffic?.watching?.(path, -1),
    );
    return { done, abort };
  }

  private send(method: string, path: string, body?: unknown, contentType?: string, accept?: string): Promise<unknown> {
    this.counts[method] = (this.counts[method] ?? 0) + 1;
    this.traffic?.request(method, path);
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const unreachable = (err: Error) => reject(new ApiError(0, 'Unreachable', `${method} ${path}: ${err.message}`));
      this.open(
        method,
        path,
        { ...(payload ? { payload, contentType } : {}), ...(accept ? { accept } : {}), timed: true },
        (res) => {
          if (res.status < 200 || res.status >= 300) return this.failWith(res, method, path, reject);
          const chunks: Buffer[] = [];
          res.body.on('data', (c: Buffer) => chunks.push(c));
          res.body.on('error', unreachable);
          res.body.on('close', () => {
            if (!res.body.readableEnded) unreachable(new Error('the connection closed before the end of the answer'));
          });
          res.body.on('end', () => {
            const text = Buffer.concat(chunks).toString();
            try {
              resolve(text ? JSON.parse(text) : undefined);
            } catch {
              resolve(text);
            }
          });
        },
        unreachable,
      );
    });
  }

  /** A request with this client's server and credentials (the token file read now: it rotates); returns its cancel. */
  private open(
    method: string,
    path: string,
    { payload, contentType, accept, timed }: { payload?: Buffer; contentType?: string | undefined; accept?: string; timed: boolean },
    onReply: (res: ApiReply) => void,
    onError: (err: Error) => void,
  ): () => void {
    // Appended, not resolved: a server URL with a path prefix (a proxy in front) keeps it.
    const url = new URL(this.cfg.server + path);
    const headers: Record<string, string> = { Accept: accept ?? 'application/json', 'User-Agent': this.userAgent };
    const token = this.cfg.tokenFile ? readFileSync(this.cfg.tokenFile, 'utf8').trim() : this.cfg.token;
    if (token) headers.Authorization = `Bearer ${token}`;
    else if (this.cfg.username !== undefined) headers.Authorization = `Basic ${Buffer.from(`${this.cfg.username}:${this.cfg.password ?? ''}`).toString('base64')}`;
    if (payload) {
      headers['Content-Type'] = contentType ?? 'application/json';
      headers['Content-Length'] = String(payload.length);
    }
    return this.transport({ method, url, headers, ...(payload ? { payload } : {}), ...(timed ? { timeoutMs: this.timeoutMs } : {}) }, onReply, onError);
  }

  /** A non-2xx answer as an ApiError with the Status's reason and message. */
  private failWith(res: ApiReply, method: string, path: string, reject: (err: ApiError) => void): void {
    const chunks: Buffer[] = [];
    res.body.on('data', (c: Buffer) => chunks.push(c));
    res.body.on('error', (err) => reject(new ApiError(0, 'Unreachable', `${method} ${path}: ${err.message}`)));
    res.body.on('end', () => {
      const text = Buffer.concat(chunks).toString();
      let st: { reason?: string; message?: string } | undefined;
      try {
        st = text ? (JSON.parse(text) as typeof st) : undefined;
      } catch {
        st = undefined;
      }
      const status = res.status;
      reject(new ApiError(status, st?.reason ?? String(status), `${method} ${path}: ${status} ${st?.message ?? text.slice(0, 200)}`));
    });
  }
}

/**
 * Accept headers that ask for objects as their metadata only (client-go's metadata client), JSON in
 * full as the fallback: a list of Nodes or Namespaces without their specs and statuses.
 */
export const METADATA_ONLY = {
  list: 'application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json',
  watch: 'application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json',
};

/** One event of a watch stream; `object` is the object, a Status (ERROR) or a kind with only a resourceVersion (BOOKMARK). */
export interface WatchEvent {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: unknown;
}

/** API failures as CNI errors: unreachable, throttled or 5xx is transient (11), the rest is not. */
export function apiFailure(err: unknown, what: string): CniError {
  if (err instanceof ApiError) {
    const transient = err.status === 0 || err.status === 429 || err.status >= 500;
    return new CniError(transient ? ErrorCode.TryAgainLater : ErrorCode.Internal, `${what} failed`, err.message);
  }
  return CniError.from(err);
}
