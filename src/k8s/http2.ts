/**
 * The daemon's transport: every request and watch of the process multiplexed over one HTTP/2
 * connection, as client-go does. A watch then costs a stream, not a socket with its TLS buffers
 * (~0.4 MiB each, docs/scale.md), which was most of a daemon's RSS on a node whose pods span many
 * namespaces.
 */
import { type ClientHttp2Session, type ClientHttp2Stream, connect, constants } from 'node:http2';
import type { ApiConfig } from './kubeconfig.js';
import { type ApiTransport, tlsOptions } from './transport.js';

/**
 * Streams per connection before another is opened: what the server's SETTINGS allow (kube-apiserver's
 * --http2-max-streams-per-connection), at most 1000; 100 until they arrive (below any server's limit:
 * Go's default is 250).
 */
const FIRST_MAX_STREAMS = 100;
const MAX_STREAMS = 1000;
/** How often a connection with open streams is pinged; one with no stream for two such spells is closed. */
const IDLE_MS = 30_000;
/** A ping unanswered this long means a dead connection (no FIN ever came): it is dropped, its watches fail and reopen. */
const PING_TIMEOUT_MS = 15_000;

interface Connection {
  session: ClientHttp2Session;
  streams: number;
  maxStreams: number;
}

/**
 * HTTP/2 connections to one API server, shared by every client given this transport. A connection is
 * dropped on error, GOAWAY or an unanswered ping (client-go's health check: a watch on a connection that
 * died silently would otherwise wait forever); the next request opens a new one. Idle connections do
 * not keep the process alive.
 */
export class Http2Connections {
  private readonly open = new Set<Connection>();
  /** Streams per connection the server's last SETTINGS allowed. */
  private serverMaxStreams: number | undefined;
  /** Connections opened so far (tests and /debug). */
  opened = 0;

  constructor(
    private readonly cfg: ApiConfig,
    private readonly timing = { idleMs: IDLE_MS, pingTimeoutMs: PING_TIMEOUT_MS },
  ) {}

  readonly transport: ApiTransport = (r, onReply, onError) => {
    const conn = this.connection();
    const headers: Record<string, string> = { ':method': r.method, ':path': r.url.pathname + r.url.search };
    for (const [k, v] of Object.entries(r.headers)) headers[k.toLowerCase()] = v;
    let stream: ClientHttp2Stream;
    try {
      stream = conn.session.request(headers, { endStream: !r.payload });
    } catch (err) {
      this.drop(conn);
      queueMicrotask(() => onError(err instanceof Error ? err : new Error(String(err))));
      return () => undefined;
    }
    if (conn.streams++ === 0) conn.session.ref();
    stream.once('close', () => {
      if (--conn.streams === 0) conn.session.unref();
    });
    let replied = false;
    stream.once('response', (h) => {
      replied = true;
      onReply({ status: Number(h[':status'] ?? 0), body: stream });
    });
    stream.on('error', (err) => {
      if (!replied) onError(err);
    });
    // A stream reset by the server (or cut with its connection) before any answer.
    stream.once('close', () => {
      if (!replied) onError(new Error(`stream closed before an answer (code ${stream.rstCode ?? 'none'})`));
    });
    if (r.timeoutMs) stream.setTimeout(r.timeoutMs, () => stream.destroy(new Error(`timed out after ${r.timeoutMs} ms`)));
    if (r.payload) stream.end(r.payload);
    return () => stream.close(constants.NGHTTP2_CANCEL);
  };

  /** How many connections are open now. */
  get connections(): number {
    return this.open.size;
  }

  close(): void {
    for (const c of this.open) c.session.close();
    this.open.clear();
  }

  private connection(): Connection {
    for (const c of this.open) if (c.streams < c.maxStreams && !c.session.closed && !c.session.destroyed) return c;
    const session = connect(this.cfg.server, tlsOptions(this.cfg));
    this.opened++;
    // A new connection to a server already heard from starts at that server's limit, not at the guess.
    const conn: Connection = { session, streams: 0, maxStreams: this.serverMaxStreams ?? FIRST_MAX_STREAMS };
    session.once('remoteSettings', (settings) => {
      conn.maxStreams = this.serverMaxStreams = Math.min(settings.maxConcurrentStreams ?? FIRST_MAX_STREAMS, MAX_STREAMS);
    });
    this.open.add(conn);
    session.unref();
    session.on('error', () => this.drop(conn));
    session.on('goaway', () => {
      this.drop(conn);
      session.close();
    });
    session.on('close', () => this.drop(conn));
    // Node's session timeout fires once per quiet spell, and a ping's answer does not re-arm it: a tick of our own.
    const { idleMs, pingTimeoutMs } = this.timing;
    let idleTicks = 0;
    const health = setInterval(() => {
      if (conn.streams === 0) {
        if (++idleTicks >= 2) session.close();
        return;
      }
      idleTicks = 0;
      const dead = setTimeout(() => session.destroy(new Error(`the API server answered no ping in ${pingTimeoutMs} ms`)), pingTimeoutMs);
      dead.unref();
      const sent = session.ping((err) => {
        clearTimeout(dead);
        if (err && !session.destroyed) session.destroy(err);
      });
      if (!sent) clearTimeout(dead);
    }, idleMs);
    health.unref();
    session.on('close', () => clearInterval(health));
    return conn;
  }

  /** No new stream goes to this connection; its open streams run to their end. */
  private drop(conn: Connection): void {
    this.open.delete(conn);
  }
}
