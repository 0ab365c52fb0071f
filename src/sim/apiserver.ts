/**
 * An API server double for what Plexus uses: core/v1 pods (with the status subresource and watch),
 * events, CRDs installed from `crds/` and their custom resources (the NAD), and the discovery
 * endpoints, over HTTPS like a real API server (its own CA, made at start). In memory. It counts
 * requests, so tests and benchmarks can state the API cost of an operation. Checked against
 * @kubernetes/client-node and kubectl.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { type Http2SecureServer, type Http2ServerRequest, type Http2ServerResponse, createSecureServer } from 'node:http2';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { findAbove } from '../util/find-above.js';
import { kubeadmKubeconfig } from '../k8s/kubeconfig-file.js';
import { Pki } from '../k8s/pki.js';
import { isObject } from '../util/object.js';
import { HttpError, fieldValue, jsonPatch, mergePatch, selector } from './apiserver-machinery.js';

import { CORE_TYPES, type ResourceType, apiVersionOf, crdTypes, discovery, typeKey } from './apiserver-types.js';

export { jsonPatch, mergePatch } from './apiserver-machinery.js';

type Obj = Record<string, unknown> & {
  metadata: Record<string, unknown> & { name: string; namespace?: string; resourceVersion?: string; annotations?: Record<string, string>; labels?: Record<string, string> };
};

interface WatchEvent {
  rv: number;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  resource: string;
  object: Obj;
  /** The object before a MODIFIED: a watch with selectors sees the change as ADDED or DELETED when it crosses them. */
  previous?: Obj;
}

interface Watcher {
  resource: string;
  namespace?: string;
  matches: (o: Obj) => boolean;
  res: Http2ServerResponse;
  /** What of an object the watcher asked for: all of it, or its metadata (PartialObjectMetadata). */
  shape: (o: Obj) => Obj;
}

/**
 * Whether the Accept header asks for `as=<kind>;g=meta.k8s.io;v=v1` first (client-go's metadata client:
 * PartialObjectMetadataList for a list, PartialObjectMetadata for a watch).
 */
function asPartial(accept: string | undefined, kind: string): boolean {
  const first = (accept ?? '')
    .split(',')[0]!
    .split(';')
    .map((p) => p.trim());
  return first[0] === 'application/json' && first.includes(`as=${kind}`) && first.includes('g=meta.k8s.io') && first.includes('v=v1');
}

/** An object as PartialObjectMetadata: its metadata only. */
const metadataOnly = (o: Obj): Obj => ({ kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: o.metadata });

export interface RequestRecord {
  verb: string;
  path: string;
  resource: string;
}

function status(code: number, reason: string, message: string): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

/** The repository's crds/ directory, found above this module. */
export function defaultCrdDir(): string | undefined {
  return findAbove(import.meta.url, ['crds']);
}

export interface ApiServerOptions {
  port?: number;
  host?: string;
  /** Directory of CRD manifests to install at start (default: the repository's crds/). */
  crdDir?: string;
  /** HTTP/2 streams a client may open per connection (kube-apiserver's --http2-max-streams-per-connection). */
  maxStreams?: number;
}

export class ApiServerDouble {
  readonly requests: RequestRecord[] = [];
  private readonly types = new Map<string, ResourceType>();
  private readonly objects = new Map<string, Map<string, Obj>>();
  private readonly events: WatchEvent[] = [];
  private watchers: Watcher[] = [];
  private rv = 1;
  /** The oldest revision whose events are kept (compact): a watch needing older ones is 410 Expired. */
  private compactedRv = 0;
  private server: Http2SecureServer | undefined;
  private readonly sockets = new Set<TLSSocket>();
  /** TLS connections accepted so far (a test of connection sharing counts them). */
  connections = 0;
  url = '';
  /** Bearer tokens accepted; undefined accepts any request (the default). Others get 401. */
  acceptedTokens: Set<string> | undefined;
  /** The bearer token (or '') of each request refused with 401 (those are not in `requests`). */
  readonly refusedTokens: string[] = [];
  /** Fault injection for tests: a status code to answer a request with instead of serving it. */
  fault: ((method: string, path: string, query: URLSearchParams) => number | undefined) | undefined;
  /** Latency injection for tests: milliseconds to wait before serving a request. */
  latency: ((method: string, path: string) => number | undefined) | undefined;

