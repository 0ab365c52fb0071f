/**
 * The node daemon's CNI endpoint: POST /cni runs the same plugin core as the one-shot `plexus`,
 * in-process, with the request's env and stdin. GET /healthz (alive), /readyz (serving ADD) and
 * /debug/cache (what the informer caches hold).
 * Operations on one sandbox run one at a time, in arrival order.
 */
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import { dirname } from 'node:path';
import { CniError, ErrorCode } from '../cni/errors.js';
import { runPluginCaptured } from '../cni/skel.js';
import { readBody } from '../util/body.js';
import { KeyedQueue } from '../util/keyed-queue.js';
import type { MetaContext } from '../meta/context.js';
import { metaPluginWith } from '../meta/plugin.js';
import { type CniReply, type CniRequestBody, EXIT_CODE_HEADER, STDERR_LENGTH_HEADER } from './protocol.js';

const MAX_BODY = 4 * 1024 * 1024;

function parseRequest(raw: Buffer): CniRequestBody {
  const body = JSON.parse(raw.toString()) as Partial<CniRequestBody>;
  if (typeof body !== 'object' || body === null || typeof body.stdin !== 'string' || typeof body.env !== 'object' || body.env === null) {
    throw new Error('expected {"env": {...}, "stdin": "<base64>"}');
  }
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(body.env)) if (typeof v === 'string') env[k] = v;
  return { env, stdin: body.stdin };
}

/** Longest wait for a client that keeps its connection open after the reply (the native shim closes it). */
const REPLY_HELD_MS = 20;
/** After the shim has gone: the runtime reaps it and carries on with the sandbox meanwhile. */
const REPORT_DELAY_MS = 10;

/**
 * When reporting for an operation (network-status, events) may start: REPORT_DELAY_MS after the runtime
 * has the reply (the shim's connection closed: it exits as soon as it has read the reply; or REPLY_HELD_MS
 * after sending, for a client that keeps it open). Reporting then does not compete for the CPU with the
 * runtime while the pod's sandbox waits on it. The sandbox's next operation opens the gate at once: its
 * reporting still comes first, without the wait.
 */
class ReportGate {
  readonly opened: Promise<void>;
  private timer: NodeJS.Timeout | undefined;
  private release!: () => void;
  private readonly detach: () => void;

  constructor(res: ServerResponse) {
    this.opened = new Promise((resolve) => (this.release = resolve));
    const socket = res.socket;
    const gone = () => this.openIn(REPORT_DELAY_MS);
    const sent = () => this.openIn(REPLY_HELD_MS);
    // A kept-alive connection carries many requests: each gate takes its listeners away again.
    this.detach = () => {
      socket?.off('close', gone);
      res.off('finish', sent);
    };
    if (!socket || socket.destroyed) {
      this.openIn(REPORT_DELAY_MS);
      return;
    }
    socket.once('close', gone);
    res.once('finish', sent);
  }

  private openIn(ms: number): void {
    if (this.timer) return;
    this.timer = setTimeout(() => this.open(), ms);
    this.timer.unref();
  }

  open(): void {
    clearTimeout(this.timer);
    this.detach();
    this.release();
  }
}

/** Teardown first: DEL and GC release resources, ADD and CHECK take them. */
const URGENT = new Set(['DEL', 'GC']);

export interface DaemonLimits {
  /** Operations running at once (each execs delegates). */
  maxConcurrent: number;
  /** ADD/CHECK/STATUS waiting for a slot before new ones are told to try again later. */
  maxQueued: number;
  /** Anything waiting, DEL included, before even DEL is told to try again later. */
  hardMaxQueued: number;
  /**
   * Resident memory (bytes) above which ADD/CHECK/STATUS are told to try again later (DEL and GC, which
   * free, still run): the runtime retries (code 11) instead of the kernel's OOM killer ending the daemon
   * and every pod operation in it. Unset: no budget.
   */
  maxRssBytes?: number;
}

export const DEFAULT_LIMITS: DaemonLimits = { maxConcurrent: 8, maxQueued: 128, hardMaxQueued: 1024 };

/** Slots for running operations; waiters of DEL/GC are served before any ADD. */
class PrioritySlots {
  private running = 0;
  private readonly urgent: (() => void)[] = [];
  private readonly normal: (() => void)[] = [];

  constructor(private readonly size: number) {}

  get waiting(): number {
    return this.urgent.length + this.normal.length;
  }

