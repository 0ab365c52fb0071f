/**
 * How an ApiClient's requests reach the API server. HTTP/1.1 (the default, for one-shot commands, which
 * should not load node:http2): a request per call, a TLS connection per open watch. The daemon's HTTP/2
 * is in http2.ts.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Readable } from 'node:stream';
import type { ApiConfig } from './kubeconfig.js';

export interface ApiRequest {
  method: string;
  url: URL;
  headers: Record<string, string>;
  payload?: Buffer;
  /** Inactivity limit; none for a watch, which is quiet for as long as nothing changes. */
  timeoutMs?: number;
}

/** The server's answer: its status and the body as it streams in. */
export interface ApiReply {
  status: number;
  body: Readable;
}

/** Sends a request; `onReply` once the status is in, `onError` if none comes. Returns a cancel. */
export type ApiTransport = (req: ApiRequest, onReply: (reply: ApiReply) => void, onError: (err: Error) => void) => () => void;

export function tlsOptions(cfg: ApiConfig) {
  return { ca: cfg.ca, cert: cfg.cert, key: cfg.key, servername: cfg.serverName, rejectUnauthorized: !cfg.insecureSkipTLSVerify };
}

/** HTTP/1.1: a request per call on Node's global agent. */
export function http1Transport(cfg: ApiConfig): ApiTransport {
  return (r, onReply, onError) => {
    const tls = r.url.protocol === 'https:';
    const opts = { method: r.method, headers: r.headers, ...(r.timeoutMs ? { timeout: r.timeoutMs } : {}), ...(tls ? tlsOptions(cfg) : {}) };
    const req = (tls ? httpsRequest : httpRequest)(r.url, opts, (res) => onReply({ status: res.statusCode ?? 0, body: res }));
    if (r.timeoutMs) req.on('timeout', () => req.destroy(new Error(`timed out after ${r.timeoutMs} ms`)));
    req.on('error', onError);
    req.end(r.payload);
    return () => req.destroy();
  };
}