  constructor(private readonly opts: ApiServerOptions = {}) {
    for (const t of CORE_TYPES) this.addType(t);
    const crdDir = opts.crdDir ?? defaultCrdDir();
    if (crdDir) {
      for (const file of readdirSync(crdDir).filter((f) => /\.ya?ml$/.test(f))) {
        for (const doc of parseAllDocuments(readFileSync(join(crdDir, file), 'utf8'))) {
          const crd = doc.toJS() as Obj | null;
          if (crd?.kind === 'CustomResourceDefinition') this.installCrd(crd);
        }
      }
    }
  }

  /** Watches ignore their timeoutSeconds and send nothing more (a connection that died without a FIN). */
  silentWatches = false;

  /** The CA that signed the serving certificate (PEM), as a kubeconfig's certificate-authority-data carries it. */
  caPem = '';

  async start(): Promise<string> {
    // A CA and a serving certificate for loopback, made per server and removed at once: kept in memory.
    const pkiDir = mkdtempSync(join(tmpdir(), 'plexus-apidouble-'));
    let tls: { cert: Buffer; key: Buffer };
    try {
      const pki = new Pki(pkiDir, 'plexus-api-double-ca');
      const serving = pki.issue({ name: 'apiserver', cn: 'kube-apiserver', dnsNames: ['localhost'], ips: ['127.0.0.1', '::1'], usage: 'server' });
      this.caPem = readFileSync(pki.ca.cert, 'utf8');
      tls = { cert: readFileSync(serving.cert), key: readFileSync(serving.key) };
    } finally {
      rmSync(pkiDir, { recursive: true, force: true });
    }
    // HTTP/2 with HTTP/1.1 beside it, as kube-apiserver serves: the daemon multiplexes, one-shot clients do not.
    this.server = createSecureServer({ ...tls, allowHTTP1: true, ...(this.opts.maxStreams ? { settings: { maxConcurrentStreams: this.opts.maxStreams } } : {}) }, (req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        const e = err instanceof HttpError ? err : new HttpError(500, 'InternalError', (err as Error).message);
        this.send(res, e.code, status(e.code, e.reason, e.message));
      });
    });
    this.server.on('secureConnection', (socket: TLSSocket) => {
      this.connections++;
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
    await new Promise<void>((resolve) => this.server!.listen(this.opts.port ?? 0, this.opts.host ?? '127.0.0.1', resolve));
    const addr = this.server.address() as AddressInfo;
    this.url = `https://${this.opts.host ?? '127.0.0.1'}:${addr.port}`;
    return this.url;
  }

  /** Ends every open watch, as a real API server does at its watch timeout: clients watch again. */
  endWatches(): void {
    for (const w of this.watchers) w.res.end();
    this.watchers = [];
  }

  async stop(): Promise<void> {
    for (const w of this.watchers) w.res.end();
    this.watchers = [];
    if (!this.server) return;
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
    this.server = undefined;
  }

  /** A kubeconfig pointing at this server, in YAML laid out as kubeadm writes it. */
  kubeconfig(token = 'plexus-double-token'): string {
    return kubeadmKubeconfig(this.url, Buffer.from(this.caPem), 'plexus', { token }, 'plexus-double');
  }

  countRequests(filter: (r: RequestRecord) => boolean = () => true): number {
    return this.requests.filter(filter).length;
  }

  private addType(t: ResourceType): void {
    this.types.set(typeKey(t), t);
    if (!this.objects.has(typeKey(t))) this.objects.set(typeKey(t), new Map());
  }

  private installCrd(crd: Obj): void {
    for (const t of crdTypes(crd.spec)) this.addType(t);
    const stored = { ...crd, metadata: { ...crd.metadata, uid: randomUUID(), resourceVersion: String(this.rv++), creationTimestamp: new Date().toISOString() } };
    this.objects.get('apiextensions.k8s.io/v1/customresourcedefinitions')!.set(crd.metadata.name, stored as Obj);
  }

  /** Direct access for tests: create or replace an object as the API would store it. */
  put(apiVersion: string, plural: string, obj: Obj): Obj {
    const t = this.typeOf(apiVersion, plural);
    if (!t) throw new Error(`unknown resource ${apiVersion} ${plural}`);
    return this.store(t, obj, this.objects.get(typeKey(t))!.has(this.objectKey(t, obj.metadata.namespace, obj.metadata.name)) ? 'MODIFIED' : 'ADDED');
  }

  get(apiVersion: string, plural: string, namespace: string | undefined, name: string): Obj | undefined {
    const t = this.typeOf(apiVersion, plural);
    return t ? this.objects.get(typeKey(t))!.get(this.objectKey(t, namespace, name)) : undefined;
  }

  /** Direct access for tests: delete an object as the API would (watchers see DELETED). */
  delete(apiVersion: string, plural: string, namespace: string | undefined, name: string): void {
    const t = this.typeOf(apiVersion, plural);
    if (!t) throw new Error(`unknown resource ${apiVersion} ${plural}`);
    this.remove(t, namespace, name);
  }

  list(apiVersion: string, plural: string): Obj[] {
    const t = this.typeOf(apiVersion, plural);
    return t ? [...this.objects.get(typeKey(t))!.values()] : [];
  }

  private typeOf(apiVersion: string, plural: string): ResourceType | undefined {
    const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') : ['', apiVersion];
    return this.types.get(typeKey({ group: group!, version: version!, plural }));
  }

  private objectKey(t: ResourceType, namespace: string | undefined, name: string): string {
    return t.namespaced ? `${namespace ?? ''}/${name}` : name;
  }

  private store(t: ResourceType, obj: Obj, type: 'ADDED' | 'MODIFIED'): Obj {
    const valid: ((data: unknown) => boolean) | undefined = t.validate;
    if (valid && !valid(obj)) {
      throw new HttpError(422, 'Invalid', `${t.kind} "${obj.metadata.name}" is invalid: ${t.validate!.errors?.map((e) => `${e.instancePath || '(root)'} ${e.message ?? ''}`).join('; ')}`);
    }
    const rv = this.rv++;
    const prev = this.objects.get(typeKey(t))!.get(this.objectKey(t, obj.metadata.namespace, obj.metadata.name));
    const meta = obj.metadata;
    const stored: Obj = {
      ...obj,
      apiVersion: apiVersionOf(t),
      kind: t.kind,
      metadata: {
        ...meta,
        uid: (prev?.metadata.uid as string | undefined) ?? (meta.uid as string | undefined) ?? randomUUID(),
        creationTimestamp: (prev?.metadata.creationTimestamp as string | undefined) ?? new Date().toISOString(),
        resourceVersion: String(rv),
      },
    };
    this.objects.get(typeKey(t))!.set(this.objectKey(t, meta.namespace, meta.name), stored);
    this.emit({ rv, type, resource: typeKey(t), object: stored, ...(prev ? { previous: prev } : {}) });
    return stored;
  }

  private remove(t: ResourceType, namespace: string | undefined, name: string): Obj {
    const key = this.objectKey(t, namespace, name);
    const obj = this.objects.get(typeKey(t))!.get(key);
    if (!obj) throw this.notFound(t, name);
    this.objects.get(typeKey(t))!.delete(key);
    const rv = this.rv++;
    const gone = { ...obj, metadata: { ...obj.metadata, resourceVersion: String(rv) } };
    this.emit({ rv, type: 'DELETED', resource: typeKey(t), object: gone });
    return gone;
  }

  /**
   * Forgets the history before `rv` (default: all but the latest), as etcd compaction to that revision
   * does: a watch that needs an older event is then answered 410 Expired, and the client lists again.
   */
  compact(rv = this.rv - 1): void {
    this.compactedRv = Math.max(this.compactedRv, rv);
    const keep = this.events.findIndex((e) => e.rv >= this.compactedRv);
    this.events.splice(0, keep === -1 ? this.events.length : keep);
  }

  private emit(e: WatchEvent): void {
    this.events.push(e);
    // A bounded history, as the real server's: what falls out of it is compacted.
    if (this.events.length > 10000) this.compact(this.events[this.events.length - 10000]!.rv);
    for (const w of this.watchers) {
      const seen = this.seenAs(w, e);
      if (seen) w.res.write(`${JSON.stringify({ ...seen, object: w.shape(seen.object) })}\n`);
    }
  }

  private notFound(t: ResourceType, name: string): HttpError {
    return new HttpError(404, 'NotFound', `${t.plural}${t.group ? `.${t.group}` : ''} "${name}" not found`);
  }

  private send(res: Http2ServerResponse, code: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  }

  private async body(req: Http2ServerRequest): Promise<unknown> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString();
    if (!text) return undefined;
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new HttpError(400, 'BadRequest', `request body is not JSON: ${(err as Error).message}`);
    }
  }

  private async handle(req: Http2ServerRequest, res: Http2ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'https://double');
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const method = req.method ?? 'GET';
    const watch = url.searchParams.get('watch') === 'true' || url.searchParams.get('watch') === '1';
    if (this.acceptedTokens) {
      const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
      if (!token || !this.acceptedTokens.has(token)) {
        this.refusedTokens.push(token ?? '');
        throw new HttpError(401, 'Unauthorized', 'Unauthorized');
      }
    }
    const delay = this.latency?.(method, path);
    if (delay) await new Promise((resolve) => setTimeout(resolve, delay));
    const injected = this.fault?.(method, path, url.searchParams);
    if (injected) this.requests.push({ verb: method.toLowerCase(), path, resource: 'injected-fault' });
    if (injected) throw new HttpError(injected, 'ServiceUnavailable', `injected fault for ${method} ${path}`);
    const disc = method === 'GET' ? discovery([...this.types.values()], path) : undefined;
    if (disc) {
      this.requests.push({ verb: 'discovery', path, resource: '' });
      return this.send(res, 200, disc);
    }
    // /api/v1[/namespaces/{ns}]/{plural}[/{name}[/{sub}]] and /apis/{g}/{v}/…
    const m = /^\/(?:api\/(v1)|apis\/([^/]+)\/([^/]+))(?:\/namespaces\/([^/]+))?\/([^/]+)(?:\/([^/]+))?(?:\/([^/]+))?$/.exec(path);
    if (!m) throw new HttpError(404, 'NotFound', `the server could not find the requested resource (${path})`);
    const [, coreVersion, group = '', groupVersion, namespace, plural, name, sub] = m;
    const version = coreVersion ?? groupVersion!;
    // /api/v1/namespaces/{name} itself is the namespaces resource.
    let t = this.types.get(typeKey({ group, version, plural: plural! }));
    let ns = namespace ? decodeURIComponent(namespace) : undefined;
    let objName = name ? decodeURIComponent(name) : undefined;
    if (!t && !group && path.startsWith('/api/v1/namespaces/') && !plural) t = this.types.get('/v1/namespaces');
    if (!t) throw new HttpError(404, 'NotFound', `the server could not find the requested resource (${path})`);
    if (t.plural === 'namespaces') {
      ns = undefined;
      objName = objName ?? (namespace ? decodeURIComponent(namespace) : undefined);
    }
    if (sub && !t.subresources.includes(sub)) throw new HttpError(404, 'NotFound', `${t.plural} has no subresource "${sub}"`);
    const verb = watch ? 'watch' : method === 'GET' ? (objName ? 'get' : 'list') : method.toLowerCase();
    this.requests.push({ verb, path, resource: t.plural + (sub ? `/${sub}` : '') });
    const objects = this.objects.get(typeKey(t))!;

    if (method === 'GET' && !objName) {
      const fields = selector<Obj>(url.searchParams.get('fieldSelector'), (o, k) => fieldValue(o, k));
      const labels = selector<Obj>(url.searchParams.get('labelSelector'), (o, k) => o.metadata.labels?.[k]);
      const matches = (o: Obj): boolean => fields(o) && labels(o);
      if (watch) return this.startWatch(req, res, t, ns, matches, url);
      const all = [...objects.values()].filter((o) => (!ns || o.metadata.namespace === ns) && matches(o));
      // Pages as kube-apiserver serves them: `limit` items, a `continue` token while more remain, every
      // page at the resourceVersion of the first (the token carries it).
      const limit = Number(url.searchParams.get('limit') ?? '0');
      const token = url.searchParams.get('continue');
      const [offset, listRv] = token ? (JSON.parse(Buffer.from(token, 'base64url').toString()) as [number, number]) : [0, this.rv - 1];
      const items = limit > 0 ? all.slice(offset, offset + limit) : all.slice(offset);
      const more = limit > 0 && offset + limit < all.length;
      const metadata = {
        resourceVersion: String(listRv),
        ...(more ? { continue: Buffer.from(JSON.stringify([offset + limit, listRv])).toString('base64url'), remainingItemCount: all.length - offset - limit } : {}),
      };
      if (asPartial(req.headers.accept, 'PartialObjectMetadataList'))
        return this.send(res, 200, { kind: 'PartialObjectMetadataList', apiVersion: 'meta.k8s.io/v1', metadata, items: items.map(metadataOnly) });
      return this.send(res, 200, { kind: `${t.kind}List`, apiVersion: apiVersionOf(t), metadata, items });
    }
    const key = objName ? this.objectKey(t, ns, objName) : '';
    switch (method) {
      case 'GET': {
        const obj = objects.get(key);
        if (!obj) throw this.notFound(t, objName!);
        return this.send(res, 200, obj);
      }
      case 'POST': {
        const obj = (await this.body(req)) as Obj | undefined;
        if (!isObject(obj) || !isObject(obj.metadata)) throw new HttpError(400, 'BadRequest', 'object has no metadata');
        if (!obj.metadata.name && obj.metadata.generateName) obj.metadata.name = `${obj.metadata.generateName as string}${randomBytes(3).toString('hex').slice(0, 5)}`;
        if (!obj.metadata.name) throw new HttpError(422, 'Invalid', 'metadata.name: Required value');
        if (t.namespaced) obj.metadata.namespace = ns ?? (obj.metadata.namespace as string | undefined) ?? 'default';
        if (objects.has(this.objectKey(t, obj.metadata.namespace, obj.metadata.name))) throw new HttpError(409, 'AlreadyExists', `${t.plural} "${obj.metadata.name}" already exists`);
        if (t.plural === 'customresourcedefinitions') {
          this.installCrd(obj);
          return this.send(res, 201, objects.get(obj.metadata.name));
        }
        return this.send(res, 201, this.store(t, obj, 'ADDED'));
      }
      case 'PUT': {
        const current = objects.get(key);
        if (!current) throw this.notFound(t, objName!);
        const obj = (await this.body(req)) as Obj;
        if (!isObject(obj) || !isObject(obj.metadata)) throw new HttpError(400, 'BadRequest', 'object has no metadata');
        if (obj.metadata.resourceVersion && obj.metadata.resourceVersion !== current.metadata.resourceVersion) {
          throw new HttpError(409, 'Conflict', `Operation cannot be fulfilled on ${t.plural} "${objName}": the object has been modified`);
        }
        const next = sub === 'status' ? { ...current, metadata: obj.metadata, status: obj.status } : obj;
        return this.send(res, 200, this.store(t, { ...next, metadata: { ...next.metadata, name: objName!, ...(ns ? { namespace: ns } : {}) } } as Obj, 'MODIFIED'));
      }
      case 'PATCH': {
        const current = objects.get(key);
        if (!current) throw this.notFound(t, objName!);
        const patch = await this.body(req);
        const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim();
        let next: Obj;
        if (type === 'application/json-patch+json') next = jsonPatch(current, patch) as Obj;
        else if (type === 'application/merge-patch+json' || type === 'application/strategic-merge-patch+json') next = mergePatch(current, patch) as Obj;
        else throw new HttpError(415, 'UnsupportedMediaType', `unsupported patch type "${type}"`);
        // A patch that sets another metadata.uid is refused, as by the real API server (checked against it).
        if (next.metadata.uid !== current.metadata.uid) {
          throw new HttpError(422, 'Invalid', `The ${t.kind} "${objName}" is invalid: metadata.uid: Invalid value: "${String(next.metadata.uid)}": field is immutable`);
        }
        // The status subresource changes metadata and status, never spec.
        if (sub === 'status') next = { ...next, spec: current.spec } as Obj;
        next.metadata = { ...next.metadata, name: current.metadata.name, ...(current.metadata.namespace ? { namespace: current.metadata.namespace } : {}), uid: current.metadata.uid };
        return this.send(res, 200, this.store(t, next, 'MODIFIED'));
      }
      case 'DELETE':
        return this.send(res, 200, this.remove(t, ns, objName!));
      default:
        throw new HttpError(405, 'MethodNotAllowed', `${method} is not supported`);
    }
  }

  /**
   * How a watch with selectors sees an event, as kube-apiserver's watch cache sends it: a change that
   * makes an object match is ADDED, one that makes it stop matching is DELETED with the object as it
   * last matched (the real server's behaviour, checked by test/support/selector-contract.ts), neither
   * is nothing.
   */
  private seenAs(w: { resource: string; namespace?: string; matches: (o: Obj) => boolean }, e: WatchEvent): { type: WatchEvent['type']; object: Obj } | undefined {
    if (w.resource !== e.resource || (w.namespace && w.namespace !== e.object.metadata.namespace)) return undefined;
    const now = w.matches(e.object);
    if (e.type !== 'MODIFIED' || !e.previous) return now ? { type: e.type, object: e.object } : undefined;
    const before = w.matches(e.previous);
    if (now) return { type: before ? 'MODIFIED' : 'ADDED', object: e.object };
    return before ? { type: 'DELETED', object: e.previous } : undefined;
  }

  private startWatch(req: Http2ServerRequest, res: Http2ServerResponse, t: ResourceType, namespace: string | undefined, matches: (o: Obj) => boolean, url: URL): void {
    // Chunked is HTTP/1.1's way to stream; HTTP/2 forbids the header (its frames stream anyway).
    res.writeHead(200, { 'Content-Type': 'application/json', ...(req.httpVersionMajor === 1 ? { 'Transfer-Encoding': 'chunked' } : {}) });
    // Watchers wait for the headers before the first event, as the real API server sends them at once.
    // (HTTP/2 sends them with writeHead; the compat response has no flushHeaders.)
    (res as { flushHeaders?: () => void }).flushHeaders?.();
    const since = Number(url.searchParams.get('resourceVersion') ?? '0');
    const resource = typeKey(t);
    const inScope = (o: Obj): boolean => (!namespace || o.metadata.namespace === namespace) && matches(o);
    const shape = asPartial(req.headers.accept, 'PartialObjectMetadata') ? metadataOnly : (o: Obj) => o;
    if (since > 0 && since + 1 < this.compactedRv) {
      // What kube-apiserver sends when etcd has compacted the events a watch needs: a 200 stream with one ERROR event.
      res.end(`${JSON.stringify({ type: 'ERROR', object: status(410, 'Expired', 'The resourceVersion for the provided watch is too old.') })}\n`);
      return;
    }
    if (since > 0) {
      for (const e of this.events) {
        const seen = this.seenAs({ resource, ...(namespace ? { namespace } : {}), matches }, e);
        if (e.rv > since && seen) res.write(`${JSON.stringify({ ...seen, object: shape(seen.object) })}\n`);
      }
    } else {
      for (const o of this.objects.get(resource)!.values()) if (inScope(o)) res.write(`${JSON.stringify({ type: 'ADDED', object: shape(o) })}\n`);
    }
    const w: Watcher = { resource, matches, res, shape, ...(namespace ? { namespace } : {}) };
    this.watchers.push(w);
    // A connection gone silent (no FIN) looks, to the client, like a watch the server never ends.
    const timeout = this.silentWatches ? 0 : Number(url.searchParams.get('timeoutSeconds') ?? '0');
    const timer = timeout > 0 ? setTimeout(() => res.end(), timeout * 1000) : undefined;
    // Bookmarks as kube-apiserver's watch cache sends them to a watch that allows them: about a minute
    // apart, and 2 s before the watch's timeout; the object is the kind with only the resourceVersion.
    const bookmarks: NodeJS.Timeout[] = [];
    if (url.searchParams.get('allowWatchBookmarks') === 'true') {
      const bookmark = (): void => {
        res.write(`${JSON.stringify({ type: 'BOOKMARK', object: { kind: t.kind, apiVersion: apiVersionOf(t), metadata: { resourceVersion: String(this.rv - 1) } } })}\n`);
      };
      bookmarks.push(setInterval(bookmark, 60_000));
      if (timeout > 2) bookmarks.push(setTimeout(bookmark, (timeout - 2) * 1000));
    }
    const done = (): void => {
      clearTimeout(timer);
      for (const b of bookmarks) clearTimeout(b);
      this.watchers = this.watchers.filter((x) => x !== w);
    };
    req.on('close', done);
    res.on('close', done);
  }
}