  async acquire(urgent: boolean): Promise<() => void> {
    if (this.running < this.size && this.waiting === 0) this.running += 1;
    else await new Promise<void>((resolve) => (urgent ? this.urgent : this.normal).push(resolve));
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.urgent.shift() ?? this.normal.shift();
      if (next) next();
      else this.running -= 1;
    };
  }
}

/** What the daemon tells about each request (metrics, logs); all optional. */
export interface DaemonHooks {
  served?(command: string, exitCode: number, cniCode: number, seconds: number, env: Record<string, string>): void;
  /** A request answered "try again later": too many waiting, or over the memory budget. */
  overloaded?(command: string, reason: 'queue' | 'memory'): void;
  inFlight?(count: number): void;
  /** What /readyz tells besides readiness (the informer caches' sync state). */
  readiness?(): object | undefined;
  /** GET /debug/cache: what the informer caches hold. */
  cacheContents?(): object | undefined;
  /** GET /debug/policy?namespace=&name=: a pod's sandboxes on this node, their filtered interfaces and installed tables. */
  policyOf?(namespace: string, name: string): object[];
  /**
   * POST /ipam: a CNI IPAM request (plexus-shim installed under the IPAM's name, exec'd by a delegate
   * the daemon is running). Not queued behind the sandbox's operation nor a concurrency slot: that ADD
   * is waiting for this answer.
   */
  ipam?(body: CniRequestBody): Promise<CniReply>;
}

/** The CNI error code in a plugin's stdout (0 when it succeeded). */
function cniCode(exitCode: number, stdout: string): number {
  if (exitCode === 0) return 0;
  try {
    return Number((JSON.parse(stdout) as { code?: unknown }).code) || 999;
  } catch {
    return 999;
  }
}

export class CniDaemon {
  private server: Server | undefined;
  private ready = false;
  /** Each sandbox's operations, one after the other. */
  private readonly sandboxes = new KeyedQueue();
  /** Each sandbox's latest operation's gate for reporting (see ReportGate). */
  private readonly reportGates = new Map<string, ReportGate>();
  private readonly slots: PrioritySlots;
  /** Requests admitted and not yet answered. */
  private pending = 0;

  constructor(
    readonly socket: string,
    private readonly limits: DaemonLimits = DEFAULT_LIMITS,
    private readonly hooks: DaemonHooks = {},
    /** What the plugin core is given for every request: caches, in-process delegates, metrics, credentials. */
    private readonly context: MetaContext = {},
  ) {
    this.slots = new PrioritySlots(limits.maxConcurrent);
  }

  async start(): Promise<void> {
    mkdirSync(dirname(this.socket), { recursive: true, mode: 0o700 });
    rmSync(this.socket, { force: true });
    this.server = createServer((req, res) => {
      this.route(req, res).catch((err: Error & { status?: number }) => this.reply(res, err.status ?? 400, { error: err.message }));
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(this.socket, resolve);
    });
    // Only root may talk to the daemon: it configures every pod's networking.
    chmodSync(this.socket, 0o600);
    this.ready = true;
  }

  /** Stops taking ADDs (readyz fails, shims answer "try again later"), then closes. */
  async stop(): Promise<void> {
    this.ready = false;
    for (const gate of this.reportGates.values()) gate.open();
    await this.sandboxes.drain();
    if (this.server) await new Promise<void>((resolve) => this.server!.close(() => resolve()));
    rmSync(this.socket, { force: true });
  }

