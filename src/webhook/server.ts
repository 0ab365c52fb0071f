/**
 * The webhook's HTTPS server: /validate and /mutate (AdmissionReview v1), /healthz, /readyz (the NAD
 * informer has listed) and /metrics. The certificate and key are read from files and read again when
 * they change (cert-manager and kubelet replace a Secret's files in place), without a restart.
 */
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { type Server, createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { BodyTooLarge, readBody } from '../util/body.js';
import { type Admission, type Decision, ReviewError, parseReview, reviewResponse } from './admission.js';

/** An AdmissionReview carries a pod and, on UPDATE, its old copy: a few MiB at most. */
const MAX_BODY_BYTES = 8 * 1024 * 1024;

export interface WebhookServerOptions {
  certFile: string;
  keyFile: string;
  /** How often the certificate files are read for a change. */
  certCheckMs: number;
  ready: () => boolean;
  /** Objects in the informer caches, by kind: read at each scrape. */
  cacheSizes?: () => Record<string, number>;
  log: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

export class WebhookServer {
  readonly registry = new Registry();
  private readonly latency = new Histogram({
    name: 'plexus_webhook_admission_duration_seconds',
    help: 'admission requests answered, by operation (validate, mutate), kind and outcome (allowed, denied, patched, skipped, error)',
    labelNames: ['operation', 'kind', 'outcome'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [this.registry],
  });
  private server: Server | undefined;
  private timer: NodeJS.Timeout | undefined;
  private loaded = '';

  constructor(
    private readonly admission: Admission,
    private readonly opts: WebhookServerOptions,
  ) {
    collectDefaultMetrics({ register: this.registry });
    const sizes = opts.cacheSizes;
    if (sizes) {
      new Gauge({
        name: 'plexus_webhook_cached_objects',
        help: 'objects in the informer caches admission answers from, by kind',
        labelNames: ['kind'],
        registers: [this.registry],
        collect() {
          for (const [kind, n] of Object.entries(sizes())) this.set({ kind }, n);
        },
      });
    }
  }

  private readPair(): { cert: Buffer; key: Buffer } {
    return { cert: readFileSync(this.opts.certFile), key: readFileSync(this.opts.keyFile) };
  }

  /** A changed pair is served from the next connection on; a half-written or broken one is skipped until it is whole. */
  private reloadCertificate(): void {
    let pair: { cert: Buffer; key: Buffer };
    try {
      pair = this.readPair();
    } catch (err) {
      this.opts.log('warn', 'certificate files unreadable; serving the previous ones', { error: (err as Error).message });
      return;
    }
    const seen = pair.cert.toString('base64') + pair.key.toString('base64');
    if (seen === this.loaded) return;
    try {
      this.server!.setSecureContext(pair);
      this.loaded = seen;
      this.opts.log('info', 'certificate reloaded', { certFile: this.opts.certFile });
    } catch (err) {
      this.opts.log('warn', 'certificate files do not make a key pair (yet); serving the previous ones', { error: (err as Error).message });
    }
  }

  async listen(host: string, port: number): Promise<string> {
    const pair = this.readPair();
    this.loaded = pair.cert.toString('base64') + pair.key.toString('base64');
    this.server = createServer({ ...pair, minVersion: 'TLSv1.2' }, (req, res) => void this.handle(req, res));
    // The API server's webhook client keeps connections alive: a short server timeout would cost handshakes.
    this.server.keepAliveTimeout = 120_000;
    await new Promise<void>((resolve) => this.server!.listen(port, host, resolve));
    this.timer = setInterval(() => this.reloadCertificate(), this.opts.certCheckMs);
    this.timer.unref();
    return `https://${host}:${(this.server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    const send = (code: number, body: string, type = 'text/plain'): void => {
      res.writeHead(code, { 'content-type': type });
      res.end(body);
    };
    if (req.method === 'GET' && path === '/healthz') return send(200, 'ok\n');
    if (req.method === 'GET' && path === '/readyz') return this.opts.ready() ? send(200, 'ok\n') : send(503, 'NetworkAttachmentDefinitions not listed yet\n');
    if (req.method === 'GET' && path === '/metrics') return send(200, await this.registry.metrics(), this.registry.contentType);
    if (req.method !== 'POST' || (path !== '/validate' && path !== '/mutate')) return send(404, 'not found\n');
    // Until the NADs are listed every pod with networks would be judged on an empty catalog: an error
    // instead, which the API server answers with the webhook's failurePolicy (Fail: the client retries).
    if (!this.opts.ready()) return send(503, 'NetworkAttachmentDefinitions not listed yet\n');
    const operation = path.slice(1) as 'validate' | 'mutate';
    const started = process.hrtime.bigint();
    let kind = 'unknown';
    let outcome: Decision['outcome'] | 'error' = 'error';
    try {
      const body = await readBody(req, MAX_BODY_BYTES);
      const review = parseReview(JSON.parse(body.toString('utf8')) as unknown);
      kind = review.kind.kind;
      let decision: Decision;
      try {
        decision = operation === 'validate' ? await this.admission.validate(review) : await this.admission.mutate(review);
      } catch (err) {
        // An object that is not what its kind says (an API server would not send it): denied, saying why.
        decision = { allowed: false, message: `Plexus cannot read this ${kind}: ${(err as Error).message}`, outcome: 'denied' };
      }
      outcome = decision.outcome;
      send(200, JSON.stringify(reviewResponse(review.uid, decision)), 'application/json');
    } catch (err) {
      const bad = err instanceof ReviewError || err instanceof SyntaxError || err instanceof BodyTooLarge;
      send(err instanceof BodyTooLarge ? 413 : bad ? 400 : 500, `${(err as Error).message}\n`);
      if (!bad) this.opts.log('error', 'admission request failed', { error: (err as Error).stack });
    } finally {
      this.latency.observe({ operation, kind, outcome }, Number(process.hrtime.bigint() - started) / 1e9);
    }
  }
}
