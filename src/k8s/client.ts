/**
 * A small Kubernetes API client for the per-pod path: GET, PATCH and POST with a timeout, from a
 * kubeconfig or in-cluster credentials. `@kubernetes/client-node` costs ~1 s to load per exec;
 * this costs nothing. Tokens are read per request, so rotated service-account tokens keep working.
 */
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { CniError, ErrorCode } from '../cni/errors.js';

export interface ApiConfig {
  server: string;
  token?: string;
  tokenFile?: string;
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  insecureSkipTLSVerify?: boolean;
}

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

const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** In-cluster config from the service environment and the mounted service-account files. */
export function inClusterConfig(env: NodeJS.ProcessEnv = process.env): ApiConfig | undefined {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) return undefined;
  const server = `https://${host.includes(':') ? `[${host}]` : host}:${port}`;
  let ca: Buffer | undefined;
  try {
    ca = readFileSync(`${SA_DIR}/ca.crt`);
  } catch {
    ca = undefined;
  }
  return { server, tokenFile: `${SA_DIR}/token`, ...(ca ? { ca } : {}) };
}

interface KubeconfigFile {
  'current-context'?: string;
  contexts?: { name: string; context: { cluster: string; user: string } }[];
  clusters?: { name: string; cluster: { server: string; 'certificate-authority'?: string; 'certificate-authority-data'?: string; 'insecure-skip-tls-verify'?: boolean } }[];
  users?: { name: string; user: { token?: string; tokenFile?: string; 'client-certificate'?: string; 'client-certificate-data'?: string; 'client-key'?: string; 'client-key-data'?: string } }[];
}

/** Reads the current context of a kubeconfig (YAML or JSON). */
export async function loadKubeconfig(path: string): Promise<ApiConfig> {
  let doc: KubeconfigFile;
  try {
    const text = readFileSync(path, 'utf8');
    // JSON is valid YAML, but skip loading the YAML parser when it is JSON.
    doc = text.trimStart().startsWith('{') ? (JSON.parse(text) as KubeconfigFile) : ((await import('yaml')).parse(text) as KubeconfigFile);
  } catch (err) {
    throw new CniError(ErrorCode.InvalidNetworkConfig, `cannot read kubeconfig ${path}`, (err as Error).message);
  }
  const ctxName = doc['current-context'] ?? doc.contexts?.[0]?.name;
  const ctx = doc.contexts?.find((c) => c.name === ctxName)?.context;
  const cluster = doc.clusters?.find((c) => c.name === ctx?.cluster)?.cluster ?? doc.clusters?.[0]?.cluster;
  const user = doc.users?.find((u) => u.name === ctx?.user)?.user ?? doc.users?.[0]?.user ?? {};
  if (!cluster?.server) throw new CniError(ErrorCode.InvalidNetworkConfig, `kubeconfig ${path} has no cluster server`);
  const file = (p?: string): Buffer | undefined => (p ? readFileSync(p) : undefined);
  const data = (d?: string): Buffer | undefined => (d ? Buffer.from(d, 'base64') : undefined);
  const cfg: ApiConfig = { server: cluster.server };
  const ca = data(cluster['certificate-authority-data']) ?? file(cluster['certificate-authority']);
  const cert = data(user['client-certificate-data']) ?? file(user['client-certificate']);
  const key = data(user['client-key-data']) ?? file(user['client-key']);
  if (ca) cfg.ca = ca;
  if (cert) cfg.cert = cert;
  if (key) cfg.key = key;
  if (user.token) cfg.token = user.token;
  if (user.tokenFile) cfg.tokenFile = user.tokenFile;
  if (cluster['insecure-skip-tls-verify']) cfg.insecureSkipTLSVerify = true;
  return cfg;
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

  async post<T>(path: string, body: unknown): Promise<T> {
    return (await this.send('POST', path, body, 'application/json')) as T;
  }

  private send(method: string, path: string, body?: unknown, contentType?: string): Promise<unknown> {
    this.counts[method] = (this.counts[method] ?? 0) + 1;
    this.onRequest?.(method);
    const url = new URL(path, this.cfg.server);
    const headers: Record<string, string> = { Accept: 'application/json', 'User-Agent': this.userAgent };
    const token = this.cfg.tokenFile ? readFileSync(this.cfg.tokenFile, 'utf8').trim() : this.cfg.token;
    if (token) headers.Authorization = `Bearer ${token}`;
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
      ...(tls ? { ca: this.cfg.ca, cert: this.cfg.cert, key: this.cfg.key, rejectUnauthorized: !this.cfg.insecureSkipTLSVerify } : {}),
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
