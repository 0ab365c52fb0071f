/**
 * A small Kubernetes API client for the per-pod path: GET, PATCH and POST with a timeout, from a
 * kubeconfig or in-cluster credentials. `@kubernetes/client-node` costs ~1 s to load per exec;
 * this costs nothing. Tokens are read per request, so rotated service-account tokens keep working.
 */
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { CniError, ErrorCode } from '../cni/errors.js';
import type { ApiConfig } from './kubeconfig.js';

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

export class ApiClient {
  /** Requests sent, by verb (for tests and benchmarks of API cost). */
  readonly counts: Record<string, number> = {};

  constructor(
    private readonly cfg: ApiConfig,
    private readonly timeoutMs: number,
    private readonly onRequest?: (verb: string) => void,
    private readonly userAgent = 'plexus',
  ) {}

  async get<T>(path: string): Promise<T> {
    return (await this.send('GET', path)) as T;
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

  private send(method: string, path: string, body?: unknown, contentType?: string): Promise<unknown> {
    this.counts[method] = (this.counts[method] ?? 0) + 1;
    this.onRequest?.(method);
    // Appended, not resolved: a server URL with a path prefix (a proxy in front) keeps it.
    const url = new URL(this.cfg.server + path);
    const headers: Record<string, string> = { Accept: 'application/json', 'User-Agent': this.userAgent };
    const token = this.cfg.tokenFile ? readFileSync(this.cfg.tokenFile, 'utf8').trim() : this.cfg.token;
    if (token) headers.Authorization = `Bearer ${token}`;
    else if (this.cfg.username !== undefined) headers.Authorization = `Basic ${Buffer.from(`${this.cfg.username}:${this.cfg.password ?? ''}`).toString('base64')}`;
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    if (payload) {
      headers['Content-Type'] = contentType ?? 'application/json';
      headers['Content-Length'] = String(payload.length);
    }
    const tls = url.protocol === 'https:';
    const opts = {
      method,
      headers,
      timeout: this.timeoutMs,
      ...(tls ? { ca: this.cfg.ca, cert: this.cfg.cert, key: this.cfg.key, servername: this.cfg.serverName, rejectUnauthorized: !this.cfg.insecureSkipTLSVerify } : {}),
    };
    return new Promise((resolve, reject) => {
      const req = (tls ? httpsRequest : httpRequest)(url, opts, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          let parsed: unknown = undefined;
          try {
            parsed = text ? JSON.parse(text) : undefined;
          } catch {
            parsed = text;
          }
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) return resolve(parsed);
          const st = parsed as { reason?: string; message?: string } | undefined;
          reject(new ApiError(status, st?.reason ?? String(status), `${method} ${path}: ${status} ${st?.message ?? text.slice(0, 200)}`));
        });
      });
      req.on('timeout', () => req.destroy(new Error(`timed out after ${this.timeoutMs} ms`)));
      req.on('error', (err) => reject(new ApiError(0, 'Unreachable', `${method} ${path}: ${err.message}`)));
      req.end(payload);
    });
  }
}

/** API failures as CNI errors: unreachable, throttled or 5xx is transient (11), the rest is not. */
export function apiFailure(err: unknown, what: string): CniError {
  if (err instanceof ApiError) {
    const transient = err.status === 0 || err.status === 429 || err.status >= 500;
    return new CniError(transient ? ErrorCode.TryAgainLater : ErrorCode.Internal, `${what} failed`, err.message);
  }
  return CniError.from(err);
}