  private reply(res: ServerResponse, status: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.url === '/healthz') return this.reply(res, 200, { ok: true });
    // Unsynced caches do not make the daemon unready (ADDs read the API instead), but /readyz says so.
    if (req.url === '/readyz') {
      const caches = this.hooks.readiness?.();
      return this.reply(res, this.ready ? 200 : 503, { ready: this.ready, ...(caches ? { caches } : {}) });
    }
    if (req.url === '/debug/cache' && req.method === 'GET') return this.reply(res, 200, this.hooks.cacheContents?.() ?? { cached: false });
    if (req.url?.startsWith('/debug/policy?') && req.method === 'GET') {
      const q = new URLSearchParams(req.url.slice('/debug/policy?'.length));
      if (!this.hooks.policyOf) return this.reply(res, 404, { error: 'network policy is not enforced by this daemon' });
      return this.reply(res, 200, this.hooks.policyOf(q.get('namespace') ?? '', q.get('name') ?? ''));
    }
    if (req.url === '/ipam' && req.method === 'POST') {
      const body = parseRequest(await readBody(req, MAX_BODY));
      if (this.hooks.ipam) return this.replyCni(res, await this.hooks.ipam(body));
      // A final error, not "try again": this daemon will not serve IPAM until it is started otherwise.
      const error = new CniError(
        ErrorCode.InvalidEnvironment,
        'Plexus IPAM is not enabled in this node daemon',
        'start plexusctl daemon with --node-name and API credentials (--kubeconfig or in-cluster)',
      );
      let cniVersion = '1.0.0';
      try {
        cniVersion = String((JSON.parse(Buffer.from(body.stdin, 'base64').toString()) as { cniVersion?: unknown }).cniVersion ?? cniVersion);
      } catch {
        /* the error is the same without it */
      }
      return this.replyCni(res, { exitCode: 1, stdout: JSON.stringify(error.toJSON(cniVersion)), stderr: '' });
    }
    if (req.url !== '/cni' || req.method !== 'POST') return this.reply(res, 404, { error: `no ${req.method} ${req.url}` });
    const body = parseRequest(await readBody(req, MAX_BODY));
    if (!this.ready) return this.reply(res, 503, { error: 'plexus daemon is not ready' });
    const urgent = URGENT.has(body.env.CNI_COMMAND ?? '');
    const queued = this.pending - this.limits.maxConcurrent;
    const command = body.env.CNI_COMMAND ?? '';
    if (queued >= this.limits.hardMaxQueued || (!urgent && queued >= this.limits.maxQueued)) {
      // An explicit answer instead of unbounded memory: the runtime retries later (code 11).
      this.hooks.overloaded?.(command, 'queue');
      return this.reply(res, 503, { error: `plexus daemon is overloaded: ${this.pending} requests in flight` });
    }
    const rss = !urgent && this.limits.maxRssBytes ? process.memoryUsage.rss() : 0;
    if (rss > this.limits.maxRssBytes!) {
      this.hooks.overloaded?.(command, 'memory');
      return this.reply(res, 503, { error: `plexus daemon is over its memory budget: ${(rss / 1048576).toFixed(0)} MiB resident, budget ${(this.limits.maxRssBytes! / 1048576).toFixed(0)} MiB` });
    }
    this.pending += 1;
    this.hooks.inFlight?.(this.pending);
    const start = process.hrtime.bigint();
    const sandbox = body.env.CNI_CONTAINERID ?? '';
    this.reportGates.get(sandbox)?.open();
    const gate = new ReportGate(res);
    if (sandbox) this.reportGates.set(sandbox, gate);
    void gate.opened.then(() => this.reportGates.get(sandbox) === gate && this.reportGates.delete(sandbox));
    let out: CniReply;
    try {
      out = await this.serialized(sandbox, async () => {
        const release = await this.slots.acquire(urgent);
        try {
          return await this.run(body, gate.opened);
        } finally {
          release();
        }
      });
    } finally {
      this.pending -= 1;
      this.hooks.inFlight?.(this.pending);
    }
    this.hooks.served?.(command, out.exitCode, cniCode(out.exitCode, out.stdout), Number(process.hrtime.bigint() - start) / 1e9, body.env);
    this.replyCni(res, out);
  }

  /** A plugin's answer as the shim prints it: stderr, then stdout, and the exit code. */
  private replyCni(res: ServerResponse, out: CniReply): void {
    const stderr = Buffer.from(out.stderr);
    const payload = Buffer.concat([stderr, Buffer.from(out.stdout)]);
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': payload.length, [EXIT_CODE_HEADER]: String(out.exitCode), [STDERR_LENGTH_HEADER]: String(stderr.length) });
    res.end(payload);
  }

  private serialized<T>(key: string, work: () => Promise<T>): Promise<T> {
    return key ? this.sandboxes.run(key, work) : work();
  }

  private run(body: CniRequestBody, reportable: Promise<void>): Promise<CniReply> {
    // Reporting (network-status, events) runs once the runtime has the reply, ahead of the sandbox's next operation.
    const afterReply = (work: () => Promise<void>) => () => reportable.then(work);
    const plugin = metaPluginWith(this.context, (id, work) => void this.serialized(id, afterReply(work)).catch(() => undefined));
    return runPluginCaptured(plugin, body.env, Buffer.from(body.stdin, 'base64'));
  }
}
